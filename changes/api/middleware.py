"""Every response carries X-Request-ID (the caller's, if sane, else a new one); audit events store it."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from changes.request_context import reset_request_id, set_request_id

_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _SANE.match(given) else uuid.uuid4().hex
        request.request_id = request_id
        token = set_request_id(request_id)
        try:
            response = self.get_response(request)
        finally:
            reset_request_id(token)
        response["X-Request-ID"] = request_id
        return response


class BodySizeLimitMiddleware:
    """A body larger than DATA_UPLOAD_MAX_MEMORY_SIZE is refused with 413 before anything reads it. Django alone
    raises RequestDataTooBig only when the body is read, and answers it as a generic 400."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            return JsonResponse(too_large_body(limit), status=413)
        return self.get_response(request)


def too_large_body(limit: int) -> dict[str, object]:
    return {"code": "request_too_large", "detail": f"the request body is larger than the limit of {limit} bytes",
            "limit": limit}
