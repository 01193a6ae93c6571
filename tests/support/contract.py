"""Contract checking: every response the API tests produce is validated against the exported OpenAPI schema.

The ``api`` fixture (tests/conftest.py) hands out ContractClient; a response whose status, content type, headers or
body the schema does not declare fails the test that produced it, so the schema cannot drift from the service.
Only operations the schema declares are checked: an unknown URL or method (the JSON 404/405 tests) has no
operation to validate against.
"""
from __future__ import annotations

import json
from functools import cache
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.test import RequestFactory
from drf_spectacular.generators import SchemaGenerator
from openapi_core import Config, OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from rest_framework.test import APIClient


@cache
def exported_schema() -> dict[str, Any]:
    """The schema as ``manage.py spectacular`` exports it (hooks included), as plain JSON data."""
    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))


@cache
def openapi() -> OpenAPI:
    # openapi-core decodes JSON itself; the feed's iCalendar is text, validated as the string the schema declares.
    config = Config(extra_media_type_deserializers={"text/calendar": _text})
    return OpenAPI.from_dict(exported_schema(), config=config)


def _text(data: bytes | str, **_: Any) -> str:
    return data.decode() if isinstance(data, bytes) else data


class ContractViolation(AssertionError):
    pass


def check_response(response: HttpResponse) -> None:
    """Raise ContractViolation if the schema does not describe this response of a declared API operation."""
    request = getattr(response, "wsgi_request", None)
    if request is None or not request.path.startswith("/api/"):
        return
    try:
        request.body  # noqa: B018 - openapi-core's adapter reads it
    except RequestDataTooBig:
        # The 413 refused it unread; only the response is validated, so the same request without its body will do.
        bodiless = RequestFactory().generic(request.method, request.get_full_path())
        bodiless.resolver_match = getattr(request, "resolver_match", None)
        request = bodiless
    try:
        openapi().validate_response(DjangoOpenAPIRequest(request), DjangoOpenAPIResponse(response))
    except (PathNotFound, OperationNotFound):
        return
    except Exception as exc:  # noqa: BLE001 - every validation error is a contract violation, reported with detail
        causes = [f"{type(exc).__name__}: {str(exc)[:300]}"]
        for cause in _causes(exc):
            causes.append(f"{type(cause).__name__}: {str(getattr(cause, 'message', cause))[:300]} at "
                          f"/{'/'.join(map(str, getattr(cause, 'absolute_path', [])))}")
        body = getattr(response, "content", b"")[:600]
        raise ContractViolation(
            f"{request.method} {request.get_full_path()} answered {response.status_code} outside the schema:\n  "
            + "\n  ".join(causes) + f"\n  body: {body!r}"
        ) from exc


def _causes(exc: BaseException) -> list[Any]:
    """The innermost schema errors under an openapi-core exception (its __cause__ chain and schema_errors)."""
    found: list[Any] = []
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        errors = getattr(cause, "schema_errors", None)
        if errors:
            found.extend(errors)
            break
        cause = cause.__cause__
    return found


class ContractClient(APIClient):
    """APIClient whose every response is checked against the exported schema."""

    def request(self, **kwargs: Any) -> HttpResponse:
        response = super().request(**kwargs)
        check_response(response)
        return response
