# The README's two commands: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= demo_output
DEMO_STORE ?= demo_store
DEMO_PASSWORD ?= leukomorph-demo

.PHONY: demo test test-all test-train bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,serve]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/leukomorph analyze src/leukomorph/sample/pbc_healthy --case pbc_healthy_sample --out $(OUT) --overwrite
	@echo "Report: $(abspath $(OUT))/report.html"
	rm -rf $(DEMO_STORE)
	$(BIN)/leukomorph import $(OUT) --data-dir $(DEMO_STORE)
	DEMO_PASSWORD=$(DEMO_PASSWORD) $(BIN)/leukomorph add-user demo --role hematologist --password-env DEMO_PASSWORD --data-dir $(DEMO_STORE)
	@echo "Review: $(BIN)/leukomorph serve --data-dir $(DEMO_STORE)  -> http://127.0.0.1:8000 (user demo, password $(DEMO_PASSWORD))"

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# Review workstation: Playwright + Debian's chromium browser test and the loopback load test.
# CI runs it after `make test`; without chromium (and no way to install it) the browser test is skipped.
test-all: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet 'playwright>=1.45'
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1))) || echo "chromium not installable here: browser test will be skipped"
	$(BIN)/python -m pytest -s -m 'browser or load'

# Optional: training tests on the small CPU build of torch (not part of `make test`).
test-train: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet -e '.[train]'
	$(BIN)/python -m pytest -m train

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/patients.py
	$(BIN)/python benchmarks/calibration.py
	$(BIN)/python benchmarks/cross_domain.py
	$(BIN)/python benchmarks/cell_scale.py
	$(BIN)/python benchmarks/healthy_cases.py
	$(BIN)/python benchmarks/slides.py
	$(BIN)/python benchmarks/quality.py

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(OUT) $(DEMO_STORE) build *.egg-info src/*.egg-info
