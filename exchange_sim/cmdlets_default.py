"""Default-endpoint (Microsoft.PowerShell) cmdlets: services and FailoverClusters nodes."""
from __future__ import annotations

import fnmatch

from .binding import DEFAULT, INT, STR, STRLIST, SWITCH, cmdlet
from .call import Call
from .errors import cmdlet_class, missing_mandatory
from .objects import OBJECT, EnumType, SimError, SimObject, SimTerminatingError
from .servers import DISPLAY_NAMES, Server
from .transport import SERVICE_RESTART_SECONDS

SERVICE_EXCEPTION = "Microsoft.PowerShell.Commands.ServiceCommandException"
CLUSTER_EXCEPTION = "Microsoft.FailoverClusters.PowerShell.ClusterCmdletException"
OTHER_SERVICE_RESTART_SECONDS = 5.0


def _service_error(call: Call, error_id: str, message: str, target: str, category: str) -> SimError:
    return SimError(message=message, error_id=f"{error_id},{cmdlet_class(call.cmdlet)}", category=category,
                    target=target, exception_type=SERVICE_EXCEPTION)


def _match_services(call: Call, names: list[str] | None) -> list[str]:
    services = list(call.server.services)
    if not names:
        return services
    matched: list[str] = []
    for pattern in names:
        found = [s for s in services if fnmatch.fnmatchcase(s.lower(), pattern.lower())]
        if not found and not any(c in pattern for c in "*?["):
            call.plain_error(_service_error(call, "NoServiceFoundForGivenName",
                                            f"Cannot find any service with service name '{pattern}'.", pattern,
                                            "ObjectNotFound"))
        matched += [s for s in found if s not in matched]
    return matched


@cmdlet("Get-Service", DEFAULT, params={"Name": STRLIST, "DisplayName": STRLIST, "ComputerName": STRLIST},
        positional=("Name",))
def get_service(call: Call) -> None:
    names = _match_services(call, call.get("Name"))
    call.output(*(call.server.service_object(n) for n in names))


def _display(name: str) -> str:
    return f"{DISPLAY_NAMES.get(name, name)} ({name})"


def _start(call: Call, server: Server, name: str, *, restart: bool) -> None:
    service = server.services[name]
    failures = server.restart_failures.get(name, 0)
    transport = name == "MSExchangeTransport"
    if restart and transport:
        server.transport.stop()
    service.running = False
    # Restart-Service blocks until the service reports Running, writing "Waiting for service ..." warnings.
    call.warn(f"Waiting for service '{_display(name)}' to start...")
    call.sim.advance(SERVICE_RESTART_SECONDS if transport else OTHER_SERVICE_RESTART_SECONDS)
    if failures:
        server.restart_failures[name] = failures - 1
        if transport:
            server.transport.stop()
        call.plain_error(_service_error(
            call, "StartServiceFailed",
            f"Failed to start service '{_display(name)}'.", name, "OpenError"))
        return
    service.running = True
    if transport:
        server.transport.restart(call.now)


@cmdlet("Restart-Service", DEFAULT, params={"Name": STRLIST, "DisplayName": STRLIST, "Force": SWITCH,
                                           "PassThru": SWITCH}, positional=("Name",), should_process=True)
def restart_service(call: Call) -> None:
    if not call.get("Name") and not call.get("DisplayName"):
        raise missing_mandatory(call.cmdlet, ["Name"])
    for name in _match_services(call, call.get("Name")):
        if call.get("WhatIf"):
            continue
        _start(call, call.server, name, restart=True)
        if call.get("PassThru"):
            call.output(call.server.service_object(name))


@cmdlet("Start-Service", DEFAULT, params={"Name": STRLIST, "DisplayName": STRLIST, "PassThru": SWITCH},
        positional=("Name",), should_process=True)
def start_service(call: Call) -> None:
    if not call.get("Name"):
        raise missing_mandatory(call.cmdlet, ["Name"])
    for name in _match_services(call, call.get("Name")):
        if call.server.services[name].start_type == "Disabled":
            # Windows refuses to start a Disabled service (what a failed CU setup leaves behind).
            call.plain_error(_service_error(
                call, "CouldNotStartService", f"Service '{_display(name)}' cannot be started due to the following "
                "error: Cannot start service {name} on computer '.'.", name, "OpenError"))
            continue
        if not call.server.services[name].running and not call.get("WhatIf"):
            _start(call, call.server, name, restart=False)
        if call.get("PassThru"):
            call.output(call.server.service_object(name))


# --- FailoverClusters ------------------------------------------------------------------------------------------


def _cluster_fail(call: Call, message: str, target: str = "") -> SimTerminatingError:
    return SimTerminatingError(SimError(message=message, error_id=f"ClusterCmdletException,{cmdlet_class(call.cmdlet)}",
                                        category="ConnectionError" if not target else "InvalidOperation",
                                        target=target, exception_type=CLUSTER_EXCEPTION))


def _cluster(call: Call) -> str:
    """The DAG whose cluster this call addresses (-Cluster, else the connected node's own cluster)."""
    sim = call.sim
    named = call.get("Cluster")
    if named:
        dag = sim.find_dag(named.split(".")[0]) or (
            sim.find_dag(sim.find_server(named).dag) if sim.find_server(named) and sim.find_server(named).dag
            else None)
        if dag is None:
            raise _cluster_fail(call, f"The cluster '{named}' could not be found. The RPC server is unavailable.")
        return dag.name
    if call.server.dag is None:
        # A standalone Exchange server has no cluster at all; the module fails to reach a cluster service.
        raise _cluster_fail(call, "The cluster service is not running.  Make sure that the service is running on "
                                  "all nodes in the cluster.")
    return call.server.dag


def _node(call: Call, dag_name: str, name: str | None) -> Server:
    sim = call.sim
    wanted = name or call.server.name
    server = sim.find_server(wanted)
    if server is None or server.dag != dag_name:
        raise _cluster_fail(call, f"The cluster node '{wanted}' was not found.", target=wanted)
    return server


@cmdlet("Get-ClusterNode", DEFAULT, params={"Name": STRLIST, "Cluster": STR}, positional=("Name",))
def get_cluster_node(call: Call) -> None:
    dag_name = _cluster(call)
    names = call.get("Name") or call.sim.dags[dag_name].members
    call.output(*(_node(call, dag_name, n).cluster_node_object(dag_name) for n in names))


@cmdlet("Suspend-ClusterNode", DEFAULT,
        params={"Name": STR, "Cluster": STR, "Drain": SWITCH, "ForceDrain": SWITCH, "Wait": SWITCH,
                "TargetNode": STR},
        positional=("Name",), should_process=True)
def suspend_cluster_node(call: Call) -> None:
    dag_name = _cluster(call)
    node = _node(call, dag_name, call.get("Name"))
    if node.cluster_state == "Down":
        raise _cluster_fail(call, f"The node '{node.name}' is down and cannot be paused.", target=node.name)
    node.cluster_state = "Paused"
    # Pausing moves the cluster group away, and with it the Primary Active Manager role.
    call.sim.node_paused(call.sim.dags[dag_name], node)
    call.output(node.cluster_node_object(dag_name))


CLUSTER_GROUP = "Cluster Group"  # the core group: its owner node holds the Primary Active Manager role
CLUSTER_GROUP_STATE = EnumType(
    "Microsoft.FailoverClusters.PowerShell.ClusterGroupState",
    {"Online": 0, "Offline": 1, "Failed": 2, "PartialOnline": 3, "Pending": 4, "Unknown": -1},
)


@cmdlet("Move-ClusterGroup", DEFAULT, params={"Name": STR, "Node": STR, "Cluster": STR, "Wait": INT},
        positional=("Name", "Node"), should_process=True)
def move_cluster_group(call: Call) -> None:
    """Only the core "Cluster Group" is modelled: moving it moves the PAM role (the remedy for a PAM that stays)."""
    dag_name = _cluster(call)
    dag = call.sim.dags[dag_name]
    name = call.get("Name") or CLUSTER_GROUP
    if name.lower() != CLUSTER_GROUP.lower():
        raise _cluster_fail(call, f"The cluster group '{name}' was not found.", target=name)
    target = _node(call, dag_name, call.get("Node")) if call.get("Node") else None
    if call.get("WhatIf"):
        return
    already = target is not None and target.name == dag.primary_active_manager
    if not already and not call.sim.move_pam(dag, target.name if target else None):
        # Only a node that is Up can own a group (a Paused one refuses it).
        where = f"node '{target.name}': the node is {target.cluster_state.lower()}" if target else "another node"
        raise _cluster_fail(call, f"The group '{CLUSTER_GROUP}' could not be moved to {where}.",
                            target=target.name if target else CLUSTER_GROUP)
    call.output(SimObject(("Microsoft.FailoverClusters.PowerShell.ClusterGroup",
                           "Microsoft.FailoverClusters.PowerShell.ClusterObject", OBJECT),
                          {"Name": CLUSTER_GROUP, "OwnerNode": dag.primary_active_manager,
                           "State": CLUSTER_GROUP_STATE("Online"), "Cluster": dag_name}, CLUSTER_GROUP))


@cmdlet("Resume-ClusterNode", DEFAULT, params={"Name": STR, "Cluster": STR, "Failback": STR},
        positional=("Name",), should_process=True)
def resume_cluster_node(call: Call) -> None:
    dag_name = _cluster(call)
    node = _node(call, dag_name, call.get("Name"))
    if node.cluster_resume_failures:
        node.cluster_resume_failures -= 1
        raise _cluster_fail(call, f"An error occurred while resuming node '{node.name}'. The RPC server is "
                                  "unavailable.", target=node.name)
    if node.cluster_state == "Paused":
        node.cluster_state = "Up"
    call.output(node.cluster_node_object(dag_name))
