"""The cross-machine run lock in DynamoDB (moto in server mode): one holder, leases, take-over, guard."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from flywheel.aws.lock import AwsRunLock, lock_for
from flywheel.errors import BackendError, RunLocked, UsageError
from flywheel.spec import AwsSettings
from tests.support.moto_server import MotoServer

AWS = AwsSettings(profile="flywheel-dev", region="us-east-1", lock_table="omc-flywheel-dev-locks")


def _table() -> None:
    boto3.client("dynamodb").create_table(
        TableName="omc-flywheel-dev-locks",
        KeySchema=[{"AttributeName": "lock_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "lock_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _item() -> dict[str, Any]:
    item: dict[str, Any] = boto3.client("dynamodb").get_item(
        TableName="omc-flywheel-dev-locks", Key={"lock_id": {"S": "db-refresh/dev"}}
    )["Item"]
    return item


def _lock(**options: Any) -> AwsRunLock:
    return AwsRunLock(AWS, "db-refresh", "dev", **options)


def test_one_holder_at_a_time_and_the_refusal_names_it(aws: MotoServer) -> None:
    _table()
    first = _lock(heartbeat_seconds=0).acquire(command="run")
    first.update(run_id=41, command="run")
    holder = first.holder()
    assert holder is not None and holder.run_id == 41 and holder.command == "run" and holder.pid > 0
    with pytest.raises(RunLocked) as refused:
        _lock().acquire(command="resume")
    assert f"{holder.user}@{holder.host}" in refused.value.message and "run 41" in refused.value.message
    assert refused.value.fix
    first.release()
    assert first.holder() is None
    with _lock(heartbeat_seconds=0).acquire(command="resume") as second:
        assert second.took_over is None  # released cleanly: nothing taken over
        item = _item()
        assert {"token", "user", "host", "pid", "since", "expires_at", "heartbeat_at"} <= set(item)
    assert _lock().holder() is None


def test_a_dead_holder_is_taken_over_after_its_lease(aws: MotoServer) -> None:
    _table()
    dead = _lock(lease_seconds=1, heartbeat_seconds=0).acquire(command="run")  # never renews: "dies"
    with pytest.raises(RunLocked):
        _lock(check_account=False).acquire()
    expires = int(_item()["expires_at"]["N"])  # whole seconds, never earlier than since + lease
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    assert dead.holder() is None
    with _lock(heartbeat_seconds=0).acquire(command="resume") as successor:
        assert successor.took_over is not None and successor.took_over.command == "run"
        with pytest.raises(RunLocked):  # the old holder finds out instead of overwriting the new one
            dead.update(run_id=5)
        assert dead.lost.is_set()
        assert successor.holder() is not None
    dead.release()  # not ours any more: does not delete the successor's item (already released here)


def test_the_heartbeat_keeps_a_live_holder(aws: MotoServer) -> None:
    _table()
    with _lock(lease_seconds=2, heartbeat_seconds=0.2).acquire(command="run"):
        time.sleep(2.5)
        with pytest.raises(RunLocked):
            _lock().acquire()


def test_errors_say_what_to_do(aws: MotoServer) -> None:
    with pytest.raises(BackendError) as missing:
        _lock().acquire()
    assert "does not exist" in missing.value.message and "Terraform" in (missing.value.fix or "")
    with pytest.raises(UsageError):
        AwsRunLock(AwsSettings(), "db-refresh", "dev")
    assert lock_for(AwsSettings(), "db-refresh", "dev") is None
    assert isinstance(lock_for(AWS, "db-refresh", "dev"), AwsRunLock)


def test_the_account_guard_runs_before_the_lock_is_taken(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _table()
    wrong = AwsSettings(profile="flywheel-dev", account_id="210987654321", lock_table="omc-flywheel-dev-locks")
    with pytest.raises(BackendError) as account:
        AwsRunLock(wrong, "db-refresh", "dev").acquire()
    assert "210987654321" in account.value.message and "123456789012" in account.value.message
    monkeypatch.setenv("AWS_PROFILE", "flywheel-prod")
    with pytest.raises(BackendError) as profile:
        _lock().acquire()
    assert "flywheel-prod" in profile.value.message
    assert _lock().holder() is None  # nothing was written
