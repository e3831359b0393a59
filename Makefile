# `make demo` and `make test` are the README's two commands: each sets up a
# virtual environment from scratch (idempotently) and then does its job.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The client's own tests also run on Python 3.13, whose asyncio differs
# (get_event_loop without a loop is deprecated in 3.12+, removed in 3.14).
VENV313 := .venv313
CLIENT_TESTS := tests/test_seed_compat.py tests/test_client_seed.py tests/test_client_modern.py \
                tests/test_client_faults.py tests/test_connection.py tests/test_protocol.py \
                tests/test_handlers.py tests/test_events.py tests/test_web.py tests/test_socketmode_client.py

.PHONY: setup demo test lint test-py313 bench browser-deps java-deps

# Installed once, then again only when pyproject.toml changes (the install
# is editable: code changes need no reinstall). The stamp lives in .venv, so
# deleting .venv starts over.
STAMP  := $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Order-only: the venv's python is a symlink whose date is the system
# interpreter's, which must not make the stamp look stale.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/rtm-notebook demo

# The browser test needs Debian's chromium; install it where it is missing.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium'"; exit 1; fi; }

# Spark (the Parquet dataset test) needs a Java runtime; install Debian's where it is missing.
java-deps:
	@command -v java >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null; \
	  else echo "java missing: run 'sudo apt-get install default-jre-headless'"; exit 1; fi; }

lint: setup
	$(BIN)/ruff check .

# python3.13 where it runs; under pyenv, the installed 3.13 even when it is not the active version.
PY313 = $(shell for p in python3.13 $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13; do \
          $$p -c '' >/dev/null 2>&1 && { echo $$p; break; }; done)

$(VENV313)/.installed: pyproject.toml
	@test -n "$(PY313)" || { echo "Python 3.13 not found: install python3.13 to run the client's tests on it"; exit 1; }
	$(PY313) -m venv $(VENV313)
	$(VENV313)/bin/pip install -q --upgrade pip
	$(VENV313)/bin/pip install -q -e '.[client-test]'
	touch $@

test-py313: $(VENV313)/.installed
	$(VENV313)/bin/python -m pytest -q -p no:cacheprovider $(CLIENT_TESTS)

test: lint browser-deps java-deps test-py313
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m benchmarks
