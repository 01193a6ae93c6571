"""The OpenAPI schema is what the service does: it validates, declares the error shape on every operation, and the
contract check on the tests' client (tests/support/contract.py) really refuses a response that drifts."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.http import JsonResponse
from django.test import RequestFactory
from django.urls import resolve
from rest_framework import serializers

from changes.api.schema import ERROR_CODES
from changes.errors import DomainError
from tests.conftest import payload
from tests.support.contract import ContractViolation, check_response, exported_schema

pytestmark = pytest.mark.django_db

CHANGES = "/api/v1/changes/"
METHODS = ("get", "post", "patch", "put", "delete")


def _operations() -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, item in exported_schema()["paths"].items()
            for method, op in item.items() if method in METHODS]


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def test_the_exported_schema_generates_without_warnings_and_validates(tmp_path) -> None:
    out = tmp_path / "schema.json"
    call_command("spectacular", "--fail-on-warn", "--validate", "--format", "openapi-json", "--file", str(out),
                 stderr=io.StringIO())
    assert json.loads(out.read_text())["paths"]


def test_every_operation_declares_the_error_schema_for_its_refusals() -> None:
    for path, method, op in _operations():
        responses = op["responses"]
        expected = {"401", "403", "429", "503"} | ({"404"} if "{id}" in path else set())
        if method in ("post", "patch"):
            expected |= {"400", "409", "413", "415", "422"}
        assert expected <= set(responses), f"{method.upper()} {path} lacks {sorted(expected - set(responses))}"
        for status in expected - {"409"}:  # audit/verify answers 409 with its own report body
            if status not in ("502",):
                content = responses[status]["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/Error"}, (method, path, status)
        for status, response in responses.items():
            assert "X-Request-ID" in response["headers"], (method, path, status)


def test_every_domain_error_code_is_enumerated() -> None:
    import reports.services  # noqa: F401 - their DomainError subclasses register on import
    import runner.dry_run  # noqa: F401

    enum = exported_schema()["components"]["schemas"]["ErrorCodeEnum"]["enum"]
    assert enum == list(ERROR_CODES)
    codes = {cls.code for cls in _all_subclasses(DomainError)}
    assert codes <= set(enum), sorted(codes - set(enum))


def test_steps_is_a_bare_array_without_the_list_filters_or_paging() -> None:
    op = exported_schema()["paths"]["/api/v1/changes/{id}/steps/"]["get"]
    assert [p["name"] for p in op["parameters"]] == ["id"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"


def test_the_declared_types_match_what_the_service_returns() -> None:
    schema = exported_schema()
    components = schema["components"]["schemas"]
    detail = components["ChangeDetail"]["properties"]
    assert detail["work_done_at"]["nullable"] is True
    assert detail["current_step"]["nullable"] is True and detail["current_step"]["type"] == "object"
    assert detail["next_states"]["items"] == {"$ref": "#/components/schemas/StateEnum"}
    assert {"$ref": "#/components/schemas/BlankEnum"} in detail["close_code"]["oneOf"]
    assert "format" not in json.dumps(detail["callback_url"])
    assert components["StepRun"]["properties"]["decided_by"]["nullable"] is True
    assert components["ChangeCreateRequest"]["additionalProperties"] is False
    assert components["ChangeCreateRequest"]["properties"]["window_start"]["pattern"] == "^(20[0-9]{2}|2100)-"
    dry_run = components["DryRun"]["properties"]
    assert {"plan", "plans", "prechecks"} <= set(dry_run)
    report = schema["paths"]["/api/v1/changes/{id}/report/"]["get"]["responses"]["200"]
    assert report["content"] == {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}
    assert {"X-Report-SHA256", "ETag", "Content-Disposition"} <= set(report["headers"])
    calendar = schema["paths"]["/api/v1/calendar.ics"]["get"]
    assert "text/calendar" in calendar["responses"]["200"]["content"]
    assert {"calendarKey": []} in calendar["security"]
    token = schema["components"]["securitySchemes"]["tokenAuth"]
    assert (token["type"], token["scheme"]) == ("http", "bearer")


def test_a_client_following_the_security_scheme_is_served(api, requester, servers) -> None:
    from tests.support.contract import ContractClient
    from tests.support.tokens import api_key

    key = api_key(requester)
    client = ContractClient()
    assert client.post(CHANGES, payload(), format="json", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 201
    assert client.get(CHANGES, HTTP_AUTHORIZATION=key).status_code == 401


def _answer(path: str, body: object, status: int = 200) -> JsonResponse:
    """A response as the service might answer ``path``, to feed the contract check directly."""
    request = RequestFactory().get(path)
    request.resolver_match = resolve(path)
    response = JsonResponse(body, status=status, safe=False)
    response.wsgi_request = request
    return response


def test_the_contract_check_refuses_a_drifted_response(api, requester, servers) -> None:
    res = api(requester).post(CHANGES, payload(), format="json")
    assert res.status_code == 201
    path = f"{CHANGES}{res.json()['id']}/"
    check_response(_answer(path, res.json()))  # the real body passes
    with pytest.raises(ContractViolation, match="close_code"):
        check_response(_answer(path, {**res.json(), "close_code": "bogus"}))
    with pytest.raises(ContractViolation):
        check_response(_answer(path, {"detail": "an error without its code"}, status=404))
    with pytest.raises(ContractViolation):
        check_response(_answer(path, {"code": "no_such_code", "detail": "x"}, status=404))
    check_response(_answer(path, {"code": "not_found", "detail": "no change"}, status=404))


@pytest.mark.parametrize("params", [{"limit": 10**30}, {"offset": 10**30}, {"limit": "9" * 5000}])
def test_a_huge_limit_or_offset_is_a_400_in_the_error_shape(api, auditor, params) -> None:
    res = api(auditor).get(CHANGES, params)
    assert res.status_code == 400
    assert res.json()["code"] == "invalid"


def test_the_keytab_is_declared_as_the_base64_the_service_accepts() -> None:
    """Found by the schemathesis run: the keytab was a plain string in the schema, so schema-valid text was refused
    with 400 "not valid base64"."""
    import re

    from changes.api.serializers import Base64BytesField

    declared = exported_schema()["components"]["schemas"]["ServerRequest"]["properties"]["keytab"]
    text_branch, blank_branch = declared["oneOf"]
    assert text_branch["format"] == "byte" and blank_branch == {"type": "string", "maxLength": 0}
    pattern = re.compile(text_branch["pattern"])
    field = Base64BytesField(allow_blank=True)
    for accepted in ("AAEC", "AAE=", "AA==", "BQIAAAA8AAEA"):
        assert pattern.search(accepted) and field.run_validation(accepted)
    assert not pattern.search("")  # "" is the blank branch only, so it is valid under exactly one
    for refused in ("[x]", "AAE", "A===", "AA=A", "AA EC"):
        assert not pattern.search(refused), refused
        with pytest.raises(serializers.ValidationError):
            field.run_validation(refused)
