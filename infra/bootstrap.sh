#!/usr/bin/env bash
# What the tests need beyond .venv, installed when missing: the Debian packages and the jar cache (Spark, Kafka).
# One script for `make test`, `make demo` and .ci/run (CI runs it as root with CI=true; on a laptop it uses
# sudo). Idempotent: on a machine that has everything it only checks (a few seconds).
#
# When something cannot be installed (no root and no sudo, no apt, no network), this script says so and
# carries on: the tests that need the missing part then fail with one line naming it and the command that
# installs it (tests/servers.py `require_*`), so nothing is skipped in silence.
#
#   infra/bootstrap.sh            Debian packages + Spark jars (the tests' needs)
#   infra/bootstrap.sh --no-jars  Debian packages only
set -uo pipefail
cd "$(dirname "$0")/.."

with_jars=1
for arg in "$@"; do
  case "$arg" in
    --no-jars) with_jars=0 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { echo "bootstrap: $*" >&2; }

# mosquitto: the MQTT ingestion tests' broker. postgresql: Airflow's and MLflow's production metadata store.
# openjdk-17-jre-headless: Spark 4.2 runs on Java 17. chromium: the browser tests (Playwright drives
# Debian's build; no browser is ever downloaded).
packages=(mosquitto postgresql openjdk-17-jre-headless chromium)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
else
  say "no dpkg here: install ${packages[*]} with your package manager (the tests name what they miss)"
fi

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo_cmd=(sudo)
      # Without a terminal to ask for a password, sudo must not hang waiting for one.
      [ -t 0 ] || sudo_cmd=(sudo -n)
    else
      sudo_cmd=(none)
    fi
  fi
  if [ "${sudo_cmd[*]:-}" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install ${missing[*]} (not root, no sudo, or no apt-get): run" \
        "'sudo apt-get install -y --no-install-recommends ${missing[*]}'; the tests that need them will fail until then"
  else
    say "installing ${missing[*]}"
    if "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
       && "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null; then
      # The packages start their own system services; the tests run private instances on free ports
      # instead. Only services this script just installed are stopped, never a developer's own.
      for service in mosquitto postgresql; do
        if printf '%s\n' "${missing[@]}" | grep -qx "$service"; then
          "${sudo_cmd[@]}" systemctl stop "$service" 2>/dev/null \
            || "${sudo_cmd[@]}" service "$service" stop >/dev/null 2>&1 || true
        fi
      done
    else
      say "apt-get could not install ${missing[*]}; the tests that need them will fail naming what is missing"
    fi
  fi
fi

# Spark's jars (delta-spark, the Kafka connector for Structured Streaming, hadoop-aws + AWS SDK, ~770 MB) resolve from Maven Central once into a cache that
# every run and every home shares (the tests' Spark session reads the same variable); doing it here keeps the
# download out of the tests' time. A cached set costs a manifest check.
if [ "$with_jars" = 1 ]; then
  export WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR="${WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR:-$HOME/.cache/wattflow/jars}"
  if ! command -v java >/dev/null 2>&1; then
    say "no java: the Spark jar cache is not filled; the Spark tests will fail naming what is missing"
  elif [ -x .venv/bin/python ]; then
    .venv/bin/python -m lakehouse.spark_jars --with-s3 >/dev/null \
      || say "could not resolve the Spark jars into $WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR (network?); the Spark tests will fail naming it"
    # The Kafka 4 broker of the tests and `make up` (kafka_2.13 + a log4j binding, ~40 MB), same cache.
    .venv/bin/python -m lakehouse.kafka_broker resolve >/dev/null \
      || say "could not resolve the Kafka broker's jars into $WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR (network?); the Kafka tests will fail naming it"
  fi
fi
exit 0
