"""The in-process ExchangeSession over a SimulatedExchange, and the SimObject -> plain dict conversion.

``to_plain`` applies the same rules the pypsrp adapter's parser applies to real remoting output, so code reading
``CommandResult.output`` cannot tell the two apart: a dict of property -> value plus ``"_type"`` (first type name,
no ``Deserialized.``); enums as their name; DateTime as aware datetime; lists as lists (dicts for complex items);
any other nested object (Identity, ADObjectId, ByteQuantifiedSize, ...) as its ToString.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from runner.exchange.session import (
    CmdletError,
    CommandResult,
    Endpoint,
    EndpointUnreachable,
    ErrorRecord,
)

from .model import SimulatedExchange
from .objects import SimEnum, SimError, SimList, SimObject, SimTerminatingError

_PREFIX = "Deserialized."


def to_plain(obj: Any) -> Any:
    """Convert one output object (usually a SimObject) to the plain shape runner code reads."""
    if isinstance(obj, SimObject):
        plain: dict[str, Any] = {name: _value(value) for name, value in obj.props.items()}
        plain["_type"] = _first_type(obj.type_names)
        return plain
    return _value(obj)


def _first_type(type_names: Sequence[str]) -> str:
    first = type_names[0] if type_names else "System.Object"
    return first[len(_PREFIX):] if first.startswith(_PREFIX) else first


def _value(value: Any) -> Any:
    if isinstance(value, SimEnum):
        return value.name
    if isinstance(value, SimList):
        return [to_plain(item) if isinstance(item, SimObject) else _value(item) for item in value.items]
    if isinstance(value, SimObject):
        return value.to_string
    if isinstance(value, datetime):
        return value
    return value


def to_error_record(error: SimError) -> ErrorRecord:
    return ErrorRecord(message=error.message, error_id=error.error_id, category=error.category, target=error.target,
                       exception_type=error.exception_type)


class SimulatorSession:
    """``runner.exchange.session.ExchangeSession`` answered in-process by a simulated organisation."""

    def __init__(self, sim: SimulatedExchange, server: str, *, user: str = "sim\\runner") -> None:
        self.sim = sim
        self.server = server
        self.user = user
        self.closed = False

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        endpoint: Endpoint = Endpoint.EXCHANGE,
    ) -> CommandResult:
        """Run one cmdlet; terminating errors raise CmdletError, the ``unreachable`` fault EndpointUnreachable."""
        if self.sim.take_http_failure(self.server):
            # The real client would see a refused/reset connection before any PSRP message is exchanged.
            error = EndpointUnreachable(f"{self.server}: connection refused (simulated)")
            error.sent = False
            raise error
        pairs = list(parameters.items()) if isinstance(parameters, Mapping) else list(parameters or [])
        try:
            result = self.sim.invoke(self.server, str(Endpoint(endpoint)), cmdlet, pairs, user=self.user)
        except SimTerminatingError as exc:
            raise CmdletError(cmdlet, to_error_record(exc.error)) from None
        return CommandResult(
            cmdlet=cmdlet,
            output=[to_plain(o) for o in result.output],
            errors=[to_error_record(e) for e in result.errors],
            warnings=list(result.warnings),
        )

    def release_finished(self) -> None:
        """Nothing to free: in-process commands leave nothing behind on a server."""

    def take_notices(self) -> list[str]:
        return []

    @property
    def mechanisms(self) -> dict[Endpoint, str]:
        return {}  # in-process: nothing authenticates

    @property
    def relay(self) -> str | None:
        return None

    def close(self) -> None:
        self.closed = True
