# Two commands on a fresh machine with only python3 and make:
#   make demo   runs the db-refresh demo on the embedded engine
#   make test   runs ruff, mypy --strict and the test suite
SHELL := /bin/bash
PYTHON ?= python3
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
# Compiled bytecode keeps start-up fast even where PYTHONDONTWRITEBYTECODE is set.
export UV_COMPILE_BYTECODE := 1
# uv comes from PATH, or is bootstrapped with pip into .tools/ when missing.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
RUN := $(UV) run --frozen --no-sync

.PHONY: demo test lint typecheck unit e2e test-slow bench sync clean browser

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	$(VENV)/bin/python -m compileall -q src
	@touch $@

sync: $(VENV)/.synced

demo: sync
	$(RUN) python -m flywheel.demo

lint: sync
	$(RUN) ruff check src tests bench
	$(RUN) ruff format --check src tests bench

typecheck: sync
	$(RUN) mypy

unit: sync
	$(RUN) pytest -q -m "not e2e and not slow" -p no:cacheprovider

e2e: sync
	$(RUN) pytest -q -m "e2e" -n 2 -p no:cacheprovider

test: browser lint typecheck
	$(RUN) pytest -q -m "not slow" -n 2 -p no:cacheprovider

test-slow: sync
	$(RUN) pytest -q -m "slow" -p no:cacheprovider

bench: sync
	$(RUN) python bench/orchestrator.py

# Headless Chromium for the browser tests (Debian's package; Playwright drives it, never downloads one).
browser:
	@test -x /usr/bin/chromium || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
