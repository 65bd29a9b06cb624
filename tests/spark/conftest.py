"""The Spark tier: the db-refresh jobs on a real PySpark 3.5 (the AWS Glue 5.0 line) in a local JVM.

Run by `make test-spark` (its own venv with the `spark` dependency group); `make test` deselects it by
marker. Without pyspark these tests are skipped, unless FLYWHEEL_REQUIRE_SPARK is set (as
`make test-spark` does), where a missing pyspark or Java is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from flywheel.pipelines.db_refresh.sample_data import generate

REQUIRED = bool(os.environ.get("FLYWHEEL_REQUIRE_SPARK"))


def _missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (make test-spark installs the `spark` dependency group)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (pyspark 3.5 needs Java 8, 11 or 17)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    mine = [item for item in items if here in Path(str(item.path)).parents]
    reason = _missing() if mine else None
    if reason is None:
        return
    if REQUIRED:
        raise pytest.UsageError(f"the Spark tier cannot run: {reason}")
    for item in mine:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The one SparkSession of this test process, opened the way every job opens it."""
    from flywheel.pipelines.db_refresh import engine

    scratch = tmp_path_factory.mktemp("spark")
    return engine.open_session({"engine": "spark", "memory_limit": "1GB", "temp_directory": str(scratch)})


@pytest.fixture(scope="session")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny raw deliveries, shared by every run of the parity tests (read-only)."""
    root = tmp_path_factory.mktemp("raw") / "raw"
    generate(root, rows=1500, seed=11, files=2)
    return root
