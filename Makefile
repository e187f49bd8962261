# The two commands of the README:
#   make run    install omnihub (with its embedded stack) into .venv and run `omnihub up`
#   make test   install what the tests need and run the whole suite
# A second run reuses .venv; it is rebuilt when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
ARGS   ?=
PYTEST_ARGS ?=

# Debian packages the test peers need (none yet for the spine; channel issues add theirs).
# chromium: the browser tests (console, web chat widget) drive /usr/bin/chromium.
APT_TEST_PACKAGES ?= postfix dovecot-imapd dovecot-lmtpd swaks chromium

.PHONY: run test test-unit test-integration bench bench-routing bench-email lint typecheck schemas clean help

help:
	@echo "make run    - install and start omnihub on its embedded stack (Ctrl-C stops)"
	@echo "make test   - install test dependencies and run the whole test suite"
	@echo "make bench  - end-to-end ingest benchmark (prints ratio to the machine's limit)"
	@echo "make lint   - ruff + mypy;  make schemas - re-export pipeline/schemas"

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "venv failed; installing python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	@$(PIP) install -q --upgrade pip

$(VENV)/.embedded: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[embedded]'
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[embedded,dev]'
	@touch $@ $(VENV)/.embedded

.apt-test-deps:
	@if [ -n "$(APT_TEST_PACKAGES)" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TEST_PACKAGES) >/dev/null; fi

run: $(VENV)/.embedded
	$(BIN)/omnihub up $(ARGS)

test: $(VENV)/.dev .apt-test-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-unit: $(VENV)/.dev
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(VENV)/.dev
	$(BIN)/python -m pytest -q tests/integration tests/e2e

bench: $(VENV)/.dev
	$(BIN)/python bench/ingest.py $(ARGS)

bench-routing: $(VENV)/.dev
	$(BIN)/python bench/routing.py $(ARGS)

bench-email: $(VENV)/.dev .apt-test-deps
	$(BIN)/python bench/email_channel.py $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy unify pipeline/contract.py pipeline/batching.py pipeline/together.py router/policy.py

schemas: $(VENV)/.dev
	$(BIN)/python -m pipeline.schemas

clean:
	rm -rf $(VENV) .omnihub .pytest_cache
