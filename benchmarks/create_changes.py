"""How fast POST /api/v1/changes/ is, against a bare DRF create on the same server, database and authentication.

Run: ``make bench-create`` (starts PostgreSQL as CI does), or ``DEBUG=true
DATABASE_URL=postgres://postgres@127.0.0.1:5432/exmaint_bench_create .venv/bin/python benchmarks/create_changes.py``.

1. The database (its name must contain "bench": it is dropped and made again) is migrated, with the benchmark's
   bare app (benchmarks/bare: one small model, a DRF ``CreateAPIView`` with a ``ModelSerializer``).
2. gunicorn serves benchmarks.bare.settings (the service's settings plus that app) with 2 sync workers on loopback.
3. For ``--seconds`` each, 1 and then 4 concurrent clients post: normal changes (each client on its own server;
   the approvers are asked, as in production) and bare notes. Measured in turns, ``--rounds`` times (the machine is
   shared: drift hits both alike); the best round of each counts.
4. One more create, in this process, counts the SQL statements a create issues (transaction control aside).

Last line: ``create rps=… bare_rps=… ratio=… ratio4=… statements=…`` (ratio: create / bare at 1 client; ratio4: at
4). Goals: ratio and ratio4 ≥ 0.5, statements ≤ 12; exits 1 if one is missed.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.bare.settings"
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/exmaint_bench_create")
os.environ.setdefault("EXMAINT_VAR_DIR", str(ROOT / "var" / "bench-create"))

GOAL_RATIO, GOAL_STATEMENTS = 0.5, 12
CLIENTS = (1, 4)
WINDOW = ("2031-01-04T22:00:00+00:00", "2031-01-05T02:00:00+00:00")  # a Saturday night
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


def fresh_database() -> None:
    """Drop and make the benchmark's database again (a name without "bench" is refused: never someone's data)."""
    import psycopg
    from django.db import connection

    settings = connection.settings_dict
    name = settings["NAME"]
    if "bench" not in name:
        raise SystemExit(f"refusing to drop database {name!r}: the benchmark's database name must contain 'bench'")
    params = {k: v for k, v in {"host": settings["HOST"] or "127.0.0.1", "port": settings["PORT"] or 5432,
                                "user": settings["USER"], "password": settings["PASSWORD"]}.items() if v}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # the operator's own DATABASE_URL
        admin.execute(f'CREATE DATABASE "{name}"')


def fixtures() -> str:
    """The ITSM's API client (its token is returned), two approvers with e-mail, 8 standalone servers."""
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from changes.models import ApiClient, Role, Server

    call_command("migrate", run_syncdb=True, verbosity=0)
    itsm = User.objects.create_user("servicenow", is_staff=True)
    itsm.groups.add(Group.objects.get_or_create(name=Role.REQUESTER)[0])
    ApiClient.objects.create(user=itsm, source="servicenow")
    for name in ("alice", "bob"):
        User.objects.create_user(name, email=f"{name}@example.com").groups.add(
            Group.objects.get_or_create(name=Role.APPROVER)[0])
    Server.objects.bulk_create(Server(name=f"BX{n:02d}", fqdn=f"bx{n:02d}.corp.example") for n in range(1, 9))
    return Token.objects.create(user=itsm).key


def change_body(client: int, n: int) -> dict:
    return {"source": "servicenow", "external_ref": f"BENCH-{client}-{n}-{time.monotonic_ns()}",
            "title": "Install Exchange 2019 CU15", "description": "Quarterly cumulative update.",
            "change_type": "normal", "risk": "medium", "impact": "medium", "servers": [f"BX{client + 1:02d}"],
            "window_start": WINDOW[0], "window_end": WINDOW[1], "requested_by": "carol@example.com",
            "notify": ["exchange-team@example.com"]}


def note_body(client: int, n: int) -> dict:
    return {"title": f"Install Exchange 2019 CU15 ({client}-{n})", "body": "Quarterly cumulative update."}


def drive(port: int, token: str, path: str, body: Callable[[int, int], dict], clients: int, seconds: float) -> float:
    """Requests per second that ``clients`` concurrent clients get for ``seconds``; any answer but 201 aborts."""
    stop_at = time.monotonic() + seconds
    done, failures = [0] * clients, []
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def client(index: int) -> None:
        n = 0
        while time.monotonic() < stop_at and not failures:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # gunicorn's sync workers close it
            conn.request("POST", path, json.dumps(body(index, n)), headers)
            response = conn.getresponse()
            payload = response.read()
            conn.close()
            if response.status != 201:
                failures.append(f"{path}: {response.status} {payload[:300]!r}")
            n += 1
            done[index] = n

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(failures[0])
    return sum(done) / (time.monotonic() - started)


def count_statements(token: str) -> int:
    """The statements of one create (transaction control aside), counted in this process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    client.post("/api/v1/changes/", change_body(0, -1), content_type="application/json")  # warm
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/api/v1/changes/", change_body(1, -1), content_type="application/json")
    assert response.status_code == 201, response.content
    return sum(1 for q in captured.captured_queries if not q["sql"].upper().startswith(_CONTROL))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int) -> subprocess.Popen:
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
         "config.wsgi:application"], cwd=ROOT, env=os.environ.copy(), start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status < 500:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not answer /healthz within 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("bench-create measures PostgreSQL: set DATABASE_URL=postgres://...")
    fresh_database()
    token = fixtures()
    connection.close()
    port = free_port()
    server = serve(port)
    try:
        best: dict[tuple[str, int], float] = {}
        runs = [(kind, clients) for clients in CLIENTS for kind in ("create", "bare")]
        for kind, clients in runs:  # warm both workers on both paths
            drive(port, token, *_target(kind), clients, 1.0)
        for round_ in range(args.rounds):
            for kind, clients in runs:
                rps = drive(port, token, *_target(kind), clients, args.seconds)
                best[kind, clients] = max(best.get((kind, clients), 0.0), rps)
                print(f"round {round_ + 1}: {kind} at {clients} client(s): {rps:.1f} requests/s", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    statements = count_statements(token)
    ratio, ratio4 = best["create", 1] / best["bare", 1], best["create", 4] / best["bare", 4]
    print(f"at 4 clients: create rps={best['create', 4]:.1f} bare_rps={best['bare', 4]:.1f}")
    print(f"create rps={best['create', 1]:.1f} bare_rps={best['bare', 1]:.1f} ratio={ratio:.2f} ratio4={ratio4:.2f} "
          f"statements={statements}")
    return 0 if min(ratio, ratio4) >= GOAL_RATIO and statements <= GOAL_STATEMENTS else 1


def _target(kind: str) -> tuple[str, Callable[[int, int], dict]]:
    return ("/api/v1/changes/", change_body) if kind == "create" else ("/bench/notes/", note_body)


if __name__ == "__main__":
    sys.exit(main())
