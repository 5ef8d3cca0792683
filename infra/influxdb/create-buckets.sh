#!/usr/bin/env bash
# Runs once after the InfluxDB 2 image's initial setup (docker-entrypoint-initdb.d): the sensor bucket is
# created by DOCKER_INFLUXDB_INIT_BUCKET; forecasts written back for Grafana go to their own bucket.
set -euo pipefail
influx bucket create \
  --name "${INFLUXDB_FORECAST_BUCKET:-forecasts}" \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --retention "${INFLUXDB_FORECAST_RETENTION:-0}" \
  --token "${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN}"
