# One command each: set up (if needed) and run.
#   make train   - create .venv, install, train the default model, print test metrics
#   make test    - create .venv, install with the dev extra, run the test suite
#   make test-cuda, make bench-cuda - the CUDA tests and the GPU benchmarks (NVIDIA GPU only)
#
# PyTorch: a machine with an NVIDIA driver (nvidia-smi on PATH) gets the default CUDA build of
# torch; other machines get torch 2.13.0. Override with e.g. `make test TORCH="torch==2.14.1"`.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
STAMP  := $(VENV)/.installed

.PHONY: setup train test bench test-cuda bench-cuda clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/torch-logreg train

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

# on a machine with an NVIDIA GPU: the CUDA tests, then the GPU benchmarks
test-cuda: $(STAMP)
	$(BIN)/python -m pytest -q -m cuda

bench-cuda: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py --device cuda
	$(BIN)/python benchmarks/run.py --device cuda --json benchmarks/results-cuda.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
