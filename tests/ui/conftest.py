"""Fixtures for the dashboard: real pipelines run into a real journal, and a real server on 127.0.0.1.

The server runs uvicorn in a thread of the test process (fast to start) or, for the browser test, as
`python -m flywheel ui` in a subprocess, exactly as an operator starts it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from flywheel import api
from flywheel.planner import PlanRequest
from tests.conftest import REPO, Sandbox, step

CAUSES = [{"match": "source file .* is missing", "cause": "data", "hint": "Re-deliver the source file, then resume."}]


def fan_out(sleep: float = 0.0) -> list[dict[str, Any]]:
    """a → b[x], b[y] → c: the runbook's shape in small (a context step between two plain ones)."""
    slow = {"sleep": sleep} if sleep else {}
    return [
        step("a", 1),
        step("b", 2, ["a"], contexts=["x", "y"], causes=CAUSES, params={"inputs": ["a"], **slow}),
        step("c", 3, ["b"], params={"inputs": ["b"], **slow}),
    ]


def write_project(sandbox: Sandbox, environments: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    envs = dict(environments or {"local": {"executor": "subprocess", "max_parallel": 2}})
    body = {"environments": envs, "default_env": "local" if "local" in envs else next(iter(envs))}
    (sandbox.root / "project.yaml").write_text(yaml.safe_dump(body))


def execute(sandbox: Sandbox, env: str | None = None) -> int:
    session = api.open_session(str(sandbox.pipeline), env, sandbox.home)
    return api.execute(session, PlanRequest()).run_id


# ---------------------------------------------------------------------------------------------
# a small HTTP client: exact headers (Host, Origin), cookies kept, redirects not followed


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: str
    cookies: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(
        self, method: str, path: str, *, body: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if body is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        got: dict[str, str] = {}
        for raw in response.headers.get_all("set-cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            got.update({k: v.value for k, v in jar.items()})
        self.cookies.update(got)
        conn.close()
        return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, text, got)

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()})

    def csrf(self, path: str = "/runs") -> str:
        page = self.get(path)
        assert page.status == 200, page.body
        match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.body)
        assert match, "every page carries its session's CSRF token"
        return match.group(1)

    def post(
        self, path: str, fields: Mapping[str, str] | None = None, *, csrf: str | None, origin: str | None
    ) -> Reply:
        headers = {}
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        if origin is not None:
            headers["Origin"] = origin
        body = "&".join(f"{k}={v}" for k, v in dict(fields or {}).items())
        return self.request("POST", path, body=body, headers=headers)


# ---------------------------------------------------------------------------------------------
# servers


@dataclass
class Served:
    host: str
    port: int
    home: Path

    def client(self) -> Client:
        return Client(self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def serve_in_thread(
    home: Path, *, host: str = "127.0.0.1", token: str | None = None, pipeline: str | None = None
) -> Iterator[Served]:
    """`flywheel ui` in a thread of this process: the same app, guard and uvicorn, bound to a free port."""
    import uvicorn

    from flywheel.ui.app import Settings, create_app
    from flywheel.ui.security import Guard

    sock = socket.create_server((host, 0))
    port = sock.getsockname()[1]
    app = create_app(Settings(home=home, guard=Guard.for_bind(host, port, token), pipeline=pipeline))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.01)
    try:
        yield Served("127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else host, port, home)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def serve_in_subprocess(sandbox: Sandbox, *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`python -m flywheel ui --port 0`; yields the URL it printed."""
    env = {**os.environ, "FLYWHEEL_HOME": str(sandbox.home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "flywheel", "ui", "--port", "0", *args],
        cwd=sandbox.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"(http://\S+)", first)
        assert match, f"flywheel ui printed no URL: {first!r}"
        yield match.group(1), process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# ---------------------------------------------------------------------------------------------
# worlds


@dataclass
class World:
    """One home with: tiny run 1 failed at b[y] (local), tiny run 2 succeeded (dev), other run 3 succeeded."""

    tiny: Sandbox
    other: Sandbox

    @property
    def home(self) -> Path:
        return self.tiny.home


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("ui-world")
    home = base / "home"
    tiny = Sandbox(root=base / "tiny", home=home)
    other = Sandbox(root=base / "other", home=home)
    tiny.root.mkdir()
    other.root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(home))
        mp.delenv("FLYWHEEL_ENV", raising=False)
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        tiny.write(fan_out())
        local = {"executor": "subprocess", "max_parallel": 2}
        write_project(tiny, {"local": local, "dev": local})
        other.write([step("a", 1), step("b", 2, ["a"])], name="other")
        write_project(other)
        tiny.fail("b[y]", "the source file /data/raw/<ids>.csv is missing")
        assert execute(tiny) == 1
        tiny.fix("b[y]")
        assert execute(tiny, "dev") == 2
        assert execute(other) == 3
        yield World(tiny=tiny, other=other)


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[Served]:
    with serve_in_thread(world.home) as server:
        yield server
