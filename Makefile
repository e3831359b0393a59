# `make demo` and `make test` are the README's two commands: each sets up a
# virtual environment from scratch (idempotently) and then does its job.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test bench browser-deps

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

test: setup browser-deps
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m benchmarks
