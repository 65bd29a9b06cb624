"""`make demo`: the db-refresh story an on-call engineer lives through, on this machine, in a minute.

Generates sample data, runs db-refresh with a realistic step-5 failure (an invalid match-key type in
the ER schema-mapping configuration), shows the status, repairs the configuration, previews and runs
the resume (steps 1-4 reused, time saved shown), and says where the reports and the catalog are.
Every command is a real `flywheel` command, printed before it runs, so the demo is also a tutorial.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

console = Console(highlight=False, soft_wrap=True)

DEMO_ROWS = int(os.environ.get("FLYWHEEL_DEMO_ROWS", "1000000"))  # about a minute on 2 cores
BAD_MAPPING = """\
# ER schema mapping overrides (read by step 5, create-part-addressable-ids-er-table).
# Typo on purpose: AWS Entity Resolution calls this type EMAIL_ADDRESS.
fields:
  hashed_email: EMAIL
"""
GOOD_MAPPING = BAD_MAPPING.replace("EMAIL\n", "EMAIL_ADDRESS\n").replace("# Typo on purpose", "# Fixed")


def flywheel(home: Path, *args: str, expect: int | None = 0) -> int:
    console.print(f"\n[bold cyan]$ flywheel {shlex.join(args)}[/]")
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    code = subprocess.call([sys.executable, "-m", "flywheel", *args], env=env)
    if expect is not None and code != expect:
        console.print(f"[red]demo: `flywheel {shlex.join(args)}` exited {code}, expected {expect}[/]")
        sys.exit(code or 1)
    return code


def main() -> None:
    home = Path(os.environ.get("FLYWHEEL_DEMO_HOME", ".flywheel/demo")).resolve()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    config = home / "data" / "config" / "er-schema-mapping.yaml"

    console.print(Rule("1. sample data"))
    flywheel(home, "data", "generate", "--rows", str(DEMO_ROWS), "--seed", "7", "--root", str(home / "data" / "raw"))

    console.print(Rule("2. the nightly db-refresh, with a bad ER schema mapping"))
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(BAD_MAPPING)
    console.print(f"(wrote {config} with `hashed_email: EMAIL`, a type AWS Entity Resolution does not have)")
    flywheel(home, "run", "db-refresh", expect=1)

    console.print(Rule("3. on call: what happened?"))
    flywheel(home, "status")

    console.print(Rule("4. fix the root cause, preview the resume, resume"))
    config.write_text(GOOD_MAPPING)
    console.print(f"(fixed {config}: `hashed_email: EMAIL_ADDRESS`)")
    flywheel(home, "resume", "--dry-run")
    flywheel(home, "resume")

    console.print(Rule("5. where things are"))
    reports = home / "data" / "reports"
    console.print(f"journal:   {home / 'journal.sqlite'}   (flywheel runs · flywheel status RUN)")
    console.print(f"catalog:   {home / 'catalog.duckdb'}   (duckdb {home / 'catalog.duckdb'})")
    for page in sorted(reports.rglob("*.html")) if reports.exists() else []:
        if "history" not in page.parts:
            console.print(f"report:    {page}")
    console.print(f"logs:      {home / 'logs'}   (flywheel logs RUN --step 5)")
    console.print(f"\ntry it yourself:  export FLYWHEEL_HOME={home}; flywheel runs")


if __name__ == "__main__":
    main()
