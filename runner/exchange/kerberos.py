"""Kerberos for the pypsrp adapter: a ticket per credential held in memory, the SPN, the mechanism that was used, and
failures in words an administrator acts on. Importable without Django; imports no pypsrp (the adapter does).

- **Tickets.** pyspnego given a user name and password runs a fresh AS exchange (a "kinit") for every HTTP
  connection it authenticates. Instead the adapter asks ``TICKETS.credential(...)`` once per command: the first call
  gets a TGT from the KDC with the password (or the keytab) into a ``MEMORY:`` ccache private to this process and to
  that credential (a random name) — never a file in /tmp another process could read — and later calls reuse it
  until it comes within ``RENEW_MARGIN`` of its end, when it is fetched again in place (same ccache name), so a
  window outliving the ticket lifetime keeps working. pyspnego then gets ``KerberosCCache(<that ccache>)``.
- **No silent downgrade.** ``kerberos`` hands pyspnego only the ccache: NTLM is impossible. ``negotiate`` also hands
  it the password, so SPNEGO may pick NTLM; ``mechanism_of`` reads what was negotiated for the step log.
- **The SPN** is ``<service>/<host>``: the URL's host name, or the server's FQDN when the URL names an IP address (an
  SSH tunnel, the simulator): Kerberos tickets are for names, and no reverse lookup is made.
- **Errors.** libkrb5/GSSAPI say "Decrypt integrity check failed" for a wrong password and "Unspecified GSS failure"
  for an unknown SPN (the reason is in the minor status): ``explain`` turns them into one sentence (see
  docs/kerberos.md).
"""
from __future__ import annotations

import hashlib
import ipaddress
import itertools
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from runner.exchange.session import AuthenticationFailed

log = logging.getLogger(__name__)

# Fetch a new TGT when the current one has less than this left (or a quarter of its lifetime, if that is shorter):
# a connection authenticated just before expiry would otherwise be refused by the KDC when it asks for a service
# ticket.
RENEW_MARGIN = 60.0


class KerberosError(AuthenticationFailed):
    """Getting or using a Kerberos ticket failed; the message says what to do. An authentication failure, so it is
    never sent to another relay (the same account would fail there too); ``retryable`` only for KDC outages."""

    def __init__(self, message: str, *, retryable: bool = False, cause: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.sent = False  # no command leaves before the ticket is had
        self.cause = cause  # a short stable word: kdc_unreachable, clock_skew, unknown_spn, wrong_password, ...


# --- names --------------------------------------------------------------------------------------------------------


def principal_name(username: str, realm: str | None = None) -> str:
    """The Kerberos principal for an inventory user name.

    ``svc@contoso.local`` -> ``svc@CONTOSO.LOCAL`` (a UPN's suffix is the realm, upper case);
    ``CONTOSO\\svc`` or ``svc`` -> ``svc@<realm>`` with the configured realm, or without one (libkrb5 then appends
    krb5.conf's ``default_realm``): a NetBIOS domain name is not a realm.
    """
    name = username.strip()
    if "\\" in name:
        name = name.split("\\", 1)[1]
    if "@" in name:
        user, _, suffix = name.rpartition("@")
        return f"{user}@{suffix.upper()}"
    return f"{name}@{realm.upper()}" if realm else name


def spn_host(url_host: str, fqdn: str | None) -> str:
    """The host part of the SPN: the URL's host name, or the server's FQDN when the URL holds an IP address."""
    try:
        ipaddress.ip_address(url_host.strip("[]"))
    except ValueError:
        return url_host.lower()
    return (fqdn or url_host).lower()


# --- tickets per credential ---------------------------------------------------------------------------------------


@dataclass
class _Ticket:
    ccache: str
    principal: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    endtime: float = 0.0
    lifetime: float = 0.0
    ccache_handle: Any = None  # keeps the MEMORY ccache referenced for the life of the process


class TicketCache:
    """One in-memory ccache per (principal, secret); refreshed in place before it expires. Thread-safe."""

    def __init__(self) -> None:
        self._tickets: dict[str, _Ticket] = {}
        self._lock = threading.Lock()
        self.acquisitions = 0  # AS exchanges made (tests and the benchmark read it)
        # Seconds added to this process's clock in AS requests: only tests set it, to show what a skewed clock does.
        self.clock_offset = 0

    def credential(self, username: str, *, password: str | None = None, keytab: bytes | None = None,
                   realm: str | None = None) -> Any:
        """A pyspnego ``KerberosCCache`` holding a valid TGT for USERNAME. Raises KerberosError."""
        import spnego  # noqa: PLC0415 - only Kerberos users pay for the import

        if not password and not keytab:
            raise KerberosError(f"no password or keytab stored for {username}", cause="no_credential")
        principal = principal_name(username, realm)
        secret = keytab if keytab else (password or "").encode()
        key = hashlib.sha256(principal.encode() + b"\0" + secret).hexdigest()[:24]
        with self._lock:
            ticket = self._tickets.get(key)
            if ticket is None:
                # A random ccache name: pypsrp logs the credential object at DEBUG, and a name derived from the
                # secret would hand a log reader something to guess passwords against.
                ticket = self._tickets[key] = _Ticket(ccache=f"MEMORY:exmaint-{secrets.token_hex(12)}",
                                                      principal=principal)
        with ticket.lock:
            margin = min(RENEW_MARGIN, ticket.lifetime / 4)
            if time.time() >= ticket.endtime - margin:
                self._acquire(ticket, password=password, keytab=keytab)
        return spnego.KerberosCCache(ccache=ticket.ccache, principal=ticket.principal)

    def forget(self) -> None:
        """Drop every cached ticket (tests; a credential change is a new key anyway)."""
        with self._lock:
            self._tickets.clear()
            self.acquisitions = 0

    def _acquire(self, ticket: _Ticket, *, password: str | None, keytab: bytes | None) -> None:
        import krb5  # noqa: PLC0415

        ctx = krb5.init_context()
        if self.clock_offset:
            now = time.time() + self.clock_offset
            krb5.set_real_time(ctx, int(now), int((now % 1) * 1_000_000))
        started = time.time()
        try:
            principal = krb5.parse_name_flags(ctx, ticket.principal.encode())
            options = krb5.get_init_creds_opt_alloc(ctx)
            krb5.get_init_creds_opt_set_canonicalize(options, True)
            if keytab:
                kt = _memory_keytab(ctx, keytab, ticket.ccache.split(":", 1)[1])
                creds = krb5.get_init_creds_keytab(ctx, principal, options, keytab=kt)
            else:
                creds = krb5.get_init_creds_password(ctx, principal, options, password=(password or "").encode())
            ccache = krb5.cc_resolve(ctx, ticket.ccache.encode())
            krb5.cc_initialize(ctx, ccache, creds.client)
            krb5.cc_store_cred(ctx, ccache, creds)
        except krb5.Krb5Error as exc:
            raise explain(exc, principal=ticket.principal, keytab=bool(keytab)) from None
        ticket.ccache_handle = ccache
        ticket.endtime = float(creds.times.endtime) - self.clock_offset
        ticket.lifetime = max(0.0, float(creds.times.endtime - creds.times.starttime))
        self.acquisitions += 1
        log.info("kerberos: ticket for %s acquired in %.0f ms, valid %.0f s", ticket.principal,
                 (time.time() - started) * 1000, ticket.lifetime)


def _memory_keytab(ctx: Any, data: bytes, name: str) -> Any:
    """A MEMORY keytab holding DATA's entries: the decrypted keytab never touches the disk for longer than it takes
    libkrb5 to read it from a private file (libkrb5 cannot parse keytab bytes from memory)."""
    import tempfile  # noqa: PLC0415

    import krb5  # noqa: PLC0415

    # A new MEMORY keytab per load (a few hundred bytes each): replacing entries in place would race a reader.
    memory = krb5.kt_resolve(ctx, f"MEMORY:exmaint-kt-{name}-{next(_KEYTAB_LOADS)}".encode())
    with tempfile.TemporaryDirectory(prefix="exmaint-kt-") as directory:
        path = os.path.join(directory, "keytab")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        count = 0
        try:
            source = krb5.kt_resolve(ctx, f"FILE:{path}".encode())
            for entry in source:  # an entry's key and principal live only as long as the entry: copy them now
                krb5.kt_add_entry(ctx, memory, entry.principal, entry.kvno, entry.timestamp, entry.key)
                count += 1
        except krb5.Krb5Error as exc:
            raise KerberosError(f"the stored keytab cannot be read ({exc}): upload it again", cause="bad_keytab") \
                from None
    if not count:
        raise KerberosError("the stored keytab is empty: upload it again", cause="bad_keytab")
    return memory


TICKETS = TicketCache()
# Kerberos failures NTLM would share (the same account would fail, and each try counts towards its lockout).
_NO_FALLBACK = frozenset({"wrong_password", "password_expired", "account_locked"})
_KEYTAB_LOADS = itertools.count(1)


# --- what pypsrp gets -----------------------------------------------------------------------------------------------


def wsman_auth(config: Any) -> dict[str, Any]:
    """The WSMan keyword arguments for CONFIG's authentication (an ``EndpointConfig``).

    For kerberos/negotiate: a ticket from ``TICKETS`` (raises KerberosError), the SPN's service and host. Negotiate
    falls back to the password (so NTLM) only when no ticket could be had for a reason NTLM does not share.
    """
    if config.auth not in ("kerberos", "negotiate"):
        return {"username": config.username, "password": config.password}
    options: dict[str, Any] = {
        "negotiate_service": config.negotiate_service or "HTTP",
        "negotiate_hostname_override": spn_host(config.host, config.spn_host),
    }
    if not config.username:
        # No stored credential: the worker's own default ccache (kinit'ed outside, e.g. by k5start).
        return {"username": None, "password": None, **options}
    try:
        ccache = TICKETS.credential(config.username, password=config.password, keytab=config.keytab,
                                    realm=config.kerberos_realm)
    except KerberosError as exc:
        if config.auth == "negotiate" and config.password and exc.cause not in _NO_FALLBACK:
            log.warning("%s: negotiate without a Kerberos ticket (%s); NTLM may be used", config.display, exc)
            return {"username": config.username, "password": config.password, **options}
        raise KerberosError(f"{config.display}: {exc}", retryable=exc.retryable, cause=exc.cause) from None
    if config.auth == "negotiate" and config.password:
        import spnego  # noqa: PLC0415

        return {"username": [ccache, spnego.Password(config.username, config.password)], "password": None, **options}
    return {"username": ccache, "password": None, **options}


def keep_fresh(config: Any, wsman: Any = None) -> None:
    """Before a command: renew CONFIG's ticket if it is about to expire, and make WSMAN (the open pool's transport)
    authenticate afresh if its security context is about to expire. Cheap otherwise.

    pypsrp re-authenticates by itself whenever it opens a new connection, from the same ccache, and must not find an
    expired ticket there. An established Kerberos context expires with its service ticket, and MIT's GSSAPI then
    refuses to seal another message: the transport is reset (the remote shell stays) so that the next request
    authenticates with a new ticket and new session keys.
    """
    if config.auth not in ("kerberos", "negotiate"):
        return
    if config.username and (config.password or config.keytab):
        try:
            TICKETS.credential(config.username, password=config.password, keytab=config.keytab,
                               realm=config.kerberos_realm)
        except KerberosError as exc:
            if config.auth == "kerberos":
                raise KerberosError(f"{config.display}: {exc}", retryable=exc.retryable, cause=exc.cause) from None
    if wsman is not None:
        _reauthenticate_if_expiring(wsman)


def _context_lifetime(context: Any) -> float | None:
    """Seconds left on an established GSSAPI context under pyspnego's proxies (None: not Kerberos, or unknown)."""
    inner = context
    try:
        for _ in range(4):  # SPNEGO proxy -> GSSAPI proxy -> gssapi.SecurityContext
            if type(inner).__module__.startswith("gssapi"):
                break
            inner = getattr(inner, "_context", None)
        if inner is None or not type(inner).__module__.startswith("gssapi"):
            return None
    except Exception:  # a proxy that cannot say: leave the connection alone  # noqa: BLE001
        return None
    try:
        return float(inner.lifetime)
    except Exception:  # gssapi raises ExpiredContextError once the context is over  # noqa: BLE001
        return 0.0


def _reauthenticate_if_expiring(wsman: Any) -> None:
    transport = getattr(wsman, "transport", None)
    session = getattr(transport, "session", None)
    contexts = getattr(getattr(session, "auth", None), "contexts", None)
    if not contexts:
        return
    lifetimes = [_context_lifetime(c) for c in contexts.values()]
    if any(left is not None and left < RENEW_MARGIN for left in lifetimes):
        log.info("kerberos: security context for %s expires soon; authenticating again", transport.endpoint)
        transport.encryption = None  # pypsrp then sends its empty POST to set up a new context first
        contexts.clear()
        session.close()  # drop the authenticated keep-alive connections

def mechanism_of(wsman: Any, auth: str) -> str:
    """What authenticated the connection: ``kerberos``, ``ntlm`` (negotiate's fallback), or AUTH itself."""
    session = getattr(getattr(wsman, "transport", None), "session", None)
    contexts = getattr(getattr(session, "auth", None), "contexts", None) or {}
    for context in contexts.values():
        protocol = getattr(context, "negotiated_protocol", None)
        if protocol:
            return str(protocol)
    return auth


# --- errors ---------------------------------------------------------------------------------------------------------

# (text libkrb5/GSSAPI put in the error or its minor status, cause, retryable)
_PATTERNS = (
    ("cannot contact any kdc", "kdc_unreachable", True),
    ("cannot find kdc", "realm_unknown", False),
    ("cannot resolve network address for kdc", "kdc_unreachable", True),
    ("clock skew too great", "clock_skew", False),
    ("not found in kerberos database", "unknown_principal", False),
    ("decrypt integrity check failed", "wrong_password", False),
    ("preauthentication failed", "wrong_password", False),
    ("password has expired", "password_expired", False),
    ("clients credentials have been revoked", "account_locked", False),
    ("ticket expired", "ticket_expired", True),
    ("credential has expired", "ticket_expired", True),
    ("context has expired", "ticket_expired", True),
    ("key table entry not found", "keytab_mismatch", False),
    ("key version number for principal in key table is incorrect", "keytab_mismatch", False),
    ("incompatible with the specified auth_provider", "mechanism_refused", False),
)


def explain(exc: BaseException, *, principal: str = "", spn: str = "", keytab: bool = False,
            where: str = "") -> KerberosError:
    """A KerberosError saying what an administrator should do about EXC (a Krb5Error, GSSError or SpnegoError)."""
    text = str(exc)
    base = getattr(exc, "base_error", None)
    if base is not None:
        text = f"{text} {base}"
    lowered = text.lower()
    cause, retryable = "other", False
    for needle, found, again in _PATTERNS:
        if needle in lowered:
            cause, retryable = found, again
            break
    who = principal or "the service account"
    if cause == "wrong_password" and keytab:
        cause = "keytab_expired"
    if cause == "unknown_principal":
        # The client principal is looked up in the AS exchange, the SPN when asking for a service ticket.
        named = re.search(r"server (\S+?)@\S+ not found", text, re.IGNORECASE)
        cause = "unknown_spn" if spn or named else "unknown_user"
        spn = spn or (named.group(1) if named else "")
    messages = {
        "kdc_unreachable": "no KDC (domain controller) answered for the realm: check krb5.conf's [realms] kdc "
                           "entries (EXMAINT_KRB5_CONFIG), DNS SRV records and that port 88 is open",
        "realm_unknown": "the realm is not in krb5.conf and cannot be found in DNS: add it under [realms] "
                         "(EXMAINT_KRB5_CONFIG) or set EXMAINT_KERBEROS_REALM",
        "clock_skew": "the clock of this host and the KDC's differ by more than the allowed skew (5 minutes by "
                      "default): fix NTP/chrony on this host",
        "unknown_spn": f"the KDC has no service principal {spn or 'for the endpoint'}: register the SPN (setspn -S "
                       f"{spn or 'HTTP/<fqdn>'} <computer account>) or use the server's FQDN in the endpoint URL",
        "unknown_user": f"the KDC does not know {who}: check the user name and realm",
        "wrong_password": f"the KDC refused the password of {who}: update the stored password",
        "keytab_expired": f"the keytab's key for {who} no longer matches the KDC's (the password or key was "
                          "changed since it was exported): export and upload a new keytab",
        "keytab_mismatch": f"the keytab holds no usable key for {who}: export a keytab for that principal",
        "password_expired": f"the password of {who} has expired: set a new one and store it",
        "account_locked": f"{who} is disabled or locked out in the directory",
        "ticket_expired": f"the Kerberos ticket of {who} expired and could not be renewed",
        "mechanism_refused": "the endpoint does not offer Kerberos/Negotiate (only NTLM or Basic): enable Windows "
                             "authentication (Negotiate) on it, or choose another auth method for this server",
        "other": f"Kerberos failed for {who}: {text.strip()[:300]}",
    }
    prefix = f"{where}: " if where else ""
    return KerberosError(f"{prefix}Kerberos: {messages[cause]}", retryable=retryable, cause=cause)


def auth_errors() -> tuple[type[BaseException], ...]:
    """The exception types Kerberos/SPNEGO raise out of a pypsrp call (they are not pypsrp's WinRMError)."""
    errors: list[type[BaseException]] = [KerberosError]
    try:
        from spnego.exceptions import SpnegoError  # noqa: PLC0415

        errors.append(SpnegoError)
    except ImportError:  # pragma: no cover - pyspnego is a dependency
        pass
    try:
        import krb5  # noqa: PLC0415

        errors.append(krb5.Krb5Error)
    except ImportError:
        pass
    try:
        from gssapi.raw.misc import GSSError  # noqa: PLC0415 - e.g. sealing with an expired context

        errors.append(GSSError)
    except ImportError:
        pass
    return tuple(errors)
