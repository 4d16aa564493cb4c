"""The gateway service's own decisions: what the simulated tablet sends,
refusing to start when misconfigured, and serving /metrics without ever depending on it."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime, timezone

import httpx
from prometheus_client.parser import text_string_to_metric_families

from carepulse import events
from carepulse.settings import Settings
from gateway.service import run_gateway
from gateway.simulator import manual_entry
from tests.kafka_helpers import CarepulseProcess, free_port


def test_manual_entry_carries_only_what_a_carer_judges():
    at = datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc)
    observation = events.ObservationSet(
        event_id=uuid.uuid4(), occurred_at=at, received_at=at,
        source=events.Source(gateway_id="gw-test", device_id="tablet-1"), location_id="loc-test",
        resident_id="res-test-001", respiration_rate=24, spo2=93, spo2_scale=1, on_oxygen=False,
        systolic_bp=101, pulse=111, consciousness="C", temperature=38.4,
    )
    assert manual_entry(observation) == {
        "occurred_at": "2026-01-05T09:30:00+00:00",
        "recorded_by": "carer-demo",
        "respiration_rate": 24,
        "consciousness": "C",
        "on_oxygen": False,
    }


def test_simulation_on_a_real_controller_is_refused_with_one_line(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path, ble_transport="usb:0")
    assert run_gateway(settings, simulate=True) == 2
    error = capsys.readouterr().err
    assert error == (
        "carepulse: --simulate drives the emulated care home, which needs CAREPULSE_BLE_TRANSPORT=virtual "
        "(it is 'usb:0'); use --no-simulate with a real controller\n"
    )
    assert not (tmp_path / "gateway").exists()


def test_an_intake_port_in_use_stops_the_gateway_at_start(tmp_path, caplog):
    port = free_port()
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", port))
        occupant.listen()
        settings = Settings(data_dir=tmp_path, gateway_port=port, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                            gateway_metrics_port=0)
        assert run_gateway(settings, simulate=False) == 1
    assert f"the tablet intake cannot listen on 127.0.0.1:{port}" in caplog.text


# -- /metrics ------------------------------------------------------------------------------------------
def _gateway(tmp_path, metrics_port: int) -> tuple[CarepulseProcess, str]:
    """`carepulse gateway --no-simulate` as a real process; the broker is unreachable (it buffers)."""
    intake_port = free_port()
    process = CarepulseProcess(
        ["gateway", "--no-simulate"], f"127.0.0.1:{free_port()}", tmp_path / "gateway.log",
        {"CAREPULSE_DATA_DIR": str(tmp_path), "CAREPULSE_GATEWAY_PORT": str(intake_port),
         "CAREPULSE_GATEWAY_METRICS_PORT": str(metrics_port), "CAREPULSE_GATEWAY_ID": "gw-metrics-test"},
    )
    return process.start(), f"http://127.0.0.1:{intake_port}"


def _wait_healthy(process: CarepulseProcess, intake_url: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.process is not None and process.process.poll() is None, process.log()
        try:
            response = httpx.get(f"{intake_url}/v1/health", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the gateway did not start:\n{process.log()}"
        time.sleep(0.1)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_gateway_serves_its_metrics_on_the_configured_port(tmp_path):
    metrics_port = free_port()
    started = time.time()
    process, intake_url = _gateway(tmp_path, metrics_port)
    try:
        assert _wait_healthy(process, intake_url) == {"status": "ok", "buffer_depth": 0}
        response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert response.status_code == 200
        samples = _samples(response.text)
    finally:
        assert process.stop() == 0
    assert samples[("carepulse_gateway_info", (("gateway_id", "gw-metrics-test"),))] == 1
    assert started <= samples[("carepulse_gateway_last_event_timestamp_seconds", ())] <= time.time()
    assert samples[("carepulse_gateway_buffer_limit_bytes", ())] == Settings().gateway_buffer_max_bytes
    assert samples[("carepulse_gateway_buffer_messages", ())] == 0
    assert samples[("carepulse_gateway_events_in_total", (("topic", "readings"),))] == 0
    assert samples[("carepulse_gateway_ble_devices_seen", ())] == 0
    assert ("process_resident_memory_bytes", ()) in samples
    assert not any(name.startswith(("carepulse_worker_", "carepulse_feed_"))
                   for name, _ in samples)  # only the gateway's own registry


def test_a_metrics_port_in_use_is_logged_and_the_gateway_runs_without_it(tmp_path):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        metrics_port = occupant.getsockname()[1]
        process, intake_url = _gateway(tmp_path, metrics_port)
        try:
            assert _wait_healthy(process, intake_url) == {"status": "ok", "buffer_depth": 0}
        finally:
            assert process.stop() == 0  # a clean stop: it was running, not failing
    log = process.log()
    assert f"the gateway metrics endpoint cannot listen on 127.0.0.1:{metrics_port}" in log
    assert "running without /metrics" in log
    assert "gateway stopped" in log
