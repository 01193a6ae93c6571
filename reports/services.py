"""Use cases of the report: generate and store it once (immutable, with its SHA-256), verify it by regenerating it,
and hand it to a reader with an audit event per download."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from changes import anchors, audit, authority
from changes.errors import DomainError
from changes.models import AuditHead, Change
from changes.states import WINDOW_ENDED, State

from .context import build_report_data
from .models import Report
from .render import RenderedPdf, render_report
from .signing import sign_pdf, signing_configured

log = logging.getLogger(__name__)

ACTOR = "system:reports"


class ReportNotReady(DomainError):
    """The window has not ended: there is no report yet."""

    status = 404
    code = "report_not_ready"


class ReportTampered(DomainError):
    """The stored file no longer matches the SHA-256 recorded when it was generated."""

    status = 409
    code = "report_tampered"


def reports_dir() -> Path:
    path = Path(settings.VAR_DIR) / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _window_ended(change: Change) -> bool:
    # A closed change had its window end first: closed only follows completed, failed or aborted.
    return change.state in WINDOW_ENDED or change.state == State.CLOSED


def _current_head() -> tuple[int, str]:
    anchor = AuditHead.objects.filter(id=1).first()
    if anchor is not None:
        return anchor.seq, anchor.hash
    return 0, audit.GENESIS


def render_for(change_id: int, head_seq: int, head_hash: str) -> RenderedPdf:
    """Build and render the report of a change as of a chain head (no side effects)."""
    return render_report(build_report_data(change_id, head_seq=head_seq, head_hash=head_hash))


def _write_once(path: Path, content: bytes) -> None:
    """Create the file; never replace one. A file already there with the same bytes is accepted (a retried task)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        if path.read_bytes() != content:
            raise FileExistsError(f"{path} exists with other content; a report is never overwritten") from None
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())


def report_generate(change_id: int) -> Report:
    """Generate and store the report of a change whose window has ended; return the stored one if it exists.

    Built from the chain head at this moment; the file is created read-only and never overwritten, and the row keeps
    its SHA-256, size and head. Appends ``report.generated`` to the audit trail (after the head it was built from).
    Raises ReportNotReady before the window's end.
    """
    existing = Report.objects.filter(change_id=change_id).first()
    if existing is not None:
        return existing
    change = Change.objects.get(pk=change_id)
    if not _window_ended(change):
        raise ReportNotReady(f"{change.number} is '{change.state}': its report exists once the window has ended "
                             "(completed, failed or aborted)", state=change.state)
    head_seq, head_hash = _current_head()
    if head_seq:  # the head the report is built from goes outside the database first, so the PDF can name it
        anchors.anchor_event(head_seq, f"report of {change.number}")
    data = build_report_data(change_id, head_seq=head_seq, head_hash=head_hash)
    rendered = signed(render_report(data))
    name = f"{change.number}-{rendered.sha256[:16]}.pdf"
    _write_once(reports_dir() / name, rendered.pdf)
    try:
        with transaction.atomic():
            report = Report.objects.create(
                change=change, file_name=name, sha256=rendered.sha256, size=len(rendered.pdf), pages=rendered.pages,
                head_seq=head_seq, head_hash=head_hash,
                window_ended_at=data.ended_at)
            audit.append(actor=ACTOR, action="report.generated", obj=change,
                         changes={"sha256": [None, rendered.sha256], "head_seq": [None, head_seq]})
    except IntegrityError:
        # Another worker stored the report of this change first: that one stands (its file is kept too).
        return Report.objects.get(change_id=change_id)
    log.info("report of %s stored: %s (%s bytes, %s pages)", change.number, name, len(rendered.pdf), rendered.pages)
    return report


def signed(rendered: RenderedPdf) -> RenderedPdf:
    """The rendered report signed by the report-signing certificate (unchanged when none is configured). The
    signature is appended as an incremental update: the rendered bytes stay the file's prefix."""
    if not signing_configured():
        return rendered
    pdf = sign_pdf(rendered.pdf)
    return RenderedPdf(pdf=pdf, pages=rendered.pages, sha256=hashlib.sha256(pdf).hexdigest())


@dataclass(frozen=True)
class VerifyOutcome:
    ok: bool
    stored_sha256: str
    file_sha256: str
    regenerated_sha256: str

    @property
    def problem(self) -> str:
        if self.file_sha256 != self.stored_sha256:
            return "the stored file does not match its recorded SHA-256"
        if self.regenerated_sha256 != self.stored_sha256:
            return "regenerating from the records gives other bytes (records altered, or fonts/WeasyPrint changed)"
        return ""


def report_verify(report: Report) -> VerifyOutcome:
    """Check the stored file against its SHA-256 and regenerate it from the same chain head: all three must match.
    A signed file is the rendered bytes plus the signature's incremental update, so the regenerated bytes must be
    its prefix (the signature itself differs every time: its signing time)."""
    path = reports_dir() / report.file_name
    content = path.read_bytes() if path.exists() else b""
    file_sha = hashlib.sha256(content).hexdigest() if path.exists() else ""
    regenerated = render_for(report.change_id, report.head_seq, report.head_hash)
    same = regenerated.sha256 == report.sha256 or (len(content) > len(regenerated.pdf)
                                                   and content.startswith(regenerated.pdf))
    regenerated_sha = report.sha256 if same else regenerated.sha256
    return VerifyOutcome(file_sha == report.sha256 == regenerated_sha, report.sha256, file_sha, regenerated_sha)


def report_download(change: Change, *, actor: Any) -> tuple[Report, bytes]:
    """The stored PDF of a change for ``actor``, generated on demand if the window ended but no report is stored.
    Audited (``report.downloaded``). Raises NotPermitted, ReportNotReady, ReportTampered."""
    authority.may_download_report(actor, change).require()
    report = Report.objects.filter(change=change).first()
    if report is None:
        if _recently_ended(change) and not notifications_settled(change.pk):
            # The end-of-window mail and callback are still going out; the report will list them in a moment.
            raise ReportNotReady(f"the report of {change.number} is being generated; try again in a few seconds",
                                 state=change.state)
        report = report_generate(change.pk)
    path = reports_dir() / report.file_name
    data = path.read_bytes() if path.exists() else b""
    if hashlib.sha256(data).hexdigest() != report.sha256:
        log.error("report of %s: stored file %s does not match its SHA-256", change.number, report.file_name)
        raise ReportTampered(f"the stored report of {change.number} does not match its recorded SHA-256")
    audit.append(actor=actor, action="report.downloaded", obj=change, changes={"sha256": [None, report.sha256]})
    return report, data


def _recently_ended(change: Change) -> bool:
    """Within the first minute after the window ended (after that a stuck notification must not block the report)."""
    run = getattr(change, "run", None)
    ended = run.finished_at if run is not None and run.finished_at else change.updated_at
    return timezone.now() - ended < timedelta(seconds=60)


def notifications_settled(change_id: int) -> bool:
    """True when none of the change's notifications is still waiting to be sent (the app may not be installed)."""
    from django.apps import apps

    if not apps.is_installed("notifications"):
        return True
    delivery = apps.get_model("notifications", "Delivery")
    return not delivery.objects.filter(change_id=change_id, status__in=["pending", "sending"]).exists()
