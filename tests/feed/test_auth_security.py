"""Security properties of the feed and the tablet intake that no single endpoint test shows: no secret and no
resident id in any log line, whatever the request; over-long request lines and headers refused with a 4xx
by the real server (the feed reads no bodies: it is read-only, and a body sent anyway is never read)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import timedelta

import pytest
import uvicorn
from fastapi.testclient import TestClient

from carepulse.settings import Settings
from feed import auth
from feed.api import create_feed_app
from gateway.buffer import DurableBuffer
from gateway.intake import create_intake_app
from gateway.publisher import Publisher
from gateway.registry import Registry
from tests.feed.conftest import NOW
from tests.feed.test_api import LOC_A, RESIDENTS, seed
from tests.kafka_helpers import free_port

ALL_RESIDENTS = [r for residents in RESIDENTS.values() for r in residents]


def _assert_free_of(records: list[logging.LogRecord], secrets: list[str]) -> None:
    for record in records:
        if record.name.split(".")[0] in ("httpx", "httpcore"):
            continue  # the test's own client logs the URLs it requests
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for secret in secrets:
            assert secret not in text, f"{record.name} logged {secret[:8]}...: {text[:300]}"


@pytest.fixture
def feed_client(engine):
    seed(engine)
    app = create_feed_app(Settings(feed_consume=False), engine=engine, now=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_the_feed_logs_no_key_secret_and_no_resident_id(feed_client, engine, caplog):
    caplog.set_level(logging.DEBUG)
    provider_id, provider = auth.create_key(engine, role="provider:prov-a", name="manager", now=NOW)
    _, regulator = auth.create_key(engine, role="regulator", name="cqc", now=NOW)
    revoked_id, revoked = auth.create_key(engine, role="provider:prov-a", name="left", now=NOW)
    auth.revoke_key(engine, revoked_id, now=NOW)
    _, expired = auth.create_key(engine, role="provider:prov-a", name="temp", now=NOW - timedelta(days=2),
                                 expires_in_days=1)
    secrets = [provider, regulator, revoked, expired, *ALL_RESIDENTS]
    for token in (provider, regulator, revoked, expired, provider.upper(), "cpf_" + "x" * 300):
        headers = {"Authorization": f"Bearer {token}"}
        for path in (f"/v1/locations/{LOC_A}/escalations", f"/v1/locations/{LOC_A}/escalations?status=raised",
                     f"/v1/locations/{LOC_A}/escalations?limit=0", "/v1/escalations/summary?since=nope",
                     f"/v1/locations/{LOC_A}/inspection", "/v1/locations/res-a0", f"/v1/nothing/{token}"):
            assert feed_client.get(path, headers=headers).status_code < 500
    _assert_free_of(caplog.records, secrets)


def test_the_intake_logs_no_token_and_no_resident_id(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    registry = Registry(tmp_path / "registry.sqlite")
    resident, elsewhere = "res-secret-7d1c", "res-secret-elsewhere-2b9e"
    registry.add_resident(resident, "loc-a")
    registry.add_resident(elsewhere, "loc-b")
    token = registry.provision_tablet("tab-1", "loc-a")
    revoked = registry.provision_tablet("tab-2", "loc-a")
    registry.revoke_tablet("tab-2")
    buffer = DurableBuffer(tmp_path / "buffer.sqlite")
    app = create_intake_app(registry, Publisher("127.0.0.1:9", buffer), gateway_id="gw-test", now=lambda: NOW)
    observation = {"occurred_at": NOW.isoformat(), "recorded_by": "carer-7", "respiration_rate": 18,
                   "consciousness": "A", "on_oxygen": False}
    with TestClient(app, raise_server_exceptions=False) as client:
        for auth_token in (token, revoked, token + "x"):
            headers = {"Authorization": f"Bearer {auth_token}"}
            for who in (resident, elsewhere, "res-secret-nobody"):
                client.post(f"/v1/residents/{who}/observations", json=observation, headers=headers)
                client.post(f"/v1/residents/{who}/observations", json={**observation, "spo2": 300}, headers=headers)
                client.post(f"/v1/residents/{who}/fluids", content=b"{", headers=headers)
                client.post("/v1/call-bells/c1/answer", json={"answered_by": "c", "priority": "routine",
                                                               "call_type": "pendant", "resident_id": who}, headers=headers)
        buffer.close()  # an internal error, which logs its traceback
        assert client.post(f"/v1/residents/{resident}/observations", json=observation,
                           headers={"Authorization": f"Bearer {token}"}).status_code == 500
    registry.close()
    assert "internal error in POST" in caplog.text  # the logs were captured
    _assert_free_of(caplog.records, [token, revoked, resident, elsewhere, "res-secret-nobody"])


# -- the real server: request lines and headers beyond its limits --------------------------------------------
@pytest.fixture
def served_feed(engine):
    port = free_port()
    app = create_feed_app(Settings(feed_consume=False), engine=engine, now=lambda: NOW)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the feed did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=15)


def _raw_status(port: int, request: bytes) -> int:
    """Send `request` as is and return the status code of the answer (0 if the server closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"GET /v1/locations/" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="200-KB-URL"),
    pytest.param(b"GET /v1/locations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 200_000 + b"\r\n\r\n",
                 id="200-KB-header"),
    pytest.param(b"GET /v1/locations HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 20_000 + b"\r\n",
                 id="20000-headers"),
    pytest.param(b"GET /v1/locations HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 1000,
                 id="10-GB-declared-body"),
    pytest.param(b"GET /v1/locations?" + b"limit=1&" * 30_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="240-KB-query"),
])
def test_over_long_requests_are_refused_with_a_4xx_by_the_real_server(served_feed, request_bytes):
    status = _raw_status(served_feed, request_bytes)
    assert 400 <= status < 500, status
