# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv from the lock when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export WATTFLOW_HOME ?= $(CURDIR)/.wattflow

.PHONY: venv bootstrap demo test test-fast bench lock up down clean compose-up compose-down

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || { $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade; $(BIN)/python -m pip install --quiet "$$(grep "^uv==" requirements.lock)"; }
	$(BIN)/uv pip sync --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m wattflow.demo

# The Debian packages and the Spark jar cache the tests need, installed when missing (sudo when not root);
# .ci/run calls the same script. What cannot be installed makes its tests fail with one line naming it.
# The jar cache is shared by every clone and home on the machine (downloaded once, ~700 MB).
export WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR ?= $(HOME)/.cache/wattflow/jars
bootstrap: $(STAMP)
	infra/bootstrap.sh

# Two workers: much of the suite waits on servers it starts (Airflow, Spark, the demo's DAG runs), so two
# pytest processes on two cores finish well before one (measured: 14.5 min against ~25 min serially).
PYTEST_WORKERS ?= 2

test: bootstrap
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

test-fast: $(STAMP)
	infra/bootstrap.sh --no-jars
	$(BIN)/python -m pytest -m "not slow and not e2e and not spark"

up: $(STAMP)
	$(BIN)/python -m wattflow.stack up

down: $(STAMP)
	$(BIN)/python -m wattflow.stack down

bench: $(STAMP)
	mkdir -p bench/results
	$(BIN)/python bench/ingest.py --json bench/results/ingest.json

# Regenerate the lock after changing pyproject.toml; commit both.
lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --no-annotate --no-header -o requirements.lock

clean:
	rm -rf $(WATTFLOW_HOME)

# The production-shaped stack in Docker (docs/production.md): needs a filled .env (cp .env.example .env).
compose-up:
	test -f .env || { echo "copy .env.example to .env and fill the secrets first"; exit 1; }
	docker compose -f docker-compose.yaml up -d --build --wait

compose-down:
	docker compose -f docker-compose.yaml down
