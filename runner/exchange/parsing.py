"""Turn pypsrp's deserialized Exchange objects into plain Python values, and read the few shapes the runner needs.

``to_plain`` is duck-typed on pypsrp's ``GenericComplexObject`` (``types``, ``adapted_properties``,
``extended_properties``, ``property_sets``, ``to_string``) so this module never imports pypsrp. The in-process
simulator session produces the same dicts, so the rules below are a contract:

- a complex object becomes ``{property: value, ..., "_type": first type name without "Deserialized."}``;
- an enum (type names include System.Enum, or an object with a ToString and one integer) becomes its name;
- a DateTime becomes an aware ``datetime`` (no offset means UTC);
- a list or collection becomes a list of converted items, also when pypsrp hands back raw ``<LST>`` XML;
- any other nested object (ADObjectId, ByteQuantifiedSize, ServerVersion...) becomes its ToString string;
- a Guid becomes its string; ``$null`` becomes None.

Members that remoting and Exchange's own serializer add (``PSComputerName``, ``RunspaceId``,
``PSShowComputerName``, ``SerializationData``) say nothing about the server and are dropped.
"""
from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET  # noqa: S405 - only ever fed pypsrp output; DTDs are refused in _parse_fragment
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

TYPE_KEY = "_type"

# Added by the remoting layer or Exchange's binary serialization surrogate, not properties of the object.
DROPPED_MEMBERS = frozenset({"PSComputerName", "RunspaceId", "PSShowComputerName", "SerializationData"})

_DESERIALIZED = "Deserialized."
# CLIXML <DT> text: 'Z', an offset or nothing (Kind=Unspecified); .NET writes up to 7 fractional digits.
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(\d{1,7}))?(Z|[+-]\d{2}:\d{2})?$")
_ESCAPE_RE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_INT_TAGS = frozenset({"I16", "I32", "I64", "U16", "U32", "U64", "By", "SB"})
_LIST_TAGS = frozenset({"LST", "IE", "QUE", "STK"})


def _strip_prefix(type_name: str) -> str:
    return type_name[len(_DESERIALIZED) :] if type_name.startswith(_DESERIALIZED) else type_name


def parse_datetime(text: str) -> datetime:
    """Parse a CLIXML DateTime (``2021-09-28T17:32:01.8071985Z``) into an aware datetime; no offset means UTC."""
    match = _DATETIME_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not a CLIXML DateTime: {text!r}")
    value = text.strip()
    fraction = match.group(1)
    if fraction is not None and len(fraction) > 6:
        # datetime holds microseconds; the 7th digit (100 ns) is dropped, not rounded, like .NET's ToString("ffffff").
        value = value.replace("." + fraction, "." + fraction[:6], 1)
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _is_complex(obj: Any) -> bool:
    return hasattr(obj, "adapted_properties") and hasattr(obj, "extended_properties") and hasattr(obj, "types")


def _is_enum(obj: Any) -> bool:
    types = [_strip_prefix(t) for t in (obj.types or [])]
    if "System.Enum" in types:
        return True
    # A TNRef pypsrp could not resolve leaves no types: fall back to the enum's shape.
    sets = obj.property_sets
    return (
        not types
        and obj.to_string is not None
        and len(sets) == 1
        and isinstance(sets[0], int)
        and not isinstance(sets[0], bool)
        and not obj.adapted_properties
    )


def _unescape(text: str | None) -> str:
    """Undo CLIXML's ``_xHHHH_`` escaping (control characters, surrogate pairs, a literal ``_x``)."""
    if not text:
        return ""
    if "_x" not in text and "_X" not in text:
        return text
    units = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # Surrogate pairs were escaped as two UTF-16 units; recombine them.
    return units.encode("utf-16", "surrogatepass").decode("utf-16")


class _Context:
    """Per top-level object: the type-name table and the object's own XML, for references inside raw fragments."""

    def __init__(self, source_xml: str | None) -> None:
        self.source_xml = source_xml
        self.types: dict[str, list[str]] = {}
        self.objects: dict[str, ET.Element] = {}
        self._indexed = False

    def lookup_types(self, ref: str) -> list[str]:
        if ref not in self.types:
            self._index_source()
        return self.types.get(ref, [])

    def lookup_object(self, ref: str) -> ET.Element | None:
        if ref not in self.objects:
            self._index_source()
        return self.objects.get(ref)

    def _index_source(self) -> None:
        # A TNRef/Ref inside a raw fragment can point at a definition pypsrp consumed elsewhere in the object.
        if self._indexed or not self.source_xml:
            return
        self._indexed = True
        try:
            root = _parse_fragment(self.source_xml)
        except ValueError:
            return
        for element in root.iter():
            if element.tag == "TN" and "RefId" in element.attrib:
                self.types.setdefault(element.attrib["RefId"], [t.text or "" for t in element if t.tag == "T"])
            elif element.tag == "Obj" and "RefId" in element.attrib:
                self.objects.setdefault(element.attrib["RefId"], element)


def _parse_fragment(text: str) -> ET.Element:
    # CLIXML never carries a DTD; refusing one rules out entity-expansion attacks without defusedxml.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("refusing XML with a DTD")
    try:
        root = ET.fromstring(text)  # noqa: S314 - DTDs refused above; input is CLIXML from pypsrp
    except ET.ParseError as exc:
        raise ValueError(f"malformed CLIXML fragment: {exc}") from None
    for element in root.iter():
        if "}" in element.tag:  # Export-Clixml files carry the PowerShell namespace; the wire format does not
            element.tag = element.tag.split("}", 1)[1]
    return root


def _xml_value(element: ET.Element, ctx: _Context, nested: bool) -> Any:
    """Convert one CLIXML element (from a raw fragment) by the same rules as ``to_plain``."""
    tag = element.tag
    text = element.text
    if tag == "Nil":
        return None
    if tag in ("S", "URI", "XD", "SBK", "Version", "TS", "D"):
        # Version, TimeSpan and Decimal stay strings: that is what pypsrp's deserializer returns for them too.
        return _unescape(text)
    if tag == "B":
        return (text or "").strip().lower() == "true"
    if tag in _INT_TAGS:
        return int(text or "0")
    if tag in ("Db", "Sg"):
        return float(text or "0")
    if tag == "C":
        return chr(int(text or "0"))
    if tag == "G":
        return str(uuid.UUID(text or ""))
    if tag == "DT":
        return parse_datetime(text or "")
    if tag == "BA":
        return base64.b64decode(text or "")
    if tag == "Ref":
        target = ctx.lookup_object(element.attrib.get("RefId", ""))
        return None if target is None else _xml_value(target, ctx, nested)
    if tag in _LIST_TAGS:
        # Complex items of a collection become dicts (not their ToString); their own properties are nested.
        return [_xml_value(child, ctx, False) for child in element]
    if tag == "Obj":
        return _xml_object(element, ctx, nested)
    return _unescape(text)


def _xml_object(element: ET.Element, ctx: _Context, nested: bool) -> Any:
    types: list[str] = []
    to_string: str | None = None
    props: dict[str, Any] = {}
    scalar_children: list[ET.Element] = []
    list_value: list[Any] | None = None
    dict_value: dict[Any, Any] | None = None
    for child in element:
        if child.tag == "TN":
            types = [t.text or "" for t in child if t.tag == "T"]
            ctx.types[child.attrib.get("RefId", "")] = types
        elif child.tag == "TNRef":
            types = ctx.lookup_types(child.attrib.get("RefId", ""))
        elif child.tag == "ToString":
            to_string = _unescape(child.text)
        elif child.tag in ("Props", "MS"):
            for prop in child:
                name = prop.attrib.get("N")
                if name is not None and name not in DROPPED_MEMBERS:
                    props[name] = _xml_value(prop, ctx, True)
        elif child.tag in _LIST_TAGS:
            list_value = [_xml_value(item, ctx, False) for item in child]
        elif child.tag == "DCT":
            dict_value = {}
            for entry in child:
                key = entry.find("*[@N='Key']")
                val = entry.find("*[@N='Value']")
                dict_value[_xml_value(key, ctx, True) if key is not None else None] = (
                    _xml_value(val, ctx, True) if val is not None else None
                )
        else:
            scalar_children.append(child)
    if "RefId" in element.attrib:
        ctx.objects.setdefault(element.attrib["RefId"], element)

    stripped = [_strip_prefix(t) for t in types]
    if list_value is not None:
        return list_value
    if dict_value is not None:
        return dict_value
    is_enum = "System.Enum" in stripped or (
        not stripped and to_string is not None and not props and len(scalar_children) == 1
        and scalar_children[0].tag in _INT_TAGS
    )
    if is_enum:
        return to_string
    if nested and to_string is not None:
        return to_string
    if not props and len(scalar_children) == 1:
        return _xml_value(scalar_children[0], ctx, nested)
    result = dict(props)
    result[TYPE_KEY] = stripped[0] if stripped else "System.Object"
    return result


def _raw_list(obj: Any, ctx: _Context) -> list[Any] | None:
    """If pypsrp left a collection as raw ``<LST>`` XML in ``property_sets``, parse and convert it."""
    for item in obj.property_sets:
        if isinstance(item, str) and item.lstrip().startswith(tuple(f"<{t}" for t in _LIST_TAGS)):
            return _xml_value(_parse_fragment(item), ctx, True)
    return None


def _dt_names(obj: Any) -> frozenset[str] | None:
    """Names of the object's own properties that were ``<DT>`` on the wire; None when the wire XML is unknown."""
    source = getattr(obj, "_xml", None)
    if not isinstance(source, str):
        return None
    try:
        root = _parse_fragment(source)
    except ValueError:
        return None
    return frozenset(
        el.attrib["N"] for section in ("Props", "MS") for el in root.findall(f"{section}/DT") if "N" in el.attrib
    )


def _convert(value: Any, ctx: _Context, nested: bool) -> Any:
    if value is None or isinstance(value, bool | int | float | datetime):
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value
    if isinstance(value, list | tuple):
        return [_convert(item, ctx, False) for item in value]
    if isinstance(value, Mapping):
        return {_convert(k, ctx, True): _convert(v, ctx, True) for k, v in value.items()}
    if _is_complex(value):
        raw = _raw_list(value, ctx)
        if raw is not None:
            return raw
        if _is_enum(value):
            return value.to_string
        if nested and value.to_string is not None:
            return value.to_string
        return _object_dict(value, ctx)
    if hasattr(value, "queue"):  # queue.Queue from a deserialized <QUE>
        return [_convert(item, ctx, False) for item in list(value.queue)]
    return str(value)


def _object_dict(obj: Any, ctx: _Context) -> Any:
    result: dict[str, Any] = {}
    dt_names: frozenset[str] | None = None
    dt_checked = False
    for section in (obj.adapted_properties, obj.extended_properties):
        for name, value in section.items():
            if name in DROPPED_MEMBERS:
                continue
            if isinstance(value, str) and _DATETIME_RE.match(value):
                # pypsrp returns <DT> text as a plain str; confirm against the wire XML (when pypsrp kept it) so
                # that a string property which merely looks like a date stays a string.
                if not dt_checked:
                    dt_names, dt_checked = _dt_names(obj), True
                if dt_names is None or name in dt_names:
                    value = parse_datetime(value)
                result[name] = value
                continue
            result[name] = _convert(value, ctx, True)
    if not result and obj.property_sets and len(obj.property_sets) == 1:
        return _convert(obj.property_sets[0], ctx, True)  # a primitive wrapped in an Obj
    types = obj.types or []
    result[TYPE_KEY] = _strip_prefix(types[0]) if types else "System.Object"
    return result


def to_plain(obj: Any) -> Any:
    """Convert one pypsrp output object (or a value inside one) into plain dicts, lists and scalars."""
    ctx = _Context(getattr(obj, "_xml", None) if _is_complex(obj) else None)
    return _convert(obj, ctx, False)


def clixml_to_plain(xml_text: str) -> Any:
    """Convert one CLIXML ``<Obj>`` element's text by the same rules, without pypsrp (used for raw fragments)."""
    root = _parse_fragment(xml_text)
    return _xml_value(root, _Context(xml_text), False)


# --- typed readers -------------------------------------------------------------------------------------------------


class RequesterVote(NamedTuple):
    """One requester's vote on a component: Functional, Maintenance, Sidelined, Deployment, HealthApi..."""

    requester: str
    state: str
    timestamp: datetime | None


@dataclass(frozen=True)
class ComponentState:
    """One row of Get-ServerComponentState: the effective state and the votes it was computed from."""

    server: str
    component: str
    state: str
    local_states: tuple[RequesterVote, ...] = ()
    remote_states: tuple[RequesterVote, ...] = ()


@dataclass(frozen=True)
class ServiceHealth:
    """One role row of Test-ServiceHealth."""

    role: str
    required_services_running: bool
    services_running: tuple[str, ...] = ()
    services_not_running: tuple[str, ...] = ()


@dataclass(frozen=True)
class MailboxServer:
    """The Get-MailboxServer settings maintenance snapshots and restores."""

    name: str
    dag: str | None
    auto_activation_policy: str
    activation_disabled_and_move_now: bool
    maximum_active_databases: int | None
    auto_database_mount_dial: str | None


@dataclass(frozen=True)
class ExchangeServer:
    """Identity and build of one Exchange server (Get-ExchangeServer)."""

    name: str
    fqdn: str
    version: str  # AdminDisplayVersion as Exchange prints it: "Version 15.2 (Build 986.5)"
    build: str  # "15.2.986.5"
    site: str  # the AD site name, the last element of the Site ADObjectId
    roles: tuple[str, ...] = field(default_factory=tuple)


def _plain(obj: Any) -> dict[str, Any]:
    value = obj if isinstance(obj, Mapping) else to_plain(obj)
    if not isinstance(value, Mapping):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return dict(value)


def _votes(value: Any) -> tuple[RequesterVote, ...]:
    votes = []
    for item in value or []:
        if isinstance(item, Mapping):
            timestamp = item.get("Timestamp")
            if isinstance(timestamp, str):
                timestamp = parse_datetime(timestamp)
            votes.append(RequesterVote(str(item.get("Requester", "")), str(item.get("State", "")), timestamp))
    return tuple(votes)


def component_states(objs: Iterable[Any]) -> list[ComponentState]:
    """Read Get-ServerComponentState output (plain dicts or pypsrp objects)."""
    states = []
    for obj in objs:
        row = _plain(obj)
        states.append(
            ComponentState(
                server=str(row.get("ServerFqdn") or row.get("Identity") or ""),
                component=str(row["Component"]),
                state=str(row["State"]),
                local_states=_votes(row.get("LocalStates")),
                remote_states=_votes(row.get("RemoteStates")),
            )
        )
    return states


def service_health(objs: Iterable[Any]) -> list[ServiceHealth]:
    """Read Test-ServiceHealth output: one entry per role."""
    rows = []
    for obj in objs:
        row = _plain(obj)
        rows.append(
            ServiceHealth(
                role=str(row.get("Role", "")),
                required_services_running=bool(row.get("RequiredServicesRunning")),
                services_running=tuple(str(s) for s in row.get("ServicesRunning") or ()),
                services_not_running=tuple(str(s) for s in row.get("ServicesNotRunning") or ()),
            )
        )
    return rows


def mailbox_server(obj: Any) -> MailboxServer:
    """Read one Get-MailboxServer object."""
    row = _plain(obj)
    maximum = row.get("MaximumActiveDatabases")
    return MailboxServer(
        name=str(row.get("Name", "")),
        dag=row.get("DatabaseAvailabilityGroup") or None,
        auto_activation_policy=str(row.get("DatabaseCopyAutoActivationPolicy", "")),
        activation_disabled_and_move_now=bool(row.get("DatabaseCopyActivationDisabledAndMoveNow")),
        maximum_active_databases=None if maximum is None else int(maximum),
        auto_database_mount_dial=row.get("AutoDatabaseMountDial"),
    )


_BUILD_RE = re.compile(r"Version (\d+)\.(\d+) \(Build (\d+)\.(\d+)\)")


def exchange_server(obj: Any) -> ExchangeServer:
    """Read one Get-ExchangeServer object."""
    row = _plain(obj)
    version = str(row.get("AdminDisplayVersion") or "")
    match = _BUILD_RE.search(version)
    build = ".".join(match.groups()) if match else ""
    site = str(row.get("Site") or "")
    roles = str(row.get("ServerRole") or "")
    return ExchangeServer(
        name=str(row.get("Name", "")),
        fqdn=str(row.get("Fqdn", "")),
        version=version,
        build=build,
        site=site.rsplit("/", 1)[-1],
        roles=tuple(r.strip() for r in roles.split(",") if r.strip() and r.strip() != "None"),
    )
