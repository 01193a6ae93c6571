"""Display formatting shared by the report's data object: times in UTC, durations, truncation with a note, and
recorded commands as PowerShell lines."""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

REDACTED = "***"
MAX_COMMAND_CHARS = 400
MAX_TEXT_CHARS = 1500

# A command whose intent was recorded before it was sent and whose answer never was (the engine's runner/context.py
# SENT, made OUTCOME_UNKNOWN when the step is found interrupted): it may or may not have run on the server. In an ended
# window a command still "sent" was cut off the same way.
OUTCOME_UNKNOWN = ("sent", "sent, outcome unknown")
UNKNOWN_WORDS = ("SENT, OUTCOME UNKNOWN: the attempt was interrupted before the answer was recorded; it may have run "
                 "on the server")


def outcome_unknown(command: dict[str, Any]) -> bool:
    return str(command.get("outcome", "")) in OUTCOME_UNKNOWN


def fmt_dt(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_time(value: datetime | str | None) -> str:
    """The time of day only (the command log lists it under its step, whose date is in the timeline)."""
    text = fmt_dt(value)
    return text[11:19] if text.endswith(" UTC") else text


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min {s:02d} s"
    return f"{m} min {s:02d} s" if m else f"{s} s"


def span(start: datetime | None, end: datetime | None) -> str:
    return fmt_duration((end - start).total_seconds()) if start and end else "—"


def clip(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters not shown]"


def show(value: Any) -> str:
    """A value for a table cell: "—" when empty, yes/no, a list of plain values as a comma-separated list."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
        return clip(", ".join(str(v) for v in value), 300)
    if isinstance(value, dict | list):
        return clip(json.dumps(value, sort_keys=True, ensure_ascii=False), 300)
    return clip(value, 300)


_HEADINGS = {"message_count": "Messages", "next_hop": "Next hop", "last_error": "Last error", "own": "Own queue",
             "required_running": "Required running", "not_running": "Not running", "delivery_type": "Delivery type"}


def heading(key: str) -> str:
    """A findings key as a column heading: ``next_hop`` → "Next hop"."""
    key = str(key)
    return _HEADINGS.get(key) or key.replace("_", " ").strip().capitalize() or key


def command_text(cmdlet: str, parameters: dict[str, Any] | None) -> str:
    """A recorded command as a PowerShell line (for reading; it is sent as cmdlet + parameters, never as text)."""
    parts = [cmdlet]
    for name, value in (parameters or {}).items():
        if value is True:
            parts.append(f"-{name}")
        elif value is False:
            parts.append(f"-{name}:$false")
        elif isinstance(value, int | float):
            parts.append(f"-{name} {value}")
        elif isinstance(value, list):
            parts.append(f"-{name} " + ",".join(_quote(v) for v in value))
        elif isinstance(value, dict):
            parts.append(f"-{name} " + json.dumps(value, sort_keys=True))
        else:
            parts.append(f"-{name} {_quote(value)}")
    return clip(" ".join(parts), MAX_COMMAND_CHARS)


def _quote(value: Any) -> str:
    text = str(value)
    if text == REDACTED or re.fullmatch(r"[A-Za-z0-9_.\\:@/-]+", text):
        return text
    return "'" + text.replace("'", "''") + "'"


def person(user: Any) -> str:
    """A user as the report names them: ``Full Name (username)``, or the username alone."""
    if user is None:
        return ""
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return f"{full} ({user.username})" if full else user.username


def actor(label: str) -> str:
    """The person behind an audit actor label: ``user:olga`` and ``client:olga`` both read ``olga``."""
    kind, _, name = label.partition(":")
    return name if kind in ("user", "client") and name else label


def status_words(status: str) -> str:
    return status.replace("_", " ")
