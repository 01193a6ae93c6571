"""Issue 13 D8: the chain head is anchored outside the database (every N events, at a window's end, for a report),
stamped by an RFC 3161 TSA when one is configured, and ``verify_audit --anchors`` checks the chain against the
external copy. The tamper suite (PostgreSQL) is in test_audit_tamper.py."""
from __future__ import annotations

import base64
import json
import socket
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from changes import anchors, audit
from changes.models import AuditAnchor
from tests.support.tsa import make_ca, tsa  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def sink(settings, tmp_path: Path) -> Path:
    """Anchor every 3 events into a fresh file; no syslog, no TSA unless a test sets one."""
    path = tmp_path / "anchors.jsonl"
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "EVERY": 3, "FILE": str(path),
                                      "SYSLOG": "", "TSA_URL": "", "TSA_ROOTS": ""}
    return path


def fill(n: int, captured) -> list:  # noqa: ANN001 - django_capture_on_commit_callbacks
    with captured(execute=True):
        return [audit.append(actor="system:test", action="test.event", object_type="thing", object_id=i,
                             reason=f"event {i}") for i in range(n)]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def verify(*args: str) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_every_nth_event_is_anchored_in_the_file_and_recorded(sink: Path, django_capture_on_commit_callbacks) -> None:
    events = fill(7, django_capture_on_commit_callbacks)
    written = lines(sink)
    assert [(r["seq"], r["hash"]) for r in written] == [(3, events[2].hash), (6, events[5].hash)]
    assert written[0]["type"] == anchors.RECORD_TYPE and written[0]["tsa_token"] is None
    assert written[0]["event_created_at"] == events[2].created_at.isoformat()
    rows = list(AuditAnchor.objects.values_list("seq", "hash", "sinks"))
    assert rows == [(3, events[2].hash, ["file"]), (6, events[5].hash, ["file"])]
    out = verify("--anchors", str(sink))
    assert "anchors ok: 2 anchor(s)" in out and "the last at #6" in out and "1 event(s) after it" in out


def test_the_configured_file_is_read_when_no_file_is_named(sink: Path, django_capture_on_commit_callbacks) -> None:
    fill(3, django_capture_on_commit_callbacks)
    assert "anchors ok: 1 anchor(s) in " + str(sink) in verify("--anchors")


def test_an_event_that_rolls_back_is_not_anchored(sink: Path, django_capture_on_commit_callbacks) -> None:
    from django.db import transaction

    fill(2, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        audit.append(actor="system:test", action="test.event", object_type="thing", object_id=3)
        raise RuntimeError("the service failed after its append")
    assert not sink.exists() and not AuditAnchor.objects.exists()


def test_a_window_end_is_anchored_whatever_the_count(sink: Path, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        audit.append(actor="system:runner", action="change.transition", object_type="change", object_id=7,
                     changes={"state": ["running", "paused"]})
        end = audit.append(actor="system:runner", action="change.transition", object_type="change", object_id=7,
                           changes={"state": ["running", "completed"]})
    [line] = lines(sink)
    assert (line["seq"], line["hash"]) == (2, end.hash) and "window end: change 7 completed" in line["reason"]


def test_anchoring_the_same_event_twice_writes_one_row(sink: Path, django_capture_on_commit_callbacks) -> None:
    fill(2, django_capture_on_commit_callbacks)
    first = anchors.anchor_event(2, "report of EXM-000001")
    assert anchors.anchor_event(2, "again") == first and AuditAnchor.objects.count() == 1
    assert anchors.anchor_event(99, "no such event") is None
    assert [a.seq for a in anchors.anchors_covering(1)] == [2] and anchors.anchors_covering(3) == []
    assert anchors.anchors_covering(1, upto=1) == []


def test_the_tsa_stamps_the_anchor_and_the_token_verifies_against_its_root(
        sink: Path, settings, tsa, django_capture_on_commit_callbacks, tmp_path: Path) -> None:  # noqa: ANN001, F811
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "TSA_URL": tsa.url}
    events = fill(3, django_capture_on_commit_callbacks)
    [line] = lines(sink)
    token = base64.b64decode(line["tsa_token"])
    row = AuditAnchor.objects.get(seq=3)
    assert tsa.requests == 1 and bytes(row.tsa_token) == token and row.tsa_time is not None
    assert anchors.check_token(token, events[2].hash, anchors.load_trust_roots(tsa.ca_pem))[0]
    # The imprint is the event's hash itself: openssl checks the token as docs/audit-trail.md shows.
    (tmp_path / "anchor.tst").write_bytes(token)
    for digest, verdict in ((events[2].hash, "Verification: OK"), (events[1].hash, "Verification: FAILED")):
        run = subprocess.run([tsa.openssl, "ts", "-verify", "-digest", digest, "-token_in", "-in",
                              str(tmp_path / "anchor.tst"), "-CAfile", str(tsa.ca_pem)], capture_output=True,
                             text=True, check=False)
        assert verdict in run.stdout
    assert "1 TSA token(s) verified" in verify("--anchors", str(sink), "--tsa-roots", str(tsa.ca_pem))
    assert "1 TSA token(s) not checked" in verify("--anchors", str(sink))

    _, stranger = make_ca("someone else's root")
    from cryptography.hazmat.primitives.serialization import Encoding
    other_root = tmp_path / "other.pem"
    other_root.write_bytes(stranger.public_bytes(Encoding.PEM))
    with pytest.raises(CommandError, match=r"anchor #3 .*does not chain to the given trust roots.*from #1 on"):
        verify("--anchors", str(sink), "--tsa-roots", str(other_root))


def test_a_token_moved_to_another_anchor_is_refused(
        sink: Path, settings, tsa, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001, F811
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "TSA_URL": tsa.url}
    fill(6, django_capture_on_commit_callbacks)
    first, second = lines(sink)
    second["tsa_token"] = first["tsa_token"]  # a real token of the same TSA, for another hash
    sink.write_text("\n".join(json.dumps(r) for r in (first, second)) + "\n")
    with pytest.raises(CommandError, match=r"anchor #6 .*does not stamp this hash.*Last good anchor: #3.*from #4 on"):
        verify("--anchors", str(sink), "--tsa-roots", str(tsa.ca_pem))


def test_a_tsa_outage_leaves_the_anchor_unstamped_but_written(
        sink: Path, settings, tsa, django_capture_on_commit_callbacks, caplog) -> None:  # noqa: ANN001, F811
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "TSA_URL": tsa.url}
    tsa.refuse = True
    fill(3, django_capture_on_commit_callbacks)
    [line] = lines(sink)
    assert line["tsa_token"] is None and bytes(AuditAnchor.objects.get(seq=3).tsa_token) == b""
    assert "did not stamp audit anchor #3" in caplog.text


def test_the_syslog_sink_gets_the_line_and_an_extract_verifies(
        sink: Path, settings, django_capture_on_commit_callbacks, tmp_path: Path) -> None:  # noqa: ANN001
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "FILE": "",
                                      "SYSLOG": f"127.0.0.1:{receiver.getsockname()[1]}"}
    try:
        fill(3, django_capture_on_commit_callbacks)
        datagram = receiver.recv(65536).decode()
    finally:
        receiver.close()
    assert datagram.startswith("<") and "exmaint-audit: {" in datagram  # <priority> as syslog frames it
    assert AuditAnchor.objects.get(seq=3).sinks == ["syslog"] and not sink.exists()
    extract = tmp_path / "syslog-extract.log"
    extract.write_text("Dec  7 19:00:00 host other: unrelated line\n" + datagram.rstrip("\x00") + "\n")
    assert "anchors ok: 1 anchor(s)" in verify("--anchors", str(extract))


def test_a_malformed_anchor_line_is_named(sink: Path, django_capture_on_commit_callbacks) -> None:
    fill(3, django_capture_on_commit_callbacks)
    with sink.open("a") as fh:
        fh.write('{"type": "exmaint.audit-anchor", "seq": "three", "hash": "x"}\n')
    with pytest.raises(CommandError, match=r"anchors.jsonl:2: not a well-formed audit anchor"):
        verify("--anchors", str(sink))
    with pytest.raises(CommandError, match="No such file|no such file"):
        verify("--anchors", str(sink.with_name("missing.jsonl")))


def test_an_empty_sink_or_none_configured_fails(sink: Path, settings, django_capture_on_commit_callbacks) -> None:
    fill(2, django_capture_on_commit_callbacks)
    sink.write_text("")
    with pytest.raises(CommandError, match="no anchor to check against"):
        verify("--anchors", str(sink))
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "FILE": ""}
    with pytest.raises(CommandError, match="no anchor file"):
        verify("--anchors")


def test_two_hashes_for_one_seq_in_the_sink_fail(sink: Path, django_capture_on_commit_callbacks) -> None:
    fill(3, django_capture_on_commit_callbacks)
    [line] = lines(sink)
    with sink.open("a") as fh:
        fh.write(json.dumps({**line, "hash": "ab" * 32}) + "\n")
    with pytest.raises(CommandError, match=r"#3 is anchored with two hashes"):
        verify("--anchors", str(sink))


def test_the_admin_lists_anchors_read_only(sink: Path, django_capture_on_commit_callbacks, client) -> None:
    from tests.conftest import make_user

    fill(3, django_capture_on_commit_callbacks)
    client.force_login(make_user("audrey", "auditor"))
    page = client.get("/admin/changes/auditanchor/")
    assert page.status_code == 200 and AuditAnchor.objects.get().hash in page.content.decode()
    anchor = AuditAnchor.objects.get()
    client.post(f"/admin/changes/auditanchor/{anchor.pk}/change/", {"reason": "edited"})
    assert AuditAnchor.objects.get().reason == anchor.reason
    assert client.get(f"/admin/changes/auditanchor/{anchor.pk}/delete/").status_code == 403
    assert client.get("/admin/changes/auditanchor/add/").status_code == 403


@pytest.mark.parametrize("changes", [{"state": []}, {"state": "completed"}, {"state": [None, {"x": 1}]}, {}])
def test_an_odd_transition_event_is_appended_and_not_anchored(sink: Path, changes: dict,
                                                            django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        audit.append(actor="system:test", action="change.transition", object_type="change", object_id=1,
                     changes=changes)
    assert audit.verify().ok and not AuditAnchor.objects.exists()
