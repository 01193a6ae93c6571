"""A throw-away RFC 3161 time-stamping authority on loopback, made at test time.

A root CA and a TSA certificate (extended key usage timeStamping, critical) are made with ``cryptography``; the
replies are signed by the ``openssl ts -reply`` command line tool behind a small HTTP server, so the tokens come
from an implementation independent of the client that asks for them and of the code that verifies them.

Use the ``tsa`` fixture (import it into a test module, or into a conftest) or ``LocalTsa`` as a context manager::

    with LocalTsa(tmp_path) as tsa:
        tsa.url           # http://127.0.0.1:<port>/tsa  (POST application/timestamp-query)
        tsa.ca_pem        # Path of the root certificate (PEM): the trust root a verifier is given
        tsa.requests      # how many requests it answered
        tsa.refuse = True # answer 503 from now on (a TSA outage)

Under CI=true a missing ``openssl`` binary fails the test (need_service); locally it skips.
"""
from __future__ import annotations

import shutil
import subprocess  # noqa: S404 - a fixed argv: the openssl CLI signs the replies
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONTENT_TYPE_QUERY = "application/timestamp-query"
CONTENT_TYPE_REPLY = "application/timestamp-reply"
POLICY_OID = "1.3.6.1.4.1.99999.13.8"  # an arbitrary private-arc policy for the test TSA


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "exmaint tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "exmaint test root CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed root CA (P-256), valid from a day ago for a year."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_tsa_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                  common_name: str = "exmaint test TSA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TSA signing certificate issued by ``ca_cert``: RFC 3161 §2.3 wants the timeStamping EKU, alone, critical."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=364))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


_OPENSSL_CONF = """\
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/tsa.pem
certs = {dir}/ca.pem
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = {policy}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


class LocalTsa:
    """The CA, the TSA certificate, the openssl configuration and the HTTP server, in one temporary directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.openssl = shutil.which("openssl")
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="exmaint-tsa-")
        self.dir = Path(directory if directory is not None else self._tmp.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = make_ca()
        self.tsa_key, self.tsa_cert = make_tsa_cert(self.ca_key, self.ca_cert)
        self.ca_pem = self.dir / "ca.pem"
        self.ca_pem.write_bytes(_pem(self.ca_cert))
        (self.dir / "tsa.pem").write_bytes(_pem(self.tsa_cert))
        (self.dir / "tsa.key").write_bytes(_key_pem(self.tsa_key))
        (self.dir / "serial").write_text("01\n")
        self.config = self.dir / "openssl-tsa.cnf"
        self.config.write_text(_OPENSSL_CONF.format(dir=self.dir, policy=POLICY_OID))
        self.requests = 0
        self.refuse = False
        self._lock = threading.Lock()  # openssl ts keeps its serial number in a file: one reply at a time
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the TSA first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/tsa"

    def reply(self, query: bytes) -> bytes:
        """Sign a DER TimeStampReq with openssl ts; return the DER TimeStampResp."""
        with self._lock, tempfile.TemporaryDirectory(dir=self.dir) as work:
            query_file, reply_file = Path(work) / "query.tsq", Path(work) / "reply.tsr"
            query_file.write_bytes(query)
            subprocess.run(  # noqa: S603 - fixed argv, files we made
                [self.openssl, "ts", "-reply", "-config", str(self.config), "-queryfile", str(query_file),
                 "-out", str(reply_file)],
                check=True, capture_output=True, timeout=30,
            )
            self.requests += 1
            return reply_file.read_bytes()

    def start(self) -> LocalTsa:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if tsa.refuse:
                    self._answer(503, "text/plain", b"TSA unavailable (test)")
                elif self.headers.get("Content-Type") != CONTENT_TYPE_QUERY:
                    self._answer(415, "text/plain", b"expected application/timestamp-query")
                else:
                    try:
                        self._answer(200, CONTENT_TYPE_REPLY, tsa.reply(body))
                    except subprocess.CalledProcessError as exc:
                        self._answer(400, "text/plain", exc.stderr or b"openssl ts failed")

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-tsa", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalTsa:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def tsa(tmp_path: Path):
    """A running local TSA for one test (its CA is ``tsa.ca_pem``)."""
    from tests.conftest import need_service

    if shutil.which("openssl") is None:
        need_service("openssl CLI", RuntimeError("openssl not on PATH: the local TSA signs with `openssl ts`"))
    with LocalTsa(tmp_path / "tsa") as local:
        yield local
