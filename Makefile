# Two commands do all the set-up: `make study` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KERNEL := msnb
# `make setup` installs the exact versions of the lock for this machine's architecture;
# `make lock` writes the locks of all LOCK_PLATFORMS from pyproject.toml and constraints.txt.
ARCH := $(shell uname -m)
LOCK_DIR ?= requirements
LOCK := $(LOCK_DIR)/lock-$(ARCH).txt
LOCK_PLATFORMS ?= x86_64 aarch64
# CI's Python: some pins need a 3.11 patch release (soupsieve 4.1 needs 3.11.5).
LOCK_PYTHON := 3.11.7
# e.g. LOCK_FLAGS=--upgrade (newest of everything) or LOCK_FLAGS="--upgrade-package pandas"
LOCK_FLAGS ?=
UV ?= $(BIN)/uv
# Notebooks at once in `make study` (from threads of the study process, each job's kernel
# with one thread): two 1-thread jobs on 2 cores trained 1.17x faster than one 2-thread
# job here (benchmarks/parallel_jobs.py).
STUDY_JOBS ?= 2
# glibc returning freed memory to the OS is costly on small VMs; keep it (1.5-2.4x faster training).
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 68719476736
export HF_HUB_OFFLINE := 1

.PHONY: setup study test lab lint lock clean

setup: $(VENV)/.installed

# The lock pins pip and every distribution msnb[test] needs; msnb itself goes in editable,
# without resolving anything more, and pip check confirms the lock is whole.
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$$(grep -E '^pip==' $(LOCK))"
	$(BIN)/python -m pip install -r $(LOCK)
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m pip check
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (msnb)"
	touch $@

$(LOCK_DIR)/lock-%.txt:
	@echo "no lock for $* in $(LOCK_DIR)/: run 'make lock LOCK_PLATFORMS=$*' on a machine with uv" >&2
	@exit 1

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

# Keeps every pin that still satisfies pyproject.toml and constraints.txt; changes only
# what must change (LOCK_FLAGS=--upgrade for the newest). Needs the package registry.
lock: $(UV)
	for arch in $(LOCK_PLATFORMS); do \
	  $(UV) pip compile pyproject.toml requirements/installer.in --extra test \
	    --constraint constraints.txt --python-version $(LOCK_PYTHON) \
	    --python-platform $$arch-manylinux_2_28 --custom-compile-command "make lock" \
	    --quiet $(LOCK_FLAGS) --output-file $(LOCK_DIR)/lock-$$arch.txt || exit 1; \
	done

# uv alone, at the locked version, so that `make lock` runs before (or without) a setup.
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$$(grep -E '^uv==' $(LOCK))"

clean:
	rm -rf $(VENV)
