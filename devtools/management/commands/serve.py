"""Run the service: the web server (gunicorn) and a Celery worker with beat, until interrupted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

RESTART_DELAY_MIN = 2.0  # seconds before a dead worker is started again
RESTART_DELAY_MAX = 60.0


class Command(BaseCommand):
    help = "Run the web service and a Celery worker (with beat) together; Ctrl-C stops both."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-worker", action="store_true", help="Only the web service.")

    def handle(self, *args, port: int, host: str, no_worker: bool, **options) -> None:
        from django.conf import settings

        subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], check=True)  # noqa: S603
        web_argv = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"{host}:{port}",
                    "--workers", "2", "--access-logfile", "-"]
        worker_argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "--loglevel", "INFO",
                       "--concurrency", "2", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")]
        web = subprocess.Popen(web_argv)  # noqa: S603 - fixed argv, no shell
        worker = None if no_worker else self._start_worker(worker_argv)
        self.stdout.write(f"exmaint on http://{host}:{port}/ (API /api/v1/, docs /api/v1/docs/, admin /admin/)")
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # A worker (with its beat) that dies - a broker outage it could not ride out, the OOM killer - is started
        # again, so windows resume instead of the whole service stopping until a person notices. The delay grows
        # while it keeps dying quickly (a broken configuration), so a crash loop does not spin.
        delay = RESTART_DELAY_MIN
        started = time.monotonic()
        try:
            while not stopping and web.poll() is None:
                time.sleep(0.5)
                if worker is None or worker.poll() is None or stopping:
                    continue
                lived = time.monotonic() - started
                delay = RESTART_DELAY_MIN if lived > RESTART_DELAY_MAX else min(delay * 2, RESTART_DELAY_MAX)
                self.stderr.write(f"worker exited with code {worker.returncode}; restarting it in {delay:.0f} s")
                deadline = time.monotonic() + delay
                while not stopping and time.monotonic() < deadline:
                    time.sleep(0.5)
                if not stopping:
                    worker = self._start_worker(worker_argv)
                    started = time.monotonic()
        finally:
            procs = [p for p in (web, worker) if p is not None]
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        if web.returncode not in (0, -signal.SIGTERM, None) and not stopping:
            raise SystemExit(1)

    def _start_worker(self, argv: list[str]) -> subprocess.Popen:
        worker = subprocess.Popen(argv)  # noqa: S603 - fixed argv, no shell
        self.stdout.write(f"worker started (pid {worker.pid})")
        self.stdout.flush()
        return worker
