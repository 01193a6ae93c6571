"""Cmdlet registry and PowerShell-like parameter binding (case-insensitive names, unique prefixes, enum checks)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .call import Call
from .objects import EnumType, SimEnum, SimError, SimTerminatingError

EXCHANGE = "Microsoft.Exchange"
DEFAULT = "Microsoft.PowerShell"


@dataclass(frozen=True)
class Param:
    kind: str  # str | strlist | switch | bool | int | enum | any | resultsize
    enum: EnumType | None = None


STR = Param("str")
STRLIST = Param("strlist")
SWITCH = Param("switch")
BOOL = Param("bool")
INT = Param("int")
ANY = Param("any")
RESULT_SIZE = Param("resultsize")


def enum_param(enum_type: EnumType) -> Param:
    return Param("enum", enum_type)


_COMMON = {
    "ErrorAction": ANY, "WarningAction": ANY, "InformationAction": ANY, "ErrorVariable": ANY,
    "WarningVariable": ANY, "InformationVariable": ANY, "OutVariable": ANY, "OutBuffer": ANY,
    "PipelineVariable": ANY, "Verbose": SWITCH, "Debug": SWITCH,
}  # fmt: skip
_EXCHANGE_COMMON = {"DomainController": STR}
_SHOULD_PROCESS = {"Confirm": SWITCH, "WhatIf": SWITCH}


@dataclass
class CmdletSpec:
    name: str
    endpoint: str
    handler: Callable[[Call], None]
    params: dict[str, Param]
    positional: tuple[str, ...] = ()
    mandatory: tuple[str, ...] = ()
    all_params: dict[str, Param] = field(default_factory=dict)


REGISTRY: dict[str, CmdletSpec] = {}


def cmdlet(
    name: str,
    endpoint: str,
    *,
    params: dict[str, Param] | None = None,
    positional: tuple[str, ...] = (),
    mandatory: tuple[str, ...] = (),
    should_process: bool = False,
) -> Callable[[Callable[[Call], None]], Callable[[Call], None]]:
    """Register a handler for ``name`` on ``endpoint`` with its parameter set."""

    def register(handler: Callable[[Call], None]) -> Callable[[Call], None]:
        spec = CmdletSpec(name, endpoint, handler, dict(params or {}), positional, mandatory)
        spec.all_params = {**spec.params, **_COMMON}
        if endpoint == EXCHANGE:
            spec.all_params.update(_EXCHANGE_COMMON)
        if should_process:
            spec.all_params.update(_SHOULD_PROCESS)
        REGISTRY[name.lower()] = spec
        return handler

    return register


def bind(spec: CmdletSpec, parameters: Sequence[tuple[str | None, Any]]) -> dict[str, Any]:
    """Bind raw (name, value) pairs to canonical parameter names, converting values like PowerShell would."""
    bound: dict[str, Any] = {}
    position = 0
    for raw_name, value in parameters:
        if raw_name in (None, ""):
            if position >= len(spec.positional):
                raise _positional_error(spec.name, value)
            name = spec.positional[position]
            position += 1
        else:
            name = _resolve(spec, str(raw_name))
        if name in bound:
            raise _already_bound(spec.name, name)
        bound[name] = _convert(spec.name, name, spec.all_params[name], value)
    missing = [m for m in spec.mandatory if m not in bound]
    if missing:
        raise errors.missing_mandatory(spec.name, missing)
    return bound


def _resolve(spec: CmdletSpec, raw: str) -> str:
    wanted = raw.lstrip("-").rstrip(":").lower()
    exact = [n for n in spec.all_params if n.lower() == wanted]
    if exact:
        return exact[0]
    # PowerShell accepts any unambiguous prefix of a parameter name.
    prefixed = [n for n in spec.all_params if n.lower().startswith(wanted)] if wanted else []
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise errors.ambiguous_parameter(spec.name, raw, prefixed)
    raise errors.named_parameter_not_found(spec.name, raw.lstrip("-"))


def _convert(cmdlet_name: str, name: str, param: Param, value: Any) -> Any:
    kind = param.kind
    if kind == "any":
        return value
    if kind == "switch":
        if value is None:
            return True
        if isinstance(value, bool):
            return value
        raise errors.cannot_convert(cmdlet_name, name, value, "System.Management.Automation.SwitchParameter",
                                    f"Cannot convert the \"{value}\" value of type \"{type(value).__name__}\" to "
                                    "type \"System.Management.Automation.SwitchParameter\".")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "$true", "false", "$false"):
            return value.strip().lower() in ("true", "$true")
        raise errors.cannot_convert(cmdlet_name, name, value, "System.Boolean",
                                    "Boolean parameters accept only Boolean values and numbers, such as $True, "
                                    "$False, 1 or 0.")
    if kind == "enum":
        assert param.enum is not None  # noqa: S101 - registry invariant
        text = value.name if isinstance(value, SimEnum) else value
        canonical = param.enum.canonical(str(text)) if isinstance(text, str | int) else None
        if canonical is None:
            raise errors.cannot_convert(
                cmdlet_name, name, value, param.enum.type_name,
                f"Unable to match the identifier name {value} to a valid enumerator name. Specify one of the "
                f"following enumerator names and try again:\n{', '.join(param.enum.names)}",
            )
        return canonical
    if kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise errors.cannot_convert(cmdlet_name, name, value, "System.Int32",
                                        "Input string was not in a correct format.") from None
    if kind == "resultsize":
        if isinstance(value, str) and value.strip().lower() == "unlimited":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise errors.cannot_convert(cmdlet_name, name, value, "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]",
                                        "Input string was not in a correct format.") from None
    if kind == "strlist":
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        return [str(value)]
    # str
    if isinstance(value, list | tuple):
        if len(value) == 1:
            return str(value[0])
        raise errors.cannot_convert(cmdlet_name, name, value, "System.String",
                                    "Specified method is not supported.")
    if value is None:
        return None
    return str(value)


def _positional_error(cmdlet_name: str, value: Any) -> Exception:
    return SimTerminatingError(
        SimError(
            message=f"A positional parameter cannot be found that accepts argument '{value}'.",
            error_id=f"PositionalParameterNotFound,{errors.cmdlet_class(cmdlet_name)}",
            category="InvalidArgument",
            target=str(value),
            exception_type=errors.PARAMETER_BINDING_EXCEPTION,
        )
    )


def _already_bound(cmdlet_name: str, name: str) -> Exception:
    return SimTerminatingError(
        SimError(
            message=f"Cannot bind parameter because parameter '{name}' is specified more than once.",
            error_id=f"ParameterAlreadyBound,{errors.cmdlet_class(cmdlet_name)}",
            category="InvalidArgument",
            target=name,
            exception_type=errors.PARAMETER_BINDING_EXCEPTION,
        )
    )
