# One command each, on a fresh Linux machine with Python 3.11:
#   make demo   set up, compile the bundled example, run it next to onnxruntime
#   make test   set up (incl. the ARM emulator) and run the whole test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast gpu-test arm-emulator clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) examples/quickstart.py

arm-emulator:
	bash scripts/setup_arm_emulator.sh || echo "*** ARM emulator could not be set up: ARM tests will skip (see above) ***"

test: setup arm-emulator
	$(PY) -m pytest -n 2 --durations=15

# Everything but the slow model-level suites, for quick local iteration.
test-fast: setup
	$(PY) -m pytest -n 2 -m "not slow"

# CUDA artifacts on this machine's NVIDIA GPU vs onnxruntime (the tests skip without a GPU).
gpu-test: setup
	$(PY) -m pytest -m gpu -rs tests/cuda

clean:
	rm -rf $(VENV) .pytest_cache
