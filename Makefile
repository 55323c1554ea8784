# Two commands matter: `make up` runs the whole stack, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# MLflow runs `python` and `uvicorn` from PATH: the venv's must come first.
export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install up test train bench soak down clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

install: $(VENV)/.installed ## Create .venv and install the pinned dependencies

test: install ## Run the whole test suite (unit, integration, reliability)
	$(BIN)/python -m pytest

clean: ## Remove the venv and local state
	rm -rf $(VENV) mlruns .pytest_cache
