"""`make demo`'s command, as a new user runs it: a whole window on embedded defaults, ending with a verified PDF."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_completes_a_window_and_verifies_its_report(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "EXMAINT_TASK_QUEUE", "SECRET_KEY",
                        "FIELD_ENCRYPTION_KEY", "DJANGO_SETTINGS_MODULE")}
    env.update(DEBUG="true", EXMAINT_VAR_DIR=str(tmp_path))
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr
    demo = subprocess.run([sys.executable, "manage.py", "demo", "--timeout", "200"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "paused at step" in demo.stdout and "olga skips the drain" in demo.stdout
    assert "EXM-000001 completed" in demo.stdout
    assert "matches the X-Report-SHA256 header" in demo.stdout and "audit chain: ok=True" in demo.stdout
    # Notifications reached the demo's SMTP sink and its ITSM receiver, which verified every signature.
    assert "Approval requested" in demo.stdout and "+ calendar invite" in demo.stdout
    assert "ITSM callbacks (signature verified): 5 (scheduled → running → paused → running → completed); refused: 0" \
        in demo.stdout
    pdf = tmp_path / "EXM-000001-report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    # The demo prints the offline verify command and runs it on its own PDF, signed by its demo certificate.
    assert f"$ exmaint-verify {pdf} --trust {tmp_path / 'pki' / 'ca.pem'}" in demo.stdout
    assert "time-stamp ok" in demo.stdout and "\n   VERIFIED\n" in demo.stdout
    # The demo's password for the simulated servers never reaches the report.
    password = (tmp_path / "simulator-password").read_text().strip()
    from pypdf import PdfReader

    text = "".join(page.extract_text() or "" for page in PdfReader(pdf).pages)
    assert password not in text and "queue drain" in text
    assert "Notifications sent" in text and "Approval request" in text
