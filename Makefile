# squeeze — `make help` lists the commands. A fresh clone needs only python3 (3.10+) and the PyPI registry.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install sweep test test-fast lint bench mlflow-ui dashboard clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install squeeze with its dev tools

sweep: $(STAMP)  ## run the default study (digits, mlp, joint space); extra overrides: make sweep ARGS="study.n_trials=40"
	$(PY) -m search.sweep $(ARGS)

test: $(STAMP)  ## run the whole test suite (what CI runs)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)  ## the tests without the slow end-to-end sweeps
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check search trainers tests benchmarks

bench: $(STAMP)  ## write benchmarks/results/*.json and docs/results.md (~6 h on 2 cores)
	PYTHONPATH=. $(PY) benchmarks/compression.py --out benchmarks/results/compression.json
	PYTHONPATH=. $(PY) benchmarks/search.py --out benchmarks/results/search.json --trials 30 --folds 3 --seeds 0 1 2
	PYTHONPATH=. $(PY) benchmarks/search.py --out benchmarks/results/search_wallclock_compress_only.json --wallclock 90 --spaces compress_only --seeds 0 1 2 --folds 3 --check-prunes --modes recipes random tpe_before default default_gp
	PYTHONPATH=. $(PY) benchmarks/search.py --out benchmarks/results/search_wallclock_180s.json --wallclock 180 --spaces compress_only --seeds 0 1 2 --folds 3 --modes recipes random default
	PYTHONPATH=. $(PY) benchmarks/search.py --out benchmarks/results/search_wallclock_joint.json --wallclock 90 --spaces joint --seeds 0 1 2 --folds 3 --check-prunes
	PYTHONPATH=. $(PY) benchmarks/search.py --out benchmarks/results/search_wallclock_1800s_default.json --wallclock 1800 --spaces compress_only --datasets breast_cancer digits --seeds 0 --folds 3 --modes default
	PYTHONPATH=. $(PY) benchmarks/search.py --out benchmarks/results/search_front_bound.json --bound benchmarks/results/search_wallclock_180s.json benchmarks/results/search_wallclock_1800s_default.json benchmarks/results/search_wallclock_joint.json
	PYTHONPATH=. $(PY) benchmarks/scale.py --trials 1000 5000 10000 --out benchmarks/results/scale.json
	PYTHONPATH=. $(PY) benchmarks/workers.py --out benchmarks/results/workers.json
	PYTHONPATH=. $(PY) benchmarks/recommender.py --out benchmarks/results/recommender.json
	PYTHONPATH=. $(PY) benchmarks/recommender_scale.py --out benchmarks/results/recommender_scale.json
	PYTHONPATH=. $(PY) benchmarks/finetune_step.py --out benchmarks/results/finetune_step.json
	PYTHONPATH=. $(PY) benchmarks/latency.py --out benchmarks/results/latency.json
	PYTHONPATH=. $(PY) benchmarks/seqrec_latency.py breakdown --items 5000
	PYTHONPATH=. $(PY) benchmarks/seqrec_latency.py pareto --items 5000
	$(PY) benchmarks/render.py

mlflow-ui: $(STAMP)  ## browse the default MLflow store on http://127.0.0.1:5000 (README "Compare in the MLflow UI")
	@echo "experiments: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

STORAGE ?= sqlite:///mlruns/optuna.db
dashboard: $(STAMP)  ## the Optuna studies in optuna-dashboard on http://127.0.0.1:8080 (STORAGE=<url> for another)
	@case "$(STORAGE)" in sqlite:///*) test -s "$(patsubst sqlite:///%,%,$(STORAGE))" || \
	  { echo "no Optuna storage at $(patsubst sqlite:///%,%,$(STORAGE)): run make sweep first, or STORAGE=<url>"; exit 2; };; esac
	@test -x $(VENV)/bin/optuna-dashboard || $(PY) -m pip install --quiet -e '.[dashboard]'
	$(VENV)/bin/optuna-dashboard $(STORAGE) --host 127.0.0.1 --port 8080

clean:  ## remove the local stores (mlruns/*) and caches, keep .venv
	rm -rf mlruns/*.db mlruns/*.journal mlruns/artifacts .pytest_cache
