# Developer entry points. Everything runs from the project venv in .venv/.
#   make test   lint + type-check + the test suite (PYTEST_ARGS="-k foo -x" passes through)
#   make lint   ruff + mypy only
#   make run    the local dev stack (`outbox dev`)
#   make bench  the benchmarks
#   make chaos  30 rounds of kill -9 / Pub/Sub restarts under load, then the loss audit
#               (ROUNDS=5 for a quick run, SEED=n to change or replay a run)

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
ROUNDS ?= 30
SEED ?= 1

.PHONY: venv test lint run bench chaos

venv: $(STAMP)

# Reinstalls only when pyproject.toml is newer than the stamp (or the venv is gone).
$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  py="$$(command -v $(PYTHON) || command -v python3)"; \
	  if [ -z "$$py" ]; then echo "neither $(PYTHON) nor python3 found" >&2; exit 1; fi; \
	  echo "creating $(VENV) with $$py"; \
	  "$$py" -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_ARGS)

run: venv
	$(BIN)/outbox dev

bench: venv
	$(BIN)/python -m benchmarks.run

chaos: venv
	$(BIN)/outbox chaos --rounds $(ROUNDS) --seed $(SEED) --json bench-results/chaos.json
