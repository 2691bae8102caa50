# The README's commands. Everything installs into ./.venv from this project's own files.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install sample test lint unit clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## install: create .venv and install the job with its test tools
install: $(STAMP)

## sample: install, then run the job on the bundled sample into ./out
sample: install
	rm -rf out
	$(PY) -m beam_pipeline run --config examples/delivery.yaml --input examples/events.jsonl.gz \
		--summary-json out/summary.json

## lint: ruff (lint + format check) and mypy
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## test: install, lint, then the whole test suite (starts every stand-in it needs)
test: lint
	$(VENV)/bin/pytest

clean:
	rm -rf out build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
