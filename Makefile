# Two commands on a fresh machine: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/dagster_home

.PHONY: setup test lint demo ui golden bench clean system-deps

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check chartly_dagster tests bench definitions.py examples

system-deps:  ## PostgreSQL server + Debian Chromium for the end-to-end tests
	./scripts/install-system-deps.sh

test: lint system-deps
	$(BIN)/python -m pytest -q

demo: $(STAMP)  ## sandbox upstream + a week of partitions through Dagster + checks + summary
	$(BIN)/python -m examples.demo

ui: $(STAMP)  ## sandbox upstream + dagster dev -w workspace.yaml (DAGSTER_HOME=dagster_home)
	$(BIN)/python -m examples.demo ui

golden: $(STAMP)  ## regenerate golden plans on purpose, then review `git diff golden/`
	$(BIN)/chartly-tool profiles golden --write --format text

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/backfill.py --repeat 3

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data
