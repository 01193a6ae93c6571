"""The report's work/install section: what the change's work phase was and, for an Exchange update, per server the
build before and after (read from ExSetup.exe), the install's duration and last phase, the restart's downtime and
the result. Pure reads of ``Change.work`` and the plan state the engine saved (``WindowRun.context``)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from changes.work import describe_work

from .data import Table


def _minutes(seconds: Any) -> str:
    return f"{int(seconds) / 60:.1f} min" if isinstance(seconds, int | float) else "—"


def _span(start: Any, end: Any) -> str:
    try:
        return _minutes((datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds())
    except (TypeError, ValueError):
        return "—"


def install_tables(work: dict[str, Any] | None, context: dict[str, Any] | None) -> tuple[str, list[Table]]:
    """(the work in words, one table of the install per server when the work installed something)."""
    rows = []
    for server, state in sorted((context or {}).items()):
        if not isinstance(state, dict):
            continue
        install, restart = state.get("install") or {}, state.get("reboot") or {}
        if not install and not restart:
            continue
        if install.get("already_at_target"):
            result = "already at target: install skipped"
        else:
            result = str(install.get("status") or install.get("result") or ("restarted" if restart.get(
                "healthy_at") else "not finished"))
        rows.append([server, str(install.get("build_before") or "—"), str(install.get("build_after") or "—"),
                     _span(install.get("launch_sent_at"), install.get("finished_at")) if install else "—",
                     str(install.get("phase") or "—"), _minutes(restart.get("downtime_seconds")),
                     _minutes(restart.get("healthy_after_seconds")), result])
    tables = [Table("Exchange update / restart per server",
                    ["Server", "Build before", "Build after (ExSetup.exe)", "Install took", "Last setup phase",
                     "Restart: down", "Restart: healthy after", "Result"], rows)] if rows else []
    return describe_work(work), tables
