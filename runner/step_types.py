"""The vocabulary shared by the plans (what to do) and the engine (how it is run, persisted and resumed).

A plan is an ordered list of ``Step``s. The engine calls ``step.run(ctx)`` with a ``StepContext``; the step talks to
Exchange only through ``ctx.run`` (which records every command, secrets redacted), keeps what later steps need in
``ctx.state`` (persisted after every step, so a resumed run on another worker sees it), waits only through
``ctx.poll`` / ``ctx.clock`` and returns a ``StepOutcome``. A step raises ``StepFailed`` when it cannot reach its goal:
the engine then pauses the window for an operator decision.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from runner.exchange.session import CommandResult, Endpoint


class Phase(enum.StrEnum):
    PRECHECK = "precheck"
    ENTER = "enter"
    WORK = "work"
    EXIT = "exit"
    VERIFY = "verify"


@dataclass(frozen=True)
class Poll:
    """How a verification waits: every ``interval`` s; give up after ``no_progress_timeout`` s without progress or
    ``total_timeout`` s in all."""

    interval: float
    total_timeout: float
    no_progress_timeout: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of reads that fail with a retryable transport or throttling error (never of writes, never of cmdlet
    errors). The context is the only layer that retries a command (docs/failures-and-retries.md)."""

    attempts: int = 3
    backoff: float = 5.0  # seconds before the 2nd attempt, doubled each time


@dataclass(frozen=True)
class Issue:
    """An anomaly met during a step and how it was resolved (automatically, or left for the report)."""

    summary: str  # what the engine saw, e.g. "3 messages left in EX01\\12 (Retry) after 480 s"
    resolution: str = ""  # e.g. "drained on the 2nd poll", "recorded; window continued"
    automatic: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "resolution": self.resolution, "automatic": self.automatic}


@dataclass
class StepOutcome:
    """What a step achieved. ``status``: passed, or skipped (the guard found the server already in the wanted state —
    ``summary`` says why). ``findings`` is structured data for the report (pre-check results, snapshots)."""

    status: str  # "passed" | "skipped"
    summary: str
    issues: list[Issue] = field(default_factory=list)
    findings: dict[str, Any] = field(default_factory=dict)


class StepFailed(Exception):
    """The step could not reach its goal; the window pauses for an operator (retry | skip | abort)."""

    def __init__(self, message: str, *, findings: Mapping[str, Any] | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.findings = dict(findings or {})
        self.retryable = retryable


class Hold(Exception):  # noqa: N818 - a signal, not an error
    """The step waits for something outside the engine (the operator's work-done report). The run parks — the change
    stays ``running`` — and is woken by that report or at ``until``, when the step runs again."""

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message)
        self.until = until


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


# Exchange 2013 (15.0) and 2016 (15.1) have Unified Messaging; 2019 (15.2) and Subscription Edition removed it.
_UM_VERSION = re.compile(r"\b(?:2013|2016)\b|\b15\.0?[01]\b")
_NO_UM_VERSION = re.compile(r"\b(?:2019|SE)\b|Subscription Edition|\b15\.0?2\b")


@dataclass(frozen=True)
class ServerInfo:
    """What a plan knows of its target from the inventory."""

    name: str
    fqdn: str
    dag_name: str | None = None
    peers: tuple[ServerInfo, ...] = ()  # other members of the same DAG (empty for a standalone server)
    version: str = ""  # free text: "Exchange Server 2016 CU23", "2019", "15.1.2507.6"...
    # The account Exchange setup runs as (changes.Server.install_username); its password is never in the plan state
    # or a log: ``install_password`` is a callable that reads it from the inventory when the task is registered.
    install_username: str = ""
    install_password: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    @property
    def unified_messaging(self) -> bool | None:
        """True for 2013/2016, False for 2019 and SE (no UM), None when the version does not say."""
        if _UM_VERSION.search(self.version):
            return True
        if _NO_UM_VERSION.search(self.version):
            return False
        return None


@dataclass(frozen=True)
class Options:
    """Operator choices that change what a plan does."""

    clear_setup_leftovers: bool = False  # also clear Functional votes a failed CU left (MS-DAG, DSC)
    backup_max_age_hours: int = 24
    queue_drain: Poll = Poll(interval=10, total_timeout=480, no_progress_timeout=60)
    # The change's work phase (changes.work, normalised): {"kind": "hold"} | reboot | exchange-update.
    work: Mapping[str, Any] = field(default_factory=lambda: {"kind": "hold"})
    # How often an install or a reboot wait polls (seconds): one short connection per poll.
    install_poll: float = 60.0


class StepContext(Protocol):
    server: ServerInfo
    options: Options
    clock: Clock
    state: dict[str, Any]  # JSON-serialisable; persisted by the engine after every step
    dry_run: bool  # read-only pre-checks only; a mutating ctx.run raises

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        endpoint: Endpoint = Endpoint.EXCHANGE,
        retry: RetryPolicy | None = None,
    ) -> CommandResult: ...

    def poll(self, check: Callable[[], tuple[bool, Any, str]], policy: Poll, *, what: str) -> PollResult: ...

    def reconnect(self, endpoint: Endpoint) -> None:
        """Close this run's session to ``endpoint``; the next command opens a new connection."""

    def checkpoint(self) -> None:
        """Persist ``state`` now, in its own transaction: a step writes a "sent" marker and checkpoints BEFORE a
        command that re-verification cannot tell apart from not sent (a service restart, a redirect), so a
        worker that resumes after a crash never sends it twice."""


@dataclass
class PollResult:
    """``done``: the check passed; ``polls``: how many checks ran; ``detail``: the last check's description."""

    done: bool
    polls: int
    elapsed: float
    detail: str
    stalled: bool = False  # gave up for lack of progress rather than total time


DEFAULT_STEP_TIMEOUT = 600.0


@dataclass(frozen=True)
class Step:
    """One step of a plan. ``run`` is check-then-set: read the server, act only if needed, verify."""

    key: str  # stable, unique in the plan, e.g. "enter.hubtransport_draining"
    phase: Phase
    title: str  # for people: "Set HubTransport to Draining"
    run: Callable[[StepContext], StepOutcome]
    idempotent: bool = True  # safe to re-run after a crash (re-verifies); else a half-done step pauses
    skippable: bool = True  # may an operator skip it after a failure?
    mutating: bool = True  # does it change the server? (dry runs run only non-mutating pre-checks)
    gate: bool = False  # a pre-check whose failure blocks the window unless an operator overrides with a reason
    # How long one attempt may take, its polls included; the watchdog calls a step running past it (plus a grace)
    # stalled. Most steps send a few commands; the waits are bounded by their Poll policies (at most 5 min each).
    timeout: float = DEFAULT_STEP_TIMEOUT


@dataclass(frozen=True)
class Plan:
    name: str
    variant: str  # "standalone" | "dag-member"
    steps: tuple[Step, ...]

    def step(self, key: str) -> Step:
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(key)

    def phase(self, phase: Phase) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.phase == phase)
