"""How flywheel talks to AWS for one environment: that environment's profile and region, retries that
survive throttling, and a guard that we are in the right account before anything runs.

The environment's configured profile and account are authoritative. A shell exported for another
environment (`AWS_PROFILE=flywheel-dev` while running `--env prod`) is an error, not a silent switch:
the runbook's worst day is refreshing prod from a dev shell or the reverse.

Endpoints: botocore honours `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_<SERVICE>`) itself; the tests
point it at a moto server. boto3 is imported inside functions only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flywheel.errors import BackendError, UsageError
from flywheel.spec import AwsSettings, EnvironmentSpec

RETRY_MODE = "adaptive"
"""Client-side rate limiting plus exponential backoff on throttling and transient errors."""

RETRY_ATTEMPTS = 10


@dataclass(frozen=True)
class Identity:
    """Who `sts get-caller-identity` says we are (never credentials)."""

    account: str
    arn: str


def aws_settings(env: EnvironmentSpec, env_name: str) -> AwsSettings:
    """The environment's AWS settings, or a usage error naming what to add to project.yaml."""
    if env.aws is None:
        raise UsageError(
            f"environment {env_name!r} has no `aws:` settings",
            fix=f"add an `aws:` block (profile, region, s3_root, ...) to environments.{env_name} in project.yaml",
        )
    return env.aws


def check_profile(aws: AwsSettings, env_name: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a shell whose `AWS_PROFILE` names another profile than the environment's."""
    environ = os.environ if environ is None else environ
    active = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE")
    if aws.profile and active and active != aws.profile:
        raise BackendError(
            f"AWS_PROFILE is {active!r} but environment {env_name!r} uses profile {aws.profile!r}",
            fix=f"unset AWS_PROFILE (flywheel uses {aws.profile!r} for {env_name} by itself), "
            f"or pick the environment that matches {active!r}",
        )


_LOADER: list[Any] = []
"""botocore's service-model loader, shared by the sessions of this process: the models are read-only
JSON, and loading them again for every session costs a few hundred milliseconds per service."""


def boto_session(aws: AwsSettings) -> Any:
    """A boto3 session on the environment's profile and region (an explicit profile ignores env keys)."""
    import boto3
    import botocore.session
    from botocore.exceptions import ProfileNotFound

    core = botocore.session.get_session()
    if _LOADER:
        core.register_component("data_loader", _LOADER[0])
    else:
        _LOADER.append(core.get_component("data_loader"))
    try:
        session = boto3.Session(botocore_session=core, profile_name=aws.profile, region_name=aws.region)
        paths = _LOADER[0].search_paths  # boto3 appends its data folder for every session: keep it once
        paths[:] = list(dict.fromkeys(paths))
        return session
    except ProfileNotFound:
        raise BackendError(
            f"the AWS profile {aws.profile!r} is not configured on this machine",
            fix=f"configure it (`aws configure sso --profile {aws.profile}` or ~/.aws/config), "
            f"then `aws sso login --profile {aws.profile}`",
        ) from None


def make_client(
    aws: AwsSettings,
    service: str,
    *,
    session: Any = None,
    max_attempts: int = RETRY_ATTEMPTS,
    mode: str = RETRY_MODE,
) -> Any:
    """A client with botocore's own retries (`adaptive` by default; `max_attempts=1` disables them)."""
    from botocore.config import Config

    config = Config(retries={"max_attempts": max_attempts, "mode": mode}, user_agent_extra="flywheel")
    return (session or boto_session(aws)).client(service, config=config)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore `ClientError` (`ThrottlingException`, ...), else the class name."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        message = response.get("Error", {}).get("Message")
        if message:
            return str(message)
    return str(exc)


ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"})
EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException"})


def caller_identity(aws: AwsSettings, env_name: str, *, session: Any = None) -> Identity:
    """`sts get-caller-identity` for the environment's profile, with login hints on failure."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        body = make_client(aws, "sts", session=session, max_attempts=3).get_caller_identity()
    except NoCredentialsError:
        raise BackendError(
            f"no AWS credentials for environment {env_name!r}",
            fix=f"log in: `aws sso login --profile {aws.profile}`" if aws.profile else "configure AWS credentials",
        ) from None
    except ClientError as exc:
        code = error_code(exc)
        fix = f"log in again: `aws sso login --profile {aws.profile}`" if code in EXPIRED else None
        raise BackendError(f"cannot tell which AWS account this is ({code}: {error_message(exc)})", fix=fix) from None
    except BotoCoreError as exc:
        raise BackendError(f"cannot reach AWS STS: {exc}", fix="check the network and the region") from None
    return Identity(account=str(body["Account"]), arn=str(body["Arn"]))


def check_account(
    aws: AwsSettings, env_name: str, *, session: Any = None, environ: Mapping[str, str] | None = None
) -> Identity:
    """The account guard: the right profile and, when configured, the right account; else `BackendError`.

    Call it before anything runs against an AWS environment (the Glue executor, the AWS lock and the
    preflight all do).
    """
    check_profile(aws, env_name, environ)
    identity = caller_identity(aws, env_name, session=session)
    if aws.account_id and identity.account != aws.account_id:
        raise BackendError(
            f"these credentials are for AWS account {identity.account}, but environment {env_name!r} is "
            f"account {aws.account_id}",
            fix=f"use the profile of {env_name} ({aws.profile or 'see project.yaml'}); never run one "
            "environment with another's credentials",
        )
    return identity
