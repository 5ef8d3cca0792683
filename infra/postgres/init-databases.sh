#!/usr/bin/env bash
# Runs once, on the first start of the postgres container (docker-entrypoint-initdb.d): one role and
# one database per consumer, so Airflow and MLflow never share credentials or schemas.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?}" "${MLFLOW_DB_PASSWORD:?}" "${MARQUEZ_DB_PASSWORD:?}" "${OPTUNA_DB_PASSWORD:?}"

create() {  # role password database...
  local role="$1" password="$2"; shift 2
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$role" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
  for db in "$@"; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v role="$role" -v db="$db" <<'SQL'
CREATE DATABASE :"db" OWNER :"role";
SQL
  done
}

create airflow "$AIRFLOW_DB_PASSWORD" airflow
# mlflow_auth holds the tracking server's users and permissions (basic-auth app).
create mlflow "$MLFLOW_DB_PASSWORD" mlflow mlflow_auth
# marquez: the lineage server's store (OpenLineage events of the pipeline steps).
create marquez "$MARQUEZ_DB_PASSWORD" marquez
# optuna: the tuning studies that several training workers share (WATTFLOW_MODEL__TUNING_STORAGE).
create optuna "$OPTUNA_DB_PASSWORD" optuna
