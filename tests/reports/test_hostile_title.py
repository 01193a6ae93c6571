"""Issue 13 D12: the PDF report renders a hostile title (line breaks, markup, quotes, non-ASCII, 200 characters)
as text, and its download headers stay clean."""
from __future__ import annotations

import pytest

from changes.models import Change
from reports import services

from .test_pdf_and_storage import pdf_text, squash, stored_bytes

pytestmark = pytest.mark.django_db

TITLES = [
    "Patch EX01\r\nBcc: victim@evil.example\r\n\r\n<b>bold</b> <script>alert(1)</script>",
    "Mise à jour d’Exchange – Größe \"quoted\" 'single' & ; , :",
    "Exchange 2019 CU15 " + "y" * 181,
]


@pytest.mark.parametrize("title", TITLES)
def test_the_report_renders_a_hostile_title_as_text(completed, auditor, api, title) -> None:
    Change.objects.filter(pk=completed.pk).update(title=title)
    report = services.report_generate(completed.pk)
    text = squash(pdf_text(stored_bytes(report)))
    assert squash(title)[:80] in text.replace("\u2019", "’")
    res = api(auditor).get(f"/api/v1/changes/{completed.pk}/report/")
    assert res.status_code == 200
    for name, value in res.items():
        assert "\n" not in value and "\r" not in value, name
    assert res["Content-Disposition"] == f'attachment; filename="{completed.number}-report.pdf"'
