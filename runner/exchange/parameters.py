"""Parameters as they are sent and as they are recorded: normalised, and with secrets redacted."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

REDACTED = "***"
_SECRET_WORDS = ("password", "credential", "securestring", "secret", "token", "key")


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _is_secret_value(value: Any) -> bool:
    type_name = type(value).__name__.lower()
    return "securestring" in type_name or "credential" in type_name


def normalize_parameters(
    parameters: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
) -> list[tuple[str, Any]]:
    """Parameters as an ordered list of (name, value); names lose a leading '-'. ``None`` values are refused."""
    if parameters is None:
        return []
    items = list(parameters.items()) if isinstance(parameters, Mapping) else [tuple(p) for p in parameters]
    result = []
    for name, value in items:
        name = str(name).lstrip("-")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ValueError(f"invalid parameter name {name!r}")
        if value is None:
            # Over PSRP a parameter without a value *is* a switch, so $null cannot be told apart from -Switch.
            raise ValueError(f"parameter {name}: None is ambiguous over PSRP; pass True for a switch")
        result.append((name, value))
    return result


def redact_parameters(
    parameters: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
) -> dict[str, Any]:
    """The parameters with secret-looking values (password, credential, SecureString, token, key) replaced."""
    redacted: dict[str, Any] = {}
    items = list(parameters.items()) if isinstance(parameters, Mapping) else list(parameters or [])
    for name, value in items:
        name = str(name).lstrip("-")
        redacted[name] = REDACTED if _is_secret_name(name) or _is_secret_value(value) else value
    return redacted


def _secret_strings(params: list[tuple[str, Any]]) -> list[str]:
    return [
        str(value)
        for name, value in params
        if (_is_secret_name(name) or _is_secret_value(value)) and isinstance(value, str) and len(value) >= 3
    ]


def _scrub(text: str, secrets: list[str]) -> str:
    # Error messages can echo a bound value ("Cannot bind parameter 'Password' to the target..."): scrub them.
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
