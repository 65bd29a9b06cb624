"""S3 outputs: what an AWS run produced, seen as a listing (keys, sizes, ETags), and its fingerprint.

Outputs of AWS runs are verified like local ones: a step's output is a prefix (a partitioned directory)
or one object, and its fingerprint is a digest of the listing. Reading object bodies is never needed
(but for a partitioned output's `_manifest.json`), so verifying a terabyte of part files costs a few
`ListObjectsV2` pages and one GET.

A partitioned output the db-refresh jobs committed (`flywheel.pipelines.db_refresh.storage`) is what its
`_manifest.json` lists, nothing else: the listing keeps only the manifest and the files it names, so
objects a failed commit left behind (or stale ones a commit had not yet deleted) do not change the
fingerprint, and a listed file that has gone does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flywheel.errors import BackendError, UsageError


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Uri(self.bucket, key)


def parse_s3_uri(uri: str) -> S3Uri:
    """`s3://bucket/some/key` into bucket and key (the key may be empty: the whole bucket)."""
    if not uri.startswith("s3://"):
        raise UsageError(f"{uri!r} is not an s3:// URI", fix="write it as s3://bucket/prefix")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise UsageError(f"{uri!r} names no bucket", fix="write it as s3://bucket/prefix")
    return S3Uri(bucket, key)


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class S3Listing:
    """What is stored under an output URI: one object, or every object under the prefix `uri/`."""

    uri: str
    objects: tuple[S3Object, ...]
    absent: tuple[str, ...] = ()
    """Keys the output's manifest lists that are not in S3 (a broken output)."""

    @property
    def exists(self) -> bool:
        return bool(self.objects)

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def fingerprint(self) -> str:
        """sha256 over (key relative to the URI, size, ETag), sorted: equal listings, equal prints."""
        base = parse_s3_uri(self.uri).key.rstrip("/")
        digest = hashlib.sha256()
        for obj in sorted(self.objects, key=lambda o: o.key):
            relative = obj.key[len(base) :].lstrip("/") if base else obj.key
            digest.update(f"{relative}\0{obj.size}\0{obj.etag}\n".encode())
        for key in self.absent:
            digest.update(f"absent\0{key}\n".encode())
        return digest.hexdigest()

    def record(self) -> dict[str, Any]:
        """The output record stored in the journal (like a local output's record)."""
        return {"uri": self.uri, "objects": len(self.objects), "bytes": self.bytes, "fingerprint": self.fingerprint}


def _s3_client(client: Any) -> Any:
    if client is not None:
        return client
    import boto3

    return boto3.client("s3")


def s3_listing(uri: str, *, client: Any = None) -> S3Listing:
    """List an output: the object at `uri` when it exists, else everything under `uri/`.

    Hidden names (`_` or `.` at the start of a path part, e.g. Spark's `_SUCCESS` or a staging
    directory) are part of the listing only when they are the manifest `_manifest.json`, so a retried
    write's leftovers do not change the fingerprint.
    """
    from botocore.exceptions import ClientError

    s3 = _s3_client(client)
    target = parse_s3_uri(uri)
    objects: list[S3Object] = []
    try:
        if target.key and not target.key.endswith("/"):
            try:
                head = s3.head_object(Bucket=target.bucket, Key=target.key)
                objects.append(S3Object(target.key, int(head["ContentLength"]), str(head["ETag"]).strip('"')))
                return S3Listing(uri=uri, objects=tuple(objects))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
        prefix = target.key.rstrip("/") + "/" if target.key else ""
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=target.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                if _hidden(key[len(prefix) :]):
                    continue
                objects.append(S3Object(key, int(item["Size"]), str(item["ETag"]).strip('"')))
        committed, absent = _committed(objects, target.bucket, prefix, s3)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Error")
        raise BackendError(
            f"cannot list {uri}: {code}",
            fix="check the bucket exists and the role may s3:ListBucket and s3:GetObject on it",
        ) from None
    return S3Listing(uri=uri, objects=tuple(committed), absent=absent)


def manifest_files(manifest: Mapping[str, Any] | None) -> list[str] | None:
    """The data files a partitioned output's manifest lists (`id_part=3/<name>`), or None when it is
    not such a manifest."""
    if not manifest or not isinstance(manifest.get("partitions"), Mapping) or not manifest.get("partition_col"):
        return None
    column = str(manifest["partition_col"])
    try:
        return [f"{column}={value}/{name}" for value, part in manifest["partitions"].items() for name in part["files"]]
    except (KeyError, TypeError):
        return None


def _committed(
    objects: list[S3Object], bucket: str, prefix: str, client: Any
) -> tuple[list[S3Object], tuple[str, ...]]:
    """What a manifest under `prefix` says the output is: its listed files that exist, and those that don't."""
    manifest_key = prefix + "_manifest.json"
    if not any(o.key == manifest_key for o in objects):
        return objects, ()
    listed = manifest_files(read_json(f"s3://{bucket}/{manifest_key}", client=client))
    if listed is None:
        return objects, ()
    wanted = {prefix + name for name in listed} | {manifest_key}
    kept = [o for o in objects if o.key in wanted]
    return kept, tuple(sorted(wanted - {o.key for o in kept}))


def _hidden(relative: str) -> bool:
    parts = [p for p in relative.split("/") if p]
    return any(p.startswith((".", "_")) and p != "_manifest.json" for p in parts)


def s3_fingerprint(uri: str, *, client: Any = None) -> str | None:
    """The fingerprint of an S3 output, or None when nothing is there (the output is missing)."""
    listing = s3_listing(uri, client=client)
    return listing.fingerprint if listing.exists else None


def read_json(uri: str, *, client: Any = None) -> Mapping[str, Any] | None:
    """A small JSON object from S3 (a job's result), or None when it does not exist."""
    from botocore.exceptions import ClientError

    target = parse_s3_uri(uri)
    try:
        body = _s3_client(client).get_object(Bucket=target.bucket, Key=target.key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
            return None
        raise
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def write_json(uri: str, body: Mapping[str, Any], *, client: Any = None) -> None:
    """Write a small JSON object (one PUT is atomic: readers see all of it or nothing)."""
    target = parse_s3_uri(uri)
    data = json.dumps(body, default=str, sort_keys=True).encode()
    _s3_client(client).put_object(Bucket=target.bucket, Key=target.key, Body=data, ContentType="application/json")


def s3_output_fingerprint(uri: str, params: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None:
    """An output verifier (`(uri, params) -> fingerprint | None`, the shape `flywheel.outputs` calls):
    the listing's object count, bytes and digest, or None when nothing is there."""
    listing = s3_listing(uri)
    if not listing.exists:
        return None
    found: dict[str, Any] = {"objects": len(listing.objects), "bytes": listing.bytes, "listing": listing.fingerprint}
    if listing.absent:
        found["absent"] = list(listing.absent)
    return found
