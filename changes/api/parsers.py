"""The API's JSON parser: DRF's, with a nesting limit. Python's json module recurses once per level, so a body of
100,000 opening brackets raised RecursionError (a 500); no request of ours nests deeper than a handful of levels."""
from __future__ import annotations

import json
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Iterative, so checking a deep value cannot itself recurse too deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):  # noqa: ANN001, ANN201 - DRF signature
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels") from None
        except json.JSONDecodeError as exc:  # pragma: no cover - DRF already turns these into ParseError
            raise ParseError(f"JSON parse error - {exc}") from None
        if _depth_exceeds(data, MAX_DEPTH):
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels")
        return data
