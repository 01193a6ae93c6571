"""The report's signature: PAdES with pyHanko, by the service's report-signing certificate, time-stamped by the TSA
when one is configured (settings.EXMAINT_REPORTS).

The signature is an incremental update: the rendered (deterministic) PDF is the signed file's unchanged prefix, so a
report can still be regenerated from the records and compared (``reports.services.report_verify``). A visible box at
the top right of page 1, where the layout leaves room (``.titleblock`` in report.css), says who signed and when; the
rendered page names no signer, so regenerating a report gives the same bytes after the certificate is rotated.
"""
from __future__ import annotations

from functools import lru_cache
from io import BytesIO
from pathlib import Path

from django.conf import settings

FIELD_NAME = "exmaint-report-signature"
# Page 1's top right inside the margins (A4: 595 x 842 pt; margins 22 mm top, 14 mm right): 74 x 17 mm.
STAMP_BOX = (345, 731, 555, 779)
STAMP_TEXT = "Signed by %(signer)s\nTime: %(ts)s\nexmaint report signature (PAdES)"


def _config() -> dict[str, str]:
    return settings.EXMAINT_REPORTS


def signing_configured() -> bool:
    return bool(_config()["SIGNING_CERT"] and _config()["SIGNING_KEY"])


@lru_cache(maxsize=4)
def _load(cert_path: str, key_path: str, password: str):  # noqa: ANN202 - pyHanko's signer type, imported lazily
    from pyhanko.keys import load_certs_from_pemder_data, load_private_key_from_pemder_data
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    certs = list(load_certs_from_pemder_data(Path(cert_path).read_bytes()))
    if not certs:
        raise ValueError(f"{cert_path} holds no certificate")
    try:
        key = load_private_key_from_pemder_data(Path(key_path).read_bytes(), passphrase=password.encode() or None)
    except (TypeError, ValueError) as exc:  # never the password itself in the message
        raise ValueError(f"the report-signing key {key_path} cannot be read (wrong password?): "
                         f"{type(exc).__name__}") from None
    return signers.SimpleSigner(signing_cert=certs[0], signing_key=key,
                                cert_registry=SimpleCertificateStore.from_certs(certs[1:]))


def _signer():  # noqa: ANN202
    cfg = _config()
    return _load(cfg["SIGNING_CERT"], cfg["SIGNING_KEY"], cfg["SIGNING_KEY_PASSWORD"])


def sign_pdf(pdf: bytes) -> bytes:
    """The PDF signed (PAdES baseline, SHA-256). With ``EXMAINT_TSA_URL`` the signature carries the TSA's time-stamp
    token and a document time-stamp covering the whole signed file follows."""
    from pyhanko import stamp
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers, timestamps

    tsa_url = _config()["TSA_URL"]
    meta = signers.PdfSignatureMetadata(
        field_name=FIELD_NAME, md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES,
        reason="exmaint maintenance window report: issued by the service")
    pdf_signer = signers.PdfSigner(
        meta, signer=_signer(), timestamper=timestamps.HTTPTimeStamper(tsa_url, timeout=30) if tsa_url else None,
        stamp_style=stamp.TextStampStyle(stamp_text=STAMP_TEXT, timestamp_format="%Y-%m-%d %H:%M:%S %Z",
                                         border_width=1),
        new_field_spec=fields.SigFieldSpec(FIELD_NAME, on_page=0, box=STAMP_BOX))
    out = BytesIO()
    pdf_signer.sign_pdf(IncrementalPdfFileWriter(BytesIO(pdf)), output=out)
    if not tsa_url:
        return out.getvalue()
    # And a document time-stamp over the whole signed file (PAdES's DocTimeStamp, its own incremental update).
    stamped = BytesIO()
    signers.PdfTimeStamper(timestamps.HTTPTimeStamper(tsa_url, timeout=30)).timestamp_pdf(
        IncrementalPdfFileWriter(BytesIO(out.getvalue())), "sha256", output=stamped)
    return stamped.getvalue()
