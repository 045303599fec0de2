# The two commands of the README. Both create/reuse .venv with the pinned versions first.
VENV ?= .venv
PY = $(VENV)/bin/python
WORKDIR ?= runs/tiny
PYTEST_ARGS ?=
# Two workers (the machine has 2 cores); groups of tests per worker: see tests/conftest.py.
XDIST ?= -n 2 --dist loadgroup

.PHONY: setup train test test-fast lint
setup:
	bash launch/setup_env.sh

train: setup
	$(PY) -m launch.train --config=configs/tiny.py --workdir=$(WORKDIR)

# pytest and its workers run under mimalloc, as the launchers do (ifp_jax/train/allocator.py);
# IFP_ALLOCATOR=system runs them on glibc malloc.
MIMALLOC = $(shell [ "$$IFP_ALLOCATOR" = system ] || $(PY) -c 'from ifp_jax.train import allocator as a; print(a.library_path() or "")' 2>/dev/null)
UNDER_ALLOCATOR = $(if $(MIMALLOC),env LD_PRELOAD="$(MIMALLOC)" MIMALLOC_PURGE_DELAY=-1,)

test: setup
	$(UNDER_ALLOCATOR) $(PY) -m pytest tests $(XDIST) $(PYTEST_ARGS)

# Work-in-progress loop: everything that neither trains a model nor spawns processes.
test-fast: setup
	$(UNDER_ALLOCATOR) $(PY) -m pytest tests -m "not slow" $(XDIST) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
