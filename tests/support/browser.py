"""Debian's headless Chromium driven by Playwright, for the tests that read pages in a real browser.

`make test` installs chromium and sets FLYWHEEL_REQUIRE_BROWSER, so there a missing browser fails the
tests; elsewhere they skip with the command that installs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def headless_chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("FLYWHEEL_REQUIRE_BROWSER"):
            pytest.fail("/usr/bin/chromium is not installed although `make test` requires it (run `make browser`)")
        pytest.skip("/usr/bin/chromium is not installed (run `make browser`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
