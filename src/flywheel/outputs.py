"""What a step produced and what it depended on: fingerprints recorded when it finishes, checked before
anything is reused.

Two fingerprints per `step[context]`:

- **Output fingerprints**, one per declared output, recorded with `StepSucceeded` (and `StepMarked`).
  A local file or directory is fingerprinted by its file list, sizes and a content digest per file:
  the whole file when small, the footer when it is Parquet (the footer holds row counts, column
  statistics and every chunk's offset and size, so a rewrite changes it), the first and last 64 KiB
  otherwise. That reads kilobytes per file, never the data, so checking a 10M-row output takes
  milliseconds. Outputs with a scheme (`table:NAME`, `partitions:NAME`) are fingerprinted by a function
  the pipeline names in its `verifiers` parameter (`{scheme: "module:function"}`); the core never imports
  pipeline code and there is no global registry.
- **The step fingerprint**, recorded with `StepStarted`: digests of the step's code (the job module and
  the modules of its own pipeline package that it imports, or the command text and the scripts it
  names), of the parameters the code reads (found as names in its source; environment settings
  included; resource settings never, so raising a timeout makes nothing stale) and of the raw inputs
  the step declares in its `raw_inputs` parameter: a listing with sizes and modification times. It is
  stored as canonical JSON with one digest per part, so that a change can be explained ("parameter
  n_parts changed", "raw inputs /data/raw/addressable_ids changed").

Which inputs a step reads is declared, not guessed: a directory several steps name (a faults folder, a
shared configuration root) would otherwise make all of them stale when one file in it changes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import os
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from flywheel.params import resolve_outputs, resolve_params
from flywheel.runner import Fingerprinter
from flywheel.spec import EnvironmentSpec, PipelineSpec, StepKey

SMALL_FILE = 1 << 20
"""Files up to this size are hashed whole; larger ones by footer (Parquet) or head and tail."""
SAMPLE = 64 * 1024
MAX_LISTED_FILES = 5000
"""Beyond this many files a directory is recorded as one digest (no per-file explanation)."""
MANIFEST_NAMES = ("_manifest.json", "_SUCCESS")
RESOURCE_PARAMS = frozenset({"memory_limit", "memory", "threads", "timeout", "workers", "worker_type"})
"""Capacity settings: raising them to fix a resource failure must not make a step stale."""
VERIFIERS_PARAM = "verifiers"
RAW_INPUTS_PARAM = "raw_inputs"
"""A step parameter: paths outside the pipeline the step reads (raw data, configuration). Their listing
(names, sizes, modification times) is part of the step fingerprint, so a changed input makes it stale."""
FINGERPRINT_VERSION = 1
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):(?!//)(.+)$")


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=10)
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _digest_json(value: Any) -> str:
    return _digest(json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode())


# ---------------------------------------------------------------------------------------------
# local files and directories


def _parquet_footer(handle: BinaryIO, size: int) -> bytes | None:
    """The Parquet file metadata (footer) bytes, or None when the file does not end like Parquet."""
    if size < 12:
        return None
    handle.seek(size - 8)
    tail = handle.read(8)
    if tail[4:] != b"PAR1":
        return None
    length = int.from_bytes(tail[:4], "little")
    if length <= 0 or length > size - 12:
        return None
    handle.seek(size - 8 - length)
    return handle.read(length) + tail


def file_digest(path: Path, size: int) -> str:
    """A cheap content digest: whole file when small, Parquet footer, or head and tail samples."""
    with path.open("rb") as handle:
        if size <= SMALL_FILE:
            return _digest(handle.read())
        footer = _parquet_footer(handle, size) if path.suffix == ".parquet" else None
        if footer is not None:
            return _digest(b"parquet", footer)
        handle.seek(0)
        head = handle.read(SAMPLE)
        handle.seek(max(0, size - SAMPLE))
        return _digest(b"sampled", head, handle.read(SAMPLE), str(size).encode())


def _walk(root: Path) -> Iterator[Path]:
    """Files under `root`, skipping hidden names (staging directories, `.old-*` leftovers)."""
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(base, name)


def fingerprint_path(path: Path) -> dict[str, Any] | None:
    """The fingerprint of a local file or directory, or None when it does not exist."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not path.is_dir():
        return {"kind": "file", "size": st.st_size, "digest": file_digest(path, st.st_size)}
    files: dict[str, str] = {}
    total = 0
    for file in _walk(path):
        size = file.stat().st_size
        total += size
        files[file.relative_to(path).as_posix()] = f"{size}:{file_digest(file, size)}"
    body: dict[str, Any] = {"kind": "dir", "count": len(files), "size": total, "digest": _digest_json(files)}
    if len(files) <= MAX_LISTED_FILES:
        body["files"] = files
    return body


def describe_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _names(items: Iterable[str], limit: int = 3) -> str:
    listed = sorted(items)
    shown = ", ".join(listed[:limit])
    return shown + (f" and {len(listed) - limit} more" if len(listed) > limit else "")


def _compare_paths(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Why a local output no longer matches its recorded fingerprint, or None when it matches."""
    if old.get("kind") != new.get("kind"):
        return f"was a {old.get('kind')}, is now a {new.get('kind')}"
    if old.get("digest") == new.get("digest") and old.get("size") == new.get("size"):
        return None
    if old.get("kind") == "file":
        if old.get("size") != new.get("size"):
            return f"size changed from {old.get('size')} to {new.get('size')} bytes"
        return "content changed"
    before: Mapping[str, str] = old.get("files") or {}
    after: Mapping[str, str] = new.get("files") or {}
    if not before or not after:
        return f"{old.get('count')} files before, {new.get('count')} now; content changed"
    missing = set(before) - set(after)
    added = set(after) - set(before)
    changed = {name for name in set(before) & set(after) if before[name] != after[name]}
    parts = []
    if missing:
        parts.append(f"{len(missing)} file(s) gone ({_names(missing)})")
    if changed:
        parts.append(f"{len(changed)} changed ({_names(changed)})")
    if added:
        parts.append(f"{len(added)} new ({_names(added)})")
    return "; ".join(parts) or "content changed"


# ---------------------------------------------------------------------------------------------
# output records: what a step produced


class CheckStatus(StrEnum):
    MATCHES = "matches"
    CHANGED = "changed"
    MISSING = "missing"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class OutputCheck:
    """The verification of one output record against what is there now."""

    uri: str
    kind: str
    status: CheckStatus
    detail: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in (CheckStatus.MATCHES, CheckStatus.UNCHECKED)


def split_scheme(uri: str) -> tuple[str | None, str]:
    """`table:part_x` -> ("table", "part_x"); a path (also `file://...`) -> (None, path)."""
    if uri.startswith("file://"):
        return None, uri.removeprefix("file://")
    match = _SCHEME.match(uri)
    if match and not re.match(r"^[A-Za-z]:[\\/]", uri):  # not a Windows drive letter
        return match.group(1), match.group(2)
    return None, uri


SchemeFingerprint = Callable[[str, Mapping[str, Any]], Mapping[str, Any] | None]


def scheme_verifier(scheme: str, params: Mapping[str, Any]) -> SchemeFingerprint | None:
    """The function the pipeline names for `scheme` in its `verifiers` parameter, imported on use."""
    table = params.get(VERIFIERS_PARAM)
    ref = table.get(scheme) if isinstance(table, Mapping) else None
    if not ref:
        return None
    module, _, name = str(ref).partition(":")
    function: SchemeFingerprint = getattr(importlib.import_module(module), name)
    return function


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def fingerprint_output(uri: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The record of one declared output as it is now (stored in the step's success event)."""
    scheme, rest = split_scheme(uri)
    if scheme is not None:
        function = scheme_verifier(scheme, params)
        if function is None:
            return {"uri": uri, "kind": scheme, "unchecked": f"no verifier for {scheme}: outputs in `verifiers`"}
        found = function(uri, params)
        if found is None:
            return {"uri": uri, "kind": scheme, "missing": True}
        body = dict(found)
        return {"uri": uri, "kind": scheme, "fingerprint": body, "digest": _digest_json(body)}
    if _is_remote(rest):
        return {"uri": uri, "kind": "remote", "unchecked": "remote storage is checked by its backend"}
    found_path = fingerprint_path(Path(rest))
    if found_path is None:
        return {"uri": uri, "kind": "path", "missing": True}
    return {"uri": uri, **found_path}


def summarize(record: Mapping[str, Any]) -> str:
    """A short human description of a record: `16 files, 12.3 MB`, `table`, `missing`."""
    if record.get("missing"):
        return "missing"
    if record.get("unchecked"):
        return str(record["unchecked"])
    kind = str(record.get("kind"))
    if kind == "dir":
        return f"{record.get('count')} files, {describe_size(int(record.get('size') or 0))}"
    if kind == "file":
        return describe_size(int(record.get("size") or 0))
    body = record.get("fingerprint") or {}
    if isinstance(body, Mapping) and "partitions" in body and isinstance(body["partitions"], list | tuple):
        return f"{kind}, {len(body['partitions'])} partitions"
    return kind


def _compare_scheme(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Name the top-level fields of a scheme fingerprint that differ (schema, partitions, location)."""
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if "partitions" in differ and isinstance(old.get("partitions"), list) and isinstance(new.get("partitions"), list):
        gone = set(map(str, old["partitions"])) - set(map(str, new["partitions"]))
        added = set(map(str, new["partitions"])) - set(map(str, old["partitions"]))
        bits = [f"{len(gone)} partition(s) gone ({_names(gone)})"] if gone else []
        bits += [f"{len(added)} new partition(s) ({_names(added)})"] if added else []
        others = [k for k in differ if k != "partitions"]
        return "; ".join(bits + ([f"{', '.join(others)} changed"] if others else [])) or "partitions changed"
    return f"{', '.join(differ) or 'content'} changed"


def verify_record(record: Mapping[str, Any], params: Mapping[str, Any]) -> OutputCheck:
    """Check one recorded output against what is there now."""
    began = time.perf_counter()
    uri = str(record.get("uri", ""))
    kind = str(record.get("kind", "path"))

    def done(status: CheckStatus, detail: str) -> OutputCheck:
        return OutputCheck(uri, kind, status, detail, time.perf_counter() - began)

    if not uri:
        return done(CheckStatus.UNCHECKED, "no location recorded")
    if record.get("unchecked"):
        return done(CheckStatus.UNCHECKED, str(record["unchecked"]))
    if "digest" not in record and not record.get("missing"):
        return done(CheckStatus.UNCHECKED, "no fingerprint recorded")
    now = fingerprint_output(uri, params)
    if record.get("missing"):  # declared but not produced: nothing to lose
        return done(CheckStatus.UNCHECKED, "was not produced by the step")
    if now.get("missing"):
        return done(CheckStatus.MISSING, "gone")
    if now.get("unchecked"):
        return done(CheckStatus.UNCHECKED, str(now["unchecked"]))
    if "fingerprint" in record:
        if record.get("digest") == now.get("digest"):
            return done(CheckStatus.MATCHES, summarize(now))
        return done(CheckStatus.CHANGED, _compare_scheme(record["fingerprint"], now.get("fingerprint") or {}))
    reason = _compare_paths(record, now)
    if reason is None:
        return done(CheckStatus.MATCHES, summarize(now))
    return done(CheckStatus.CHANGED, reason)


def output_problem(checks: Sequence[OutputCheck]) -> str | None:
    """One readable reason for the checks that failed, or None when every output is intact."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return None
    return "; ".join(f"{c.uri} {c.detail}" for c in bad)


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
                said.append(f"{label}{plural} {_names(differ)} changed")
        return "; ".join(said) or None


@cache
def _module_file(name: str, beside: str | None = None) -> Path | None:
    """The source file of a module: first beside the pipeline file (where the runner lets jobs live),
    then on this interpreter's path. Parent packages may be imported; the module itself is not."""
    if beside is not None:
        base = Path(beside, *name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if found is None or not found.origin or not found.origin.endswith(".py"):
        return None
    return Path(found.origin)


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
            tree = ast.parse(path.read_bytes(), filename=str(path))
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
        records: dict[str, dict[str, Any]] = {_identity(uri): fingerprint_output(uri, params) for uri in declared}
        for item in reported:
            where = item.get("uri") or item.get("path")
            details = {k: v for k, v in item.items() if k not in ("uri", "path")}
            if not isinstance(where, str):
                records[f"#{len(records)}"] = {"reported": True, "details": details}
                continue
            record = records.get(_identity(where))
            if record is None:
                is_path = split_scheme(where)[0] is None and not _is_remote(where)
                record = fingerprint_output(where, params) if is_path else {"uri": where, "unchecked": "not declared"}
                record["reported"] = True
                records[_identity(where)] = record
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
        values = {name: _digest_json(params[name]) for name in sorted(used) if name in params}
        inputs = {path: _listing(Path(path)) for path in _as_list(params.get(RAW_INPUTS_PARAM))}
        return StepFingerprint(code=code, params=values, inputs=inputs)

    def _file_digest(self, path: Path) -> str:
        size, mtime = _stamp(path)
        cache_key = (str(path), size, mtime)
        if cache_key not in self._digests:
            self._digests[cache_key] = _digest(path.read_bytes())
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
            return {job: _digest(job.encode())}, set(params)
        code = {name: self._file_digest(path) for name, path in source.files.items()}
        code[job] = _digest(job.encode())
        return code, {name for name in params if name in source.strings}

    def _command_code(self, command: str, params: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
        """The command text, and the scripts it names that exist (relative to the pipeline file)."""
        code = {"command": _digest(command.encode())}
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
                    if scheme is None and not _is_remote(rest):
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
                if _is_remote(value):
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


def _identity(uri: str) -> str:
    """One spelling per output: a local path made absolute, a scheme URI as written."""
    scheme, rest = split_scheme(uri)
    return uri if scheme is not None or _is_remote(rest) else os.path.abspath(rest)


def _listing(root: Path) -> str:
    """Names, sizes and modification times of the files under `root` (or of `root` itself when it is a
    file): cheap, and what `make` trusts. A path that does not exist has a listing too (empty)."""
    if root.is_file():
        size, mtime = _stamp(root)
        return _digest(f"{size}:{mtime}".encode())
    rows = []
    for file in _walk(root):
        size, mtime = _stamp(file)
        rows.append(f"{file.relative_to(root).as_posix()}:{size}:{mtime}")
    return _digest("\n".join(rows).encode())


def placeholders(template: str) -> set[str]:
    """The `{name}` placeholders of a template string."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}
