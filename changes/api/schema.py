"""The OpenAPI schema says exactly what the service does: one error shape declared on every operation for each status
it can answer, ``X-Request-ID`` on every response, request bodies closed to unknown fields (the serializers refuse
them), and the field types drf-spectacular cannot infer from our own field classes.

Wired in config/settings.py (``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``); the test suite validates every API
response it produces against the exported schema (tests/support/contract.py), so a drift fails the build.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension

# Every ``code`` an error body may carry, with what it means. The exception handler (changes.api.errors), the
# middleware and the domain errors (changes.errors and the apps' DomainError subclasses) produce exactly these.
ERROR_CODES: dict[str, str] = {
    "invalid": "the body or a parameter is malformed; `errors` maps each field to its messages",
    "parse_error": "the body is not valid JSON",
    "bad_request": "the request itself is malformed (e.g. its Host header)",
    "unknown_servers": "a named server is not in the inventory; `servers` lists them",
    "callback_url_refused": "the callback URL breaks the callback rules",
    "not_authenticated": "no credentials were given",
    "authentication_failed": "the token is wrong",
    "token_expired": "the token has expired; ask for a new one (it is rotated, not extended)",
    "permission_denied": "the caller's role may not do this",
    "separation_of_duties": "the requester (or creator) may not approve their own change",
    "not_found": "no such resource (or not visible to the caller)",
    "report_not_ready": "the window has not ended: there is no report yet",
    "method_not_allowed": "the method is not allowed on this resource",
    "not_acceptable": "the Accept header names no representation the resource has",
    "state_conflict": "the change is not in a state that allows this (or someone else moved it first)",
    "transition_not_allowed": "the transition is not allowed from the change's state; `state` and `allowed` say why",
    "already_decided": "this approver has already decided",
    "schedule_conflict": "the window overlaps another change on a server; `conflicts` names them",
    "freeze_window": "the window falls in a freeze window",
    "not_standard": "a standard change names no active standard-change template or does not fit it; `misfits` "
                    "lists the fields that do not",
    "idempotency_conflict": "the same (source, external_ref) was sent before with a different body",
    "conflict": "the request conflicts with existing data",
    "report_tampered": "the stored report no longer matches its recorded SHA-256",
    "request_too_large": "the body is larger than `limit` bytes",
    "unsupported_media_type": "the body is not application/json",
    "window_invalid": "the maintenance window breaks a rule (length, order, lead time)",
    "plan_unavailable": "the change's plan cannot be built for a server",
    "throttled": "too many requests or failed authentications from this client; retry after `Retry-After`",
    "too_many_failures": "locked out after repeated failed logins",
    "remoting_failed": "the server answered but its remoting session failed",
    "server_unreachable": "the Exchange server could not be reached; retry later",
    "database_unavailable": "the database is unreachable; retry after `Retry-After` (`retry_after` seconds)",
    "server_error": "an internal error; it has been logged",
}

ERROR_STATUS_TEXT: dict[int, str] = {
    400: "Invalid request", 401: "Not authenticated", 403: "Not permitted", 404: "Not found",
    405: "Method not allowed", 409: "Conflict with the change's state or other data", 413: "Body too large",
    415: "Body not JSON", 422: "Breaks a rule", 429: "Throttled", 502: "Remoting failed",
    503: "Temporarily unavailable",
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error answer has this shape. `code` is stable (see ErrorCodeEnum); `detail` is for people. "
                   "Some codes add keys: `errors` (invalid), `servers` (unknown_servers), `state` and `allowed` "
                   "(transition_not_allowed), `conflicts` (schedule_conflict), `misfits` (not_standard), "
                   "`limit` (request_too_large), "
                   "`retry_after` (database_unavailable).",
    "properties": {
        "code": {"$ref": "#/components/schemas/ErrorCodeEnum"},
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": True,
                   "description": "invalid: each field (or non_field_errors) with its messages"},
        "retry_after": {"type": "integer", "description": "database_unavailable: seconds to wait"},
        "misfits": {"type": "array", "items": {"type": "string"},
                    "description": "not_standard: the fields that do not fit the standard-change template"},
    },
    "required": ["code", "detail"],
    "additionalProperties": True,
}

RETRY_AFTER = {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying"}
REQUEST_ID = {"schema": {"type": "string"},
              "description": "The caller's X-Request-ID if sane, else a new one; audit events record it"}

# Not matching "": drf-spectacular adds the blank branch ({maxLength: 0}) to a field allowing blank, and the two
# branches of that oneOf must not both match.
HTTP_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$"
# The years the service accepts (changes.api.serializers.MIN_YEAR/MAX_YEAR): 2000-2099 and 2100.
DATE_TIME_PATTERN = r"^(20[0-9]{2}|2100)-"


class HttpUrlFieldExtension(OpenApiSerializerFieldExtension):
    """An http(s) URL (or "" where blank is allowed). The default was a ``oneOf`` of ``format: uri`` and a blank
    string, under both of which "" is valid, so no value validated."""

    target_class = "changes.api.serializers.HttpUrlField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "pattern": HTTP_URL_PATTERN,
                                  "description": "An http(s) URL"}
        if self.target.max_length:
            schema["maxLength"] = self.target.max_length
        return schema


# Standard padded base64 (what base64.b64decode(validate=True) accepts), not empty: drf-spectacular adds the blank
# string as a oneOf branch of its own where the field allows it, and "" must not be valid under both branches.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"


class Base64BytesFieldExtension(OpenApiSerializerFieldExtension):
    """Binary uploads in JSON (the server's keytab). Declared as a plain string, any text was schema-valid although
    the service refuses what is not base64 (the schemathesis run found it): ``format: byte`` and the pattern say so."""

    target_class = "changes.api.serializers.Base64BytesField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "format": "byte", "pattern": BASE64_PATTERN}
        if self.target.max_length:
            schema["maxLength"] = self.target.max_length
        return schema


class AwareDateTimeFieldExtension(OpenApiSerializerFieldExtension):
    """ISO 8601 with an offset, years 2000 to 2100: the bounds the service enforces, declared."""

    target_class = "changes.api.serializers.AwareDateTimeField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN,
                "description": "ISO 8601 with a UTC offset (naive times are refused); year 2000 to 2100"}


def _statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer: every one can be refused (401/403/429) and meet a database outage
    (503); the rest follow from what it takes (a path id, parameters, a body) and whether it writes."""
    statuses = {401, 403, 429, 503}
    if "{id}" in path:
        statuses.add(404)
    queried = any(param.get("in") == "query" for param in operation.get("parameters", ()))
    if queried or "requestBody" in operation or method in ("post", "patch"):
        statuses.add(400)
    if method in ("post", "patch", "put"):
        statuses |= {409, 413, 415, 422}
    if method == "delete":
        statuses.add(409)
    return statuses


def _lift_default(prop: dict[str, Any]) -> None:
    """drf-spectacular puts a blank-allowing field's default inside the first branch of its ``oneOf``, where the
    default ("") breaks that branch's own pattern: the default belongs to the property."""
    for branch in prop.get("oneOf", ()):
        if "default" in branch:
            prop["default"] = branch.pop("default")


def _inline_nullable_ref(prop: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A nullable nested object is ``allOf: [$ref], nullable: true``, which OpenAPI 3.0 validators read as "must
    match the (non-nullable) component", refusing null: inline the component with ``nullable`` beside its type."""
    all_of = prop.get("allOf")
    if not prop.get("nullable") or not all_of or len(all_of) != 1 or "$ref" not in all_of[0]:
        return prop
    target = schemas[all_of[0]["$ref"].rsplit("/", 1)[-1]]
    return {**{k: v for k, v in prop.items() if k != "allOf"}, **target}


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (after its enum hook): errors, headers and closed request bodies."""
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorCodeEnum"] = {
        "type": "string", "enum": list(ERROR_CODES),
        "description": "\n".join(f"* `{code}` - {meaning}" for code, meaning in ERROR_CODES.items()),
    }
    schemas["Error"] = ERROR_SCHEMA
    error_ref = ERROR_REF
    for name, schema in schemas.items():
        for prop_name, prop in schema.get("properties", {}).items():
            _lift_default(prop)
            schema["properties"][prop_name] = _inline_nullable_ref(prop, schemas)
        # COMPONENT_SPLIT_REQUEST names write bodies *Request; their serializers refuse unknown fields.
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "patch", "put", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for code in sorted(_statuses(path, method, operation)):
                declared = responses.get(str(code))
                if declared is None:
                    declared = responses[str(code)] = {
                        "description": ERROR_STATUS_TEXT[code],
                        "content": {"application/json": {"schema": error_ref}},
                    }
                if code in (429, 503):
                    declared.setdefault("headers", {})["Retry-After"] = RETRY_AFTER
            for response in responses.values():
                response.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID
    return result

# For views declaring an error response of their own (e.g. with a description): the shared Error component.
ERROR_REF: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
