"""Issue 13 D8: the PDF carries the external anchor that covers the change's last event, the anchor is written (and
stamped) before the PDF is made, and a report regenerated later names the same anchor."""
from __future__ import annotations

import base64
import io
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from pypdf import PdfReader

from changes import anchors, audit
from changes.models import AuditAnchor, AuditEvent
from reports import services
from reports.context import build_report_data
from tests.support.tsa import tsa  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def squashed_text(pdf: bytes) -> str:
    return "".join("".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


def test_the_pdf_names_the_stamped_anchor_covering_the_last_event(
        completed, settings, tmp_path: Path, tsa, auditor, django_capture_on_commit_callbacks) -> None:  # noqa: F811
    sink = tmp_path / "anchors.jsonl"
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "FILE": str(sink), "SYSLOG": "",
                                      "TSA_URL": tsa.url, "EVERY": 1000}
    report = services.report_generate(completed.pk)
    anchor = AuditAnchor.objects.get()
    last_event = AuditEvent.objects.filter(object_type="change", object_id=str(completed.pk),
                                           seq__lte=report.head_seq).order_by("-seq").first()
    assert anchor.seq == report.head_seq >= last_event.seq and anchor.hash == report.head_hash
    assert anchors.anchors_covering(last_event.seq) == [anchor]
    [line] = [json.loads(raw) for raw in sink.read_text().splitlines()]
    assert (line["seq"], line["hash"], line["reason"]) == (anchor.seq, anchor.hash, f"report of {completed.number}")
    assert base64.b64decode(line["tsa_token"]) == bytes(anchor.tsa_token)

    text = squashed_text((services.reports_dir() / report.file_name).read_bytes())
    assert f"Anchoredoutsidethedatabase:event#{anchor.seq}" in text and anchor.hash in text
    assert "RFC3161token,TSAtime" in text and "verify_audit--anchorsFILE--tsa-rootsPEM" in text

    # Events after the head (a download, another anchor) leave the regenerated report byte-identical.
    with django_capture_on_commit_callbacks(execute=True):
        services.report_download(completed, actor=auditor)
        later = audit.append(actor="system:test", action="test.event", object_type="t", object_id=1)
    anchors.anchor_event(later.seq, "a later anchor")
    assert services.report_verify(report).ok
    out = StringIO()
    call_command("verify_audit", "--anchors", str(sink), "--tsa-roots", str(tsa.ca_pem), stdout=out)
    assert "anchors ok: 2 anchor(s)" in out.getvalue() and "2 TSA token(s) verified" in out.getvalue()


def test_without_an_anchor_the_report_says_so(completed) -> None:
    head = AuditEvent.objects.order_by("-seq").first()
    data = build_report_data(completed.pk, head_seq=head.seq, head_hash=head.hash)
    assert data.anchor is None
