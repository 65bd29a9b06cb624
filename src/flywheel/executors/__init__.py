"""Executors: where a step attempt runs (a local subprocess, in-process, an AWS Glue job run).

The factory lives here, above the implementations, so that `base` (the contract every executor meets)
imports none of them and none of them imports the factory.
"""

from __future__ import annotations

from typing import Any

from flywheel.executors.base import Executor


def create_executor(name: str, **options: Any) -> Executor:
    """Executors are imported lazily: `import flywheel` never imports boto3.

    `options` are for executors that need the run's context: the Glue executor takes `spec`, `env_name`
    and `env` (its Glue job names and AWS settings); the local executors ignore them.
    """
    if name == "subprocess":
        from flywheel.executors.local import SubprocessExecutor

        env = options.get("env")
        return SubprocessExecutor(preload=tuple(getattr(env, "preload", ()) or ()))
    if name == "inprocess":
        from flywheel.executors.local import InProcessExecutor

        return InProcessExecutor()
    if name == "glue":
        from flywheel.executors.glue import GlueExecutor

        return GlueExecutor(**options)
    raise ValueError(f"unknown executor {name!r}")
