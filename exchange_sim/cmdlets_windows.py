"""Default-endpoint (Microsoft.PowerShell) cmdlets of the Windows view an Exchange update needs: files and the
registry (FileSystem and Registry providers), free disk, processes, scheduled tasks, Set-Service and
Restart-Computer. State lives in ``windows.Windows``; objects are shaped like Windows PowerShell 5.1's."""
from __future__ import annotations

import fnmatch
import xml.etree.ElementTree as ET  # noqa: S405 - the task XML comes from the test's own client

from .binding import ANY, DEFAULT, INT, STR, STRLIST, SWITCH, cmdlet
from .call import Call
from .errors import cmdlet_class, missing_mandatory
from .objects import OBJECT, SimError, SimObject, SimTerminatingError
from .windows import File, Task, Windows, key, long_form

TASK_NS = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"
ITEM_EXCEPTION = "System.Management.Automation.ItemNotFoundException"


def _win(call: Call) -> Windows:
    assert call.server.windows is not None  # noqa: S101 - every simulated server has one
    return call.server.windows


def _not_found(call: Call, path: str) -> None:
    call.plain_error(SimError(message=f"Cannot find path '{path}' because it does not exist.",
                              error_id=f"PathNotFound,{cmdlet_class(call.cmdlet)}", category="ObjectNotFound",
                              target=path, exception_type=ITEM_EXCEPTION))


def _version_info(file: File) -> SimObject:
    version = long_form(file.version) if file.version else ""
    # Remoting serialises FileVersionInfo as its ToString: the multi-line text below.
    text = (f"File:             {file.path}\nInternalName:     {file.path.rsplit(chr(92), 1)[-1]}\n"
            f"FileVersion:      {version}\nProductVersion:   {version}\nLanguage:         Language Neutral")
    return SimObject(("System.Diagnostics.FileVersionInfo", OBJECT), {"FileVersion": version}, text)


def _item(call: Call, file: File) -> SimObject:
    name = file.path.rstrip("\\").rsplit("\\", 1)[-1]
    if file.directory:
        return SimObject(("System.IO.DirectoryInfo", "System.IO.FileSystemInfo", OBJECT),
                         {"Name": name, "FullName": file.path, "Mode": "d-----"}, file.path)
    return SimObject(("System.IO.FileInfo", "System.IO.FileSystemInfo", OBJECT),
                     {"Name": name, "FullName": file.path, "Length": file.length, "Mode": "-a----",
                      "LastWriteTime": file.written or call.now, "VersionInfo": _version_info(file)}, file.path)


@cmdlet("Get-Item", DEFAULT, params={"Path": STRLIST, "LiteralPath": STRLIST, "Force": SWITCH},
        positional=("Path",))
def get_item(call: Call) -> None:
    win = _win(call)
    for path in call.get("Path") or call.get("LiteralPath") or []:
        if path.upper().startswith("HKLM:"):
            if key(path) in win.registry:
                call.output(SimObject(("Microsoft.Win32.RegistryKey", OBJECT),
                                      {"Name": path.replace("HKLM:", "HKEY_LOCAL_MACHINE"),
                                       "Property": sorted(win.registry[key(path)])}, path))
            else:
                _not_found(call, path)
            continue
        file = win.find(path)
        if file is None:
            _not_found(call, path)
        else:
            call.output(_item(call, file))


@cmdlet("Get-ItemProperty", DEFAULT, params={"Path": STRLIST, "Name": STRLIST}, positional=("Path", "Name"))
def get_item_property(call: Call) -> None:
    win = _win(call)
    for path in call.get("Path") or []:
        matched = [k for k in win.registry if fnmatch.fnmatchcase(k, key(path))]
        if not matched:
            _not_found(call, path)
            continue
        for found in sorted(matched):
            values = win.registry[found]
            names = call.get("Name")
            if names:
                picked = {n: values[n] for n in values if n.lower() in {x.lower() for x in names}}
                if not picked:
                    call.plain_error(SimError(
                        message=f"Property {names[0]} does not exist at path {win.names[found]}.",
                        error_id=f"System.Management.Automation.PSArgumentException,{cmdlet_class(call.cmdlet)}",
                        category="InvalidArgument", target=names[0]))
                    continue
                values = picked
            spelled = win.names[found]
            call.output(SimObject(("System.Management.Automation.PSCustomObject", OBJECT),
                                  {**values, "PSPath": spelled, "PSChildName": spelled.rsplit("\\", 1)[-1]}))


@cmdlet("Get-Content", DEFAULT, params={"Path": STR, "Tail": INT, "TotalCount": INT}, positional=("Path",))
def get_content(call: Call) -> None:
    file = _win(call).find(call.get("Path") or "")
    if file is None or file.directory:
        _not_found(call, call.get("Path") or "")
        return
    lines = file.lines
    if call.get("Tail") is not None:
        lines = lines[-int(call.get("Tail")):] if int(call.get("Tail")) > 0 else []
    call.output(*lines)


@cmdlet("Get-FileHash", DEFAULT, params={"Path": STR, "Algorithm": STR}, positional=("Path",))
def get_file_hash(call: Call) -> None:
    file = _win(call).find(call.get("Path") or "")
    if file is None:
        _not_found(call, call.get("Path") or "")
        return
    call.output(SimObject(("Microsoft.PowerShell.Commands.FileHashInfo", OBJECT),
                          {"Algorithm": "SHA256", "Hash": file.sha256, "Path": file.path}))


@cmdlet("New-Item", DEFAULT, params={"Path": STR, "ItemType": STR, "Force": SWITCH}, positional=("Path",),
        should_process=True)
def new_item(call: Call) -> None:
    path = call.get("Path") or ""
    win = _win(call)
    if win.find(path) is None:
        win.add_file(File(path, 0, directory=(call.get("ItemType") or "").lower() == "directory", written=call.now))
    call.output(_item(call, win.files[key(path)]))


@cmdlet("Copy-Item", DEFAULT, params={"Path": STR, "Destination": STR, "Recurse": SWITCH, "Force": SWITCH},
        positional=("Path", "Destination"), should_process=True)
def copy_item(call: Call) -> None:
    win, source, dest = _win(call), call.get("Path") or "", call.get("Destination") or ""
    found = win.find(source)
    if found is None:
        _not_found(call, source)
        return
    prefix = key(source)
    copied = 0
    for path_key, file in list(win.files.items()):
        if path_key == prefix or path_key.startswith(prefix + "\\"):
            relative = file.path[len(source.rstrip("\\")):]
            win.add_file(File(dest.rstrip("\\") + relative, file.length, file.version, file.directory,
                              list(file.lines), file.builds, call.now))
            copied += file.length
    # A CU's media is ~6 GB, an SU ~150 MB: the copy takes simulated time on the share's link.
    call.sim.advance(max(5.0, copied / (100 * 1024**2)))


@cmdlet("Get-PSDrive", DEFAULT, params={"Name": STRLIST, "PSProvider": STR}, positional=("Name",))
def get_psdrive(call: Call) -> None:
    win = _win(call)
    names = [n.rstrip(":").upper() for n in call.get("Name") or win.free]
    for name in names:
        if name not in win.free:
            call.plain_error(SimError(message=f"Cannot find drive. A drive with the name '{name}' does not exist.",
                                      error_id=f"DriveNotFound,{cmdlet_class(call.cmdlet)}",
                                      category="ObjectNotFound", target=name))
            continue
        call.output(SimObject(("System.Management.Automation.PSDriveInfo", OBJECT),
                              {"Name": name, "Root": f"{name}:\\", "Free": win.free[name],
                               "Used": 200 * 1024**3, "Provider": "Microsoft.PowerShell.Core\\FileSystem"}, name))


@cmdlet("Get-Process", DEFAULT, params={"Name": STRLIST}, positional=("Name",))
def get_process(call: Call) -> None:
    running = _win(call).running_processes()
    for pattern in call.get("Name") or ["*"]:
        found = [p for p in running if fnmatch.fnmatchcase(p.lower(), pattern.lower())]
        if not found and not any(c in pattern for c in "*?"):
            call.plain_error(SimError(
                message=f"Cannot find a process with the name \"{pattern}\". Verify the process name and call the "
                        "cmdlet again.", error_id=f"NoProcessFoundForGivenName,{cmdlet_class(call.cmdlet)}",
                category="ObjectNotFound", target=pattern,
                exception_type="Microsoft.PowerShell.Commands.ProcessCommandException"))
        for name in found:
            call.output(SimObject(("System.Diagnostics.Process", OBJECT), {"ProcessName": name, "Id": 4242},
                                  f"System.Diagnostics.Process ({name})"))


@cmdlet("Get-CimInstance", DEFAULT, params={"ClassName": STR, "Property": STRLIST}, positional=("ClassName",))
def get_cim_instance(call: Call) -> None:
    if (call.get("ClassName") or "").lower() != "win32_operatingsystem":
        raise call.fail(f"Invalid class \"{call.get('ClassName')}\"", exception="Microsoft.Management.Infrastructure."
                        "CimException", category="MetadataError")
    call.output(SimObject(("Microsoft.Management.Infrastructure.CimInstance", OBJECT),
                          {"CSName": call.server.name, "LastBootUpTime": _win(call).boot_time,
                           "Caption": "Microsoft Windows Server 2019 Datacenter"}))


def _task(call: Call, name: str) -> Task:
    task = _win(call).tasks.get(name.lower())
    if task is None:
        raise SimTerminatingError(SimError(
            message=f"No MSFT_ScheduledTask objects found with property 'TaskName' equal to '{name}'.  Verify the "
                    "value of the property and retry.", error_id=f"CmdletizationQuery_NotFound_TaskName,"
            f"{cmdlet_class(call.cmdlet)}", category="ObjectNotFound", target=name,
            exception_type="Microsoft.Management.Infrastructure.CimException"))
    return task


def _task_object(task: Task) -> SimObject:
    return SimObject(("Microsoft.Management.Infrastructure.CimInstance#MSFT_ScheduledTask", OBJECT),
                     {"TaskName": task.name, "TaskPath": "\\", "State": task.state}, task.name)


@cmdlet("Register-ScheduledTask", DEFAULT, params={"TaskName": STR, "Xml": STR, "User": STR, "Password": ANY,
                                                  "Force": SWITCH}, positional=("Xml", "TaskName"))
def register_scheduled_task(call: Call) -> None:
    name, xml = call.get("TaskName"), call.get("Xml")
    if not name or not xml:
        raise missing_mandatory(call.cmdlet, ["TaskName", "Xml"])
    win = _win(call)
    if name.lower() in win.tasks and not call.get("Force"):
        raise call.fail(f"Cannot create a file when that file already exists. ({name})",
                        exception="Microsoft.Management.Infrastructure.CimException", category="ResourceExists")
    root = ET.fromstring(xml)  # noqa: S314 - written by the client under test
    user = call.get("User") or root.findtext(f".//{TASK_NS}UserId") or "S-1-5-18"
    logon = root.findtext(f".//{TASK_NS}LogonType") or ""
    if logon == "Password" and not call.get("Password"):
        raise call.fail("The user name or password is incorrect. (Exception from HRESULT: 0x8007052E)",
                        exception="Microsoft.Management.Infrastructure.CimException", category="AuthenticationError")
    task = Task(name, user, root.findtext(f".//{TASK_NS}Command") or "", root.findtext(f".//{TASK_NS}Arguments") or "",
                highest=root.findtext(f".//{TASK_NS}RunLevel") == "HighestAvailable")
    win.tasks[name.lower()] = task
    call.output(_task_object(task))


@cmdlet("Start-ScheduledTask", DEFAULT, params={"TaskName": STR}, positional=("TaskName",))
def start_scheduled_task(call: Call) -> None:
    task = _task(call, call.get("TaskName") or "")
    if task.state != "Running":
        _win(call).start_task(call.server, task, call.now)


@cmdlet("Get-ScheduledTask", DEFAULT, params={"TaskName": STR}, positional=("TaskName",))
def get_scheduled_task(call: Call) -> None:
    call.output(_task_object(_task(call, call.get("TaskName") or "")))


@cmdlet("Get-ScheduledTaskInfo", DEFAULT, params={"TaskName": STR}, positional=("TaskName",))
def get_scheduled_task_info(call: Call) -> None:
    task = _task(call, call.get("TaskName") or "")
    call.output(SimObject(("Microsoft.Management.Infrastructure.CimInstance#MSFT_TaskDynamicInfo", OBJECT),
                          {"TaskName": task.name, "LastRunTime": task.last_run, "LastTaskResult": task.last_result,
                           "NumberOfMissedRuns": 0}))


@cmdlet("Unregister-ScheduledTask", DEFAULT, params={"TaskName": STR}, positional=("TaskName",),
        should_process=True)
def unregister_scheduled_task(call: Call) -> None:
    task = _task(call, call.get("TaskName") or "")
    _win(call).tasks.pop(task.name.lower(), None)


@cmdlet("Set-Service", DEFAULT, params={"Name": STR, "StartupType": STR}, positional=("Name",), should_process=True)
def set_service(call: Call) -> None:
    service = call.server.services.get(call.get("Name") or "")
    if service is None:
        raise call.fail(f"Service {call.get('Name')} was not found on computer '.'.", category="InvalidOperation",
                        exception="System.InvalidOperationException")
    wanted = (call.get("StartupType") or "").capitalize()
    if wanted not in ("Automatic", "Manual", "Disabled"):
        raise call.fail(f"Cannot bind parameter 'StartupType' to '{wanted}'", category="InvalidArgument",
                        exception="System.Management.Automation.ParameterBindingException")
    service.start_type = wanted


@cmdlet("Restart-Computer", DEFAULT, params={"Force": SWITCH, "ComputerName": STRLIST}, should_process=True)
def restart_computer(call: Call) -> None:
    win = _win(call)
    if win.setup is not None and not win.setup.done and not call.get("Force"):
        raise call.fail("The system shutdown cannot be initiated because there are other users logged on to the "
                        "computer.", exception="System.InvalidOperationException", category="OperationStopped")
    win.restart(call.server, call.now)

