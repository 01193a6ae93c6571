"""The main job, end to end, on embedded defaults: a simulated Exchange organisation served over WinRM/PSRP, a
Celery worker, the web service — and the real users, through the HTTP API:

1. an operator registers the servers; an ITSM integration posts a normal, medium-risk change for EX01;
2. two approvers approve it; the worker starts the window on its own at window_start;
3. the simulator has a stuck queue (fault ``queue-stuck``): the window pauses, and the operator skips the drain with
   a reason, as an Exchange administrator would for mail that waits for an external domain;
4. the operator reports the work done; the exit and the verification run;
5. an auditor downloads the PDF, checks its SHA-256 and verifies the audit chain head printed in it; then, as an
   auditor would a year later with only the file, runs ``exmaint-verify`` on it offline (the report is signed by a
   demo report-signing certificate and time-stamped by a local TSA, both made for the run under var/demo/pki).

Along the way exmaint notifies people — approval requests, the announcement with a calendar invite, the start, the
pause alert, the end — into a local SMTP sink the demo starts, and POSTs each state change, signed, to a local ITSM
callback receiver that checks the signature.

Exit code 0 only if the window completed and the report verifies. Everything started is stopped at the end.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from changes import tokens
from changes.models import ApiClient
from devtools.pki import LocalTsa, make_pki
from devtools.sinks import CallbackReceiver, MailSink
from notifications.secrets import callback_secret_rotate

SPEED = 60  # the simulated Exchange and the engine both run 60× faster than real time
FAULT = "queue-stuck@EX01"
# `make demo-install`: CU15 from the share onto the DAG member EX02, AD already prepared for it.
INSTALL_WORK = {"kind": "exchange-update", "target_build": "15.2.1748.10", "ad_prepared": True,
                "package": {"kind": "cu", "path": "\\\\files.contoso.com\\exchange\\CU15"}}
IDENTITIES = {  # name: (roles, source)
    "servicenow": (["requester"], "servicenow"),
    "alice": (["approver"], ""),
    "bob": (["approver"], ""),
    "olga": (["operator"], ""),
    "audrey": (["auditor"], ""),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Command(BaseCommand):
    help = "Run a full maintenance window against a simulated Exchange server, ending with a verified PDF report."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--timeout", type=int, default=240, help="seconds before the demo gives up")
        parser.add_argument("--install", action="store_true",
                            help="the change installs Exchange 2019 CU15 on the DAG member EX02 unattended "
                                 "(work exchange-update) instead of holding for the operator")

    def handle(self, *args: Any, timeout: int, **options: Any) -> None:
        self.install = bool(options.get("install"))
        self.deadline = time.monotonic() + timeout
        self.procs: list[subprocess.Popen] = []
        self.var = Path(settings.VAR_DIR)
        try:
            ok = self._run()
        finally:
            self._stop_all()
        if not ok:
            raise CommandError("the demo did not end with a completed window and a verified report")

    # --- orchestration ----------------------------------------------------------------------------------------------

    def _run(self) -> bool:
        sim_port, web_port, smtp_port, itsm_port = free_port(), free_port(), free_port(), free_port()
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP line at INFO
        self.mail = MailSink(smtp_port)
        self.mail.start()
        self.itsm = CallbackReceiver(itsm_port)
        self.itsm.start()
        password = secrets.token_urlsafe(16)
        password_file = self.var / "simulator-password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        env = {**os.environ, "EXMAINT_RUNNER_CLOCK": f"scaled:{SPEED}", "EMAIL_HOST": "127.0.0.1",
               "EMAIL_PORT": str(smtp_port), "DEFAULT_FROM_EMAIL": "exmaint <exmaint@contoso.com>",
               "EXMAINT_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
               # The demo's ITSM receiver listens on loopback, which callbacks may not reach by default.
               "EXMAINT_CALLBACK_ALLOWED_NETWORKS": "127.0.0.1/32"}
        os.environ["EXMAINT_CALLBACK_ALLOWED_NETWORKS"] = env["EXMAINT_CALLBACK_ALLOWED_NETWORKS"]
        # Reports are signed: a demo CA and report-signing certificate made for this run (never for production),
        # and a local RFC 3161 time-stamping authority.
        self.pki = make_pki(self.var / "pki")
        self.tsa = LocalTsa(self.pki).__enter__()
        env.update(EXMAINT_REPORT_SIGNING_CERT=str(self.pki.cert), EXMAINT_REPORT_SIGNING_KEY=str(self.pki.key),
                   EXMAINT_REPORT_SIGNING_KEY_PASSWORD=self.pki.password, EXMAINT_TSA_URL=self.tsa.url)
        self._say(f"generated a demo report-signing certificate and its CA into {self.pki.ca.parent} (demo only); "
                  f"a local time-stamping authority on {self.tsa.url}")
        self._say(f"starting the simulated Exchange (EX01 standalone; DAG1: EX02, EX03, EX04; fault {FAULT}) "
                  f"on 127.0.0.1:{sim_port}")
        self._spawn("simulator", [sys.executable, "manage.py", "simulate_exchange", "--port", str(sim_port),
                                  "--standalone", "EX01", "--dag", "DAG1:EX02,EX03,EX04", "--fault", FAULT,
                                  "--user", "exmaint-svc", "--password-file", str(password_file),
                                  "--speed", str(SPEED)], env)
        self._say("starting a Celery worker (with beat) and the web service")
        self._spawn("worker", [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "--concurrency",
                               "2", "--loglevel", "WARNING", "--schedule", str(self.var / "celerybeat-schedule")], env)
        self._spawn("web", [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind",
                            f"127.0.0.1:{web_port}", "--workers", "2", "--log-level", "warning"], env)
        self.api = f"http://127.0.0.1:{web_port}/api/v1"
        tokens = {name: self._identity(name, *spec) for name, spec in IDENTITIES.items()}
        # Shown once at creation, as create_api_client prints it; the ITSM keeps it to verify our callbacks.
        self.itsm.secret = callback_secret_rotate(get_user_model().objects.get(username="servicenow").api_client,
                                                  actor="system:demo")
        self.http = {name: requests.Session() for name in tokens}
        for name, session in self.http.items():
            session.headers["Authorization"] = f"Token {tokens[name]}"
        self._wait("the web service", lambda: self._get_status("/healthz") == 200, timeout=60)
        self._wait("the simulator", lambda: self._port_open(sim_port), timeout=30)

        self._say("\n== the operator registers the servers (passwords are write-only)")
        for name, dag in (("EX01", None), ("EX02", "DAG1"), ("EX03", "DAG1"), ("EX04", "DAG1")):
            self._call("olga", "post", "/servers/", 201, json={
                "name": name, "fqdn": f"{name.lower()}.contoso.com", "dag_name": dag, "ad_site": "Default-Site",
                "version": "Exchange Server 2019 CU14", "build": "15.2.1544.4", "auth_method": "basic",
                "endpoint_url": f"http://127.0.0.1:{sim_port}/{name}/PowerShell",
                "winrm_url": f"http://127.0.0.1:{sim_port}/{name}/wsman",
                "username": "exmaint-svc", "password": password,
                # The account Exchange setup runs as (a domain account in Organization Management).
                **({"install_username": "CONTOSO\\exinstall", "install_password": secrets.token_urlsafe(16)}
                   if self.install else {}),
            })

        target = "EX02" if self.install else "EX01"
        self._say(f"== the ITSM posts a normal, medium-risk change for {target}"
                  + (" that installs CU15 itself (work: exchange-update)" if self.install else ""))
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=15)
        change = self._call("servicenow", "post", "/changes/", 201, json={
            "source": "servicenow", "external_ref": f"CHG{datetime.now(UTC):%Y%m%d%H%M%S}",
            "title": f"Install Exchange 2019 CU15 on {target}", "description": "Quarterly cumulative update.",
            "change_type": "normal", "risk": "medium", "impact": "medium", "servers": [target],
            **({"work": INSTALL_WORK} if self.install else {}),
            "window_start": start.isoformat(), "window_end": (start + timedelta(hours=4)).isoformat(),
            "requested_by": "carol@contoso.com", "notify": ["exchange-team@contoso.com", "helpdesk@contoso.com"],
            "callback_url": f"http://127.0.0.1:{itsm_port}/api/now/exmaint/callback",
        })
        cid, number = change["id"], change["number"]
        self._say(f"   {number}: {change['state']}, needs {change['approvals_required']} approvals")
        dry = self._call("olga", "post", f"/changes/{cid}/dry-run/", 200)
        self._say(f"   dry run: {len(dry['plan']['steps'])} steps planned; pre-checks: "
                  + ", ".join(f"{p['key']}={p['status']}" for p in dry["prechecks"]))
        self._wait("the approval requests", lambda: any("Approval requested" in self._subject(m)
                                                        for _, m in self.mail.messages), timeout=60)
        asked = sorted({r for rcpts, m in self.mail.messages if "Approval requested" in self._subject(m)
                        for r in rcpts})
        self._say(f"   approval requested by mail from {', '.join(asked)} (never from the requester)")
        for approver, comment in (("alice", "CU15 tested in the lab; rollback plan reviewed"),
                                  ("bob", "OK for tonight's window")):
            state = self._call(approver, "post", f"/changes/{cid}/approve/", 200, json={"comment": comment})["state"]
            self._say(f"   {approver} approves → {state}")

        self._say(f"== the window opens at {start:%H:%M:%S} UTC; the worker starts it on its own")
        if self.install:
            self._watch_install(cid)
        else:
            self._operator_hold(cid)
        final = self._wait_state(cid, {"completed", "aborted"}, "the exit and the verification")
        steps = self._call("audrey", "get", f"/changes/{cid}/steps/", 200)
        issues = sum(len(s["issues"]) for s in steps)
        decisions = sum(1 for s in steps if s["decision"])
        self._say(f"   {number} {final['state']}: {len(steps)} steps, {issues} issue(s) recorded, "
                  f"{decisions} operator decision(s)")
        if final["state"] != "completed":
            return False

        self._say("== the auditor downloads the report and verifies it")
        response = self._wait_report(cid)
        body = response.content
        sha = hashlib.sha256(body).hexdigest()
        pdf_path = self.var / f"{number}-report.pdf"
        pdf_path.write_bytes(body)
        head = self._head_in_pdf(body)
        verify = self._call("audrey", "get", "/audit/verify/", 200, params={"head": head})
        sha_ok = sha == response.headers.get("X-Report-SHA256") == response.headers.get("ETag", "").strip('"')
        self._say(f"   SHA-256 {sha} {'matches' if sha_ok else 'DOES NOT MATCH'} the X-Report-SHA256 header")
        self._say(f"   chain head printed in the report: {head}")
        self._say(f"   audit chain: ok={verify['ok']}, {verify['events']} events, head {verify['head'][:16]}…; "
                  f"offline: python manage.py verify_audit --head {head}")
        offline_ok = self._verify_offline(pdf_path)
        self._notifications_summary(cid)
        self._say(f"\nReport: {pdf_path}")
        return bool(sha_ok and verify["ok"] and offline_ok)

    def _verify_offline(self, pdf_path: Path) -> bool:
        """What an auditor runs with only the file: no database, no network (a fresh interpreter, no settings)."""
        self._say("== the auditor verifies the PDF offline (signature, time-stamp, the evidence inside, the figures)")
        self._say(f"   $ exmaint-verify {pdf_path} --trust {self.pki.ca}")
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
        argv = [sys.executable, "-m", "reports.verify", str(pdf_path), "--trust", str(self.pki.ca)]
        run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)  # noqa: S603
        for line in (run.stdout + run.stderr).splitlines()[1:]:
            self._say(f"   {line}")
        # And against the live service's trail, with the auditor's token.
        base = self.api.removesuffix("/api/v1")
        self._say(f"   $ exmaint-verify {pdf_path.name} --trust … --against {base} --token <audrey's token>")
        token = self.http["audrey"].headers["Authorization"].split()[-1]
        live = subprocess.run([*argv, "--against", base, "--token", token], capture_output=True, text=True,  # noqa: S603
                              env=env, timeout=300, check=False)
        for line in (live.stdout + live.stderr).splitlines():
            if line.strip().startswith(("live", "VERIFIED", "NOT VERIFIED")):
                self._say(f"   {line}")
        return run.returncode == 0 and live.returncode == 0

    def _operator_hold(self, cid: int) -> None:
        paused = self._wait_state(cid, {"paused"}, "the window to pause on the stuck queue")
        step = paused["current_step"]
        self._say(f"   paused at step {step['order']} ({step['name']}): {step['error']}")
        reason = ("3 messages wait for fabrikam.com (Retry, 451 4.4.0); they stay in the queue database and "
                  "resume after the window")
        self._call("olga", "post", f"/changes/{cid}/resume/", 200, json={"action": "skip", "reason": reason})
        self._say(f"   olga skips the drain: {reason}")
        self._wait(
            "the work phase",
            lambda: (self._detail(cid).get("current_step") or {}).get("key") == "work.hold",
        )
        self._say("== in maintenance; the operator installs the CU and reports the work done")
        self._call("olga", "post", f"/changes/{cid}/work-done/", 200,
                   json={"notes": "CU15 installed (setup exit code 0); server rebooted; build 15.2.1748.10"})

    def _watch_install(self, cid: int) -> None:
        """Nobody acts: print the install's live progress (the change's ``install``) until the window ends."""
        seen: tuple = ()

        def progress() -> bool:
            detail = self._detail(cid)
            for server, install in (detail.get("install") or {}).items():
                now = (install.get("phase"), install.get("result"), install.get("build_after"))
                nonlocal seen
                if now != seen:
                    seen = now
                    self._say(f"   {server}: setup phase {install.get('phase') or '—'}, "
                              f"{(install.get('elapsed_seconds') or 0) / 60:.0f} min simulated"
                              + (f", result {install['result']}" if install.get("result") else "")
                              + (f", build {install['build_after']}" if install.get("build_after") else ""))
            return detail["state"] in ("completed", "aborted", "paused")

        self._wait("the unattended install", progress)

    def _notifications_summary(self, cid: int) -> None:
        # Callbacks and mails of the last transitions may still be on their way: wait for the outbox to empty.
        def settled() -> bool:
            rows = self._call("audrey", "get", f"/changes/{cid}/deliveries/", 200)
            rows = rows["results"] if isinstance(rows, dict) else rows
            return all(r["status"] in ("sent", "failed", "cancelled") for r in rows)

        self._wait("the notifications to be delivered", settled, timeout=60)
        self._say("== notifications")
        for rcpts, message in self.mail.messages:
            invite = next((p.get_content_type() for p in message.walk() if p.get_content_type() == "text/calendar"),
                          "")
            self._say(f"   mail: {self._subject(message)} → {len(rcpts)} recipient(s)"
                      + (" + calendar invite" if invite else ""))
        # What a reader sees first: the window in the organisation's time zone (and UTC) and the change page link.
        for line in self._text_lines(self.mail.messages[0][1] if self.mail.messages else None):
            if line.startswith(("Window:", "The change:")):
                self._say(f"     {line}")
        states = " → ".join(c.get("new_state", "?") for c in self.itsm.accepted)
        self._say(f"   ITSM callbacks (signature verified): {len(self.itsm.accepted)} ({states}); "
                  f"refused: {self.itsm.refused}")

    # --- helpers ----------------------------------------------------------------------------------------------------

    def _identity(self, name: str, roles: list[str], source: str) -> str:
        user, _ = get_user_model().objects.get_or_create(username=name, defaults={"email": f"{name}@contoso.com"})
        user.groups.set(Group.objects.filter(name__in=roles))
        ApiClient.objects.get_or_create(user=user, defaults={"source": source})
        # Keys are stored hashed and shown once: each demo run issues its identities fresh ones.
        return tokens.token_issue(user, actor="system:demo").key

    def _spawn(self, label: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.var / f"demo-{label}.log", "w")  # noqa: SIM115 - closed with the process at the end
        # A process group of its own: stopping it stops its children too (gunicorn and celery fork workers).
        self.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                           start_new_session=True))

    @staticmethod
    def _text_lines(message: Any) -> list[str]:
        part = next((p for p in message.walk() if p.get_content_type() == "text/plain"), None) if message else None
        if part is None:
            return []
        return part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8", "replace").splitlines()

    @staticmethod
    def _subject(message: Any) -> str:
        return " ".join(str(message["Subject"] or "").split())  # unfold long header lines

    def _stop_all(self) -> None:
        if getattr(self, "tsa", None) is not None:
            self.tsa.__exit__(None, None, None)
        for sink in (getattr(self, "mail", None), getattr(self, "itsm", None)):
            if sink is not None:
                sink.stop()
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.procs:
            self._say("stopped the simulator, the worker and the web service")

    def _say(self, text: str) -> None:
        self.stdout.write(text)

    def _port_open(self, port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _get_status(self, path: str) -> int:
        try:
            return requests.get(self.api.replace("/api/v1", "") + path, timeout=5).status_code
        except requests.RequestException:
            return 0

    def _call(self, who: str, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = getattr(self.http[who], method)(self.api + path, timeout=60, **kwargs)
        if response.status_code != expect:
            raise CommandError(f"{who}: {method.upper()} {path} answered {response.status_code}: "
                               f"{response.text[:500]}")
        return response.json()

    def _detail(self, cid: int) -> dict[str, Any]:
        return self._call("olga", "get", f"/changes/{cid}/", 200)

    def _wait(self, what: str, done: Callable[[], Any], *, timeout: float | None = None) -> Any:
        until = min(self.deadline, time.monotonic() + timeout) if timeout else self.deadline
        while time.monotonic() < until:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise CommandError(f"a demo process exited early (code {proc.returncode}); "
                                       f"see {self.var}/demo-*.log")
            result = done()
            if result:
                return result
            time.sleep(0.3)
        raise CommandError(f"timed out waiting for {what}; logs in {self.var}/demo-*.log")

    def _wait_state(self, cid: int, states: set[str], what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            detail = self._detail(cid)
            return detail if detail["state"] in states else None

        return self._wait(what, check)

    def _wait_report(self, cid: int) -> requests.Response:
        def check() -> requests.Response | None:
            response = self.http["audrey"].get(f"{self.api}/changes/{cid}/report/", timeout=120)
            return response if response.status_code == 200 else None

        return self._wait("the report", check)

    def _head_in_pdf(self, body: bytes) -> str:
        from pypdf import PdfReader

        text = "".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(body)).pages)
        match = re.search(r"verify_audit\s+--head\s+([0-9a-f]{64})", text) or re.search(r"\b([0-9a-f]{64})\b", text)
        if match is None:
            raise CommandError("no chain head found in the report")
        return match.group(1)
