"""Small helpers shared by the step modules: running a command and turning Exchange errors into ``StepFailed``."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from runner.exchange.session import CmdletError, CommandResult, Endpoint
from runner.step_types import StepContext, StepFailed

EXCHANGE = Endpoint.EXCHANGE
DEFAULT = Endpoint.DEFAULT


def call(ctx: StepContext, cmdlet: str, parameters: Mapping[str, Any], *, endpoint: Endpoint = EXCHANGE,
         what: str = "") -> CommandResult:
    """Run one cmdlet; a terminating error or a non-terminating error record becomes ``StepFailed``.

    Many Exchange failures are non-terminating error records, so ``ok`` is checked as well as exceptions (§4.1).
    Transport errors (unreachable endpoint, broken pool) propagate unchanged: the context has already retried a read,
    and the engine decides what the step's failure means (docs/failures-and-retries.md).
    """
    try:
        result = ctx.run(cmdlet, parameters, endpoint=endpoint)
    except CmdletError as exc:
        raise StepFailed(f"{what or cmdlet} failed: {exc.record.message}",
                         findings={"cmdlet": cmdlet, "error": exc.record.message, "error_id": exc.record.error_id}) \
            from exc
    if result.errors:
        messages = [e.message for e in result.errors]
        raise StepFailed(f"{what or cmdlet} reported errors: {'; '.join(messages)}",
                         findings={"cmdlet": cmdlet, "errors": messages})
    return result


def first(result: CommandResult, what: str) -> dict[str, Any]:
    """The single object a Get- cmdlet with an explicit identity returns."""
    if not result.output:
        raise StepFailed(f"{what}: no object returned", findings={"cmdlet": result.cmdlet})
    return result.output[0]


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def now_iso(ctx: StepContext) -> str:
    return ctx.clock.now().isoformat()


def state_list(ctx: StepContext, key: str) -> list[Any]:
    """A list kept in ``ctx.state`` (created on first use)."""
    value = ctx.state.get(key)
    if not isinstance(value, list):
        value = []
        ctx.state[key] = value
    return value
