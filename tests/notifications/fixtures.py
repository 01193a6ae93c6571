"""Shared fixtures: a real SMTP server (aiosmtpd) and a real HTTP receiver on 127.0.0.1, changes, a dispatcher."""
from __future__ import annotations

import email
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from changes import services
from changes.models import Change
from exchange_sim.model import SimulatedExchange
from exchange_sim.session import SimulatorSession
from notifications import dispatch
from notifications.models import Delivery
from tests.conftest import window
from tests.support.catalogue import pre_approved

logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection at INFO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    envelope_from: str
    rcpt_tos: list[str]
    message: Message
    raw: bytes = b""  # the bytes as they came over SMTP, for strict parsing
    mail_options: list[str] = field(default_factory=list)  # the MAIL FROM parameters (BODY=8BITMIME, ...)

    @property
    def message_id(self) -> str:
        return self.message["Message-ID"]


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        if self.sink.refuse:
            return self.sink.refuse
        self.sink.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                           email.message_from_bytes(envelope.content, policy=default_policy),
                                           bytes(envelope.original_content or envelope.content),
                                           list(envelope.mail_options)))
        return "250 Message accepted for delivery"


@dataclass
class SmtpSink:
    """A real SMTP server on 127.0.0.1; ``start()``/``stop()`` simulate an outage."""

    port: int
    messages: list[Received] = field(default_factory=list)
    controller: Controller | None = None
    refuse: str = ""  # an SMTP reply to give every message instead of accepting it, e.g. "554 5.6.0 rejected"

    def start(self) -> None:
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpt_tos]


@pytest.fixture
def smtp_port(settings) -> int:
    port = free_port()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "exmaint <exmaint@example.com>"
    return port


@pytest.fixture
def smtp(smtp_port) -> Iterator[SmtpSink]:
    sink = SmtpSink(smtp_port)
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(autouse=True)
def notification_settings(settings) -> dict[str, Any]:
    settings.EXMAINT_NOTIFICATIONS = {"CALLBACK_ALLOWED_NETWORKS": ["127.0.0.1/32"], "BATCH_SIZE": 10,
                                      "PUBLIC_URL": "https://exmaint.example.com"}
    settings.DEFAULT_FROM_EMAIL = "exmaint <exmaint@example.com>"
    return settings.EXMAINT_NOTIFICATIONS


@dataclass
class HttpReceiver:
    """A real HTTP server on 127.0.0.1 answering the scripted statuses in turn (then 200), recording requests."""

    statuses: list[int]
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/itsm/callback?tenant=1"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    state = HttpReceiver(statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(({k: v for k, v in self.headers.items()}, body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class SimSessions:
    """``runner.sessions.open_sessions`` for one simulated server, in-process."""

    def __init__(self, sim: SimulatedExchange, name: str) -> None:
        self.session = SimulatorSession(sim, name)

    def __call__(self, endpoint: Any) -> SimulatorSession:
        return self.session

    def close(self) -> None:
        pass


def sim_factory(sim: SimulatedExchange) -> Callable[[Any], SimSessions]:
    return lambda server: SimSessions(sim, server.name)


def create(requester, *, ref: str = "CHG0040001", hours: float = 0.0, change_type: str = "normal",
           risk: str = "low", notify: tuple[str, ...] = ("exchange-team@example.com", "helpdesk@example.com"),
           callback_url: str = "", servers: tuple[str, ...] = ("EX01",),
           requested_by: str = "carol@example.com", affected: bool = False) -> Change:
    start, end = window(hours)
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": ref, "title": "Install CU15", "description": "",
        "change_type": change_type, "risk": risk, "impact": "medium", "servers": list(servers),
        "plan": "maintenance", "window_start": start, "window_end": end, "requested_by": requested_by,
        "notify": list(notify), "callback_url": callback_url, "notify_affected_mailboxes": affected,
        **({"standard_template": pre_approved(servers)} if change_type == "standard" else {})})
    return change


@pytest.fixture
def sim() -> SimulatedExchange:
    """EX01 with three databases: 24 mailboxes to notify."""
    sim = SimulatedExchange()
    sim.add_standalone("EX01", databases=3)
    return sim


def announcement(change: Change) -> Delivery:
    return deliveries(change, kind="announcement")[0]


def drain(now: datetime | None = None, **kwargs: Any) -> dict[int, str]:
    """Dispatch every due delivery in this process (what the workers do), once each."""
    return {pk: dispatch.deliver(pk, worker="test", now=now, **kwargs) for pk in dispatch.due_ids(now)}


def deliveries(change: Change, **filters: Any) -> list[Delivery]:
    return list(Delivery.objects.filter(change=change, **filters).order_by("id"))
