"""What a change does in its work phase, as data: ``hold`` (the operator's hold, the default), ``reboot``, or
``exchange-update`` (install a Cumulative Update or a Security Update unattended). Pure: no database.

``normalize_work(data)`` checks a request's ``work`` object and returns it complete (defaults filled in), or raises
``WorkInvalid`` naming the field. The rules it keeps are in docs/exchange-install.md: a package path is absolute
(a local drive path or a UNC share), never relative (PowerShell would resolve a bare ``setup.exe`` through PATH to
the installed ``bin\\Setup.exe``, which "succeeds" without upgrading); a build is four numbers (15.2.1748.10); a CU
always reboots afterwards.
"""
from __future__ import annotations

import re
from typing import Any

HOLD, REBOOT, EXCHANGE_UPDATE = "hold", "reboot", "exchange-update"
KINDS = (HOLD, REBOOT, EXCHANGE_UPDATE)
CU, SU = "cu", "su"
ALWAYS, IF_REQUIRED = "always", "if-required"
DEFAULT_WORK: dict[str, Any] = {"kind": HOLD}
# Budgets in minutes (docs/exchange-install.md §4): Microsoft estimates an hour for a CU.
INSTALL_MINUTES = {CU: 90, SU: 30}
REBOOT_MINUTES = 30

_BUILD = re.compile(r"^15\.[0-2]\.\d{1,4}\.\d{1,3}$")
_LOCAL = re.compile(r"^[A-Za-z]:\\")
_UNC = re.compile(r"^\\\\[A-Za-z0-9][A-Za-z0-9.-]*\\[^\\]+\\")
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\"'`$;|&<>*?]")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def default_work_data() -> dict[str, Any]:
    return dict(DEFAULT_WORK)


class WorkInvalid(ValueError):
    """A ``work`` object that cannot run; ``field`` names the offending key (dotted for nested ones)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_build(text: str) -> tuple[int, int, int, int]:
    """``15.2.1748.10`` as a tuple; the long form ``15.02.1748.010`` is accepted. Raises ValueError otherwise."""
    parts = str(text).strip().split(".")
    if len(parts) != 4 or not all(p.isdigit() and 0 < len(p) <= 4 for p in parts):
        raise ValueError(f"{str(text)[:40]!r} is not an Exchange build (four numbers, e.g. 15.2.1748.10)")
    build = tuple(int(p) for p in parts)
    if not _BUILD.match(".".join(str(n) for n in build)):
        raise ValueError(f"{str(text)[:40]!r} is not an Exchange 2016/2019/SE build (15.1.x.y or 15.2.x.y)")
    return build  # type: ignore[return-value]


def format_build(build: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in build)


def check_package_path(path: Any) -> str:
    """An absolute Windows path (``D:\\CU15``) or a UNC path (``\\\\files\\exchange\\CU15``); returns it stripped."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError("give the package's path on the server (e.g. D:\\ExchangeCU15) or a UNC share")
    path = path.strip()
    if len(path) > 240:
        raise ValueError("the path is longer than 240 characters")
    if _BAD_PATH_CHARS.search(path):
        raise ValueError("the path may not contain quotes, wildcards, control or shell characters")
    if "/" in path:
        raise ValueError("use backslashes: this is a Windows path")
    if not (_LOCAL.match(path) or _UNC.match(path)):
        raise ValueError("the path must be absolute: a local path such as D:\\ExchangeCU15 or a UNC path such as "
                         "\\\\files\\exchange\\CU15 (a relative path or a bare setup.exe may run the installed "
                         "Setup.exe instead of the package)")
    if any(part in (".", "..") for part in path.split("\\")[1:]):
        raise ValueError("the path may not contain '.' or '..' segments")
    return path


def normalize_work(data: Any) -> dict[str, Any]:
    """The ``work`` object complete with its defaults; raises WorkInvalid for anything that cannot run."""
    if data is None:
        return dict(DEFAULT_WORK)
    if not isinstance(data, dict):
        raise WorkInvalid("work", "expected an object such as {\"kind\": \"hold\"}")
    kind = data.get("kind", HOLD)
    if kind not in KINDS:
        raise WorkInvalid("work.kind", f"must be one of {', '.join(KINDS)}")
    allowed = {HOLD: {"kind"}, REBOOT: {"kind", "reboot_minutes"},
               EXCHANGE_UPDATE: {"kind", "package", "target_build", "reboot", "ad_prepared",
                                 "restore_disabled_services", "install_minutes", "reboot_minutes"}}[kind]
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise WorkInvalid(f"work.{unknown[0]}", f"not a field of work kind {kind!r}")
    if kind == HOLD:
        return {"kind": HOLD}
    work: dict[str, Any] = {"kind": kind, "reboot_minutes": _minutes(data, "reboot_minutes", REBOOT_MINUTES, 240)}
    if kind == REBOOT:
        return work
    package = data.get("package")
    if not isinstance(package, dict):
        raise WorkInvalid("work.package", "required: {\"kind\": \"cu\"|\"su\", \"path\": ..., \"sha256\": optional}")
    extra = sorted(set(package) - {"kind", "path", "sha256"})
    if extra:
        raise WorkInvalid(f"work.package.{extra[0]}", "not a package field (kind, path, sha256)")
    pkind = package.get("kind")
    if pkind not in (CU, SU):
        raise WorkInvalid("work.package.kind", "must be 'cu' (Cumulative Update) or 'su' (Security Update)")
    try:
        path = check_package_path(package.get("path"))
    except ValueError as exc:
        raise WorkInvalid("work.package.path", str(exc)) from None
    lowered = path.lower()
    if pkind == SU and not lowered.endswith((".exe", ".msp")):
        raise WorkInvalid("work.package.path", "a Security Update is its .exe or .msp file")
    if pkind == CU and lowered.endswith((".iso", ".msp", ".exe")) and not lowered.endswith("\\setup.exe"):
        raise WorkInvalid("work.package.path", "a Cumulative Update is the folder of its extracted media (holding "
                                               "Setup.exe) or that Setup.exe; mount or extract an ISO first")
    if pkind == CU and lowered.endswith("\\setup.exe"):
        path = path[: -len("\\setup.exe")]
    sha256 = package.get("sha256") or ""
    if sha256 and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
        raise WorkInvalid("work.package.sha256", "64 hexadecimal characters")
    if sha256 and pkind == CU:
        raise WorkInvalid("work.package.sha256", "a CU's media is a folder: give a checksum for an SU file only")
    try:
        target = format_build(parse_build(data.get("target_build", "")))
    except ValueError as exc:
        raise WorkInvalid("work.target_build", str(exc)) from None
    reboot = data.get("reboot", ALWAYS if pkind == CU else IF_REQUIRED)
    if reboot not in (ALWAYS, IF_REQUIRED):
        raise WorkInvalid("work.reboot", "must be 'always' or 'if-required'")
    if pkind == CU and reboot != ALWAYS:
        raise WorkInvalid("work.reboot", "a Cumulative Update always needs a restart afterwards")
    for flag in ("ad_prepared", "restore_disabled_services"):
        if not isinstance(data.get(flag, False), bool):
            raise WorkInvalid(f"work.{flag}", "must be true or false")
    work.update({
        "package": {"kind": pkind, "path": path, "sha256": sha256.lower()},
        "target_build": target,
        "reboot": reboot,
        "ad_prepared": bool(data.get("ad_prepared", False)),
        "restore_disabled_services": bool(data.get("restore_disabled_services", False)),
        "install_minutes": _minutes(data, "install_minutes", INSTALL_MINUTES[pkind], 24 * 60),
    })
    return work


def _minutes(data: dict[str, Any], name: str, default: int, maximum: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise WorkInvalid(f"work.{name}", f"whole minutes between 1 and {maximum}")
    return value


def describe_work(work: dict[str, Any] | None) -> str:
    """One line for people (admin, report, mails)."""
    work = work or DEFAULT_WORK
    kind = work.get("kind", HOLD)
    if kind == HOLD:
        return "hold for the operator's work-done report"
    if kind == REBOOT:
        return f"restart the server and wait until healthy (up to {work.get('reboot_minutes', REBOOT_MINUTES)} min)"
    package = work.get("package") or {}
    label = "Cumulative Update" if package.get("kind") == CU else "Security Update"
    return (f"install the {label} at {package.get('path')} to build {work.get('target_build')}, then restart "
            f"({work.get('reboot')})")
