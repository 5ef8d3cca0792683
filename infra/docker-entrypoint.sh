#!/usr/bin/env bash
# Entry point of the platform image: make the container reachable by the name Spark advertises, then
# run the service's command.
set -euo pipefail
# Spark executors connect back to the driver (an Airflow worker or the dashboard); a container's
# hostname is not resolvable by its peers, its IP is.
if [ -z "${SPARK_LOCAL_HOSTNAME:-}" ]; then
  SPARK_LOCAL_HOSTNAME="$(hostname -i | awk '{print $1}')"
  export SPARK_LOCAL_HOSTNAME
fi
mkdir -p "${WATTFLOW_HOME:-/wattflow}/models"
exec "$@"
