# One command each: set up (if needed) and run.
#   make train   - create .venv, install, train the default model, print test metrics
#   make test    - create .venv, add the dev extra, run the linter (ruff) and the type checker
#                  (mypy), then the whole test suite (what CI runs)
#   make test-fast - the unit tests of every floor, under two minutes on two cores
#   make test-cuda, make bench-cuda - the CUDA tests and the GPU benchmarks (NVIDIA GPU only)
#
# PyTorch: a machine with an NVIDIA driver (nvidia-smi on PATH) gets the default CUDA build of
# torch; other machines get torch 2.13.0. Override with e.g. `make test TORCH="torch==2.14.1"`.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# what training needs, then what the tests, the linter and the benchmarks add
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev

.PHONY: setup train test test-fast lint typecheck bench test-cuda bench-cuda clean clean-kernels

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	touch $(STAMP)

$(DEV): $(STAMP)
	$(PIP) -e ".[dev]"
	touch $(DEV)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/torch-logreg train
	@echo "Next: $(BIN)/tensorboard --logdir runs, then open http://localhost:6006 (README.md tours the commands)"

# the fast tier: the first case of each test function (--first-case), without the tests marked
# slow (more than a few seconds), e2e (the command line end to end) or cuda; --all-modules fails
# the run unless it imported every module of torch_logreg
FAST := -m "not slow and not e2e and not cuda" --first-case --all-modules

lint: $(DEV)
	$(BIN)/ruff check .

# the library below the application (settings in [tool.mypy] of pyproject.toml)
typecheck: $(DEV)
	$(BIN)/mypy

# the suite on JOBS processes (pytest-xdist; each takes the next test as it finishes one)
JOBS ?= 2

test: lint typecheck
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal --durations=15

test-fast: $(DEV)
	$(BIN)/python -m pytest -q $(FAST) --durations=10

bench: $(DEV)
	$(BIN)/python benchmarks/run.py --quick

# on a machine with an NVIDIA GPU: the CUDA tests, then the GPU benchmarks
test-cuda: $(DEV)
	$(BIN)/python -m pytest -q -m cuda

bench-cuda: $(DEV)
	$(BIN)/python benchmarks/bench_core.py --device cuda
	$(BIN)/python benchmarks/run.py --device cuda --json benchmarks/results-cuda.json

# every GPU part (cuda tests, Triton compiled, CUDA graph, NCCL, train, GPU rows) in under 8 minutes, with
# $(PYTHON) as it is (no venv, no pip); one report in OUT. DRY_RUN=1: only check that each part resolves (any machine)
.PHONY: gpu-check
gpu-check:
	$(PYTHON) scripts/gpu_check.py --out $(or $(OUT),runs/gpu-check) $(if $(filter 1 yes true,$(DRY_RUN)),--dry-run)

# numba's compiled kernels (its cache checks only each kernel's own source file, not those it calls)
clean-kernels:
	find torch_logreg -name "*.nbi" -delete -o -name "*.nbc" -delete

clean: clean-kernels
	rm -rf $(VENV) build *.egg-info .pytest_cache
