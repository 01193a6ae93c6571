"""The report proves itself: signed by the report-signing certificate with a time-stamp from a local TSA (a
throw-away PKI made at test time), its evidence inside, verified offline by ``exmaint-verify``; every tamper case is
detected and named."""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from changes.models import AuditEvent, AuditHead
from changes.selectors import audit_events_for
from devtools.pki import LocalTsa, Pki, make_pki
from reports import services, verify
from reports import signing as signing_module
from reports.context import build_report_data
from reports.evidence import dumps, event_record, summary
from reports.render import render_report
from reports.signing import sign_pdf

from .support import SECRET

pytestmark = pytest.mark.django_db


def _use(settings, pki: Pki, tsa_url: str = "") -> None:
    settings.EXMAINT_REPORTS = {"SIGNING_CERT": str(pki.cert), "SIGNING_KEY": str(pki.key),
                                "SIGNING_KEY_PASSWORD": pki.password, "TSA_URL": tsa_url}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), name="exmaint test")


@pytest.fixture
def signing(pki, settings):
    with LocalTsa(pki) as tsa:
        _use(settings, pki, tsa.url)
        yield pki


def _stored(change) -> bytes:
    report = services.report_generate(change.pk)
    return (services.reports_dir() / report.file_name).read_bytes()


def _check(pdf: bytes, pki: Pki) -> verify.Result:
    return verify.verify_report(pdf, [pki.ca.read_bytes()])


def _resigned(change, mutate: Callable[[dict[str, Any]], None] | None = None,
              printed: Callable[[Any], None] | None = None) -> bytes:
    """The change's report with its evidence or its printed figures changed before signing, signed with the trusted
    certificate: only the evidence checks can tell."""
    anchor = AuditHead.objects.get(id=1)
    data = build_report_data(change.pk, head_seq=anchor.seq, head_hash=anchor.hash)
    evidence = json.loads(data.evidence_json)
    if mutate is not None:
        mutate(evidence)
        data.evidence_json = dumps(evidence)
    if printed is not None:
        printed(data)
        data.summary_json = json.dumps(summary(data, json.loads(data.evidence_json)), sort_keys=True)
    return sign_pdf(render_report(data).pdf)


@pytest.mark.parametrize("window_fixture", ["completed", "aborted", "exit_retried"])
def test_a_fresh_signed_report_verifies_offline(window_fixture, request, signing) -> None:
    """Pauses, a skip, an abort, a retried exit with an alert: each report verifies, time-stamp included."""
    change = request.getfixturevalue(window_fixture)
    result = _check(_stored(change), signing)
    assert result.ok, result.text()
    text = result.text()
    assert "signed by" in text and "exmaint test report signing" in text
    assert "time-stamp ok" in text and "exmaint test time-stamping authority" in text
    assert "doc stamp  ok: the whole file time-stamped" in text
    events = list(audit_events_for(change).filter(seq__lte=change.report.head_seq))  # not report.generated
    assert [e["seq"] for e in result.evidence["events"]] == [e.seq for e in events]
    assert "each event links to the change's previous one" in text
    if not result.evidence["anchors"]:  # none written in these tests unless a TSA stamped a window's end
        assert "anchors    none" in text
    assert SECRET not in json.dumps(result.evidence)
    steps = result.evidence["steps"]
    assert len(steps) == change.steps.count() and any(s["decision"] == "skip" or s["decision"] == "abort"
                                                       for s in steps)


def _page_one_stamp(pdf: bytes) -> str:
    """The text drawn in the signature's visible box on page 1 (its appearance streams, nested XObjects included)."""
    import io

    from pypdf import PdfReader

    def streams(obj) -> list[bytes]:
        obj = obj.get_object()
        found = [obj.get_data()] if hasattr(obj, "get_data") else []
        for xobject in (obj.get("/Resources", {}).get_object().get("/XObject", {}) or {}).values():
            found += streams(xobject)
        return found

    page = PdfReader(io.BytesIO(pdf)).pages[0]
    texts = []
    for annot in page.get("/Annots", []):
        annot = annot.get_object()
        if annot.get("/T") == signing_module.FIELD_NAME:  # not the document time-stamp's invisible field
            assert [round(float(v)) for v in annot["/Rect"]] == list(signing_module.STAMP_BOX)
            texts += [data.decode("latin-1") for data in streams(annot["/AP"]["/N"])]
    # PDF string escapes: \ddd (octal) and \( \) \\
    return re.sub(r"\\([0-7]{3}|.)", lambda m: chr(int(m[1], 8)) if len(m[1]) == 3 else m[1], "\n".join(texts))


def test_the_page_says_who_signed_and_the_stored_report_still_regenerates(completed, signing) -> None:
    pdf = _stored(completed)
    assert _check(pdf, signing).ok
    stamp = _page_one_stamp(pdf)
    assert "Signed by" in stamp and "exmaint test report signing" in stamp and "Time:" in stamp
    outcome = services.report_verify(completed.report)  # the rendered bytes are the signed file's prefix
    assert outcome.ok, outcome.problem


def test_one_byte_changed_breaks_the_signature(completed, signing) -> None:
    pdf = bytearray(_stored(completed))
    at = len(pdf) // 4  # inside the signed range (the signature sits at the end, in the incremental update)
    pdf[at] = pdf[at] ^ 0x01
    result = _check(bytes(pdf), signing)
    assert not result.ok
    assert result.problem.startswith("signature invalid"), result.problem


def test_an_update_appended_after_signing_is_not_covered(completed, signing) -> None:
    """An incremental update added to a signed report (here: a changed title) is refused, though every signature
    in the file is still intact for the revision it covers."""
    from io import BytesIO

    from pypdf import PdfWriter

    writer = PdfWriter(BytesIO(_stored(completed)), incremental=True)
    writer.add_metadata({"/Title": "EXM-000001 — nothing to see"})
    out = BytesIO()
    writer.write(out)
    result = _check(out.getvalue(), signing)
    assert not result.ok
    assert "does not cover the whole file" in result.problem, result.problem


def test_altered_evidence_names_the_first_bad_event(completed, signing) -> None:
    events = list(audit_events_for(completed))
    target = events[3]

    def alter(ev: dict[str, Any]) -> None:
        ev["events"][3]["reason"] = "nothing happened here"

    result = _check(_resigned(completed, alter), signing)
    assert not result.ok
    assert result.problem.startswith(f"event #{target.seq} ({target.action}): its content does not match its hash")


def test_a_removed_event_is_named_by_the_next_one(completed, signing) -> None:
    events = list(audit_events_for(completed))

    def remove(ev: dict[str, Any]) -> None:
        del ev["events"][2]

    result = _check(_resigned(completed, remove), signing)
    assert not result.ok
    assert result.problem.startswith(f"event #{events[3].seq} ({events[3].action}) does not link to the change's "
                                     f"previous event: an event of this change between #{events[1].seq} and "
                                     f"#{events[3].seq} is missing"), result.problem


def test_the_last_event_removed_does_not_pass_as_a_shorter_trail(completed, signing) -> None:
    result = _check(_resigned(completed, lambda ev: ev["events"].pop()), signing)
    assert not result.ok and "events were removed from the end" in result.problem


def test_reordered_events_are_named(completed, signing) -> None:
    events = list(audit_events_for(completed))

    def swap(ev: dict[str, Any]) -> None:
        ev["events"][4], ev["events"][5] = ev["events"][5], ev["events"][4]

    result = _check(_resigned(completed, swap), signing)
    assert not result.ok  # the first event out of place is named
    assert result.problem == (f"event #{events[5].seq} ({events[5].action}) does not link to the change's previous "
                              f"event: an event of this change between #{events[3].seq} and #{events[5].seq} is "
                              "missing, or they are reordered")


def test_duplicated_events_are_named(completed, signing) -> None:
    events = list(audit_events_for(completed))

    def duplicate(ev: dict[str, Any]) -> None:
        ev["events"].insert(3, ev["events"][2])

    result = _check(_resigned(completed, duplicate), signing)
    assert not result.ok
    assert result.problem == f"event #{events[2].seq} comes after #{events[2].seq}: the events are out of order"


def test_an_event_of_another_object_is_refused(completed, signing) -> None:
    def smuggle(ev: dict[str, Any]) -> None:
        ev["events"][1]["object_id"] = "999"

    result = _check(_resigned(completed, smuggle), signing)
    assert not result.ok and "is not an event of this change" in result.problem


def test_the_printed_head_changed_is_a_mismatch(completed, signing) -> None:
    def other_head(data) -> None:
        data.head_hash = "f" * 64

    result = _check(_resigned(completed, printed=other_head), signing)
    assert not result.ok
    assert result.problem.startswith("printed report head"), result.problem


def test_a_printed_count_changed_is_a_mismatch(completed, signing) -> None:
    def more_issues(data) -> None:
        data.issue_count += 1

    result = _check(_resigned(completed, printed=more_issues), signing)
    assert not result.ok
    assert result.problem.startswith("printed issues:"), result.problem


def test_a_report_resigned_with_an_untrusted_certificate_is_refused(completed, signing, settings, tmp_path) -> None:
    rogue = make_pki(tmp_path / "rogue", name="rogue")
    _use(settings, rogue)
    result = _check(_resigned(completed), signing)
    assert not result.ok
    assert result.problem == "signature not trusted: the signer 'Common Name: rogue report signing, Organization: " \
                             "exmaint demo' does not chain to the given trust roots" or \
        result.problem.startswith("signature not trusted"), result.problem


def test_an_unsigned_report_does_not_verify(completed, settings, pki) -> None:
    settings.EXMAINT_REPORTS = {"SIGNING_CERT": "", "SIGNING_KEY": "", "SIGNING_KEY_PASSWORD": "", "TSA_URL": ""}
    result = _check(_stored(completed), pki)
    assert not result.ok and result.problem == "the PDF is not signed"


def test_an_anchor_is_checked_with_its_time_stamp_token(completed, signing) -> None:
    """The anchor covering the change's last event (changes.anchors) is embedded with its RFC 3161 token, whose
    imprint is the anchored hash; it verifies offline. A token over another hash does not."""
    from asn1crypto import algos, tsp
    from django.utils import timezone

    from changes.models import AuditAnchor

    with LocalTsa(signing) as tsa:
        def token_for(digest: str) -> bytes:
            request = tsp.TimeStampReq({"version": 1, "message_imprint": tsp.MessageImprint({
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "hashed_message": bytes.fromhex(digest)}), "cert_req": True})
            return tsa.stamper.request_tsa_response(request)["time_stamp_token"].dump()

        head = AuditHead.objects.get(id=1)
        event = AuditEvent.objects.get(seq=head.seq)
        AuditAnchor.objects.create(seq=head.seq, hash=head.hash, event_created_at=event.created_at,
                                   created_at=timezone.now(), reason="window end", sinks=["file"],
                                   tsa_token=token_for(head.hash), tsa_time=timezone.now())
        result = _check(_stored(completed), signing)
        assert result.ok, result.text()
        assert f"anchor     ok: chain head #{head.seq} time-stamped" in result.text()
        assert result.evidence["anchors"][0]["seq"] == head.seq

        def forge(ev: dict[str, Any]) -> None:  # re-signed at the newer head (report.generated): anchor that one
            ev["anchors"] = [{"seq": ev["change_head"]["seq"], "hash": ev["change_head"]["hash"],
                              "token": base64.b64encode(token_for("0" * 64)).decode()}]

        result = _check(_resigned(completed, forge), signing)
        assert not result.ok
        assert result.problem == f"anchor #{AuditHead.objects.get(id=1).seq}: its time-stamp token does not verify"


def test_the_verifier_hashes_as_the_chain_does(completed) -> None:
    """The offline tool's own canonical form gives every stored hash (per-change links included)."""
    events = list(AuditEvent.objects.order_by("seq"))
    assert events and all(verify.event_hash(event_record(ev)) == ev.hash for ev in events)


def test_the_command_line_prints_the_verdict_and_exits_by_it(completed, signing, tmp_path, capsys) -> None:
    good = tmp_path / "report.pdf"
    good.write_bytes(_stored(completed))
    assert verify.main([str(good), "--trust", str(signing.ca)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "VERIFIED"
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(_resigned(completed, lambda ev: ev["events"].pop(2)))
    assert verify.main([str(bad), "--trust", str(signing.ca)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("NOT VERIFIED: event #")
    assert verify.main([str(tmp_path / "missing.pdf"), "--trust", str(signing.ca)]) == 2
    with pytest.raises(SystemExit) as exit_:
        call_command("verify_report", str(bad), "--trust", str(signing.ca))
    assert exit_.value.code == 1


def test_the_verifier_needs_no_django(tmp_path, completed, signing) -> None:
    """Run as an auditor would: a fresh interpreter, no settings, no database."""
    import os
    import subprocess
    import sys

    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(_stored(completed))
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    code = ("import sys; from reports import verify; rc = verify.main(sys.argv[1:]); "
            "assert 'django' not in sys.modules, 'imported Django'; sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, str(pdf), "--trust", str(signing.ca)], env=env,
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("VERIFIED")


@pytest.fixture
def live_service(auditor, monkeypatch):
    """``--against``'s HTTP calls answered by this test's service (the Django test client, the auditor's token)."""
    from rest_framework.test import APIClient

    from tests.support.tokens import api_key

    token = api_key(auditor)
    client = APIClient()

    def get(url: str, headers: dict[str, str], params: dict[str, str] | None = None, timeout: int = 0):
        assert headers["Authorization"] == f"Bearer {token}"
        response = client.get(url.removeprefix("http://exmaint.test"), params or {},
                              HTTP_AUTHORIZATION=headers["Authorization"])
        response.text = response.content.decode()
        response.headers.setdefault("content-type", response["Content-Type"])
        return response

    monkeypatch.setattr("requests.get", get)
    return token


def test_against_the_live_trail(completed, signing, live_service) -> None:
    pdf = _stored(completed)
    result = verify.verify_report(pdf, [signing.ca.read_bytes()], against="http://exmaint.test",
                                  token=live_service)
    assert result.ok, result.text()
    assert "live       ok: the service's trail has the same" in result.text()


def test_against_a_live_trail_that_differs(completed, signing, live_service) -> None:
    """A report whose evidence lost an event (re-signed by a trusted key) is refused by the live comparison too,
    even when the offline checks are blinded: here the whole chain of links is rebuilt around the removed event."""
    events = list(audit_events_for(completed))

    def drop_and_relink(ev: dict[str, Any]) -> None:
        del ev["events"][2]
        ev["events"][2]["change_prev_hash"] = ev["events"][1]["hash"]  # the hash then fails: offline says so first

    result = verify.verify_report(_resigned(completed, drop_and_relink), [signing.ca.read_bytes()],
                                  against="http://exmaint.test", token=live_service)
    assert not result.ok and result.problem.startswith(f"event #{events[3].seq}")


def test_malformed_evidence_is_a_verdict_not_a_crash(completed, signing) -> None:
    result = _check(_resigned(completed, lambda ev: ev.pop("change_head")), signing)
    assert not result.ok and "change head" in result.problem
    result = _check(_resigned(completed, lambda ev: ev.update(events=[{"seq": 1}])), signing)
    assert not result.ok and result.problem == "event #1 is not an event of this change (it is None:None)"
    result = _check(_resigned(completed, lambda ev: ev.pop("report_head")), signing)
    assert not result.ok and "report's head" in result.problem


def test_exmaint_verify_is_a_console_script_of_the_package() -> None:
    import importlib
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    module, _, function = project["scripts"]["exmaint-verify"].partition(":")
    assert getattr(importlib.import_module(module), function) is verify.main
    assert any(dep.startswith("pyhanko>=") for dep in project["dependencies"])
