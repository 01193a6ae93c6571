"""How much the pypsrp adapter costs, against the project's WinRM/PSRP endpoint served in-process on loopback.

Run: ``python benchmarks/psrp_session.py [--commands 40] [--samples 60]``. Prints ratios, not pass/fail:

1. median per-command latency through ``PypsrpSession.run`` vs a bare pypsrp ``PowerShell.invoke`` of the same
   cmdlet on a reused pool (goal: <= 1.15x). The adapter converts the output to plain dicts and terminates finished
   pipelines in sweeps (every ``max_finished_commands``, and when the runner is about to wait): the mean, which
   carries the sweeps, is printed too, as is a bare invoke followed by its own close() (one Signal each).
2. a sequence of commands through one adapter session vs a new runspace pool per command (goal: >= 1.6x faster).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pypsrp.powershell import PowerShell, RunspacePool  # noqa: E402 - after the path fix above
from pypsrp.wsman import WSMan  # noqa: E402

from benchmarks.timing import interleaved_ms  # noqa: E402 - after the path fix above
from exchange_sim.endpoint import start_endpoint  # noqa: E402
from runner.exchange.pypsrp_session import EndpointConfig, PypsrpSession  # noqa: E402
from runner.exchange.session import Endpoint  # noqa: E402

USER, PASSWORD = "bench-svc", "Bench-Passw0rd-1"
SERVER = "EX01"


def _simulation() -> tuple[Any, str, dict[str, Any]]:
    """The simulated Exchange if it imports; otherwise a one-cmdlet stand-in (so the transport can be measured)."""
    try:
        from exchange_sim.model import SimulatedExchange

        sim = SimulatedExchange()
        sim.add_standalone(SERVER)
        return sim, "Get-MailboxServer", {"Identity": SERVER}
    except Exception as exc:  # noqa: BLE001 - the benchmark still measures the transport without the model
        print(f"(simulated Exchange unavailable: {type(exc).__name__}: {exc}; using a stand-in)")
        from exchange_sim.objects import SimObject, SimResult, enum

        class StandIn:
            servers = {SERVER: object()}

            def invoke(self, server, endpoint, cmdlet, parameters, *, user="", is_script=False):
                props = {f"Prop{i}": f"value {i}" for i in range(40)}
                props["State"] = enum("Microsoft.Exchange.Data.ServiceState", "Active", 1)
                return SimResult(output=[SimObject(("Microsoft.Exchange.Demo", "System.Object"), props)])

        return StandIn(), "Get-MailboxServer", {"Identity": SERVER}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()

    sim, cmdlet, parameters = _simulation()
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        config = EndpointConfig(url=endpoint.url_for(SERVER, Endpoint.EXCHANGE.value),
                                configuration_name=Endpoint.EXCHANGE.value, auth="basic", username=USER,
                                password=PASSWORD, encryption="never")

        def wsman() -> WSMan:
            return WSMan("127.0.0.1", port=endpoint.port, path=endpoint.path_for(SERVER), ssl=False, auth="basic",
                         username=USER, password=PASSWORD, encryption="never")

        # 1. per-command latency on a reused pool. The three variants take turns sample by sample, so that drift
        # (GC, the endpoint's thread scheduling) hits them alike; each has its own pool.
        def bare_runner(pool: RunspacePool, close: bool) -> Callable[[], None]:
            def run() -> None:
                ps = PowerShell(pool)
                ps.add_cmdlet(cmdlet)
                for name, value in parameters.items():
                    ps.add_parameter(name, value)
                ps.invoke()
                if close:
                    ps.close()

            return run

        with (
            PypsrpSession(SERVER, {Endpoint.EXCHANGE: config}) as session,
            wsman() as transport_a,
            RunspacePool(transport_a, configuration_name=Endpoint.EXCHANGE.value) as pool_a,
            wsman() as transport_b,
            RunspacePool(transport_b, configuration_name=Endpoint.EXCHANGE.value) as pool_b,
        ):
            (adapter_ms, adapter_mean), (bare_ms, bare_mean), (bare_close_ms, _) = interleaved_ms(
                args.samples,
                [lambda: session.run(cmdlet, parameters), bare_runner(pool_a, False), bare_runner(pool_b, True)],
            )

        # 2. a sequence of commands: one session vs a new pool per command
        started = time.perf_counter()
        with PypsrpSession(SERVER, {Endpoint.EXCHANGE: config}) as session:
            for _ in range(args.commands):
                session.run(cmdlet, parameters)
        sequence_s = time.perf_counter() - started

        started = time.perf_counter()
        for _ in range(args.commands):
            with wsman() as transport, RunspacePool(transport, configuration_name=Endpoint.EXCHANGE.value) as pool:
                ps = PowerShell(pool)
                ps.add_cmdlet(cmdlet)
                for name, value in parameters.items():
                    ps.add_parameter(name, value)
                ps.invoke()
        per_command_pool_s = time.perf_counter() - started
        leaked = endpoint.open_shells()

    print(f"cmdlet: {cmdlet} {parameters}  (basic auth, loopback, {args.samples} samples)")
    print(f"adapter run()                      median {adapter_ms:7.2f} ms")
    print(f"bare PowerShell.invoke, reused pool median {bare_ms:7.2f} ms   -> adapter / bare = "
          f"{adapter_ms / bare_ms:.2f}x (goal <= 1.15x)")
    print(f"means, sweeps of finished pipelines included: adapter {adapter_mean:.2f} ms, bare {bare_mean:.2f} ms "
          f"-> {adapter_mean / bare_mean:.2f}x")
    print(f"bare invoke + close, reused pool    median {bare_close_ms:7.2f} ms   -> adapter / bare+close = "
          f"{adapter_ms / bare_close_ms:.2f}x")
    print(f"{args.commands} commands, one adapter session  {sequence_s * 1000:8.1f} ms")
    print(f"{args.commands} commands, new pool per command {per_command_pool_s * 1000:8.1f} ms   -> "
          f"{per_command_pool_s / sequence_s:.2f}x faster with the adapter (goal >= 1.6x)")
    print(f"shells left open on the endpoint: {len(leaked)}")


if __name__ == "__main__":
    main()
