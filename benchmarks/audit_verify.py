"""How long ``verify_audit`` takes over a million events, against a lean loop doing the same work by hand.

Run: ``make bench-audit`` (starts PostgreSQL as CI does), or ``DEBUG=true
DATABASE_URL=postgres://postgres@127.0.0.1:5432/exmaint_bench .venv/bin/python benchmarks/audit_verify.py``.

1. The database (created if missing, then migrated) gets a fresh chain of ``--events`` events (default 1,000,000),
   hashed exactly as ``changes.audit.append`` hashes them and written with COPY, and its head anchor.
2. ``changes.audit.verify()`` walks it, as ``manage.py verify_audit`` and ``GET /api/v1/audit/verify/`` do.
3. The lean loop: a bare psycopg server-side cursor over the same columns, each row → a dict → canonical JSON →
   SHA-256 → compared with the stored hash. No Django, no checks beyond the hash.

Each is timed twice, alternating, and the faster run counts (the machine is shared). Prints the peak RSS growth of
the verify (it streams: memory stays flat) and, as its last line,
``verify events=… seconds=… ratio=…`` (ratio = verify / lean loop). Goals: ≤ 10 s and ≤ 1.5× for a million events;
exits 1 if one is missed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/exmaint_bench")

GOAL_SECONDS, GOAL_RATIO = 10.0, 1.5
COLUMNS = "seq, created_at, actor, request_id, action, object_type, object_id, changes, reason, prev_hash, hash"
ACTIONS = [("change.transition", {"state": ["scheduled", "running"]}, "window opened"),
           ("step.completed", {"status": ["running", "passed"], "step": [None, "drain.transport"]}, ""),
           ("change.approved", {"approvals": [0, 1]}, "CAB 2030-01-04"),
           ("delivery.sent", {"batches_sent": [1, 2], "kind": [None, "announcement"]}, "")]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def ensure_database() -> None:
    """Create the benchmark's database when it does not exist yet (pytest-style: connect to ``postgres``)."""
    import psycopg
    from django.db import connection

    name = connection.settings_dict["NAME"]
    params = {k: v for k, v in {"host": connection.settings_dict["HOST"] or "127.0.0.1",
                                "port": connection.settings_dict["PORT"] or 5432,
                                "user": connection.settings_dict["USER"],
                                "password": connection.settings_dict["PASSWORD"]}.items() if v}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')  # a name from the operator's own DATABASE_URL


def build_chain(events: int) -> None:
    """A fresh chain of ``events`` events, hashed as ``audit.append`` does, written with COPY."""
    from django.core.management import call_command
    from django.db import connection, transaction

    from changes import audit

    call_command("migrate", verbosity=0)
    start = datetime(2030, 1, 5, 22, 0, tzinfo=UTC)
    prev = audit.GENESIS
    with transaction.atomic(), connection.cursor() as cur:
        # The benchmark's own throwaway database: its superuser empties the audit tables past the TRUNCATE guard for
        # this one transaction (SET LOCAL session_replication_role, as the tests' flush does); the guard stays.
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("TRUNCATE changes_auditevent, changes_audithead")
        cur.execute("SET LOCAL session_replication_role = origin")
        with cur.cursor.copy(f"COPY changes_auditevent ({COLUMNS}) FROM STDIN") as copy:
            for seq in range(1, events + 1):
                action, changes, reason = ACTIONS[seq % len(ACTIONS)]
                body = {"seq": seq, "created_at": (start + timedelta(milliseconds=seq)).isoformat(),
                        "actor": "client:servicenow" if seq % 3 else "user:alice", "request_id": f"req-{seq:012x}",
                        "action": action, "object_type": "change", "object_id": str(seq // 40 + 1),
                        "changes": changes, "reason": reason}
                digest = audit.compute_hash(prev, body)
                copy.write_row((seq, start + timedelta(milliseconds=seq), body["actor"], body["request_id"], action,
                                "change", body["object_id"], json.dumps(changes), reason, prev, digest))
                prev = digest
        cur.execute("INSERT INTO changes_audithead (id, seq, hash) VALUES (1, %s, %s)", [events, prev])
        cur.execute("ANALYZE changes_auditevent")


def lean_loop() -> tuple[int, float]:
    """The same work with nothing around it: a server-side cursor, canonical JSON, SHA-256."""
    import psycopg
    from django.db import connection

    settings = connection.settings_dict
    started = time.perf_counter()
    prev, count = "0" * 64, 0
    with psycopg.connect(dbname=settings["NAME"], host=settings["HOST"] or "127.0.0.1",
                         port=settings["PORT"] or 5432, user=settings["USER"],
                         password=settings["PASSWORD"] or None) as conn, conn.transaction():
        with conn.cursor(name="lean") as cur:
            cur.itersize = 5000
            cur.execute(f"SELECT {COLUMNS} FROM changes_auditevent ORDER BY seq")  # noqa: S608 - constant columns
            for seq, created_at, actor, request_id, action, object_type, object_id, changes, reason, prev_hash, \
                    digest in cur:
                body = {"seq": seq, "created_at": created_at.astimezone(UTC).isoformat(), "actor": actor,
                        "request_id": request_id, "action": action, "object_type": object_type,
                        "object_id": object_id, "changes": changes, "reason": reason}
                line = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                if prev_hash != prev or hashlib.sha256(f"{prev}\n{line}".encode()).hexdigest() != digest:
                    raise SystemExit(f"lean loop: event {seq} does not verify")
                prev, count = digest, count + 1
    return count, time.perf_counter() - started


def timed_verify() -> tuple[Any, float]:
    from changes import audit

    started = time.perf_counter()
    result = audit.verify()
    return result, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("bench-audit measures PostgreSQL: set DATABASE_URL=postgres://...")
    ensure_database()
    started = time.perf_counter()
    build_chain(args.events)
    print(f"built a chain of {args.events} events in {time.perf_counter() - started:.1f} s", flush=True)

    lean_times, verify_times = [], []
    before = _peak_mb()
    for _ in range(2):
        count, seconds = lean_loop()
        assert count == args.events
        lean_times.append(seconds)
        result, seconds = timed_verify()
        assert result.ok and result.events == args.events, result.problem
        verify_times.append(seconds)
        print(f"lean loop {lean_times[-1]:.2f} s, verify {verify_times[-1]:.2f} s", flush=True)
    print(f"peak RSS grew by {_peak_mb() - before:.0f} MB during the runs")
    seconds, ratio = min(verify_times), min(verify_times) / min(lean_times)
    print(f"verify events={args.events} seconds={seconds:.2f} ratio={ratio:.2f}")
    return 0 if seconds <= GOAL_SECONDS * args.events / 1_000_000 and ratio <= GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
