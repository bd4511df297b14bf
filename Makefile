# make demo: install, then train DCL on the embedded demo dataset, evaluate, export, predict.
# make test: install (and Debian's chromium, for the browser test of report.html), then run the test suite (what
# .ci/run and CI run); make test-slow: the opt-in slow group.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_WORKDIR ?= workdirs/demo

CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install browser test test-slow demo bench bench-learning lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# tests/report/test_run_page.py opens a run's report.html in headless chromium; installed once, quietly, where missing.
browser:
	@test -x $(CHROMIUM) || { \
		command -v apt-get >/dev/null || { echo "make test needs chromium at $(CHROMIUM) (tests/report/test_run_page.py)" >&2; exit 1; }; \
		echo "Installing Debian's chromium for tests/report/test_run_page.py"; \
		$(SUDO) apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# The TF tests run in one process per CPU this process may use (nproc), at most 4 (pytest-xdist): most of their
# time is single-threaded Python, TF start-up and bin/ subprocesses, so 2 processes on 2 cores take about 0.6x the
# wall time of 1 (benchmarks/README.md). --dist loadscope keeps a module's tests in one process, so its
# module-scoped fixtures (a trained model, a finished run) are built once. The JAX group gains nothing from more
# processes (its time is mostly each process's start-up).
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
XDIST := -n $(WORKERS) --dist loadscope

test: install browser
	$(PY) -m pytest $(XDIST) tests
	KERAS_BACKEND=jax $(PY) -m pytest -m "backend_agnostic and not slow" tests

# The opt-in group: longer end-to-end runs (SIGKILL at epoch boundaries, bin/sweep, bin/analyze, the JAX tools,
# JAX data parallel on two devices and in two processes, device RCM under TF with XLA, bin/evaluate with precise BN).
test-slow: install
	$(PY) -m pytest -m slow tests

# bin/train ends with the run's summary (test figures, files written, next commands); then its first next command.
demo: install
	$(PY) bin/train --config=configs/demo.py --workdir=$(DEMO_WORKDIR)
	@echo "Predicting one test image with the export:"
	$(PY) bin/predict --model=$(DEMO_WORKDIR)/export "$$($(PY) -m dcl_keras.data.demo --print_test_image $(DEMO_WORKDIR))"

bench: install
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/overhead.py

# Accuracy guard (about 2 hours on 2 cores): run after any change to data, augmentation, model, losses or
# optimizer; exits 1 when a mean falls below benchmarks/learning_history.csv. BENCH_ARGS=--record records it.
bench-learning: install
	$(PY) benchmarks/learning.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) workdirs .pytest_cache

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
