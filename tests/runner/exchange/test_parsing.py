"""Parsing real Exchange 2016/2019 output, deserialized by pypsrp itself, checked against the XML read independently."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from runner.exchange.parsing import (
    TYPE_KEY,
    clixml_to_plain,
    component_states,
    exchange_server,
    mailbox_server,
    parse_datetime,
    service_health,
    to_plain,
)
from tests.runner.exchange.captures import VERSIONS, prop, votes, wire_objects, xml_datetime

WIRE_SHAPES = [pytest.param(v, p, id=f"{v}{'-deserialized' if p else ''}") for v in VERSIONS for p in (False, True)]


def _expected(element) -> object:
    """What to_plain must produce for one property element, derived from the XML alone."""
    tag = element.tag
    if tag == "Nil":
        return None
    if tag == "S":
        return element.text or ""
    if tag == "B":
        return element.text == "true"
    if tag in ("I32", "I64"):
        return int(element.text)
    if tag == "DT":
        return xml_datetime(element.text)
    if tag == "G":
        return element.text
    if tag == "Obj":
        types = [t.text for t in element.findall("TN/T")]
        lst = element.find("LST")
        if lst is not None:
            return [_expected(item) if item.tag != "Obj" else ... for item in lst]
        # Enums and every other nested object: the ToString text ("" for an empty <ToString />).
        assert element.find("ToString") is not None, types
        return element.find("ToString").text or ""
    return ...  # not checked here (byte arrays, references)


@pytest.mark.parametrize(("version", "prefix"), WIRE_SHAPES)
@pytest.mark.parametrize(
    "capture", ["GetServerComponentState.xml", "TestServiceHealth.xml", "GetMailboxServer.xml", "GetExchangeServer.xml"]
)
def test_every_property_of_every_object_converts_by_the_rules(version, prefix, capture):
    elements, objects = wire_objects(version, capture, prefix=prefix)
    assert objects
    for element, obj in zip(elements, objects, strict=True):
        plain = to_plain(obj)
        assert plain[TYPE_KEY] == element.find("TN/T").text  # the Deserialized. prefix is gone
        names = [p.attrib["N"] for p in element.find("Props")]
        assert set(names) <= set(plain)
        for child in element.find("Props"):
            expected = _expected(child)
            actual = plain[child.attrib["N"]]
            if isinstance(expected, list):
                assert isinstance(actual, list) and len(actual) == len(expected)
                for want, got in zip(expected, actual, strict=True):
                    if want is ...:
                        assert isinstance(got, dict | str)
                    else:
                        assert got == want
            elif expected is not ...:
                assert actual == expected, child.attrib["N"]
        for dropped in ("PSComputerName", "RunspaceId", "PSShowComputerName", "SerializationData"):
            assert dropped not in plain


@pytest.mark.parametrize(("version", "prefix"), WIRE_SHAPES)
def test_component_states_read_every_component_state_and_requester_vote(version, prefix):
    elements, objects = wire_objects(version, "GetServerComponentState.xml", prefix=prefix)
    states = component_states(objects)

    assert len(states) == len(elements) == {"E16": 35, "E19": 34}[version]
    for element, state in zip(elements, states, strict=True):
        assert state.component == prop(element, "Component").text
        assert state.state == prop(element, "State").find("ToString").text
        assert state.server == prop(element, "ServerFqdn").text
        assert list(state.local_states) == votes(element, "LocalStates")
        assert list(state.remote_states) == votes(element, "RemoteStates")
    assert sum(len(s.local_states) + len(s.remote_states) for s in states) > 0


def test_component_states_accept_the_plain_dicts_as_well_as_pypsrp_objects():
    _, objects = wire_objects("E19", "GetServerComponentState.xml")
    assert component_states([to_plain(o) for o in objects]) == component_states(objects)


def test_requester_votes_are_tuples_with_aware_timestamps():
    _, objects = wire_objects("E16", "GetServerComponentState.xml", prefix=True)
    vote = next(v for s in component_states(objects) for v in s.local_states)
    requester, state, timestamp = vote
    assert requester and state in ("Active", "Inactive", "Draining")
    assert timestamp.tzinfo is not None


@pytest.mark.parametrize(("version", "prefix"), WIRE_SHAPES)
def test_service_health_reads_roles_and_service_lists(version, prefix):
    elements, objects = wire_objects(version, "TestServiceHealth.xml", prefix=prefix)
    rows = service_health(objects)
    assert len(rows) == len(elements)
    for element, row in zip(elements, rows, strict=True):
        assert row.role == prop(element, "Role").text
        assert row.required_services_running == (prop(element, "RequiredServicesRunning").text == "true")
        assert list(row.services_running) == [s.text for s in prop(element, "ServicesRunning").findall("LST/S")]
        assert list(row.services_not_running) == [s.text for s in prop(element, "ServicesNotRunning").findall("LST/S")]


@pytest.mark.parametrize(("version", "prefix"), WIRE_SHAPES)
def test_mailbox_server_reads_the_settings_maintenance_changes(version, prefix):
    (element,), (obj,) = wire_objects(version, "GetMailboxServer.xml", prefix=prefix)
    server = mailbox_server(obj)
    assert server.name == prop(element, "Name").text
    dag = prop(element, "DatabaseAvailabilityGroup")
    assert server.dag == (None if dag.tag == "Nil" else dag.find("ToString").text)
    assert server.auto_activation_policy == prop(element, "DatabaseCopyAutoActivationPolicy").find("ToString").text
    assert server.activation_disabled_and_move_now == (
        prop(element, "DatabaseCopyActivationDisabledAndMoveNow").text == "true"
    )
    maximum = prop(element, "MaximumActiveDatabases")
    assert server.maximum_active_databases == (None if maximum.tag == "Nil" else int(maximum.text))
    assert server.auto_database_mount_dial == prop(element, "AutoDatabaseMountDial").find("ToString").text


@pytest.mark.parametrize(("version", "prefix"), WIRE_SHAPES)
def test_exchange_server_reads_name_fqdn_build_site_and_roles(version, prefix):
    (element,), (obj,) = wire_objects(version, "GetExchangeServer.xml", prefix=prefix)
    server = exchange_server(obj)
    assert server.name == prop(element, "Name").text
    assert server.fqdn == prop(element, "Fqdn").text
    version_element = prop(element, "AdminDisplayVersion")
    assert server.version == version_element.find("ToString").text
    parts = [version_element.find(f"Props/I32[@N='{n}']").text for n in ("Major", "Minor", "Build", "Revision")]
    assert server.build == ".".join(parts)
    assert server.build.startswith({"E16": "15.1.", "E19": "15.2."}[version])
    assert server.site == prop(element, "Site").find("Props/S[@N='Name']").text
    assert list(server.roles) == prop(element, "ServerRole").find("ToString").text.split(", ")


def test_top_level_datetimes_become_aware_and_keep_their_offset():
    (element,), (obj,) = wire_objects("E16", "GetExchangeServer.xml", prefix=True)
    plain = to_plain(obj)
    assert plain["WhenChangedUTC"] == xml_datetime(prop(element, "WhenChangedUTC").text)
    assert plain["WhenChanged"].utcoffset() == timedelta(hours=-5)
    assert plain["WhenChanged"] == plain["WhenChangedUTC"]


def test_a_reference_to_an_object_earlier_in_the_message_resolves_to_its_tostring():
    _, (obj,) = wire_objects("E19", "GetExchangeServer.xml")
    plain = to_plain(obj)
    assert plain["Id"] == plain["Identity"] == plain["Name"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-09-28T17:32:01.8071985Z", datetime(2021, 9, 28, 17, 32, 1, 807198, tzinfo=UTC)),
        ("2021-09-28T17:20:22.975285Z", datetime(2021, 9, 28, 17, 20, 22, 975285, tzinfo=UTC)),
        ("2021-09-28T12:20:23-05:00", datetime(2021, 9, 28, 12, 20, 23, tzinfo=timezone(timedelta(hours=-5)))),
        ("2021-09-28T17:32:01.5", datetime(2021, 9, 28, 17, 32, 1, 500000, tzinfo=UTC)),
    ],
)
def test_parse_datetime_reads_clixml_datetimes_as_aware(text, expected):
    assert parse_datetime(text) == expected


def test_a_string_that_only_looks_like_a_date_stays_a_string():
    xml = (
        '<Obj RefId="0"><TN RefId="0"><T>Deserialized.X</T><T>Deserialized.System.Object</T></TN>'
        '<Props><S N="Note">2021-09-28T17:32:01Z</S><DT N="When">2021-09-28T17:32:01Z</DT></Props></Obj>'
    )
    from pypsrp.serializer import Serializer

    plain = to_plain(Serializer().deserialize(xml))
    assert plain == {"Note": "2021-09-28T17:32:01Z", "When": datetime(2021, 9, 28, 17, 32, 1, tzinfo=UTC), "_type": "X"}


def test_raw_fragments_convert_by_the_same_rules_and_refuse_a_dtd():
    xml = (
        '<Obj RefId="0"><TN RefId="0"><T>Deserialized.Foo</T></TN><Props>'
        '<Obj N="State" RefId="1"><TN RefId="1"><T>Deserialized.Bar</T><T>Deserialized.System.Enum</T></TN>'
        "<ToString>Draining</ToString><I32>2</I32></Obj>"
        '<S N="Text">a_x000A_b</S><Nil N="Nothing" /><G N="Id">59ce2f71-eaa2-4ddf-a4fa-f25069d0b324</G>'
        "</Props></Obj>"
    )
    assert clixml_to_plain(xml) == {
        "State": "Draining",
        "Text": "a\nb",
        "Nothing": None,
        "Id": "59ce2f71-eaa2-4ddf-a4fa-f25069d0b324",
        "_type": "Foo",
    }
    with pytest.raises(ValueError, match="DTD"):
        clixml_to_plain('<!DOCTYPE x [<!ENTITY a "aaaa">]><Obj RefId="0">&a;</Obj>')


def test_to_plain_passes_scalars_through_and_turns_guids_into_strings():
    import uuid

    guid = uuid.UUID("59ce2f71-eaa2-4ddf-a4fa-f25069d0b324")
    assert to_plain(None) is None
    assert to_plain("x") == "x"
    assert to_plain(3) == 3
    assert to_plain(guid) == str(guid)
    enum_like = SimpleNamespace(
        types=["Deserialized.T", "Deserialized.System.Enum"], adapted_properties={}, extended_properties={},
        property_sets=[1], to_string="Active",
    )
    assert to_plain(enum_like) == "Active"
