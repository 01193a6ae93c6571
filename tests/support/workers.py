"""Real Celery worker processes for the kill tests: each runs against this test session's database, broker and
queue, logs to VAR_DIR, and is killed as a whole process group (the prefork parent and its child)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The test database (test_<name>, made by pytest-django) as a URL a subprocess can use."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Workers:
    """Starts prefork workers (one child each) on the session's queue and remembers them for the teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *, app: str, settings_module: str = "config.test_settings", beat: bool = False,
              **env: str) -> subprocess.Popen:
        """``celery -A <app> worker`` named ``name@host``; ``env`` adds to (or overrides) the worker's environment.
        ``beat``: the worker also runs Celery beat with the project's schedule (as ``manage.py serve`` does)."""
        environment = {
            **os.environ, "DJANGO_SETTINGS_MODULE": settings_module, "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "EXMAINT_TASK_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "EXMAINT_VAR_DIR": str(settings.VAR_DIR), **env,
        }
        # One log per worker, never reused: a failure report shows only this test's workers.
        log = self.log_dir / f"worker-{name}-{uuid.uuid4().hex[:6]}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", settings.CELERY_TASK_DEFAULT_QUEUE,
                 "--pool", "prefork", "-c", "1", "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
                 "-l", "info", *(["--beat", "--schedule", str(self.log_dir / f"beat-{uuid.uuid4().hex[:6]}")]
                                 if beat else [])],
                cwd=ROOT, env=environment, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
            )
        self.started.append((process, log))
        return process

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """SIGKILL the worker and its pool child: no shutdown handler, no message acknowledged, nothing cleaned."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process, _ in self.started:
            self.kill(process)

    def log_of(self, process: subprocess.Popen) -> str:
        """Everything ``process`` (a worker this object started) has logged so far."""
        return next(log for started, log in self.started if started is process).read_text(errors="replace")

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}" for _, log in self.started)

    def wait_for(self, condition: Callable[[], bool], what: str, *, timeout: float = 60,
                 every: Callable[[], Any] | None = None) -> None:
        """Poll ``condition`` (calling ``every`` between polls, e.g. a beat sweep); fail with the workers' logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if every is not None:
                every()
            time.sleep(0.2)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")
