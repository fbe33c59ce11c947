# One entry point for people and CI. `make test` works on a fresh machine: it creates .venv,
# installs the package with its dev, faust and clients extras and the CPU build of torch (the real
# spaCy, transformers and Faust tests run with them), then runs lint, types and the whole test suite.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLIENTS := $(VENV)/.clients-installed

.PHONY: test lint typecheck pytest run demo bench clean test-core

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The real client libraries for their tests (about 1.4 GB with torch's CPU build; `make run` needs none),
# and umap-learn for the UMAP projection's tests.
$(CLIENTS): $(STAMP) scripts/install-torch-cpu.sh
	$(BIN)/python -m pip install --quiet -e '.[dev,faust,clients,umap]'
	bash scripts/install-torch-cpu.sh $(BIN)/python
	touch $(CLIENTS)

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

pytest: $(CLIENTS) monitoring-tools chromium
	$(BIN)/python -m pytest -q

test: lint pytest

# Without the client libraries (no torch, spaCy, transformers or Faust): their tests skip with the reason.
test-core: $(STAMP) monitoring-tools chromium
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

run: $(STAMP)
	$(BIN)/nlpmon run --demo

bench: $(CLIENTS)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/replay_throughput.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/pages_cost.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/spacy_beam_cost.py

# TLS certificates, a scrape password and deploy/web/web-config.yml for the compose stack (not committed).
.PHONY: certs
certs: $(STAMP)
	bash scripts/make-web-certs.sh deploy/web $(BIN)/python

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
