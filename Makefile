# One command each, on a fresh Linux machine with Python 3.11:
#   make demo   set up, compile the bundled example, run it next to onnxruntime
#   make test   set up (incl. the ARM emulator) and run the whole test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast gpu-test arm-emulator lock clean

# Every package comes from requirements.lock at its exact version (--no-deps: nothing is resolved
# here), the project itself is built with the lock's setuptools, and pip check proves the lock complete.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) examples/quickstart.py

# Under CI (CI=true) a missing emulator fails the run: skipped ARM tests would look like passing ones.
arm-emulator:
	@bash scripts/setup_arm_emulator.sh || { \
	    if [ -n "$${CI:-}" ]; then echo "*** ARM emulator could not be set up (see above): failing, since CI=$$CI ***" >&2; exit 1; fi; \
	    echo "*** ARM emulator could not be set up (see above): the ARM tests will SKIP ***"; }

# -rs lists every skip with its reason at the end of the run.
test: setup arm-emulator
	$(PY) -m pytest -n 2 -rs --durations=15

# Everything but the slow model-level suites, for quick local iteration.
test-fast: setup
	$(PY) -m pytest -n 2 -rs -m "not slow"

# CUDA artifacts on this machine's NVIDIA GPU vs onnxruntime (the tests skip without a GPU).
gpu-test: setup
	$(PY) -m pytest -m gpu -rs tests/cuda

# Re-resolve pyproject.toml's ranges into requirements.lock on purpose, then run the tests on it.
lock:
	bash scripts/update_lock.sh

clean:
	rm -rf $(VENV) .pytest_cache
