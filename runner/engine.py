"""The engine: runs a change's plan one step at a time, every step persisted, resumable on any worker.

Rules it keeps (docs/architecture.md, "The runner"):

- One worker runs a change: a lease on ``WindowRun`` (compare-and-set on ``lock_owner``/``lock_expires_at``),
  renewed by a heartbeat while a step runs; an expired lease (a dead worker) may be taken over.
- No database transaction is open while PowerShell runs. A step is marked ``running`` in one short transaction, runs,
  and its result (status, commands, findings, issues, summary) plus the plan state (``WindowRun.context``) are
  written in another. A failure later in the plan never loses what earlier steps did.
- StepFailed, or a session error left after the context's read retries, pauses the window for an operator. During
  the exit an unreachable server is retried with backoff first: leaving it in maintenance is the worst outcome.
- ``Hold`` parks the run (the change stays ``running``) until the operator's work-done report or ``until``.
- After a crash a step found ``running`` is re-run when idempotent (check-then-set re-verifies); otherwise it is
  failed as half-done and the window pauses.
- ``WindowRun.aborting`` (an operator's abort) skips what is left of pre-check/enter/work and runs exit + verify.

``WindowRun.context`` holds one plan state per server: ``{"EX01": {...ctx.state...}}``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from changes.leases import Lease
from changes.models import Alert, Change, Pause, Server, StepRun, WindowRun
from changes.queue import enqueue_run
from changes.run_services import change_pause
from changes.services import change_transition
from changes.states import State
from changes.step_states import StepEvent as E
from changes.step_states import step_next

from . import conf
from .context import OUTCOME_UNKNOWN, SENT, ExecutionContext, RunLost, jsonable
from .exchange.session import Endpoint, ExchangeSession
from .executor import StepResult, execute, step_context, window_state
from .persistence import RETRYABLE, DatabaseUnavailable, retried, with_retry
from .step_types import Hold, Issue, Options, Phase, Plan, Poll, ServerInfo, Step, StepOutcome

log = logging.getLogger(__name__)

ACTOR = "system:runner"
S = StepRun.Status
R = Pause.Reason
PlanBuilder = Callable[[str, ServerInfo, Options], Plan]
SessionsFactory = Callable[[Server], Any]  # returns callable(Endpoint) -> ExchangeSession with .close()

# What the engine can know when it finds a step `running`: its last attempt was cut off. It cannot tell whether the
# worker was killed, lost its lease, or could not write to the database (issue 24 item 5), so the text names all three.
INTERRUPTED = "its last attempt was interrupted (the worker died or lost its lease, or the database was unreachable)"
RESUMED = f"found running: {INTERRUPTED}"
HALF_DONE = f"found half-done: {INTERRUPTED}; check the server"
# How long the lease release at the end of a run is retried while the database is unreachable; past it the lease
# expires by itself and the sweep hands the run on.
RELEASE_RETRY_SECONDS = 10.0
# What a step's write of its result keeps of the row in memory, put back before each retry of that write.
_ROW = ("status", "attempts", "commands", "issues")
_ABORTABLE = (Phase.PRECHECK, Phase.ENTER, Phase.WORK)
_TOUCHING = (Phase.ENTER, Phase.WORK, Phase.EXIT, Phase.VERIFY)


# --- public -------------------------------------------------------------------------------------------------------


def default_plan_builder(name: str, server: ServerInfo, options: Options) -> Plan:
    from runner.plans import build_plan  # the plans module is loaded lazily: it is large and optional in tests

    return build_plan(name, server, options)


def default_sessions_factory(server: Server) -> Any:
    from .sessions import open_sessions

    return open_sessions(server)


def options_from(data: dict[str, Any] | None) -> Options:
    """``WindowRun.options`` (JSON) as ``Options``; unknown keys are ignored."""
    data = data or {}
    kwargs: dict[str, Any] = {}
    if "clear_setup_leftovers" in data:
        kwargs["clear_setup_leftovers"] = bool(data["clear_setup_leftovers"])
    if "backup_max_age_hours" in data:
        kwargs["backup_max_age_hours"] = int(data["backup_max_age_hours"])
    if isinstance(data.get("queue_drain"), dict):
        kwargs["queue_drain"] = Poll(**data["queue_drain"])
    return Options(**kwargs)


def run_window(
    change_id: int,
    *,
    worker: str,
    clock: Any = None,
    sessions_factory: SessionsFactory | None = None,
    plan_builder: PlanBuilder | None = None,
    on_step: Callable[[str, ExecutionContext], None] | None = None,
) -> str:
    """Run (or continue) the window of ``change_id`` as far as it can go now. Returns what happened:
    ``completed``, ``aborted``, ``paused``, ``held``, ``busy`` (another worker holds the lease), ``lost lease``,
    ``database unavailable`` (it stayed down past the writes' retries: runner/persistence.py) or ``idle: <state>``
    (nothing to do). ``on_step(key, ctx)`` is called after each step ran (the benchmark reads
    the context's command and wait times)."""
    try:
        change = Change.objects.filter(pk=change_id).only("state").first()
        if change is None:
            return "idle: no such change"
        if change.state != State.RUNNING:
            return f"idle: {change.state}"
        lease = WindowLease.acquire(change_id, worker)
    except RETRYABLE as exc:  # the sweep queues the run again once the database is back
        log.warning("change %s: not started, the database is unreachable (%s)", change_id, exc)
        return "database unavailable"
    if lease is None:
        return "busy"
    try:
        with lease.heartbeat() as lost:
            engine = _Engine(change_id, lease, clock=clock or conf.make_clock(),
                             sessions_factory=sessions_factory or default_sessions_factory,
                             plan_builder=plan_builder or default_plan_builder, on_step=on_step)
            engine.lease_lost = lost
            try:
                return engine.run()
            except LeaseLost:
                log.warning("change %s: %s lost its lease; another worker took over", change_id, worker)
                return "lost lease"
            except (DatabaseUnavailable, *RETRYABLE) as exc:
                # Nothing more is sent or written; the step stays running and the sweep resumes the run.
                log.warning("change %s: stopped, the database is unreachable (%s); the sweep resumes the run once "
                            "the database is back", change_id, exc)
                return "database unavailable"
            finally:
                engine.close()
    finally:
        _release(lease)


def _release(lease: WindowLease) -> None:
    try:
        with_retry(lease.release, what="releasing the lease", budget=RELEASE_RETRY_SECONDS)
    except DatabaseUnavailable:
        log.warning("run %s: the lease could not be released; it expires by itself and the sweep resumes the run",
                    lease.pk)


# --- the lease ------------------------------------------------------------------------------------------------------


class LeaseLost(Exception):
    """Another worker took the run over (this one stalled past its lease): stop without writing anything."""


class WindowLease(Lease):
    """The lease on a change's ``WindowRun`` (``lock_owner``/``lock_expires_at``): one worker runs a window."""

    @classmethod
    def acquire(cls, change_id: int, worker: str) -> WindowLease | None:
        """Take the run's lease if it is free or expired (compare-and-set)."""
        run = WindowRun.objects.filter(change_id=change_id).only("pk").first()
        if run is None:
            return None
        # Taking the run reads every decision recorded so far: none waits for the runner any more.
        lease = cls.take(WindowRun, run.pk, worker=worker, seconds=conf.lease_seconds(), owner_field="lock_owner",
                         expires_field="lock_expires_at", decision_waiting_since=None)
        return cast(WindowLease | None, lease)


# --- the engine -----------------------------------------------------------------------------------------------------


class _Engine:
    def __init__(self, change_id: int, lease: WindowLease, *, clock: Any, sessions_factory: SessionsFactory,
                 plan_builder: PlanBuilder, on_step: Callable[[str, ExecutionContext], None] | None = None) -> None:
        self.change_id = change_id
        self.on_step = on_step
        self.lease = lease
        self.clock = clock
        self.sessions_factory = sessions_factory
        self.plan_builder = plan_builder
        self._sessions: dict[int, Any] = {}
        self.plans: dict[int, Plan] = {}
        self.infos: dict[int, ServerInfo] = {}
        self.servers: dict[int, Server] = {}
        self._run: WindowRun | None = None

    def close(self) -> None:
        for sessions in self._sessions.values():
            try:
                sessions.close()
            except Exception:  # closing must not hide the run's outcome
                log.exception("closing sessions failed")
        self._sessions.clear()

    def sessions(self, server_id: int) -> Callable[[Endpoint], ExchangeSession]:
        if server_id not in self._sessions:
            self._sessions[server_id] = self.sessions_factory(self.servers[server_id])
        return self._sessions[server_id]

    # -- setup ---------------------------------------------------------------------------------------------------

    def run(self) -> str:
        change = Change.objects.get(pk=self.change_id)
        if change.state != State.RUNNING:  # finished by the worker that held the lease before us
            return f"idle: {change.state}"
        self.change = change
        run = WindowRun.objects.get(pk=self.lease.pk)
        # Blocking alerts are answered by the operator's decision that set the change running again.
        Alert.objects.filter(change_id=self.change_id, cleared_at__isnull=True,
                             kind__in=[Alert.Kind.UNREACHABLE, Alert.Kind.PRECHECK_BLOCKED]).update(
            cleared_at=timezone.now())
        from .sessions import server_info

        options = options_from(run.options)
        for server in change.servers.order_by("name"):
            self.servers[server.pk] = server
            self.infos[server.pk] = server_info(server)
            try:
                self.plans[server.pk] = self.plan_builder(run.plan, self.infos[server.pk], options)
            except Exception as exc:
                log.exception("change %s: cannot build plan %r for %s", self.change_id, run.plan, server.name)
                if run.aborting and not StepRun.objects.filter(change_id=self.change_id, attempts__gt=0).exists():
                    return self._finish(run)
                return self._pause(None, f"cannot build plan {run.plan!r} for {server.name}: {exc}",
                                   R.PLAN_UNAVAILABLE, server=server)
        self.options = options
        self._create_steps(run)
        self.rows: list[StepRun] | None = None
        self.states: dict[str, dict[str, Any]] = dict(run.context or {})
        while True:
            outcome = self._next(change)
            if outcome is not None:
                return outcome

    @retried("creating the steps")
    def _create_steps(self, run: WindowRun) -> None:
        if StepRun.objects.filter(change_id=self.change_id).exists():
            return
        rows, order = [], 0
        for server_id, plan in self.plans.items():
            for step in plan.steps:
                order += 1
                rows.append(StepRun(
                    change_id=self.change_id, order=order, phase=str(step.phase), key=step.key,
                    name=step.title[:100], idempotent=step.idempotent, skippable=step.skippable,
                    mutating=step.mutating, server_id=server_id, timeout_s=int(step.timeout),
                ))
        variants = sorted({p.variant for p in self.plans.values()})
        with transaction.atomic():
            StepRun.objects.bulk_create(rows)
            self.lease.mine().update(variant=",".join(variants)[:32])

    # -- one iteration ---------------------------------------------------------------------------------------------

    def _next(self, change: Change) -> str | None:
        # The plan state (context) lives in memory while this worker holds the lease: not re-read every step.
        # Read once per run and kept while this worker holds the lease: while the change runs only the lease holder
        # writes it (operators decide on a paused change; a work-done report is caught by the conditional park in
        # _hold, which drops this copy). Each step's _mark_running still checks the lease in the database.
        run = self._run
        if run is None:
            run = self._run = WindowRun.objects.defer("context", "options").get(pk=self.lease.pk)
            if run.lock_owner != self.lease.token:
                raise LeaseLost
        if self.rows is None:
            # Read once, then kept in step with what this worker writes: while the change runs, only the lease
            # holder writes its steps (operators decide only on a paused change, i.e. between runs).
            self.rows = list(StepRun.objects.filter(change_id=self.change_id).defer("findings", "output_summary")
                             .order_by("order"))
        rows = self.rows
        if run.aborting and self._apply_abort(rows):
            self.rows, self._run = None, None
            return None  # re-read after the skips
        row = next((r for r in rows if r.status in (S.PENDING, S.RUNNING)
                    or (r.status == S.FAILED and not (run.aborting and r.phase in _ABORTABLE))), None)
        if row is None:
            return self._finish(run)
        step = self._step_for(row)
        if row.status == S.FAILED:
            if run.aborting and row.phase in (Phase.EXIT, Phase.VERIFY):
                # Abort after an exit step failed: the exit is exactly what abort must finish, so try it again.
                self._set_step(row, E.RETRY)
                return None
            return self._pause(row, f"step {row.order} ({row.name}) is failed and awaits an operator decision",
                               R.UNRESOLVED_FAILURE)
        if step is None:
            return self._fail_and_pause(row, R.PLAN_UNAVAILABLE, f"the plan no longer has a step {row.key!r}", [], [],
                                        {})
        resumed_issue: Issue | None = None
        unknown = ""
        if row.status == S.RUNNING:
            if run.wake_at is not None:
                pass  # a held step: it runs again (it checks the work-done report or the time)
            elif step.idempotent:
                unknown = _outcomes_unknown(row)
                resumed_issue = Issue(RESUMED,
                                      "re-run: the step is idempotent and re-verifies the server" + unknown, True)
            else:
                unknown = _outcomes_unknown(row)
                half_done = HALF_DONE.replace("; check the server", unknown + "; check the server")
                return self._fail_and_pause(row, R.HALF_DONE, half_done, [], [], {})
        self._mark_running(row, **({"commands": row.commands} if unknown else {}))
        return self._execute(change, run, row, step, resumed_issue)

    def _step_for(self, row: StepRun) -> Step | None:
        plan = self.plans.get(row.server_id)
        if plan is None:
            return None
        try:
            return plan.step(row.key)
        except KeyError:
            return None

    @retried("skipping the steps abort leaves out")
    def _apply_abort(self, rows: list[StepRun]) -> bool:
        """Skip what abort leaves out: pre-check/enter/work still to do, and everything on servers the run never
        touched. Returns whether anything changed."""
        reason = next((r.resolution for r in reversed(rows) if r.decision == "abort" and r.resolution), "")
        note = f"aborted by operator: {reason}" if reason else "aborted by operator"
        touched = {r.server_id for r in rows if r.phase in _TOUCHING and r.attempts > 0}
        now = timezone.now()
        changed = 0
        with transaction.atomic():
            for r in rows:
                if r.status not in (S.PENDING, S.RUNNING):
                    continue
                if r.phase in _ABORTABLE or r.server_id not in touched:
                    changed += StepRun.objects.filter(pk=r.pk, status=r.status).update(
                        status=step_next(r.status, E.ABORT_SKIP), output_summary=note, finished_at=now)
            if changed:
                self.lease.mine().update(wake_at=None)
        return bool(changed)

    def _set_step(self, row: StepRun, event: str, **fields: Any) -> None:
        """Move a step through its lifecycle (changes.step_states), compare-and-set on the status this worker last
        wrote: a step that moved under us belongs to another worker now."""
        new = step_next(row.status, event)
        if not StepRun.objects.filter(pk=row.pk, status=row.status).update(status=new, **fields):
            raise LeaseLost
        row.status = new

    @retried("marking a step running", row_fields=_ROW)
    def _mark_running(self, row: StepRun, **fields: Any) -> None:
        now = timezone.now()
        with transaction.atomic():
            if not self.lease.renew(now, wake_at=None):
                raise LeaseLost
            self._set_step(row, E.START, attempts=F("attempts") + 1, started_at=now, finished_at=None, error="",
                           **fields)
        row.attempts += 1
        if self._run is not None:
            self._run.wake_at = None

    # -- running a step ----------------------------------------------------------------------------------------------

    def _state_for(self, row: StepRun, run: WindowRun) -> dict[str, Any]:
        server = self.servers[row.server_id]
        state = self.states.setdefault(server.name, {})
        state.update(window_state(self.change.window_end.isoformat(), work_done_at=run.work_done_at,
                                  work_notes=run.work_notes))
        return state

    def _execute(self, change: Change, run: WindowRun, row: StepRun, step: Step,
                 resumed_issue: Issue | None) -> str | None:
        lost = getattr(self, "lease_lost", None)
        ctx = step_context(server=self.infos[row.server_id], sessions=self.sessions(row.server_id), clock=self.clock,
                           options=self.options, state=self._state_for(row, run),
                           checkpoint=lambda state: self._save_context(),
                           may_write=(lambda: not lost.is_set()) if lost is not None else None,
                           on_send=lambda commands: self._record_intent(row, commands))
        if resumed_issue is not None:
            ctx.issues.append(resumed_issue)
        # The exit must happen: an unreachable server's exit is retried with backoff (a server left in maintenance
        # is the worst outcome of a window).
        attempts = conf.exit_retry_attempts() if step.phase == Phase.EXIT and step.idempotent else 1
        try:
            try:
                result = execute(step, ctx, attempts=attempts, on_retry=lambda attempt: self._count_attempt(row))
            except DatabaseUnavailable:
                raise
            except RunLost:
                raise LeaseLost from None
            return self._record(row, ctx, result)
        finally:
            if self.on_step is not None:
                self.on_step(step.key, ctx)

    @retried("counting a step's attempt", row_fields=_ROW)
    def _count_attempt(self, row: StepRun) -> None:
        StepRun.objects.filter(pk=row.pk).update(attempts=F("attempts") + 1)
        row.attempts += 1

    def _record(self, row: StepRun, ctx: ExecutionContext, result: StepResult) -> str | None:
        """Write how the step ended: passed/skipped, parked on a hold, or failed and paused for an operator."""
        if result.hold is not None:
            return self._hold(row, ctx, result.hold)
        if result.status == "failed":
            return self._fail_and_pause(row, result.code, result.message, ctx.commands, ctx.issues, result.findings,
                                        kind=result.alert_kind)
        return self._passed(row, ctx, cast(StepOutcome, result.outcome))

    def _commands(self, row: StepRun, ctx_commands: list) -> list[dict[str, Any]]:
        # Earlier attempts stay in the log: the report shows what was sent before a retry or a crash. ``row`` was
        # read at the start of this iteration, and only the lease holder writes a running step.
        return list(row.commands or []) + [dict(c.as_dict(), step_attempt=row.attempts) for c in ctx_commands]

    def _issues(self, row: StepRun, issues: list[Issue]) -> list[dict[str, Any]]:
        return list(row.issues or []) + [i.as_dict()
                                         for i in issues]

    def _record_intent(self, row: StepRun, ctx_commands: list) -> None:
        """Put the step's command log, the command about to be sent last (outcome "sent"), on the step row: one UPDATE
        before each command, so a crash leaves "sent, outcome unknown" rather than nothing (issue 24 item 3). Raises
        RunLost (the command is not sent) when the step is no longer this worker's or the database stays down."""
        commands = self._commands(row, ctx_commands)
        if not with_retry(lambda: StepRun.objects.filter(pk=row.pk, status=S.RUNNING).update(commands=commands),
                          what="recording a command before sending it"):
            raise RunLost(f"step {row.order} is no longer running on this worker")

    @retried("saving the plan state")
    def _save_context(self, **extra: Any) -> None:
        if not self.lease.renew(context=jsonable(self.states), **extra):
            raise LeaseLost

    @retried("recording a step's result", row_fields=_ROW)
    def _passed(self, row: StepRun, ctx: ExecutionContext, outcome: StepOutcome) -> None:
        commands, issues = self._commands(row, ctx.commands), self._issues(row, ctx.issues + list(outcome.issues))
        with transaction.atomic():
            self._save_context()
            self._set_step(row, E.SKIP if outcome.status == "skipped" else E.PASS, finished_at=timezone.now(),
                           commands=commands, issues=issues, findings=jsonable(outcome.findings),
                           output_summary=outcome.summary, error="")
        row.commands, row.issues = commands, issues
        log.info("change %s step %s %s: %s", self.change_id, row.order, row.status, outcome.summary)
        return None

    @retried("parking the run on a hold", row_fields=_ROW)
    def _hold(self, row: StepRun, ctx: ExecutionContext, hold: Hold) -> str:
        remaining = (hold.until - self.clock.now()).total_seconds()
        if remaining <= 0:
            # A hold that is already due would wake at once and hold again: a plan bug, not something to spin on.
            return self._fail_and_pause(row, R.HOLD_OVERDUE, f"the step held past its time ({hold})", ctx.commands,
                                        ctx.issues, {})
        delay = remaining / float(getattr(self.clock, "speed", 1.0))
        wake_at = timezone.now() + timedelta(seconds=delay)
        commands, issues = self._commands(row, ctx.commands), self._issues(row, ctx.issues)
        with transaction.atomic():
            # Park only if the work-done report has not arrived since this step read it: that report's own task
            # found the lease busy and was dropped, so parking now would wait until the window end.
            parked = self.lease.release(where=Q(work_done_at__isnull=True), context=jsonable(self.states),
                                        wake_at=wake_at)
            if not parked:
                if not self.lease.mine().exists():
                    raise LeaseLost
                self._set_step(row, E.REWIND, commands=commands, issues=issues)
                row.commands, row.issues = commands, issues
                self._run = None  # re-read: it now carries the work-done report
                return None  # the work was reported done meanwhile: run the step again now
            StepRun.objects.filter(pk=row.pk).update(output_summary=f"waiting… {hold}", commands=commands,
                                                     issues=issues)
            enqueue_run(self.change_id, eta=wake_at)
        log.info("change %s step %s holds until %s: %s", self.change_id, row.order, wake_at.isoformat(), hold)
        return "held"

    @retried("recording a failed step", row_fields=_ROW)
    def _fail_and_pause(self, row: StepRun, code: str, message: str, ctx_commands: list, ctx_issues: list[Issue],
                        findings: dict[str, Any], *, kind: str = Alert.Kind.PAUSED) -> str:
        commands, issues = self._commands(row, ctx_commands), self._issues(row, ctx_issues)
        with transaction.atomic():
            self._save_context()
            self._set_step(row, E.FAIL, finished_at=timezone.now(), commands=commands, issues=issues,
                           findings=jsonable(findings), output_summary=message[:2000], error=message)
            return self._pause(row, f"step {row.order} ({row.name}) failed: {message}", code, kind=kind,
                               evidence=jsonable(findings))

    @retried("pausing the window")
    def _pause(self, row: StepRun | None, message: str, code: str, *, kind: str = Alert.Kind.PAUSED,
               server: Server | None = None, evidence: dict[str, Any] | None = None) -> str:
        """Stop for an operator, recording why as data (``changes.models.Pause``): the report reads that record."""
        server = server or (self.servers.get(row.server_id) if row is not None else None)
        change_pause(self.change_id, actor=ACTOR, code=code, message=message, step=row, server=server,
                     evidence=evidence, alert_kind=kind)
        log.warning("change %s paused: %s", self.change_id, message)
        return "paused"

    @retried("ending the window")
    def _finish(self, run: WindowRun) -> str:
        final = State.ABORTED if run.aborting else State.COMPLETED
        with transaction.atomic():
            if not self.lease.mine().update(finished_at=timezone.now(), wake_at=None):
                raise LeaseLost
            change_transition(self.change_id, final, actor=ACTOR,
                              reason="exit and verification done after an abort" if run.aborting
                              else "all steps done")
        log.info("change %s %s", self.change_id, final)
        return str(final)


def _outcomes_unknown(row: StepRun) -> str:
    """Mark the commands an interrupted attempt sent without recording the answer as "sent, outcome unknown" (they
    may or may not have run on the server); the words to add to the step's note, naming them."""
    unknown = []
    for command in row.commands or []:
        if command.get("outcome") == SENT:
            command["outcome"] = OUTCOME_UNKNOWN
            parameters = command.get("parameters") or {}
            words = " ".join([str(command.get("cmdlet", "?")), *(f"-{k} {v}" for k, v in parameters.items())])
            unknown.append(words if len(words) <= 120 else words[:119] + "…")
    if not unknown:
        return ""
    return f"; sent by the interrupted attempt with no recorded outcome: {'; '.join(unknown)}"
