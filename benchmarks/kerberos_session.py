"""Kerberos + message encryption vs NTLM + message encryption, per command, through ``PypsrpSession`` on the same
simulated endpoint (plain http, so every message is sealed), against a throw-away MIT KDC (exchange_sim/kdc.py).

Run: ``python benchmarks/kerberos_session.py [--samples 60]`` (needs Debian's krb5-kdc and krb5-admin-server).
Prints the median and mean ms per command on a reused pool for each mechanism, the ratio (goal: <= 1.1x), the cost
of opening a pool (one authentication each), and how many tickets were fetched from the KDC: one per credential,
not one per command or per connection.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_ms  # noqa: E402 - after the path fix above
from exchange_sim import kdc  # noqa: E402 - after the path fix above
from exchange_sim.endpoint import start_endpoint  # noqa: E402
from exchange_sim.model import SimulatedExchange  # noqa: E402
from runner.exchange.kerberos import TICKETS  # noqa: E402
from runner.exchange.pypsrp_session import EndpointConfig, PypsrpSession  # noqa: E402
from runner.exchange.session import Endpoint  # noqa: E402

USER, PASSWORD = "bench-svc", "Bench-Passw0rd-1"
SERVER, FQDN = "EX01", "ex01.exmaint.test"
CMDLET, PARAMETERS = "Get-MailboxServer", {"Identity": SERVER}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--opens", type=int, default=10)
    args = parser.parse_args()
    missing = kdc.missing_tools()
    if missing:
        sys.exit(f"the MIT KDC tools are missing ({', '.join(missing)}): run .ci/system-packages as root")

    # Long enough tickets that renewal does not land inside the measurement.
    realm = kdc.TestRealm(max_life="1h")
    try:
        realm.add_user(USER, PASSWORD)
        realm.add_service(f"HTTP/{FQDN}", realm.dir / "http.keytab")
        realm.start()
        realm.activate()
        sim = SimulatedExchange()
        sim.add_standalone(SERVER, fqdn=FQDN)
        with start_endpoint(sim, users={USER: PASSWORD}, auth=("negotiate",),
                            keytab=str(realm.dir / "http.keytab")) as endpoint:

            def config(auth: str) -> EndpointConfig:
                return EndpointConfig(url=endpoint.url_for(SERVER), configuration_name=Endpoint.EXCHANGE.value,
                                      auth=auth, username=USER, password=PASSWORD, spn_host=FQDN,
                                      encryption="always")

            with (PypsrpSession(SERVER, {Endpoint.EXCHANGE: config("kerberos")}) as kerberos,
                  PypsrpSession(SERVER, {Endpoint.EXCHANGE: config("ntlm")}) as ntlm):
                (krb_ms, krb_mean), (ntlm_ms, ntlm_mean) = interleaved_ms(
                    args.samples, [lambda: kerberos.run(CMDLET, PARAMETERS), lambda: ntlm.run(CMDLET, PARAMETERS)])
                assert kerberos.mechanisms[Endpoint.EXCHANGE] == "kerberos"
                assert ntlm.mechanisms[Endpoint.EXCHANGE] == "ntlm"

            def open_and_run(auth: str) -> Callable[[], None]:
                def run() -> None:
                    with PypsrpSession(SERVER, {Endpoint.EXCHANGE: config(auth)}) as session:
                        session.run(CMDLET, PARAMETERS)
                return run

            (krb_open, _), (ntlm_open, _) = interleaved_ms(args.opens, [open_and_run("kerberos"),
                                                                         open_and_run("ntlm")])
    finally:
        realm.destroy()

    print(f"per command on a reused pool, sealed messages ({args.samples} samples, {CMDLET}):")
    print(f"  kerberos  median {krb_ms:6.1f} ms  mean {krb_mean:6.1f} ms")
    print(f"  ntlm      median {ntlm_ms:6.1f} ms  mean {ntlm_mean:6.1f} ms")
    print(f"  ratio kerberos/ntlm: {krb_ms / ntlm_ms:.2f}x (goal <= 1.1x)")
    print(f"a new pool + one command: kerberos {krb_open:.1f} ms, ntlm {ntlm_open:.1f} ms "
          f"({krb_open / ntlm_open:.2f}x)")
    print(f"tickets fetched from the KDC: {TICKETS.acquisitions} (one per credential)")


if __name__ == "__main__":
    main()
