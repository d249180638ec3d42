# lifeboat: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin))

.PHONY: venv pg demo test lint unit bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The PostgreSQL server (initdb, pg_ctl, pg_amcheck) from Debian, only when missing.
pg:
	@if ! command -v initdb >/dev/null 2>&1 && [ -z "$(PG_BIN)" ]; then \
		echo "installing the PostgreSQL server (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib; \
	fi

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

unit: venv pg
	$(BIN)/pytest -n 2 --dist loadfile -q

test: venv pg lint unit

demo: venv pg
	$(BIN)/lifeboat demo

bench: venv pg
	$(BIN)/python bench/repo.py

clean:
	rm -rf demo-sandbox bench/out .mypy_cache .ruff_cache
