"""What the engine costs on top of the commands it sends: one standalone maintenance window, in one run.

Run: ``.venv/bin/python benchmarks/runner_overhead.py [--windows 3]`` (a throwaway SQLite database, or the one
``DATABASE_URL`` names). For each window:

1. the real plan (``runner.plans``) runs through ``runner.engine.run_window`` with real pypsrp sessions against the
   project's WinRM/PSRP endpoint serving the simulator on loopback (scheduled → held at the work step → work done →
   completed); the simulator's clock makes deliberate waits (polls, backoff) instant, and they are subtracted anyway;
2. the same commands, in the same order, are sent by a bare pypsrp loop (one RunspacePool per endpoint, reused)
   against a fresh simulator.

Engine overhead = window wall time − time inside commands − deliberate waits (``ExecutionContext.command_time`` and
``.waited``): database writes, lease, plan building, step logic. Goal: ≤ 15 % of command time. Prints ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
os.environ.setdefault("EXMAINT_VAR_DIR", tempfile.mkdtemp(prefix="exmaint-bench-"))

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402
from pypsrp.powershell import PowerShell, RunspacePool  # noqa: E402
from pypsrp.wsman import WSMan  # noqa: E402

from changes import services  # noqa: E402
from changes.models import ApiClient, Server, StandardChangeTemplate, StepRun  # noqa: E402
from changes.run_services import change_start, change_work_done  # noqa: E402
from exchange_sim.endpoint import start_endpoint  # noqa: E402
from exchange_sim.model import SimulatedExchange  # noqa: E402
from runner.clock import SimulatedClock  # noqa: E402
from runner.engine import run_window  # noqa: E402

USER, PASSWORD = "bench-svc", "Bench-Passw0rd-1"


def _simulation() -> SimulatedExchange:
    sim = SimulatedExchange(start=timezone.now())
    sim.add_standalone("EX01", fqdn="ex01.corp.example")
    return sim


def _inventory(endpoint: Any) -> Server:
    server, _ = Server.objects.get_or_create(name="EX01", defaults={"fqdn": "ex01.corp.example"})
    server.endpoint_url = endpoint.url_for("EX01", "Microsoft.Exchange")
    server.winrm_url = endpoint.url_for("EX01", "Microsoft.PowerShell")
    server.auth_method, server.username = "basic", USER
    server.set_password(PASSWORD)
    server.save()
    return server


def _template(approver: User) -> str:
    """The catalogue entry the benchmark's standard changes name (a standard change must fit one)."""
    template, _ = StandardChangeTemplate.objects.get_or_create(name="bench", defaults={
        "work": "benchmark", "approved_by": approver, "approved_at": timezone.now()})
    template.servers.set(Server.objects.filter(name="EX01"))
    return template.name


def _change(requester: User, operator: User, number: int) -> Any:
    now = timezone.now()
    change, _ = services.change_create(actor=requester, data={
        "source": "bench", "external_ref": f"BENCH-{number}-{now.timestamp()}", "title": "bench", "description": "",
        "change_type": "standard", "risk": "low", "impact": "low", "servers": ["EX01"], "plan": "maintenance",
        "window_start": now - timedelta(minutes=1), "window_end": now + timedelta(hours=4),
        "requested_by": "bench@example.com", "notify": [], "callback_url": "", "standard_template": _template(operator),
    })
    change_start(change, actor="system:bench")
    return change


def engine_window(requester: User, operator: User, number: int) -> dict[str, Any]:
    sim = _simulation()
    totals = {"command": 0.0, "waited": 0.0, "steps": 0, "commands": 0}

    def on_step(key: str, ctx: Any) -> None:
        totals["command"] += ctx.command_time
        totals["waited"] += ctx.waited
        totals["steps"] += 1
        totals["commands"] += len(ctx.commands)

    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        _inventory(endpoint)
        change = _change(requester, operator, number)
        clock = SimulatedClock(sim)
        started = time.perf_counter()
        first = run_window(change.pk, worker="bench", clock=clock, on_step=on_step)
        wall = time.perf_counter() - started
        change_work_done(change, actor=operator, notes="bench")
        started = time.perf_counter()
        second = run_window(change.pk, worker="bench", clock=clock, on_step=on_step)
        wall += time.perf_counter() - started
    assert (first, second) == ("held", "completed"), (first, second)
    assert StepRun.objects.filter(change=change).exclude(status__in=["passed", "skipped"]).count() == 0
    commands = [(c.endpoint, c.cmdlet, list(c.parameters)) for c in sim.commands]
    return {**totals, "wall": wall, "sent": commands}


def bare_loop(commands: list[tuple[str, str, list]]) -> float:
    """The same commands through bare pypsrp pools (one per endpoint), against a fresh simulator."""
    sim = _simulation()
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        pools: dict[str, RunspacePool] = {}
        started = time.perf_counter()
        for configuration, cmdlet, parameters in commands:
            pool = pools.get(configuration)
            if pool is None:
                wsman = WSMan("127.0.0.1", port=endpoint.port, path=endpoint.path_for("EX01", configuration),
                              ssl=False, auth="basic", username=USER, password=PASSWORD, encryption="never")
                pool = pools[configuration] = RunspacePool(wsman, configuration_name=configuration)
                pool.open()
            ps = PowerShell(pool)
            ps.add_cmdlet(cmdlet)
            for name, value in parameters:
                ps.add_parameter(name, value)
            ps.invoke()
        elapsed = time.perf_counter() - started
        for pool in pools.values():
            pool.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    requester, _ = User.objects.get_or_create(username="bench-itsm", defaults={"is_superuser": True})
    ApiClient.objects.get_or_create(user=requester, defaults={"source": "bench"})
    operator, _ = User.objects.get_or_create(username="bench-operator", defaults={"is_superuser": True})

    engine_walls, bare_walls, overheads, command_times, per_step = [], [], [], [], []
    for number in range(args.windows):
        result = engine_window(requester, operator, number)
        bare = bare_loop(result["sent"])
        overhead = result["wall"] - result["command"] - result["waited"]
        engine_walls.append(result["wall"])
        bare_walls.append(bare)
        overheads.append(overhead)
        command_times.append(result["command"])
        per_step.append(overhead / result["steps"])
        print(f"window {number + 1}: {result['steps']} steps, {result['commands']} commands; engine wall "
              f"{result['wall'] * 1000:.0f} ms (commands {result['command'] * 1000:.0f} ms, waits "
              f"{result['waited'] * 1000:.1f} ms, overhead {overhead * 1000:.0f} ms = "
              f"{overhead / result['steps'] * 1000:.1f} ms/step); bare pypsrp loop {bare * 1000:.0f} ms")
    # The first window pays imports and connection warm-up; report the median.
    med = statistics.median
    print(f"median engine overhead: {med(overheads) / med(command_times) * 100:.1f}% of command time "
          f"(goal <= 15%), {med(per_step) * 1000:.1f} ms per step")
    print(f"median window wall time: engine {med(engine_walls) * 1000:.0f} ms vs bare pypsrp loop "
          f"{med(bare_walls) * 1000:.0f} ms = {med(engine_walls) / med(bare_walls):.2f}x")


if __name__ == "__main__":
    main()
