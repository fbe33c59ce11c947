# One entry point for people and CI. `make test` works on a fresh machine: it creates .venv,
# installs the package with its dev extras, then runs lint, types and the whole test suite.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest run demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/mypy

# promtool/amtool for tests/deploy: installed when CI is set, or when promtool is missing and we are root.
.PHONY: monitoring-tools
monitoring-tools:
	@if [ -n "$$CI" ] || { ! command -v promtool >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; }; then \
		bash scripts/install-monitoring-tools.sh; fi

# chromium for the browser test of the pages: installed when CI is set, or when missing and we are root.
.PHONY: chromium
chromium:
	@if [ -n "$$CI" ] || { ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; }; then \
		bash scripts/install-chromium.sh; fi

pytest: $(STAMP) monitoring-tools chromium
	$(BIN)/python -m pytest -q

test: lint pytest

run: $(STAMP)
	$(BIN)/nlpmon run --demo

bench: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/replay_throughput.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/pages_cost.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
