# The README's commands. Everything installs into ./.venv from this project's own files.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

NODE_STAMP := node_modules/.installed-stamp

.PHONY: install sample test lint node flink-jobserver prism test-flink test-unit fmt fuzz mutants bench bench-check bench-agents clean

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

## lint: ruff (lint + format check), mypy and the layer contract (import-linter)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## node: npm stand-ins pinned in package.json (Azurite), when the project has any
node: $(if $(wildcard package.json),$(NODE_STAMP))

$(NODE_STAMP): package.json $(wildcard package-lock.json)
	npm ci --no-audit --no-fund 2>/dev/null || npm install --no-audit --no-fund
	touch $(NODE_STAMP)

## flink-jobserver: fetch (once) the Beam Flink job server jar into ~/.cache; print its path
flink-jobserver: install
	$(PY) scripts/fetch_flink_jobserver.py

## prism: find or build (once, with Go) Beam's Prism runner, the streaming engine; print its path
prism: install
	$(PY) scripts/fetch_prism.py

## test-flink: the Flink end-to-end tests only
test-flink: node flink-jobserver
	$(VENV)/bin/pytest tests/test_flink.py

## test-unit: the fast tier: in-process only, no stand-in, JVM, npm, emulator or subprocess (under 2 minutes)
test-unit: install
	$(VENV)/bin/pytest -m unit -q -n auto

## fmt: apply ruff's safe fixes and format, in place
fmt: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## test: install, lint, then the whole test suite (starts every stand-in it needs)
test: lint node flink-jobserver prism
	$(VENV)/bin/pytest

## fuzz: the adversarial suite's long profile (random seed; `make test` runs 10 fixed examples)
fuzz: install
	ADVERSARIAL_EXAMPLES=$${ADVERSARIAL_EXAMPLES:-400} ADVERSARIAL_SEED=random \
		$(VENV)/bin/pytest tests/adversarial -q

## mutants: the scripted mutation check (scripts/mutants.py): every deliberate bug must fail its tests
mutants: install
	$(PY) scripts/mutants.py

## bench: the backfill benchmark (long: 100k and 1M events x 1/5/20 connectors); writes bench/RESULTS.md
bench: install
	$(PY) bench/run.py

## bench-check: is the job/bound throughput ratio at least half the one in bench/baseline.json? (a few minutes)
bench-check: install
	$(PY) bench/run.py --check

## bench-agents: Benthos (built with Go from the module proxy) vs the hand loop and the job, 1M events
bench-agents: install
	$(PY) bench/agent_compare.py

clean:
	rm -rf out build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache node_modules
