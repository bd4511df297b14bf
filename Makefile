# make demo: install, then train DCL on the embedded demo dataset, evaluate, export, predict.
# make test: install, then run the whole test suite (what .ci/run and CI run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_WORKDIR ?= workdirs/demo

.PHONY: install test test-jax demo bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

test: install
	$(PY) -m pytest tests
	KERAS_BACKEND=jax $(PY) -m pytest -m backend_agnostic tests

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
