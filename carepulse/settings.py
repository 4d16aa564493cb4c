"""All runtime configuration, read from ``CAREPULSE_*`` environment variables.

This is the only module that reads the environment: everything else receives a `Settings`.
Clinical thresholds are *not* settings; they live in versioned config under ``indicators/config``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREPULSE_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port] of an existing Kafka-protocol broker (e.g. Apache Kafka). "
        "When set, nothing is started and this broker is used; when unset, the embedded broker is used.",
    )
    broker_host: str = Field(default="127.0.0.1", description="Loopback address of the embedded broker.")
    broker_port: int = Field(default=19092, ge=1, le=65535, description="Port of the embedded broker.")
    data_dir: Path = Field(default=Path(".carepulse"), description="Where local state (gateway buffer, logs) lives.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    topic_partitions: int = Field(
        default=4, ge=1, description="Partitions of every keyed topic; Faust changelogs use the same count."
    )
    # The embedded broker holds a JoinGroup for half the session timeout (streaming.md §3.5.3), so a short
    # session makes workers start and rebalance in seconds. Apache Kafka deployments may raise it.
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    # The embedded broker under-reports ListOffsets by (records in last batch - 1), which makes Faust table
    # recovery stop early; one record per produced batch avoids it (streaming.md §3.5.2, verified there).
    one_record_per_batch: bool = Field(
        default=True,
        description="Produce one record per batch from the worker (works around the embedded broker's "
        "end-offset under-reporting). Turn off on Apache Kafka for throughput.",
    )

    escalation_rules_path: Path | None = Field(
        default=None,
        description="An alternative escalation rules file (same layout as indicators/config/escalation.toml), "
        "e.g. with deadlines of seconds for tests. Unset: the packaged, versioned rules.",
    )
    quality_rules_path: Path | None = Field(
        default=None,
        description="An alternative care-quality rules file (same layout as indicators/config/quality.toml). "
        "Unset: the packaged, versioned rules.",
    )
    indicators_wall_clock_lag_s: float = Field(
        default=300.0, ge=0,
        description="A location with no recent events has its indicators evaluated this far behind the wall "
        "clock, so windows slide and deadlines pass while it is quiet; events arriving later still correct them.",
    )
    indicators_refresh_s: float = Field(
        default=15.0, ge=0,
        description="A location's indicators are re-evaluated at most this often (each evaluation reads its "
        "whole windows; escalations must not wait behind it).",
    )
    indicators_future_tolerance_s: float = Field(
        default=300.0, ge=0,
        description="Care events dated further than this ahead of the worker's clock are dead-lettered: a "
        "device with a wrong clock must not move a location's indicators into the future.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the Prometheus metrics endpoints listen on.")
    worker_metrics_port: int = Field(
        default=9471, ge=0, le=65535, description="Port of the worker's /metrics; 0 turns the endpoint off."
    )
    gateway_metrics_port: int = Field(
        default=9472, ge=0, le=65535, description="Port of the gateway's /metrics; 0 turns the endpoint off."
    )
    feed_metrics_port: int = Field(
        default=9473, ge=0, le=65535, description="Port of the feed's /metrics; 0 turns the endpoint off."
    )
    worker_id: str = Field(default="carepulse-worker", description="Faust application id (consumer group).")
    worker_web_port: int = Field(default=6066, ge=1, le=65535)
    gateway_id: str = Field(default="gw-demo-1", description="Identity of this edge gateway in event sources.")
    gateway_port: int = Field(default=8470, ge=1, le=65535, description="Port of the gateway's tablet intake API.")
    gateway_host: str = Field(default="127.0.0.1", description="Address the tablet intake API listens on.")
    gateway_buffer_max_bytes: int = Field(
        default=512 * 1024 * 1024, gt=0, description="Disk the gateway's store-and-forward buffer may use."
    )
    ble_transport: str = Field(
        default="virtual",
        description="Bumble transport of the gateway's BLE controller, e.g. 'usb:0' or 'hci-socket:0' for a real "
        "dongle; 'virtual' runs the emulated care home's devices on an in-process virtual link.",
    )

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers clients should use: the external broker if configured, else the embedded one."""
        return self.kafka_bootstrap or f"{self.broker_host}:{self.broker_port}"

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    # --- regulator feed (feed/): fields feed_*, read from CAREPULSE_FEED_* ----------------------------
    feed_database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the feed's database, e.g. postgresql+psycopg://user@host/carepulse_feed. "
        "Unset: an embedded SQLite file, feed.sqlite3 in the data directory.",
    )
    feed_host: str = Field(default="127.0.0.1", description="Address the regulator feed API listens on.")
    feed_port: int = Field(default=8480, ge=1, le=65535, description="Port of the regulator feed API.")
    feed_consumer_group: str = Field(default="carepulse-feed", description="Kafka consumer group of the feed.")
    feed_consume: bool = Field(
        default=True, description="Consume the topics into the database; off: serve the database only."
    )
    feed_suppression_threshold: int = Field(
        default=5, ge=1,
        description="Counts below this are shown to the regulator as suppressed (small-cell suppression, "
        "cqc_domain.md §5).",
    )
    feed_public_base_url: str = Field(
        default="http://127.0.0.1:8480",
        description="Base URL the feed is reached at; used in FHIR canonical URLs and identifier systems.",
    )
    feed_inspection_window_days: int = Field(
        default=28, ge=1, le=366, description="Trend window of the mock digital inspection (28 days, §2.1)."
    )
    # --- end of regulator feed settings ------------------------------------------------------------------


def child_environment(**overrides: str) -> dict[str, str]:
    """This process's environment with some ``CAREPULSE_*`` variables overridden, for a child process
    (e.g. the demo's gateway with its own data directory)."""
    return {**os.environ, **{f"CAREPULSE_{name.upper()}": value for name, value in overrides.items()}}
