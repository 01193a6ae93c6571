"""A real worker rides out a Redis outage (issue 24, item 1), and `manage.py serve` restarts a worker that died.

The worker holds an unacknowledged ETA message when Redis stops - as an exmaint worker with a held window always
does; before the guard in config/broker_outage.py kombu 5.7 stopped such a worker with
"Unrecoverable error: AttributeError('NoneType' object has no attribute 'hostname')"."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.private_services import free_port

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_SECONDS = 25


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def send_task(broker: str, path: Path, countdown: int = 0) -> None:
    """Queue the test task from a separate process, without the test's CELERY_BROKER_URL (which Celery would prefer
    to the broker argument)."""
    code = ("import sys; from celery import Celery; "
            "Celery(broker=sys.argv[1]).send_task('tests.outage.touch', args=[sys.argv[2]], queue='exmaint', "
            "countdown=int(sys.argv[3]) or None)")
    subprocess.run([sys.executable, "-c", code, broker, str(path), str(countdown)],  # noqa: S603
                   env={k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}, check=True, timeout=60)


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEY",
                        "DJANGO_SETTINGS_MODULE")}
    env.update(DEBUG="true", EXMAINT_VAR_DIR=str(tmp_path), EXMAINT_TASK_QUEUE="exmaint", **extra)
    return env


def test_the_worker_outlives_a_broker_outage_and_runs_a_task_queued_afterwards(tmp_path, own_redis) -> None:
    broker = f"redis://127.0.0.1:{own_redis.port}/0"
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "celery", "-A", "tests.devtools.outage_app", "worker", "--loglevel", "INFO",
         "--concurrency", "1", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=child_env(tmp_path, CELERY_BROKER_URL=broker), stdout=log, stderr=subprocess.STDOUT)
    output = tmp_path / "worker.log"
    try:
        wait_for(lambda: "ready." in output.read_text(), "the worker to start")
        # An ETA message the worker holds unacknowledged through the outage, like a held window's.
        send_task(broker, tmp_path / "later", countdown=900)
        wait_for(lambda: "received" in output.read_text(), "the worker to take the ETA message")
        own_redis.stop()
        wait_for(lambda: "Connection to broker lost" in output.read_text(), "the worker to notice the outage")
        time.sleep(OUTAGE_SECONDS)
        assert worker.poll() is None, output.read_text()
        own_redis.start()
        wait_for(lambda: output.read_text().count("Connected to redis") >= 2, "the worker to reconnect")
        done = tmp_path / "after"
        send_task(broker, done)
        wait_for(done.exists, "the task queued after the outage to run")
        assert worker.poll() is None
        assert "Unrecoverable error" not in output.read_text()
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()


def test_serve_starts_a_new_worker_when_the_worker_dies(tmp_path) -> None:
    """`serve` runs on the embedded defaults (filesystem broker); a killed worker is replaced, the web stays up."""
    env = child_env(tmp_path)
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr
    out = tmp_path / "serve.log"
    with out.open("w") as log:
        serve = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "manage.py", "serve", "--port", str(free_port())],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            def pids() -> list[int]:
                return [int(p) for p in re.findall(r"worker started \(pid (\d+)\)", out.read_text())]

            wait_for(lambda: len(pids()) == 1, "serve to start a worker")
            first = pids()[0]
            time.sleep(3)  # let it get going
            os.kill(first, signal.SIGKILL)
            wait_for(lambda: len(pids()) == 2, "serve to start a new worker", timeout=30)
            assert "worker exited with code -9; restarting it" in out.read_text()
            second = pids()[1]
            assert second != first
            time.sleep(1)
            assert serve.poll() is None, out.read_text()
            os.kill(second, 0)  # the new worker is running (raises if it is gone)
        finally:
            serve.terminate()
            try:
                serve.wait(timeout=40)
            except subprocess.TimeoutExpired:
                serve.kill()
