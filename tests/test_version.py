"""The version every run records is the installed package's."""

from __future__ import annotations

from importlib.metadata import version

from flywheel.api import flywheel_version


def test_the_version_a_run_records_is_the_installed_packages_version() -> None:
    assert flywheel_version() == version("omc-flywheel")
