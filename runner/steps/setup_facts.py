"""What exmaint knows about Exchange setup, as pure functions (docs/exchange-install.md): the build of a file
version, the licence switch a CU needs, whether a CU changes Active Directory, the scheduled task that runs the
installer, and how to read ExchangeSetup.log. No I/O: the install steps feed these what the server said.
"""
from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape  # noqa: S406 - escaping text we write, never parsing

Build = tuple[int, int, int, int]

LOG_DIR = "C:\\ExchangeSetupLogs"
SETUP_LOG = LOG_DIR + "\\ExchangeSetup.log"
LOCAL_ROOT = "C:\\ExchangeUpdates"
MSIEXEC = "C:\\Windows\\System32\\msiexec.exe"
SETUP_KEY = "HKLM:\\SOFTWARE\\Microsoft\\ExchangeServer\\v15\\Setup"
ROLE_KEYS = "HKLM:\\SOFTWARE\\Microsoft\\ExchangeServer\\v15\\*"
# The three usual pending-reboot markers (docs/exchange-install.md, "Before the window").
SESSION_MANAGER_KEY = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager"
REBOOT_KEYS = (
    "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending",
    "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired",
)
SU_SUCCESS_CODES = (0, 3010, 1641)  # 3010: success, restart needed; 1641: success, the installer started a restart

START_LINE = re.compile(r"Starting Microsoft Exchange Server (?:2016|2019|Subscription Edition) Setup")
SUCCESS_LINE = "The Exchange Server setup operation completed successfully."
FAILURE_MARKERS = ("Setup is stopping now because of one or more critical errors.",
                   "The Exchange Server setup operation didn't complete.")
_PHASE = re.compile(r"(?:Beginning processing )?(Prerequisite Analysis|Preparing Setup|Stopping Services|"
                    r"Copying Exchange Files|Language Files|Restoring Services|Languages|Exchange Management Tools|"
                    r"Mailbox role: [A-Za-z ]+|Finalizing Setup)|Beginning processing (\S+)")
_VERSION = re.compile(r"(\d{1,2})\.0?(\d{1,2})\.0*(\d{1,4})\.0*(\d{1,3})")

# Active Directory levels per CU (schema rangeUpper, organisation objectVersion), keyed by (major, minor, build):
# moving between CUs whose levels differ needs /PrepareSchema (schema) or /PrepareAD (organisation) first.
AD_LEVELS: dict[tuple[int, int, int], tuple[int, int]] = {
    (15, 1, 2507): (15334, 16223),  # 2016 CU23
    (15, 2, 1258): (17003, 16761),  # 2019 CU13
    (15, 2, 1544): (17003, 16762),  # 2019 CU14
    (15, 2, 1748): (17003, 16763),  # 2019 CU15
    (15, 2, 2562): (17003, 16763),  # Subscription Edition RTM
}
# From the September 2021 CUs (2016 CU22 = 15.1.2375, 2019 CU11 = 15.2.986) setup wants the diagnostic-data form.
_DIAGNOSTIC_SWITCH_FROM = {(15, 1): 2375, (15, 2): 986}


def build_of(text: Any) -> Build | None:
    """The build in a file version or a FileVersionInfo's text (``15.02.1748.010`` or ``FileVersion: 15.2...``)."""
    if text is None:
        return None
    if isinstance(text, dict):
        text = text.get("FileVersion") or text.get("ProductVersion") or ""
    found = re.search(r"FileVersion:\s*(\S+)", str(text))
    match = _VERSION.search(found.group(1) if found else str(text))
    if match is None:
        return None
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def fmt(build: Build | None) -> str:
    return ".".join(str(n) for n in build) if build else "unknown"


def licence_switch(target: Build) -> str:
    first_new = _DIAGNOSTIC_SWITCH_FROM.get(target[:2], 0)
    if target[2] >= first_new:
        return "/IAcceptExchangeServerLicenseTerms_DiagnosticDataOFF"
    return "/IAcceptExchangeServerLicenseTerms"


def ad_preparation(installed: Build, target: Build, media: str) -> list[str] | None:
    """The commands an administrator runs once before this CU, or None when AD needs nothing. Raises ValueError
    when either CU's AD levels are unknown (the caller asks the operator to confirm AD is prepared)."""
    before, after = AD_LEVELS.get(installed[:3]), AD_LEVELS.get(target[:3])
    if after is None or before is None:
        missing = fmt(target) if after is None else fmt(installed)
        raise ValueError(f"the Active Directory levels of build {missing} are not known to exmaint")
    setup, switch = f'"{media}\\Setup.exe"', licence_switch(target)
    commands = []
    if after[0] > before[0]:
        commands.append(f"{setup} /PrepareSchema {switch}")
    if after[1] > before[1] or commands:
        commands.append(f"{setup} /PrepareAD {switch}")
    return commands or None


def task_xml(*, command: str, arguments: str, user: str | None, description: str) -> str:
    """A one-shot task definition for Register-ScheduledTask -Xml: highest privileges, as ``user`` with its
    password (LogonType Password) or as SYSTEM when ``user`` is None; no trigger (started by Start-ScheduledTask);
    no time limit (setup's budget is watched by the poll, not by the Task Scheduler)."""
    principal = (f"<UserId>{escape(user)}</UserId><LogonType>Password</LogonType>" if user
                 else "<UserId>S-1-5-18</UserId>")
    return (
        '<?xml version="1.0" encoding="UTF-16"?>'
        '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">'
        f"<RegistrationInfo><Description>{escape(description)}</Description></RegistrationInfo>"
        f'<Principals><Principal id="Author">{principal}<RunLevel>HighestAvailable</RunLevel></Principal>'
        "</Principals>"
        "<Settings><MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>"
        "<DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries><ExecutionTimeLimit>PT0S</ExecutionTimeLimit>"
        "<AllowStartOnDemand>true</AllowStartOnDemand><Enabled>true</Enabled></Settings>"
        f'<Actions Context="Author"><Exec><Command>{escape(command)}</Command>'
        f"<Arguments>{escape(arguments)}</Arguments></Exec></Actions></Task>"
    )


def last_run(lines: list[str]) -> list[str]:
    """The lines of the last setup run in ExchangeSetup.log (the file is appended to per run)."""
    starts = [i for i, line in enumerate(lines) if START_LINE.search(line)]
    return lines[starts[-1]:] if starts else lines


def last_phase(lines: list[str]) -> str:
    for line in reversed(lines):
        match = _PHASE.search(line)
        if match:
            return (match.group(1) or match.group(2)).strip()
    return ""


def log_verdict(lines: list[str]) -> tuple[str, list[str]]:
    """``("succeeded" | "failed" | "unknown", evidence lines)`` for the last run in the log."""
    run = last_run(lines)
    if any(SUCCESS_LINE in line for line in run):
        return "succeeded", [line for line in run if SUCCESS_LINE in line][-1:]
    errors = [line for line in run if "[ERROR]" in line or any(m in line for m in FAILURE_MARKERS)]
    if errors:
        return "failed", errors[-8:]
    return "unknown", run[-8:]
