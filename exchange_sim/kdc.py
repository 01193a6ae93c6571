"""A throw-away MIT Kerberos realm in a temporary directory, on a free loopback port: the KDC the tests and the
benchmark log in against (see docs/kerberos.md). Needs Debian's ``krb5-kdc`` and ``krb5-admin-server`` binaries
(``kdb5_util``, ``kadmin.local``, ``krb5kdc``); no root is needed to run it.

Host names such as ``ex01.exmaint.test`` need no resolver entry: the generated ``krb5.conf`` turns off reverse DNS
and host-name canonicalisation, and clients build the SPN from the name they are given.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess  # noqa: S404 - fixed argv of the MIT KDC tools, never a shell
import tempfile
import time
from pathlib import Path

REALM = "EXMAINT.TEST"
KDC_TOOLS = ("kdb5_util", "kadmin.local", "krb5kdc")
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """The path of an MIT KDC tool (they live in sbin, often not on a non-root PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    return None


def missing_tools() -> list[str]:
    return [name for name in KDC_TOOLS if find_tool(name) is None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestRealm:
    """A running realm: ``add_user``, ``add_service`` (with a keytab), ``stop``/``start`` the KDC.

    ``env`` holds KRB5_CONFIG/KRB5_KDC_PROFILE; ``activate()`` puts them into ``os.environ`` so in-process
    libkrb5 (gssapi, krb5) reads this realm's krb5.conf. Short ticket lifetimes test renewal.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path | None = None, *, realm: str = REALM, max_life: str = "2m",
                 clockskew: int = 300) -> None:
        self.dir = Path(directory or tempfile.mkdtemp(prefix="exmaint-kdc-"))
        self.realm = realm
        self.port = free_port()
        self.master_password = os.urandom(12).hex()
        self.krb5_conf = self.dir / "krb5.conf"
        self.kdc_conf = self.dir / "kdc.conf"
        self.pid_file = self.dir / "kdc.pid"
        self.env = {"KRB5_CONFIG": str(self.krb5_conf), "KRB5_KDC_PROFILE": str(self.kdc_conf)}
        # Braces on their own lines: libkrb5 does not read `REALM = { kdc = ... }` written on one line.
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"  default_realm = {realm}\n"
            "  dns_lookup_kdc = false\n  dns_lookup_realm = false\n"
            "  rdns = false\n  dns_canonicalize_hostname = false\n"
            f"  ticket_lifetime = {max_life}\n  renew_lifetime = 0\n"
            f"  clockskew = {clockskew}\n"
            # libkrb5 otherwise corrects its clock by the KDC's silently: off, a skewed clock fails as it would
            # against a Windows KDC, which the tests need to show.
            "  kdc_timesync = 0\n"
            "  udp_preference_limit = 1\n"  # TCP only: the port below is only certainly free for TCP
            "  kdc_timeout = 2000\n  max_retries = 1\n"
            "[realms]\n"
            f"  {realm} = {{\n    kdc = 127.0.0.1:{self.port}\n  }}\n"
        )
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"  kdc_ports = {self.port}\n  kdc_tcp_ports = {self.port}\n"
            "[realms]\n"
            f"  {realm} = {{\n"
            f"    database_name = {self.dir}/principal\n"
            f"    key_stash_file = {self.dir}/stash\n"
            f"    acl_file = {self.dir}/kadm5.acl\n"
            f"    max_life = {max_life}\n    max_renewable_life = 0\n"
            "  }\n"
            "[logging]\n"
            f"  kdc = FILE:{self.dir}/kdc.log\n"
        )
        (self.dir / "kadm5.acl").write_text("")
        self._run("kdb5_util", "create", "-s", "-r", realm, "-P", self.master_password)

    # --- administration -------------------------------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> str:
        path = find_tool(tool)
        if path is None:
            raise FileNotFoundError(f"{tool} is not installed (Debian: apt-get install krb5-kdc krb5-admin-server)")
        done = subprocess.run(  # noqa: S603 - fixed argv
            [path, *args], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def kadmin(self, query: str) -> str:
        out = self._run("kadmin.local", "-r", self.realm, "-q", query)
        return out

    def principal(self, name: str) -> str:
        return name if "@" in name else f"{name}@{self.realm}"

    def add_user(self, name: str, password: str) -> str:
        # Pre-authentication required, as Active Directory does: the KDC then checks the client's clock.
        self.kadmin(f"addprinc +requires_preauth -pw {password} {name}")
        return self.principal(name)

    def add_service(self, spn: str, keytab: Path | str) -> Path:
        """Create SPN (``HTTP/ex01.exmaint.test``) with a random key and add it to KEYTAB."""
        self.kadmin(f"addprinc -randkey {spn}")
        self.kadmin(f"ktadd -k {keytab} {spn}")
        return Path(keytab)

    def export_keytab(self, name: str, keytab: Path | str) -> bytes:
        """A keytab for a user principal (``-norandkey`` keeps its password working). Returns the keytab bytes."""
        self.kadmin(f"ktadd -k {keytab} -norandkey {name}")
        return Path(keytab).read_bytes()

    def change_key(self, name: str) -> None:
        """A new random key for NAME: every keytab exported before no longer works (an "expired keytab")."""
        self.kadmin(f"cpw -randkey {name}")

    # --- the KDC process ----------------------------------------------------------------------------------------------

    def start(self) -> TestRealm:
        self._run("krb5kdc", "-P", str(self.pid_file), "-r", self.realm)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"the KDC did not start listening on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    @property
    def running(self) -> bool:
        try:
            os.kill(int(self.pid_file.read_text().strip()), 0)
        except (OSError, ValueError):
            return False
        return True

    def activate(self) -> None:
        """Point this process's libkrb5 at the realm (read at each krb5 context creation)."""
        os.environ.update(self.env)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
