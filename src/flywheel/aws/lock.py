"""One runner at a time across machines: the pipeline-and-environment lock for dev and prod in DynamoDB.

The local `flywheel.lock.RunLock` is an `flock`, which only sees one machine; two operators on two
laptops would both get it. In an AWS environment the lock is an item in the environment's
`lock_table`, taken with a conditional put, so exactly one runner anywhere holds it.

A lease, not a forever-lock: the item carries `expires_at` (epoch seconds, also the table's TTL
attribute), renewed by a heartbeat thread every `heartbeat_seconds`. A holder that dies (SIGKILL, a
closed laptop) stops renewing, and after `lease_seconds` the next runner takes the lock over and
records whom it took it from (`took_over`). Every write of the holder is conditional on its own token,
so a runner whose lease was taken over finds out (`lost` is set, `update` raises) instead of
overwriting the new holder. The lease tolerates clock skew between machines smaller than
`lease_seconds - heartbeat_seconds` (4 minutes by default).

Table (created by the orchestration Terraform stack): partition key `lock_id` (string), TTL on
`expires_at`. Item id: `{pipeline}/{env}`. Same interface as `RunLock`: `acquire`, `release`,
`holder`, `update`, a context manager, raising `RunLocked` naming the holder.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any

from flywheel.errors import BackendError, RunLocked, UsageError
from flywheel.lock import Holder, current_identity
from flywheel.spec import AwsSettings

log = logging.getLogger(__name__)

LEASE_SECONDS = 300.0
HEARTBEAT_SECONDS = 60.0


class AwsRunLock:
    """The `RunLock` of an AWS environment (see the module docstring)."""

    def __init__(
        self,
        aws: AwsSettings,
        pipeline: str,
        env: str,
        *,
        client: Any = None,
        lease_seconds: float = LEASE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        check_account: bool = True,
    ) -> None:
        if not aws.lock_table:
            raise UsageError(
                f"environment {env!r} has no aws.lock_table for the cross-machine run lock",
                fix=f"add `lock_table: omc-flywheel-{env}-locks` to environments.{env}.aws in project.yaml",
            )
        self.aws = aws
        self.table = aws.lock_table
        self.pipeline = pipeline
        self.env = env
        self.lock_id = f"{pipeline}/{env}"
        self.path = f"dynamodb://{self.table}/{self.lock_id}"  # where it lives, for messages
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._check_account = check_account
        self._client = client
        self._session: Any = None
        self._token: str | None = None
        self._fields: dict[str, Any] = {}
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.took_over: Holder | None = None
        self.lost = threading.Event()

    @property
    def session(self) -> Any:
        """One boto3 session per lock (building one costs a few hundred milliseconds)."""
        if self._session is None:
            from flywheel.aws.session import boto_session

            self._session = boto_session(self.aws)
        return self._session

    @property
    def client(self) -> Any:
        if self._client is None:
            from flywheel.aws.session import make_client

            self._client = make_client(self.aws, "dynamodb", session=self.session)
        return self._client

    # -- reading ----------------------------------------------------------------------------------

    def holder(self) -> Holder | None:
        """Who holds the lock now, or None when it is free (an expired lease does not hold it)."""
        item = self._get()
        if item is None or float(item.get("expires_at", 0)) < time.time():
            return None
        return _holder(item)

    def _get(self) -> Mapping[str, Any] | None:
        answer = self._call("get_item", Key=_dynamo({"lock_id": self.lock_id}), ConsistentRead=True)
        item: Mapping[str, Any] | None = answer.get("Item")
        return None if item is None else {k: _plain(v) for k, v in item.items()}

    # -- taking and giving back ---------------------------------------------------------------------

    def acquire(self, *, run_id: int | None = None, command: str = "") -> AwsRunLock:
        """Take the lock or raise `RunLocked` naming the holder; checks the account first."""
        if self._check_account:
            from flywheel.aws.session import check_account

            check_account(self.aws, self.env, session=self.session)
        user, host = current_identity()
        now = time.time()
        token = uuid.uuid4().hex
        self._fields = {
            "user": user,
            "host": host,
            "pid": os.getpid(),
            "since": now,
            "run_id": run_id,
            "command": command,
        }
        item = {
            "lock_id": self.lock_id,
            "token": token,
            "pipeline": self.pipeline,
            "env": self.env,
            **self._fields,
            "heartbeat_at": now,
            "expires_at": math.ceil(now + self.lease_seconds),
        }
        try:
            answer = self._call(
                "put_item",
                Item=_dynamo(item),
                ConditionExpression="attribute_not_exists(lock_id) OR expires_at < :now",
                ExpressionAttributeValues=_dynamo({":now": now}),  # the same comparison as holder()
                ReturnValues="ALL_OLD",
                conditional=True,
            )
        except _ConditionFailed:
            holder = self.holder()
            who = holder.describe() if holder else "another runner (its lease is ending)"
            raise RunLocked(
                f"{self.pipeline} in {self.env} is already being run by {who}",
                fix="wait for that run to finish (`flywheel status`), or ask its holder to stop it; two runners "
                "would overwrite each other's outputs. A dead holder's lock frees itself within "
                f"{self.lease_seconds / 60:g} min",
            ) from None
        previous = answer.get("Attributes")
        self.took_over = _holder({k: _plain(v) for k, v in previous.items()}) if previous else None
        if self.took_over is not None:
            log.warning("took over the expired run lock of %s", self.took_over.describe())
        self._token = token
        self.lost.clear()
        self._start_heartbeat()
        return self

    def update(self, *, run_id: int | None, command: str = "") -> None:
        """Record the run the lock now serves; `RunLocked` when the lease was lost meanwhile."""
        if self._token is None:
            raise RuntimeError("update() on a lock that is not held")
        self._fields.update(run_id=run_id, command=command)
        try:
            self._call(
                "update_item",
                Key=_dynamo({"lock_id": self.lock_id}),
                UpdateExpression="SET #run = :run, #command = :command",
                ConditionExpression="#token = :token",
                ExpressionAttributeNames={"#token": "token", "#run": "run_id", "#command": "command"},
                ExpressionAttributeValues=_dynamo({":run": run_id, ":command": command, ":token": self._token}),
                conditional=True,
            )
        except _ConditionFailed:
            self.lost.set()
            holder = self.holder()
            raise RunLocked(
                f"the run lock of {self.pipeline} in {self.env} was taken over"
                + (f" by {holder.describe()}" if holder else ""),
                fix="this runner stopped renewing its lease (suspended or cut off); check `flywheel status` "
                "before doing anything else",
            ) from None

    def release(self) -> None:
        """Give the lock back (only if it is still ours)."""
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
            self._heartbeat = None
        if self._token is None:
            return
        token, self._token = self._token, None
        try:
            self._call(
                "delete_item",
                Key=_dynamo({"lock_id": self.lock_id}),
                ConditionExpression="#token = :token",
                ExpressionAttributeNames={"#token": "token"},
                ExpressionAttributeValues=_dynamo({":token": token}),
                conditional=True,
            )
        except _ConditionFailed:
            log.warning("the run lock of %s in %s was no longer ours when released", self.pipeline, self.env)

    def __enter__(self) -> AwsRunLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- the lease ------------------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop_heartbeat = threading.Event()
        if self.heartbeat_seconds <= 0:
            return
        self._heartbeat = threading.Thread(target=self._beat, name="flywheel-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_seconds):
            if self._token is None:
                return
            try:
                self.renew()
            except RunLocked:
                log.error("the run lock of %s in %s was taken over by another runner", self.pipeline, self.env)
                return
            except BackendError as exc:  # a missed beat is not fatal: the lease has slack for several
                log.warning("could not renew the run lock: %s", exc.message)

    def renew(self) -> None:
        """Extend the lease by `lease_seconds` (the heartbeat does this); `RunLocked` when it was lost."""
        token = self._token
        if token is None:
            raise RuntimeError("renew() on a lock that is not held")
        now = time.time()
        try:
            self._call(
                "update_item",
                Key=_dynamo({"lock_id": self.lock_id}),
                UpdateExpression="SET heartbeat_at = :now, expires_at = :expires",
                ConditionExpression="#token = :token",
                ExpressionAttributeNames={"#token": "token"},
                ExpressionAttributeValues=_dynamo(
                    {":now": now, ":expires": math.ceil(now + self.lease_seconds), ":token": token}
                ),
                conditional=True,
            )
        except _ConditionFailed:
            self.lost.set()
            raise RunLocked(
                f"the run lock of {self.pipeline} in {self.env} was taken over by another runner",
                fix="this runner stopped renewing its lease (suspended or cut off); check `flywheel status`",
            ) from None

    # -- DynamoDB calls with flywheel errors ----------------------------------------------------------

    def _call(self, operation: str, *, conditional: bool = False, **request: Any) -> Mapping[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        from flywheel.aws.session import error_code, error_message

        try:
            answer: Mapping[str, Any] = getattr(self.client, operation)(TableName=self.table, **request)
        except ClientError as exc:
            code = error_code(exc)
            if conditional and code == "ConditionalCheckFailedException":
                raise _ConditionFailed() from None
            if code == "ResourceNotFoundException":
                raise BackendError(
                    f"the lock table {self.table} does not exist in {self.aws.region}",
                    fix="apply the orchestration Terraform stack of this environment (it creates the table)",
                ) from None
            raise BackendError(
                f"the run lock in {self.table} failed: {code}: {error_message(exc)}",
                fix="check the role may dynamodb:GetItem/PutItem/UpdateItem/DeleteItem on the lock table",
            ) from None
        except BotoCoreError as exc:
            raise BackendError(f"cannot reach DynamoDB for the run lock: {exc}") from None
        return answer


class _ConditionFailed(Exception):
    pass


def _dynamo(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values as the DynamoDB type serializer wants them (floats as Decimal, None as NULL)."""
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    out = {}
    for key, value in values.items():
        if isinstance(value, float):
            value = Decimal(repr(value))
        out[key] = serializer.serialize(value)
    return out


def _plain(value: Mapping[str, Any]) -> Any:
    from boto3.dynamodb.types import TypeDeserializer

    decoded = TypeDeserializer().deserialize(value)
    if isinstance(decoded, Decimal):
        return int(decoded) if decoded == decoded.to_integral_value() else float(decoded)
    return decoded


def _holder(item: Mapping[str, Any]) -> Holder:
    run_id = item.get("run_id")
    return Holder(
        user=str(item.get("user", "unknown")),
        host=str(item.get("host", "unknown")),
        pid=int(item.get("pid", 0)),
        since=float(item.get("since", 0.0)),
        run_id=int(run_id) if run_id is not None else None,
        command=str(item.get("command", "")),
    )


def lock_for(aws: AwsSettings | None, pipeline: str, env: str, **options: Any) -> AwsRunLock | None:
    """The cross-machine lock of an environment with `aws.lock_table`, else None (use the local lock)."""
    if aws is None or not aws.lock_table:
        return None
    return AwsRunLock(aws, pipeline, env, **options)
