"""The stored report of a finished window: one immutable PDF per change, identified by its SHA-256."""
from __future__ import annotations

from django.db import models

from changes.models import Change


class Report(models.Model):
    """The PDF generated when a change's window ended. Never overwritten: regenerating from the same chain head must
    give the same bytes (``reports.services.report_verify``). ``head_seq``/``head_hash`` name the audit chain head
    the report was built from; the file lives under ``VAR_DIR/reports/<file_name>`` and is read-only."""

    change = models.OneToOneField(Change, on_delete=models.PROTECT, related_name="report")
    file_name = models.CharField(max_length=200, unique=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    pages = models.PositiveIntegerField()
    head_seq = models.PositiveBigIntegerField(help_text="The audit chain head the report was built from.")
    head_hash = models.CharField(max_length=64)
    window_ended_at = models.DateTimeField(help_text="Also the PDF's creation date (fixed, so bytes are stable).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"report of {self.change.number} ({self.sha256[:12]})"
