# Two commands for a newcomer: `make run` serves the API, `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
RUN_DEPS := $(VENV)/.run-deps
DEV_DEPS := $(VENV)/.dev-deps
PYTEST_ARGS ?=

ARGS ?=
# Installs print to stderr, so `TOKEN=$$(make token)` holds only the token even on a first run.
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check --progress-bar on

.PHONY: run token test test-long test-ha lint typecheck migrate lock bench bench-spread bench-rush bench-pg bench-profile clean

$(PY):
	@echo "creating $(VENV) with $(PYTHON) (first run)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(PIP_INSTALL) --quiet --upgrade pip >&2

$(RUN_DEPS): requirements.txt requirements-embedded.txt | $(PY)
	@echo "installing the service's requirements into $(VENV) (first run, or the requirements changed: about a minute)..." >&2
	@$(PIP_INSTALL) -r requirements.txt -r requirements-embedded.txt >&2
	@touch $@

$(DEV_DEPS): requirements.txt requirements-embedded.txt requirements-dev.txt | $(PY)
	@echo "installing the development requirements into $(VENV) (first run, or the requirements changed: about a minute)..." >&2
	@$(PIP_INSTALL) -r requirements-dev.txt >&2
	@touch $@ $(RUN_DEPS)

## Serve on HOST:PORT (default 127.0.0.1:8002 in development); embedded PostgreSQL/Redis when none is configured.
run: $(RUN_DEPS)
	$(PY) -m app.db.embedded

## Print an access token from the service's settings: make -s token ARGS="--user 7 --admin --minutes 60".
token: $(RUN_DEPS)
	@$(PY) -m app.cli token $(ARGS)

## Lint, type-check and run the test suite (embedded servers when none answers).
test: lint typecheck
	$(PY) -m pytest -m "not long and not ha" $(PYTEST_ARGS)

## The minute-long multi-instance load and the API fuzz run.
test-long: $(DEV_DEPS)
	$(PY) -m pytest -m long $(PYTEST_ARGS)

## Sentinel, Cluster and Patroni failover, and PgBouncer, on throwaway loopback servers (installs etcd, Patroni, PgBouncer).
test-ha: $(DEV_DEPS)
	$(PY) -m pytest -m ha -s $(PYTEST_ARGS)

lint: $(DEV_DEPS)
	$(PY) -m ruff check .

typecheck: $(DEV_DEPS)
	$(PY) -m mypy app bench main.py migrate.py

migrate: $(RUN_DEPS)
	$(PY) migrate.py upgrade

## Regenerate requirements.lock (every runtime dependency pinned with hashes; the image installs it).
lock: | $(PY)
	$(PY) -m pip install --quiet uv==0.13.8
	$(VENV)/bin/uv pip compile requirements.txt --generate-hashes --python-version 3.11 --python-platform linux \
		--custom-compile-command "make lock" --quiet -o requirements.lock

## Benchmarks against a running server (see bench/README.md); BENCH_ARGS adds bench.load options.
BENCH_ARGS ?=

bench: $(DEV_DEPS)
	$(PY) -m bench.load --scenario hot $(BENCH_ARGS)

bench-spread: $(DEV_DEPS)
	$(PY) -m bench.load --scenario spread $(BENCH_ARGS)

bench-rush: $(DEV_DEPS)
	$(PY) -m bench.load --scenario rush $(BENCH_ARGS)

bench-pg: $(DEV_DEPS)
	bash bench/pgbench.sh

## py-spy profile of the server under load, into bench/results/ (PROFILE_SECONDS, default 15).
bench-profile: $(DEV_DEPS)
	bash bench/profile.sh $(or $(PROFILE_SECONDS),15) "" $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
