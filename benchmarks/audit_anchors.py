"""What checking the chain against its anchors adds to ``verify_audit``: the chain walk alone, then the walk plus
every anchor and its RFC 3161 token (``verify_audit --anchors FILE --tsa-roots PEM``).

Run: ``DEBUG=true DATABASE_URL=postgres://postgres@127.0.0.1:5432/exmaint_bench .venv/bin/python
benchmarks/audit_anchors.py [--events 200000] [--every 1000]``.

The chain is built as benchmarks/audit_verify.py builds it (COPY, hashed as ``audit.append`` does); every
``--every``-th event is anchored through ``changes.anchors.write_anchor`` into a file, stamped by the local test TSA
(tests/support/tsa.py: ``openssl ts`` on loopback). Each check runs twice, alternating; the faster run counts.
Prints, as its last line, ``anchors events=… anchors=… verify=…s with_anchors=…s per_token_ms=…``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/exmaint_bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=1000)
    args = parser.parse_args()

    import django

    django.setup()
    from audit_verify import build_chain, ensure_database
    from django.conf import settings
    from django.db import connection

    from changes import anchors, audit
    from changes.models import AuditAnchor, AuditEvent
    from tests.support.tsa import LocalTsa

    if connection.vendor != "postgresql":
        raise SystemExit("this benchmark measures PostgreSQL: set DATABASE_URL=postgres://...")
    ensure_database()
    started = time.perf_counter()
    build_chain(args.events)
    AuditAnchor.objects.all().delete()
    print(f"built a chain of {args.events} events in {time.perf_counter() - started:.1f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="exmaint-bench-anchors-") as tmp, LocalTsa(Path(tmp) / "tsa") as tsa:
        sink = Path(tmp) / "anchors.jsonl"
        settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "FILE": str(sink), "SYSLOG": "",
                                          "TSA_URL": tsa.url}
        started = time.perf_counter()
        for ev in AuditEvent.objects.filter(seq__in=range(args.every, args.events + 1, args.every)).only(
                "seq", "hash", "created_at").order_by("seq"):
            anchors.write_anchor(ev.seq, ev.hash, ev.created_at, f"every {args.every} events")
        lines = anchors.read_anchor_file(sink)
        print(f"wrote {len(lines)} stamped anchors in {time.perf_counter() - started:.1f} s", flush=True)
        roots = anchors.load_trust_roots(tsa.ca_pem)

        plain, anchored = [], []
        for _ in range(2):
            t = time.perf_counter()
            assert audit.verify().ok
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = anchors.verify_anchors(anchors.read_anchor_file(sink), trust_roots=roots)
            anchored.append(time.perf_counter() - t)
            assert result.ok and result.tokens_checked == len(lines), result.problem
            print(f"verify {plain[-1]:.2f} s, with anchors {anchored[-1]:.2f} s", flush=True)
    per_token = (min(anchored) - min(plain)) / max(len(lines), 1) * 1000
    print(f"anchors events={args.events} anchors={len(lines)} verify={min(plain):.2f}s "
          f"with_anchors={min(anchored):.2f}s per_token_ms={per_token:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
