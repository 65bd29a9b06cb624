"""What one command works on: a project, an environment and a home.

Settings resolve once: `--home` beats `$FLYWHEEL_HOME` beats `./.flywheel`; `--env` beats
`$FLYWHEEL_ENV` beats the project's default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flywheel.journal import Journal, open_journal
from flywheel.lock import Lock, RunLock
from flywheel.spec import PipelineSpec, Project, load_project

DEFAULT_HOME = ".flywheel"


def resolve_home(home: str | Path | None = None) -> Path:
    """`--home` beats `$FLYWHEEL_HOME` beats `./.flywheel`."""
    chosen = home or os.environ.get("FLYWHEEL_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Session:
    """A project, an environment and a home: everything one command works on."""

    project: Project
    env_name: str
    home: Path

    @property
    def spec(self) -> PipelineSpec:
        return self.project.spec

    @property
    def pipeline(self) -> str:
        return self.project.spec.pipeline

    def journal(self, *, create: bool = True) -> Journal:
        """The home's journal; `create=False` for commands that only read (a mistyped home says so)."""
        return open_journal(self.home, create=create)

    def lock(self) -> Lock:
        """A kernel lock in the home, or for AWS environments with a lock table one in DynamoDB, so
        that operators on different machines cannot run the same pipeline and environment at once."""
        env = self.project.config.environment(self.env_name)
        if env.executor == "glue" and env.aws is not None and env.aws.lock_table:
            from flywheel.aws.lock import AwsRunLock

            return AwsRunLock(env.aws, self.pipeline, self.env_name)
        return RunLock(self.home, self.pipeline, self.env_name)


def open_session(
    pipeline: str | None = None,
    env: str | None = None,
    home: str | Path | None = None,
    *,
    run_id: int | None = None,
) -> Session:
    """Open what a command works on. Given a run id, the run itself says its pipeline and environment."""
    if run_id is not None and pipeline is None:
        resolved_home = resolve_home(home)
        with open_journal(resolved_home, create=False) as journal:
            journal.run(run_id)
            started = journal.run_started(run_id)
        if started is not None and started.definition and Path(started.definition).exists():
            pipeline = started.definition
        if started is not None and env is None:
            env = started.env
    project = load_project(pipeline)
    env_name = env or os.environ.get("FLYWHEEL_ENV") or project.config.default_env
    project.config.environment(env_name)  # unknown env: clear error now
    return Session(project=project, env_name=env_name, home=resolve_home(home))
