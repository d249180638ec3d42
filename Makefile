# lifeboat: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
# Debian's interpreter, reachable by the unprivileged `postgres` user that runs the test
# clusters' archive_command (an interpreter under /root is not).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin))

.PHONY: venv bytecode pg pg-access browser promtool demo test lint unit coverage coverage-floors bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Every lifeboat process (the suite starts thousands: CLI runs, archive_command) would
# compile lifeboat from source at each start where PYTHONDONTWRITEBYTECODE is set (it is on
# these machines): ~0.15 s of CPU a run. Byte-compiled once here, they are only read.
# The methods every dataclass generates are compiled here too, once (cli/method_cache.py):
# ~560 compilations, 30-40 ms of each command's start-up.
bytecode: venv
	@$(BIN)/python -m compileall -q src tests >/dev/null
	@$(BIN)/python -m lifeboat.cli.method_cache >/dev/null

# The PostgreSQL server (initdb, pg_ctl, pg_amcheck) from Debian, only when missing.
pg:
	@if ! command -v initdb >/dev/null 2>&1 && [ -z "$(PG_BIN)" ]; then \
		echo "installing the PostgreSQL server (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib; \
	fi

# PostgreSQL runs archive_command as `postgres`: it must be able to run .venv/bin/python
# and read this checkout. When running as root in a directory it cannot reach, open the
# parent directories for traversal (x only, no listing).
pg-access: venv
	@if [ "$$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && \
	    ! runuser -u postgres -- $(BIN)/python -c 'import lifeboat' >/dev/null 2>&1; then \
		d="$(CURDIR)"; while [ "$$d" != "/" ]; do chmod o+x "$$d"; d=$$(dirname "$$d"); done; \
		echo "made $(CURDIR) reachable by the postgres user"; \
	fi

# Debian's Chromium renders the dashboard in the tests (headless, no network).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Debian's Prometheus package provides promtool: the tests check the exported alert rules.
promtool:
	@command -v promtool >/dev/null 2>&1 || { echo "installing promtool (apt-get prometheus)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Most tests wait on real servers and subprocesses (PostgreSQL, S3, the CLI), so the 2 cores
# stay busy with more workers than cores; worksteal rebalances the long files at the end.
PYTEST_WORKERS ?= 3
PYTEST := $(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal -q

unit: venv bytecode pg pg-access browser promtool
	$(PYTEST)

# The suite with coverage of every lifeboat process it starts (as root and as `postgres`),
# written to a directory both may write; the floors are checked after the run. Tracing every
# CLI subprocess costs about a third more time, so it is its own target, not part of `test`.
COVDIR ?= /tmp/lifeboat-coverage-$(notdir $(CURDIR))
COVENV := COVERAGE_FILE=$(COVDIR)/.coverage

coverage: venv bytecode pg pg-access browser promtool
	rm -rf $(COVDIR) && mkdir -p $(COVDIR) && chmod 1777 $(COVDIR)
	$(COVENV) $(PYTEST) --cov --cov-report=
	$(COVENV) $(BIN)/coverage report --skip-covered --sort=cover > $(COVDIR)/report.txt || true
	$(COVENV) $(BIN)/python -m tests.coverage_floors

# After a full `make coverage`: set every package's floor to what it measured (rounded down).
coverage-floors:
	$(COVENV) $(BIN)/python -m tests.coverage_floors --write

# lint (mypy: ~20 s of one core) runs beside the suite, whose workers leave a core idle
# while they wait on servers; either failing fails `make test`. Everything that may
# apt-get is installed first, one at a time (two apt-gets at once fight over dpkg's lock).
test: venv pg bytecode pg-access browser promtool
	@$(MAKE) --no-print-directory -j2 lint unit

demo: venv bytecode pg pg-access
	$(BIN)/lifeboat demo

# Benchmarks against restic, pgBackRest and pg_basebackup (installed with apt when missing).
# Every benchmark (bench/all.py lists them), full size: hours on 2 cores. Outputs land in
# bench/out/latest/. `make bench BENCH_ARGS=--quick` is a small-scale smoke run;
# BENCH_ARGS="--only objects repo-s3" picks benches.
bench: venv bytecode pg pg-access
	$(BIN)/python bench/all.py $(BENCH_ARGS)

clean:
	rm -rf demo-sandbox bench/out .mypy_cache .ruff_cache
