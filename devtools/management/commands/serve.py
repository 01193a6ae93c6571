"""Run the service: the web server (gunicorn) and a Celery worker with beat, until interrupted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web service and a Celery worker (with beat) together; Ctrl-C stops both."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-worker", action="store_true", help="Only the web service.")

    def handle(self, *args, port: int, host: str, no_worker: bool, **options) -> None:
        from django.conf import settings

        subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], check=True)  # noqa: S603
        procs = [subprocess.Popen([  # noqa: S603 - fixed argv, no shell
            sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"{host}:{port}",
            "--workers", "2", "--access-logfile", "-",
        ])]
        if not no_worker:
            procs.append(subprocess.Popen([  # noqa: S603 - fixed argv, no shell
                sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "--loglevel", "INFO",
                "--concurrency", "2", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"),
            ]))
        self.stdout.write(f"exmaint on http://{host}:{port}/ (API /api/v1/, docs /api/v1/docs/, admin /admin/)")
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while not stopping and all(p.poll() is None for p in procs):
                time.sleep(0.5)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM, None)]
        if failed and not stopping:
            raise SystemExit(1)
