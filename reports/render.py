"""The report's HTML (a Django template with print CSS) and its PDF (WeasyPrint), both deterministic.

Same ``ReportData`` → same HTML → same PDF bytes. WeasyPrint would otherwise vary the output only through metadata:
the creation/modification dates are taken from the HTML's ``dcterms.created``/``dcterms.modified`` meta elements
(set to the window's end), and the file identifier from ``pdf_identifier`` (derived from the change and the chain
head). Fonts come from the system's fontconfig, so the bytes are stable on one installation (a different font
package may change them; ``report_verify`` then says so rather than guessing).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.template.loader import render_to_string

from .context import ReportData
from .evidence import FILE_NAME

# WeasyPrint logs every layout step and page at INFO; the project's root logger is at INFO.
logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
# Without HarfBuzz's subsetter (libharfbuzz-subset0, absent from some installations) WeasyPrint subsets fonts with
# fontTools, which stamps the current time into each embedded font's 'head' table unless SOURCE_DATE_EPOCH says
# otherwise (reproducible-builds.org). A fixed date keeps the bytes stable; the font's own date means nothing here.
os.environ.setdefault("SOURCE_DATE_EPOCH", "946684800")  # 2000-01-01T00:00:00Z

TEMPLATE = "reports/report.html"
CSS_PATH = Path(__file__).resolve().parent / "templates" / "reports" / "report.css"


@dataclass(frozen=True)
class RenderedPdf:
    pdf: bytes
    pages: int
    sha256: str


def render_html(data: ReportData) -> str:
    """The report as a self-contained HTML document (the print CSS inlined)."""
    return render_to_string(TEMPLATE, {"r": data, "css": CSS_PATH.read_text(encoding="utf-8")})


def pdf_identifier(data: ReportData) -> bytes:
    return hashlib.sha256(f"{data.number}\n{data.head_hash}".encode()).hexdigest()[:32].encode()


def render_pdf(html: str, *, identifier: bytes, evidence_json: str = "", dated: datetime | None = None) -> RenderedPdf:
    """HTML → PDF with WeasyPrint. Nothing is fetched: the document has no external resources. ``evidence_json``
    is embedded as the file ``exmaint-evidence.json`` (an associated file, relationship Data), dated ``dated`` so the
    bytes stay stable; the HTML's ``exmaint-summary`` meta element becomes a document information entry."""
    from weasyprint import HTML, Attachment  # imported here: it loads Pango/fonts, which only reports need

    attachments = []
    if evidence_json:
        attachments.append(Attachment(
            string=evidence_json.encode(), url_fetcher=_no_fetch, name=FILE_NAME, relationship="Data",
            description="exmaint evidence: the change's audit events as hashed, its step log, anchors",
            created=dated, modified=dated))
    document = HTML(string=html, base_url=None, url_fetcher=_no_fetch).render()
    pdf = document.write_pdf(pdf_identifier=identifier, attachments=attachments, custom_metadata=True)
    return RenderedPdf(pdf=pdf, pages=len(document.pages), sha256=hashlib.sha256(pdf).hexdigest())


def render_report(data: ReportData) -> RenderedPdf:
    return render_pdf(render_html(data), identifier=pdf_identifier(data), evidence_json=data.evidence_json,
                      dated=data.ended_at)


def _no_fetch(url: str, *args: object, **kwargs: object) -> dict:
    # The report embeds everything; any URL in it is a mistake (or data trying to make the worker fetch something).
    raise ValueError(f"the report fetches no external resource ({url[:80]})")
