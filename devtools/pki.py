"""A throw-away PKI for the demo and the tests: a root CA, a report-signing certificate (its key PEM-encrypted, as
production keeps it), a time-stamping authority's certificate, and a local RFC 3161 TSA over HTTP.

Never for production: the keys are made on the spot and written next to the demo's files.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path  # the root certificate (PEM): what an auditor passes to --trust
    cert: Path  # the report-signing certificate followed by its chain (EXMAINT_REPORT_SIGNING_CERT)
    key: Path  # its private key, encrypted (EXMAINT_REPORT_SIGNING_KEY)
    password: str  # EXMAINT_REPORT_SIGNING_KEY_PASSWORD
    tsa_cert: Path
    tsa_key: Path  # unencrypted: only the local TSA reads it


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "exmaint demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey,
           *, ca: bool = False, eku: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
               .not_valid_after(now + timedelta(days=3650 if ca else 825))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=not ca and eku is None,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False),
                              critical=True))
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _key() -> rsa.RSAPrivateKey:
    # RSA: pyHanko's test TSA (DummyTimeStamper) signs with RSA only.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(directory: Path, *, name: str = "exmaint demo", password: str = "demo-report-key") -> Pki:  # noqa: S107
    """A CA, a report-signing certificate and a TSA certificate under ``directory`` (PEM files)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_cert = _issue(f"{name} root CA", ca_key, _name(f"{name} root CA"), ca_key, ca=True)
    key = _key()
    cert = _issue(f"{name} report signing", key, ca_cert.subject, ca_key)
    tsa_key = _key()
    tsa_cert = _issue(f"{name} time-stamping authority", tsa_key, ca_cert.subject, ca_key,
                      eku=ExtendedKeyUsageOID.TIME_STAMPING)
    pki = Pki(ca=directory / "ca.pem", cert=directory / "report-signing.pem", key=directory / "report-signing.key",
              password=password, tsa_cert=directory / "tsa.pem", tsa_key=directory / "tsa.key")
    pki.ca.write_bytes(_pem(ca_cert))
    pki.cert.write_bytes(_pem(cert) + _pem(ca_cert))
    pki.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(password.encode())))
    pki.tsa_cert.write_bytes(_pem(tsa_cert) + _pem(ca_cert))
    pki.tsa_key.write_bytes(tsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    for path in (pki.key, pki.tsa_key):
        path.chmod(0o600)
    return pki


class LocalTsa:
    """An RFC 3161 time-stamping authority on 127.0.0.1 (pyHanko's DummyTimeStamper behind HTTP)."""

    def __init__(self, pki: Pki, port: int = 0) -> None:
        from pyhanko.keys import load_certs_from_pemder, load_private_key_from_pemder
        from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

        certs = list(load_certs_from_pemder([str(pki.tsa_cert)]))
        stamper = DummyTimeStamper(tsa_cert=certs[0], tsa_key=load_private_key_from_pemder(str(pki.tsa_key), None),
                                   certs_to_embed=certs)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                from asn1crypto import tsp

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.stamper = stamper
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="local-tsa")

    def __enter__(self) -> LocalTsa:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
