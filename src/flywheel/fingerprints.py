"""What a step depends on, recorded when it starts so that a resume can tell a stale step from an intact one.

The step fingerprint holds digests of the step's code (the job module and the modules of its own
pipeline package that it imports, or the command text and the scripts it names), of the parameters
the code reads (found as names in its source; environment settings included; resource settings never,
so raising a timeout makes nothing stale) and of the raw inputs the step declares in its `raw_inputs`
parameter: a listing with sizes and modification times. It is stored as canonical JSON with one digest
per part, so that a change can be explained ("parameter n_parts changed", "raw inputs
/data/raw/addressable_ids changed").

Which inputs a step reads is declared, not guessed: a directory several steps name (a faults folder, a
shared configuration root) would otherwise make all of them stale when one file in it changes.

`OutputFingerprinter` is the runner's hook: it records this fingerprint with `StepStarted` and the
output records (`flywheel.outputs`) with `StepSucceeded`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from flywheel.outputs import (
    digest,
    digest_json,
    fingerprint_output,
    identity,
    is_remote,
    some_names,
    split_scheme,
    walk,
)
from flywheel.params import resolve_outputs, resolve_params
from flywheel.runner import Fingerprinter
from flywheel.spec import EnvironmentSpec, PipelineSpec, StepKey

RESOURCE_PARAMS = frozenset({"memory_limit", "memory", "threads", "timeout", "workers", "worker_type", "engine"})
"""Capacity and engine settings: raising them to fix a resource failure must not make a step stale, and
the same job runs unchanged on either engine."""
RAW_INPUTS_PARAM = "raw_inputs"
"""A step parameter: paths outside the pipeline the step reads (raw data, configuration). Their listing
(names, sizes, modification times) is part of the step fingerprint, so a changed input makes it stale."""
FINGERPRINT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# the step fingerprint: code, parameters read, inputs from outside the pipeline


@dataclass(frozen=True)
class StepFingerprint:
    """What a step's result depends on, as one digest per part, so that a change can be explained."""

    code: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)

    def to_text(self) -> str:
        return json.dumps(
            {"v": FINGERPRINT_VERSION, "code": self.code, "params": self.params, "inputs": self.inputs},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_text(cls, text: str | None) -> StepFingerprint | None:
        """Parse a recorded fingerprint; None for none, or one written by another fingerprinter."""
        if not text:
            return None
        try:
            body = json.loads(text)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("v") != FINGERPRINT_VERSION:
            return None
        return cls(code=body.get("code") or {}, params=body.get("params") or {}, inputs=body.get("inputs") or {})

    def changes_since(self, old: StepFingerprint) -> str | None:
        """What changed since `old` was recorded, in words, or None when nothing did."""
        said: list[str] = []
        for label, before, after in (
            ("code", old.code, self.code),
            ("parameter", old.params, self.params),
            ("raw inputs", old.inputs, self.inputs),
        ):
            differ = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
            if differ:
                plural = "s" if label == "parameter" and len(differ) > 1 else ""
                said.append(f"{label}{plural} {some_names(differ)} changed")
        return "; ".join(said) or None


@cache
def _module_file(name: str, beside: str | None = None) -> Path | None:
    """The source file of a module, found on disk without importing it or its packages (`find_spec` of
    `pkg.mod.name` would import `pkg.mod`): beside the pipeline file first, where the runner lets jobs
    live, then where this interpreter finds the top-level package."""
    head, *rest = name.split(".")
    roots = [Path(beside)] if beside is not None else []
    try:
        top = importlib.util.find_spec(head)  # a top-level lookup imports nothing
    except (ImportError, ValueError):
        top = None
    if top is not None and top.submodule_search_locations:
        roots += [Path(location).parent for location in top.submodule_search_locations]
    elif top is not None and not rest and top.origin and top.origin.endswith(".py"):
        roots.append(Path(top.origin).parent)
    for root in roots:
        base = Path(root, head, *rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)] if node.level > 1 else parent
                base = ".".join([*parent, base]) if base else ".".join(parent)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


@dataclass(frozen=True)
class _Source:
    files: Mapping[str, Path]  # module name -> file
    strings: frozenset[str]  # every string constant in those files


def _code_scope(module: str) -> str:
    """Modules fingerprinted with a job: those of its pipeline package (`a.b.c.jobs.x` -> `a.b.c`)."""
    parts = module.split(".")
    return ".".join(parts[:-2] if len(parts) >= 3 else parts[:-1]) or module


# CPython 3.11 counts the AST builder's recursion per interpreter, not per thread: step threads that
# parse at once can fail with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905), which failed a step before it started. One parse at a time.
_PARSING = threading.Lock()


def _read_source(module: str, beside: str | None) -> _Source:
    """The job's module and the modules of its own pipeline package it imports, transitively."""
    scope = _code_scope(module)
    files: dict[str, Path] = {}
    strings: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in files:
            continue
        path = _module_file(name, beside)
        if path is None:
            continue
        files[name] = path
        try:
            source = path.read_bytes()
            with _PARSING:
                tree = ast.parse(source, filename=str(path))
        except (OSError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
        for imported in _imports(tree, name, path.name == "__init__.py"):
            if imported == scope or imported.startswith(scope + "."):
                pending.append(imported)
    return _Source(files, frozenset(strings))


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


class OutputFingerprinter(Fingerprinter):
    """The default fingerprinter: records output fingerprints and explainable step fingerprints.

    One instance serves one command in one environment and home. It re-reads a job's source only when
    one of its files changed (size or modification time), so fingerprinting every key of a plan parses
    each module once, and a long run still notices code edited while it runs.
    """

    def __init__(self, spec: PipelineSpec, env_name: str, env: EnvironmentSpec, home: Path) -> None:
        self.spec = spec
        self.env_name = env_name
        self.env = env
        self.home = home
        self.root = Path(spec.source_path).resolve().parent if spec.source_path else Path.cwd()
        self._sources: dict[str, tuple[_Source, tuple[tuple[int, int], ...]]] = {}
        self._digests: dict[tuple[str, int, int], str] = {}
        self._outputs: list[str] | None = None

    def params(self, key: StepKey) -> dict[str, Any]:
        """The parameters the runner gives this key in this environment and home."""
        return resolve_params(self.spec, key, self.env_name, self.env, str(self.home))

    # -- the runner's hooks ---------------------------------------------------------------------

    def step_fingerprint(self, key: StepKey, params: Mapping[str, Any]) -> str | None:
        return self.fingerprint(key, params).to_text()

    def output_records(
        self,
        key: StepKey,
        declared: Sequence[str],
        reported: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
    ) -> tuple[Mapping[str, Any], ...]:
        """A fingerprint per declared output; what the job reported about an output (rows, partitions)
        is kept beside it as `details`. A reported path that was not declared is fingerprinted too."""
        records: dict[str, dict[str, Any]] = {identity(uri): fingerprint_output(uri, params) for uri in declared}
        for item in reported:
            where = item.get("uri") or item.get("path")
            details = {k: v for k, v in item.items() if k not in ("uri", "path")}
            if not isinstance(where, str):
                records[f"#{len(records)}"] = {"reported": True, "details": details}
                continue
            record = records.get(identity(where))
            if record is None:
                is_path = split_scheme(where)[0] is None and not is_remote(where)
                record = fingerprint_output(where, params) if is_path else {"uri": where, "unchecked": "not declared"}
                record["reported"] = True
                records[identity(where)] = record
            if details:
                record["details"] = details
        return tuple(records.values())

    # -- the step fingerprint ---------------------------------------------------------------------

    def fingerprint(self, key: StepKey, params: Mapping[str, Any]) -> StepFingerprint:
        step = self.spec.step(key.step)
        if step.command is not None:
            code, used = self._command_code(step.command, params)
        else:
            code, used = self._job_code(step.job or "", params)
        used -= RESOURCE_PARAMS | {RAW_INPUTS_PARAM}
        values = {name: digest_json(params[name]) for name in sorted(used) if name in params}
        inputs = {path: _listing(Path(path)) for path in _as_list(params.get(RAW_INPUTS_PARAM))}
        return StepFingerprint(code=code, params=values, inputs=inputs)

    def _file_digest(self, path: Path) -> str:
        size, mtime = _stamp(path)
        cache_key = (str(path), size, mtime)
        if cache_key not in self._digests:
            self._digests[cache_key] = digest(path.read_bytes())
        return self._digests[cache_key]

    def _source(self, module: str) -> _Source:
        cached = self._sources.get(module)
        if cached is not None and tuple(_stamp(p) for p in cached[0].files.values()) == cached[1]:
            return cached[0]
        source = _read_source(module, str(self.root))
        self._sources[module] = (source, tuple(_stamp(p) for p in source.files.values()))
        return source

    def _job_code(self, job: str, params: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
        module = job.partition(":")[0]
        source = self._source(module)
        if not source.files:  # not importable here (a Glue-only job): the reference is all we know
            return {job: digest(job.encode())}, set(params)
        code = {name: self._file_digest(path) for name, path in source.files.items()}
        code[job] = digest(job.encode())
        return code, {name for name in params if name in source.strings}

    def _command_code(self, command: str, params: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
        """The command text, and the scripts it names that exist (relative to the pipeline file)."""
        code = {"command": digest(command.encode())}
        for token in re.findall(r"[\w./-]+", command):
            candidate = Path(token) if os.path.isabs(token) else self.root / token
            if ("/" in token or candidate.suffix in (".py", ".sh", ".sql")) and candidate.is_file():
                code[token] = self._file_digest(candidate)
        if "FLYWHEEL_PARAMS" in command:
            return code, set(params)
        return code, {name for name in params if f"FLYWHEEL_PARAM_{name.upper().replace('-', '_')}" in command}

    # -- what the step reads ----------------------------------------------------------------------

    def output_paths(self) -> list[str]:
        """Every local path any key declares as an output in this environment and home."""
        if self._outputs is None:
            paths = []
            for key in self.spec.keys:
                for uri in resolve_outputs(self.spec, key, self.params(key)):
                    scheme, rest = split_scheme(uri)
                    if scheme is None and not is_remote(rest):
                        paths.append(os.path.abspath(rest))
            self._outputs = paths
        return self._outputs

    def used_params(self, key: StepKey, params: Mapping[str, Any]) -> set[str]:
        """The parameters the step's code reads (names found in its source, or in its command)."""
        step = self.spec.step(key.step)
        if step.command is not None:
            return self._command_code(step.command, params)[1]
        return self._job_code(step.job or "", params)[1]

    def read_paths(self, key: StepKey, params: Mapping[str, Any]) -> list[Path]:
        """Local files and directories the step's parameters name, other than the pipeline's outputs.

        Used to notice an outside fix (a database created in the catalog, a configuration corrected):
        a directory that holds or lies inside a declared output is left out, its content being covered
        by output verification.
        """
        outputs = self.output_paths()
        found: list[Path] = []
        for name in sorted(self.used_params(key, params) | {RAW_INPUTS_PARAM}):
            for value in _as_list(params.get(name)):
                if is_remote(value):
                    continue
                path = os.path.abspath(value.removeprefix("file://"))
                if not os.path.exists(path):
                    continue
                if os.path.isdir(path) and any(
                    out == path or out.startswith(path + os.sep) or path.startswith(out + os.sep) for out in outputs
                ):
                    continue
                found.append(Path(path))
        return found


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value if isinstance(v, str) and v]
    return []


def modified_after(paths: Sequence[Path], moment: float, limit: int = 10000) -> list[str]:
    """Which of `paths` (or anything under them, up to `limit` entries) changed after `moment`."""
    changed: list[str] = []
    for path in paths:
        try:
            if path.stat().st_mtime > moment:
                changed.append(str(path))
                continue
        except OSError:
            continue
        if path.is_dir():
            for seen, (base, dirs, files) in enumerate(os.walk(path)):
                names = [Path(base, n) for n in (*dirs, *files)]
                if seen > limit or any(_stamp(n)[1] > moment * 1e9 for n in names):
                    changed.append(str(path))
                    break
    return changed


def _listing(root: Path) -> str:
    """Names, sizes and modification times of the files under `root` (or of `root` itself when it is a
    file): cheap, and what `make` trusts. A path that does not exist has a listing too (empty)."""
    if root.is_file():
        size, mtime = _stamp(root)
        return digest(f"{size}:{mtime}".encode())
    rows = []
    for file in walk(root):
        size, mtime = _stamp(file)
        rows.append(f"{file.relative_to(root).as_posix()}:{size}:{mtime}")
    return digest("\n".join(rows).encode())
