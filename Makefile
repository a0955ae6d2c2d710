# Two entry points: `make run` (the main job) and `make test` (the test suite).
# Both create .venv when missing and (re)install the project into it; idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-lowest lint venv clean

venv: $(STAMP)

# pyproject.toml declares ranges; constraints.txt pins the exact set CI uses.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The main job: classification suite, smoke preset, on $BENCH_DATA_DIR, else the real
# MedMNIST files in ../shared/data/medmnist when they are there, else the cache; falls
# back to the built-in synthetic datasets, loudly, when no real data is found.
# ResNet-18 and ResNet-50 fit the 15-minute budget of the main job on 2 CPU cores (measured
# 10.5 min: units of 16-24 s and 65-94 s); ViT-Tiny (about 55 s a unit) and the diffusion
# classifiers (3-7 min a smoke unit) are opt-in: make run RUN_METHODS=resnet18,vit_tiny_patch16_224,...
RUN_METHODS ?= resnet18,resnet50
# The suite's 28 px datasets (its BreastMNIST at 64 px is left to `bench run`).
RUN_DATASETS ?= breastmnist,retinamnist

# Records, tables and the page (leaderboards/index.html) go to runs/make-run/ (ignored by
# git): the committed results/ and leaderboards/ are the project's published numbers, and
# smoke is never published.
RUN_DIR := runs/make-run
DATA_DIR ?= $(or $(BENCH_DATA_DIR),$(wildcard ../shared/data/medmnist))

run: $(STAMP)
	$(BIN)/bench run --suite classification --preset smoke --datasets $(RUN_DATASETS) --methods $(RUN_METHODS) --fallback-synthetic $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --results-dir $(RUN_DIR)/results --work-dir $(RUN_DIR)/work
	$(BIN)/bench leaderboard --suite classification --results-dir $(RUN_DIR)/results --out-dir $(RUN_DIR)/leaderboards
	$(BIN)/bench site --results-dir $(RUN_DIR)/results --out $(RUN_DIR)/leaderboards/index.html
	@echo "the leaderboard page: $(abspath $(RUN_DIR)/leaderboards/index.html) (open it in a browser)"

# Two pytest-xdist workers, one thread each (tests/conftest.py), the slow trainings first.
TEST_WORKERS ?= 2

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# Everything but the tests marked slow (the CPU-minute trainings and suite runs).
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

# The suite on the lowest versions pyproject.toml allows (uv's lowest-direct resolution:
# torch 2.4, numpy 2.0, ...; about 3 GB of wheels from PyPI), in its own .venv-lowest:
# the ranges' floors are what the tests pass with. Not part of CI (the download).
LOWEST := .venv-lowest
test-lowest:
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q uv
	$(LOWEST)/bin/uv pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[test]'
	HF_HUB_OFFLINE=1 $(LOWEST)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(LOWEST) *.egg-info
