"""The only module that talks to the outside: SMTP (Django's mail framework) and the ITSM's callback URL.

Each sender records progress through ``record`` (dispatch.record_batch): for e-mail, after every batch the SMTP
server accepted, so a worker that dies mid-send is resumed after the last recorded batch.
"""
from __future__ import annotations

import json
import smtplib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import urllib3
from django.core.mail import get_connection
from django.db import DatabaseError

from changes.callback_urls import check_callback_url

from . import compose, conf, signing
from .mailboxes import Affected, affected_addresses
from .models import Delivery
from .recipients import normalize
from .secrets import callback_secret_for

USER_AGENT = "exmaint-callbacks/1"


class SendError(Exception):
    """A failed attempt. ``retryable``: the same delivery may succeed later (SMTP down, HTTP 5xx, DNS)."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None,
                 in_doubt: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        # The message or request may have been taken in before the failure (a timeout or a dropped connection
        # while the server was answering): sending it again may duplicate it.
        self.in_doubt = in_doubt


def _maybe_delivered(exc: BaseException) -> bool:
    """A failure after the data may have reached the other end: no answer in time, or the connection dropped."""
    return isinstance(exc, TimeoutError | smtplib.SMTPServerDisconnected | ConnectionResetError
                      | urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.ProtocolError)


def _refused_for_good(exc: BaseException) -> bool:
    """A 5xx answer (RFC 5321 4.2.1: permanent; the same message is refused again): the sender or every recipient
    refused, or the message itself (its size, its content). 4xx and dropped connections are worth retrying."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(code >= 500 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500


def resolve_recipients(delivery: Delivery, *, sessions_factory: Any = None) -> tuple[list[str], Affected]:
    """The recipient list to freeze: the addresses recorded with the event plus the affected mailboxes, and what
    reading the mailboxes gave (problems, unreadable servers: the dispatcher decides what to do about them)."""
    found = affected_addresses(delivery.payload.get("servers", []), sessions_factory=sessions_factory)
    return normalize([*delivery.recipients, *found.addresses]), found


def send_email(delivery: Delivery, *, record: Callable[[int, list[str], str], None],
               before_batch: Callable[[int], None]) -> None:
    """Send the batches not recorded yet, one SMTP message each, over one connection."""
    size = max(1, delivery.batch_size)
    batches = [delivery.recipients[i:i + size] for i in range(0, len(delivery.recipients), size)]
    if delivery.batches_sent >= len(batches):
        return
    connection = get_connection(fail_silently=False)
    try:
        connection.open()
    except OSError as exc:
        raise SendError(f"SMTP server unreachable: {exc}") from exc
    try:
        for index in range(delivery.batches_sent, len(batches)):
            before_batch(index)  # checks the lease is still ours
            try:
                message = compose.build(delivery, index, batches[index], connection=connection)
            except DatabaseError:
                raise  # the database, not the data: a failed attempt like any other, retried
            except Exception as exc:  # noqa: BLE001 - a header, a template, a payload: the same data fails again
                raise SendError(f"the message could not be built: {type(exc).__name__}: {exc}",
                                retryable=False) from exc
            try:
                message.send()
            except Exception as exc:  # noqa: BLE001 - smtplib raises SMTPException and OSError subclasses alike
                raise SendError(f"batch {index + 1}/{len(batches)}: {type(exc).__name__}: {exc}",
                                retryable=not _refused_for_good(exc), in_doubt=_maybe_delivered(exc)) from exc
            record(index, batches[index], message.extra_headers["Message-ID"])
    finally:
        try:
            connection.close()
        except Exception:  # noqa: BLE001, S110 - a broken connection at QUIT changes nothing already sent
            pass


def callback_body(delivery: Delivery) -> bytes:
    """The exact bytes POSTed (and signed): identical on every retry."""
    return json.dumps(delivery.payload["body"], sort_keys=True, separators=(",", ":")).encode()


def send_callback(delivery: Delivery) -> int:
    """POST the signed body to the change's callback URL; returns the HTTP status. Redirects are not followed (they
    could lead to an internal address), and the connection goes to the address just checked, not to a second DNS
    answer (DNS rebinding)."""
    url = delivery.payload["url"]
    try:
        addresses = check_callback_url(url)
    except Exception as exc:  # noqa: BLE001 - refused or unresolvable now; DNS may be fixed before the period ends
        raise SendError(str(getattr(exc, "detail", exc))) from exc
    secret = callback_secret_for(delivery.payload.get("client_id"))
    if not secret:
        raise SendError("the API client has no callback secret; create one with `manage.py rotate_callback_secret`")
    body = callback_body(delivery)
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Host": parts.netloc,
               signing.DELIVERY_HEADER: delivery.message_id.strip("<>"), **signing.sign(secret, body)}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    timeout = urllib3.Timeout(total=float(conf.get("CALLBACK_TIMEOUT_SECONDS")))
    if parts.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            str(addresses[0]), port, server_hostname=parts.hostname, assert_hostname=parts.hostname,
            cert_reqs="CERT_REQUIRED", timeout=timeout, retries=False)
    else:
        pool = urllib3.HTTPConnectionPool(str(addresses[0]), port, timeout=timeout, retries=False)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        response = pool.urlopen("POST", path, body=body, headers=headers, redirect=False, retries=False)
    except urllib3.exceptions.HTTPError as exc:
        raise SendError(f"POST {url}: {type(exc).__name__}: {exc}", in_doubt=_maybe_delivered(exc)) from exc
    finally:
        pool.close()
    status = response.status
    if 200 <= status < 300:
        return status
    # 408/429/5xx may pass; other answers (401 bad signature, 404, a redirect) will not change by themselves.
    retryable = status in (408, 425, 429) or status >= 500
    raise SendError(f"POST {url}: HTTP {status}", retryable=retryable, status=status)
