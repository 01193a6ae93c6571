"""A small OPATH ``-Filter`` evaluator, the way Get-Queue / Get-Message / Retry-Queue accept it.

The Exchange endpoint is no-language, so server-side filtering is the only filtering a caller has:
``Get-Queue -Server EX1 -Filter "MessageCount -gt 0 -and DeliveryType -ne 'ShadowRedundancy'"``.
Supported: -eq -ne -gt -lt -ge -le -like -notlike, -and -or -not, parentheses; values quoted, numeric,
$true/$false/$null or bare words. Comparison is case-insensitive; enums compare by name.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

from .objects import SimEnum, SimObject

Predicate = Callable[[Mapping[str, Any]], bool]
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<op>-(?:eq|ne|gt|lt|ge|le|like|notlike|and|or|not)\b) |
        '(?P<sq>(?:[^']|'')*)' | "(?P<dq>(?:[^"]|"")*)" |
        (?P<word>[^\s()'"]+)
    )""",
    re.VERBOSE | re.IGNORECASE,
)
_COMPARISONS = {"-eq", "-ne", "-gt", "-lt", "-ge", "-le", "-like", "-notlike"}


class FilterError(ValueError):
    """The filter text does not parse or names a property the object does not have."""


def compile_filter(text: str, properties: set[str]) -> Predicate:
    """Parse ``text`` once; ``properties`` are the names the filtered objects expose (case-insensitive)."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):  # the old script-block form is still accepted as a string
        text = text[1:-1]
    tokens = _tokenize(text)
    parser = _Parser(tokens, {p.lower(): p for p in properties})
    predicate = parser.expression()
    if parser.pos != len(tokens):
        raise FilterError(f"Invalid filter syntax near '{tokens[parser.pos][1]}'.")
    return predicate


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise FilterError(f"Invalid filter syntax at position {pos}.")
        pos = match.end()
        if match.group("lparen"):
            tokens.append(("(", "("))
        elif match.group("rparen"):
            tokens.append((")", ")"))
        elif match.group("op"):
            tokens.append(("op", match.group("op").lower()))
        elif match.group("sq") is not None:
            tokens.append(("str", match.group("sq").replace("''", "'")))
        elif match.group("dq") is not None:
            tokens.append(("str", match.group("dq").replace('""', '"')))
        else:
            tokens.append(("word", match.group("word")))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]], properties: dict[str, str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.properties = properties

    def _peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, Any]:
        token = self._peek()
        if token is None:
            raise FilterError("Invalid filter syntax: unexpected end of filter.")
        self.pos += 1
        return token

    def expression(self) -> Predicate:
        left = self._and()
        while self._peek() == ("op", "-or"):
            self._take()
            right = self._and()
            left = (lambda a, b: lambda obj: a(obj) or b(obj))(left, right)
        return left

    def _and(self) -> Predicate:
        left = self._not()
        while self._peek() == ("op", "-and"):
            self._take()
            right = self._not()
            left = (lambda a, b: lambda obj: a(obj) and b(obj))(left, right)
        return left

    def _not(self) -> Predicate:
        if self._peek() == ("op", "-not"):
            self._take()
            inner = self._not()
            return lambda obj: not inner(obj)
        return self._primary()

    def _primary(self) -> Predicate:
        kind, value = self._take()
        if kind == "(":
            inner = self.expression()
            if self._take()[0] != ")":
                raise FilterError("Invalid filter syntax: missing ')'.")
            return inner
        if kind != "word":
            raise FilterError(f"Invalid filter syntax: expected a property name, found '{value}'.")
        prop = self.properties.get(value.lower())
        if prop is None:
            raise FilterError(f"'{value}' is not a recognized filterable property.")
        op_kind, op = self._take()
        if op_kind != "op" or op not in _COMPARISONS:
            raise FilterError(f"Invalid filter syntax: expected a comparison operator after '{value}'.")
        operand_kind, operand = self._take()
        if operand_kind not in ("str", "word"):
            raise FilterError("Invalid filter syntax: expected a value.")
        literal = _literal(operand_kind, operand)
        return lambda obj: _compare(_plain(obj.get(prop)), op, literal)


def _literal(kind: str, text: str) -> Any:
    if kind == "word":
        lowered = text.lower()
        if lowered == "$true":
            return True
        if lowered == "$false":
            return False
        if lowered == "$null":
            return None
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, SimEnum):
        return value.name
    if isinstance(value, SimObject):
        return value.to_string
    return value


def _compare(left: Any, op: str, right: Any) -> bool:
    if op in ("-like", "-notlike"):
        matched = fnmatch.fnmatchcase(str(left or "").lower(), str(right or "").lower())
        return matched if op == "-like" else not matched
    if right is None or left is None:
        equal = left is None and right is None
        return {"-eq": equal, "-ne": not equal}.get(op, False)
    if isinstance(left, bool) or isinstance(right, bool):
        left, right = _as_bool(left), _as_bool(right)
    elif isinstance(left, int | float) and not isinstance(right, int | float):
        try:
            right = float(right)
        except ValueError:
            left = str(left)
    elif isinstance(left, str):
        left, right = left.lower(), str(right).lower()
    try:
        return {
            "-eq": left == right,
            "-ne": left != right,
            "-gt": left > right,
            "-lt": left < right,
            "-ge": left >= right,
            "-le": left <= right,
        }[op]
    except TypeError:
        return False


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "$true", "1")
    return bool(value)
