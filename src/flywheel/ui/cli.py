"""`flywheel ui`: serve the dashboard. Mounted by `flywheel.cli`; starlette, jinja2 and uvicorn are imported
only when the command runs, so `flywheel --help` stays fast."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from flywheel.errors import BackendError, UsageError

DEFAULT_PORT = 8765


def ui(
    port: Annotated[int, typer.Option("--port", help="Port to serve on (0: any free port).")] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind. Anything but loopback requires a token.")
    ] = "127.0.0.1",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Token every request must carry (generated and printed when serving off loopback without one).",
            envvar="FLYWHEEL_UI_TOKEN",
        ),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", "-p", help="Pipeline for runs whose recorded definition cannot be found."),
    ] = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="The flywheel home to show.", envvar="FLYWHEEL_HOME")
    ] = None,
) -> None:
    """Serve a local web dashboard: runs and their graphs, logs, the resume plan and a Resume button, incidents.

    Serves on 127.0.0.1 by default. With --host 0.0.0.0 (or any non-loopback address) every request
    needs the token printed at start (or given with --token); a Resume always needs the page's CSRF
    token and a same-origin request.
    """
    import uvicorn

    from flywheel.api import resolve_home
    from flywheel.ui.app import Settings, create_app
    from flywheel.ui.security import Guard, is_loopback, new_token

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number", fix="use 1-65535, or 0 for any free port")
    from flywheel.journal import open_journal

    resolved = resolve_home(home)
    open_journal(resolved, create=False).close()  # a mistyped home says so, before a port is taken
    generated = False
    if not is_loopback(host) and not token:
        token, generated = new_token(), True
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        raise BackendError(
            f"cannot serve on {host}:{port}: {exc.strerror or exc}",
            fix="pick another --port (or --port 0 for any free one)",
        ) from None
    bound = sock.getsockname()[1]
    guard = Guard.for_bind(host, bound, token)
    app = create_app(Settings(home=resolved, guard=guard, pipeline=pipeline))
    shown = host if is_loopback(host) else (socket.gethostname() if host in ("0.0.0.0", "::") else host)
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{bound}/"
    typer.echo(f"flywheel ui: {resolved} on {url + (f'?token={token}' if generated else '')}")
    if token and not generated:
        typer.echo("every request needs the token given with --token (header, cookie or ?token= once)")
    typer.echo("press Ctrl-C to stop (resumes started from the page go on)")
    sys.stdout.flush()
    threading.Thread(target=_index_in_background, args=(resolved,), daemon=True).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def _index_in_background(home: Path) -> None:
    """Catch the run index up before the first page asks (a first build folds every run: ~1 s per
    1,000); a page asked meanwhile waits for it rather than building it twice."""
    from flywheel.api import RunIndex
    from flywheel.journal import open_journal

    began = time.perf_counter()
    try:
        with open_journal(home, create=False) as journal, RunIndex(home, journal) as index:
            folded = index.refresh()
    except Exception as exc:  # the pages build it themselves and say what is wrong
        typer.echo(f"flywheel ui: the run index was not built ahead: {exc}", err=True)
        return
    if folded > 500:
        typer.echo(f"indexed {folded} runs in {time.perf_counter() - began:.1f} s")
