"""Installing an Exchange Cumulative Update or Security Update unattended, the administrator's way
(docs/exchange-install.md): read the server first (role, edition, the build from ExSetup.exe), gate on what makes
setup fail, copy the package to the local disk, start the installer detached as a one-shot scheduled task, poll it on
short connections until it ends, prove the result, restart, and report what setup left behind.

Everything goes through the server's default WinRM endpoint (Microsoft.PowerShell): IIS and the Exchange endpoint go
down while setup runs. ``ctx.state["install"]`` keeps the progress (it is the change's live view in the API) and
the markers that make a resumed worker continue polling rather than start setup twice.
"""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET  # noqa: S405 - DTDs refused in _resource_use
from datetime import datetime
from typing import Any

from changes.work import parse_build
from runner.exchange.session import CmdletError, ExchangeSessionError
from runner.step_types import Issue, RetryPolicy, StepContext, StepFailed, StepOutcome

from . import reboot
from .base import DEFAULT, EXCHANGE, call, first, iso, now_iso
from .components import FUNCTIONAL, read_components, votes
from .setup_facts import (
    LOCAL_ROOT,
    LOG_DIR,
    MSIEXEC,
    REBOOT_KEYS,
    ROLE_KEYS,
    SESSION_MANAGER_KEY,
    SETUP_KEY,
    SETUP_LOG,
    SU_SUCCESS_CODES,
    Build,
    ad_preparation,
    build_of,
    fmt,
    last_phase,
    licence_switch,
    log_verdict,
    task_xml,
)

ONCE = RetryPolicy(attempts=1)
GB = 1024**3
MIN_FREE_GB = {"cu": 10, "su": 2}
# Services setup disables and CSS-Exchange's SetupAssist expects running (docs/exchange-install.md).
WATCHED_SERVICES = ("WinMgmt", "W3Svc", "RemoteRegistry", "HostControllerService", "FMS", "MpsSvc")


# --- helpers ----------------------------------------------------------------------------------------------------


def _work(ctx: StepContext) -> dict[str, Any]:
    return dict(ctx.options.work)


def _state(ctx: StepContext) -> dict[str, Any]:
    return ctx.state.setdefault("install", {})


def _kind(ctx: StepContext) -> str:
    return str(_work(ctx)["package"]["kind"])


def _target(ctx: StepContext) -> Build:
    return parse_build(_work(ctx)["target_build"])


def _skip_at_target(ctx: StepContext) -> StepOutcome | None:
    state = _state(ctx)
    if state.get("already_at_target"):
        return StepOutcome("skipped", f"already at target: the server runs {state.get('build_before')}, the target is "
                                      f"{_work(ctx)['target_build']}")
    return None


def _values(result: Any) -> list[dict[str, Any]]:
    return [o for o in result.output if isinstance(o, dict)]


def _read(ctx: StepContext, cmdlet: str, params: dict[str, Any], **kwargs: Any) -> Any:
    """A read whose error records mean "not there" (a missing key, no such process): the caller looks at output."""
    return ctx.run(cmdlet, params, endpoint=DEFAULT, **kwargs)


def installed_build(ctx: StepContext) -> tuple[Build, str]:
    """The build ExSetup.exe carries (Get-ExchangeServer's AdminDisplayVersion never shows an SU) and its path."""
    setup = first(call(ctx, "Get-ItemProperty", {"Path": SETUP_KEY, "Name": "MsiInstallPath"}, endpoint=DEFAULT,
                       what="reading Exchange's install path"), "the v15\\Setup key")
    exsetup = str(setup.get("MsiInstallPath") or "").rstrip("\\") + "\\bin\\ExSetup.exe"
    item = first(call(ctx, "Get-Item", {"Path": exsetup}, endpoint=DEFAULT, what="reading ExSetup.exe"), exsetup)
    build = build_of(item.get("VersionInfo"))
    if build is None:
        raise StepFailed(f"cannot read the file version of {exsetup}", findings={"version_info": item.get(
            "VersionInfo")})
    return build, exsetup


def _watermarks(ctx: StepContext) -> list[dict[str, Any]]:
    """Role keys under v15 that carry a setup watermark or a pending action (a setup that did not finish)."""
    rows = _values(_read(ctx, "Get-ItemProperty", {"Path": ROLE_KEYS}))
    return [{"key": row.get("PSChildName"), "Watermark": row.get("Watermark"), "Action": row.get("Action"),
             "ConfiguredVersion": row.get("ConfiguredVersion")}
            for row in rows if row.get("Watermark") or row.get("Action")]


def _pending_reboot(ctx: StepContext) -> list[str]:
    markers = []
    rows = _values(_read(ctx, "Get-ItemProperty", {"Path": SESSION_MANAGER_KEY,
                                                   "Name": "PendingFileRenameOperations"}))
    if any(any(v for v in (row.get("PendingFileRenameOperations") or [])) for row in rows):
        markers.append("Session Manager\\PendingFileRenameOperations")
    for path in REBOOT_KEYS:
        if _read(ctx, "Get-Item", {"Path": path}).output:
            markers.append(path.rsplit("\\", 1)[-1])
    return markers


def _disabled_services(ctx: StepContext) -> list[str]:
    # Every service, filtered here: naming ones a server lacks (FMS on 2016) would only add error records.
    rows = _values(call(ctx, "Get-Service", {}, endpoint=DEFAULT, what="reading the services"))
    watched = {n.lower() for n in WATCHED_SERVICES}
    return sorted(str(r.get("Name")) for r in rows if str(r.get("StartType")) == "Disabled"
                  and (str(r.get("Name")).startswith("MSExchange") or str(r.get("Name")).lower() in watched))


def _functional_votes(ctx: StepContext) -> list[dict[str, str]]:
    rows = read_components(ctx)
    return [{"component": name, "requester": FUNCTIONAL, "state": state}
            for name, row in rows.items() for requester, state in votes(row).items()
            if requester == FUNCTIONAL and state != "Active"]


def _local_package(ctx: StepContext) -> str:
    path = str(_work(ctx)["package"]["path"])
    if not path.startswith("\\\\"):
        return path
    return f"{LOCAL_ROOT}\\{_work(ctx)['target_build']}\\{path.rstrip(chr(92)).rsplit(chr(92), 1)[-1]}"


def _when(value: Any) -> datetime | None:
    return reboot._when(value)


# --- pre-checks (read only, gates) -------------------------------------------------------------------------------


def target(ctx: StepContext) -> StepOutcome:
    """Role and edition from Get-ExchangeServer, the build from ExSetup.exe: Edge refused; already at target → the
    install steps are skipped; the package exists, matches the target and is newer; AD is prepared for a CU."""
    work, state = _work(ctx), _state(ctx)
    server = first(call(ctx, "Get-ExchangeServer", {"Identity": ctx.server.name}), "Get-ExchangeServer")
    role, edition = str(server.get("ServerRole") or ""), str(server.get("Edition") or "")
    findings: dict[str, Any] = {"role": role, "edition": edition}
    if "Edge" in role:
        raise StepFailed(f"{ctx.server.name} is an Edge Transport server ({role}): exmaint installs updates on "
                         "Mailbox servers only", findings=findings)
    build, exsetup = installed_build(ctx)
    wanted = _target(ctx)
    findings.update(build_before=fmt(build), target_build=fmt(wanted), exsetup=exsetup,
                    admin_display_version=str(server.get("AdminDisplayVersion") or ""))
    state.update(build_before=fmt(build), target_build=fmt(wanted), role=role, edition=edition)
    if build >= wanted:
        state["already_at_target"] = True
        return StepOutcome("passed", f"already at target: ExSetup.exe is {fmt(build)}, the target {fmt(wanted)}; "
                                     "the install steps will be skipped", findings=findings)
    state["already_at_target"] = False
    if build[:2] != wanted[:2]:
        raise StepFailed(f"the target {fmt(wanted)} is for another Exchange version than the server's {fmt(build)}",
                         findings=findings)
    path, kind = str(work["package"]["path"]), _kind(ctx)
    probe = path + "\\Setup.exe" if kind == "cu" else path
    found = _values(_read(ctx, "Get-Item", {"Path": probe}))
    if not found:
        raise StepFailed(f"the package {probe} is not there (or the server cannot read it)", findings=findings)
    if kind == "cu":
        media = build_of(found[0].get("VersionInfo"))
        findings["package_build"] = fmt(media)
        if media is None or media[:3] != wanted[:3]:
            raise StepFailed(f"the package's Setup.exe is build {fmt(media)}, not the target {fmt(wanted)}",
                             findings=findings)
        if not ctx.server.install_username or ctx.server.install_password is None:
            raise StepFailed("no install account: a CU must run as a domain account in Organization Management "
                             "(set the server's install account in the inventory)", findings=findings)
        if not work.get("ad_prepared"):
            try:
                commands = ad_preparation(build, wanted, path)
            except ValueError as exc:
                raise StepFailed(f"{exc}: prepare Active Directory for this CU if it needs it, then set "
                                 "work.ad_prepared", findings=findings) from None
            if commands:
                findings["ad_commands"] = commands
                raise StepFailed("this CU changes Active Directory and the change does not say it is prepared: run "
                                 "once, as a member of Schema Admins and Enterprise Admins in the schema master's "
                                 f"site, then set work.ad_prepared: {' ; '.join(commands)}", findings=findings)
    elif work["package"].get("sha256"):
        digest = first(call(ctx, "Get-FileHash", {"Path": path, "Algorithm": "SHA256"}, endpoint=DEFAULT,
                            what="hashing the package"), "Get-FileHash")
        findings["sha256"] = str(digest.get("Hash") or "").lower()
        if findings["sha256"] != work["package"]["sha256"]:
            raise StepFailed(f"the package's SHA-256 is {findings['sha256']}, not the one the change names",
                             findings=findings)
    return StepOutcome("passed", f"{role} ({edition}) at {fmt(build)}: {kind.upper()} to {fmt(wanted)} is ready",
                       findings=findings)


def ready(ctx: StepContext) -> StepOutcome:
    """No restart pending, no setup running or half done, enough free disk on the system and queue drives."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    problems, findings = [], {}
    markers = _pending_reboot(ctx)
    findings["pending_reboot"] = markers
    if markers:
        problems.append(f"a restart is pending ({', '.join(markers)}): restart the server before the window")
    running = [str(p.get("ProcessName")) for p in _values(_read(ctx, "Get-Process", {"Name": "ExSetup*"}))]
    findings["setup_processes"] = running
    if running:
        problems.append("Exchange setup is already running")
    marks = _watermarks(ctx)
    findings["watermarks"] = marks
    if marks:
        problems.append("a previous setup did not finish (watermark under HKLM\\SOFTWARE\\Microsoft\\ExchangeServer\\"
                        f"v15: {', '.join(str(m['key']) for m in marks)})")
    drives = {str(d.get("Name")).upper(): int(d.get("Free") or 0)
              for d in _values(call(ctx, "Get-PSDrive", {"PSProvider": "FileSystem"}, endpoint=DEFAULT,
                                    what="reading free disk"))}
    _, exsetup = installed_build(ctx)
    install_drive = exsetup[:1].upper()
    need = MIN_FREE_GB[_kind(ctx)]
    # The transport queue database lives under the install path unless moved (EdgeTransport.exe.config).
    for label, drive in (("system drive", "C"), ("queue drive", install_drive)):
        free = drives.get(drive)
        findings[f"free_gb_{drive}"] = round(free / GB, 1) if free is not None else None
        if free is None or free < need * GB:
            problems.append(f"the {label} {drive}: has {findings[f'free_gb_{drive}']} GB free (at least {need} GB)")
    if problems:
        raise StepFailed("; ".join(dict.fromkeys(problems)), findings=findings)
    return StepOutcome("passed", "no restart pending, no setup running or left half done, enough free disk",
                       findings=findings)


# Move request states the Mailbox Replication service is working on or will pick up without anyone: a restart
# in the middle fails or restarts them. Suspended, AutoSuspended and Synced wait for a person; they are only listed.
ACTIVE_MOVES = frozenset({"Queued", "InProgress", "CompletionInProgress"})
SETTLED_MOVES = frozenset({"Completed", "CompletedWithWarning", "Failed", "None"})
AUTH_CERT_WARN_DAYS = 30
NORMAL_USE = "Low"  # a transport resource at Medium or High is back pressure


def moves(ctx: StepContext) -> StepOutcome:
    """No mailbox move to or from a database with a copy on this server is running or queued."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    names = {str(d.get("Name")).lower() for d in _values(call(ctx, "Get-MailboxDatabase", {"Server": ctx.server.name},
                                                               what="reading the server's databases"))}
    rows = _values(call(ctx, "Get-MoveRequest", {"ResultSize": "Unlimited"}, what="reading the mailbox moves"))
    found = [{"mailbox": str(r.get("DisplayName") or r.get("Alias")), "status": str(r.get("Status")),
              "source": str(r.get("SourceDatabase")), "target": str(r.get("TargetDatabase"))}
             for r in rows if str(r.get("Status")) not in SETTLED_MOVES
             and {str(r.get("SourceDatabase")).lower(), str(r.get("TargetDatabase")).lower()} & names]
    active = [m for m in found if m["status"] in ACTIVE_MOVES]
    findings = {"databases": sorted(names), "moves": found}
    if active:
        listed = ", ".join(f"{m['mailbox']} ({m['status']}, {m['source']} -> {m['target']})" for m in active)
        raise StepFailed(f"{len(active)} mailbox move(s) to or from this server's databases are running or queued: "
                         f"{listed}; let them finish or suspend them before the window", findings=findings)
    return StepOutcome("passed", f"no mailbox move running or queued on {len(names)} database(s)"
                       + (f"; {len(found)} waiting for an operator (listed)" if found else ""), findings=findings)


def auth_certificate(ctx: StepContext) -> StepOutcome:
    """The Exchange Auth certificate (Get-AuthConfig's current thumbprint) on this server: expired refuses the
    window (OAuth, hybrid and the admin tools fail after setup restarts the services); within 30 days is a warning."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    config = first(call(ctx, "Get-AuthConfig", {}, what="reading the Auth configuration"), "Get-AuthConfig")
    thumbprint = str(config.get("CurrentCertificateThumbprint") or "")
    findings: dict[str, Any] = {"thumbprint": thumbprint}
    if not thumbprint:
        raise StepFailed("Get-AuthConfig names no current Auth certificate: configure one before the window",
                         findings=findings)
    certs = _values(ctx.run("Get-ExchangeCertificate", {"Thumbprint": thumbprint, "Server": ctx.server.name}))
    if not certs:
        raise StepFailed(f"the Auth certificate {thumbprint} is not on {ctx.server.name}", findings=findings)
    not_after = _when(certs[0].get("NotAfter"))
    if not_after is None:
        raise StepFailed(f"cannot read the Auth certificate's NotAfter ({certs[0].get('NotAfter')!r})",
                         findings=findings)
    days = (not_after - ctx.clock.now()).total_seconds() / 86400
    findings.update(not_after=iso(not_after), days_left=round(days, 1))
    if days <= 0:
        raise StepFailed(f"the Exchange Auth certificate {thumbprint} expired on {not_after:%Y-%m-%d}: renew it "
                         "(New-ExchangeCertificate, Set-AuthConfig) before the window", findings=findings)
    if days <= AUTH_CERT_WARN_DAYS:
        return StepOutcome("passed", f"the Auth certificate expires in {days:.0f} day(s)", findings=findings,
                           issues=[Issue(f"the Exchange Auth certificate {thumbprint} expires on "
                                         f"{not_after:%Y-%m-%d} ({days:.0f} day(s))",
                                         "recorded; renew it soon", automatic=False)])
    return StepOutcome("passed", f"the Auth certificate is valid until {not_after:%Y-%m-%d}", findings=findings)


def _resource_use(text: str) -> dict[str, str]:
    # The Result is XML from the server's own diagnostics; a DTD is never part of it (no entity expansion).
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("refusing XML with a DTD")
    root = ET.fromstring(text)  # noqa: S314 - DTDs refused above
    return {str(m.findtext("Resource")): str(m.findtext("CurrentResourceUse")) for m in root.iter("ResourceMeter")}


def back_pressure(ctx: StepContext) -> StepOutcome:
    """Transport is not under back pressure: every resource EdgeTransport meters is at its normal level (Low)."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    result = call(ctx, "Get-ExchangeDiagnosticInfo", {"Server": ctx.server.name, "Process": "EdgeTransport",
                                                      "Component": "ResourceThrottling"},
                  what="reading transport back pressure")
    text = str(first(result, "Get-ExchangeDiagnosticInfo").get("Result") or "")
    try:
        levels = _resource_use(text)
    except (ValueError, ET.ParseError) as exc:
        raise StepFailed(f"cannot read the transport resource levels: {exc}",
                         findings={"result": text[:2000]}) from None
    if not levels:
        raise StepFailed("the transport diagnostics name no resource", findings={"result": text[:2000]})
    findings = {"resources": levels}
    pressed = {name: level for name, level in levels.items() if level != NORMAL_USE}
    if pressed:
        raise StepFailed("transport is under back pressure: " + ", ".join(f"{n} {v}" for n, v in pressed.items())
                         + "; clear it before the window (messages would wait or be refused)", findings=findings)
    return StepOutcome("passed", f"no back pressure: {len(levels)} transport resources at {NORMAL_USE}",
                       findings=findings)


# --- the work ----------------------------------------------------------------------------------------------------


def copy_package(ctx: StepContext) -> StepOutcome:
    """Copy a package on a share to the local disk (setup must not read over a second hop while it runs)."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    state, source, local = _state(ctx), str(_work(ctx)["package"]["path"]), _local_package(ctx)
    state["local_path"] = local
    if local == source:
        return StepOutcome("skipped", f"the package is on the server's own disk ({local})")
    probe = local + "\\Setup.exe" if _kind(ctx) == "cu" else local
    if _values(_read(ctx, "Get-Item", {"Path": probe})):
        return StepOutcome("skipped", f"already copied to {local}")
    call(ctx, "New-Item", {"Path": local.rsplit("\\", 1)[0], "ItemType": "Directory", "Force": True},
         endpoint=DEFAULT, what="creating the local folder")
    call(ctx, "Copy-Item", {"Path": source, "Destination": local, "Recurse": True, "Force": True},
         endpoint=DEFAULT, what="copying the package")
    if not _values(_read(ctx, "Get-Item", {"Path": probe})):
        raise StepFailed(f"{probe} is not there after the copy", findings={"source": source, "local": local})
    return StepOutcome("passed", f"copied {source} to {local}", findings={"source": source, "local": local})


def _command(ctx: StepContext) -> tuple[str, str, str]:
    """(command, arguments, log) of the installer, by absolute path: a bare setup.exe resolves to the installed
    bin\\Setup.exe, which "succeeds" without upgrading."""
    local = _state(ctx).get("local_path") or _local_package(ctx)
    if _kind(ctx) == "cu":
        return f"{local}\\Setup.exe", f"/Mode:Upgrade {licence_switch(_target(ctx))}", SETUP_LOG
    if local.lower().endswith(".msp"):
        log = f"{LOG_DIR}\\{local.rsplit(chr(92), 1)[-1]}.log"
        return MSIEXEC, f'/update "{local}" /quiet /norestart /l*v "{log}"', log
    return local, "/passive /norestart", f"{LOG_DIR}\\{local.rsplit(chr(92), 1)[-1]}.log"


def start(ctx: StepContext) -> StepOutcome:
    """Close this run's Exchange sessions, register the one-shot task (highest privileges, as the install account)
    and start it — once: the markers are saved before each command, and a resumed worker that finds the task has run
    (or runs) does not start it again."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    state = _state(ctx)
    if state.get("launch_sent_at"):
        info = _values(call(ctx, "Get-ScheduledTaskInfo", {"TaskName": state["task"]}, endpoint=DEFAULT,
                            what="reading the install task"))
        if info and (info[0].get("LastRunTime") or str(info[0].get("LastTaskResult")) == "267009"):
            return StepOutcome("passed", f"setup was started at {state['launch_sent_at']}; not started again",
                               findings={"task": state["task"]})
        call(ctx, "Start-ScheduledTask", {"TaskName": state["task"]}, endpoint=DEFAULT, what="starting the task")
        return StepOutcome("passed", f"the task {state['task']} had never run; started it now",
                           findings={"task": state["task"]})
    if _values(_read(ctx, "Get-Process", {"Name": "ExSetup*"})):
        raise StepFailed("Exchange setup is already running on the server; not starting another")
    # Setup refuses or hangs while Exchange remote sessions are open: close ours before it starts.
    ctx.reconnect(EXCHANGE)
    command, arguments, log = _command(ctx)
    su_as_system = _kind(ctx) == "su" and (not ctx.server.install_username or ctx.server.install_password is None)
    user = None if su_as_system else ctx.server.install_username
    if user is None and _kind(ctx) == "cu":
        raise StepFailed("no install account: a CU must run as a domain account in Organization Management")
    boot = _values(_read(ctx, "Get-CimInstance", {"ClassName": "Win32_OperatingSystem"}))
    state.update(task=f"exmaint-update-{uuid.uuid4().hex[:12]}", command=f"{command} {arguments}", log=log,
                 run_as=user or "SYSTEM", boot_before=iso(reboot._when(boot[0].get("LastBootUpTime")))
                 if boot else None)
    ctx.checkpoint()
    params: dict[str, Any] = {"TaskName": state["task"], "Xml": task_xml(
        command=command, arguments=arguments, user=user, description="exmaint: Exchange update (one shot)")}
    if user:
        params.update(User=user, Password=ctx.server.install_password())  # type: ignore[misc]
        params["Force"] = True
    call(ctx, "Register-ScheduledTask", params, endpoint=DEFAULT, what="registering the install task")
    state.update(launch_sent_at=now_iso(ctx), phase="starting")
    ctx.checkpoint()  # "setup started" is on record before the launch: a resumed worker polls, never starts twice
    call(ctx, "Start-ScheduledTask", {"TaskName": state["task"]}, endpoint=DEFAULT, what="starting the install task")
    return StepOutcome("passed", f"started {state['command']} as {state['run_as']} (task {state['task']})",
                       findings={"task": state["task"], "command": state["command"], "run_as": state["run_as"]})


def _poll(ctx: StepContext, state: dict[str, Any]) -> tuple[bool | None, dict[str, Any]]:
    """One look on a fresh connection: (still running? None = no answer, what was seen)."""
    try:
        try:
            task = first(call(ctx, "Get-ScheduledTask", {"TaskName": state["task"]}, endpoint=DEFAULT), "task")
            info = first(call(ctx, "Get-ScheduledTaskInfo", {"TaskName": state["task"]}, endpoint=DEFAULT), "task")
            processes = _values(ctx.run("Get-Process", {"Name": "ExSetup*"}, endpoint=DEFAULT, retry=ONCE))
            log = ctx.run("Get-Content", {"Path": state["log"], "Tail": 200}, endpoint=DEFAULT, retry=ONCE)
        except ExchangeSessionError as exc:
            return None, {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        ctx.reconnect(DEFAULT)
    lines = [str(line) for line in log.output]
    seen = {"task_state": str(task.get("State")), "last_result": info.get("LastTaskResult"),
            "last_run": iso(_when(info.get("LastRunTime"))), "processes": len(processes), "lines": lines}
    running = seen["task_state"] == "Running" or bool(processes) or not seen["last_run"]
    return running, seen


def wait(ctx: StepContext) -> StepOutcome:
    """Poll the installer until it ends (riding out WinRM restarts) within its budget, then judge it by the setup log
    (CU) or the exit code (SU). The phase seen last is saved at each change: the API shows it live."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    state, work = _state(ctx), _work(ctx)
    if state.get("result") == "succeeded":
        return StepOutcome("passed", f"setup had already ended: {state.get('verdict', '')}")
    started = _when(state.get("launch_sent_at"))
    if started is None:
        raise StepFailed("setup was never started (no launch on record)")
    budget = 60.0 * int(work["install_minutes"])
    polls, unanswered = 0, 0
    while True:
        polls += 1
        running, seen = _poll(ctx, state)
        elapsed = (ctx.clock.now() - started).total_seconds()
        state["elapsed_seconds"] = round(elapsed)
        if running is None:
            unanswered += 1
        else:
            phase = last_phase(seen["lines"]) or state.get("phase", "")
            if phase != state.get("phase"):
                state.update(phase=phase, log_tail=seen["lines"][-5:])
                ctx.checkpoint()  # live progress for the API; cheap next to a poll
            if not running:
                break
        if elapsed >= budget:
            findings = {"phase": state.get("phase"), "elapsed_minutes": round(elapsed / 60),
                        "log_tail": state.get("log_tail", []), "unanswered_polls": unanswered}
            raise StepFailed(f"setup still runs after {elapsed / 60:.0f} min (budget {budget / 60:.0f} min); last "
                             f"phase: {state.get('phase') or 'unknown'}. Retry keeps waiting; it never starts setup "
                             "again", findings=findings)
        ctx.wait(ctx.options.install_poll)
    return _judge(ctx, state, seen, polls, unanswered)


def _judge(ctx: StepContext, state: dict[str, Any], seen: dict[str, Any], polls: int, unanswered: int) -> StepOutcome:
    exit_code = seen.get("last_result")
    state.update(finished_at=now_iso(ctx), exit_code=exit_code)
    issues = [Issue(f"WinRM did not answer {unanswered} poll(s) while setup ran", "polling rode it out")] \
        if unanswered else []
    if _kind(ctx) == "su":
        ok = exit_code in SU_SUCCESS_CODES
        verdict = f"the installer ended with exit code {exit_code}"
        evidence = seen["lines"][-8:]
    else:
        result, evidence = log_verdict(seen["lines"])
        ok = result == "succeeded" and exit_code in (0, None)
        verdict = f"ExchangeSetup.log: {result}; exit code {exit_code}"
    state.update(result="succeeded" if ok else "failed", verdict=verdict, evidence=evidence)
    if ok:
        state["reboot_requested"] = exit_code in (3010, 1641)
        return StepOutcome("passed", f"setup ended after {state['elapsed_seconds'] / 60:.0f} min ({polls} polls; "
                                     f"last phase {state.get('phase') or 'unknown'}): {verdict}", issues=issues,
                           findings=dict(state))
    findings = {**state, "watermarks": _watermarks(ctx), "disabled_services": _disabled_services(ctx)}
    try:
        findings["functional_votes"] = _functional_votes(ctx)
    except (StepFailed, ExchangeSessionError):
        findings["functional_votes"] = "the Exchange endpoint did not answer"
    ctx.reconnect(DEFAULT)
    raise StepFailed(f"setup failed: {verdict}. Evidence: {' | '.join(evidence[-3:])}", findings=findings)


def restart(ctx: StepContext) -> StepOutcome:
    """Restart after the install: a CU always; an SU when its policy says always or the installer asked (3010)."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    work, state = _work(ctx), _state(ctx)
    if state.get("exit_code") == 1641:
        # The installer has already started the restart itself: wait for it, do not send another.
        reboot._state(ctx).update(sent_at=state.get("finished_at"), boot_before=state.get("boot_before"),
                                  reason="the installer restarted the server (exit code 1641)")
        return StepOutcome("skipped", "the installer restarted the server itself (exit code 1641)")
    if _kind(ctx) == "su" and work.get("reboot") != "always" and not state.get("reboot_requested"):
        return StepOutcome("skipped", f"the installer did not ask for a restart (exit code {state.get('exit_code')}) "
                                      "and the change restarts only if required")
    return reboot.restart(ctx, reason=f"after the {_kind(ctx).upper()} install")


def verify(ctx: StepContext) -> StepOutcome:
    """Success is proven: no watermark left, the roles' ConfiguredVersion set (CU), and ExSetup.exe's build equals
    the target (after the restart)."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    state = _state(ctx)
    build, _ = installed_build(ctx)
    marks = _watermarks(ctx)
    findings = {"build_before": state.get("build_before"), "build_after": fmt(build),
                "target_build": fmt(_target(ctx)), "watermarks": marks}
    state["build_after"] = fmt(build)
    if marks:
        raise StepFailed("setup left a watermark: " + ", ".join(f"{m['key']}: {m['Watermark'] or m['Action']}"
                                                                 for m in marks), findings=findings)
    if _kind(ctx) == "cu":
        rows = _values(_read(ctx, "Get-ItemProperty", {"Path": ROLE_KEYS}))
        unconfigured = [str(r.get("PSChildName")) for r in rows
                        if r.get("UnpackedVersion") and not r.get("ConfiguredVersion")]
        if unconfigured:
            findings["unconfigured_roles"] = unconfigured
            raise StepFailed(f"roles without ConfiguredVersion: {', '.join(unconfigured)}", findings=findings)
    if build < _target(ctx):
        raise StepFailed(f"the server reports build {fmt(build)} (ExSetup.exe), not the target "
                         f"{fmt(_target(ctx))}", findings=findings)
    state["status"] = "installed"
    return StepOutcome("passed", f"build {state.get('build_before')} → {fmt(build)} proven from ExSetup.exe; no "
                                 "watermark", findings=findings)


def after(ctx: StepContext) -> StepOutcome:
    """Services setup left Disabled (restored to Automatic only when the change opts in) and component votes left by
    requester Functional (reported; the exit clears them only with the operator's clear_setup_leftovers)."""
    skipped = _skip_at_target(ctx)
    if skipped is not None:
        return skipped
    work, state, issues = _work(ctx), _state(ctx), []
    disabled = _disabled_services(ctx)
    if disabled and work.get("restore_disabled_services"):
        for name in disabled:
            call(ctx, "Set-Service", {"Name": name, "StartupType": "Automatic"}, endpoint=DEFAULT)
            ctx.run("Start-Service", {"Name": name}, endpoint=DEFAULT)
        issues.append(Issue(f"setup left Disabled: {', '.join(disabled)}", "set back to Automatic and started "
                                                                          "(restore_disabled_services)"))
    elif disabled:
        issues.append(Issue(f"setup left Disabled: {', '.join(disabled)}", "reported; set them to Automatic "
                            "(ServiceControl.ps1 AfterPatch) or opt in with restore_disabled_services",
                            automatic=False))
    functional = _functional_votes(ctx)
    issues += [Issue(f"{v['component']} is held {v['state']} by requester Functional (setup leftover)",
                     "reported; cleared at the exit only with clear_setup_leftovers", automatic=False)
               for v in functional]
    try:
        ctx.run("Unregister-ScheduledTask", {"TaskName": state["task"]}, endpoint=DEFAULT)
    except CmdletError:
        pass  # already gone: nothing to clean up
    state["disabled_services"], state["functional_votes"] = disabled, functional
    return StepOutcome("passed", "after the install: " + ("; ".join(i.summary for i in issues) or "nothing left "
                                                          "Disabled, no Functional votes"),
                       issues=issues, findings={"disabled_services": disabled, "functional_votes": functional,
                                                "restored": bool(disabled and work.get("restore_disabled_services"))})
