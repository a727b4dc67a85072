# Two commands do everything on a fresh clone:  make repro  |  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup setup-dev repro sync test test-fast lint ui server bench gpu-check audit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: requirements.txt constraints.txt requirements-data.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --require-hashes \
		-r requirements-data.txt
	touch $@

$(VENV)/.dev: $(VENV)/.deps requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

setup: $(VENV)/.deps          ## create .venv and install the pinned runtime dependencies
setup-dev: $(VENV)/.dev       ## ... plus test and lint tools

# dvc repro writes only deterministic outputs; the stages' wall time and memory go to timing/
# (git-ignored), which transferlab.compute summarises with this machine's provenance. The MLflow
# pipeline run then ends FINISHED, or FAILED when a step failed.
repro: setup                  ## run the whole pipeline on the built-in default scenario
	export TRANSFERLAB_EXECUTION=$$($(BIN)/python -c "import uuid; print(uuid.uuid4().hex[:12])"); \
	status=FINISHED; \
	dvc repro && $(BIN)/python -m transferlab.compute \
		&& $(BIN)/python -m transferlab.tracking sync || status=FAILED; \
	$(BIN)/python -m transferlab.tracking finish --status $$status; \
	test $$status = FINISHED

test: setup-dev               ## lint, then the full test suite (slow end-to-end tests included)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

sync: setup                   ## rebuild the MLflow mirror from the DVC outputs (idempotent)
	$(BIN)/python -m transferlab.tracking sync

test-fast: setup-dev          ## unit tests only
	$(BIN)/python -m pytest -m "not slow"

lint: setup-dev
	$(BIN)/ruff check .

ui: setup                     ## MLflow UI on the local store; prints the link to the training runs
	@$(BIN)/python -m transferlab.tracking ui-url
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" --host 127.0.0.1 --port 5000

# PostgreSQL (the pinned wheel's server, on 127.0.0.1) and an MLflow tracking server on it, with
# data, artifacts and logs in SERVER_DIR; SERVER_ARGS go to the serve command (--host, --port,
# --pg-port, --workers) and on to `mlflow server` (e.g. --allowed-hosts). Ctrl-C stops both.
SERVER_DIR ?= .mlflow-server
SERVER_ARGS ?=
server: setup                 ## a team's tracking server: PostgreSQL + mlflow server (README "A tracking server for a team")
	$(BIN)/python -m transferlab.services serve --dir $(SERVER_DIR) $(SERVER_ARGS)

# the pipeline from nothing, here and at BENCH_COMPARE (empty: skip): about 2 x 20 min on 2 cores
BENCH_COMPARE ?= HEAD~1
bench: setup                  ## the speed issue's ratios: pipeline, loop, replicates, probe, start-up, no-op
	$(BIN)/python benchmarks/train_loop.py
	$(BIN)/python benchmarks/replicates.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/pipeline_speed.py $(if $(BENCH_COMPARE),--compare $(BENCH_COMPARE))

gpu-check: setup              ## on a lent GPU: throughput, determinism, default + resnet18 (< 8 min)
	bash benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

audit: setup                  ## can the results be trusted and rerun? writes audit/audit.{json,md}
	$(BIN)/python -m transferlab.audit $(AUDIT_ARGS)
