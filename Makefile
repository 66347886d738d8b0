# Two commands do all the set-up: `make study` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KERNEL := msnb
# Notebooks at once in `make study` (a Dask LocalCluster, one thread each): two 1-thread
# jobs on 2 cores trained 1.17x faster than one 2-thread job here (benchmarks/parallel_jobs.py).
STUDY_JOBS ?= 2
# glibc returning freed memory to the OS is costly on small VMs; keep it (1.5-2.4x faster training).
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 68719476736
export HF_HUB_OFFLINE := 1

.PHONY: setup study test lab lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (msnb)"
	touch $@

study: setup
	$(BIN)/msnb study parameters/quick.yaml --jobs $(STUDY_JOBS)

test: setup
	$(BIN)/ruff check msnb tests $(wildcard notebooks/*.ipynb)
	$(BIN)/ruff format --check msnb tests
	$(BIN)/python -m pytest

lab: setup
	$(BIN)/jupyter lab notebooks/

lint: setup
	$(BIN)/ruff format msnb tests
	$(BIN)/ruff check --fix msnb tests $(wildcard notebooks/*.ipynb)

clean:
	rm -rf $(VENV)
