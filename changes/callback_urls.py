"""The callback URL rules: http(s) only; a host that resolves to a private, loopback, link-local, multicast,
reserved or unspecified address is refused (every address it resolves to is checked) unless the address is in
EXMAINT_CALLBACK_ALLOWED_NETWORKS. Checked when a change is created or edited, and again before each send, because
DNS can change in between (and a rebinding attacker counts on it)."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from .errors import InvalidRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackUrlRefused(InvalidRequest):
    """The URL breaks the callback rules (HTTP 400, code ``callback_url_refused``)."""

    code = "callback_url_refused"


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """EXMAINT_CALLBACK_ALLOWED_NETWORKS: private networks callbacks may reach all the same (tests: 127.0.0.1/32)."""
    configured = getattr(settings, "EXMAINT_NOTIFICATIONS", {}).get("CALLBACK_ALLOWED_NETWORKS", [])
    return [ipaddress.ip_network(n, strict=False) for n in configured]


def _forbidden(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


def resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackUrlRefused(f"callback_url host {host!r} does not resolve: {exc}", field="callback_url") from None
    return sorted({ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos}, key=str)


def check_callback_url(url: str) -> list[Address]:
    """Raise CallbackUrlRefused unless ``url`` may receive callbacks; return the addresses it resolves to now."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackUrlRefused("callback_url must be an http:// or https:// URL with a host", field="callback_url")
    if parts.username or parts.password:
        raise CallbackUrlRefused("callback_url must not carry credentials; callbacks are signed instead",
                                 field="callback_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackUrlRefused("callback_url has an invalid port", field="callback_url") from None
    addresses = resolve(parts.hostname, port)
    allowed = allowed_networks()
    for ip in addresses:
        if _forbidden(ip) and not any(ip in net for net in allowed):
            raise CallbackUrlRefused(
                f"callback_url host {parts.hostname} resolves to {ip}, a private, loopback or link-local address; "
                "callbacks may only go to public addresses (an operator may allow a network with "
                "EXMAINT_CALLBACK_ALLOWED_NETWORKS)", field="callback_url")
    return addresses
