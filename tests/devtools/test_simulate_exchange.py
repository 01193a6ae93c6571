"""The simulate_exchange management command's plain functions (no Django database needed)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from devtools.management.commands.simulate_exchange import endpoint_urls, parse_dag, read_password, serve
from exchange_sim.endpoint import RunningEndpoint
from tests.exchange_sim.test_endpoint import StandInExchange


def test_a_dag_spec_names_the_dag_and_its_members() -> None:
    assert parse_dag("DAG1:EX02, EX03,EX04") == ("DAG1", ["EX02", "EX03", "EX04"])


@pytest.mark.parametrize("spec", ["DAG1", "DAG1:", ":EX01"])
def test_a_dag_spec_without_members_or_name_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="NAME:SERVER"):
        parse_dag(spec)


def test_the_password_comes_from_the_first_line_of_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-line\nignored\n", encoding="utf-8")
    assert read_password(str(secret)) == ("s3cret-line", False)


def test_without_a_password_file_a_random_password_is_generated() -> None:
    first, generated = read_password(None)
    assert generated is True
    assert len(first) >= 12
    assert read_password(None)[0] != first


def test_serve_announces_the_urls_and_stops_when_asked() -> None:
    stop = threading.Event()
    announced: list[RunningEndpoint] = []
    ready = threading.Event()

    def announce(endpoint: RunningEndpoint) -> None:
        announced.append(endpoint)
        ready.set()

    thread = threading.Thread(
        target=serve, args=(StandInExchange(),),
        kwargs={"port": 0, "users": {"demo": "demo-pw"}, "stop": stop, "announce": announce},
    )
    thread.start()
    try:
        assert ready.wait(5)
        endpoint = announced[0]
        assert endpoint_urls(endpoint, ["EX01"]) == [
            f"http://127.0.0.1:{endpoint.port}/EX01/PowerShell",
            f"http://127.0.0.1:{endpoint.port}/EX01/wsman",
        ]
        wsman = WSMan("127.0.0.1", port=endpoint.port, path="EX01/PowerShell", ssl=False, auth="basic",
                      encryption="never", username="demo", password="demo-pw")
        with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-ServerComponentState")
            assert len(ps.invoke()) == 2
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_without_speed_the_simulated_clock_is_the_real_current_time() -> None:
    from datetime import UTC, datetime

    from devtools.management.commands.simulate_exchange import build_simulation

    sim = build_simulation(["EX01"], [])
    assert abs((sim.clock.now() - datetime.now(UTC)).total_seconds()) < 5
    assert sim.clock.speed == 1.0
