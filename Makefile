# The two commands of the README: `make demo` and `make test`. Both set up a virtualenv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench schemas clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "carepulse needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/carepulse demo

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/bench_news2.py

schemas: $(VENV)/.installed
	$(VENV)/bin/carepulse schemas --write

clean:
	rm -rf $(VENV) .carepulse .pytest_cache .hypothesis
