# Everything is set up from a bare Python 3.11 + pip + gcc: the first target that needs it builds .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all conformance lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# torch 2.13.0 (CPU build) lies on the CI machine's disk; elsewhere any recent torch will do.
	$(PY) -m pip install --quiet torch==2.13.0 || $(PY) -m pip install --quiet torch
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tl run examples/quickstart.tl

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

# coremltools' op tests (both backends) and wheel suites on our executors (docs/CONFORMANCE.md);
# about 65 min on 2 cores.
conformance: $(STAMP)
	$(PY) -m tests.conformance.run --jobs 2

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
