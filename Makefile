# Two commands on a fresh machine: `make app` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test lint venv demo bench figures browser clean

# The pinned lock first, then the project itself (editable, as a contributor works) without touching the pins.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# Debian's Chromium for the browser tests (Playwright drives it through executable_path).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

app: $(STAMP)
	$(PY) -m app

# Lint and format checks (ruff) and type checks (mypy), configured in pyproject.toml; `make test` runs them first.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: $(STAMP) browser lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/semdist_bench.py

figures: $(STAMP)
	$(PY) -m semlayer figures --out docs/figures

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
