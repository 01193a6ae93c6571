"""Every response carries X-Request-ID (the caller's, if sane, else a new one); audit events store it."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import get_urlconf, is_valid_path

from changes.request_context import reset_actor, reset_request_id, set_actor, set_request_id

_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _SANE.match(given) else uuid.uuid4().hex
        request.request_id = request_id
        token = set_request_id(request_id)
        actor = set_actor(lambda: getattr(request, "user", None))
        try:
            response = self.get_response(request)
        finally:
            reset_actor(actor)
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


# How long a client should wait before retrying while the database is unreachable (a restart takes about this long).
DATABASE_RETRY_AFTER_SECONDS = 30


def database_unavailable_body() -> dict[str, object]:
    return {"code": "database_unavailable", "detail": "the database is unreachable; retry shortly",
            "retry_after": DATABASE_RETRY_AFTER_SECONDS}


def database_unavailable() -> JsonResponse:
    response = JsonResponse(database_unavailable_body(), status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


class ApiErrorsMiddleware:
    """Under /api/, in every mode: an unknown URL answers the JSON 404 (under DEBUG Django's technical 404 page was
    HTML); a URL lacking only its trailing slash is served as the URL with it (APPEND_SLASH redirected a GET and
    answered a POST with a 500 under DEBUG); a database outage in a view outside DRF answers 503 (DRF's views get
    the same from changes.api.errors)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith("/api/"):
            urlconf = getattr(request, "urlconf", None) or get_urlconf()
            if not is_valid_path(request.path_info, urlconf):
                if not request.path_info.endswith("/") and is_valid_path(request.path_info + "/", urlconf):
                    request.path_info += "/"
                    request.path += "/"
                else:
                    return JsonResponse({"code": "not_found", "detail": f"no API resource at {request.path}"},
                                        status=404)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if request.path.startswith("/api/") and isinstance(exception, OperationalError | InterfaceError):
            return database_unavailable()
        return None
