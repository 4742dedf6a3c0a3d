# The README's two commands are `make run` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAGE  ?= prod
API_PORT   ?= 8000
MOTO_PORT  ?= 5000
PLIVO_PORT ?= 8111

.PHONY: venv browser run test test-long lint mutation bench package clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# `exec`: make's child is the supervisor itself, so the SIGTERM make forwards reaches it; a SIGINT or SIGHUP
# sent to make alone is noticed by the supervisor too (devtools/supervisor.py stop_with_make).
run: venv
	exec $(PY) -m devtools.run_local --api-port $(API_PORT) --moto-port $(MOTO_PORT) --plivo-port $(PLIVO_PORT)

test: lint browser
	$(PY) -m pytest

# The HTML report is tested in a real headless Chromium (Debian's package), installed here when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing chromium for the report's browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; }

# The soak: the same suite with the long property-based runs (CALLFLOW_LONG=1 raises their example counts).
test-long: lint browser
	CALLFLOW_LONG=1 $(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Opt-in, slow (minutes per module on 2 cores), never part of `make test`: mutation testing of the pure
# modules over the fast unit tests ([tool.mutmut] in pyproject.toml). MUTANTS narrows it to one module,
# e.g. `make mutation MUTANTS='chalicelib.signature*'`; `.venv/bin/mutmut results` lists the survivors.
MUTANTS ?=
MUTMUT_CHILDREN ?= 1
mutation: venv
	$(VENV)/bin/mutmut run --max-children $(MUTMUT_CHILDREN) $(MUTANTS)
	$(VENV)/bin/mutmut results

bench: venv
	$(PY) -m bench

package: venv
	$(PY) -m devtools.package --stage $(STAGE)

clean:
	rm -rf $(VENV) dist .pytest_cache .ruff_cache .hypothesis
