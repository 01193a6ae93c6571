"""Can exmaint reach this server the way its inventory entry says? ``check_server`` tries both endpoints (Exchange's
/PowerShell and the default WinRM one) and reports what an administrator needs to fix a connection: the resolved
addresses, the Kerberos SPN, the mechanism that authenticated, the TLS certificate, the Exchange version read from
the server and the clock offset. It runs reads only (Get-ExchangeServer, Get-Service); never a change.

Used by ``manage.py check_server``, the admin's "Check the connection" action and
``POST /api/v1/servers/{id}/check/``.
"""
from __future__ import annotations

import socket
import ssl
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from changes.models import Server

from .exchange import kerberos
from .exchange.pypsrp_session import EndpointConfig, PypsrpSession
from .exchange.session import Endpoint, ExchangeSessionError
from .sessions import InventoryError, endpoint_config

# Beyond this the Kerberos KDC refuses tickets (5 minutes by default); warn well before.
CLOCK_WARNING_SECONDS = 60


@dataclass
class EndpointCheck:
    """What one endpoint answered. ``error`` is set when the endpoint could not be used."""

    endpoint: str
    url: str = ""
    auth: str = ""
    resolved: list[str] = field(default_factory=list)
    spn: str = ""
    mechanism: str = ""
    tls_subject: str = ""
    tls_not_after: str = ""
    tls_error: str = ""
    tls_validation: str = ""  # "system store", a CA bundle path, or "OFF"
    exchange_version: str = ""
    time_offset_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class ServerCheck:
    server: str
    endpoints: list[EndpointCheck]

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.endpoints)

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "ok": self.ok, "endpoints": [asdict(e) for e in self.endpoints]}

    def lines(self) -> list[str]:
        out = [f"{self.server}: {'OK' if self.ok else 'PROBLEMS'}"]
        for e in self.endpoints:
            out.append(f"  {e.endpoint}  {e.url}")
            out.append(f"    resolved host    {', '.join(e.resolved) or '-'}")
            out.append(f"    authentication   {e.auth}" + (f" (SPN {e.spn})" if e.spn else ""))
            out.append(f"    mechanism used   {e.mechanism or '-'}")
            if e.url.startswith("https:"):
                out.append(f"    TLS certificate  {e.tls_subject or '-'}, expires {e.tls_not_after or '-'} "
                           f"(validated against {e.tls_validation})")
                if e.tls_error:
                    out.append(f"    TLS problem      {e.tls_error}")
            if e.exchange_version:
                out.append(f"    Exchange version {e.exchange_version}")
            offset = "-" if e.time_offset_seconds is None else f"{e.time_offset_seconds:+.0f} s"
            out.append(f"    time offset      {offset}")
            for warning in e.warnings:
                out.append(f"    WARNING          {warning}")
            if e.error:
                out.append(f"    ERROR            {e.error}")
        return out

    def summary(self) -> str:
        problems = [f"{e.endpoint}: {e.error}" for e in self.endpoints if e.error]
        warnings = [w for e in self.endpoints for w in e.warnings]
        mechanisms = ", ".join(f"{e.endpoint} via {e.mechanism}" for e in self.endpoints if e.mechanism)
        text = f"{self.server}: " + ("; ".join(problems) if problems else f"OK ({mechanisms})")
        return text + (f" — {'; '.join(warnings)}" if warnings else "")


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def _certificate(config: EndpointConfig, check: EndpointCheck) -> None:
    """Subject and expiry of the endpoint's certificate, validated as the session will validate it."""
    from cryptography import x509  # noqa: PLC0415

    verify = config.cert_validation
    check.tls_validation = "OFF" if verify is False else ("system store" if verify is True else str(verify))
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        der = _peer_certificate(config, context)
    except ssl.SSLCertVerificationError as exc:
        check.tls_error = f"the certificate is not trusted: {exc.verify_message}"
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        der = _peer_certificate(config, unverified)
    cert = x509.load_der_x509_certificate(der)
    check.tls_subject = cert.subject.rfc4514_string()
    check.tls_not_after = cert.not_valid_after_utc.isoformat()
    days = (cert.not_valid_after_utc - datetime.now(UTC)).days
    if days < 30:
        check.warnings.append(f"the TLS certificate expires in {days} days")


def _peer_certificate(config: EndpointConfig, context: ssl.SSLContext) -> bytes:
    with socket.create_connection((config.host, config.effective_port), timeout=config.connection_timeout) as raw, \
            context.wrap_socket(raw, server_hostname=config.host) as tls:
        return tls.getpeercert(binary_form=True) or b""


def _time_offset(config: EndpointConfig) -> float | None:
    """The server's clock minus ours, from the Date header of an unauthenticated request (1 s resolution)."""
    scheme = "https" if config.ssl else "http"
    url = f"{scheme}://{config.host}:{config.effective_port}/{config.path}"
    sent = time.time()
    with warnings.catch_warnings():
        # Only the Date header of an unauthenticated, empty request is read: no credential or data is sent, so an
        # untrusted certificate (reported by _certificate) need not stop the clock check.
        warnings.simplefilter("ignore")
        response = requests.post(url, data=b"", timeout=config.connection_timeout, verify=False)  # noqa: S501
    received = time.time()
    header = response.headers.get("Date")
    if not header:
        return None
    return parsedate_to_datetime(header).timestamp() - (sent + received) / 2


def check_endpoint(server: Server, endpoint: Endpoint,
                   factory: Callable[[str, dict], Any] = PypsrpSession) -> EndpointCheck:
    check = EndpointCheck(endpoint=endpoint.value)
    try:
        config = endpoint_config(server, endpoint)
    except InventoryError as exc:
        check.error = str(exc)
        return check
    check.url = config.display
    check.auth = config.auth
    if config.auth in ("kerberos", "negotiate"):
        check.spn = f"{config.negotiate_service or 'HTTP'}/{kerberos.spn_host(config.host, config.spn_host)}"
    try:
        check.resolved = _resolve(config.host, config.effective_port)
    except OSError as exc:
        check.error = f"{config.host} does not resolve ({exc})"
        return check
    try:
        if config.ssl:
            if config.cert_validation is False:
                check.warnings.append("TLS certificate validation is off for this endpoint")
            _certificate(config, check)
        check.time_offset_seconds = _time_offset(config)
    except (OSError, requests.RequestException) as exc:
        check.error = f"cannot connect to {config.host}:{config.effective_port} ({type(exc).__name__}: {exc})"
        return check
    if check.time_offset_seconds is not None and abs(check.time_offset_seconds) > CLOCK_WARNING_SECONDS:
        check.warnings.append(f"the server's clock is {check.time_offset_seconds:+.0f} s from ours: Kerberos fails "
                              "beyond 5 minutes; check NTP on both")
    session = factory(server.name, {endpoint: config})
    try:
        if endpoint == Endpoint.EXCHANGE:
            result = session.run("Get-ExchangeServer", {"Identity": server.name}, endpoint=endpoint)
            first = result.output[0] if result.output else {}
            check.exchange_version = str(first.get("AdminDisplayVersion") or "")
            if result.errors:
                check.warnings.append(f"Get-ExchangeServer {server.name}: {result.errors[0].message}")
        else:
            session.run("Get-Service", {"Name": ["WinRM"]}, endpoint=endpoint)
        check.mechanism = session.mechanisms.get(endpoint, config.auth)
        for notice in session.take_notices():
            check.warnings.append(notice)
    except ExchangeSessionError as exc:
        check.error = str(exc)
    finally:
        session.close()
    return check


def check_server(server: Server, *, factory: Callable[[str, dict], Any] = PypsrpSession) -> ServerCheck:
    """Try SERVER's Exchange endpoint and its default WinRM endpoint; read-only. Never raises for a bad connection:
    each problem is in the report."""
    return ServerCheck(server=server.name,
                       endpoints=[check_endpoint(server, endpoint, factory) for endpoint in Endpoint])
