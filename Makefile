# IMBUE: `make run` starts the product, `make test` runs the tests. Nothing to install but Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format browser bench clean-local

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## Start everything (embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set).
run: $(STAMP)
	$(PY) -m imbue.devservices run

## The whole test suite, on the embedded servers unless DATABASE_URL / REDIS_URL are set.
test: $(STAMP) browser
	$(PY) -m imbue.devservices exec -- $(PY) -m pytest $(PYTEST_ARGS)

## Everything but the browser and fault tests.
test-fast: $(STAMP)
	$(PY) -m imbue.devservices exec -- $(PY) -m pytest -m "not e2e and not faults" $(PYTEST_ARGS)

## Debian's Chromium for the browser tests (never a downloaded browser).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)); \
	  else echo "Browser tests need Debian's chromium: sudo apt-get install -y chromium"; fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m imbue.devservices exec -- $(PY) -m bench.run

## Delete the embedded databases' data (asks no questions).
clean-local:
	rm -rf .local
