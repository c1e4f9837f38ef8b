# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
# The CPU build on this machine's disk; override (e.g. TORCH_SPEC='torch==2.13.0+cu126') elsewhere.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# Two workers, one test file each at a time (a file's tests share its helpers' processes and ports):
# 8.5 min from a fresh clone on the 2-core machine, setup included, against 10.5 min one at a time.
PYTEST_ARGS ?= -n 2 --dist loadfile
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	# Every extra, so that its tests run here; torch named again so that no extra can move it.
	$(BIN)/pip install --quiet -e ".[test,gpu,lightning,transformers,serve,tensorboard]" "$(TORCH_SPEC)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lrwatch demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check lrwatch tests demo bench
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lrwatch tests demo bench
	$(BIN)/ruff format --check lrwatch tests demo bench

clean:
	rm -rf $(VENV) .pytest_cache
