"""Incidents are read from the journal: a failed run opens one, a resume closes it with the time saved,
operator notes are journal events, and the same error met again shows the fix recorded the first time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel import api
from flywheel.events import IncidentNoted, StepSucceeded
from flywheel.executors import create_executor
from flywheel.incidents import (
    Cause,
    IncidentStatus,
    classify,
    find_incident,
    incidents,
    log_excerpt,
    note_incident,
    parse_since,
    signature,
    summarize,
)
from flywheel.planner import Mode, PlanRequest
from flywheel.spec import CauseRule, StepKey, StepSpec, load_pipeline
from tests.conftest import REPO, Sandbox, step

DB_REFRESH = load_pipeline(REPO / "src/flywheel/pipelines/db_refresh/pipeline.yaml")

MISSING = r"source file .* is missing|does not exist"
CAUSES = [
    {"match": MISSING, "cause": "data", "hint": "Re-deliver the source file, then resume."},
    {"match": "^InjectedFault: permission", "cause": "permission", "hint": "Grant the role access."},
]


def fan_out(**extra_b: Any) -> list[dict[str, Any]]:
    return [
        step("a", 1),
        step("b", 2, ["a"], contexts=["x", "y"], causes=CAUSES, **extra_b),
        step("c", 3, ["b"]),
    ]


def write_project(sandbox: Sandbox, executor: str = "inprocess") -> None:
    body = {"default_env": "local", "environments": {"local": {"executor": executor, "max_parallel": 2}}}
    (sandbox.root / "project.yaml").write_text(yaml.safe_dump(body))


def run(sandbox: Sandbox, request: PlanRequest | None = None, executor: str | None = None) -> api.RunResult:
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    options = api.RunOptions(executor=create_executor(executor) if executor else None)
    return api.execute(session, request or PlanRequest(), options)


# ---------------------------------------------------------------------------------------------
# classification and signatures


def test_two_wordings_of_a_permission_problem_classify_alike_and_a_schema_problem_does_not() -> None:
    prepare = DB_REFRESH.by_id["prepare-part-tables"]
    iam = classify(
        prepare,
        "AccessDeniedException",
        "User: arn:aws:sts::123456789012:assumed-role/GlueRole/jr_1 is not authorized to perform: "
        "glue:BatchCreatePartition on resource: arn:aws:glue:us-east-1:123456789012:table/db/part_x",
    )
    lake = classify(
        prepare, "Error", "Insufficient Lake Formation permission(s): Required Alter on part_addressable_ids"
    )
    msck = classify(prepare, "Error", "FAILED: Execution Error, return code 1 from DDLTask (MSCK REPAIR TABLE part_x)")
    assert iam[0] is lake[0] is Cause.PERMISSION
    assert iam[1] == lake[1] and "Lake Formation" in iam[1][0]
    assert msck[0] is Cause.SCHEMA and "MSCK REPAIR" in msck[1][0]


def test_the_demo_failure_is_a_schema_mapping_problem_with_its_hint() -> None:
    from flywheel.pipelines.db_refresh.jobs import create_er_table as er

    problems: list[str] = []
    er._build_field("email_hash", {"type": "EMAIL"}, problems)
    error = er._schema_error(problems, "/srv/data/config/er-schema-mapping.yaml")
    cause, hints = classify(DB_REFRESH.by_id["create-part-addressable-ids-er-table"], error.error_type, str(error))
    assert cause is Cause.SCHEMA
    assert any("er-schema-mapping.yaml" in h for h in hints)


def test_step_rules_win_over_generic_ones_and_unknown_errors_stay_unknown() -> None:
    spec = StepSpec(
        id="s", number=1, title="S", command="true", causes=(CauseRule(match="^Timeout", cause="data", hint="h"),)
    )
    assert classify(spec, "Timeout", "timed out after 3s") == (Cause.DATA, ("h",))
    assert classify(None, "Timeout", "timed out after 3s")[0] is Cause.RESOURCE
    assert classify(None, "ModuleNotFoundError", "No module named 'x'")[0] is Cause.CODE
    assert classify(spec, "Weird", "the moon is in the wrong phase") == (Cause.UNKNOWN, ())


def test_one_cause_in_two_wordings_has_one_signature_and_another_cause_does_not() -> None:
    first = signature(
        "/data/raw/2024-05-01/addressable_ids_0003.csv.gz does not exist (run 41, Glue run jr_0a1b2c3d4e5f6a7b, "
        "at 2024-05-01T03:12:44Z, object s3://bucket-a/raw/x.csv, sha 3fa9c2e1b7d4)"
    )
    second = signature(
        "/srv/other/raw/2025-11-30/addressable_ids_0017.csv.gz does not exist (run 7, Glue run jr_99ffeeddccbbaa00, "
        "at 2025-11-30 23:59:01, object s3://bucket-b/raw/y.csv, sha 0badc0ffee12)"
    )
    different = signature("/data/raw/2024-05-01/addressable_ids_0003.csv.gz: cannot read the header line")
    assert first == second
    assert "<path>" in first and "<id>" in first and "<time>" in first and "<hex>" in first
    assert different != first
    arn_a = signature("User: arn:aws:sts::111111111111:assumed-role/A/x is not authorized to perform: s3:GetObject")
    arn_b = signature("User: arn:aws:sts::222222222222:assumed-role/B/y is not authorized to perform: s3:GetObject")
    assert arn_a == arn_b


def test_log_excerpt_is_the_lines_around_the_error(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    lines = [f"line {i}" for i in range(100)]
    lines[60] = "ERROR SchemaMappingError: invalid ER schema mapping in /x.yaml"
    log.write_text("\n".join(lines) + "\n")
    excerpt = log_excerpt(log, "SchemaMappingError", "invalid ER schema mapping in /x.yaml", before=3, after=2)
    assert excerpt is not None
    assert excerpt.lines == ("line 57", "line 58", "line 59", lines[60], "line 61", "line 62")
    assert excerpt.error_line == 61 and excerpt.first_line == 58 and excerpt.error_index == 3
    assert log_excerpt(tmp_path / "missing.log", "E", "m") is None


def test_since_accepts_periods_and_dates() -> None:
    now = 1_000_000.0
    assert parse_since("30d", now) == now - 30 * 86400
    assert parse_since("12h", now) == now - 12 * 3600
    assert parse_since("2024-05-01") == time.mktime(time.strptime("2024-05-01", "%Y-%m-%d"))
    with pytest.raises(Exception, match="not a period"):
        parse_since("soon")


# ---------------------------------------------------------------------------------------------
# the projection over real runs


def test_a_failed_run_opens_an_incident_and_its_resume_closes_it_with_the_time_saved(sandbox: Sandbox) -> None:
    sandbox.write(fan_out())
    write_project(sandbox, executor="subprocess")
    sandbox.fail("b[y]", "the source file /data/raw/2024-05-01/ids.csv is missing")
    first = run(sandbox)
    assert first.outcome is not None and first.outcome.value == "failed"

    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    with session.journal() as journal:
        (inc,) = incidents(journal, session.spec)
    assert inc.id == first.run_id and inc.status is IncidentStatus.OPEN
    assert inc.primary.key == StepKey("b", "y")
    assert inc.cause is Cause.DATA and inc.primary.hints == ("Re-deliver the source file, then resume.",)
    assert inc.resume_command == f"flywheel resume {first.run_id}"
    excerpt = log_excerpt(inc.primary.log_path, inc.primary.error_type, inc.primary.error_message)
    assert excerpt is not None and excerpt.error_index is not None
    assert "ids.csv is missing" in excerpt.lines[excerpt.error_index]

    with session.journal() as journal:
        note_incident(
            journal,
            session.spec,
            inc.id,
            cause="late delivery",
            fix="re-delivered ids.csv",
            category=None,
            user="ann@host",
        )
    sandbox.fix("b[y]")
    second = run(sandbox, PlanRequest(mode=Mode.RESUME))
    assert second.outcome is not None and second.outcome.value == "succeeded"

    with session.journal() as journal:
        (inc,) = incidents(journal, session.spec)
        durations = {e.key: e.duration for e in journal.events(first.run_id) if isinstance(e, StepSucceeded)}
        noted = [e for e in journal.events(first.run_id) if isinstance(e, IncidentNoted)]
    assert inc.status is IncidentStatus.RESOLVED and inc.closed_by == second.run_id
    assert inc.runs == (first.run_id, second.run_id)
    a, bx = durations[StepKey("a")], durations[StepKey("b", "x")]
    assert inc.time_saved is not None
    assert inc.time_saved.wall_seconds == pytest.approx(a + bx)  # a then b[x]: one path
    assert inc.time_saved.compute_seconds == pytest.approx(a + bx)
    assert {r.key for r in inc.reused} == {StepKey("a"), StepKey("b", "x")}
    assert inc.recovery_seconds is not None and 0 < inc.recovery_seconds < 60
    assert [n.fix for n in inc.notes] == ["re-delivered ids.csv"] and noted[0].user == "ann@host"


def test_time_saved_is_the_critical_path_of_the_reused_steps_not_their_sum(sandbox: Sandbox) -> None:
    sandbox.write([step("a", 1), step("b", 2), step("c", 3, ["a", "b"]), step("d", 4, ["c"])])
    write_project(sandbox)
    sandbox.fail("d")
    first = run(sandbox)
    sandbox.fix("d")
    run(sandbox, PlanRequest(mode=Mode.RESUME))
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    with session.journal() as journal:
        (inc,) = incidents(journal, session.spec)
        took = {e.key.step: e.duration for e in journal.events(first.run_id) if isinstance(e, StepSucceeded)}
    assert inc.time_saved is not None
    assert inc.time_saved.wall_seconds == pytest.approx(max(took["a"], took["b"]) + took["c"])
    assert inc.time_saved.compute_seconds == pytest.approx(took["a"] + took["b"] + took["c"])


def test_a_failed_resume_joins_the_incident_and_a_fresh_success_supersedes_another(sandbox: Sandbox) -> None:
    sandbox.write(fan_out())
    write_project(sandbox)
    sandbox.fail("b[y]", "the source file /x is missing")
    first = run(sandbox)
    second = run(sandbox, PlanRequest(mode=Mode.RESUME))  # not fixed: fails again
    sandbox.fix("b[y]")
    sandbox.fail("c", "InjectedFault: permission denied on /out")
    third = run(sandbox, PlanRequest(mode=Mode.RESUME))
    sandbox.fix("c")
    fresh = run(sandbox)  # a new run, outside the lineage
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    with session.journal() as journal:
        (inc,) = incidents(journal, session.spec)
        assert find_incident(journal, session.spec, third.run_id).id == first.run_id
    assert inc.runs == (first.run_id, second.run_id, third.run_id)
    assert [str(f.key) for f in inc.failures] == ["b[y]", "b[y]", "c"]
    assert inc.status is IncidentStatus.SUPERSEDED and inc.closed_by == fresh.run_id
    assert inc.time_saved is not None and inc.time_saved.compute_seconds == 0


def test_a_fresh_run_with_skip_steps_supersedes_the_incident_and_counts_its_reuse(sandbox: Sandbox) -> None:
    sandbox.write([step("a", 1), step("b", 2, ["a"]), step("c", 3, ["b"])])
    write_project(sandbox)
    sandbox.fail("c")
    first = run(sandbox)
    sandbox.fix("c")
    skipped = run(sandbox, PlanRequest(skip=("1", "2")))  # the runbook's way: --skip-steps=1,2
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    with session.journal() as journal:
        (inc,) = incidents(journal, session.spec)
        took = {e.key.step: e.duration for e in journal.events(first.run_id) if isinstance(e, StepSucceeded)}
    assert inc.status is IncidentStatus.SUPERSEDED and inc.closed_by == skipped.run_id
    assert inc.time_saved is not None and inc.time_saved.wall_seconds == pytest.approx(took["a"] + took["b"])


def test_the_same_error_again_shows_the_fix_recorded_the_first_time(sandbox: Sandbox) -> None:
    sandbox.write(fan_out())
    write_project(sandbox)
    sandbox.fail("b[y]", "the source file /data/raw/2024-05-01/ids_0001.csv is missing")
    first = run(sandbox)
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    with session.journal() as journal:
        note_incident(
            journal,
            session.spec,
            first.run_id,
            cause="vendor late",
            fix="asked vendor to resend",
            category="data",
            user="ann@host",
        )
    sandbox.fix("b[y]")
    run(sandbox, PlanRequest(mode=Mode.RESUME))
    sandbox.fail("b[y]", "the source file /data/raw/2024-06-02/ids_0042.csv is missing")  # same cause, new words
    again = run(sandbox)
    sandbox.fix("b[y]")
    sandbox.fail("b[x]", "InjectedFault: permission denied")  # another cause
    other = run(sandbox)
    with session.journal() as journal:
        found = {i.id: i for i in incidents(journal, session.spec)}
    assert [p.note.fix for p in found[again.run_id].past_fixes] == ["asked vendor to resend"]
    assert found[again.run_id].past_fixes[0].incident_id == first.run_id
    assert found[other.run_id].past_fixes == ()
    assert found[other.run_id].cause is Cause.PERMISSION

    summary = summarize(found.values())
    assert summary.by_cause == {"data": 2, "permission": 1}
    assert summary.by_step == {"b[y]": 2, "b[x]": 1}
    assert summary.open_count == 2
    (offender,) = summary.repeat_offenders
    assert offender.key == StepKey("b", "y") and offender.count == 2
    assert offender.last_fix == "asked vendor to resend"
    assert summary.mttr_seconds == pytest.approx(found[first.run_id].recovery_seconds)
    assert summarize(found.values(), since=time.time() + 60).incidents == ()


def test_notes_are_validated_and_a_run_without_failure_has_no_incident(sandbox: Sandbox) -> None:
    sandbox.write(fan_out())
    write_project(sandbox)
    ok = run(sandbox)
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    with session.journal() as journal:
        assert incidents(journal, session.spec) == []
        with pytest.raises(Exception, match="no incident"):
            find_incident(journal, session.spec, ok.run_id)
        with pytest.raises(Exception, match="--cause or --fix"):
            note_incident(journal, session.spec, ok.run_id, cause=" ", fix="", category=None, user="u")
        with pytest.raises(Exception, match="unknown category"):
            note_incident(journal, session.spec, ok.run_id, cause="x", fix="", category="bad-luck", user="u")


@pytest.mark.e2e
def test_the_incident_commands(sandbox: Sandbox) -> None:
    sandbox.write(fan_out())
    write_project(sandbox)
    sandbox.fail("b[y]", "the source file /data/raw/ids.csv is missing")
    assert sandbox.cli("run", str(sandbox.pipeline)).returncode == 1

    shown = sandbox.cli("incident", "show", "1", check=True).stdout
    assert "incident 1" in shown and "cause: data" in shown and "Re-deliver the source file" in shown
    assert "flywheel resume 1" in shown

    noted = sandbox.cli("incident", "note", "1", "--cause", "late file", "--fix", "resent it", "--category", "data")
    assert noted.returncode == 0, noted.stderr
    assert sandbox.cli("incident", "show", "99").returncode == 2

    sandbox.fix("b[y]")
    assert sandbox.cli("resume", "1").returncode == 0
    listed = json.loads(sandbox.cli("incidents", "--json", check=True).stdout)
    assert [(i["id"], i["status"], i["cause"]) for i in listed] == [(1, "resolved", "data")]
    assert listed[0]["notes"][0]["fix"] == "resent it" and listed[0]["time_saved"]["compute_seconds"] > 0
    table = sandbox.cli("incidents", check=True).stdout
    assert "resolved" in table and "b[y]" in table

    csv_text = sandbox.cli("incidents", "report", "--format", "csv", "--since", "1d", check=True).stdout
    assert csv_text.splitlines()[0].startswith("id,pipeline,env,status")
    assert "resent it" in csv_text
