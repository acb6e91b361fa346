# vitlib: `make test` and `make reproduce [PROFILE=smoke|cpu|full]` set everything up themselves.
PYTHON ?= python3
PROFILE ?= cpu
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: help install data test test-full reproduce quickstart bench bench-accelerator zoo lock \
	clean clean-runs

help:
	@echo "make test                  pytest + nbval over notebooks (smoke profile)"
	@echo "make test-full             the full profile's notebooks on CPU, every size shrunk (slow)"
	@echo "make reproduce PROFILE=cpu run every notebook with papermill into results/"
	@echo "make quickstart            train the quickstart ViT on Fashion-MNIST (runs/quickstart)"
	@echo "make bench                 input pipeline vs tf.data / PyTorch; train throughput; sweep overhead"
	@echo "make bench-accelerator     device check: img/s, MFU, memory of B/16, L/16, g/14 on the JAX backend"
	@echo "make zoo                   print paper Table 2 as computed by vitlib"
	@echo "make install | data | lock"
	@echo "make clean                 remove .venv and uncommitted results (smoke, interactive)"
	@echo "make clean-runs            remove runs/: cached training runs (the cpu profile's: up to its 150-minute budget of compute)"

# The virtual environment with the pinned packages and vitlib (editable); rebuilt when pins change.
# The pins include the `test` extra (CPU torch, torchvision, timm: tests/test_convert.py compares
# checkpoint conversion with timm), about 30 s of the install.
# vitlib.torchvision_cpu writes a .pth that lets `import timm` load PyPI's (CUDA) torchvision
# beside the CPU torch wheel (see docs/checkpoints.md).
$(STAMP): requirements.lock pyproject.toml vitlib/torchvision_cpu.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--no-build-isolation -e .
	$(BIN)/python -m vitlib.torchvision_cpu
	@touch $@

install: $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist package (installed when root).
data:
	@if [ -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: $(FASHION_MNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Fashion-MNIST missing: installing Debian package dataset-fashion-mnist"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		     dataset-fashion-mnist; }; \
	else \
		echo "WARNING: Fashion-MNIST not found in $(FASHION_MNIST_DIR)."; \
		echo "  Install it with 'sudo apt-get install dataset-fashion-mnist', or point"; \
		echo "  VITLIB_FASHION_MNIST_DIR at a folder with the four *-ubyte.gz IDX files."; \
	fi

# Two pytest workers (one per core here): most tests wait on single-threaded XLA compiles.
# Whole files stay on one worker (a notebook's cells run in order in one kernel).
TEST_WORKERS ?= 2
test: $(STAMP) data
	VITLIB_PROFILE=smoke $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests \
		notebooks --nbval-lax --nbval-current-env -q --durations=15

# The full profile's code path (real-data pipeline, paper recipe) on generated JPEG data; slow.
test-full: $(STAMP)
	VITLIB_FULL_NOTEBOOKS=1 $(BIN)/python -m pytest tests/test_full_notebooks.py -q \
		--durations=5

reproduce: $(STAMP) data
	$(BIN)/python -m vitlib.study.reproduce --profile $(PROFILE)

# Resumes if runs/quickstart holds a checkpoint; remove the folder for a fresh run.
quickstart: $(STAMP) data
	$(BIN)/python -m vitlib.train --config quickstart --workdir runs/quickstart

# TensorFlow: benchmark-only (the tf.data contender of input_pipeline.py), in a venv of its own
# so that vitlib's .venv stays TF-free (tensorflow_datasets behaves otherwise with TF present).
TF_VENV := .venv-tf
$(TF_VENV)/.installed:
	$(PYTHON) -m venv $(TF_VENV)
	$(TF_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		tensorflow-cpu==2.21.0 array_record==0.8.6
	@touch $@

# PyTorch is a benchmark-only extra: the CPU wheel 2.13.0 (pinned in pyproject's `bench` extra).
# A failed TensorFlow install leaves tf.data out of input_pipeline.py's table (said there).
bench: $(STAMP)
	@$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	-@$(MAKE) --no-print-directory $(TF_VENV)/.installed
	$(BIN)/python benchmarks/input_pipeline.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/forward_profile.py
	$(BIN)/python benchmarks/sweep_overhead.py

# The device check on whatever JAX backend is present: full sizes on a GPU/TPU (minutes),
# tiny sizes on CPU (seconds; tests/test_bench_accelerator.py runs it). See docs/benchmarks.md.
bench-accelerator: $(STAMP)
	$(BIN)/python benchmarks/accelerator.py $(ARGS)

zoo: $(STAMP)
	$(BIN)/python -m vitlib.models.zoo

# Re-resolve dependencies from pyproject.toml into requirements.lock and environment.yml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[dev,test]' 'setuptools>=70.1'
	{ echo "# Exact versions installed by 'make' (pip install -r requirements.lock). Regenerate with"; \
	  echo "# 'make lock' after changing dependencies in pyproject.toml; environment.yml carries the same pins."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -E '^(vitlib|pip)=='; } > requirements.lock
	{ echo "# conda env create -f environment.yml  (same pins as requirements.lock; made by 'make lock')"; \
	  echo "name: vitlib"; echo "channels:"; echo "  - conda-forge"; echo "dependencies:"; \
	  echo "  - python=3.11"; echo "  - pip"; echo "  - pip:"; \
	  grep -E '^[A-Za-z0-9]' requirements.lock | sed 's/^/      - /'; echo "      - -e ."; } \
	  > environment.yml
	rm -rf .lock-venv

# Keeps runs/ (cached training runs, hours of compute); `make clean-runs` removes them.
clean:
	rm -rf $(VENV) $(TF_VENV) results/smoke results/interactive .pytest_cache

clean-runs:
	rm -rf runs
