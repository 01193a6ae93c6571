"""Kerberos for the simulated WinRM endpoint: a real SPNEGO/Kerberos acceptor (pyspnego's server side) reading the
service keys from a keytab, so the unmodified pypsrp client logs in with Kerberos as it does to IIS's /PowerShell.

pypsrp sends a raw Kerberos token when told ``auth="kerberos"`` (under the ``Kerberos`` scheme when the server offers
it, else under ``Negotiate``), and an SPNEGO token for ``auth="negotiate"``. Both are accepted; SPNEGO also keeps
NTLM as a fallback mechanism, like Windows. Message encryption (``multipart/encrypted``) is the same MIME framing
for every mechanism (exchange_sim/ntlm.py); only the protocol name differs: ``application/HTTP-Kerberos-session-
encrypted`` after the ``Kerberos`` scheme, ``application/HTTP-SPNEGO-session-encrypted`` after ``Negotiate``.

The keytab is named per acceptor (``gss_acquire_cred_from`` with a ``keytab`` store), not through the process-wide
``KRB5_KTNAME``, so several endpoints in one process may hold different keys.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

KERBEROS_ENCRYPTED = "application/HTTP-Kerberos-session-encrypted"
SPNEGO_ENCRYPTED = "application/HTTP-SPNEGO-session-encrypted"

# DER-encoded mechanism OIDs as they appear at the start of a GSS InitialContextToken (RFC 2743 3.1).
_KRB5_OIDS = (bytes.fromhex("06092a864886f712010202"), bytes.fromhex("06092a864882f712010202"))  # krb5, MS krb5
_SPNEGO_OID = bytes.fromhex("06062b0601050502")


def _mech_oid(token: bytes) -> bytes:
    """The mechanism OID of a GSS InitialContextToken (0x60, DER length, OID)."""
    if not token or token[0] != 0x60 or len(token) < 4:
        return b""
    index = 2 if token[1] < 0x80 else 2 + (token[1] & 0x7F)
    return token[index:index + 2 + token[index + 1]] if len(token) > index + 1 else b""


def is_kerberos_token(token: bytes) -> bool:
    return _mech_oid(token) in _KRB5_OIDS


def is_spnego_token(token: bytes) -> bool:
    return _mech_oid(token) == _SPNEGO_OID


class KerberosAcceptor:
    """Accepts Kerberos (raw or inside SPNEGO) for every service principal in KEYTAB."""

    def __init__(self, keytab: str | Path) -> None:
        import gssapi  # noqa: PLC0415 - only endpoints serving Kerberos need it

        self.keytab = Path(keytab)
        if not self.keytab.exists():
            raise FileNotFoundError(f"keytab {self.keytab} does not exist")
        store = {b"keytab": f"FILE:{self.keytab}".encode()}
        self._credential = gssapi.Credentials(base=gssapi.raw.acquire_cred_from(store, usage="accept").creds)

    def context(self, scheme: str, token: bytes) -> Any | None:
        """A new acceptor context for a handshake starting with TOKEN, or None when it is not for Kerberos/SPNEGO
        (an NTLM token: the endpoint's NTLM path takes it)."""
        import spnego  # noqa: PLC0415
        from spnego._context import GSSMech  # noqa: PLC0415 - the mech keys pyspnego's SPNEGO proxy expects

        if scheme == "kerberos" or is_kerberos_token(token):
            # _gssapi_credential: pyspnego's (private) way to hand its GSSAPI proxy an acceptor credential on Linux.
            return spnego.server(protocol="kerberos", _gssapi_credential=self._credential)
        if is_spnego_token(token):
            from spnego._spnego import NegTokenInit, unpack_token  # noqa: PLC0415

            offered = unpack_token(token)
            mech_types = offered.mech_types if isinstance(offered, NegTokenInit) else []
            # pyspnego's acceptor picks the first context it is handed, whatever the initiator offered: hand it
            # only the offered ones, in the initiator's order (a client without a ticket offers only NTLM).
            contexts: dict[Any, Any] = {}
            for oid in mech_types:
                if oid in (GSSMech.kerberos.value, GSSMech._ms_kerberos.value) and GSSMech.kerberos not in contexts:
                    contexts[GSSMech.kerberos] = spnego.server(protocol="kerberos",
                                                               _gssapi_credential=self._credential)
                elif oid == GSSMech.ntlm.value and GSSMech.ntlm not in contexts:
                    contexts[GSSMech.ntlm] = spnego.server(protocol="ntlm",
                                                           options=spnego.NegotiateOptions.wrapping_winrm)
            if not contexts:
                return None
            return spnego.server(protocol="negotiate", options=spnego.NegotiateOptions.wrapping_winrm,
                                 _negotiate_contexts=contexts)
        return None


def encrypted_protocol(content_type: str) -> str:
    """The protocol of a ``multipart/encrypted`` request, which the response must use too."""
    match = re.search(r'protocol="([^"]+)"', content_type)
    return match.group(1) if match else SPNEGO_ENCRYPTED
