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

test: setup
	$(PY) -m pytest tests $(XDIST) $(PYTEST_ARGS)

# Work-in-progress loop: everything that neither trains a model nor spawns processes.
test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(XDIST) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
