"""The throw-away MIT realm the Kerberos tests log in against (exchange_sim/kdc.py): two service accounts and the
SPNs HTTP/ex01.exmaint.test and HTTP/ex02.exmaint.test in one keytab for the simulator. Import the ``realm`` fixture
into a test module. Under CI=true, missing KDC binaries fail the tests (need_service); locally they skip."""
from __future__ import annotations

import os

import pytest

from exchange_sim import kdc
from tests.conftest import need_service

SVC1, PASS1 = "exm-svc1", "Svc1-Passw0rd!"
SVC2, PASS2 = "exm-svc2", "Svc2-Passw0rd!"


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    missing = kdc.missing_tools()
    if missing:
        need_service("MIT Kerberos KDC", RuntimeError(f"{', '.join(missing)} not installed; run .ci/system-packages"))
    test_realm = kdc.TestRealm(tmp_path_factory.mktemp("kdc"))
    test_realm.add_user(SVC1, PASS1)
    test_realm.add_user(SVC2, PASS2)
    keytab = test_realm.dir / "http.keytab"
    test_realm.add_service("HTTP/ex01.exmaint.test", keytab)
    test_realm.add_service("HTTP/ex02.exmaint.test", keytab)
    test_realm.start()
    saved = {name: os.environ.get(name) for name in test_realm.env}
    test_realm.activate()
    test_realm.http_keytab = keytab
    yield test_realm
    test_realm.destroy()
    for name, value in saved.items():  # later tests must not find a krb5.conf pointing at a dead realm
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
