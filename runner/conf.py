"""The runner's settings, read from ``settings.EXMAINT`` (config/settings.py parses and checks them at start-up)."""
from __future__ import annotations

from django.conf import settings

from .clock import RealClock, ScaledClock, parse_clock


def lease_seconds() -> int:
    """How long a worker's lease on a window lasts without renewal; a crashed worker's run is taken over after it."""
    return settings.EXMAINT["LEASE_SECONDS"]


def watchdog_grace_minutes() -> int:
    """How long past window_end a running/paused change may stay before the watchdog raises an overrun alert."""
    return settings.EXMAINT["WATCHDOG_GRACE_MINUTES"]


def stall_grace_seconds() -> int:
    """The grace past a step's own timeout (and past a window's end, for a server still in maintenance) before the
    watchdog alerts."""
    return settings.EXMAINT["WATCHDOG_STALL_GRACE_SECONDS"]


def allow_unencrypted_basic() -> bool:
    """Basic auth over plain HTTP to a non-loopback host sends the password readable on the wire: off by default."""
    return settings.EXMAINT["ALLOW_UNENCRYPTED_BASIC"]


def kerberos_realm() -> str | None:
    """The realm for user names without one; None: krb5.conf's default_realm."""
    return settings.EXMAINT.get("KERBEROS_REALM") or None


def tls_ca_bundle() -> str | None:
    """The global CA bundle for https endpoints; None: the operating system's store."""
    return settings.EXMAINT.get("TLS_CA_BUNDLE") or None


def exit_retry_attempts() -> int:
    """How many times an exit step is tried while the server is unreachable (backoff doubles from 30 s)."""
    return settings.EXMAINT["EXIT_RETRY_ATTEMPTS"]


def make_clock() -> RealClock | ScaledClock:
    """``real`` (default) or ``scaled:<speed>`` (demo: a 60 s poll sleeps 60/speed s)."""
    return parse_clock(settings.EXMAINT["RUNNER_CLOCK"])
