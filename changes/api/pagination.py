"""Paging for every list: ``limit``/``offset``, with ``page_size`` accepted as a synonym of ``limit``. A size above
the maximum or a value that is not a number is a clear 400 rather than being clamped or ignored."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_PAGE_SIZE = 200
MAX_OFFSET = 10**9  # beyond any real list, and keeps the SQL OFFSET inside a bigint


def _bounded_int(request: Request, name: str, *, minimum: int, maximum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: [f"must be a whole number between {minimum} and {maximum}"]}) from None
    if not minimum <= value <= maximum:
        raise ValidationError({name: [f"must be between {minimum} and {maximum}"]})
    return value


class LimitOffsetOrPageSize(LimitOffsetPagination):
    default_limit = settings.REST_FRAMEWORK.get("PAGE_SIZE") or 50
    max_limit = MAX_PAGE_SIZE
    page_size_query_param = "page_size"

    def get_limit(self, request: Request) -> int:
        limit = _bounded_int(request, self.limit_query_param, minimum=1, maximum=self.max_limit)
        page_size = _bounded_int(request, self.page_size_query_param, minimum=1, maximum=self.max_limit)
        if limit is not None and page_size is not None and limit != page_size:
            raise ValidationError({"page_size": ["give limit or page_size, not two different sizes"]})
        chosen = limit if limit is not None else page_size
        return chosen if chosen is not None else min(self.default_limit, self.max_limit)

    def get_offset(self, request: Request) -> int:
        return _bounded_int(request, self.offset_query_param, minimum=0, maximum=MAX_OFFSET) or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        params = super().get_schema_operation_parameters(view)
        for param in params:
            if param["name"] == self.limit_query_param:
                param["schema"].update(minimum=1, maximum=self.max_limit)
            elif param["name"] == self.offset_query_param:
                param["schema"].update(minimum=0, maximum=MAX_OFFSET)
        params.append({
            "name": self.page_size_query_param, "required": False, "in": "query",
            "description": f"Synonym of limit (1 to {self.max_limit}).",
            "schema": {"type": "integer", "minimum": 1, "maximum": self.max_limit},
        })
        return params
