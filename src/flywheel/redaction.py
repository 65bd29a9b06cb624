"""Secret values flywheel knows, and the redactor that masks them in everything it journals, prints,
renders and sends (as CI systems mask secrets).

flywheel knows a secret by the environment variable that holds it: the AWS credentials, the variables
notifier settings name (`url_env`, `password_env`), and those a project lists under `secrets:` in
project.yaml. Raw step logs on disk are the job's own output and keep what it printed; whatever
flywheel shows of them passes the redactor.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence

from flywheel.spec import ProjectConfig

AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
MASK = "***"


class Redactor:
    """Masks secret values wherever they could leak: messages, errors, log lines, HTML pages."""

    def __init__(self, secrets: Sequence[str | None] = ()) -> None:
        # values under 4 characters are not secrets worth the name, and masking them would garble every
        # message; each value also in its HTML-escaped spelling (a token with `&` or `+` in a page)
        self._values = {s for s in secrets if s and len(s) >= 4}
        spelled = self._values | {html.escape(s) for s in self._values}
        self._secrets = sorted(spelled, key=len, reverse=True)  # longest first: a secret holding another

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def extend(self, *secrets: str | None) -> Redactor:
        return Redactor([*self._values, *secrets])


def secret_variables(config: ProjectConfig) -> list[str]:
    """The environment variables whose values a project's runs must never show, in a stable order."""
    names = {*AWS_SECRET_VARIABLES, *config.secrets}
    for env in config.environments.values():
        for notifier in env.notifications:
            names.update(n for n in (notifier.url_env, notifier.password_env) if n)
    return sorted(names)


def redactor_for(
    configs: Iterable[ProjectConfig], environ: Mapping[str, str], *, extra: Sequence[str | None] = ()
) -> Redactor:
    """A redactor for the secrets of these projects as `environ` holds them, and `extra` values."""
    names = sorted({name for config in configs for name in secret_variables(config)} | set(AWS_SECRET_VARIABLES))
    return Redactor([environ.get(name) for name in names] + list(extra))
