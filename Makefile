# darch: one-command setup, demo and tests on a fresh machine (Python >= 3.10 with venv).
#   make demo    set up, then run a real search on an embedded LocalCluster
#   make test    set up, start a single-node SLURM (as root), run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint format bench bench-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[tf,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(VENV)/bin/darch run conf/experiments/demo.yaml

test: setup
	PY=$(PY) bash tools/test.sh

lint: setup
	$(VENV)/bin/ruff check toolkit tests bench tools
	$(VENV)/bin/ruff format --check toolkit tests bench tools

format: setup
	$(VENV)/bin/ruff format toolkit tests bench tools

bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m bench

bench-quick: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m bench --quick

clean:
	rm -rf logs .pytest_cache
