"""`flywheel incidents report`: failure patterns over a period, as HTML (with charts), JSON or CSV.

The runbook asks operators to log each failure's step, root cause, fix and recovery time saved "to
identify patterns and improve reliability"; this is that log, read back from the journal.
"""

from __future__ import annotations

import csv
import io
import json

from flywheel.incidents import Incident, IncidentSummary, summary_dict
from flywheel.reports import badge, bar_chart, dur, esc, page, when
from flywheel.reports.run_report import incident_section

CSV_COLUMNS = (
    "id",
    "pipeline",
    "env",
    "status",
    "opened_at",
    "step",
    "cause",
    "error_type",
    "error_message",
    "signature_id",
    "runs",
    "closed_by",
    "recovery_seconds",
    "saved_wall_seconds",
    "saved_compute_seconds",
    "saved_dpu_hours",
    "notes",
    "last_fix",
)


def to_json(summary: IncidentSummary) -> str:
    return json.dumps(summary_dict(summary), indent=2)


def _row(inc: Incident) -> dict[str, object]:
    saved = inc.time_saved
    return {
        "id": inc.id,
        "pipeline": inc.pipeline,
        "env": inc.env,
        "status": inc.status.value,
        "opened_at": when(inc.opened_at),
        "step": str(inc.primary.key),
        "cause": inc.cause.value,
        "error_type": inc.primary.error_type,
        "error_message": inc.primary.error_message.replace("\n", " ")[:500],
        "signature_id": inc.primary.signature_id,
        "runs": " ".join(str(r) for r in inc.runs),
        "closed_by": inc.closed_by or "",
        "recovery_seconds": "" if inc.recovery_seconds is None else round(inc.recovery_seconds, 3),
        "saved_wall_seconds": "" if saved is None else round(saved.wall_seconds, 3),
        "saved_compute_seconds": "" if saved is None else round(saved.compute_seconds, 3),
        "saved_dpu_hours": "" if saved is None or saved.dpu_hours is None else round(saved.dpu_hours, 3),
        "notes": len(inc.notes),
        "last_fix": next((n.fix for n in reversed(inc.notes) if n.fix), ""),
    }


def to_csv(summary: IncidentSummary) -> str:
    """One row per incident: spreadsheets aggregate better than they read nested JSON."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for inc in summary.incidents:
        writer.writerow(_row(inc))
    return out.getvalue()


def to_html(summary: IncidentSummary, *, title: str = "Incidents") -> str:
    period = f"since {when(summary.since)}" if summary.since else "all time"
    kpis = [
        ("incidents", str(len(summary.incidents))),
        ("still open", str(summary.open_count)),
        ("mean time to recovery", dur(summary.mttr_seconds) or "—"),
        ("wall-clock saved by resume", dur(summary.saved_wall_seconds) or "0"),
        ("compute saved", dur(summary.saved_compute_seconds) or "0"),
    ]
    if summary.saved_dpu_hours:
        kpis.append(("DPU-hours saved", f"{summary.saved_dpu_hours:.1f}"))
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">{esc(period)} · until {esc(when(summary.until))}</p>',
        '<div class="kpis">'
        + "".join(f'<div class="kpi" data-kpi="{esc(k)}"><b>{esc(v)}</b>{esc(k)}</div>' for k, v in kpis)
        + "</div>",
        "<h2>Failures by step</h2>",
        bar_chart([(k, float(v)) for k, v in summary.by_step.items()], label="failures by step"),
        "<h2>By cause</h2>",
        bar_chart([(k, float(v)) for k, v in summary.by_cause.items()], label="failures by cause"),
        "<h2>By environment</h2>",
        bar_chart([(k, float(v)) for k, v in summary.by_env.items()], label="failures by environment"),
        "<h2>Repeat offenders</h2>",
    ]
    if summary.repeat_offenders:
        body.append(
            "<table id=offenders><tr><th>step</th><th>times</th><th>error</th><th>incidents</th><th>last fix</th></tr>"
            + "".join(
                f"<tr><td>{esc(o.key)}</td><td>{o.count}</td><td class=mono>{esc(o.error_type)}: "
                f"{esc(o.signature[:200])}</td><td>{', '.join(str(i) for i in o.incidents)}</td>"
                f"<td>{esc(o.last_fix or '')}</td></tr>"
                for o in summary.repeat_offenders
            )
            + "</table>"
        )
    else:
        body.append('<p class="muted">no failure repeated</p>')
    body.append("<h2>Incidents</h2>")
    body.append(
        "<table id=incidents><tr><th>id</th><th>env</th><th>status</th><th>opened</th><th>step</th><th>cause</th>"
        "<th>recovery</th><th>saved</th></tr>"
        + "".join(
            f'<tr data-incident="{i.id}" data-status="{i.status.value}"><td><a href="#incident-{i.id}">{i.id}</a></td>'
            f"<td>{esc(i.env)}</td><td>{badge(i.status.value)}</td><td>{esc(when(i.opened_at))}</td>"
            f"<td>{esc(i.primary.key)}</td><td>{esc(i.cause.value)}</td><td>{esc(dur(i.recovery_seconds))}</td>"
            f"<td>{esc(dur(i.time_saved.wall_seconds) if i.time_saved else '')}</td></tr>"
            for i in reversed(summary.incidents)
        )
        + "</table>"
    )
    body.append("<h2>Details</h2>")
    body += [incident_section(i) for i in reversed(summary.incidents)]
    return page(title, "\n".join(body))
