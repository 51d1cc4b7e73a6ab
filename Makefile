# Two commands do all set-up on a fresh machine (see README): `make bench` (the main job) and `make test`.
# Both create .venv on first use, install PyTorch and the project into it, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CI pins the exact PyTorch; the package itself only asks for torch>=2.4.
TORCH_SPEC ?= torch==2.14.1
MAX_JOBS ?= 2

export MAX_JOBS

.PHONY: setup bench test lm clean wheels

$(VENV)/.installed: setup.py pyproject.toml $(wildcard csrc/*) $(wildcard csrc/emu/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "$(TORCH_SPEC)" numpy pytest ninja pybind11 "setuptools>=64" wheel matplotlib
	# No build isolation: the extension must be built against the torch installed above, not a fresh download.
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

setup: $(VENV)/.installed

bench: setup
	$(PY) -m bench.bench_kernels $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

lm: setup
	$(PY) -m bench.lm.train $(ARGS)

# FlashRNN (the benchmark's anchor) and einops as wheels for the GPU machine, which has no network: bench/gpu.sh call2
# installs them from bench/wheels (kept out of git; the device call carries the folder).
wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: -d bench/wheels flashrnn==1.0.8 einops==0.8.2

clean:
	rm -rf build lstmkern/_C*.so *.egg-info
