"""Issue 13 D8: the auditors get every anchor of the audit chain by e-mail (through the outbox), the anchor line as
an attachment that ``verify_audit --anchors`` reads; a window's end, reached through the real services, is
anchored."""
from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from changes import audit
from changes.models import AuditAnchor, AuditEvent
from changes.services import change_transition
from changes.states import State
from notifications.models import Delivery
from tests.conftest import make_user

from .fixtures import create, drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def sink(settings, tmp_path: Path) -> Path:
    path = tmp_path / "anchors.jsonl"
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "EVERY": 1000, "FILE": str(path),
                                      "SYSLOG": "", "TSA_URL": ""}
    return path


def test_auditors_get_each_anchor_with_the_line_attached(sink: Path, settings, smtp, tmp_path: Path,
                                                         django_capture_on_commit_callbacks) -> None:
    make_user("audrey", "auditor", email="audrey@example.com")
    make_user("nomail", "auditor")
    make_user("olga", "operator", email="olga@example.com")
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "EVERY": 2}
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(2):
            audit.append(actor="system:test", action="test.event", object_type="thing", object_id=i)
    anchor = AuditAnchor.objects.get()  # one of two consecutive events falls on a multiple of EVERY
    assert anchor.sinks == ["file", "email"]
    drain()
    [mail] = [m for m in smtp.messages if "Audit chain anchor" in m.message["Subject"]]
    assert mail.rcpt_tos == ["audrey@example.com"]
    [attachment] = list(mail.message.iter_attachments())
    assert attachment.get_filename() == f"audit-anchor-{anchor.seq}.jsonl"
    line = attachment.get_content()
    assert line.strip() == sink.read_text().strip()  # the same line as the file sink (mail ends it CRLF)
    assert AuditEvent.objects.get(seq=anchor.seq).hash in mail.message.get_body(("plain",)).get_content()
    saved = tmp_path / "from-mail.jsonl"
    saved.write_text(line)
    out = StringIO()
    call_command("verify_audit", "--anchors", str(saved), stdout=out, stderr=StringIO())
    assert "anchors ok: 1 anchor(s)" in out.getvalue()


def test_no_auditor_with_an_address_means_no_mail(sink: Path, django_capture_on_commit_callbacks) -> None:
    make_user("audrey", "auditor")
    with django_capture_on_commit_callbacks(execute=True):
        audit.append(actor="system:runner", action="change.transition", object_type="change", object_id=1,
                     changes={"state": ["running", "aborted"]})
    assert AuditAnchor.objects.get().sinks == ["file"]
    assert not Delivery.objects.filter(kind=Delivery.Kind.AUDIT_ANCHOR).exists()


def test_a_window_completed_through_the_services_is_anchored(requester, servers, sink: Path,
                                                             django_capture_on_commit_callbacks) -> None:
    change = create(requester, change_type="standard")
    change_transition(change.pk, State.RUNNING, actor="system:scheduler", reason="window started")
    assert not AuditAnchor.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        change_transition(change.pk, State.COMPLETED, actor="system:runner", reason="all steps passed")
    end = AuditEvent.objects.filter(action="change.transition", object_id=str(change.pk)).order_by("-seq").first()
    anchor = AuditAnchor.objects.get()
    assert (anchor.seq, anchor.hash) == (end.seq, end.hash)
    assert anchor.reason == f"window end: change {change.pk} completed"
