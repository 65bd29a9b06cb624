"""What a step produced: a fingerprint per declared output, recorded when it finishes and checked
before anything is reused.

A local file or directory is fingerprinted by its file list, sizes and a content digest per file:
the whole file when small, the footer when it is Parquet (the footer holds row counts, column
statistics and every chunk's offset and size, so a rewrite changes it), the first and last 64 KiB
otherwise. That reads kilobytes per file, never the data, so checking a 10M-row output takes
milliseconds. Outputs with a scheme (`table:NAME`, `partitions:NAME`) are fingerprinted by a function
the pipeline names in its `verifiers` parameter (`{scheme: "module:function"}`); the core never imports
pipeline code and there is no global registry.

What a step *depends on* (its code, parameters and raw inputs) is `flywheel.fingerprints`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

SMALL_FILE = 1 << 20
"""Files up to this size are hashed whole; larger ones by footer (Parquet) or head and tail."""
SAMPLE = 64 * 1024
MAX_LISTED_FILES = 5000
"""Beyond this many files a directory is recorded as one digest (no per-file explanation)."""
VERIFIERS_PARAM = "verifiers"
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):(?!//)(.+)$")


def digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=10)
    for part in parts:
        h.update(part)
    return h.hexdigest()


def digest_json(value: Any) -> str:
    return digest(json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode())


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
            return digest(handle.read())
        footer = _parquet_footer(handle, size) if path.suffix == ".parquet" else None
        if footer is not None:
            return digest(b"parquet", footer)
        handle.seek(0)
        head = handle.read(SAMPLE)
        handle.seek(max(0, size - SAMPLE))
        return digest(b"sampled", head, handle.read(SAMPLE), str(size).encode())


def walk(root: Path) -> Iterator[Path]:
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
    for file in walk(path):
        size = file.stat().st_size
        total += size
        files[file.relative_to(path).as_posix()] = f"{size}:{file_digest(file, size)}"
    body: dict[str, Any] = {"kind": "dir", "count": len(files), "size": total, "digest": digest_json(files)}
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


def some_names(items: Iterable[str], limit: int = 3) -> str:
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
        parts.append(f"{len(missing)} file(s) gone ({some_names(missing)})")
    if changed:
        parts.append(f"{len(changed)} changed ({some_names(changed)})")
    if added:
        parts.append(f"{len(added)} new ({some_names(added)})")
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


def is_remote(path: str) -> bool:
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
        return {"uri": uri, "kind": scheme, "fingerprint": body, "digest": digest_json(body)}
    if is_remote(rest):
        store = rest.split("://", 1)[0]
        function = scheme_verifier(store, params)  # e.g. `s3: flywheel.aws.s3:s3_output_fingerprint`
        if function is None:
            return {"uri": uri, "kind": "remote", "unchecked": f"no verifier for {store}:// in `verifiers`"}
        found = function(rest, params)
        if found is None:
            return {"uri": uri, "kind": "remote", "missing": True}
        body = dict(found)
        return {"uri": uri, "kind": "remote", "fingerprint": body, "digest": digest_json(body)}
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
        bits = [f"{len(gone)} partition(s) gone ({some_names(gone)})"] if gone else []
        bits += [f"{len(added)} new partition(s) ({some_names(added)})"] if added else []
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
    if record.get("missing") and record.get("claimed") and now.get("missing"):
        # marked succeeded while this output was absent: the mark's claim does not hold yet
        return done(CheckStatus.MISSING, "declared but never produced (the step was marked succeeded without it)")
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


def identity(uri: str) -> str:
    """One spelling per output: a local path made absolute, a scheme URI as written."""
    scheme, rest = split_scheme(uri)
    return uri if scheme is not None or is_remote(rest) else os.path.abspath(rest)
