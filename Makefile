# `make demo` and `make test` each create .venv when missing and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs lint bench bench-quick bench-real clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml requirements-lock.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements-lock.txt -e ".[dev,bench,plot]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/sleepstudy.py

test: $(STAMP)
	$(PY) -m ruff check jaxmixed tests benchmarks examples
	$(VENV)/bin/pyright --pythonpath $(PY) jaxmixed  # types, basic mode (pyproject.toml)
	$(PY) -m pytest -q -n 2 --dist loadgroup --timeout=600 --doctest-modules --durations=25 tests jaxmixed  # two workers (the CI machine has 2 cores); the docstrings' examples too

DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c requirements-lock.txt -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)  # the site into site/, warnings as errors (mkdocs.yml), every example run
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(PY) -m ruff check jaxmixed tests benchmarks examples
	$(VENV)/bin/pyright --pythonpath $(PY) jaxmixed

bench: $(STAMP)  # the full peer comparison (about 22 minutes on 2 cores)
	$(PY) -m benchmarks

bench-quick: $(STAMP)  # the library's kernels against the previous results/quick.json (about a minute)
	$(PY) -m benchmarks --suite quick

bench-real: $(STAMP)  # mlmRev's models, jaxmixed against lme4 (needs R with lme4 and mlmRev)
	$(PY) -m benchmarks --suite real

clean:
	rm -rf $(VENV) build site *.egg-info
