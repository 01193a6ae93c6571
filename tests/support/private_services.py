"""A PostgreSQL cluster and a redis-server of the test's own (temporary directory, free port), which a fault test may
stop and start without disturbing anyone else; and a switch of this process's database connection and Celery broker
to them."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb, or the one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` in a temporary directory on a free loopback port, trust authentication, durability off
    (a test database). PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            need_service("PostgreSQL binaries", RuntimeError("no initdb in /usr/lib/postgresql/*/bin or on PATH"))
        self.bin = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="exmaint-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Fast shutdown: every session is terminated ("terminating connection due to administrator command")."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def up(self) -> bool:
        return _listening(self.port)

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server on a free loopback port, no persistence."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            need_service("redis-server", RuntimeError("the redis-server binary is not installed"))
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="exmaint-redis-"))
        self.pidfile = self.dir / "redis.pid"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",  # noqa: S607
                        "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(self.pidfile),
                        "--dir", str(self.dir)], check=True, capture_output=True)
        wait_until(self.up, "redis-server to accept connections", timeout=10)

    def up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(self.pidfile.read_text()), signal.SIGTERM)
            wait_until(lambda: not self.up(), "redis-server to stop", timeout=10)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def database_switched_to(url: str) -> Iterator[None]:
    """This process's default database connection (every thread's) points at ``url`` until the block ends."""
    import dj_database_url
    from django.db import connections

    def reset() -> None:
        with contextlib.suppress(Exception):
            connections["default"].close()
        with contextlib.suppress(AttributeError):
            delattr(connections._connections, "default")

    original = connections.settings["default"]
    reset()
    connections.settings["default"] = {**original, **dj_database_url.parse(url), "TEST": original.get("TEST", {}),
                                       "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": True, "OPTIONS": {}}
    try:
        yield
    finally:
        reset()
        connections.settings["default"] = original


@contextlib.contextmanager
def broker_switched_to(url: str) -> Iterator[None]:
    """This process's Celery app sends to ``url`` until the block ends (the pools are rebuilt on first use)."""
    from celery import current_app

    conf = current_app.conf
    saved: dict[str, Any] = {"broker_url": conf.broker_url, "broker_write_url": conf.broker_write_url,
                             "broker_transport_options": conf.broker_transport_options}

    def reset_pools() -> None:
        # Forget the app's pools, never close them: kombu shares a pool per broker URL, and closing it breaks every
        # later test in this process that sends a task ("Acquire on closed pool").
        current_app._pool = None
        current_app.amqp._producer_pool = None

    # Celery reads CELERY_BROKER_URL from the environment before its configuration.
    environ = {key: os.environ.pop(key) for key in ("CELERY_BROKER_URL", "CELERY_BROKER_WRITE_URL")
               if key in os.environ}
    reset_pools()
    conf.broker_url, conf.broker_write_url = url, None
    conf.broker_transport_options = {"visibility_timeout": 43200}
    try:
        yield
    finally:
        reset_pools()
        for key, value in saved.items():
            setattr(conf, key, value)
        os.environ.update(environ)


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own (never the shared one), started; the test may stop and start it."""
    server = PrivateRedis()
    server.start()
    yield server
    server.destroy()
