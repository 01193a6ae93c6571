"""Tables from the steps' structured findings: the pre-checks' readings, and each server's state before and after
the window (the snapshot taken on entering against the verification's reading)."""
from __future__ import annotations

from typing import Any

from changes.models import StepRun

from .data import ServerState, Table
from .formatting import fmt_dt, heading, show

# PostgreSQL's jsonb does not keep the key order a step wrote its findings in: columns go in this order, then any
# others alphabetically, so the table reads the same (and the PDF is the same bytes) on either database.
COLUMN_ORDER = ("identity", "name", "database", "server", "copy", "component", "role", "requester", "delivery_type",
                "next_hop", "status", "state", "message_count", "messages", "active", "copy_queue_length",
                "replay_queue_length", "newest_backup", "age_hours", "backup_in_progress", "required_running",
                "not_running", "last_error", "error", "detail")


def _ordered(columns: list[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(COLUMN_ORDER)}
    return sorted(columns, key=lambda c: (rank.get(c.lower(), len(rank)), c.lower()))


def _dict_table(title: str, items: list[dict[str, Any]], note: str = "") -> Table:
    columns: list[str] = []
    for item in items:
        columns += [k for k in item if k not in columns]
    columns = _ordered(columns)
    return Table(title, [heading(c) for c in columns], [[show(item.get(c)) for c in columns] for item in items], note)


def precheck_tables(key: str, findings: dict[str, Any]) -> list[Table]:
    """Pre-check findings (runner.steps.prechecks) as tables; unknown shapes fall back to key/value rows."""
    if not findings:
        return []
    if key == "precheck.backups" and isinstance(findings.get("databases"), list):
        rows = [[str(d.get("database")), fmt_dt(d.get("newest_backup")), show(d.get("age_hours")),
                 show(d.get("backup_in_progress"))] for d in findings["databases"]]
        return [Table("Backups", ["Database", "Newest backup", "Age (h)", "Backup in progress"], rows,
                      f"Policy: newest backup at most {findings.get('max_age_hours', '?')} h old.")]
    if key == "precheck.server_state" and isinstance(findings.get("components"), dict):
        held = findings.get("not_active") or {}
        rows = [[name, str(state), ", ".join(f"{h.get('requester')} ({h.get('state')})" for h in held.get(name, []))]
                for name, state in sorted(findings["components"].items())]
        tables = [Table("Component states", ["Component", "State", "Held by"], rows)]
        extra = {k: v for k, v in findings.items() if k in ("activation", "cluster_node")}
        if extra:
            tables.append(Table("Activation and cluster", ["Setting", "Value"],
                                [[heading(k), show(v)] for k, v in sorted(extra.items())]))
        return tables
    if key == "precheck.redundancy" and isinstance(findings.get("databases"), list):
        rows = [[str(d.get("database")), show(d.get("ok")),
                 "; ".join(f"{o.get('server')}: {o.get('status')}"
                           + ("" if o.get("usable") else f" ({o.get('reason')})")
                           for o in d.get("other_copies") or []) or "none (single copy)"]
                for d in findings["databases"]]
        return [Table("Redundancy", ["Database", "Healthy copy elsewhere", "Other copies"], rows)]
    tables = []
    scalars = [[heading(k), show(v)] for k, v in sorted(findings.items())
               if not (isinstance(v, list) and v and all(isinstance(i, dict) for i in v))]
    if scalars:
        tables.append(Table("Findings", ["Item", "Value"], scalars))
    for k, v in sorted(findings.items()):
        if isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
            tables.append(_dict_table(heading(k), v))
    return tables


def _non_active_votes(component: dict[str, Any]) -> str:
    votes = component.get("votes") or {}
    return ", ".join(f"{r}: {s}" for r, s in sorted(votes.items()) if s != "Active") if isinstance(votes, dict) else ""


def server_state(name: str, state: dict[str, Any], steps: dict[str, StepRun], standalone: bool) -> ServerState:
    """Before: the snapshot taken on entering (else the pre-check's reading). After: the verification's reading."""
    snap = state.get("snapshot") or {}
    before: dict[str, dict[str, Any]] = {}
    if isinstance(snap.get("components"), dict):
        before = {n: c if isinstance(c, dict) else {"state": c} for n, c in snap["components"].items()}
    elif (pre := steps.get("precheck.server_state")) is not None and isinstance(pre.findings.get("components"), dict):
        before = {n: {"state": s} for n, s in pre.findings["components"].items()}
    verify = steps.get("verify.components")
    after: dict[str, str] = {}
    held_after: dict[str, str] = {}
    note = ""
    if verify is not None and verify.status in (StepRun.Status.PASSED, StepRun.Status.FAILED):
        found = verify.findings or {}
        not_active = found.get("not_active") or {}
        if isinstance(found.get("components"), dict):
            after = {n: str(s) for n, s in found["components"].items()}
        else:
            after = {n: ("Active" if n not in not_active else "not Active") for n in before}
            note = "After: verify.components lists only the components that are not Active; the others were Active."
        for n, holders in not_active.items():
            held_after[n] = ", ".join(f"{h.get('requester')} on {h.get('component')} ({h.get('state')})"
                                      for h in holders) or "no vote (unknown cause)"
            after.setdefault(n, "not Active")
    else:
        note = "After: not verified (the verification did not run)."
    rows = [[n, str(before.get(n, {}).get("state", "—")), _non_active_votes(before.get(n, {})),
             after.get(n, "—"), held_after.get(n, "")] for n in sorted(set(before) | set(after))]
    components = Table("Component states and requester votes",
                       ["Component", "Before", "Non-Active votes before", "After", "Held by after"], rows)
    activation = None
    ver_act = steps.get("verify.cluster_and_activation")
    if "mailbox_server" in snap or ver_act is not None:
        saved = snap.get("mailbox_server") or {}
        now = (ver_act.findings or {}) if ver_act is not None else {}
        act_now = now.get("activation") or {}
        activation = Table("Activation policy and cluster node", ["Setting", "Before", "After"], [
            ["DatabaseCopyAutoActivationPolicy", show(saved.get("policy")), show(act_now.get("policy"))],
            ["DatabaseCopyActivationDisabledAndMoveNow", show(saved.get("move_now")),
             show(act_now.get("move_now"))],
            ["Cluster node", show(snap.get("cluster_node")), show(now.get("cluster_node"))],
        ])
    copies = None
    red = steps.get("precheck.redundancy")
    ver_copies = steps.get("verify.copies")
    if red is not None or ver_copies is not None:
        problems = ((ver_copies.findings or {}).get("copies") or {}) if ver_copies is not None else {}
        after_text = ("not verified" if ver_copies is None or ver_copies.status not in ("passed", "failed")
                      else "Healthy or Mounted, queues low" if ver_copies.status == "passed" else "see problems")
        rows = []
        for d in ((red.findings or {}).get("databases") or []) if red is not None else []:
            others = "; ".join(f"{o.get('server')}: {o.get('status')}" for o in d.get("other_copies") or [])
            rows.append([str(d.get("database")), others or "single copy", after_text])
        rows += [[str(n), "—", f"problem: {p}"] for n, p in sorted(problems.items())]
        copies = Table("Database copies", ["Database", "Copies elsewhere before", "Copies here after"], rows)
    copies_note = ""
    if standalone and (copies is None or not any(r[2].startswith("problem:") for r in copies.rows)):
        copies, copies_note = None, "Standalone server: no replicated database copies."
    elif copies is None:
        copies_note = "No database copies were checked."
    return ServerState(name, fmt_dt(snap.get("taken_at")), components, activation, copies, note, copies_note)
