# Two entry points for a fresh machine with only Python 3.10+:
#   make demo   runs one real registration end to end on the embedded default
#   make test   runs the test suite
# Each makes its own virtualenv in .venv from this project's files.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.py
	$(PYTHON) -c 'import sys; sys.exit("Python 3.10+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hokusai demo

# The suite on pytest-xdist's workers (setup.py's test extras): in one process it mostly waits on
# servers, subprocesses and timeouts (12 min on 2 cores). 2 workers: 6.5 min, the cores ~55% busy
# (8.5 min while other work shared the machine); 3 workers: 5.7 min, but the cores ~92% busy, which
# leaves the tests' timeouts no headroom. Each worker starts its own session servers.
# PYTEST_WORKERS=0 runs the suite in this one process.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
