"""An untidy machine: bad definitions, bad values, odd homes. Each ends in a clear error, never a traceback.

Every case: a message naming the problem and the fix, exit 2 (usage or definition) or 3 (environment),
no Python traceback, and nothing journaled or lost.
"""

from __future__ import annotations

import gzip
import html
import os
import random
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from flywheel.journal import check_journal
from flywheel.params import resolve_params
from flywheel.spec import BUILTIN_PIPELINES, EnvironmentSpec, load_project
from tests.conftest import Sandbox, step

pytestmark = pytest.mark.e2e


def clean_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert "fix:" in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{result.stderr}"


@pytest.fixture
def tiny(sandbox: Sandbox) -> Sandbox:
    sandbox.write([step("a", 1, outputs=["{out}/a.txt"]), step("b", 2, ["a"], outputs=["{out}/b.txt"])])
    return sandbox


def test_a_definition_with_one_byte_that_is_not_utf8_names_the_byte(tiny: Sandbox) -> None:
    text = tiny.pipeline.read_bytes()
    at = text.index(b"title")
    tiny.pipeline.write_bytes(text[:at] + b"\xe9" + text[at:])  # a Latin-1 "é" pasted in
    clean_error(tiny.cli("validate", "pipeline.yaml"), 2, f"not UTF-8 at byte {at}", "save the file as UTF-8")
    clean_error(tiny.cli("run", "pipeline.yaml"), 2, f"not UTF-8 at byte {at}")
    assert not (tiny.home / "journal.sqlite").exists()


def test_a_key_written_twice_is_rejected_with_both_lines(tiny: Sandbox) -> None:
    lines = tiny.pipeline.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("pipeline:"))
    lines.insert(first + 1, "pipeline: other")  # the second would silently win
    tiny.pipeline.write_text("\n".join(lines) + "\n")
    clean_error(
        tiny.cli("validate", "pipeline.yaml"),
        2,
        f"pipeline: written twice, on lines {first + 1} and {first + 2}",
    )


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("a.memory=lots", "'lots' is not a valid memory"),
        ("a.timeout=0", "a timeout must be longer than 0"),
        ("a.workers=-5", "'-5' is not a valid workers"),
        ("a.threads=many", "'many' is not a valid threads"),
        ("a.worker_type=huge", "'huge' is not a valid worker_type"),
        ("nope.timeout=1h", "--set names unknown step 'nope'"),
    ],
)
def test_a_bad_set_value_is_refused_before_anything_runs(tiny: Sandbox, setting: str, named: str) -> None:
    clean_error(tiny.cli("run", "pipeline.yaml", "--set", setting), 2, named)
    assert tiny.executions() == []
    assert not (tiny.home / "journal.sqlite").exists()


def test_a_home_that_is_a_file_or_mistyped_is_named_and_nothing_is_created(tiny: Sandbox) -> None:
    a_file = tiny.root / "home-file"
    a_file.write_text("not a folder")
    clean_error(tiny.cli("run", "pipeline.yaml", "--home", str(a_file)), 3, "is a file, not a folder")
    clean_error(tiny.cli("status", "-p", "pipeline.yaml", "--home", str(a_file)), 3, "is a file, not a folder")
    assert a_file.read_text() == "not a folder"

    typo = tiny.root / "hmoe"
    for command in (["status"], ["runs"], ["logs", "1"]):
        clean_error(tiny.cli(*command, "-p", "pipeline.yaml", "--home", str(typo)), 2, f"no flywheel journal at {typo}")
    assert not typo.exists()


def test_a_read_only_journal_still_answers_questions_and_refuses_writes_cleanly(tiny: Sandbox) -> None:
    tiny.cli("run", "pipeline.yaml", check=True)
    journal = tiny.home / "journal.sqlite"
    before = journal.read_bytes()
    subprocess.run(["chattr", "+i", str(journal)], check=True)  # immutable even for root (ext4, xfs, btrfs)
    try:
        assert tiny.cli("status", "-p", "pipeline.yaml").returncode == 0
        assert tiny.cli("runs", "-p", "pipeline.yaml").returncode == 0
        clean_error(tiny.cli("run", "pipeline.yaml"), 3, "is read-only", "chattr -i")
    finally:
        subprocess.run(["chattr", "-i", str(journal)], check=True)
    assert journal.read_bytes() == before


def test_a_damaged_journal_is_refused_cleanly_checked_and_restored_from_the_backup_of_the_last_run(
    tiny: Sandbox,
) -> None:
    from flywheel.events import RunStarted, StepSucceeded
    from flywheel.journal import open_journal

    tiny.cli("run", "pipeline.yaml", check=True)  # run 1 ends with a backup of the journal
    assert len(list((tiny.home / "backups").glob("journal-*.sqlite"))) == 1
    with open_journal(tiny.home) as journal:  # a long history, so that a page in the middle holds events
        run = journal.new_run("tiny", "local")
        journal.append(RunStarted(run_id=run, at=1.0, pipeline="tiny", env="local"))
        for i in range(3000):
            journal.append(StepSucceeded(run_id=run, at=2.0 + i, step="a", context=None, outputs=({"n": i},)))
    path = tiny.home / "journal.sqlite"
    size = path.stat().st_size
    noise = random.Random(19).randbytes(64 * 1024)
    with path.open("r+b") as handle:  # `dd` noise over 16 pages in the middle of the file, where events are
        handle.seek(size // 2 // 4096 * 4096)
        handle.write(noise)

    for command in (["status", "2"], ["resume", "2"]):
        clean_error(tiny.cli(*command, "-p", "pipeline.yaml"), 3, "journal", "flywheel journal restore")
    clean_error(tiny.cli("journal", "check"), 3, "is damaged")

    restored = tiny.cli("journal", "restore")
    assert restored.returncode == 0, restored.stderr
    assert "runs in the backup: 1" in restored.stdout
    assert "journal.sqlite.damaged-" in restored.stdout
    assert tiny.cli("journal", "check").returncode == 0
    assert [r["run_id"] for r in tiny.json("runs", "-p", "pipeline.yaml")] == [1]
    assert list(tiny.home.glob("journal.sqlite.damaged-*"))  # the damaged file is kept, never deleted


def test_validate_finds_every_job_without_running_it(tiny: Sandbox) -> None:
    (tiny.root / "local_jobs.py").write_text(
        "raise SystemExit('imported: validate must not run job modules')\n\ndef build(invocation):\n    pass\n"
    )
    tiny.write(
        [
            step("a", 1, job="tests.support.jobs:record"),
            step("b", 2, ["a"], job="local_jobs:build"),  # beside pipeline.yaml: found, not imported
            step("c", 3, ["b"], job="tests.support.jobz:record"),  # a typo in the module
            step("d", 4, ["c"], job="tests.support.jobs:recrod"),  # a typo in the function
        ]
    )
    result = tiny.cli("validate", "pipeline.yaml")
    clean_error(result, 2, "2 job(s) of tiny cannot be found", "tests.support.jobz:record", "defines no 'recrod'")
    assert "local_jobs" not in result.stderr


def test_a_shadowing_module_in_the_working_folder_does_not_break_the_steps(tiny: Sandbox) -> None:
    for name in ("types", "random", "logging"):  # each would break every step if it came before the stdlib
        (tiny.root / f"{name}.py").write_text("raise SystemExit('a module of the working folder was imported')\n")
    (tiny.root / "local_jobs.py").write_text(
        "from tests.support.jobs import record\n\ndef build(invocation):\n    return record(invocation)\n"
    )
    tiny.write([step("a", 1, outputs=["{out}/a.txt"]), step("b", 2, ["a"], job="local_jobs:build")])
    console_script = str(Path(sys.executable).parent / "flywheel")  # what an operator types: `flywheel run`
    env = {**os.environ, "FLYWHEEL_HOME": str(tiny.home), "NO_COLOR": "1"}
    for fork_server in ("1", "0"):
        run = subprocess.run(
            [console_script, "run", "pipeline.yaml"],
            cwd=tiny.root,
            env={**env, "FLYWHEEL_FORKSERVER": fork_server},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    assert tiny.executions() == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]


def db_refresh_with_tiny_data(project: Path, home: Path) -> Sandbox:
    """A copy of the db-refresh definition in `project`, and 400 rows of sample data in `home`."""
    project.mkdir()
    for name in ("pipeline.yaml", "project.yaml"):
        shutil.copy(BUILTIN_PIPELINES / "db_refresh" / name, project / name)
    sandbox = Sandbox(root=project, home=home)
    sandbox.cli("data", "generate", "--rows", "400", "--seed", "11", "--root", str(home / "data" / "raw"), check=True)
    return sandbox


@pytest.mark.parametrize("home_name", ["it's home", "h{env}-{x}-{"], ids=["quote", "braces"])
def test_a_home_with_a_quote_or_braces_is_a_path_never_sql_or_a_template(tmp_path: Path, home_name: str) -> None:
    """A quote must not end a DuckDB string; `{env}` must not become `local` ({x} and a stray `{` stay as written)."""
    home = tmp_path / home_name
    sandbox = db_refresh_with_tiny_data(tmp_path / "project", home)
    sandbox.cli("run", "pipeline.yaml", timeout=300, check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([home_name, "project"])  # no other folder made
    assert list((home / "data" / "split_part" / "addressable_ids").glob("*/*.parquet"))
    assert (home / "data" / "reports" / "data_monitor" / "metrics.json").is_file()


def test_parameters_expand_templates_once_and_keep_values_as_written() -> None:
    """The definition's templates chain (`raw_root` -> `data_root` -> `home`); what they take in is data."""
    project = load_project("db-refresh")
    spec, key, local = project.spec, project.spec.keys[0], project.config.environment("local")
    params = resolve_params(spec, key, "local", local, "/srv/h{env}{raw_root}")
    assert params["raw_root"] == "/srv/h{env}{raw_root}/data/raw"
    assert params["raw_inputs"] == ["/srv/h{env}{raw_root}/data/raw/addressable_ids"]
    looped = EnvironmentSpec(engine="duckdb", settings={"a": "{b}/x", "b": "{a}/y", "odd": "{ {0} {a.b}"})
    found = resolve_params(spec, key, "local", looped, "/h")
    assert (found["a"], found["b"], found["odd"]) == ("{a}/y/x", "{a}/y", "{ {0} {a.b}")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is empty"),  # a delivery that stopped before its first byte
        (gzip.compress(b""), "is empty"),  # a gzip stream of nothing
        (gzip.compress(b"\n"), "starts with a blank line instead of the header"),
    ],
    ids=["zero-bytes", "empty-gzip", "blank-line"],
)
def test_an_empty_csv_gz_is_called_empty_not_a_schema_change(tmp_path: Path, content: bytes, said: str) -> None:
    home = tmp_path / "home"
    sandbox = db_refresh_with_tiny_data(tmp_path / "project", home)
    empty = home / "data" / "raw" / "addressable_ids" / "addressable_ids_0001.csv.gz"
    empty.write_bytes(content)
    result = sandbox.cli("run", "pipeline.yaml", timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"addressable-split-and-part failed: empty-source: {empty} {said}" in result.stdout, result.stdout
    assert "columns do not match" not in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    (journaled,) = [s for s in sandbox.json("status", "1", "-p", "pipeline.yaml")["steps"] if s["status"] == "failed"]
    assert (journaled["key"], journaled["error_type"]) == ("addressable-split-and-part", "empty-source")


def _limited_to(size: int) -> Callable[[], None]:
    """A child's `preexec_fn`: no file it writes may grow over `size` bytes (CPython ignores SIGXFSZ,
    so the write fails with EFBIG, "File too large", as a full disk fails one with ENOSPC)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


LINEAR = [
    step(name, i + 1, list("abcdef"[i - 1 : i]), outputs=[f"{{out}}/{name}.txt"]) for i, name in enumerate("abcdef")
]


def test_a_journal_on_a_full_disk_stops_the_run_cleanly_and_a_resume_after_the_fix_completes(tiny: Sandbox) -> None:
    """The disk is made full for the run with RLIMIT_FSIZE on its process (inherited by its steps): that
    needs no privilege. This machine (root in a VM) also allows a small tmpfs (`mount -t tmpfs -o
    size=...`), which gives ENOSPC instead of EFBIG; SQLite reports both as a failed write, and the test
    must run where mounting is not allowed. 64 KiB lets the journal open (its -shm index takes 32 KiB)
    and fills its write-ahead log a few events into the run."""
    tiny.write(LINEAR)
    journal = tiny.home / "journal.sqlite"
    stopped = tiny.cli("run", "pipeline.yaml", preexec_fn=_limited_to(64 * 1024))
    clean_error(stopped, 3, f"the journal at {journal} cannot be written", "ulimit -f", "then `flywheel resume`")
    assert tiny.cli("journal", "check").returncode == 0  # nothing half-written
    for backup in (tiny.home / "backups").glob("*"):  # a backup cut short by the limit is never kept
        assert backup.suffix == ".sqlite" and check_journal(backup) == (), backup
    done_before = tiny.outputs()
    assert len(done_before) < 6, "the limit must stop the run before its end"

    resumed = tiny.cli("resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(tiny.outputs()) == [f"{n}.txt" for n in "abcdef"]
    assert {k: v for k, v in tiny.outputs().items() if k in done_before} == done_before


@pytest.mark.parametrize("fork_server", ["1", "0"])
def test_a_step_whose_log_fills_the_disk_fails_as_disk_full_and_resumes_after_the_fix(
    tiny: Sandbox, monkeypatch: pytest.MonkeyPatch, fork_server: str
) -> None:
    """A step that prints 2 MiB under a 1 MiB file-size limit (RLIMIT_FSIZE, as above): the journal
    still has room, so the run records the step as failed (exit 1: a step failed) with the cause named,
    not a crash of the step's code; the resume after lifting the limit is not held back as "nothing
    changed", since the fix is on the machine."""
    monkeypatch.setenv("FLYWHEEL_FORKSERVER", fork_server)
    (tiny.root / "chatty.py").write_text(
        "from tests.support.jobs import record\n\n"
        "def build(invocation):\n"
        "    for _ in range(2 * 1024 * 1024 // 64):\n"
        "        print('x' * 63)\n"
        "    return record(invocation)\n"
    )
    tiny.write([step("a", 1, outputs=["{out}/a.txt"], job="chatty:build"), step("b", 2, ["a"])])
    failed = tiny.cli("run", "pipeline.yaml", preexec_fn=_limited_to(1024 * 1024))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    assert "a failed after" in failed.stdout
    assert "DiskFull: the step's log or outputs could not be written (File too large)" in failed.stdout
    assert "may not write files over 1048576 bytes" in failed.stdout
    assert "cause: resource" in failed.stdout and "Free space on that disk or lift the limit" in failed.stdout

    resumed = tiny.cli("resume", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(tiny.outputs()) == ["a.txt", "b.txt"]  # b writes b.txt whether declared or not


def test_a_step_that_cannot_write_its_result_is_named_disk_full(tiny: Sandbox) -> None:
    """The job lowers its own process's file-size limit to 16 bytes: its work is done, but the small
    result file flywheel's step entry writes cannot be; the step exits with the code that says so."""
    (tiny.root / "cramped.py").write_text(
        "import resource\n\n"
        "def build(invocation):\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (16, resource.RLIM_INFINITY))\n"
    )
    tiny.write([step("a", 1, job="cramped:build")])
    failed = tiny.cli("run", "pipeline.yaml")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    log = tiny.home / "logs" / "run-1" / "a.attempt-1.log"
    assert f"DiskFull: the step could not write its result beside {log}" in failed.stdout, failed.stdout


SECRETS = {
    # the example key pair of the AWS docs ("Managing access keys for IAM users", AWS IAM User Guide)
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEXAMPLETOKEN+a/long&session=token" * 3,
    "PARTNER_API_TOKEN": "ptk-9f8e7d6c5b4a3928",  # listed under `secrets:` in project.yaml
    "TEAM_HOOK_URL": "https://hooks.example.test/services/T000/B000/hooktoken1234",  # a notifier's url_env
}


def test_a_job_that_prints_and_raises_its_secrets_shows_them_nowhere_flywheel_prints_journals_or_renders(
    tiny: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every secret flywheel knows is masked in the console, `status`, `logs`, `incident show`, the
    journal, `flywheel report`'s HTML and the dashboard's pages. The raw step log on disk keeps what the
    job printed (the docs say so)."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    (tiny.root / "leaky.py").write_text(
        "import os\n\nfrom flywheel.invocation import JobError\n\n"
        "def build(invocation):\n"
        f"    for name in {sorted(SECRETS)!r}:\n"
        "        print(name, '=', os.environ[name])\n"
        "    raise JobError(\n"
        "        'the partner refused ' + os.environ['PARTNER_API_TOKEN'] + ' signed with '\n"
        "        + os.environ['AWS_SECRET_ACCESS_KEY'] + ' for ' + os.environ['AWS_SESSION_TOKEN'],\n"
        "        error_type='PartnerRefused',\n"
        "    )\n"
    )
    tiny.write([step("a", 1, job="leaky:build", outputs=["{out}/a.txt"]), step("b", 2, ["a"])])
    hook = {"kind": "webhook", "url_env": "TEAM_HOOK_URL"}
    (tiny.root / "project.yaml").write_text(
        yaml.safe_dump(
            {
                "secrets": ["PARTNER_API_TOKEN"],
                "environments": {"local": {}, "dev": {"notifications": [hook]}},  # dev's hook is never called
            }
        )
    )

    def leaks(text: str) -> list[str]:
        return [name for name, value in SECRETS.items() if value in text or html.escape(value) in text]

    run = tiny.cli("run", "pipeline.yaml")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "PartnerRefused: the partner refused *** signed with *** for ***" in run.stdout
    shown = {"run": run.stdout + run.stderr}
    for command in (
        ["status", "1"],
        ["status", "1", "--json"],
        ["logs", "1"],
        ["incident", "show", "1"],
        ["incident", "show", "1", "--json"],
        ["runs"],
    ):
        result = tiny.cli(*command, "-p", "pipeline.yaml")
        assert result.returncode == 0, result.stderr
        shown[" ".join(command)] = result.stdout + result.stderr
    assert "AWS_SECRET_ACCESS_KEY = ***" in shown["logs 1"]
    tried = tiny.cli("try", "a", "-p", "pipeline.yaml")  # a scratch run, its log shown
    shown["try"] = tried.stdout + tried.stderr
    assert "AWS_SECRET_ACCESS_KEY = ***" in shown["try"], shown["try"]
    assert tiny.cli("report", "1", "-p", "pipeline.yaml", "-o", str(tiny.root / "r.html")).returncode == 0
    shown["report"] = (tiny.root / "r.html").read_text()
    assert "AWS_SECRET_ACCESS_KEY = ***" in shown["report"]
    shown["journal"] = b"".join(p.read_bytes() for p in tiny.home.glob("journal.sqlite*")).decode("latin-1")

    from tests.ui.conftest import serve_in_thread

    with serve_in_thread(tiny.home) as server:
        client = server.client()
        for path in ("/runs", "/runs/1", "/runs/1/plan", "/runs/1/incident", "/incidents/1", "/runs/1/step?key=a"):
            page = client.get(path)
            assert page.status == 200, (path, page.body)
            shown[path] = page.body
        log = client.get("/runs/1/logs/a.attempt-1.log")
        shown["raw log"] = log.body
    assert "AWS_SECRET_ACCESS_KEY = ***" in shown["raw log"] and "*** signed with ***" in shown["/runs/1"]
    assert "AWS_SECRET_ACCESS_KEY = ***" in shown["/runs/1/step?key=a"]  # the step panel's log tail

    assert {where: leaks(text) for where, text in shown.items() if leaks(text)} == {}
    assert leaks((tiny.home / "logs" / "run-1" / "a.attempt-1.log").read_text()) == sorted(SECRETS)  # as printed
