# The two commands of the README: `make demo` and `make test`. Both set up a virtualenv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test fuzz audit bench schemas clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "carepulse needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/carepulse demo

test: $(VENV)/.installed
	$(PY) -m pytest

# The dedicated fuzzing job (issue 10): every fuzzer with the big hypothesis profile; ends with the number of
# inputs tried. `make test` runs the same fuzzers with a small sample.
fuzz: $(VENV)/.installed
	$(PY) -m pytest -p no:cacheprovider --hypothesis-profile=fuzz tests/fuzz tests/gateway/test_codecs_fuzz.py

# Known vulnerabilities in every installed dependency (issue 10), from the PyPI advisory service; needs the
# network, so it is a job of its own rather than part of `make test` (see README, Security).
audit: $(VENV)/.installed
	$(VENV)/bin/pip-audit --skip-editable --progress-spinner off

# Benchmarks (issue 9; not part of `make test`): NEWS2 scoring, then the whole pipeline on its own embedded
# broker (about 25 minutes with the issue's sizes); figures printed and written to bench/results.json.
bench: $(VENV)/.installed
	$(PY) bench/bench_news2.py
	$(PY) bench/pipeline.py

schemas: $(VENV)/.installed
	$(VENV)/bin/carepulse schemas --write

clean:
	rm -rf $(VENV) .carepulse .pytest_cache .hypothesis
