"""The gateway service's own decisions: when to warn about the buffer, what the simulated tablet sends,
and refusing to start when misconfigured."""

from __future__ import annotations

import socket
import uuid
from datetime import datetime, timezone

import pytest

from carepulse import events
from carepulse.settings import Settings
from gateway.service import BufferAlarm, run_gateway
from gateway.simulator import manual_entry
from tests.kafka_helpers import free_port


@pytest.mark.parametrize(
    ("sizes_bytes", "expected"),
    [
        ([0, 500, 900], [None, None, None]),  # at 90 % exactly: not yet over
        ([901], [True]),
        ([901, 950, 1000], [True, None, None]),  # one warning per crossing, not per check
        ([901, 899], [True, False]),
        ([901, 899, 100, 950], [True, False, None, True]),  # a second outage warns again
    ],
)
def test_buffer_alarm_reports_each_crossing_of_90_percent_once(sizes_bytes, expected):
    alarm = BufferAlarm(max_bytes=1000)
    assert [alarm.check(size) for size in sizes_bytes] == expected


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
        settings = Settings(data_dir=tmp_path, gateway_port=port, kafka_bootstrap=f"127.0.0.1:{free_port()}")
        assert run_gateway(settings, simulate=False) == 1
    assert f"the tablet intake cannot listen on 127.0.0.1:{port}" in caplog.text
