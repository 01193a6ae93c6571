"""One exception handler: domain errors and DRF errors become JSON {code, detail, ...}; never a 500 for bad input."""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from changes.errors import DomainError
from changes.states import TransitionNotAllowed

from .middleware import DATABASE_RETRY_AFTER_SECONDS, database_unavailable_body

log = logging.getLogger(__name__)


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            msg = _first_message(value)
            return msg if key == "non_field_errors" else f"{key}: {msg}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response({"code": exc.code, "detail": exc.detail, **exc.extra}, status=exc.status)
    if isinstance(exc, TransitionNotAllowed):
        return Response(
            {"code": "transition_not_allowed", "detail": str(exc), "state": exc.old, "allowed": exc.allowed},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.messages)
    elif isinstance(exc, OperationalError | InterfaceError):
        # PostgreSQL down or restarting (or SQLite locked past its timeout): not the client's fault, and temporary.
        log.warning("database unavailable: %s", exc)
        return Response(database_unavailable_body(), status=503,
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
    elif isinstance(exc, DataError):
        # e.g. a value too long for its column on PostgreSQL: the client's input, not our fault.
        log.info("data error: %s", exc)
        return Response({"code": "invalid", "detail": "a value is out of range for its field"}, status=400)
    elif isinstance(exc, IntegrityError):
        log.info("integrity error: %s", exc)
        return Response({"code": "conflict", "detail": "the request conflicts with existing data"}, status=409)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": "invalid", "detail": _first_message(detail), "errors": detail}
    else:
        message = detail.get("detail", detail) if isinstance(detail, dict) else detail
        body = {"code": code, "detail": str(message)}
    response.data = body
    return response


def _json_or_default(request: HttpRequest, status_code: int, code: str, detail: str, default: Any) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"code": code, "detail": detail}, status=status_code)
    return default


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Unknown URLs under /api/ answer JSON like every other API error."""
    return _json_or_default(request, 404, "not_found", f"no API resource at {request.path}",
                            defaults.page_not_found(request, exception))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _json_or_default(request, 400, "bad_request", "the request is malformed (check the Host header)",
                            defaults.bad_request(request, exception))


def server_error(request: HttpRequest) -> HttpResponse:
    return _json_or_default(request, 500, "server_error", "internal error; it has been logged",
                            defaults.server_error(request))
