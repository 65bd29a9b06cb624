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

.PHONY: terraform-validate demo test lint typecheck unit e2e test-slow bench soak sync clean browser test-spark java bench-engines

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	@touch $@

# Bytecode for our own sources too, refreshed on every target: where PYTHONDONTWRITEBYTECODE is set
# (as on CI), an edited module would otherwise be compiled again by every process that imports it.
sync: $(VENV)/.synced
	@$(VENV)/bin/python -m compileall -q src

demo: sync
	$(RUN) python -m flywheel.demo

lint: sync
	$(RUN) ruff check src tests bench
	$(RUN) ruff format --check src tests bench

typecheck: sync
	$(RUN) mypy

unit: sync
	$(RUN) pytest -q -m "not e2e and not slow and not spark and not browser" -p no:cacheprovider

e2e: sync
	$(RUN) pytest -q -m "e2e" -n 2 -p no:cacheprovider

# `terraform validate` of infra/stacks/* when a terraform binary is on PATH, else a stated skip
# (the HCL is parsed and checked against the exported definition by tests/aws/test_terraform.py always).
terraform-validate:
	@scripts/terraform-validate.sh

test: browser lint typecheck terraform-validate
	FLYWHEEL_REQUIRE_BROWSER=1 $(RUN) pytest -q -m "not slow and not spark" -n 2 -p no:cacheprovider

# The Spark tier (docs/spark.md): the db-refresh jobs on PySpark 3.5, the AWS Glue 5.0 line, in a local
# JVM. Its own venv with the `spark` dependency group, so `make test` never installs pyspark (318 MB).
SPARK_VENV := .venv-spark
SPARK_RUN := UV_PROJECT_ENVIRONMENT=$(SPARK_VENV) $(UV) run --frozen --no-sync

$(SPARK_VENV)/.synced: pyproject.toml uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(SPARK_VENV) $(UV) sync --frozen --all-extras --group spark
	@touch $@

test-spark: java $(SPARK_VENV)/.synced
	FLYWHEEL_REQUIRE_SPARK=1 $(SPARK_RUN) pytest -q -m spark --timeout 900 -p no:cacheprovider tests/spark

bench-engines: java $(SPARK_VENV)/.synced
	$(SPARK_RUN) python bench/engines.py

# Java for Spark 3.5 (8, 11 or 17): Debian's headless JRE 17 when none is on PATH.
java:
	@command -v java >/dev/null || test -n "$$JAVA_HOME" || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless; }

test-slow: sync
	$(RUN) pytest -q -m "slow" -p no:cacheprovider

bench: sync
	$(RUN) python bench/orchestrator.py

# Random-kill soak (docs/recovery.md): N killed db-refresh runs, each resumed and compared with an
# uninterrupted run. About 10 s per killed run on 2 cores: the default N=200 takes ~35 minutes.
N ?= 200
SEED ?= 20261203
soak: sync
	$(RUN) python bench/soak.py --n $(N) --seed $(SEED)

# Headless Chromium for the browser tests (Debian's package; Playwright drives it, never downloads one).
browser:
	@test -x /usr/bin/chromium || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

clean:
	rm -rf $(VENV) $(SPARK_VENV) .tools .mypy_cache .ruff_cache .pytest_cache
