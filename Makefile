# Every target installs what it needs into .venv first, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The original-clients extra needs numpy 1 (pyarrow 11), so its tests run in a venv of their own.
ORIGINAL := .venv-original-clients
ORIGINAL_STAMP := $(ORIGINAL)/.installed

.PHONY: install demo test test-original-clients lint typecheck unit protos bench bench-smoke clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(ORIGINAL_STAMP): pyproject.toml requirements/constraints.txt requirements/original-clients.txt
	$(PYTHON) -m venv $(ORIGINAL)
	$(ORIGINAL)/bin/pip install --quiet --upgrade pip
	grep -v -E '^(numpy|pandas|pyarrow)==' requirements/constraints.txt > $(ORIGINAL)/constraints.txt
	$(ORIGINAL)/bin/pip install --quiet -c $(ORIGINAL)/constraints.txt -c requirements/original-clients.txt \
		-e '.[original-clients,redis]' pytest pytest-timeout
	touch $(ORIGINAL_STAMP)

## The main job: start a local deployment, run a representative workload, print the figures.
demo: $(STAMP)
	$(BIN)/cloudburst demo

## Everything CI checks: generated code up to date, lint, format, types, the whole test suite.
test: $(STAMP) protos lint typecheck
	$(BIN)/python -m pytest -m 'not original_clients'
	$(MAKE) test-original-clients

## The tests that speak as original clients do (numpy and pandas values need pyarrow 11, hence numpy 1).
test-original-clients: $(ORIGINAL_STAMP)
	CLOUDBURST_ORIGINAL_CLIENTS=1 $(ORIGINAL)/bin/python -m pytest -m original_clients tests/integration/test_original_clients.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/property

## Regenerates the protobuf modules and fails if they differ from what is committed.
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py
	@test -z "$$(git status --porcelain -- src/cloudburst/protocol/wire)" || \
		(git status --short -- src/cloudburst/protocol/wire; \
		 echo "generated protobuf code is stale: commit the output of scripts/gen_protos.py"; exit 1)

## The benchmark suite against a bare ZeroMQ floor, Ray and Dask (installs the peers first).
bench: $(VENV)/.peers
	$(BIN)/python -m benchmarks suite --full

## A quick run of the suite (CI smoke test: the figures go to the log, nothing is asserted or committed).
bench-smoke: $(VENV)/.peers
	$(BIN)/python -m benchmarks suite --quick --output-dir "$$(mktemp -d)"

$(VENV)/.peers: $(STAMP)
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev,peers]'
	touch $(VENV)/.peers

clean:
	rm -rf $(VENV) $(ORIGINAL) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
