# exmaint — every target sets itself up: virtualenv, install, migrations.
# `make demo` runs the main job, `make test` the whole test suite, `make serve` the service on embedded defaults.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Embedded defaults for local runs: DEBUG on (so no SECRET_KEY is needed), SQLite under var/, filesystem broker.
LOCAL_ENV := DEBUG=$${DEBUG:-true}
# pytest-xdist workers: one per core by default (each has its own test database, var/ and Celery queue).
# `make test PYTEST_WORKERS=0` runs the suite serially in one process.
PYTEST_WORKERS ?= auto

.PHONY: demo test test-faults serve lint migrate install clean bench-audit bench-create

# As root on Debian (CI), the system packages the Kerberos libraries build against and the tests' MIT KDC are
# installed first when missing (.ci/system-packages); elsewhere the README lists them.
$(VENV)/.installed: pyproject.toml
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then .ci/system-packages; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

migrate: install
	$(LOCAL_ENV) $(PY) manage.py migrate --noinput -v 0

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache  # the arrows between the packages (pyproject.toml, docs/architecture.md)
	DEBUG=true $(PY) manage.py makemigrations --check --dry-run > /dev/null

test: lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal

# The fault suite's long outages (issue 24, tests/runner/faults/test_long_outages.py): the database and Redis stopped
# for 90 s and the Exchange endpoint for 60 s mid-window, against a PostgreSQL cluster and a redis-server the tests
# start themselves (the binaries are needed, not running services). About 10 minutes; `.ci/run` runs it after the
# two passes of `make test`, which hold the short cases (a 15 s database outage, a SIGKILLed worker).
test-faults: install
	EXMAINT_FAULTS_LONG=1 $(PY) -m pytest -n 0 -m faults_long tests/runner/faults

serve: migrate
	$(LOCAL_ENV) $(PY) manage.py serve --port $(PORT)

# The demo keeps its own var/demo (SQLite, filesystem broker, reports), fresh each run.
demo: install
	rm -rf var/demo
	$(LOCAL_ENV) EXMAINT_VAR_DIR=var/demo $(PY) manage.py migrate --noinput -v 0
	$(LOCAL_ENV) EXMAINT_VAR_DIR=var/demo $(PY) manage.py demo

# verify_audit over a 1,000,000-event chain on PostgreSQL (started as CI does) against a lean loop; its last line is
# `verify events=… seconds=… ratio=…`. BENCH_DATABASE_URL names the (throwaway) database it fills.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/exmaint_bench
bench-audit: install
	bash .ci/services postgres
	DEBUG=true DATABASE_URL=$(BENCH_DATABASE_URL) EXMAINT_VAR_DIR=var/bench $(PY) benchmarks/audit_verify.py

# POST /api/v1/changes/ on gunicorn (2 workers, loopback) and PostgreSQL (started as CI does) against a bare DRF create
# (benchmarks/bare), at 1 and 4 clients; its last line is `create rps=… bare_rps=… ratio=… ratio4=… statements=…`.
# BENCH_CREATE_DATABASE_URL names the throwaway database it drops and makes again (its name must contain "bench").
BENCH_CREATE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/exmaint_bench_create
bench-create: install
	bash .ci/services postgres
	DEBUG=true DATABASE_URL=$(BENCH_CREATE_DATABASE_URL) EXMAINT_VAR_DIR=var/bench-create $(PY) benchmarks/create_changes.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
