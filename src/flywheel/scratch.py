"""`flywheel try STEP[CONTEXT]`: run one step on the current inputs into a scratch home.

The runbook says "test the fix manually if possible" before resuming hours of work. A try runs the real
job, with the real executor, on the real inputs (raw data, configuration, upstream outputs), but:

- the locations the step writes are redirected into the scratch home: every parameter naming a
  directory that holds one of the step's outputs (declared, or recorded by its last success) points
  into the scratch home instead, seeded with copies of the upstream outputs that live there too;
- files the step names (a catalog, a record) are copied, so what the step writes to them stays in the
  scratch copy;
- events go to a journal inside the scratch home: nothing is recorded in the real run history.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.app.facts import ancestors, default_fingerprinter
from flywheel.app.runs import RunOptions, carry_out, run_started
from flywheel.errors import PlanRefused, UsageError
from flywheel.fingerprints import OutputFingerprinter
from flywheel.journal import Journal, open_journal
from flywheel.outputs import split_scheme
from flywheel.params import placeholders, resolve_outputs, resolve_params
from flywheel.planner import Action, Mode, Plan, PlanRequest, StepDecision, parse_selectors
from flywheel.runner import Observer, Overrides
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, StepStatus

if TYPE_CHECKING:
    from flywheel.api import Session

LOCAL_EXECUTORS = ("subprocess", "inprocess")
_SIDECARS = (".wal", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class TryResult:
    keys: tuple[StepKey, ...]
    scratch: Path
    state: RunState
    redirected: Mapping[str, str]
    copied: Mapping[str, str]

    @property
    def succeeded(self) -> bool:
        return all(self.state.step(k).status is StepStatus.SUCCEEDED for k in self.keys)

    def log_paths(self) -> list[Path]:
        return [Path(p) for k in self.keys if (p := self.state.step(k).log_path)]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _local(value: Any) -> str | None:
    if not isinstance(value, str) or not value or ("://" in value and not value.startswith("file://")):
        return None
    return os.path.abspath(value.removeprefix("file://"))


def _absolute(value: Any) -> str | None:
    """A parameter that names a local path: absolute, or a `file://` URI (a bare word is not a path)."""
    if isinstance(value, str) and (value.startswith("file://") or os.path.isabs(value)):
        return os.path.abspath(value.removeprefix("file://"))
    return None


def _closest(paths: Mapping[str, str], write: str) -> str | None:
    """The parameter whose path most narrowly encloses a write location (er_root, not data_root)."""
    holders = [(len(path), name) for name, path in paths.items() if _inside(write, path)]
    return max(holders)[1] if holders else None


def _known_outputs(session: Session, journal: Journal, key: StepKey, params: Mapping[str, Any]) -> list[str]:
    """Local paths the key writes: declared, plus those its latest success recorded."""
    paths = [
        p for uri in resolve_outputs(session.spec, key, params) if split_scheme(uri)[0] is None and (p := _local(uri))
    ]
    latest = journal.latest_successes(session.pipeline, session.env_name).get((key.step, key.context))
    if latest is not None:
        for record in getattr(latest[1], "outputs", ()) or ():
            where = record.get("uri") or record.get("path")
            if isinstance(where, str) and split_scheme(where)[0] is None and (p := _local(where)):
                paths.append(p)
    return list(dict.fromkeys(paths))


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def try_step(
    session: Session,
    selection: str,
    *,
    observers: Sequence[Observer] = (),
    overrides: Overrides | None = None,
    scratch: Path | None = None,
) -> TryResult:
    """Run the selected key(s) into a scratch home; the real journal and outputs are not touched."""
    spec = session.spec
    env = session.project.config.environment(session.env_name)
    if env.executor not in LOCAL_EXECUTORS:
        raise UsageError(
            f"`flywheel try` runs on this machine; {session.env_name} runs steps on {env.executor}",
            fix="try the step with --env local on a copy of the data",
        )
    keys = parse_selectors(spec, [selection], flag="try")
    holder = session.lock().holder()
    if holder is not None:
        raise PlanRefused(
            f"{session.pipeline} in {session.env_name} is being run by {holder.describe()}",
            fix="try the step when that run has ended: it may be rewriting the inputs",
        )
    home = scratch or session.home / "try" / time.strftime("%Y%m%d-%H%M%S")
    if home.exists():
        home = home.with_name(f"{home.name}-{os.getpid()}")
    fp = default_fingerprinter(session)

    with session.journal() as journal:
        real = {key: resolve_params(spec, key, session.env_name, env, str(session.home)) for key in keys}
        first = real[keys[0]]
        settings: dict[str, Any] = {name: first[name] for name in (*spec.params, *env.settings) if name in first}
        redirected, copied = _redirect(session, journal, fp, real, home)
        settings.update(redirected)
        settings.update(copied)

    scratch_env = env.model_copy(update={"settings": settings})
    decisions = tuple(
        StepDecision(k, Action.RUN, "tried in a scratch home")
        if k in keys
        else StepDecision(k, Action.SKIP, "not part of the try")
        for k in spec.keys
    )
    request = PlanRequest(mode=Mode.RUN, only=tuple(str(k) for k in keys), note=f"try {selection}")
    with open_journal(home) as scratch_journal:
        run_id = scratch_journal.new_run(session.pipeline, session.env_name)
        started = run_started(session, run_id, request, None, origin="try")
        options = RunOptions(observers=observers, overrides=overrides or Overrides())
        decided = Plan(request=request, decisions=decisions)
        _, state = carry_out(session, scratch_env, home, scratch_journal, decided, started, options)
    return TryResult(keys=keys, scratch=home, state=state, redirected=redirected, copied=copied)


def _redirect(
    session: Session, journal: Journal, fp: OutputFingerprinter, real: Mapping[StepKey, Mapping[str, Any]], home: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """Where a try writes instead: each folder a tried key writes into (or that does not exist yet) is
    redirected into the scratch home, seeded with the upstream outputs it holds; each file it writes to
    (a catalog) is copied there first. Returns (redirected folders, copied files) as settings."""
    spec = session.spec
    redirected: dict[str, str] = {}
    copied: dict[str, str] = {}
    for key, params in real.items():
        writes = _known_outputs(session, journal, key, params)
        if not writes and not any(split_scheme(u)[0] for u in resolve_outputs(spec, key, params)):
            raise UsageError(
                f"flywheel does not know where {key} writes (no declared outputs and no earlier success)",
                fix=f"declare `outputs:` for step {key.step} in the pipeline",
            )
        step = spec.step(key.step)
        local_layers = {**step.params, **((step.contexts.get(key.context) or {}) if key.context else {})}
        paths = {
            name: path
            for name in sorted(fp.used_params(key, params) | _template_names(spec, key))
            if name not in ("home", "raw_inputs") and (path := _absolute(params.get(name))) is not None
        }
        enclosing = {_closest(paths, w) for w in writes} - {None}
        for name, path in paths.items():
            if name in redirected or name in copied:
                continue
            if name in enclosing or not os.path.exists(path):
                if name in local_layers:
                    raise UsageError(
                        f"step {key.step} sets {name!r} itself, so a try cannot redirect it",
                        fix=f"define {name} as a pipeline parameter or environment setting",
                    )
                target = home / "data" / name
                if name in enclosing:
                    target.mkdir(parents=True, exist_ok=True)
                    _seed_upstream(session, journal, fp, key, path, target)
                redirected[name] = str(target)
            elif os.path.isfile(path) and name not in local_layers:
                target = home / "state" / f"{name}-{Path(path).name}"
                for suffix in ("", *_SIDECARS):
                    if Path(path + suffix).exists():
                        _copy(Path(path + suffix), Path(str(target) + suffix))
                copied[name] = str(target)
    return redirected, copied


def _template_names(spec: PipelineSpec, key: StepKey) -> set[str]:
    return {name for template in spec.step(key.step).outputs for name in placeholders(template)}


def _seed_upstream(
    session: Session, journal: Journal, fp: OutputFingerprinter, key: StepKey, real: str, target: Path
) -> None:
    """Copy into the scratch folder the upstream outputs that live in the real folder being redirected
    (pipelines that keep every step's output in one folder need them to run the step at all)."""
    for up in ancestors(session.spec, key):
        for path in _known_outputs(session, journal, up, fp.params(up)):
            if _inside(path, real) and os.path.exists(path):
                _copy(Path(path), target / os.path.relpath(path, real))
