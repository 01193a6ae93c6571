"""Load the real Exchange CLIXML captures the way a remoting message would deliver each object to pypsrp."""
from __future__ import annotations

import copy
import xml.etree.ElementTree as ET  # noqa: S405 - our own checked-in fixtures
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pypsrp.serializer import Serializer

CAPTURES = Path(__file__).resolve().parents[2] / "fixtures" / "exchange-captures"
VERSIONS = ("E16", "E19")


def capture_root(version: str, name: str) -> ET.Element:
    """The capture's <Objs> root with the PowerShell namespace stripped (the wire format has none)."""
    root = ET.parse(CAPTURES / version / name).getroot()  # noqa: S314 - trusted fixture
    for element in root.iter():
        if "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    return root


def _self_contained(obj: ET.Element, doc_types: dict[str, ET.Element]) -> ET.Element:
    """Export-Clixml shares TN/TNRef tables across the file; a PSRP message carries one object with its own."""
    obj = copy.deepcopy(obj)
    parents = {child: parent for parent in obj.iter() for child in parent}
    defined: set[str] = set()
    replacements = []
    for element in obj.iter():
        ref = element.attrib.get("RefId", "")
        if element.tag == "TN":
            doc_types.setdefault(ref, copy.deepcopy(element))
            defined.add(ref)
        elif element.tag == "TNRef" and ref not in defined:
            replacements.append((parents[element], element, copy.deepcopy(doc_types[ref])))
            defined.add(ref)
    for parent, old, new in replacements:
        parent[list(parent).index(old)] = new
    return obj


def _with_prefix(obj: ET.Element) -> ET.Element:
    """Type names as a client sees them over remoting: ``Deserialized.`` in front of each."""
    obj = copy.deepcopy(obj)
    for t in obj.iter("T"):
        if t.text and not t.text.startswith("Deserialized."):
            t.text = "Deserialized." + t.text
    return obj


def wire_objects(version: str, name: str, *, prefix: bool = False) -> tuple[list[ET.Element], list[Any]]:
    """Each top-level <Obj> as one message carries it (its own type table), and what pypsrp makes of it."""
    root = capture_root(version, name)
    doc_types: dict[str, ET.Element] = {}
    elements, objects = [], []
    for obj in root:
        element = _self_contained(obj, doc_types)
        elements.append(element)
        wire = _with_prefix(element) if prefix else element
        objects.append(Serializer().deserialize(ET.tostring(wire, encoding="unicode")))
    return elements, objects


def xml_datetime(text: str) -> datetime:
    """An independent reading of a CLIXML DateTime, to check the parser against."""
    text = text.strip()
    tz = UTC
    if text.endswith("Z"):
        text = text[:-1]
    elif text[-6] in "+-" and text[-3] == ":":
        sign = 1 if text[-6] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(text[-5:-3]), minutes=int(text[-2:])))
        text = text[:-6]
    whole, _, fraction = text.partition(".")
    value = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz)
    return value.replace(microsecond=int((fraction + "000000")[:6]))


def prop(obj: ET.Element, name: str) -> ET.Element:
    found = obj.find(f"Props/*[@N='{name}']")
    assert found is not None, name
    return found


def votes(obj: ET.Element, name: str) -> list[tuple[str, str, datetime]]:
    """(Requester, State, Timestamp) of every RequesterDetails in LocalStates/RemoteStates, read from the XML."""
    return [
        (
            item.find("Props/S[@N='Requester']").text,
            item.find("Props/S[@N='State']").text,
            xml_datetime(item.find("Props/DT[@N='Timestamp']").text),
        )
        for item in prop(obj, name).findall("LST/Obj")
    ]
