# Two commands matter: `make up` runs the whole stack, `make test` runs every test.
# `make install` installs requirements.txt: everything for development (requirements/dev.txt).
# `make lock` compiles the direct pins of requirements/*.in into the locked requirements/*.txt.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# MLflow runs `python` and `uvicorn` from PATH: the venv's must come first.
export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := help
MLFLOW_PORT ?= 5000
export MLFLOW_PORT
# MLflow's usage telemetry is off in everything these targets start (`make up`, train, tune,
# batch, monitor, the tests, the benchmarks); MLFLOW_DISABLE_TELEMETRY=false turns it on.
MLFLOW_DISABLE_TELEMETRY ?= true
export MLFLOW_DISABLE_TELEMETRY

.PHONY: help install lock up test test-unit test-servers test-compose compose-images lint typecheck format soak train tune batch monitor bench bench-training bench-serving bench-batch bench-shadow bench-model bench-selection bench-short clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt $(wildcard requirements/*.txt)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# Every package is locked with its hashes: nothing to resolve (and the venv's pip 23.2
	@# refuses an extra's dependencies in hash-checking mode).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
	@touch $@

install: $(VENV)/.installed ## Create .venv and install everything for development (pinned)
	@# The page tests drive Debian's chromium (as root, installed when missing).
	@test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x /usr/bin/chromium || echo "The page tests need Debian's chromium: apt-get install chromium" >&2

# Each requirements/NAME.in (direct pins) becomes the locked requirements/NAME.txt (every
# package pinned, with the hashes of its files: pip refuses any other file, in `make install`
# and in the images) for Python 3.11 on Linux x86-64, the interpreter of .venv and of the images.
# dev.txt first: the others are resolved within it (-c), so no two files pin a package at
# different versions. Existing pins are kept unless an .in file asks for another version;
# `make lock LOCK_ARGS=--upgrade` moves every indirect dependency to its newest release.
LOCKS := model stores tracking gateway training batch
LOCK_FLAGS := --quiet --strip-extras --allow-unsafe --generate-hashes --no-emit-index-url \
	--no-emit-find-links --no-emit-trusted-host $(LOCK_ARGS)

lock: install ## Compile requirements/*.in into the locked requirements/*.txt, and conda.yaml
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(LOCK_FLAGS) \
		-o requirements/dev.txt requirements/dev.in
	for name in $(LOCKS); do \
		CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(LOCK_FLAGS) \
			-c requirements/dev.txt -o requirements/$$name.txt requirements/$$name.in || exit 1; \
	done
	$(BIN)/python requirements/conda_env.py

up: install ## Run the whole stack in the foreground (GATEWAY_REPLICAS=N: N gateways behind nginx)
	$(BIN)/python -m stack.up

train: install ## Train a new model against the running stack (ARGS="-P preset=seed")
	MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) $(BIN)/mlflow run . --env-manager local \
		--experiment-name Sentiment-Analysis $(ARGS)

tune: install ## Grid-search the vectorizer and classifier against the running stack
	MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) $(BIN)/mlflow run . -e tune \
		--env-manager local --experiment-name Sentiment-Analysis $(ARGS)

batch: install ## Score a corpus on Spark (ARGS="-P input=reviews.csv -P output=scored")
	MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) $(BIN)/mlflow run . -e batch_score \
		--env-manager local --experiment-name Sentiment-Analysis $(ARGS)

monitor: install ## Check the served version over the period since the last check (ARGS="-P retrain=if_needed")
	MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) $(BIN)/mlflow run . -e monitor \
		--env-manager local --experiment-name Sentiment-Monitoring \
		-P state_dir=$(or $(STATE_DIR),mlruns) \
		-P gateway_url=$(or $(GATEWAY_URL),http://127.0.0.1:$(or $(GATEWAY_PORT),8000)) $(ARGS)

test: test-unit test-servers ## The whole gate: the unit tests, then the suites with real servers

test-servers: install ## Integration and reliability tests against real servers, slowest 25 listed
	$(BIN)/python -m pytest tests/integration tests/reliability --durations=25

test-unit: install ## Run the unit tests only (no servers; a worker per core, a file each)
	$(BIN)/python -m pytest tests/unit -m unit -n auto --dist loadfile

# The images' org.opencontainers.image.revision label: the commit they are built from.
test-compose: export REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
test-compose: install compose-images ## `docker compose up --build` end to end on a real Docker engine with Compose v2 (8 min with the images built)
	$(BIN)/python -m pytest tests/compose -m compose

compose-images: install ## Install Docker and Compose v2 and start Docker if needed; build stand-ins for images no registry serves here
	$(BIN)/python -m tests.compose.engine
	$(BIN)/python -m tests.compose.standins

lint: install ## Check the code: ruff's lint rules and formatting, then mypy's types (as CI does)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: install ## Check the types of model, monitoring, stack, pipelines, gateway and benchmarks with mypy
	$(BIN)/mypy

format: install ## Apply ruff's safe fixes and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

soak: install ## Long reliability runs: minute-long promotions and outage, 5,000 fuzz cases
	$(BIN)/python -m pytest tests/reliability -m soak

bench: bench-model bench-training bench-serving bench-batch ## Every benchmark (~25 min), then one summary table
	$(BIN)/python -m benchmarks.summary

bench-training: install ## Train each preset on the packaged data; accuracy, time, size
	$(BIN)/python -m benchmarks.training

bench-serving: install ## Gateway vs direct vs in-process, then what moved since the committed results
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
		|| { echo "wrk is needed: apt-get install wrk"; exit 1; }
	$(BIN)/python -m benchmarks.serving

bench-batch: install ## Batch scoring: one process vs Spark local[1] vs local[*] (needs Java 17+)
	$(BIN)/python -m benchmarks.batch

bench-shadow: install ## Shadow challenger: /predict latency with the shadow off and on
	$(BIN)/python -m benchmarks.shadow

bench-model: install ## The model's µs per review vs plain scikit-learn, load time, cold start
	$(BIN)/python -m benchmarks.model

bench-short: install ## Short texts: the model's variants on validation and critic sentences (~10 min)
	$(BIN)/python -m benchmarks.short_texts

bench-selection: install ## Choose the `best` preset by 5-fold CV on train+val (~20 min)
	$(BIN)/python -m benchmarks.selection

clean: ## Remove the venv and local state
	rm -rf $(VENV) mlruns .pytest_cache .ruff_cache .mypy_cache
