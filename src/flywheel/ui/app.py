"""The dashboard's routes: Starlette, Jinja2 templates rendered on the server, one small script for live parts.

Handlers are plain functions run in Starlette's thread pool (journal reads are short SQLite queries);
only the live stream is asynchronous, and it reads the journal in worker threads too. Each request
opens the journal and closes it: WAL mode lets a runner append while the dashboard reads.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flywheel import api
from flywheel.errors import FlywheelError, NotFound, UsageError
from flywheel.incidents import CAUSE_HELP, Cause, find_in, note_incident, parse_since, summarize
from flywheel.journal import Journal, open_journal
from flywheel.lock import current_identity
from flywheel.logtail import tail
from flywheel.reports import STATE_COLOURS, badge, bar_chart, dur, when
from flywheel.reports.icons import icon
from flywheel.reports.run_charts import AttemptSpan, graph_svg, timeline_svg
from flywheel.reports.run_report import incident_section
from flywheel.state import RunStatus
from flywheel.ui import logview, panel, views
from flywheel.ui.launcher import Launcher
from flywheel.ui.live import LiveRun
from flywheel.ui.security import Guard, GuardMiddleware, RedactingMiddleware, csrf_of

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
LIVE_TICK = 0.4
KEEPALIVE = 15.0
LOG_CAP_BYTES = 1024 * 1024
"""A raw log is served as its last MiB unless the whole file is asked for (`?whole=1`)."""


@dataclass(frozen=True)
class Settings:
    """One dashboard: the home it reads, the pipeline for runs without a recorded definition, its guard."""

    home: Path
    guard: Guard
    pipeline: str | None = None


def trusted(html: str) -> Markup:
    """HTML built by flywheel's own renderers (reports, the steps partial), which escape every value."""
    return Markup(html)


def time_tag(at: float | None) -> str:
    """A moment as `<time>`: the server's local time with its zone as text (what a page without script
    shows), the UTC time on hover; `times.js` rewrites the text in the reader's own zone."""
    if at is None:
        return ""
    utc = datetime.fromtimestamp(at, UTC)
    return (
        f'<time datetime="{utc.isoformat(timespec="seconds")}" title="{utc:%Y-%m-%d %H:%M:%S} UTC">'
        f"{escape(when(at))}</time>"
    )


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("flywheel.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dur"] = lambda s: dur(s) if s is not None else ""
    env.filters["when"] = lambda at: trusted(time_tag(at))
    env.filters["badge"] = lambda s: trusted(badge(str(s)))
    env.filters["icon"] = lambda s: trusted(icon(str(getattr(s, "value", s))))
    env.globals["STATE_COLOURS"] = STATE_COLOURS
    return env


def _guarded(handler: Callable[[Dashboard, Request], Response]) -> Callable[[Dashboard, Request], Response]:
    """Turn a flywheel error into a page (404 for what does not exist) instead of a server error."""

    @functools.wraps(handler)
    def wrapper(self: Dashboard, request: Request) -> Response:
        try:
            return handler(self, request)
        except FlywheelError as exc:
            status = 404 if isinstance(exc, NotFound) else 400
            if request.headers.get("accept", "").startswith("application/json") or request.method == "POST":
                return JSONResponse({"error": exc.message, "fix": exc.fix}, status_code=status)
            return self.render(request, "error.html", status_code=status, message=exc.message, fix=exc.fix)

    return wrapper


class Dashboard:
    """The dashboard's pages and actions; `create_app` routes URLs to these methods."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = _templates()
        self.catalog = views.Catalog(settings.home, settings.pipeline)
        self.launcher = Launcher(settings.home)

    def redactor(self) -> Any:
        return self.catalog.redactor(self.settings.guard.token)

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("nav", "")
        body = self.templates.get_template(name).render(csrf=csrf_of(request.scope), request=request, **context)
        return HTMLResponse(body, status_code=status_code)

    def journal(self) -> Journal:
        return open_journal(self.settings.home)

    @staticmethod
    def query(request: Request, name: str) -> str | None:
        value = request.query_params.get(name, "").strip()
        return value or None

    @staticmethod
    def run_id_of(request: Request) -> int:
        text = request.path_params["run_id"]
        if not text.isdigit():
            raise NotFound(f"no run {text!r}", fix="pick a run from the list")
        return int(text)

    # -- pages -------------------------------------------------------------------------------

    def home(self, request: Request) -> Response:
        return RedirectResponse("/runs", status_code=303)

    @_guarded
    def runs(self, request: Request) -> Response:
        started = time.perf_counter()
        pipeline, env, status = (
            self.query(request, "pipeline"),
            self.query(request, "env"),
            self.query(request, "status"),
        )
        attention = self.query(request, "attention") == "1"
        with self.journal() as j:
            older = self.query(request, "before")
            listing = views.list_runs(
                j,
                self.settings.home,
                pipeline=pipeline,
                env=env,
                status=status,
                before=int(older) if older and older.isdigit() else None,
                attention=attention,
                catalog=self.catalog,
            )
        return self.render(
            request,
            "runs.html",
            nav="runs",
            listing=listing,
            chosen={"pipeline": pipeline, "env": env, "status": status, "attention": "1" if attention else ""},
            any_running=any(r.status is RunStatus.RUNNING for r in listing.runs),
            took_ms=(time.perf_counter() - started) * 1000,
        )

    def render_steps(self, rows: list[views.StepRow]) -> str:
        return self.templates.get_template("_steps.html").render(steps=rows)

    @_guarded
    def run(self, request: Request) -> Response:
        started = time.perf_counter()
        run_id = self.run_id_of(request)
        with self.journal() as j:
            page = views.run_page(self.catalog, j, run_id, redact=self.redactor())
        spec = page.session.spec if page.session else None
        now = time.time()
        return self.render(
            request,
            "run.html",
            nav="runs",
            page=page,
            state=page.state,
            now=now,
            graph=trusted(graph_svg(spec, page.state, now=now)) if spec else None,
            timeline=trusted(timeline_svg(spec, page.state, page.spans, now)) if spec else None,
            steps_html=trusted(self.render_steps(list(page.steps))),
            took_ms=(time.perf_counter() - started) * 1000,
        )

    def step(self, request: Request) -> Response:
        """The side panel of one `step[context]` (`?key=`): state, attempts, log tail, the rerun command.

        A fragment, so a missing run or key is a 404 fragment naming the keys there are."""
        try:
            run_id = self.run_id_of(request)
            key = self.query(request, "key")
            if key is None:
                raise UsageError("no step named", fix="add ?key=STEP or ?key=STEP[CONTEXT]")
            with self.journal() as j:
                found = panel.step_panel(self.catalog, j, run_id, key, redact=self.redactor())
        except FlywheelError as exc:
            status = 404 if isinstance(exc, NotFound) else 400
            return HTMLResponse(
                f'<div class="panel-body panel-missing"><p class="error-text">{escape(exc.message)}</p>'
                + (f'<p class="muted">{escape(exc.fix)}</p>' if exc.fix else "")
                + "</div>",
                status_code=status,
            )
        return HTMLResponse(self.templates.get_template("_panel.html").render(p=found))

    @_guarded
    def plan(self, request: Request) -> Response:
        """The Resume section: `flywheel resume RUN --dry-run` and the button that starts it."""
        run_id = self.run_id_of(request)
        with self.journal() as j:
            view = views.resume_view(self.catalog, j, run_id)
        view = replace(view, active_job=self.launcher.active(view.pipeline, view.env))
        return HTMLResponse(self.templates.get_template("_resume.html").render(r=view))

    @_guarded
    def incident_of_run(self, request: Request) -> Response:
        """The incident a run opened, joined or closed (it reads every run of the pipeline: loaded after the page)."""
        run_id = self.run_id_of(request)
        with self.journal() as j:
            state, _ = views.load_run(j, self.settings.home, run_id)
            session = self.catalog.session(j, run_id)
            found = views.incident_of(j, self.settings.home, session.spec if session else None, state)
        if found is None:
            return HTMLResponse('<p class="muted" id="no-incident">no incident: this run did not fail</p>')
        link = f'<p><a href="/incidents/{found.id}">open incident {found.id}</a> to add a note</p>'
        return HTMLResponse(incident_section(found) + link)

    def log_span(self, request: Request) -> tuple[int, str, AttemptSpan]:
        """The run, the log's name and the attempt that wrote it; NotFound for anything else."""
        run_id = self.run_id_of(request)
        name = request.path_params["name"]
        with self.journal() as j:
            state, events = views.load_run(j, self.settings.home, run_id)
            span = views.log_span_of(events, state, name)
        if span is None or not span.log_path or not Path(span.log_path).exists():
            raise NotFound(f"run {run_id} has no log {name!r}", fix=f"pick a log on the page of run {run_id}")
        return run_id, name, span

    def log_file(self, request: Request) -> Response:
        """The raw log (the viewer's download link): its last MiB, or the whole file streamed with `?whole=1`."""
        try:
            _, _, span = self.log_span(request)
        except NotFound as exc:
            return PlainTextResponse(exc.message, status_code=404)
        path = str(span.log_path)
        redact = self.redactor()
        size = Path(path).stat().st_size
        if size > LOG_CAP_BYTES and request.query_params.get("whole") != "1":  # the tail, unless asked
            end = tail(path, 1_000_000, max_bytes=LOG_CAP_BYTES)
            head = f"(the last {LOG_CAP_BYTES // 1024} KiB of {size // 1024} KiB: add ?whole=1 for the whole log)\n"
            return PlainTextResponse(head + redact("\n".join(end.lines)))

        def lines() -> Iterator[str]:  # the whole log, streamed: never all of it in memory
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    yield redact(line)

        return StreamingResponse(_batched(lines()), media_type="text/plain; charset=utf-8")

    @_guarded
    def log_view(self, request: Request) -> Response:
        """The log viewer: the tail (or `?whole=1`, streamed), `?q=` to keep matching lines, and
        `?from=BYTES&line=N` (JSON) for the lines written since, which the page polls while the step runs."""
        run_id, name, span = self.log_span(request)
        path = str(span.log_path)
        running = span.outcome == "running"
        redact = self.redactor()
        offset = request.query_params.get("from")
        if offset is not None:
            line = request.query_params.get("line", "")
            window = logview.follow(
                path,
                int(offset) if offset.isdigit() else 0,
                redact,
                next_number=int(line) if line.isdigit() and int(line) > 0 else None,
                finished=not running,
            )
            return JSONResponse(
                {
                    "lines": [{"n": ln.number, "text": ln.text, "error": ln.error} for ln in window.lines],
                    "numbered": window.numbered,
                    "next": window.end,
                    "line": window.next_number,
                    "running": running,
                    "outcome": span.outcome,
                    "badge": badge(span.outcome),
                }
            )
        query = redact(request.query_params.get("q", ""))  # echoed in a page that may be streamed unmasked
        whole = request.query_params.get("whole") == "1"
        source: logview.LogWindow | logview.WholeLog = (
            logview.WholeLog(path, redact, finished=not running)
            if whole
            else logview.tail(path, redact, finished=not running)
        )
        lines = source if isinstance(source, logview.WholeLog) else source.lines
        context = {
            "nav": "runs",
            "run_id": run_id,
            "name": name,
            "span": span,
            "size": Path(path).stat().st_size,
            "whole": whole,
            "window": source if isinstance(source, logview.LogWindow) else None,
            "source": source,
            "shown": logview.Shown(lines, query),
            "q": query,
            "running": running,
            "highlight": logview.highlight,
            "tail_lines": logview.TAIL_LINES,
            "tail_kib": logview.TAIL_BYTES // 1024,
            "csrf": csrf_of(request.scope),
            "request": request,
        }
        template = self.templates.get_template("log.html")
        if whole:  # streamed: the page is written while the file is read
            return StreamingResponse(_batched(template.generate(**context)), media_type="text/html; charset=utf-8")
        return HTMLResponse(template.render(**context))

    async def live(self, request: Request) -> Response:
        """Server-sent events while the run goes on; the stream ends with a `done` event."""
        try:
            run_id = self.run_id_of(request)
            watcher = await anyio.to_thread.run_sync(
                lambda: LiveRun(self.catalog, run_id, render_steps=self.render_steps, redact=self.redactor())
            )
        except FlywheelError as exc:
            return PlainTextResponse(exc.message, status_code=404 if isinstance(exc, NotFound) else 400)

        async def stream() -> AsyncIterator[str]:
            quiet_since = time.monotonic()
            try:
                yield "retry: 1000\n\n"
                while True:
                    messages, finished = await anyio.to_thread.run_sync(watcher.poll)
                    for message in messages:
                        yield message
                    if messages:
                        quiet_since = time.monotonic()
                    elif time.monotonic() - quiet_since > KEEPALIVE:
                        quiet_since = time.monotonic()
                        yield ": keep-alive\n\n"
                    if finished:
                        return
                    await anyio.sleep(LIVE_TICK)
            finally:
                await anyio.to_thread.run_sync(watcher.close)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    @_guarded
    def resume(self, request: Request) -> Response:
        """Start `flywheel resume RUN --yes` in the background, after the same checks a person would make."""
        run_id = self.run_id_of(request)
        form = _form(request)
        with self.journal() as j:
            session = self.catalog.session(j, run_id)
            state, _ = views.load_run(j, self.settings.home, run_id)
            row = j.run(run_id)
        if session is None:
            return _refuse(
                409,
                f"the definition of run {run_id}'s pipeline cannot be found",
                "start the dashboard with --pipeline PATH, or resume from a terminal",
            )
        if not state.status.resumable:
            return _refuse(
                409, f"run {run_id} is {state.status.value}; only a failed, interrupted or partial run resumes"
            )
        with self.journal() as j:
            recovered = api.recovered_by(j, run_id)
        if recovered is not None:
            return _refuse(409, f"run {run_id} was already recovered by run {recovered}", f"open /runs/{recovered}")
        holder = views.Locks(self.settings.home).holder(row.pipeline, row.env)
        if holder is not None or self.launcher.active(row.pipeline, row.env) is not None:
            who = holder.describe() if holder else "a resume started from this dashboard"
            return _refuse(
                409, f"{row.pipeline} in {row.env} is already being run by {who}", "wait for that run to finish"
            )
        if self.catalog.environment_confirms(session) and form.get("confirm_env", "").strip() != row.env:
            return _refuse(400, f"{row.env} needs its name typed to confirm the resume", f"type {row.env}")
        user, host = current_identity()
        job = self.launcher.start(
            run_id,
            pipeline=row.pipeline,
            env=row.env,
            definition=str(session.project.root / Path(session.spec.source_path).name)
            if session.spec.source_path
            else None,
            cwd=session.project.root,
            note=f"resumed from the dashboard by {user}@{host}",
        )
        log.info("started a resume of run %s (job %s)", run_id, job.id)
        return JSONResponse({"job": job.id, "status_url": f"/jobs/{job.id}"}, status_code=202)

    def job(self, request: Request) -> Response:
        found = self.launcher.get(request.path_params["job_id"])
        if found is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        with self.journal() as j:
            body = self.launcher.describe(found, j)
        body["output"] = self.redactor()(body["output"])
        return JSONResponse(body)

    @_guarded
    def incidents_page(self, request: Request) -> Response:
        pipeline, env, status = (
            self.query(request, "pipeline"),
            self.query(request, "env"),
            self.query(request, "status"),
        )
        with self.journal() as j:
            listing = views.list_incidents(j, self.settings.home, pipeline=pipeline, env=env, status=status)
        return self.render(
            request,
            "incidents.html",
            nav="incidents",
            listing=listing,
            chosen={"pipeline": pipeline, "env": env, "status": status},
        )

    @_guarded
    def incident_page(self, request: Request) -> Response:
        ref = request.path_params["incident_id"]
        if not ref.isdigit():
            raise NotFound(f"no incident {ref!r}", fix="pick one from the list")
        with self.journal() as j:
            inc = find_in(views.all_incidents(j, self.settings.home), int(ref))
        return self.render(
            request,
            "incident.html",
            nav="incidents",
            inc=inc,
            section=trusted(incident_section(inc)),
            excerpts=list(zip(inc.failures, views.excerpts(inc), strict=True)),
            causes=[c.value for c in Cause],
        )

    @_guarded
    def note(self, request: Request) -> Response:
        ref = request.path_params["incident_id"]
        if not ref.isdigit():
            raise NotFound(f"no incident {ref!r}")
        form = _form(request)
        category = form.get("category", "").strip() or None
        user, host = current_identity()
        with self.journal() as j:
            inc, event = note_incident(
                j,
                None,
                int(ref),
                cause=form.get("cause", ""),
                fix=form.get("fix", ""),
                category=category,
                user=f"{user}@{host} (dashboard)",
            )
        return JSONResponse({"incident": inc.id, "at": event.at}, status_code=201)

    @_guarded
    def patterns(self, request: Request) -> Response:
        pipeline, env = self.query(request, "pipeline"), self.query(request, "env")
        since_text = self.query(request, "since") or "30d"
        start = None if since_text == "all" else parse_since(since_text)
        with self.journal() as j:
            listing = views.list_incidents(j, self.settings.home, pipeline=pipeline, env=env)
        summary = summarize(listing.incidents[::-1], since=start)
        charts = {
            name: trusted(bar_chart([(k, float(v)) for k, v in counts.items()], label=f"failures by {name}"))
            for name, counts in (("step", summary.by_step), ("cause", summary.by_cause), ("env", summary.by_env))
        }
        return self.render(
            request,
            "patterns.html",
            nav="patterns",
            summary=summary,
            charts=charts,
            listing=listing,
            chosen={"pipeline": pipeline, "env": env, "since": since_text},
            cause_help=CAUSE_HELP,
        )


def create_app(settings: Settings) -> Starlette:
    """The dashboard as an ASGI app (uvicorn serves it; tests may too)."""
    dashboard = Dashboard(settings)
    routes = [
        Route("/", dashboard.home),
        Route("/runs", dashboard.runs),
        Route("/runs/{run_id}", dashboard.run),
        Route("/runs/{run_id}/live", dashboard.live),
        Route("/runs/{run_id}/plan", dashboard.plan),
        Route("/runs/{run_id}/step", dashboard.step),
        Route("/runs/{run_id}/incident", dashboard.incident_of_run),
        Route("/runs/{run_id}/logs/{name}", dashboard.log_file),
        Route("/runs/{run_id}/logs/{name}/view", dashboard.log_view),
        Route("/runs/{run_id}/resume", dashboard.resume, methods=["POST"]),
        Route("/jobs/{job_id}", dashboard.job),
        Route("/incidents", dashboard.incidents_page),
        Route("/incidents/report", dashboard.patterns),
        Route("/incidents/{incident_id}", dashboard.incident_page),
        Route("/incidents/{incident_id}/notes", dashboard.note, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(GuardMiddleware, guard=settings.guard),
            Middleware(RedactingMiddleware, redactor=dashboard.redactor),
        ],
    )


def _form(request: Request) -> dict[str, str]:
    """A urlencoded body, read without python-multipart (the dashboard's forms are small and flat)."""
    raw = anyio.from_thread.run(request.body)
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _batched(pieces: Iterator[str], size: int = 64 * 1024) -> Iterator[str]:
    """A template's many small pieces sent in blocks: each piece of a streamed answer is a trip to a worker
    thread and an ASGI message, which for a log of 30,000 lines is the whole cost of the page."""
    block: list[str] = []
    held = 0
    for piece in pieces:
        block.append(piece)
        held += len(piece)
        if held >= size:
            yield "".join(block)
            block, held = [], 0
    if block:
        yield "".join(block)


def _refuse(status: int, message: str, fix: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "fix": fix}, status_code=status)
