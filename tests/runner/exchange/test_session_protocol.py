"""Every session implementation has every member of ``ExchangeSession``, with the protocol's signatures, so the
runner calls them without probing."""
from __future__ import annotations

import inspect

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.session import SimulatorSession
from runner.exchange.pypsrp_session import EndpointConfig, PypsrpSession
from runner.exchange.session import Endpoint, ExchangeSession
from runner.sessions import RelayedSession

IMPLEMENTATIONS = [PypsrpSession, RelayedSession, SimulatorSession]

# The protocol's own members, not those typing.Protocol adds.
MEMBERS = sorted(name for name in vars(ExchangeSession)
                 if not name.startswith("_") and (callable(vars(ExchangeSession)[name])
                                                  or isinstance(vars(ExchangeSession)[name], property)))


def _shape(member: object) -> list[tuple[str, object, object]]:
    """Parameter names, kinds and defaults (annotations are strings under ``from __future__ import annotations``
    and may be spelled differently, so they are not compared)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]


def test_the_protocol_declares_the_members_the_runner_calls() -> None:
    assert MEMBERS == ["close", "mechanisms", "relay", "release_finished", "run", "take_notices"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("name", MEMBERS)
def test_each_implementation_has_each_member_with_the_protocols_signature(implementation: type, name: str) -> None:
    expected = vars(ExchangeSession)[name]
    actual = inspect.getattr_static(implementation, name, None)
    assert actual is not None, f"{implementation.__name__} has no {name}"
    if isinstance(expected, property):
        assert isinstance(actual, property), f"{implementation.__name__}.{name} must be a property"
        return
    assert callable(actual)
    assert _shape(actual) == _shape(expected), f"{implementation.__name__}.{name}{inspect.signature(actual)}"


def test_instances_pass_the_runtime_check() -> None:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    config = EndpointConfig(url="http://127.0.0.1:1/EX01/PowerShell", auth="basic", username="u", password="p",
                            encryption="never")
    sessions = [SimulatorSession(sim, "EX01"), PypsrpSession("EX01", {Endpoint.EXCHANGE: config})]
    for session in sessions:
        assert isinstance(session, ExchangeSession)
        assert session.take_notices() == [] and session.relay is None and dict(session.mechanisms) == {}
        session.release_finished()  # nothing open: a no-op, not an error
        session.close()


def test_a_session_missing_a_member_fails_the_runtime_check() -> None:
    class RunOnly:
        def run(self, cmdlet, parameters=None, *, endpoint=Endpoint.EXCHANGE):  # noqa: ANN001, ANN201
            raise AssertionError("not called")

        def close(self) -> None:
            pass

    assert not isinstance(RunOnly(), ExchangeSession)
