"""`flywheel ui` as a command: `flywheel --help` does not pay for the web stack, and a busy port is a clear error."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import Sandbox

WEB_STACK = ("starlette", "uvicorn", "jinja2", "anyio")


@pytest.mark.e2e
def test_the_cli_mounts_ui_without_importing_the_web_stack() -> None:
    probe = (
        "import sys; from typer.testing import CliRunner; from flywheel.cli import app; "
        "out = CliRunner().invoke(app, ['--help']).output; "
        f"print('ui' in out.split(), [m for m in sys.modules if m.split('.')[0] in {WEB_STACK!r}])"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True []", result.stdout + result.stderr


@pytest.mark.e2e
def test_a_port_in_use_is_an_environment_error(sandbox: Sandbox) -> None:
    from flywheel.journal import open_journal

    open_journal(sandbox.home).close()  # a home with a journal, so the port is what fails
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = sandbox.cli("ui", "--port", str(port))
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr and "--port 0" in result.stderr
    assert sandbox.cli("ui", "--port", "70000").returncode == 2


@pytest.mark.e2e
def test_a_home_that_holds_no_journal_is_named_instead_of_shown_empty(sandbox: Sandbox) -> None:
    typo = sandbox.root / "hmoe"
    result = sandbox.cli("ui", "--port", "0", "--home", str(typo))
    assert result.returncode == 2 and f"no flywheel journal at {typo}" in result.stderr
    assert not typo.exists()
