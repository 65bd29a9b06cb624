"""CLI of the Glue side: `flywheel aws package` (what Glue runs) and `flywheel check --env ENV` (preflight).

`flywheel aws package` builds into `dist/glue/`:

- `omc_flywheel-<version>-py3-none-any.whl`: the `flywheel` package for `--additional-python-modules`.
  It declares no dependencies on purpose: the job path (`flywheel.aws.glue_entry` → `flywheel.entry`
  → the db-refresh job modules) needs only the standard library plus what Glue 5.0 ships (pyspark,
  boto3), so pip never reaches the internet (Glue jobs in a private subnet cannot). Glue 5.0 only: the
  code needs Python 3.11, and Glue 4.0 runs Python 3.10 ("AWS Glue versions", Glue developer guide).
- `flywheel-<version>.zip`: the same package for `--extra-py-files` (no pip at all).
- `flywheel_glue_entry.py`: the `ScriptLocation` every db-refresh Glue job runs.
- `glue-job.json`: the artifact names and the `DefaultArguments` a Glue job needs, for Terraform.

With `--upload --env dev` the files go to `{s3_root}/_flywheel/glue/<version>/` with the env's profile.
No build tool is needed: a pure-Python wheel is a zip with a `dist-info` folder (PEP 427).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from flywheel.errors import ExitCode

app = typer.Typer(help="The AWS side: package what Glue runs.", no_args_is_help=True)

DIST_NAME = "omc_flywheel"
ENTRY_NAME = "flywheel_glue_entry.py"
MANIFEST_NAME = "glue-job.json"
GLUE_VERSION = "5.0"
"""The Glue version the package runs on (Python 3.11): Terraform's `glue_version` and glue-job.json say it."""
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # reproducible archives: same sources, same bytes


@dataclass(frozen=True)
class GluePackage:
    wheel: Path
    zip: Path
    entry: Path
    manifest: Path
    version: str

    def default_arguments(self, prefix: str) -> dict[str, str]:
        """The Glue job arguments that load flywheel from `prefix` (an s3:// folder)."""
        base = prefix.rstrip("/")
        return {
            "--additional-python-modules": f"{base}/{self.wheel.name}",
            "--python-modules-installer-option": "--no-deps",
            "--enable-continuous-cloudwatch-log": "false",
            "--job-language": "python",
        }


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omc-flywheel")
    except PackageNotFoundError:
        return "0+unknown"


def _package_files(root: Path) -> list[tuple[Path, str]]:
    """(file, archive name) of the flywheel package: sources, YAML and templates, no caches."""
    out = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        out.append((path, f"flywheel/{path.relative_to(root).as_posix()}"))
    return out


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_glue_package(out_dir: Path, *, package_root: Path | None = None) -> GluePackage:
    """Build the wheel, the zip, the entry script and the manifest into `out_dir` (replacing them)."""
    import flywheel
    from flywheel.aws.glue_entry import ENTRY_SCRIPT

    root = package_root or Path(flywheel.__file__).resolve().parent
    version = package_version()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [(name, path.read_bytes()) for path, name in _package_files(root)]

    wheel = out_dir / f"{DIST_NAME}-{version}-py3-none-any.whl"
    dist_info = f"{DIST_NAME}-{version}.dist-info"
    metadata = (
        f"Metadata-Version: 2.1\nName: omc-flywheel\nVersion: {version}\n"
        "Summary: flywheel job code for AWS Glue (no dependencies: Glue provides pyspark and boto3)\n"
    ).encode()
    wheel_meta = b"Wheel-Version: 1.0\nGenerator: flywheel aws package\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries = [*files, (f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel_meta)]
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    staging = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(staging, "w") as archive:
        for name, data in entries:
            _write(archive, name, data)
        _write(archive, f"{dist_info}/RECORD", record.encode())
    staging.replace(wheel)

    plain = out_dir / f"flywheel-{version}.zip"
    staging = plain.with_suffix(".tmp")
    with zipfile.ZipFile(staging, "w") as archive:
        for name, data in files:
            _write(archive, name, data)
    staging.replace(plain)

    entry = out_dir / ENTRY_NAME
    entry.write_text(ENTRY_SCRIPT)
    package = GluePackage(wheel=wheel, zip=plain, entry=entry, manifest=out_dir / MANIFEST_NAME, version=version)
    manifest = {
        "version": version,
        "glue_version": GLUE_VERSION,
        "wheel": wheel.name,
        "zip": plain.name,
        "script": entry.name,
        "default_arguments": package.default_arguments("s3://BUCKET/_flywheel/glue/" + version),
        "alternative": {"--extra-py-files": f"s3://BUCKET/_flywheel/glue/{version}/{plain.name}"},
    }
    package.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    return package


def upload_glue_package(package: GluePackage, s3_root: str, *, client: object) -> str:
    """Upload the artifacts under `{s3_root}/_flywheel/glue/<version>/`; returns that prefix."""
    from flywheel.aws.s3 import parse_s3_uri

    prefix = parse_s3_uri(s3_root.rstrip("/") + f"/_flywheel/glue/{package.version}")
    for path in (package.wheel, package.zip, package.entry):
        client.upload_file(str(path), prefix.bucket, f"{prefix.key}/{path.name}")  # type: ignore[attr-defined]
    arguments = package.default_arguments(str(prefix))
    client.put_object(  # type: ignore[attr-defined]
        Bucket=prefix.bucket,
        Key=f"{prefix.key}/{MANIFEST_NAME}",
        Body=json.dumps({"version": package.version, "default_arguments": arguments}, indent=2).encode(),
    )
    return str(prefix)


@app.command()
def package(
    out: Annotated[Path, typer.Option("--out", help="Where to build.")] = Path("dist/glue"),
    upload: Annotated[bool, typer.Option("--upload", help="Also upload to the env's s3_root.")] = False,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Environment to upload for.", envvar="FLYWHEEL_ENV")
    ] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="Pipeline name or path.")] = None,
) -> None:
    """Build the wheel, zip and entry script that every db-refresh Glue job runs (into dist/glue/)."""
    from rich.console import Console

    console = Console(highlight=False)
    built = build_glue_package(out)
    for path in (built.wheel, built.zip, built.entry, built.manifest):
        console.print(f"built {path}")
    if not upload:
        return
    from flywheel import api
    from flywheel.aws.session import aws_settings, boto_session, check_account, make_client
    from flywheel.errors import UsageError

    session = api.open_session(pipeline, env)
    aws = aws_settings(session.project.config.environment(session.env_name), session.env_name)
    if not aws.s3_root:
        raise UsageError(f"environment {session.env_name} has no aws.s3_root to upload to", fix="add s3_root")
    boto = boto_session(aws)
    check_account(aws, session.env_name, session=boto)
    prefix = upload_glue_package(built, aws.s3_root, client=make_client(aws, "s3", session=boto))
    console.print(f"uploaded to {prefix}/ (point the Glue jobs' DefaultArguments at it: {prefix}/{MANIFEST_NAME})")


def check(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment to check.", envvar="FLYWHEEL_ENV")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="Pipeline name or path.")] = None,
    home: Annotated[Path | None, typer.Option("--home", envvar="FLYWHEEL_HOME")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Preflight an AWS environment: account, sources, catalog, Glue jobs, permissions, nothing running.

    Exit code 3 when a check fails.
    """
    from rich.console import Console

    from flywheel import api
    from flywheel.aws.preflight import describe, preflight

    console = Console(highlight=False)
    session = api.open_session(pipeline, env, home)
    report = preflight(
        session.spec,
        session.env_name,
        session.project.config.environment(session.env_name),
        home=str(session.home),
    )
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.print(f"preflight of {report.pipeline} in {report.env}", style="bold")
        for line in describe(report):
            console.print(line, markup=False)
        console.print("ready" if report.ok else f"{len(report.failed)} check(s) failed", style="bold")
    if not report.ok:
        raise typer.Exit(int(ExitCode.BACKEND))
