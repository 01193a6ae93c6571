"""What the report costs on top of WeasyPrint: a synthetic window of 500 steps, 50 issues and 5,000 command log lines.

Run: ``DEBUG=true .venv/bin/python benchmarks/report.py`` (a throwaway SQLite database in a temporary directory,
unless ``EXMAINT_VAR_DIR``/``DATABASE_URL`` say otherwise). In one run:

1. the window is written to the database (change, approvals, 500 step rows, pauses and operator decisions);
2. a fresh process generates the whole report — ``reports.services.report_generate``: data object from the
   database, HTML, WeasyPrint, SHA-256, file and row — and saves the final HTML;
3. another fresh process has WeasyPrint render that same HTML alone, with the same options.

Each process reports its wall time and its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). Goals: the whole
report ≤ 1.3× WeasyPrint alone, and ≤ 400 MB peak. Prints both and the ratio; exits 1 if a goal is missed.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
if "EXMAINT_VAR_DIR" not in os.environ:  # the child processes inherit it
    os.environ["EXMAINT_VAR_DIR"] = tempfile.mkdtemp(prefix="exmaint-bench-report-")

STEPS, FAILURES, ANOMALIES, COMMANDS_PER_STEP = 500, 15, 35, 10
GOAL_RATIO, GOAL_MB = 1.3, 400


def _peak_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def build_window() -> int:
    """Write the synthetic window through the real services where they exist; return the change id."""
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.utils import timezone

    from changes import audit, services
    from changes.models import ApiClient, Server, StepRun, WindowRun
    from changes.states import State

    call_command("migrate", verbosity=0)
    requester = User.objects.create_user("bench-itsm")
    ApiClient.objects.create(user=requester, source="servicenow")
    requester.groups.add(Group.objects.get_or_create(name="requester")[0])
    approvers = []
    for name in ("ann", "ben"):
        user = User.objects.create_user(name)
        user.groups.add(Group.objects.get_or_create(name="approver")[0])
        approvers.append(user)
    operator = User.objects.create_user("olga")
    operator.groups.add(Group.objects.get_or_create(name="operator")[0])
    server = Server.objects.create(name="EX01", fqdn="ex01.corp.example", version="Exchange Server 2019 CU14")
    server.set_password("Bench-Secret-Passw0rd")
    server.save()
    start = timezone.now() + timedelta(days=30)
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": "CHG-BENCH-500", "title": "Synthetic 500-step window",
        "description": "Benchmark.", "change_type": "normal", "risk": "medium", "impact": "medium",
        "servers": ["EX01"], "plan": "maintenance", "window_start": start, "window_end": start + timedelta(hours=8),
        "requested_by": "someone@example.com", "notify": ["team@example.com"], "callback_url": ""})
    for approver in approvers:
        services.change_approve(change, actor=approver, comment="approved for the benchmark")
    services.change_transition(change.pk, State.RUNNING, actor="system:scheduler", reason="window started")
    phases = ["precheck"] * 20 + ["enter"] * 200 + ["work"] * 10 + ["exit"] * 200 + ["verify"] * 70
    failing = set(list(range(30, STEPS, STEPS // FAILURES))[:FAILURES])
    anomalous = set(list(range(5, STEPS, STEPS // ANOMALIES))[:ANOMALIES])
    rows = []
    for i in range(STEPS):
        at = start + timedelta(seconds=40 * i)
        commands = [{"cmdlet": "Set-ServerComponentState" if j % 3 == 0 else "Get-ServerComponentState",
                     "parameters": {"Identity": "EX01", "Component": f"Component{j:02d}", "State": "Draining",
                                    "Requester": "Maintenance", "Credential": "***",
                                    "Filter": "Status -eq 'Retry' -and NextHopDomain -like '*.fabrikam.com'"},
                     "endpoint": "exchange", "started_at": (at + timedelta(seconds=j)).isoformat(),
                     "duration_ms": 180 + j, "outcome": "ok", "objects": j,
                     **({"warnings": ["the component is already in the requested state"]} if j == 9 else {})}
                    for j in range(COMMANDS_PER_STEP)]
        rows.append(StepRun(
            change=change, order=i + 1, phase=phases[i], key=f"{phases[i]}.step_{i:03d}", name=f"Synthetic step {i}",
            server=server, status="passed", attempts=2 if i in failing else 1, started_at=at,
            finished_at=at + timedelta(seconds=35), commands=commands, output_summary=f"step {i} done",
            findings={"databases": [{"database": f"DB{k:02d}", "age_hours": 3.5, "backup_in_progress": False}
                                    for k in range(4)]} if phases[i] == "precheck" else {},
            issues=[{"summary": f"queue EX01\\{i} held 12 messages for 90 s", "resolution": "drained on the 4th poll",
                     "automatic": True}] if i in anomalous else [],
            decision="retry" if i in failing else "", decided_by=operator if i in failing else None,
            resolution="transient: the service came back" if i in failing else ""))
    StepRun.objects.bulk_create(rows)
    for i in sorted(failing):
        services.change_transition(change.pk, State.PAUSED, actor="system:runner",
                                   reason=f"step {i + 1} (Synthetic step {i}) failed: service did not answer")
        audit.append(actor=operator, action="window.retry", obj=change, reason="transient: the service came back",
                     changes={"step": [None, f"{phases[i]}.step_{i:03d}"]})
        services.change_transition(change.pk, State.RUNNING, actor=operator, reason="operator decision: retry")
    WindowRun.objects.create(change=change, plan="maintenance", variant="standalone", started_at=start,
                             finished_at=start + timedelta(seconds=40 * STEPS), context={})
    services.change_transition(change.pk, State.COMPLETED, actor="system:runner", reason="all steps done")
    return change.pk


def child_full(change_id: int, html_path: str) -> dict:
    import django

    django.setup()
    from reports import services
    from reports.context import build_report_data
    from reports.render import render_html

    began = time.perf_counter()
    report = services.report_generate(change_id)
    wall = time.perf_counter() - began
    peak = _peak_mb()
    # The same final HTML, for the WeasyPrint-alone run (built after the timing, from the report's own head).
    Path(html_path).write_text(render_html(build_report_data(change_id, head_seq=report.head_seq,
                                                             head_hash=report.head_hash)), encoding="utf-8")
    return {"wall": wall, "peak_mb": peak, "pages": report.pages, "size": report.size, "sha256": report.sha256}


def child_weasy(html_path: str) -> dict:
    from weasyprint import HTML

    html = Path(html_path).read_text(encoding="utf-8")
    began = time.perf_counter()
    document = HTML(string=html).render()
    pdf = document.write_pdf(pdf_identifier=b"0" * 32)
    wall = time.perf_counter() - began
    return {"wall": wall, "peak_mb": _peak_mb(), "pages": len(document.pages), "size": len(pdf)}


def _run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)  # noqa: S603
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    import django

    django.setup()
    import logging

    logging.disable(logging.INFO)
    began = time.perf_counter()
    change_id = build_window()
    print(f"synthetic window: {STEPS} steps, {FAILURES + ANOMALIES} issues ({FAILURES} failures with operator "
          f"decisions, {ANOMALIES} anomalies), {STEPS * COMMANDS_PER_STEP} command log lines "
          f"(written in {time.perf_counter() - began:.1f} s)")
    html_path = str(Path(os.environ["EXMAINT_VAR_DIR"]) / "report-bench.html")
    full = _run_child("--child-full", str(change_id), html_path)
    alone = _run_child("--child-weasy", html_path)
    ratio = full["wall"] / alone["wall"]
    print(f"whole report (DB → data → HTML → PDF → stored): {full['wall']:6.2f} s, peak {full['peak_mb']:6.1f} MB, "
          f"{full['pages']} pages, {full['size'] / 1024:.0f} KiB")
    print(f"WeasyPrint alone on the same HTML:              {alone['wall']:6.2f} s, peak {alone['peak_mb']:6.1f} MB, "
          f"{alone['pages']} pages")
    print(f"ratio (whole / WeasyPrint alone): {ratio:.2f}×  (goal ≤ {GOAL_RATIO}×); "
          f"peak {full['peak_mb']:.0f} MB (goal ≤ {GOAL_MB} MB)")
    ok = ratio <= GOAL_RATIO and full["peak_mb"] <= GOAL_MB
    print("goals met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-full":
        print(json.dumps(child_full(int(sys.argv[2]), sys.argv[3])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-weasy":
        print(json.dumps(child_weasy(sys.argv[2])))
    else:
        sys.exit(main())
