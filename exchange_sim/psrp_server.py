"""The PSRP side of the simulated endpoint: one remote shell = one psrpcore ``ServerRunspacePool``.

psrpcore does the protocol work (fragments, CLIXML, pool and pipeline state machines); this module feeds it the bytes
from WS-Man Create/Command/Send, runs each pipeline's command against the simulator, converts values both ways and
keeps the outgoing PSRP payloads per target (the pool, or one pipeline) until a Receive collects them.
"""
from __future__ import annotations

import datetime
import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psrpcore import (
    CreatePipelineEvent,
    PSRPPayload,
    ServerPipeline,
    ServerRunspacePool,
    StreamType,
)
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSDateTime,
    PSEnumBase,
    PSInvocationState,
    PSList,
    PSNoteProperty,
    PSObject,
    PSSecureString,
    PSType,
    _serializer,  # private: patched below (_write_full_type_names)
)
from psrpcore.types._enum import PSEnumMeta

from exchange_sim.objects import SimEnum, SimError, SimList, SimObject, SimResult, SimTerminatingError


class _NeverReferenced(list):
    """A type-name list that never reports a type as already written, so every object carries its full <TN>."""

    def __contains__(self, item: object) -> bool:
        return False


def _write_full_type_names() -> None:
    """pypsrp 0.9.1 keeps lists of unknown .NET types as raw <LST> XML without registering the type names defined
    inside them, so a later <TNRef> to such a type (e.g. Get-DatabaseAvailabilityGroup: the ADObjectId type first
    written inside ``Servers``, then referenced by ``PrimaryActiveManager``) raises KeyError in the client. <TNRef> is
    only an optimisation in MS-PSRP, so the endpoint writes full type names every time."""
    original_init = _serializer._Serializer.__init__
    if getattr(original_init, "_exmaint_patched", False):
        return

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._tn_ref_list = _NeverReferenced()

    init._exmaint_patched = True  # type: ignore[attr-defined]
    _serializer._Serializer.__init__ = init


_write_full_type_names()

log = logging.getLogger(__name__)

# Objects cross remoting as serialized copies; the brief asks for the type names as a PowerShell client sees them.
TYPE_PREFIX = "Deserialized."
TERMINAL = {PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped}

Invoker = Callable[[str, list[tuple[str | None, Any]], bool], SimResult]


# --- values out: simulator objects -> psrpcore objects -------------------------------------------------------------


def _type_names(names: tuple[str, ...] | list[str]) -> list[str]:
    # Every .NET type derives from System.Object; pypsrp needs it to fall back to a generic object (without it the
    # client gets the raw XML as a string).
    names = list(names) if "System.Object" in names else [*names, "System.Object"]
    return [n if n.startswith(TYPE_PREFIX) else TYPE_PREFIX + n for n in names]


_enum_classes: dict[tuple[tuple[str, ...], str, int], Any] = {}
_enum_lock = threading.Lock()


def _enum_member(value: SimEnum) -> Any:
    """An enum member psrpcore serializes as <Obj><TN/><ToString>name</ToString><I32>value</I32></Obj>."""
    key = (tuple(value.type_names), value.name, int(value.value))
    with _enum_lock:
        member = _enum_classes.get(key)
        if member is None:
            # One tiny .NET-style enum class per (type, member): psrpcore takes the ToString from the member name and
            # the type names from the class, and enum classes cannot gain members after creation.
            namespace = PSEnumMeta.__prepare__("SimEnum", (PSEnumBase,))
            namespace[value.name] = int(value.value)
            cls = PSEnumMeta("SimEnum", (PSEnumBase,), namespace)
            PSType(_type_names(value.type_names), skip_inheritance=True, rehydrate=False)(cls)
            member = cls[value.name]
            _enum_classes[key] = member
    return member


def _datetime(value: datetime.datetime) -> PSDateTime:
    # .NET DateTime has 100 ns ticks and remoting always writes 7 fractional digits (2021-09-28T17:32:01.8071985Z).
    # psrpcore writes "%f" plus one digit from `nanosecond`, and nothing at all for a whole second: a nanosecond of
    # 1 forces the fraction without changing the tick digit.
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return PSDateTime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=value.tzinfo,
        nanosecond=1,
    )


def to_ps(value: Any, extended: dict[str, Any] | None = None) -> Any:
    """Convert a simulator value (SimObject, SimEnum, SimList, datetime, primitives) to its psrpcore form."""
    if isinstance(value, SimEnum):
        return _enum_member(value)
    if isinstance(value, SimList):
        items = PSList([to_ps(v) for v in value.items])
        items.PSObject.type_names = _type_names(value.type_names)
        return items
    if isinstance(value, SimObject):
        obj = PSObject()
        obj.PSObject.type_names = _type_names(value.type_names)
        obj.PSObject.to_string = value.to_string if value.to_string is not None else value.type_names[0]
        for name, prop in value.props.items():
            obj.PSObject.adapted_properties.append(PSNoteProperty(name, to_ps(prop)))
        for name, prop in (extended or {}).items():
            obj.PSObject.extended_properties.append(PSNoteProperty(name, to_ps(prop)))
        return obj
    if isinstance(value, datetime.datetime):
        return _datetime(value)
    if isinstance(value, (list, tuple)):
        return [to_ps(v) for v in value]
    if isinstance(value, dict):
        return {k: to_ps(v) for k, v in value.items()}
    return value


# --- values in: psrpcore deserialized parameters -> plain Python -------------------------------------------------


def from_ps(value: Any) -> Any:
    """Plain Python for a parameter value: str/bool/int/float/None (a switch)/list/dict."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, PSSecureString):
        try:
            return value.decrypt()
        except Exception:  # without a session key the plaintext cannot be had
            return str(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, datetime.datetime):
        return datetime.datetime.fromtimestamp(value.timestamp(), tz=value.tzinfo)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {from_ps(k): from_ps(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_ps(v) for v in value]
    meta = getattr(value, "PSObject", None)
    if meta is not None and (meta.adapted_properties or meta.extended_properties):
        props = meta.adapted_properties + meta.extended_properties
        return {p.name: from_ps(p.get_value(value)) for p in props}
    if meta is not None and meta.to_string is not None:
        return meta.to_string
    return str(value)


# --- error records -----------------------------------------------------------------------------------------------


def _category(name: str) -> ErrorCategory:
    try:
        return ErrorCategory[name]
    except KeyError:
        return ErrorCategory.NotSpecified


def _exception(error: SimError) -> NETException:
    exception = NETException(Message=error.message, HResult=-2146233087)
    # The client sees the .NET exception type through the type names, e.g. ManagementObjectNotFoundException.
    names = [error.exception_type] if error.exception_type and error.exception_type != "System.Exception" else []
    exception.PSObject.type_names = names + ["System.Exception", "System.Object"]
    return exception


def error_record(error: SimError, cmdlet: str) -> ErrorRecord:
    """An ErrorRecord with Exchange's FullyQualifiedErrorId, category and target."""
    return ErrorRecord(
        Exception=_exception(error),
        CategoryInfo=_category_info(error, cmdlet),
        TargetObject=error.target or None,
        FullyQualifiedErrorId=error.error_id,
    )


def _category_info(error: SimError, cmdlet: str) -> ErrorCategoryInfo:
    reason = error.exception_type.rsplit(".", 1)[-1] if error.exception_type else "Exception"
    return ErrorCategoryInfo(
        Category=_category(error.category),
        Activity=cmdlet,
        Reason=reason,
        TargetName=error.target or None,
        TargetType="String" if error.target else None,
    )


# --- the shell ---------------------------------------------------------------------------------------------------


@dataclass
class Command:
    """One pipeline in a shell, as the endpoint tracks it."""

    pipeline: ServerPipeline
    cmdlet: str = ""
    closed: bool = False  # a Terminate signal arrived


@dataclass
class Shell:
    """A WinRM shell that hosts one PSRP runspace pool."""

    shell_id: str
    server: str
    configuration: str
    user: str
    invoke: Invoker
    machine: str = ""
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    commands: dict[uuid.UUID, Command] = field(default_factory=dict)
    commands_run: int = 0

    def __post_init__(self) -> None:
        self.pool = ServerRunspacePool()
        self.lock = threading.Condition()
        # Outgoing payloads by target: None is the pool itself, otherwise a pipeline id.
        self.outbox: dict[uuid.UUID | None, list[bytes]] = {}

    # Everything below is called with self.lock held.

    def feed(self, data: bytes, pipeline_id: uuid.UUID | None = None) -> None:
        """Hand client PSRP fragments to psrpcore and act on the complete messages."""
        self.last_used = time.monotonic()
        self.pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
        while True:
            event = self.pool.next_event()
            if event is None:
                break
            if isinstance(event, CreatePipelineEvent):
                self._start(self.commands[event.pipeline_id])
        self._collect()
        self.lock.notify_all()

    def add_command(self, pipeline_id: uuid.UUID) -> Command:
        # psrpcore needs the pipeline object before the CREATE_PIPELINE message is processed.
        command = Command(ServerPipeline(self.pool, pipeline_id))
        self.commands[pipeline_id] = command
        return command

    def take(self, pipeline_id: uuid.UUID | None) -> list[bytes]:
        chunks = self.outbox.pop(pipeline_id, [])
        return chunks

    def has_data(self, pipeline_id: uuid.UUID | None) -> bool:
        return bool(self.outbox.get(pipeline_id))

    def is_done(self, pipeline_id: uuid.UUID) -> bool:
        command = self.commands.get(pipeline_id)
        return command is None or command.pipeline.state in TERMINAL

    def terminate(self, pipeline_id: uuid.UUID) -> None:
        """The client's Terminate signal (PowerShell.close()): forget the pipeline."""
        command = self.commands.pop(pipeline_id, None)
        if command is not None:
            command.closed = True
            self.pool.pipeline_table.pop(pipeline_id, None)
            self.outbox.pop(pipeline_id, None)

    def stop(self, pipeline_id: uuid.UUID) -> None:
        command = self.commands.get(pipeline_id)
        if command is not None and command.pipeline.state == PSInvocationState.Running:
            command.pipeline.stop()
            self._collect()
            self.lock.notify_all()

    def open_commands(self) -> int:
        return len(self.commands)

    def _collect(self) -> None:
        while True:
            payload = self.pool.data_to_send()
            if payload is None:
                return
            self.outbox.setdefault(payload.pipeline_id, []).append(payload.data)

    def _start(self, command: Command) -> None:
        # Like WinRM, Command returns at once and the pipeline runs on its own thread; Receive waits for its output,
        # so a slow cmdlet produces OperationTimeout faults that pypsrp retries.
        # Real servers send no PIPELINE_STATE=Running (the client assumes it): emitting one would cost a Receive.
        command.pipeline._change_state(PSInvocationState.Running, emit=False)
        self.commands_run += 1
        threading.Thread(target=self._execute, args=(command,), name=f"pipeline-{command.pipeline.pipeline_id}",
                         daemon=True).start()

    def _execute(self, command: Command) -> None:
        pipe = command.pipeline
        statements: list[list[Any]] = [[]]
        for cmd in pipe.metadata.commands:
            statements[-1].append(cmd)
            if cmd.end_of_statement:
                statements.append([])
        outcome: list[tuple[str, Any, str]] = []  # ("result", SimResult, cmdlet) | ("fail", SimError, cmdlet)
        for statement in [s for s in statements if s]:
            if len(statement) > 1:
                names = " | ".join(str(c.command_text) for c in statement)
                error = SimError(f"The simulator does not run pipelines of several commands: {names}",
                                 "PipelineNotSupported", "NotImplemented")
                outcome.append(("fail", error, names))
                break
            cmd = statement[0]
            command.cmdlet = str(cmd.command_text)
            # A positional argument keeps None as its name; the model binds it like PowerShell would (Identity).
            params = [(None if name is None else str(name), from_ps(value)) for name, value in cmd.parameters]
            try:
                outcome.append(("result", self.invoke(command.cmdlet, params, bool(cmd.is_script)), command.cmdlet))
            except SimTerminatingError as exc:
                outcome.append(("fail", exc.error, command.cmdlet))
                break
            except Exception as exc:  # a simulator bug must reach the client, not kill the server
                log.exception("simulator failed running %s", command.cmdlet)
                error = SimError(f"{type(exc).__name__}: {exc}", "SimulatorError", "NotSpecified")
                outcome.append(("fail", error, command.cmdlet))
                break
        with self.lock:
            # Stopped (ctrl_c) or closed (Terminate) while running: the client no longer wants the output.
            if command.closed or pipe.state != PSInvocationState.Running:
                return
            for kind, value, cmdlet in outcome:
                if kind == "result":
                    self._write(pipe, value, cmdlet)
                else:
                    self._fail(pipe, value, cmdlet)
            if pipe.state == PSInvocationState.Running:
                pipe.complete()
            self._collect()
            self.lock.notify_all()

    def _write(self, pipe: ServerPipeline, result: SimResult, cmdlet: str) -> None:
        # Remoting adds these note properties to every object it sends back (see the captures' <MS> block).
        extended = {"PSComputerName": self.machine, "RunspaceId": self.pool.runspace_pool_id,
                    "PSShowComputerName": False}
        for item in result.output:
            pipe.write_output(to_ps(item, extended if isinstance(item, SimObject) else None))
        for warning in result.warnings:
            pipe.write_warning(warning)
        for error in result.errors:
            pipe.write_error(
                _exception(error),
                category_info=_category_info(error, cmdlet),
                target_object=error.target or None,
                fully_qualified_error_id=error.error_id,
            )

    def _fail(self, pipe: ServerPipeline, error: SimError, cmdlet: str) -> None:
        # psrpcore 0.3.1 has no public "fail" call: its internal state change emits PIPELINE_STATE=Failed carrying
        # the ErrorRecord, which is what makes pypsrp set had_errors.
        pipe._change_state(PSInvocationState.Failed, error_record(error, cmdlet))
