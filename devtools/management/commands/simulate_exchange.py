"""``manage.py simulate_exchange``: serve a simulated Exchange organisation over WinRM/PSRP on loopback.

    python manage.py simulate_exchange --port 5985 --standalone EX01 --dag DAG1:EX02,EX03,EX04 \\
        --fault unreachable@EX03 --user exmaint-svc --password-file /run/secrets/sim-password

Runs in the foreground and prints one URL per server and endpoint; Ctrl-C or SIGTERM stops it. The logic lives in
plain functions (``build_simulation``, ``serve``) so it is testable without Django.
"""
from __future__ import annotations

import secrets
import signal
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange_sim.endpoint import DEFAULT, EXCHANGE, RunningEndpoint, start_endpoint

DEMO_STANDALONE = ["EX01"]
DEMO_DAGS = ["DAG1:EX02,EX03,EX04"]


def parse_dag(spec: str) -> tuple[str, list[str]]:
    """``DAG1:EX02,EX03`` -> ("DAG1", ["EX02", "EX03"])."""
    name, _, members = spec.partition(":")
    servers = [m.strip() for m in members.split(",") if m.strip()]
    if not name.strip() or not servers:
        raise ValueError(f"a DAG is NAME:SERVER,SERVER,... not {spec!r}")
    return name.strip(), servers


def build_simulation(standalone: Sequence[str], dags: Sequence[str], faults: Sequence[str] = (),
                     speed: float | None = None) -> Any:
    """A SimulatedExchange with these servers and faults (``NAME@SERVER[:N]``). Its clock starts at the real current
    time and runs on its own, ``speed`` times faster than the wall clock (default 1: real time). A fixed start would
    make a real engine see backups days old and stop at the backup gate."""
    from exchange_sim import model

    sim = model.SimulatedExchange(start=datetime.now(UTC), speed=speed or 1.0)
    for name in standalone:
        sim.add_standalone(name)
    for spec in dags:
        dag_name, members = parse_dag(spec)
        sim.add_dag(dag_name, members)
    for spec in faults:
        sim.inject_spec(spec)
    return sim


def read_password(path: str | None) -> tuple[str, bool]:
    """The password from a file (first line), or a fresh random one; the flag says whether it was generated."""
    if path:
        text = Path(path).read_text(encoding="utf-8").splitlines()
        if not text or not text[0]:
            raise ValueError(f"{path} holds no password")
        return text[0], False
    return secrets.token_urlsafe(12), True


def endpoint_urls(endpoint: RunningEndpoint, servers: Sequence[str]) -> list[str]:
    return [endpoint.url_for(s, e) for s in servers for e in (EXCHANGE, DEFAULT)]


def serve(
    sim: Any,
    *,
    port: int,
    users: dict[str, str],
    stop: threading.Event,
    announce: Callable[[RunningEndpoint], None] = lambda endpoint: None,
    shell_quota: int = 18,
) -> None:
    """Run the endpoint until STOP is set."""
    endpoint = start_endpoint(sim, port=port, users=users, shell_quota=shell_quota)
    try:
        announce(endpoint)
        stop.wait()
    finally:
        endpoint.stop()


class Command(BaseCommand):
    help = "Serve a simulated Exchange organisation over WinRM/PSRP (pypsrp-compatible) on 127.0.0.1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=5985, help="TCP port on 127.0.0.1 (0: any free port)")
        parser.add_argument("--standalone", action="append", default=[], metavar="SERVER")
        parser.add_argument("--dag", action="append", default=[], metavar="DAG:SERVER,SERVER,...")
        parser.add_argument("--fault", action="append", default=[], metavar="NAME@SERVER[:N]")
        parser.add_argument("--user", default="exmaint-svc")
        parser.add_argument("--password-file", default=None, help="first line is the password (default: random)")
        parser.add_argument("--shell-quota", type=int, default=18, help="concurrent shells per user and server")
        parser.add_argument("--speed", type=float, default=None,
                            help="run the simulated clock N times faster than real time (for a real engine, with "
                                 "EXMAINT_RUNNER_CLOCK=scaled:N); default: real time, from now")

    def handle(self, *args: Any, **options: Any) -> None:
        standalone, dags = options["standalone"], options["dag"]
        if not standalone and not dags:
            standalone, dags = DEMO_STANDALONE, DEMO_DAGS
        try:
            sim = build_simulation(standalone, dags, options["fault"], speed=options["speed"])
            password, generated = read_password(options["password_file"])
        except (ValueError, KeyError, OSError) as exc:
            raise CommandError(str(exc)) from exc

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())

        def announce(endpoint: RunningEndpoint) -> None:
            for url in endpoint_urls(endpoint, list(sim.servers)):
                self.stdout.write(url)
            shown = password if generated else "(from --password-file)"
            self.stdout.write(f"user {options['user']}, password {shown}; auth basic or negotiate")
            self.stdout.write("Ctrl-C or SIGTERM stops the simulator.")

        serve(sim, port=options["port"], users={options["user"]: password}, stop=stop, announce=announce,
              shell_quota=options["shell_quota"])
