"""The execution context a step runs in: sessions, recording of commands, retries of reads, polling. No database:
the engine persists what the context recorded, so steps can also be run directly against an in-process simulator.

``ExecutionContext.run`` is the one layer that sends a command again after it may have reached the server: reads
only, on retryable transport and throttling errors, each retry recorded as an issue (docs/failures-and-retries.md).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runner.exchange import cmdlets
from runner.exchange.parameters import redact_parameters
from runner.exchange.session import CommandResult, Endpoint, ExchangeSession, ExchangeSessionError
from runner.step_types import Clock, Issue, Options, Poll, PollResult, RetryPolicy, ServerInfo

log = logging.getLogger(__name__)

# A command's outcome while it is out (its intent is on the step's log before it is sent, issue 24 item 3), and once
# its attempt was interrupted before the answer was recorded: it may or may not have run on the server.
SENT = "sent"
OUTCOME_UNKNOWN = "sent, outcome unknown"


@dataclass
class CommandRecord:
    """One command as sent (parameters redacted) and what came back, for the step's log and the report."""

    cmdlet: str
    parameters: dict[str, Any]
    endpoint: str
    access: str  # "read" | "write", from runner/exchange/cmdlets.py
    started_at: str
    duration_ms: int
    outcome: str  # "ok" | "errors" | "failed: <error>" | SENT (out now) | OUTCOME_UNKNOWN (its attempt was cut off)
    objects: int = 0
    output: str = ""  # what came back, compact and truncated (the report's appendix shows it)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    attempt: int = 1
    via: str | None = None  # the server whose endpoint ran it, when not the target's own (a DAG peer's)
    auth: str | None = None  # the mechanism that authenticated the endpoint (kerberos, ntlm, basic), when known

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ([], None)}


class DryRunViolation(Exception):
    """A step tried a mutating command during a dry run: a plan bug, never sent."""


class RunLost(Exception):
    """The worker's lease expired while a step ran (another worker may have taken the window over): stop writing."""


class ExecutionContext:
    """Implements ``runner.step_types.StepContext`` over one session per endpoint of the target server."""

    def __init__(
        self,
        *,
        server: ServerInfo,
        sessions: Mapping[Endpoint, ExchangeSession] | Callable[[Endpoint], ExchangeSession],
        clock: Clock,
        options: Options | None = None,
        state: dict[str, Any] | None = None,
        dry_run: bool = False,
        checkpoint: Callable[[dict[str, Any]], None] | None = None,
        may_write: Callable[[], bool] | None = None,
        on_send: Callable[[list[CommandRecord]], None] | None = None,
    ) -> None:
        self.server = server
        self.options = options or Options()
        self.clock = clock
        self.state = state if state is not None else {}
        self.dry_run = dry_run
        self._sessions = sessions
        self._used: dict[Endpoint, ExchangeSession] = {}
        self._checkpoint = checkpoint
        # False once the engine lost its lease: another worker may be running this change, so no more writes.
        self._may_write = may_write or (lambda: True)
        # Persists the command log before each command leaves (the engine: one UPDATE of the step row), so a crash
        # leaves "sent, outcome unknown" rather than nothing. It raises (RunLost) when it cannot: nothing is sent.
        self._on_send = on_send
        self.commands: list[CommandRecord] = []
        self.issues: list[Issue] = []
        # Time spent waiting on purpose (polls, backoff) vs inside commands: the engine's overhead is the rest.
        self.waited = 0.0
        self.command_time = 0.0

    def session(self, endpoint: Endpoint) -> ExchangeSession:
        session = self._sessions(endpoint) if callable(self._sessions) else self._sessions[endpoint]
        self._used[endpoint] = session
        return session

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        endpoint: Endpoint = Endpoint.EXCHANGE,
        retry: RetryPolicy | None = None,
    ) -> CommandResult:
        """Run one cmdlet; reads are retried on retryable transport errors (recorded as issues), writes never.

        Only cmdlets of the table in ``runner.exchange.cmdlets`` are sent, each on its own endpoint (UnknownCmdlet
        otherwise, like DryRunViolation a plan bug)."""
        spec, endpoint = cmdlets.spec(cmdlet), Endpoint(endpoint)
        if spec.endpoint != endpoint:
            raise cmdlets.UnknownCmdlet(f"{cmdlet} runs on the {spec.endpoint.value} endpoint, not {endpoint.value}")
        if self.dry_run and not spec.is_read:
            raise DryRunViolation(f"{cmdlet} is not allowed in a dry run")
        if not spec.is_read and not self._may_write():
            raise RunLost(f"{cmdlet} not sent: this worker lost its lease on the window")
        policy = retry or RetryPolicy()
        attempts = policy.attempts if spec.is_read else 1
        delay = policy.backoff
        for attempt in range(1, attempts + 1):
            session = self.session(endpoint)
            record = self._record(cmdlet, parameters, endpoint, self.clock.now(), attempt=attempt)
            if self._on_send is not None:
                self._on_send(self.commands)
            t0 = time.perf_counter()
            try:
                result = session.run(cmdlet, parameters, endpoint=endpoint)
            except ExchangeSessionError as exc:
                self.command_time += time.perf_counter() - t0
                self._take_notices(session, f"{cmdlet} failed all the same")
                self._answered(record, t0, f"failed: {exc}", via=self._via(session))
                if not exc.retryable or attempt == attempts:
                    raise
                self.issues.append(Issue(f"{cmdlet} failed ({exc}); retried", f"retry {attempt + 1} of {attempts}"))
                self.wait(delay)
                delay *= 2
                continue
            self.command_time += time.perf_counter() - t0
            self._take_notices(session, f"{cmdlet} then ran")
            record.auth = session.mechanisms.get(endpoint)
            record.objects = len(result.output)
            record.output = output_preview(result.output)
            record.errors = [e.message for e in result.errors]
            record.warnings = list(result.warnings)
            self._answered(record, t0, "errors" if result.errors else "ok", via=self._via(session))
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _via(self, session: ExchangeSession) -> str | None:
        name = session.relay
        return None if not name or name.upper() == self.server.name.upper() else name

    def _take_notices(self, session: ExchangeSession, resolution: str) -> None:
        for notice in session.take_notices():
            # e.g. the relay's endpoint did not answer and another DAG member's took over, or a pool could not be
            # opened and the command, not sent yet, was sent once more
            self.issues.append(Issue(notice, resolution))

    def _record(self, cmdlet: str, parameters: Any, endpoint: Endpoint, started: Any, *,
                attempt: int) -> CommandRecord:
        """The command's entry in the log, made before it is sent: outcome SENT until the answer comes."""
        record = CommandRecord(
            cmdlet=cmdlet, parameters=jsonable(redact_parameters(parameters)), endpoint=str(endpoint),
            access=str(cmdlets.access(cmdlet)), started_at=started.isoformat(), duration_ms=0, outcome=SENT,
            attempt=attempt,
        )
        self.commands.append(record)
        return record

    def _answered(self, record: CommandRecord, t0: float, outcome: str, *, via: str | None) -> None:
        record.duration_ms, record.outcome, record.via = int((time.perf_counter() - t0) * 1000), outcome, via
        log.info("%s %s %s → %s", self.server.name, record.cmdlet, record.parameters, outcome)

    def reconnect(self, endpoint: Endpoint) -> None:
        """Close this endpoint's session: the next command opens a fresh connection. Polls across a server that
        restarts WinRM or reboots use one short connection per poll; setup wants no Exchange session of ours open."""
        session = self.session(Endpoint(endpoint))  # opened lazily: getting it costs no connection
        self._used.pop(Endpoint(endpoint), None)
        session.close()

    def checkpoint(self) -> None:
        if self._checkpoint is not None:
            self._checkpoint(self.state)

    def wait(self, seconds: float) -> None:
        t0 = time.perf_counter()
        for session in self._used.values():
            # Waiting anyway: the moment to terminate finished pipelines, off the commands' critical path. It is
            # still remoting time, counted as such.
            session.release_finished()
        self.command_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        self.clock.sleep(seconds)
        self.waited += time.perf_counter() - t0

    def poll(self, check: Callable[[], tuple[bool, Any, str]], policy: Poll, *, what: str) -> PollResult:
        """Run ``check`` until it reports done, no progress for ``no_progress_timeout`` or ``total_timeout``.

        ``check`` returns (done, progress value, description); progress is any comparable value that changes while
        things move (e.g. the number of queued messages).
        """
        start = self.clock.now()
        polls, last_progress_value, last_progress_at = 0, object(), start
        while True:
            polls += 1
            done, progress, detail = check()
            now = self.clock.now()
            elapsed = (now - start).total_seconds()
            if done:
                return PollResult(True, polls, elapsed, detail)
            if progress != last_progress_value:
                last_progress_value, last_progress_at = progress, now
            stalled_for = (now - last_progress_at).total_seconds()
            if policy.no_progress_timeout is not None and stalled_for >= policy.no_progress_timeout:
                return PollResult(False, polls, elapsed, f"{what}: no progress for {stalled_for:.0f} s; {detail}",
                                  stalled=True)
            if elapsed >= policy.total_timeout:
                return PollResult(False, polls, elapsed, f"{what}: not done after {elapsed:.0f} s; {detail}")
            self.wait(policy.interval)


OUTPUT_PREVIEW_CHARS = 1200


def output_preview(objects: list[Any], limit: int = OUTPUT_PREVIEW_CHARS) -> str:
    """The objects a cmdlet returned, one compact JSON line each, cut at ``limit`` characters with a note: enough
    for a reader to see what the server said, without storing whole outputs in every step row."""
    lines, used = [], 0
    for index, obj in enumerate(objects):
        line = json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if used + len(line) > limit:
            room = max(0, limit - used)
            if room > 80:
                lines.append(line[:room] + "…")
            lines.append(f"(output truncated: {len(objects) - index} of {len(objects)} object(s) not shown in full)")
            break
        lines.append(line)
        used += len(line)
    return "\n".join(lines)


def jsonable(value: Any) -> Any:
    """VALUE as JSON-ready data: string keys, lists for tuples and sets, ISO dates, anything else as its text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
