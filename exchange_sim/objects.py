"""Plain data the simulator answers with: .NET-shaped objects, enums, lists and error records.

These are deliberately dumb containers. The in-process session turns them into plain dicts (``session.to_plain``);
the WinRM/PSRP endpoint serializes them to CLIXML with ``Deserialized.`` in front of every type name, the way real
Exchange output arrives over remoting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

OBJECT = "System.Object"
ENUM_BASES = ("System.Enum", "System.ValueType", OBJECT)
VALUE_TYPE = ("System.ValueType", OBJECT)

ADOBJECTID_TYPES = ("Microsoft.Exchange.Data.Directory.ADObjectId", "Microsoft.Exchange.Data.ObjectId", OBJECT)
CONFIGURABLE = "Microsoft.Exchange.Data.ConfigurableObject"
AD_PRESENTATION = (
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    CONFIGURABLE,
    OBJECT,
)
AD_CONFIGURATION = (
    "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    CONFIGURABLE,
    OBJECT,
)
_MSCORLIB = "mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089"
_EXDATA = "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35"
_EXDIR = "Microsoft.Exchange.Data.Directory, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35"
MVP_STRING_TYPES = (
    f"Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, {_MSCORLIB}]]",
    "Microsoft.Exchange.Data.MultiValuedPropertyBase",
    OBJECT,
)
MVP_ADOBJECTID_TYPES = (
    "Microsoft.Exchange.Data.Directory.ADMultiValuedProperty`1"
    f"[[Microsoft.Exchange.Data.Directory.ADObjectId, {_EXDIR}]]",
    f"Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.Directory.ADObjectId, {_EXDIR}]]",
    "Microsoft.Exchange.Data.MultiValuedPropertyBase",
    OBJECT,
)
REQUESTER_DETAILS_LIST_TYPES = (
    "System.Collections.Generic.List`1[[Microsoft.Exchange.Data.Directory.Management."
    f"ServerComponentStatePresentationObject+RequesterDetails, {_EXDIR}]]",
    OBJECT,
)
INT_ARRAY_TYPES = ("System.Int32[]", "System.Array", OBJECT)


@dataclass(frozen=True)
class SimEnum:
    """A .NET enum value: serialized as ``<Obj><TN>…</TN><ToString>name</ToString><I32>value</I32></Obj>``."""

    type_names: tuple[str, ...]
    name: str
    value: int

    def __str__(self) -> str:
        return self.name


@dataclass
class SimList:
    """A typed .NET list (``List`1[...]``, ``MultiValuedProperty``); items are SimObject or primitives."""

    type_names: tuple[str, ...]
    items: list = field(default_factory=list)


@dataclass
class SimObject:
    """A .NET object. ``type_names`` come WITHOUT the ``Deserialized.`` prefix: the endpoint adds it on the wire."""

    type_names: tuple[str, ...]
    props: dict[str, Any]
    to_string: str | None = None


@dataclass(frozen=True)
class SimError:
    """A PowerShell ErrorRecord as Exchange writes it (FullyQualifiedErrorId, category, target)."""

    message: str
    error_id: str
    category: str
    target: str = ""
    exception_type: str = "System.Exception"


class SimTerminatingError(Exception):
    """The pipeline failed: the cmdlet threw (parameter binding, command not found, no-language, ...)."""

    def __init__(self, error: SimError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class SimResult:
    """What one invocation produced: output objects, non-terminating error records and warnings."""

    output: list[Any] = field(default_factory=list)
    errors: list[SimError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- small constructors shared by the model modules -------------------------------------------------------------


def enum(type_name: str, name: str, value: int) -> SimEnum:
    """An enum value of the given .NET enum type."""
    return SimEnum((type_name, *ENUM_BASES), name, value)


class EnumType:
    """A .NET enum type: names with their integer values, and case-insensitive lookup like PowerShell binding."""

    def __init__(self, type_name: str, members: dict[str, int]) -> None:
        self.type_name = type_name
        self.members = members
        self._folded = {name.lower(): name for name in members}

    def __call__(self, name: str) -> SimEnum:
        canonical = self.canonical(name)
        if canonical is None:
            raise KeyError(name)
        return enum(self.type_name, canonical, self.members[canonical])

    def canonical(self, name: str) -> str | None:
        return self._folded.get(str(name).strip().lower())

    @property
    def names(self) -> list[str]:
        return list(self.members)


def ad_object_id(name: str, distinguished_name: str, *, to_string: str | None = None, guid: str = "") -> SimObject:
    """An ADObjectId. Its ToString is what people see (server name, ``contoso.com/Users/alice``)."""
    return SimObject(
        ADOBJECTID_TYPES,
        {
            "Rdn": distinguished_name.split(",", 1)[0],
            "Name": name,
            "DistinguishedName": distinguished_name,
            "ObjectGuid": guid,
            "IsDeleted": False,
        },
        to_string if to_string is not None else name,
    )


def string_list(items: list[str]) -> SimList:
    """A ``MultiValuedProperty<string>``, e.g. Test-ServiceHealth's ServicesNotRunning."""
    return SimList(MVP_STRING_TYPES, list(items))


def byte_size(num_bytes: int, *, unlimited: bool = False) -> SimObject:
    """A ByteQuantifiedSize: ToString like ``1.5 GB (1,610,612,736 bytes)``."""
    units = (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10))
    text = f"{num_bytes} B ({num_bytes:,} bytes)"
    for unit, size in units:
        if num_bytes >= size:
            amount = f"{num_bytes / size:.3f}".rstrip("0").rstrip(".")
            text = f"{amount} {unit} ({num_bytes:,} bytes)"
            break
    if unlimited:
        return SimObject(
            (f"Microsoft.Exchange.Data.Unlimited`1[[Microsoft.Exchange.Data.ByteQuantifiedSize, {_EXDATA}]]",
             *VALUE_TYPE),
            {"IsUnlimited": True},
            "Unlimited",
        )
    return SimObject(("Microsoft.Exchange.Data.ByteQuantifiedSize", *VALUE_TYPE), {}, text)


def timestamp_to_string(value: datetime) -> str:
    """How .NET's invariant-ish en-US ToString renders a DateTime: ``9/28/2021 5:32:01 PM``."""
    hour = value.hour % 12 or 12
    ampm = "AM" if value.hour < 12 else "PM"
    return f"{value.month}/{value.day}/{value.year} {hour}:{value.minute:02d}:{value.second:02d} {ampm}"
