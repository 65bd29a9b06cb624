"""AWS fixtures: one moto server per test session (per xdist worker), reset before every test.

`aws` points botocore at the server through the environment alone (`AWS_ENDPOINT_URL`, dummy keys,
profiles `flywheel-dev` and `flywheel-prod` in a throwaway config file), so flywheel's own code, and
`flywheel` subprocesses started by a test, reach moto exactly as they would reach AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.moto_server import MotoServer, start_moto_server

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account for unknown access keys
PROFILES = ("flywheel-dev", "flywheel-prod")
OPERATOR_KEY = "flywheel-operator"
"""The access key of the profiles: calls signed with it are flywheel's own (test setup signs `testing`)."""


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    log = tmp_path_factory.mktemp("moto") / "moto-server.log"
    server = start_moto_server(log_path=log)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto (no resources, no Glue outcome rules) and an environment that points at it."""
    moto_server.reset()
    config = tmp_path / "aws-config"
    config.write_text(
        "".join(
            f"[profile {name}]\nregion = {REGION}\naws_access_key_id = {OPERATOR_KEY}\naws_secret_access_key = x\n\n"
            for name in PROFILES
        )
        + f"[default]\nregion = {REGION}\n"
    )
    credentials = tmp_path / "aws-credentials"
    credentials.write_text("")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_server
