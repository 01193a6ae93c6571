"""Restarting the server under the run's control and waiting until it is healthy again (docs/exchange-install.md,
"Reboot"): ``Restart-Computer -Force``, then WinRM answers with a new boot time, the Exchange services that start
automatically run, and the Exchange endpoint answers — within ``reboot_minutes`` (default 30).

Every poll uses fresh, short connections (a restart kills every shell) and one attempt per read: the poll loop is
the retry. The "sent" marker is saved before Restart-Computer, so a worker that resumes never restarts twice.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from runner.exchange.session import CmdletError, ExchangeSessionError
from runner.step_types import Issue, RetryPolicy, StepContext, StepFailed, StepOutcome

from .base import DEFAULT, EXCHANGE, call, first, iso, now_iso

ONCE = RetryPolicy(attempts=1)
REBOOT = "reboot"  # ctx.state key


def _state(ctx: StepContext) -> dict[str, Any]:
    return ctx.state.setdefault(REBOOT, {})


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def restart(ctx: StepContext, *, reason: str = "the change's work is a restart") -> StepOutcome:
    """Send ``Restart-Computer -Force`` once (check-then-set on the saved marker)."""
    state = _state(ctx)
    if state.get("sent_at"):
        return StepOutcome("passed", f"restart already sent at {state['sent_at']}; not sent again",
                           findings=dict(state))
    boot = first(call(ctx, "Get-CimInstance", {"ClassName": "Win32_OperatingSystem"}, endpoint=DEFAULT,
                      what="reading the boot time"), "Win32_OperatingSystem")
    state.update(boot_before=iso(_when(boot.get("LastBootUpTime"))), sent_at=now_iso(ctx), reason=reason)
    ctx.checkpoint()  # before the command: a resumed worker must not restart the server a second time
    issues = []
    try:
        ctx.run("Restart-Computer", {"Force": True}, endpoint=DEFAULT)
    except CmdletError as exc:
        state.pop("sent_at")
        raise StepFailed(f"Restart-Computer was refused: {exc.record.message}",
                         findings={"error": exc.record.message}) from exc
    except ExchangeSessionError as exc:
        # The machine went down under the command: the connection drops before an answer comes back.
        issues.append(Issue(f"Restart-Computer got no answer ({exc})", "expected while the server goes down"))
    ctx.reconnect(DEFAULT)
    ctx.reconnect(EXCHANGE)
    return StepOutcome("passed", f"Restart-Computer -Force sent at {state['sent_at']} ({reason})", issues=issues,
                       findings=dict(state))


def _probe(ctx: StepContext, state: dict[str, Any]) -> tuple[bool, str]:
    """One poll on fresh connections: (healthy, what is still missing)."""
    try:
        try:
            os_rows = ctx.run("Get-CimInstance", {"ClassName": "Win32_OperatingSystem"}, endpoint=DEFAULT,
                              retry=ONCE).output
        except ExchangeSessionError as exc:
            return False, f"WinRM does not answer ({type(exc).__name__})"
        boot = _when(os_rows[0].get("LastBootUpTime")) if os_rows else None
        before = _when(state.get("boot_before"))
        if boot is None or (before is not None and boot <= before):
            return False, "WinRM answers but the server has not restarted yet (boot time unchanged)"
        state.setdefault("up_at", now_iso(ctx))
        state["boot_after"] = iso(boot)
        try:
            services = ctx.run("Get-Service", {"Name": "MSExchange*"}, endpoint=DEFAULT, retry=ONCE).output
        except ExchangeSessionError as exc:
            return False, f"Get-Service did not answer ({type(exc).__name__})"
        waiting = sorted(str(s.get("Name")) for s in services
                         if str(s.get("StartType")) == "Automatic" and str(s.get("Status")) != "Running")
        if waiting:
            return False, f"Exchange services not running yet: {', '.join(waiting)}"
        try:
            ctx.run("Get-ExchangeServer", {"Identity": ctx.server.name}, endpoint=EXCHANGE, retry=ONCE)
        except CmdletError:
            pass  # the endpoint answered, with an error of its own: it is up
        except ExchangeSessionError as exc:
            return False, f"the Exchange endpoint does not answer yet ({type(exc).__name__})"
        return True, "WinRM, the Exchange services and the Exchange endpoint answer"
    finally:
        ctx.reconnect(DEFAULT)
        ctx.reconnect(EXCHANGE)


def wait_healthy(ctx: StepContext) -> StepOutcome:
    """Poll until the restarted server is healthy, or fail with what is missing after ``reboot_minutes``."""
    state = _state(ctx)
    if not state.get("sent_at"):
        return StepOutcome("skipped", "no restart was sent")
    if state.get("healthy_at"):
        return StepOutcome("passed", f"healthy since {state['healthy_at']}", findings=dict(state))
    sent = _when(state["sent_at"])
    budget = 60.0 * int(ctx.options.work.get("reboot_minutes", 30))
    polls = 0
    while True:
        polls += 1
        healthy, detail = _probe(ctx, state)
        now = ctx.clock.now()
        elapsed = (now - sent).total_seconds() if sent else 0.0
        if healthy:
            state["healthy_at"] = now.isoformat()
            up = _when(state.get("up_at"))
            state["downtime_seconds"] = round((up - sent).total_seconds()) if up and sent else None
            state["healthy_after_seconds"] = round(elapsed)
            return StepOutcome("passed", f"healthy {elapsed / 60:.1f} min after the restart ({polls} polls): "
                               f"{detail}", findings=dict(state))
        if elapsed >= budget:
            state["last_seen"] = detail
            raise StepFailed(f"the server is not healthy {elapsed / 60:.0f} min after the restart (budget "
                             f"{budget / 60:.0f} min): {detail}", findings=dict(state))
        ctx.wait(ctx.options.install_poll)
