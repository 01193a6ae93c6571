"""NTLM/Negotiate support for the simulated endpoint: the acceptor's credential file and WinRM message sealing.

pyspnego's NTLM acceptor reads credentials from the file named by ``NTLM_USER_FILE``, a process-global setting: every
endpoint in the process registers its users in one shared temporary file (each endpoint still checks that the
authenticated user is one of its own). Sealed messages (``encryption='auto'`` over http) use MS-WSMV's MIME framing.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import struct
import tempfile
import threading
from collections import Counter
from typing import Any

ENCRYPTED_BOUNDARY = b"--Encrypted Boundary"
SPNEGO_ENCRYPTED = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{SPNEGO_ENCRYPTED}";boundary="Encrypted Boundary"'

_ntlm_lock = threading.Lock()
_ntlm_users: Counter = Counter()  # (user, password) -> endpoints using it
_ntlm_file: str | None = None


def _write_ntlm_file() -> None:
    global _ntlm_file
    if _ntlm_file is None:
        fd, _ntlm_file = tempfile.mkstemp(prefix="exmaint-ntlm-", suffix=".txt")
        os.close(fd)
        atexit.register(_remove_file, _ntlm_file)
    with open(_ntlm_file, "w", encoding="utf-8") as handle:
        for user, password in _ntlm_users:
            # Heimdal format DOMAIN:USER:PASSWORD; an empty domain matches any domain the client sends.
            handle.write(f":{user}:{password}\n")
    os.environ["NTLM_USER_FILE"] = _ntlm_file


def _remove_file(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def register_users(users: dict[str, str]) -> None:
    """Make these users acceptable to NTLM acceptors in this process."""
    with _ntlm_lock:
        _ntlm_users.update(users.items())
        _write_ntlm_file()


def release_users(users: dict[str, str]) -> None:
    """Undo register_users (an endpoint stopped)."""
    with _ntlm_lock:
        _ntlm_users.subtract(users.items())
        for key in [k for k, v in _ntlm_users.items() if v <= 0]:
            del _ntlm_users[key]
        if _ntlm_file is not None:
            _write_ntlm_file()


# --- NTLM/SPNEGO message sealing (encryption='auto' over http), MS-WSMV 2.2.9.1 MIME framing ---------------------


def unwrap(context: Any, body: bytes) -> bytes:
    """The SOAP bytes inside a sealed multipart/encrypted request body."""
    marker = b"\tContent-Type: application/octet-stream\r\n"
    start = body.index(marker) + len(marker)
    end = body.rindex(ENCRYPTED_BOUNDARY + b"--")
    payload = body[start:end]
    header_length = struct.unpack("<i", payload[:4])[0]
    header = payload[4 : 4 + header_length]
    return context.unwrap_winrm(header, payload[4 + header_length :])


def wrap(context: Any, data: bytes, protocol: str = SPNEGO_ENCRYPTED) -> bytes:
    """Seal a SOAP response the way pypsrp's WinRMEncryption unwraps it (Length = plaintext + padding)."""
    header, wrapped, padding = context.wrap_winrm(data)
    parts = [
        ENCRYPTED_BOUNDARY,
        b"\tContent-Type: " + protocol.encode(),
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=%d" % (len(data) + padding),
        ENCRYPTED_BOUNDARY,
        b"\tContent-Type: application/octet-stream",
        b"",
    ]
    return b"\r\n".join(parts) + struct.pack("<i", len(header)) + header + wrapped + ENCRYPTED_BOUNDARY + b"--\r\n"


