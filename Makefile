# make demo: install, then train DCL on the embedded demo dataset, evaluate, export, predict.
# make test: install, then run the test suite (what .ci/run and CI run); make test-slow: the opt-in slow group.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_WORKDIR ?= workdirs/demo

.PHONY: install test test-slow demo bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

test: install
	$(PY) -m pytest tests
	KERAS_BACKEND=jax $(PY) -m pytest -m "backend_agnostic and not slow" tests

# The opt-in group: longer end-to-end runs (SIGKILL at epoch boundaries, bin/sweep, bin/analyze, the JAX tools,
# JAX data parallel on two devices and in two processes, device RCM under TF with XLA, bin/evaluate with precise BN).
test-slow: install
	$(PY) -m pytest -m slow tests

demo: install
	$(PY) bin/train --config=configs/demo.py --workdir=$(DEMO_WORKDIR)
	$(PY) bin/predict --model=$(DEMO_WORKDIR)/export "$$($(PY) -m dcl_keras.data.demo --print_test_image $(DEMO_WORKDIR))"

bench: install
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) workdirs .pytest_cache

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
