#!/usr/bin/env bash
# MLflow tracking server with basic auth, PostgreSQL stores and proxied S3 artifacts.
# The same script runs in docker-compose, in the Kubernetes Deployment and in the real-backend tests
# (tests/servers.py), so what the tests exercise is what deploys.
#
# Reads (all required unless a default is shown):
#   MLFLOW_BACKEND_STORE_URI      postgresql+psycopg2://user:pass@host:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI      postgresql+psycopg2://user:pass@host:5432/mlflow_auth (users, permissions)
#   MLFLOW_ARTIFACTS_DESTINATION  s3://bucket/prefix (boto3: MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)
#   MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD   the admin created on first start
#   MLFLOW_FLASK_SERVER_SECRET_KEY                            CSRF secret of the auth app
#   MLFLOW_HOST (0.0.0.0) MLFLOW_PORT (5000) MLFLOW_WORKERS (2)
#   MLFLOW_AUTH_DEFAULT_PERMISSION (READ)  MLFLOW_AUTH_CONFIG_DIR (/tmp)
set -euo pipefail

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_AUTH_ADMIN_USERNAME}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY}"

config_dir="${MLFLOW_AUTH_CONFIG_DIR:-/tmp}"
mkdir -p "$config_dir"
# The auth app reads its user store only from an ini file, so render one from the environment
# (the admin credentials stay in the environment: MLflow reads MLFLOW_AUTH_ADMIN_* itself).
umask 077
cat >"$config_dir/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
# Server-side jobs (GenAI scorers, trace rollups) are unused by wattflow; off saves a process per server.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --serve-artifacts \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}"
