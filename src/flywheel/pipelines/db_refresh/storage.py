"""Where the db-refresh jobs keep their files: a local directory tree or an S3 bucket, one interface.

The DataFrame engine reads and writes the data itself (DuckDB locally, Spark on Glue). Everything the
jobs do *around* it goes through here: list the delivered files under a root, read a CSV header, read
and write small text objects (manifests, the schema-mapping config, reports and their history), list
the `id_part=N/` directories of an output with their files, and commit a partitioned output.

`storage_for(uri)` picks the backend: `s3://bucket/key` is `S3Storage` (boto3, imported on first use;
credentials, region and endpoint come from the environment as for any AWS client, so `AWS_ENDPOINT_URL`
points it at a test server), anything else `LocalStorage`. Locations are plain strings everywhere, so a
job joins `raw_root` and `addressable_ids` the same way on both (`join`).

Committing on S3 (`S3Storage.commit`) cannot be a rename: S3 has none, and copying a prefix object by
object is visible half-done. So a partitioned output's `_manifest.json` is the commit marker and readers
trust only what it lists (`engine.read_partitions`, the Glue catalog code, the `s3` output verifier):

1. every commit writes its data objects under a prefix of its own in each partition directory,
   `id_part=N/commit-<UTC stamp>-<random hex>/` (`new_commit_id`; the Hive-style `id_part=N/` stays, so
   partition discovery still works), copied from the engine's staging prefix or uploaded from scratch;
2. `_manifest.json` is replaced in one conditional PUT (atomic in S3): `If-Match` the manifest's ETag
   read when the commit began (`If-None-Match: *` when there was none), so of two writers committing the
   same output at once one wins and the other fails with `concurrent-commit` and takes back its files
   ("Add preconditions to S3 operations with conditional requests",
   AmazonS3/latest/userguide/conditional-requests.html). The manifest carries the commit record
   (`Commit`: its id, time, and the earlier commits it retired and when), and the output now *is* the
   new one;
3. the caller then points the Glue catalog's partitions at the new prefixes (the db-refresh catalog
   seam), so catalog readers switch from one whole commit to the next;
4. `S3Storage.sweep` deletes a retired commit's prefix only once it has been retired for the grace
   period (`commit_grace`, default 6 h), and a prefix no manifest ever named (a killed or lost commit)
   only once its newest object is that old; the current commit and every prefix the caller says is
   still in use (what the catalog names) are never deleted.

A reader mid-commit sees the previous manifest and, through the catalog, the previous prefixes: nothing
of them is deleted or overwritten for the grace period after they are replaced, so a query that
started on the previous commit can finish on it. A commit that fails before step 2 deletes what it put
(best effort); anything it could not delete is under a prefix no reader is pointed at, and is swept
after the grace (docs/aws.md, "What a reader through the catalog sees").
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import secrets
import shutil
import tempfile
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from flywheel.invocation import JobError

MANIFEST = "_manifest.json"
S3_SCHEME = "s3://"
ACCESS_DENIED = "access-denied"
STORAGE_ERROR = "storage-error"
CONCURRENT_COMMIT = "concurrent-commit"
"""Another writer replaced the manifest while this commit ran: this commit was taken back."""
HEAD_BYTES = 64 * 1024
"""A ranged GET of this much covers a CSV header line; more is read only when the line is longer."""
MAX_HEADER_BYTES = 4 * 1024 * 1024
COMMIT_GRACE = timedelta(hours=6)
"""How long a replaced commit's files stay for readers that started on it (setting `commit_grace`)."""
_COMMIT_ID = re.compile(r"^commit-(?P<stamp>\d{8}T\d{6}Z)-(?P<hex>[0-9a-f]{8})$")
_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[smhd]?)\s*$")


def is_remote(uri: str | os.PathLike[str]) -> bool:
    return os.fspath(uri).startswith(S3_SCHEME)


def join(root: str | os.PathLike[str], *parts: str) -> str:
    """`root/part/...`: a POSIX key under an `s3://` root, an absolute path under a local one."""
    text = os.fspath(root)
    if is_remote(text):
        return "/".join([text.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])
    return str(Path(text.removeprefix("file://")).absolute().joinpath(*parts))


def name_of(uri: str | os.PathLike[str]) -> str:
    """The last part of a location: the file name."""
    return posixpath.basename(os.fspath(uri).rstrip("/"))


@dataclass(frozen=True)
class StoredFile:
    """One data file of an output: its name (relative to its partition directory), size and ETag.

    The ETag is S3's (an MD5 for single-part uploads); local files have none."""

    name: str
    size: int
    etag: str | None = None


def new_commit_id(now: datetime | None = None) -> str:
    """`commit-<UTC stamp>-<8 random hex>`: the prefix one commit writes under in every partition.

    The stamp makes prefixes sort by age when a person lists a partition; the random part keeps two
    writers that start in the same second apart."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"commit-{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def is_commit_id(name: str) -> bool:
    return _COMMIT_ID.match(name) is not None


def commit_grace(value: object) -> timedelta:
    """The `commit_grace` setting as a duration: seconds (`3600`), or `30m`, `6h`, `1d`; unset is 6 h."""
    if value is None or value == "":
        return COMMIT_GRACE
    match = _DURATION.match(str(value))
    if match is None:
        raise JobError(
            f"commit_grace {value!r} is not a duration: write seconds (3600) or 30m, 6h, 1d",
            error_type="unsupported",
        )
    seconds = float(match.group("number")) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group("unit")]
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Commit:
    """The commit record a manifest carries: which prefix is current, and which earlier ones were
    replaced and when (their grace period runs from then, not from when their files were written)."""

    id: str
    time: datetime
    retired: Mapping[str, datetime]
    """Earlier commit id -> when it stopped being current (`""`: files directly under the partition
    directories, as outputs committed before per-commit prefixes have them)."""

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": _stamp(self.time),
            "retired": [{"id": k, "since": _stamp(v)} for k, v in sorted(self.retired.items(), key=lambda kv: kv[1])],
        }

    @classmethod
    def from_manifest(cls, text: str | None) -> Commit | None:
        """The commit record of a manifest, or None (no manifest, or one written without a record)."""
        try:
            body = json.loads(text) if text else None
            record = body.get("commit") if isinstance(body, dict) else None
            if not isinstance(record, dict):
                return None
            retired = {str(r["id"]): _parse_stamp(r["since"]) for r in record.get("retired") or ()}
            return cls(str(record["id"]), _parse_stamp(record["time"]), retired)
        except (ValueError, KeyError, TypeError):
            return None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_stamp(text: Any) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)


def commit_folder(relative: str) -> str | None:
    """The commit prefix an object (key relative to an output) is under: its id, `""` for a data file
    directly under a partition directory, None for anything else (the manifest, hidden names)."""
    parts = relative.split("/")
    if len(parts) < 2 or not _PARTITION_NAME.match(parts[0]) or any(_hidden(p) for p in parts):
        return None
    if len(parts) >= 3 and is_commit_id(parts[1]):
        return parts[1]
    return "" if len(parts) == 2 else None


class Storage(Protocol):
    """What the jobs do with files outside the DataFrame engine, on one backend."""

    def is_dir(self, uri: str) -> bool:
        """Whether anything is stored under `uri/` (a directory, or a prefix with objects)."""
        ...

    def list_files(self, root: str, suffixes: Sequence[str]) -> list[str]:
        """Files directly under `root` ending with one of `suffixes`, sorted; `.`/`_` names skipped."""
        ...

    def read_text(self, uri: str) -> str | None:
        """A small text object, or None when there is none."""
        ...

    def write_text(self, uri: str, text: str) -> None:
        """Replace a small text object so readers see the old one or the new one, never a torn one."""
        ...

    def delete(self, uris: Sequence[str]) -> None: ...

    def partitions(self, root: str, partition_col: str) -> dict[int, tuple[StoredFile, ...]]:
        """Every `partition_col=<int>/` directory under `root` with its data files (hidden skipped)."""
        ...


def storage_for(uri: str | os.PathLike[str]) -> Storage:
    return S3Storage() if is_remote(uri) else LocalStorage()


_PARTITION_NAME = re.compile(r"^(?P<col>[^=/]+)=(?P<value>-?\d+)$")


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


# --------------------------------------------------------------------------- local


class LocalStorage:
    """A directory tree on this machine; `write_text` is write-to-temp and rename."""

    def is_dir(self, uri: str) -> bool:
        return Path(join(uri)).is_dir()

    def list_files(self, root: str, suffixes: Sequence[str]) -> list[str]:
        base = Path(join(root))
        if not base.is_dir():
            return []
        return sorted(
            str(p) for p in base.iterdir() if p.is_file() and not _hidden(p.name) and p.name.endswith(tuple(suffixes))
        )

    def read_text(self, uri: str) -> str | None:
        path = Path(join(uri))
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def write_text(self, uri: str, text: str) -> None:
        path = Path(join(uri))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, uris: Sequence[str]) -> None:
        for uri in uris:
            Path(join(uri)).unlink(missing_ok=True)

    def partitions(self, root: str, partition_col: str) -> dict[int, tuple[StoredFile, ...]]:
        base = Path(join(root))
        found: dict[int, tuple[StoredFile, ...]] = {}
        if not base.is_dir():
            return found
        for child in base.iterdir():
            match = _PARTITION_NAME.match(child.name)
            if child.is_dir() and match and match.group("col") == partition_col:
                files = sorted(p for p in child.iterdir() if p.is_file() and not _hidden(p.name))
                found[int(match.group("value"))] = tuple(StoredFile(p.name, p.stat().st_size) for p in files)
        return dict(sorted(found.items()))


# --------------------------------------------------------------------------- S3


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` into (bucket, key)."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not uri.startswith(S3_SCHEME) or not bucket:
        raise JobError(f"{uri!r} is not an s3://bucket/prefix location", error_type=STORAGE_ERROR)
    return bucket, key


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    if not code:  # boto3's managed transfers wrap the ClientError in text: "An error occurred (Code) ..."
        found = re.search(r"An error occurred \(([^)]+)\)", str(exc))
        code = found.group(1) if found else type(exc).__name__
    return str(code)


_MISSING_CODES = ("NoSuchKey", "404", "NotFound", "NoSuchBucket")


def storage_error(exc: BaseException, action: str, uri: str) -> JobError:
    """A failed S3 call as a job error that names the location and what to fix, never credentials."""
    code = _code(exc)
    if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId"):
        return JobError(
            f"S3 {action} {uri}: AccessDenied. The job's role (or your profile) needs permission for it "
            "(s3:GetObject / s3:PutObject / s3:DeleteObject on the data prefix, s3:ListBucket on the bucket)",
            error_type=ACCESS_DENIED,
        )
    if code == "NoSuchBucket":
        return JobError(
            f"S3 {action} {uri}: the bucket does not exist. Fix the data root in project.yaml, or create the bucket",
            error_type=STORAGE_ERROR,
        )
    message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message") or str(exc).splitlines()[0]
    return JobError(f"S3 {action} {uri} failed: {code} ({message}); retry the step", error_type=STORAGE_ERROR)


@contextlib.contextmanager
def _s3_call(action: str, uri: str) -> Iterator[None]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise storage_error(exc, action, uri) from exc


class S3Storage:
    """A bucket, through one boto3 client made on first use."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def _pages(self, uri: str, *, delimiter: str | None = None) -> Iterator[Mapping[str, Any]]:
        bucket, key = split_uri(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        options: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            options["Delimiter"] = delimiter
        with _s3_call("list", uri):
            try:
                yield from self.client.get_paginator("list_objects_v2").paginate(**options)
            except Exception as exc:
                if _code(exc) == "NoSuchBucket":
                    return
                raise

    def objects(self, uri: str) -> list[tuple[str, StoredFile]]:
        """Every object under `uri/`: (key relative to `uri/`, size and ETag)."""
        _, key = split_uri(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        found = []
        for page in self._pages(uri):
            for item in page.get("Contents", ()):
                relative = str(item["Key"])[len(prefix) :]
                found.append((relative, StoredFile(name_of(relative), int(item["Size"]), _etag(item["ETag"]))))
        return found

    def is_dir(self, uri: str) -> bool:
        bucket, key = split_uri(uri)
        with _s3_call("list", uri):
            try:
                page = self.client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
            except Exception as exc:
                if _code(exc) == "NoSuchBucket":
                    return False
                raise
        return bool(page.get("KeyCount") or page.get("Contents"))

    def list_files(self, root: str, suffixes: Sequence[str]) -> list[str]:
        names = []
        for page in self._pages(root, delimiter="/"):
            for item in page.get("Contents", ()):
                name = name_of(str(item["Key"]))
                if name and not _hidden(name) and name.endswith(tuple(suffixes)):
                    names.append(join(root, name))
        return sorted(names)

    def read_bytes(self, uri: str, *, first: int | None = None) -> bytes | None:
        """An object's bytes (only the first `first` bytes, by a ranged GET), or None when it is not there."""
        bucket, key = split_uri(uri)
        options: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if first is not None:
            options["Range"] = f"bytes=0-{max(first, 1) - 1}"
        with _s3_call("read", uri):
            try:
                body: bytes = self.client.get_object(**options)["Body"].read()
            except Exception as exc:
                if _code(exc) == "InvalidRange":  # a range of an empty object
                    return b""
                if _code(exc) in _MISSING_CODES:
                    return None
                raise
        return body

    def read_text(self, uri: str) -> str | None:
        data = self.read_bytes(uri)
        return None if data is None else data.decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.put_bytes(uri, text.encode("utf-8"))

    def put_bytes(self, uri: str, data: bytes) -> str:
        """One PUT (atomic in S3: readers see the old object or the new one); returns the ETag."""
        bucket, key = split_uri(uri)
        with _s3_call("write", uri):
            reply = self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return _etag(reply["ETag"])

    def etag(self, uri: str) -> str | None:
        """The object's ETag as S3 sends it (quoted), or None when there is no such object."""
        bucket, key = split_uri(uri)
        with _s3_call("read", uri):
            try:
                return str(self.client.head_object(Bucket=bucket, Key=key)["ETag"])
            except Exception as exc:
                if _code(exc) in _MISSING_CODES:
                    return None
                raise

    def replace_if_unchanged(self, uri: str, data: bytes, expected_etag: str | None) -> None:
        """PUT only if the object still has `expected_etag` (or still does not exist when None); else a
        `concurrent-commit` error."""
        bucket, key = split_uri(uri)
        condition = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
        with _s3_call("write", uri):
            try:
                self.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
            except Exception as exc:
                if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise
                raise JobError(
                    f"{uri} was replaced by another commit while this one ran: two writers committed the same "
                    "output at once. This commit was taken back and the other one stands; rerun the step if its "
                    "output is still wanted (and check that nothing else writes this output)",
                    error_type=CONCURRENT_COMMIT,
                ) from exc

    def upload(self, path: Path, uri: str) -> StoredFile:
        bucket, key = split_uri(uri)
        with _s3_call("upload to", uri):
            self.client.upload_file(str(path), bucket, key)
            head = self.client.head_object(Bucket=bucket, Key=key)
        return StoredFile(name_of(key), int(head["ContentLength"]), _etag(head["ETag"]))

    def copy(self, source: str, uri: str) -> StoredFile:
        """A server-side copy (managed: objects over 5 GB are copied in parts)."""
        src_bucket, src_key = split_uri(source)
        bucket, key = split_uri(uri)
        with _s3_call("copy to", uri):
            self.client.copy({"Bucket": src_bucket, "Key": src_key}, bucket, key)
            head = self.client.head_object(Bucket=bucket, Key=key)
        return StoredFile(name_of(key), int(head["ContentLength"]), _etag(head["ETag"]))

    def download(self, uri: str, path: Path) -> None:
        bucket, key = split_uri(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _s3_call("download", uri):
            self.client.download_file(bucket, key, str(path))

    def delete(self, uris: Sequence[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for uri in uris:
            bucket, key = split_uri(uri)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = keys[start : start + 1000]
                with _s3_call("delete under", f"s3://{bucket}/{posixpath.commonpath(batch)}"):
                    reply = self.client.delete_objects(
                        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                    )
                errors = reply.get("Errors") or ()
                if errors:
                    first = errors[0]
                    raise JobError(
                        f"S3 delete s3://{bucket}/{first.get('Key')}: {first.get('Code')} ({len(errors)} objects "
                        "not deleted); the job's role needs s3:DeleteObject on the data prefix",
                        error_type=ACCESS_DENIED if first.get("Code") == "AccessDenied" else STORAGE_ERROR,
                    )

    def delete_prefix(self, uri: str) -> None:
        self.delete([join(uri, relative) for relative, _ in self.objects(uri)])

    def partitions(self, root: str, partition_col: str) -> dict[int, tuple[StoredFile, ...]]:
        """As the local one, but a file under a commit prefix is named by its path below the partition
        directory (`commit-<id>/part-0.parquet`), as the manifest names it."""
        found: dict[int, list[StoredFile]] = {}
        for relative, stored in self.objects(root):
            directory, _, name = relative.partition("/")
            match = _PARTITION_NAME.match(directory)
            if not match or match.group("col") != partition_col or commit_folder(relative) is None:
                continue
            found.setdefault(int(match.group("value")), []).append(StoredFile(name, stored.size, stored.etag))
        return {v: tuple(sorted(files, key=lambda f: f.name)) for v, files in sorted(found.items())}

    def read_with_etag(self, uri: str) -> tuple[str | None, str | None]:
        """A small text object and its ETag from one GET (so the two belong together), or (None, None)."""
        bucket, key = split_uri(uri)
        with _s3_call("read", uri):
            try:
                reply = self.client.get_object(Bucket=bucket, Key=key)
            except Exception as exc:
                if _code(exc) in _MISSING_CODES:
                    return None, None
                raise
            return reply["Body"].read().decode("utf-8"), str(reply["ETag"])

    def commit(
        self,
        target: str,
        commit_id: str,
        sources: Mapping[str, Path | str],
        manifest: Callable[[Mapping[str, StoredFile], Commit], str],
        *,
        grace: timedelta = COMMIT_GRACE,
        now: datetime | None = None,
    ) -> Commit:
        """Publish a partitioned output at `target` with the protocol in the module docstring.

        `sources` maps each new object's key relative to `target` (under `<partition>/<commit_id>/`) to a
        local file to upload or an `s3://` object to copy; `manifest` builds the manifest text from what
        was stored (sizes, ETags) and the commit record, which it must carry under `commit`
        (`Commit.record`). Nothing is deleted here but this commit's own files when it fails: old
        prefixes go later, by `sweep`, after `grace`.
        """
        if not is_commit_id(commit_id):
            raise ValueError(f"{commit_id!r} is not a commit id (new_commit_id makes them)")
        strays = [k for k in sources if commit_folder(k) != commit_id]
        if strays:
            raise ValueError(f"{strays[0]!r} is not under <partition>/{commit_id}/")
        stored: dict[str, StoredFile] = {}
        manifest_uri = join(target, MANIFEST)
        text: str | None = None
        previous, base = self.read_with_etag(manifest_uri)  # the PUT below requires this manifest unchanged
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        before = Commit.from_manifest(previous)
        retired = {k: v for k, v in (before.retired if before else {}).items() if v > moment - grace}
        if previous is not None:
            retired[before.id if before else ""] = moment
        record = Commit(commit_id, moment, retired)
        try:
            for relative, source in sources.items():
                uri = join(target, relative)
                stored[relative] = self.copy(source, uri) if isinstance(source, str) else self.upload(source, uri)
            text = manifest(stored, record)
            self.replace_if_unchanged(manifest_uri, text.encode("utf-8"), base)
        except BaseException:
            if text is None or self.read_text(manifest_uri) != text:  # not committed: take back what was put
                with contextlib.suppress(Exception):
                    self.delete([join(target, relative) for relative in stored])
            raise
        return record

    def sweep(
        self, target: str, *, grace: timedelta = COMMIT_GRACE, keep: Collection[str] = (), now: datetime | None = None
    ) -> tuple[str, ...]:
        """Delete the commit prefixes under `target` that no reader may still be using; returns their ids.

        Kept: the current commit (the manifest's), every id in `keep` (what the Glue catalog still
        names), a retired commit until `grace` after it was retired, and a prefix no manifest named (a
        commit in progress, or a killed one) until `grace` after its newest object was written. An output
        whose manifest carries no commit record (written before per-commit prefixes) is left alone.
        """
        current = Commit.from_manifest(self.read_text(join(target, MANIFEST)))
        if current is None:
            return ()
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        groups: dict[str, list[tuple[str, datetime]]] = {}
        _, key = split_uri(target)
        prefix = key.rstrip("/") + "/" if key else ""
        for page in self._pages(target):
            for item in page.get("Contents", ()):
                relative = str(item["Key"])[len(prefix) :]
                folder = commit_folder(relative)
                if folder is not None:
                    groups.setdefault(folder, []).append((relative, _utc(item["LastModified"])))
        swept = []
        for folder, objects in sorted(groups.items()):
            if folder == current.id or folder in keep:
                continue
            since = current.retired.get(folder) or max(modified for _, modified in objects)
            if since <= moment - grace:
                self.delete([join(target, relative) for relative, _ in objects])
                swept.append(folder)
        return tuple(swept)

    def read_csv_header(self, uri: str) -> str:
        """The first line of a CSV object (gzip or plain) from the first bytes only (ranged GETs)."""
        size = HEAD_BYTES
        while True:
            data = self.read_bytes(uri, first=size)
            if data is None:
                raise JobError(f"{uri} is not there any more; re-deliver it", error_type="missing-source")
            complete = len(data) < size
            if not data:  # an empty object: nothing to inflate, no header
                return ""
            if uri.endswith(".gz"):
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                try:
                    text = inflater.decompress(data)
                except zlib.error as exc:
                    raise OSError(f"not a gzipped file ({exc})") from None
                if complete and not inflater.eof and b"\n" not in text:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            else:
                text = data
            if b"\n" in text or complete or size >= MAX_HEADER_BYTES:
                return text.split(b"\n", 1)[0].decode("utf-8")
            size *= 4


def _etag(value: Any) -> str:
    return str(value).strip('"')


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --------------------------------------------------------------------------- local scratch for S3 inputs


SCRATCH_PREFIX = "flywheel-s3-"
_SCRATCH_PATH = re.compile(r"(?:/[^\s'\"]*)?/" + SCRATCH_PREFIX + r"[a-z0-9_]{8}/")


def scratch_dir(base: str | os.PathLike[str] | None) -> Path:
    """A fresh private directory for S3 objects a local engine reads or writes (removed by the caller).

    Objects are kept under `<scratch>/<bucket>/<key>`, so an engine error that names a local copy can
    be told in S3 terms (`as_stored`)."""
    root = Path(base) if base else Path(tempfile.gettempdir()) / "flywheel-duckdb"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root))


def as_stored(text: str) -> str:
    """`text` with every local copy's path written as the S3 location it was copied from."""
    return _SCRATCH_PATH.sub(S3_SCHEME, text)


def remove_scratch(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def local_copy(scratch: Path, uri: str, *, client: S3Storage | None = None) -> Path:
    """The object at `uri` downloaded once into `scratch` (same bucket/key layout), for a local engine."""
    bucket, key = split_uri(uri)
    path = scratch / bucket / key
    if not path.is_file():
        (client or S3Storage()).download(uri, path)
    return path
