"""The Windows side of a simulated Exchange server, as its default WinRM endpoint (Microsoft.PowerShell) sees it:
files (the Exchange install, update packages, ExchangeSetup.log growing over simulated minutes), registry values
(ExSetup's build, setup watermarks, pending-reboot markers), free disk per drive, scheduled tasks, the installer
process, and restarts (the endpoints stop answering for a while, then services start one by one).

``Windows.advance(server, now)`` moves a running setup and a restart forward; the model calls it on every tick, so
state catches up lazily with simulated time like the transport queues do.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .servers import Server

GB = 1024**3
INSTALL_PATH = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\"
EXSETUP = INSTALL_PATH + "bin\\ExSetup.exe"
SETUP_LOG = "C:\\ExchangeSetupLogs\\ExchangeSetup.log"
V15 = "HKLM:\\SOFTWARE\\Microsoft\\ExchangeServer\\v15"
SESSION_MANAGER = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager"
CBS_REBOOT = "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending"
ROLE_KEYS = ("Mailbox", "ClientAccess", "HubTransport", "Cafe", "FrontendTransport")
SHARE = "\\\\files.contoso.com\\exchange"
CU_SECONDS, SU_SECONDS = 50 * 60, 12 * 60
RESTART_SECONDS = 180.0  # the endpoints do not answer for this long after Restart-Computer
SERVICE_START_GAP = 4.0  # services come back one by one after a restart
WINRM_BLIP = (0.30, 0.33)  # setup restarts WinRM during "Stopping Services": no answer in this slice of the run
# Services CU setup sets Disabled while it runs (docs/exchange-install.md) and puts back at the end.
SETUP_DISABLES = ("WinMgmt", "W3Svc", "RemoteRegistry")
CU_PHASES = (
    "Prerequisite Analysis", "Preparing Setup", "Stopping Services", "Copying Exchange Files", "Language Files",
    "Restoring Services", "Languages", "Exchange Management Tools", "Mailbox role: Transport service",
    "Mailbox role: Client Access service", "Mailbox role: Mailbox service", "Mailbox role: Front End Transport service",
    "Mailbox role: Client Access Front End service", "Finalizing Setup",
)


def fmt(build: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in build)


def long_form(build: tuple[int, ...]) -> str:
    """FileVersionInfo writes Exchange builds zero-padded: 15.02.1748.010."""
    return f"{build[0]}.{build[1]:02d}.{build[2]:04d}.{build[3]:03d}"


def key(path: str) -> str:
    return path.rstrip("\\").lower()


@dataclass
class File:
    path: str
    length: int = 1024
    version: tuple[int, int, int, int] | None = None
    directory: bool = False
    lines: list[str] = field(default_factory=list)
    builds: tuple[int, int, int, int] | None = None  # an update package: the build it installs
    written: datetime | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.lower().encode()).hexdigest().upper()


@dataclass
class Task:
    name: str
    user: str
    command: str
    arguments: str
    highest: bool
    state: str = "Ready"
    last_run: datetime | None = None
    last_result: int = 267011  # SCHED_S_TASK_HAS_NOT_RUN


@dataclass
class SetupRun:
    kind: str  # cu | su | noop (the installed bin\Setup.exe: "succeeds" without upgrading)
    task: str
    started: datetime
    seconds: float
    target: tuple[int, int, int, int] | None
    outcome: str = "success"  # success | fail | hang | refused
    error: str = ""
    log_path: str = SETUP_LOG
    lines_written: int = 0
    done: bool = False


@dataclass
class Windows:
    """One server's Windows view; faults set the flags at the bottom."""

    files: dict[str, File] = field(default_factory=dict)
    registry: dict[str, dict[str, Any]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # registry key -> its spelling
    free: dict[str, int] = field(default_factory=lambda: {"C": 120 * GB, "D": 400 * GB})
    tasks: dict[str, Task] = field(default_factory=dict)
    setup: SetupRun | None = None
    boot_time: datetime | None = None
    down_from: datetime | None = None
    down_until: datetime | None = None  # None while down_from is set: it never comes back
    pending_starts: list[tuple[datetime, str]] = field(default_factory=list)
    setups_started: int = 0
    cu_build: tuple[int, int, int, int] = (15, 2, 0, 0)  # what AdminDisplayVersion shows: SUs leave it alone
    # faults
    setup_outcome: str = "success"
    stays_disabled: str = ""
    never_returns: bool = False
    packages_missing: bool = False

    # --- building ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, build: tuple[int, int, int, int], now: datetime) -> Windows:
        win = cls(boot_time=now - timedelta(days=12), cu_build=build)
        win.add_file(File(EXSETUP, 30_000, version=build))
        win.add_file(File(INSTALL_PATH + "bin\\Setup.exe", 30_000, version=build))
        win.set_value(V15 + "\\Setup", "MsiInstallPath", INSTALL_PATH)
        for role in ROLE_KEYS:
            win.set_value(f"{V15}\\{role}", "ConfiguredVersion", fmt(build))
            win.set_value(f"{V15}\\{role}", "UnpackedVersion", fmt(build))
        win.set_value(SESSION_MANAGER, "BootExecute", ["autocheck autochk *"])
        return win

    def add_file(self, file: File) -> None:
        self.files[key(file.path)] = file
        parent = file.path.rstrip("\\").rsplit("\\", 1)[0]
        while len(parent) > 2 and key(parent) not in self.files:
            self.files[key(parent)] = File(parent, 0, directory=True)
            parent = parent.rsplit("\\", 1)[0]

    def add_package(self, path: str, builds: tuple[int, int, int, int], *, cu: bool) -> None:
        """A CU's extracted media folder (Setup.exe carries the build) or an SU file."""
        if cu:
            self.add_file(File(path, 0, directory=True, builds=builds))
            self.add_file(File(path + "\\Setup.exe", 60_000, version=builds, builds=builds))
        else:
            self.add_file(File(path, 150 * 1024**2, builds=builds))

    def find(self, path: str) -> File | None:
        if self.packages_missing and (path.startswith("\\\\") or key(path).startswith(("d:\\exchange",
                                                                                          "c:\\exchangeupdates"))):
            return None
        return self.files.get(key(path))

    def set_value(self, path: str, name: str, value: Any) -> None:
        self.registry.setdefault(key(path), {})[name] = value
        self.names.setdefault(key(path), path)

    def remove_value(self, path: str, name: str) -> None:
        self.registry.get(key(path), {}).pop(name, None)

    # --- reading ----------------------------------------------------------------------------------------
    def build(self) -> tuple[int, int, int, int]:
        return self.files[key(EXSETUP)].version  # type: ignore[return-value]

    def is_down(self, now: datetime) -> bool:
        if self.down_from is not None and now >= self.down_from:
            return self.down_until is None or now < self.down_until
        run = self.setup
        if run is not None and run.kind == "cu" and not run.done and run.outcome != "refused":
            fraction = (now - run.started).total_seconds() / run.seconds
            return WINRM_BLIP[0] <= fraction < WINRM_BLIP[1]
        return False

    def running_processes(self) -> list[str]:
        run = self.setup
        if run is None or run.done:
            return []
        return ["ExSetup"] if run.kind == "cu" else ["msiexec"]

    # --- time -------------------------------------------------------------------------------------------
    def advance(self, server: Server, now: datetime, on_failure: Any) -> None:
        if self.down_until is not None and now >= self.down_until:
            self._boot(server, self.down_until)
        for when, name in list(self.pending_starts):
            if when <= now:
                self.pending_starts.remove((when, name))
                service = server.services.get(name)
                if service is not None and service.start_type == "Automatic":
                    service.running = True
        run = self.setup
        if run is None or run.done:
            return
        fraction = min(1.0, (now - run.started).total_seconds() / run.seconds)
        if run.outcome == "hang":
            fraction = min(fraction, 0.6)
        elif run.outcome == "fail":
            fraction = min(fraction, 0.5)
        self._write_log(run, fraction, now)
        if run.kind == "cu" and fraction >= 0.2:
            for name in SETUP_DISABLES:
                if name in server.services:
                    server.services[name].start_type = "Disabled"
                    server.services[name].running = False
            for service in server.services.values():
                if service.name.startswith("MSExchange"):
                    service.running = False
        if run.outcome == "fail" and fraction >= 0.5:
            self._finish(server, run, now, success=False)
            if run.kind == "cu":
                on_failure(server, now)
        elif run.outcome == "refused" or (run.outcome == "success" and fraction >= 1.0):
            self._finish(server, run, now, success=run.outcome == "success")

    def _write_log(self, run: SetupRun, fraction: float, now: datetime) -> None:
        log = self.files.get(key(run.log_path))
        if log is None:
            log = File(run.log_path, 0, written=now)
            self.add_file(log)
        lines = self._script(run)
        wanted = len(lines) if run.outcome == "refused" else int(len(lines) * fraction)
        for line in lines[run.lines_written:wanted]:
            log.lines.append(f"[{now:%m/%d/%Y %H:%M:%S}.0000] [0] {line}")
        run.lines_written = max(run.lines_written, wanted)
        log.written = now

    def _script(self, run: SetupRun) -> list[str]:
        if run.kind == "su":
            return ["=== Verbose logging started ===", "MSI (s): Applying patch", "Product: Microsoft Exchange "
                    "Server - Update installing.", "Installing update files", "Updating OWA and ECP files",
                    "Product: Microsoft Exchange Server - Update installed successfully."]
        head = ["Starting Microsoft Exchange Server 2019 Setup",
                f"Setup version: {fmt(run.target or (0, 0, 0, 0))}.", "Logged on user: CONTOSO\\exinstall.",
                "Command Line Parameter Name='mode', Value='Upgrade'.",
                "The installation mode is set to: 'BuildToBuildUpgrade'."]
        if run.outcome == "refused":
            return [*head, f"[ERROR] {run.error}", "Setup is stopping now because of one or more critical errors.",
                    "The Exchange Server setup operation didn't complete.  More details can be found in "
                    "ExchangeSetup.log located in the <SystemDrive>:\\ExchangeSetupLogs folder.", "End of Setup"]
        body = [f"Beginning processing {phase}" for phase in CU_PHASES]
        tail = ["The Exchange Server setup operation completed successfully.", "CurrentResult main.run:235: 0",
                "End of Setup"]
        if run.outcome == "fail":
            half = len(head + body) // 2
            return [*(head + body)[:half],
                    "[ERROR] The following error was generated when \"$error.Clear(); & $RoleBinPath\\"
                    "ServiceControl.ps1 Start\" was run: \"Service 'MSExchangeTransport' failed to start.\".",
                    "Setup is stopping now because of one or more critical errors.",
                    "The Exchange Server setup operation didn't complete.  More details can be found in "
                    "ExchangeSetup.log located in the <SystemDrive>:\\ExchangeSetupLogs folder.",
                    "CurrentResult main.run:235: 1", "End of Setup"]
        return head + body + tail

    def _finish(self, server: Server, run: SetupRun, now: datetime, *, success: bool) -> None:
        self._write_log(run, 1.0, now)
        run.done = True
        task = self.tasks.get(run.task)
        if task is not None:
            task.state = "Ready"
            task.last_result = 0 if success else (1603 if run.kind == "su" else 1)
            if run.kind == "su" and success:
                task.last_result = 3010
        if not success:
            return
        if run.kind in ("cu", "su") and run.target is not None:
            self.files[key(EXSETUP)].version = run.target
            if run.kind == "cu":
                self.cu_build = run.target
            for role in ROLE_KEYS:
                self.set_value(f"{V15}\\{role}", "ConfiguredVersion", fmt(run.target))
                self.set_value(f"{V15}\\{role}", "UnpackedVersion", fmt(run.target))
        for name in SETUP_DISABLES:
            if name in server.services:
                server.services[name].start_type = "Automatic"
                server.services[name].running = True
        if self.stays_disabled and self.stays_disabled in server.services:
            server.services[self.stays_disabled].start_type = "Disabled"
            server.services[self.stays_disabled].running = False
        for service in server.services.values():
            if service.start_type == "Automatic" and run.kind == "cu":
                service.running = True
        self.set_value(SESSION_MANAGER, "PendingFileRenameOperations", ["\\??\\C:\\Windows\\Temp\\ExSetup.tmp", ""])

    def fail_half_way(self, server: Server) -> None:
        """What a CU that stopped half way leaves (docs/exchange-install.md §3–4): a watermark, services Disabled."""
        target = fmt(self.setup.target) if self.setup and self.setup.target else ""
        for role in ("Mailbox", "ClientAccess"):
            self.set_value(f"{V15}\\{role}", "Watermark", "MailboxComponent___c5f7d19b8c0e4e4a9ab2bfd6f8a0a6d1")
            self.set_value(f"{V15}\\{role}", "Action", "BuildToBuildUpgrade")
            self.set_value(f"{V15}\\{role}", "UnpackedVersion", target)
            self.remove_value(f"{V15}\\{role}", "ConfiguredVersion")
        for name in ("MSExchangeTransport", "MSExchangeFrontEndTransport", "MSExchangeIS", *SETUP_DISABLES):
            if name in server.services:
                server.services[name].start_type = "Disabled"
                server.services[name].running = False

    # --- acting -----------------------------------------------------------------------------------------
    def start_task(self, server: Server, task: Task, now: datetime) -> None:
        task.state, task.last_run, task.last_result = "Running", now, 267009  # SCHED_S_TASK_RUNNING
        self.setups_started += 1
        self.setup = self._setup_for(task, now)

    def _setup_for(self, task: Task, now: datetime) -> SetupRun:
        command, args = task.command, task.arguments
        lowered = command.lower()
        if lowered.endswith("msiexec.exe"):
            match = re.search(r'/update\s+"?([^"]+\.msp)"?', args, re.IGNORECASE)
            package = self.find(match.group(1)) if match else None
            outcome = self.setup_outcome if package is not None else "refused"
            log = re.search(r'/l\*v\s+"?([^"\s]+)"?', args, re.IGNORECASE)
            return SetupRun("su", task.name, now, SU_SECONDS, package.builds if package else None, outcome,
                            "the patch package could not be opened", log.group(1) if log else SETUP_LOG + ".msi")
        if lowered.endswith(".exe") and not lowered.endswith("setup.exe"):
            package = self.find(command)
            return SetupRun("su", task.name, now, SU_SECONDS, package.builds if package else None,
                            self.setup_outcome if package is not None else "refused", "file not found",
                            "C:\\ExchangeSetupLogs\\" + command.rsplit("\\", 1)[-1] + ".log")
        if key(command) == key(INSTALL_PATH + "bin\\Setup.exe"):
            return SetupRun("noop", task.name, now, 60, None, "success")
        media = self.find(command)
        target = media.version if media else None
        error = ""
        if media is None:
            error = f"The system cannot find the file specified: {command}"
        elif "/mode:upgrade" not in args.lower() and "/m:upgrade" not in args.lower():
            error = "The mode 'Upgrade' was not given: setup ran with no mode."
        elif task.user.upper() in ("S-1-5-18", "SYSTEM", "NT AUTHORITY\\SYSTEM"):
            error = ("Setup can't continue with the upgrade because the logged-on user isn't a domain account "
                     "(LoggedOntoDomain).")
        elif target and target[2] >= (2375 if target[1] == 1 else 986) and "DiagnosticData" not in args:
            error = "The /IAcceptExchangeServerLicenseTerms switch is no longer valid; use " \
                    "/IAcceptExchangeServerLicenseTerms_DiagnosticDataON or _DiagnosticDataOFF."
        return SetupRun("cu", task.name, now, CU_SECONDS, target, "refused" if error else self.setup_outcome, error)

    def restart(self, server: Server, now: datetime) -> None:
        """Restart-Computer -Force: every service stops; the endpoints stop answering until the machine is back."""
        self.down_from = now + timedelta(seconds=5)
        self.down_until = None if self.never_returns else now + timedelta(seconds=RESTART_SECONDS)
        for service in server.services.values():
            service.running = False

    def _boot(self, server: Server, at: datetime) -> None:
        self.boot_time = at
        self.down_from = self.down_until = None
        self.remove_value(SESSION_MANAGER, "PendingFileRenameOperations")
        self.registry.pop(key(CBS_REBOOT), None)
        order = [n for n, s in server.services.items() if s.start_type == "Automatic"]
        order.sort(key=lambda n: (n != "WinRM", n))  # WinRM first: the endpoint answers before Exchange is up
        self.pending_starts = [(at + timedelta(seconds=SERVICE_START_GAP * i), n) for i, n in enumerate(order)]
