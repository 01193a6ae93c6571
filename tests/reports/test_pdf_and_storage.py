"""The PDF as a reader gets it (its text), stored once with its SHA-256, and byte-identical when regenerated."""
from __future__ import annotations

import hashlib
import io
import stat

import pytest
from pypdf import PdfReader

from changes.models import AuditEvent, AuditHead
from reports import services
from reports.models import Report
from reports.tasks import generate_report

from .support import DRAIN_FAILURE, SECRET, SKIP_REASON

pytestmark = pytest.mark.django_db


def pdf_text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    # Table cells wrap anywhere: compare without line breaks and spaces.
    return "".join(page.extract_text() for page in reader.pages)


def squash(text: str) -> str:
    return "".join(text.split())


def stored_bytes(report: Report) -> bytes:
    return (services.reports_dir() / report.file_name).read_bytes()


def test_the_pdf_shows_the_steps_the_resolutions_and_the_chain_head(completed) -> None:
    report = services.report_generate(completed.pk)
    text = pdf_text(stored_bytes(report))
    flat = squash(text)
    for heading in ("1. Summary", "2. Approvals", "3. Pre-check results", "4. Timeline",
                    "5. Issues hit and how they were resolved", "6. Server state before and after",
                    "7. Notifications sent", "Appendix A. Audit trail", "Appendix B. Commands and outputs"):
        assert squash(heading) in flat, heading
    assert text.index("1. Summary") < text.index("4. Timeline") < text.index("Appendix A")
    for step in ("Backups are recent and none is in progress", "Wait for the local queues to drain",
                 "Test-ServiceHealth is clean"):
        assert squash(step) in flat
    assert squash(SKIP_REASON) in flat and squash(DRAIN_FAILURE) in flat
    assert report.head_hash in flat
    assert squash(f"python manage.py verify_audit --head {report.head_hash}") in flat
    assert squash('"LastFullBackup":"2026-11-29T05:00:00+00:00"') in flat  # the command's output, in Appendix B


def test_every_page_has_the_header_and_page_x_of_y(completed) -> None:
    reader = PdfReader(io.BytesIO(stored_bytes(services.report_generate(completed.pk))))
    total = len(reader.pages)
    assert total > 1
    for number, page in enumerate(reader.pages, 1):
        text = page.extract_text()
        assert completed.number in text and "CHG0030012" in text and "EX01" in text
        assert f"Page {number} of {total}" in text


@pytest.mark.parametrize("window", ["completed", "exit_retried", "aborted"])
def test_the_pdf_never_shows_the_server_password(window, request) -> None:
    change = request.getfixturevalue(window)
    pdf = stored_bytes(services.report_generate(change.pk))
    assert SECRET not in pdf_text(pdf)
    assert SECRET.encode() not in pdf


def test_regenerating_from_the_same_records_gives_the_same_bytes(completed, auditor) -> None:
    report = services.report_generate(completed.pk)
    # Later events (a download, the review closing the change) are after the report's head: no effect.
    services.report_download(completed, actor=auditor)
    again = services.render_for(completed.pk, report.head_seq, report.head_hash)
    assert again.sha256 == report.sha256 == hashlib.sha256(stored_bytes(report)).hexdigest()
    assert services.report_verify(report).ok


def test_the_pdf_dates_come_from_the_window_end_not_the_clock(completed) -> None:
    report = services.report_generate(completed.pk)
    info = PdfReader(io.BytesIO(stored_bytes(report))).metadata
    ended = report.window_ended_at
    assert info["/CreationDate"] == info["/ModDate"]
    assert info["/CreationDate"].startswith(f"D:{ended:%Y%m%d%H%M%S}")


def test_the_report_is_stored_once_read_only_with_its_sha256_and_head(completed) -> None:
    head = AuditHead.objects.get(id=1)
    report = services.report_generate(completed.pk)
    path = services.reports_dir() / report.file_name
    assert (report.head_seq, report.head_hash) == (head.seq, head.hash)
    stored = path.stat()
    assert report.size == stored.st_size and report.pages > 1
    # The mode bits themselves, not os.access(): root is granted write access whatever the bits say.
    assert stat.S_ISREG(stored.st_mode)
    assert stat.S_IMODE(stored.st_mode) & 0o222 == 0, oct(stored.st_mode)  # nobody may write it
    assert stat.S_IMODE(stored.st_mode) & stat.S_IRUSR  # the service can still read it back
    assert services.report_generate(completed.pk) == report
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (stored.st_ino, stored.st_mtime_ns, stored.st_size)
    assert Report.objects.count() == 1
    event = AuditEvent.objects.get(action="report.generated")
    assert event.seq == head.seq + 1 and event.changes["sha256"] == [None, report.sha256]


def test_a_file_in_the_way_with_other_bytes_is_never_overwritten_even_when_writable(completed) -> None:
    report = services.report_generate(completed.pk)
    path = services.reports_dir() / report.file_name
    # Made writable, so only the storage itself (not the mode bits, which root ignores) can refuse.
    path.chmod(0o644)
    before = path.stat()
    with pytest.raises(FileExistsError, match="never overwritten"):
        services._write_once(path, b"something else")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == report.sha256
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_writing_the_same_bytes_again_leaves_the_stored_file_untouched(completed) -> None:
    """A retried task: accepted, and the file is neither rewritten nor replaced."""
    report = services.report_generate(completed.pk)
    path = services.reports_dir() / report.file_name
    before = path.stat()
    services._write_once(path, path.read_bytes())
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, stat.S_IMODE(after.st_mode)) == (
        before.st_ino, before.st_mtime_ns, stat.S_IMODE(before.st_mode))


def test_an_altered_file_fails_verification(completed) -> None:
    report = services.report_generate(completed.pk)
    path = services.reports_dir() / report.file_name
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"%tampered")
    outcome = services.report_verify(report)
    assert not outcome.ok and outcome.problem == "the stored file does not match its recorded SHA-256"


def test_the_task_generates_the_report_of_an_ended_window(exit_retried) -> None:
    sha = generate_report(exit_retried.pk)
    assert Report.objects.get(change=exit_retried).sha256 == sha


def test_no_report_before_the_window_has_ended(requester, servers) -> None:
    from tests.changes.test_services import create

    change, _ = create(requester)
    with pytest.raises(services.ReportNotReady):
        services.report_generate(change.pk)
    assert not Report.objects.exists()


def test_routine_edits_after_the_report_do_not_change_its_regeneration(exit_retried, api, operator) -> None:
    """Operators PATCH the server's build after a CU and the watchdog clears alerts later: the report is pinned to its
    audit head, so the stored file still matches a fresh regeneration."""
    from django.utils import timezone

    from changes.models import Alert, Server

    report = services.report_generate(exit_retried.pk)
    server = Server.objects.get(name="EX01")
    response = api(operator).patch(f"/api/v1/servers/{server.pk}/", {"build": "15.2.1748.10", "version": "CU15"},
                                   format="json")
    assert response.status_code == 200, response.content
    assert Alert.objects.filter(change=exit_retried, cleared_at__isnull=True).update(cleared_at=timezone.now()) >= 1
    outcome = services.report_verify(report)
    assert outcome.ok, outcome.problem
    text = squash(pdf_text(stored_bytes(report)))
    assert "15.2.1748.10" not in text and "stillopen" in text


def test_the_report_waits_for_the_windows_last_notifications(completed, monkeypatch) -> None:
    """The end e-mail and the final callback are queued with the report: the task retries until they are out."""
    from celery.exceptions import Retry

    from reports import services as report_services
    from reports.tasks import generate_report

    monkeypatch.setattr(report_services, "notifications_settled", lambda change_id: False)
    with pytest.raises(Retry):
        generate_report.apply(args=[completed.pk], throw=True)
    monkeypatch.setattr(report_services, "notifications_settled", lambda change_id: True)
    assert len(generate_report.apply(args=[completed.pk], throw=True).get()) == 64
