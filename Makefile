# Set-up on a fresh machine is part of every target: the virtualenv is (re)built whenever
# pyproject.toml changes. torch is pinned there to the release this machine installs offline.
VENV   := .venv
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: setup demo test bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --progress-bar off -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/graphopt demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_pass_manager.py
