"""Template filters of the report: break opportunities in long identifiers, so narrow columns wrap them at their
punctuation (``client:|servicenow``, ``window.|work_done``, ``EX01\\|Submission``) or between the words of a
CamelCase name (``HttpProxy|Availability|Group``) instead of splitting a word at an arbitrary letter."""
from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# Only tokens at least this long get break opportunities: short ones fit, and prose keeps "4.4.0" or "e.g." whole.
_MIN_TOKEN = 12
_TOKEN = re.compile(rf"\S{{{_MIN_TOKEN},}}")
_AFTER_PUNCT = re.compile(r"([:._\\/@,;=|-])(?=[^\s])")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")
_WBR = "\x00"  # placeholder, replaced by <wbr> after escaping


def _mark(token: str) -> str:
    return _CAMEL.sub(_WBR, _AFTER_PUNCT.sub(r"\1" + _WBR, token))


@register.filter(is_safe=True)
def breakable(value: object) -> SafeString:
    """The value, HTML-escaped, with <wbr> after punctuation and between CamelCase words of long tokens."""
    text = _TOKEN.sub(lambda m: _mark(m.group(0)), str(value).replace(_WBR, ""))
    return mark_safe(escape(text).replace(_WBR, "<wbr>"))  # noqa: S308 - escaped just above


@register.filter
def index(items: list[object], i: int) -> object:
    """``items[i]``, or "auto" past the end (a table's column widths)."""
    return items[i] if 0 <= i < len(items) else "auto"
