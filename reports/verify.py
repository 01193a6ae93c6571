"""``exmaint-verify report.pdf --trust ca.pem``: an auditor's offline check of a report, with no database and no
network (``--against`` adds the live service's trail).

In order, stopping at the first thing that does not hold:
1. the PAdES signature: intact, covering the whole file, by a certificate that chains to the given trust roots; its
   RFC 3161 time-stamp (if any) valid and trusted too;
2. the embedded evidence (``exmaint-evidence.json``): every event's hash recomputed from its canonical form, every
   event of the change linked to the change's previous one (a missing, inserted or reordered event is named);
3. the heads and figures printed in the PDF (its ``exmaint-summary`` metadata and its text) against the evidence;
4. the external anchors (RFC 3161 tokens over a chain head) covering the change's last event.

It imports no Django and nothing of the service: the hashing below is written out again on purpose, so the auditor's
tool is an independent reading of the documented canonical form (a test holds it equal to ``changes.audit``).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
EVIDENCE_FILE = "exmaint-evidence.json"
SUMMARY_KEY = "/exmaintsummary"  # WeasyPrint lower-cases the meta name and keeps letters and digits
FORMAT = "exmaint-report-evidence/1"
DECISION_ACTIONS = ("window.retry", "window.skip", "window.abort")
APPROVAL_ACTIONS = ("change.approved", "change.rejected")
_COUNTS = re.compile(r"(\d+)\s*steps?\s*·\s*(\d+)\s*issues?\s*·\s*(\d+)\s*operator\s*decisions?\s*·\s*(\d+)\s*"
                     r"approval\s*decisions?")


class Failed(Exception):
    """The first thing that does not hold, in words."""


@dataclass
class Result:
    ok: bool
    lines: list[str] = field(default_factory=list)  # what was checked, one line each
    problem: str = ""
    evidence: dict[str, Any] | None = None

    def text(self) -> str:
        verdict = "VERIFIED" if self.ok else f"NOT VERIFIED: {self.problem}"
        return "\n".join([*(f"  {line}" for line in self.lines), verdict])


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(event: dict[str, Any]) -> str:
    """SHA-256(prev_hash + "\\n" + canonical JSON of the event's other fields)."""
    body = {k: v for k, v in event.items() if k not in ("prev_hash", "hash")}
    return hashlib.sha256(str(event.get("prev_hash", "")).encode() + b"\n" + canonical(body)).hexdigest()


# --- 1. the signature -----------------------------------------------------------------------------------------------


def _validation_context(trust: Sequence[bytes]):  # noqa: ANN202 - pyHanko types, imported lazily
    from pyhanko.keys import load_certs_from_pemder_data
    from pyhanko_certvalidator import ValidationContext

    roots = [c for pem in trust for c in load_certs_from_pemder_data(pem)]
    if not roots:
        raise Failed("no certificate in the given trust file(s)")
    # Offline: nothing fetched; revocation cannot be checked without the network, so it is not required.
    return ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")


def check_signature(pdf: bytes, trust: Sequence[bytes]) -> list[str]:
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.diff_analysis import ModificationLevel
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    context = _validation_context(trust)
    try:
        reader = PdfFileReader(BytesIO(pdf), strict=False)
        signatures = reader.embedded_regular_signatures
    except Exception as exc:  # noqa: BLE001 - any damage to the file's structure is a broken signature
        raise Failed(f"signature invalid: the file cannot be read as a signed PDF ({type(exc).__name__}: "
                     f"{str(exc)[:120]})") from None
    if not signatures:
        raise Failed("the PDF is not signed")
    sig = signatures[0]
    try:
        status = validate_pdf_signature(sig, context, context)
    except Exception as exc:  # noqa: BLE001
        raise Failed(f"signature invalid: {type(exc).__name__}: {str(exc)[:160]}") from None
    who = status.signing_cert.subject.human_friendly
    if not status.intact:
        raise Failed("signature invalid: the signed bytes were altered (digest mismatch)")
    if not status.valid:
        raise Failed("signature invalid: the signature value does not verify")
    if not status.trusted:
        raise Failed(f"signature not trusted: the signer '{who}' does not chain to the given trust roots")
    doc_stamps = reader.embedded_timestamp_signatures
    if status.coverage != SignatureCoverageLevel.ENTIRE_FILE and not (
            doc_stamps and status.coverage == SignatureCoverageLevel.ENTIRE_REVISION
            and status.modification_level is not None and status.modification_level <= ModificationLevel.LTA_UPDATES):
        raise Failed("signature does not cover the whole file: something was added after signing")
    lines = [f"signature  ok: PAdES, signed by {who}, trusted by the given roots, covers the whole file"
             + (" (save the document time-stamp after it, checked below)" if doc_stamps else "")]
    ts = status.timestamp_validity
    if ts is None:
        lines.append(f"time-stamp none: the signing time {status.signer_reported_dt} is the signer's own claim")
    elif not (ts.intact and ts.valid):
        raise Failed("time-stamp invalid: its token does not verify")
    elif not ts.trusted:
        raise Failed(f"time-stamp not trusted: the TSA '{ts.signing_cert.subject.human_friendly}' does not chain to "
                     "the given trust roots")
    else:
        lines.append(f"time-stamp ok: {ts.timestamp.isoformat()} by {ts.signing_cert.subject.human_friendly}")
    for stamp in doc_stamps:
        lines.append(_check_document_timestamp(stamp, context))
    return lines


def _check_document_timestamp(stamp: Any, context: Any) -> str:
    from pyhanko.sign.validation import validate_pdf_timestamp
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    try:
        status = validate_pdf_timestamp(stamp, context)
    except Exception as exc:  # noqa: BLE001
        raise Failed(f"document time-stamp invalid: {type(exc).__name__}: {str(exc)[:160]}") from None
    tsa = status.signing_cert.subject.human_friendly
    if not (status.intact and status.valid):
        raise Failed("document time-stamp invalid: the time-stamped bytes were altered")
    if not status.trusted:
        raise Failed(f"document time-stamp not trusted: the TSA '{tsa}' does not chain to the given trust roots")
    if status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        raise Failed("document time-stamp does not cover the whole file: something was added after it")
    return f"doc stamp  ok: the whole file time-stamped {status.timestamp.isoformat()} by {tsa}"


# --- 2. the evidence ------------------------------------------------------------------------------------------------


def extract(pdf: bytes) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The embedded evidence, the summary of the printed figures, and the text layer."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(BytesIO(pdf))
        attachments = reader.attachments
        files = attachments.get(EVIDENCE_FILE) or []
        info = reader.metadata or {}
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as exc:  # noqa: BLE001
        raise Failed(f"the PDF cannot be read: {type(exc).__name__}: {str(exc)[:120]}") from None
    if len(files) != 1:
        raise Failed(f"the PDF carries no single {EVIDENCE_FILE} (found {len(files)})")
    try:
        evidence = json.loads(files[0])
    except ValueError as exc:
        raise Failed(f"{EVIDENCE_FILE} is not valid JSON: {exc}") from None
    try:
        summary = json.loads(str(info.get(SUMMARY_KEY, "")))
    except ValueError:
        raise Failed("the PDF's exmaint-summary metadata is missing or not JSON") from None
    if not isinstance(evidence, dict) or evidence.get("format") != FORMAT:
        raise Failed(f"{EVIDENCE_FILE} is not {FORMAT}")
    return evidence, summary, text


def check_events(evidence: dict[str, Any]) -> list[str]:
    """Every hash recomputed; the change's own sequence complete and in order; the heads the evidence states."""
    events = evidence.get("events")
    change_id = str((evidence.get("change") or {}).get("id", ""))
    if not isinstance(events, list) or not events:
        raise Failed("the evidence holds no audit event")
    previous: dict[str, Any] | None = None
    unlinked = 0
    for ev in events:
        if not isinstance(ev, dict) or not isinstance(ev.get("seq"), int):
            raise Failed("an event of the evidence has no sequence number")
        seq = ev["seq"]
        if ev.get("object_type") != "change" or str(ev.get("object_id")) != change_id:
            raise Failed(f"event #{seq} is not an event of this change (it is {ev.get('object_type')}:"
                         f"{ev.get('object_id')})")
        if previous is not None and seq <= previous["seq"]:
            raise Failed(f"event #{seq} comes after #{previous['seq']}: the events are out of order")
        if event_hash(ev) != ev.get("hash"):
            raise Failed(f"event #{seq} ({ev.get('action')}): its content does not match its hash (altered)")
        link = ev.get("change_prev_hash")
        if link is None:
            if previous is not None and previous.get("change_prev_hash") is not None:
                raise Failed(f"event #{seq} has no link to the change's previous event, though earlier ones do")
            unlinked += 1
        else:
            expected = previous["hash"] if previous is not None else GENESIS
            if link != expected:
                what = ("the change's first event is missing" if previous is None else
                        f"an event of this change between #{previous['seq']} and #{seq} is missing, or they are "
                        "reordered")
                raise Failed(f"event #{seq} ({ev.get('action')}) does not link to the change's previous event: {what}")
        previous = ev
    if previous is None:  # for the type checker: the list is not empty
        raise Failed("the evidence holds no audit event")
    head = evidence.get("change_head") or {}
    if (head.get("seq"), head.get("hash"), head.get("events")) != (previous["seq"], previous["hash"], len(events)):
        raise Failed(f"the evidence's change head (#{head.get('seq')}, {head.get('events')} events) is not its last "
                     f"event (#{previous['seq']}, {len(events)} events): events were removed from the end")
    report_head = evidence.get("report_head") or {}
    if not isinstance(report_head.get("seq"), int) or report_head["seq"] < previous["seq"]:
        raise Failed(f"the report's head #{report_head.get('seq')} is before the change's last event "
                     f"#{previous['seq']}")
    if report_head["seq"] == previous["seq"] and report_head.get("hash") != previous["hash"]:
        raise Failed(f"the report's head hash is not the hash of event #{previous['seq']}")
    lines = [f"evidence   ok: {len(events)} events of {evidence['change'].get('number')} (#{events[0]['seq']}…"
             f"#{previous['seq']}), every hash recomputed"]
    if unlinked:
        lines.append(f"sequence   limited: the first {unlinked} event(s) predate the per-change links; their "
                     "completeness is not proven offline (use --against)")
    else:
        lines.append("sequence   ok: each event links to the change's previous one, from the first to the head")
    return lines


def _figures(evidence: dict[str, Any]) -> dict[str, Any]:
    events = evidence["events"]
    return {"steps": len(evidence.get("steps") or []), "issues": len(evidence.get("issues") or []),
            "resolutions": sum(ev.get("action") in DECISION_ACTIONS for ev in events),
            "approvals": sum(ev.get("action") in APPROVAL_ACTIONS for ev in events)}


def check_printed(evidence: dict[str, Any], summary: dict[str, Any], text: str) -> list[str]:
    """The heads and figures the PDF prints (its metadata, then its text) against the evidence."""
    figures = _figures(evidence)
    anomalies = sum(len(s.get("issues") or []) for s in evidence.get("steps") or [])
    listed = sum(i.get("kind") == "anomaly" for i in evidence.get("issues") or [])
    if anomalies != listed:
        raise Failed(f"the evidence lists {listed} anomalies but its step log records {anomalies}")
    if len(evidence.get("approvals") or []) != figures["approvals"]:
        raise Failed(f"the evidence lists {len(evidence.get('approvals') or [])} approvals but its events record "
                     f"{figures['approvals']}")
    for name in ("report_head", "change_head"):
        if summary.get(name) != evidence.get(name):
            raise Failed(f"printed {name.replace('_', ' ')} {summary.get(name)} does not match the evidence "
                         f"{evidence.get(name)}")
    for name, value in figures.items():
        if summary.get(name) != value:
            raise Failed(f"printed {name}: {summary.get(name)}, but the evidence has {value}")
    squeezed = re.sub(r"\s+", "", text)
    text_note = "and the text"
    for name in ("report_head", "change_head"):
        if evidence[name]["hash"] and evidence[name]["hash"] not in squeezed:
            raise Failed(f"the {name.replace('_', ' ')} {evidence[name]['hash']} is not printed in the PDF's text")
    match = _COUNTS.search(text)
    if match is None:
        text_note = "(the text's counts line was not found)"
    else:
        printed = dict(zip(("steps", "issues", "resolutions", "approvals"), map(int, match.groups()), strict=True))
        for name, value in figures.items():
            if printed[name] != value:
                raise Failed(f"the page prints {printed[name]} {name}, but the evidence has {value}")
    counts = ", ".join(f"{name} {value}" for name, value in figures.items())
    return [f"printed    ok: heads and figures ({counts}) match the evidence in the metadata {text_note}"]


# --- 4. anchors -----------------------------------------------------------------------------------------------------


def check_anchors(evidence: dict[str, Any], trust: Sequence[bytes]) -> list[str]:
    """Each anchor covers the change's last event (it is at or after it, up to the report's head) and its RFC 3161
    token, whose message imprint is the anchored event's hash itself, verifies against the trust roots."""
    last = evidence["change_head"]["seq"]
    anchors = evidence.get("anchors") or []
    if not anchors:
        return [f"anchors    none: no external anchor covered event #{last} when the report was made "
                "(check the trail with --against, or verify_audit --anchors on the server)"]
    lines = []
    for anchor in anchors:
        seq, digest = anchor.get("seq"), str(anchor.get("hash", ""))
        if not isinstance(seq, int) or seq < last or seq > evidence["report_head"]["seq"]:
            raise Failed(f"anchor #{seq} does not cover the change's last event #{last} within the report's head")
        if seq == last and digest != evidence["change_head"]["hash"]:
            raise Failed(f"anchor #{seq}: its hash is not the hash of event #{last}")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise Failed(f"anchor #{seq}: its hash is not a SHA-256 hash")
        if not anchor.get("token"):
            lines.append(f"anchor     #{seq} recorded without a time-stamp token: not checkable offline")
            continue
        when = _check_token(base64.b64decode(anchor["token"]), bytes.fromhex(digest), trust, seq)
        lines.append(f"anchor     ok: chain head #{seq} time-stamped {when}")
    return lines


def _check_token(token: bytes, imprint: bytes, trust: Sequence[bytes], seq: int) -> str:
    import asyncio

    from asn1crypto import cms
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data

    try:
        signed_data = cms.ContentInfo.load(token)["content"]
        status = asyncio.run(validate_tst_signed_data(
            signed_data, _validation_context(trust), lambda algo: imprint if algo == "sha256" else b""))
    except Failed:
        raise
    except Exception as exc:  # noqa: BLE001
        raise Failed(f"anchor #{seq}: its time-stamp token cannot be read ({type(exc).__name__})") from None
    if not (status.get("intact") and status.get("valid")):
        raise Failed(f"anchor #{seq}: its time-stamp token does not verify")
    if status.get("validation_path") is None:
        raise Failed(f"anchor #{seq}: its TSA does not chain to the given trust roots")
    return status["timestamp"].isoformat()


# --- --against: the live trail --------------------------------------------------------------------------------------


def check_against(evidence: dict[str, Any], url: str, token: str) -> list[str]:
    import requests

    base = url.rstrip("/")
    if not base.endswith("/api/v1"):
        base += "/api/v1"
    headers = {"Authorization": f"Bearer {token}"}
    head_seq = evidence["report_head"]["seq"]
    live: list[dict[str, Any]] = []
    next_url: str | None = f"{base}/changes/{evidence['change']['id']}/audit/?limit=200"  # the API pages at most 200
    while next_url:
        try:
            response = requests.get(next_url, headers=headers, timeout=30)
        except requests.RequestException as exc:
            raise Failed(f"cannot reach the service at {base}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise Failed(f"the service answered {response.status_code} for the change's trail: "
                         f"{response.text[:200]}")
        page = response.json()
        live += page.get("results", [])
        next_url = page.get("next")
    live = [ev for ev in live if ev["seq"] <= head_seq]
    embedded = {ev["seq"]: ev["hash"] for ev in evidence["events"]}
    for ev in live:
        if embedded.get(ev["seq"]) != ev["hash"]:
            raise Failed(f"event #{ev['seq']} of the live trail is not in the report's evidence as it is")
    if len(live) != len(embedded):
        missing = sorted(set(embedded) - {ev["seq"] for ev in live})
        raise Failed(f"event #{missing[0] if missing else '?'} of the evidence is not on the live trail")
    try:
        check = requests.get(f"{base}/audit/verify/", params={"head": evidence["report_head"]["hash"]},
                             headers=headers, timeout=300)
    except requests.RequestException as exc:
        raise Failed(f"cannot reach the service at {base}: {type(exc).__name__}") from None
    body = check.json() if check.headers.get("content-type", "").startswith("application/json") else {}
    if check.status_code != 200 or not body.get("ok"):
        problem = body.get("problem") or f"HTTP {check.status_code}"
        raise Failed(f"the live chain does not verify with the report's head: {problem}")
    return [f"live       ok: the service's trail has the same {len(live)} events, and the whole chain verifies "
            f"with the report's head #{head_seq}"]


# --- the command ----------------------------------------------------------------------------------------------------


def verify_report(pdf: bytes, trust: Sequence[bytes], *, against: str = "", token: str = "") -> Result:
    result = Result(ok=False)
    try:
        result.lines += check_signature(pdf, trust)
        evidence, summary, text = extract(pdf)
        result.evidence = evidence
        result.lines += check_events(evidence)
        result.lines += check_printed(evidence, summary, text)
        result.lines += check_anchors(evidence, trust)
        if against:
            result.lines += check_against(evidence, against, token)
    except Failed as exc:
        result.problem = str(exc)
        return result
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        # A field missing or of the wrong type in the signed evidence: not what exmaint writes.
        result.problem = f"the evidence is malformed ({type(exc).__name__}: {str(exc)[:120]})"
        return result
    result.ok = True
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exmaint-verify", description="Verify an exmaint report offline: its signature and time-stamp, the "
        "audit evidence inside it, and the heads and figures it prints.")
    parser.add_argument("report", help="the report's PDF")
    parser.add_argument("--trust", action="append", required=True, metavar="PEM",
                        help="trusted root certificate(s): the report-signing CA, and the TSA's (repeatable)")
    parser.add_argument("--against", default="", metavar="URL", help="also compare with the live service's trail")
    parser.add_argument("--token", default="", help="an API token (auditor) for --against")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.against and not args.token:
        print("exmaint-verify: --against needs --token", file=sys.stderr)
        return 2
    try:
        pdf = Path(args.report).read_bytes()
        trust = [Path(p).read_bytes() for p in args.trust]
    except OSError as exc:
        print(f"exmaint-verify: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    result = verify_report(pdf, trust, against=args.against, token=args.token)
    print(f"exmaint-verify: {args.report}")
    print(result.text())
    return 0 if result.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
