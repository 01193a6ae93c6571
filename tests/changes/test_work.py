"""A change's work phase: hold (default), reboot or exchange-update, checked before anything is stored."""
from __future__ import annotations

import json

import pytest

from changes import work
from changes.models import Change
from tests.conftest import payload

CHANGES = "/api/v1/changes/"
CU15 = {"kind": "exchange-update", "package": {"kind": "cu", "path": "D:\\Exchange\\CU15"},
        "target_build": "15.2.1748.10"}


def post(client, body):
    return client.post(CHANGES, data=json.dumps(body), content_type="application/json")


def test_no_work_is_the_operator_hold() -> None:
    assert work.normalize_work(None) == {"kind": "hold"}


def test_a_cu_gets_its_defaults_always_reboots_and_loses_a_trailing_setup_exe() -> None:
    done = work.normalize_work({**CU15, "package": {"kind": "cu", "path": "D:\\Exchange\\CU15\\Setup.exe"}})
    assert done["package"] == {"kind": "cu", "path": "D:\\Exchange\\CU15", "sha256": ""}
    assert (done["reboot"], done["install_minutes"], done["reboot_minutes"]) == ("always", 90, 30)


def test_an_su_reboots_when_the_installer_asks_and_has_a_30_minute_budget() -> None:
    done = work.normalize_work({"kind": "exchange-update", "target_build": "15.02.1544.014",
                                "package": {"kind": "su", "path": "\\\\files\\exchange\\KB5049233.msp"}})
    assert (done["reboot"], done["install_minutes"], done["target_build"]) == ("if-required", 30, "15.2.1544.14")


@pytest.mark.parametrize(("change", "field"), [
    ({"target_build": "15.2.1748"}, "work.target_build"),
    ({"target_build": "14.3.123.1"}, "work.target_build"),
    ({"package": {"kind": "cu", "path": "setup.exe"}}, "work.package.path"),
    ({"package": {"kind": "cu", "path": "..\\CU15"}}, "work.package.path"),
    ({"package": {"kind": "cu", "path": "D:\\CU15\\..\\x"}}, "work.package.path"),
    ({"package": {"kind": "cu", "path": "D:\\CU15; Remove-Item C:\\"}}, "work.package.path"),
    ({"package": {"kind": "cu", "path": "D:/CU15"}}, "work.package.path"),
    ({"package": {"kind": "cu", "path": "D:\\ExchangeServer2019-x64-CU15.iso"}}, "work.package.path"),
    ({"package": {"kind": "xx", "path": "D:\\CU15"}}, "work.package.kind"),
    ({"reboot": "if-required"}, "work.reboot"),
    ({"install_minutes": 0}, "work.install_minutes"),
    ({"surprise": 1}, "work.surprise"),
])
def test_what_cannot_run_is_refused_naming_the_field(change, field) -> None:
    with pytest.raises(work.WorkInvalid) as caught:
        work.normalize_work({**CU15, **change})
    assert caught.value.field == field


@pytest.mark.django_db
def test_the_api_stores_the_work_and_shows_it(api, requester, servers) -> None:
    res = post(api(requester), payload(work=CU15))
    assert res.status_code == 201, res.content
    assert res.json()["work"]["package"]["path"] == "D:\\Exchange\\CU15"
    assert Change.objects.get().work["target_build"] == "15.2.1748.10"


@pytest.mark.django_db
def test_a_post_without_work_holds(api, requester, servers) -> None:
    res = post(api(requester), payload())
    assert res.status_code == 201, res.content
    assert res.json()["work"] == {"kind": "hold"}


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "key"), [
    ({"target_build": "CU15"}, "target_build"),
    ({"package": {"kind": "cu", "path": "CU15\\Setup.exe"}}, "package.path"),
])
def test_the_api_answers_400_naming_the_field(api, requester, servers, change, key) -> None:
    res = post(api(requester), payload(work={**CU15, **change}))
    assert res.status_code == 400, res.content
    assert key in json.dumps(res.json())
    assert not Change.objects.exists()


def test_a_different_work_is_a_different_approval() -> None:
    from datetime import UTC, datetime

    from changes.policy import approval_fingerprint

    start, end = datetime(2030, 1, 5, 22, tzinfo=UTC), datetime(2030, 1, 6, tzinfo=UTC)
    hold = approval_fingerprint(["EX01"], "maintenance", start, end, work={"kind": "hold"})
    assert hold == approval_fingerprint(["EX01"], "maintenance", start, end)  # approvals from before still count
    assert hold != approval_fingerprint(["EX01"], "maintenance", start, end, work=work.normalize_work(CU15))


@pytest.mark.django_db
def test_a_patch_that_does_not_name_the_work_keeps_it_and_one_that_does_voids_approvals(api, requester, alice,
                                                                                        servers) -> None:
    created = post(api(requester), payload(work=CU15)).json()
    url = f"{CHANGES}{created['id']}/"
    client = api(requester)
    res = client.patch(url, data=json.dumps({"title": "CU15 on EX01, second try"}), content_type="application/json")
    assert res.status_code == 200, res.content
    assert res.json()["work"]["kind"] == "exchange-update"
    approve = api(alice).post(f"{url}approve/", data=json.dumps({"comment": "ok"}), content_type="application/json")
    assert approve.status_code == 200, approve.content
    res = client.patch(url, data=json.dumps({"work": {**CU15, "target_build": "15.2.1748.36"}}),
                       content_type="application/json")
    assert res.status_code == 200, res.content
    change = Change.objects.get(pk=created["id"])
    assert change.work["target_build"] == "15.2.1748.36"
    assert not change.approvals.filter(voided_at__isnull=True).exists()
