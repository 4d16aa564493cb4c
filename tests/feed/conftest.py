"""Fixtures of the regulator feed tests: a real database (SQLite file and a throwaway PostgreSQL 15 cluster),
event builders, and the feed served by uvicorn against the real broker."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import uvicorn

from carepulse import events
from carepulse.settings import Settings
from feed import auth, db
from feed.api import create_feed_app
from tests.kafka_helpers import free_port

#: Debian's PostgreSQL server binaries, newest major version installed (`apt-get install postgresql`).
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=Path("/nonexistent"))
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


# -- databases ---------------------------------------------------------------------------------------------
class PostgresCluster:
    """A throwaway PostgreSQL cluster (Debian's server binaries) run as the `postgres` user on a free loopback
    port, in a temporary directory; `stop` and `start` it again to take the database away from a client."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
            pytest.skip("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="carepulse-feed-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data, self.port = self.root / "data", free_port()
        #: A server URL without a database name.
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _as_postgres(self, program: str, *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / program), *arguments], check=True,
                              capture_output=True, text=True, timeout=90)

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                          "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                                "-c synchronous_commit=off -c full_page_writes=off", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects the clients and shuts down cleanly; ``immediate`` is a crash (recovery at start)."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"feed_{uuid.uuid4().hex[:12]}"
        admin = db.make_engine(f"{self.url}/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        admin.dispose()
        return f"{self.url}/{name}"

    def remove(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresCluster]:
    """The session's throwaway PostgreSQL cluster."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def _new_database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'feed.sqlite3'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    return _new_database(request.param, request, tmp_path)


@pytest.fixture
def engine(database_url: str):
    engine = db.make_engine(database_url)
    db.migrate(engine)
    yield engine
    engine.dispose()


# -- events ------------------------------------------------------------------------------------------------
def indicator_update(location_id: str, indicator_id: str = "escalation_timeliness", *, numerator: float = 19,
                     denominator: float = 20, status: str = "green", window_end: datetime = NOW,
                     kind: str = "current", **overrides) -> events.IndicatorUpdate:
    value = numerator / denominator * 100 if denominator else None
    fields = dict(
        event_id=uuid.uuid4(), occurred_at=window_end, received_at=window_end,
        source=events.Source(gateway_id="worker-test"), location_id=location_id, indicator_id=indicator_id,
        title="NEWS2 escalation timeliness", unit="% of escalations", kind=kind,
        window_start=window_end - timedelta(days=28), window_end=window_end, numerator=numerator,
        denominator=denominator, value=value, status=status, minimum_denominator=5, direction="higher_is_better",
        green=events.ThresholdInfo(op=">=", value=95, source="cqc_domain.md §2.2 row 7", proposal=True),
        red=events.ThresholdInfo(op="<", value=80, source="cqc_domain.md §2.2 row 7", proposal=True),
        details={"late": 1}, rules_version="carepulse-quality.1",
    )
    return events.IndicatorUpdate(**{**fields, **overrides})


def location_capacity(location_id: str, setting: str = "care_home", *, occurred_at: datetime = NOW,
                      **figures) -> events.LocationCapacity:
    """A `LocationCapacity` as the worker publishes it; `figures` are its bed, people and hours fields."""
    return events.LocationCapacity(
        event_id=uuid.uuid4(), occurred_at=occurred_at, received_at=occurred_at,
        source=events.Source(gateway_id="worker-test"), location_id=location_id, setting=setting,
        profile_event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"profile/{location_id}"), **figures,
    )


def escalation(location_id: str, resident_id: str, *, risk: str = "high", status: str = "raised",
               episode_id: uuid.UUID | None = None, occurred_at: datetime = NOW) -> events.Escalation:
    return events.Escalation(
        event_id=uuid.uuid4(), occurred_at=occurred_at, received_at=occurred_at,
        source=events.Source(gateway_id="worker-test"), location_id=location_id, resident_id=resident_id,
        episode_id=episode_id or uuid.uuid4(), status=status, risk=risk, total=8 if risk == "high" else 5,
        any_single_3=False, response="Emergency response", rules_version="news2.1", raised_at=occurred_at,
        deadline_at=occurred_at + timedelta(minutes=30),
    )


def overdue(event: events.Escalation, at: datetime) -> events.EscalationOverdue:
    return events.EscalationOverdue(
        event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=event.source, location_id=event.location_id,
        resident_id=event.resident_id, episode_id=event.episode_id, risk=event.risk, raised_at=event.occurred_at,
        deadline_at=event.deadline_at,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- the feed served for real --------------------------------------------------------------------------------
class FeedServer:
    """The feed app under uvicorn in a thread (its own event loop), consuming from the real broker."""

    def __init__(self, settings: Settings, engine, **app_options) -> None:
        self.settings = settings
        self.engine = engine
        self.app = create_feed_app(settings, engine=engine, **app_options)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.feed_port,
                                                    log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.feed_port}"

    def __enter__(self) -> FeedServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the feed server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    @property
    def consumer(self):
        return self.app.state.feed.consumer


def feed_settings(bootstrap: str, **overrides) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, feed_port=free_port(), feed_consumer_group=unique("feed-test"),
                    session_timeout_s=6, heartbeat_interval_s=1, **overrides)


def key(engine, role: str) -> dict[str, str]:
    _, token = auth.create_key(engine, role=role, name=f"test {role}", now=NOW)
    return {"Authorization": f"Bearer {token}"}


def wait_for(condition, timeout_s: float = 20.0, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


os.environ.setdefault("CAREPULSE_LOG_LEVEL", "WARNING")
