"""The tablet intake over HTTP: a real Registry and a real durable buffer, read back through their surfaces.

Every response is checked by status and exact JSON body; every accepted entry by the complete event
in the buffer, its topic and its key.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from carepulse import events, topics
from gateway.buffer import DurableBuffer
from gateway.intake import create_intake_app
from gateway.publisher import Publisher
from gateway.registry import Registry
from tests.factories import T0, unique_resident
from tests.kafka_helpers import parse_all, read_topic

NOW = T0
EVENT_ID = uuid.UUID("0b5c8f0e-5a43-4d67-9d4c-2f3f1f1e6a01")
EPISODE_ID = uuid.UUID("7d3e1c52-8a2b-4f0e-b1a9-5c6d7e8f9a02")
UNAUTHORISED = {"error": "missing or invalid tablet token"}
OBSERVATION = {"occurred_at": "2026-11-23T08:50:00+00:00", "recorded_by": "carer-7", "respiration_rate": 18,
               "consciousness": "A", "on_oxygen": False}
URINALYSIS = {"occurred_at": "2026-11-23T08:40:00+00:00", "recorded_by": "nurse-2", "reader": "smartphone_reader",
              "leukocytes": "++", "nitrites": "positive", "blood": "trace", "protein": "negative"}


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "registry.sqlite")
    registry.add_resident("res-1", "loc-a")
    registry.add_resident("res-2", "loc-b")
    yield registry
    registry.close()


@pytest.fixture
def token(registry):
    return registry.provision_tablet("tab-1", "loc-a")


@pytest.fixture
def buffer(tmp_path):
    buffer = DurableBuffer(tmp_path / "buffer.sqlite")
    yield buffer
    buffer.close()


def _client(registry, buffer, token):
    # The publisher is not started: an accepted entry stays in the buffer, where the test reads it.
    app = create_intake_app(registry, Publisher("127.0.0.1:9", buffer), gateway_id="gw-test", now=lambda: NOW)
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def client(registry, buffer, token):
    with _client(registry, buffer, token) as client:
        yield client


def _envelope(occurred_at=NOW):
    return dict(event_id=EVENT_ID, occurred_at=occurred_at, received_at=NOW,
                source=events.Source(gateway_id="gw-test", device_id="tab-1"), location_id="loc-a")


ACCEPTED = [
    pytest.param(
        "/v1/residents/res-1/observations", {**OBSERVATION, "spo2": 96},
        events.ManualObservation(**_envelope(NOW - timedelta(minutes=10)), resident_id="res-1",
                                 recorded_by="carer-7", respiration_rate=18, consciousness="A",
                                 on_oxygen=False, spo2=96),
        topics.READINGS, "res-1", id="observations"),
    pytest.param(
        "/v1/residents/res-1/fluids", {"offered_ml": 200, "consumed_ml": 150, "recorded_by": "carer-7"},
        events.FluidIntake(**_envelope(), resident_id="res-1", offered_ml=200, consumed_ml=150,
                           method="carer", recorded_by="carer-7"),
        topics.CARE_EVENTS, "loc-a", id="fluids"),
    pytest.param(
        "/v1/residents/res-1/falls",
        {"detected_by": "device", "confirmed": True, "harm": "low", "alert_id": "alert-3",
         "recorded_by": "carer-7"},
        events.Fall(**_envelope(), resident_id="res-1", detected_by="device", confirmed=True, harm="low",
                    alert_id="alert-3", recorded_by="carer-7"),
        topics.CARE_EVENTS, "loc-a", id="falls"),
    pytest.param(
        "/v1/call-bells/call-42/answer",
        {"answered_by": "carer-7", "priority": "emergency", "call_type": "pull_cord", "resident_id": "res-1"},
        events.CallBell(**_envelope(), resident_id="res-1", call_id="call-42", phase="answered",
                        priority="emergency", call_type="pull_cord", answered_by="carer-7"),
        topics.CARE_EVENTS, "loc-a", id="call-bell-answer"),
    pytest.param(
        "/v1/residents/res-1/visits/visit-9/check-in", {"carer_id": "carer-7", "verification": "qr"},
        events.VisitCheckIn(**_envelope(), resident_id="res-1", visit_id="visit-9", carer_id="carer-7",
                            verification="qr"),
        topics.CARE_EVENTS, "loc-a", id="visit-check-in"),
    pytest.param(
        "/v1/residents/res-1/visits/visit-9/check-out",
        {"carer_id": "carer-7", "task_outcomes": [{"task_id": "meds-am", "outcome": "refused"}]},
        events.VisitCheckOut(**_envelope(), resident_id="res-1", visit_id="visit-9", carer_id="carer-7",
                             task_outcomes=[events.TaskOutcome(task_id="meds-am", outcome="refused")]),
        topics.CARE_EVENTS, "loc-a", id="visit-check-out"),
    pytest.param(
        "/v1/residents/res-1/escalations/acknowledge",
        {"acknowledged_by": "nurse-2", "action": "called the GP", "episode_id": str(EPISODE_ID)},
        events.EscalationAcknowledgement(**_envelope(), resident_id="res-1", acknowledged_by="nurse-2",
                                         action="called the GP", episode_id=EPISODE_ID),
        topics.CLINICAL_ACTIONS, "res-1", id="escalation-acknowledgement"),
    pytest.param(
        "/v1/residents/res-1/clinical-reviews", {"reviewed_by": "gp-1", "outcome": "antibiotics started"},
        events.ClinicalReview(**_envelope(), resident_id="res-1", reviewed_by="gp-1",
                              outcome="antibiotics started"),
        topics.CLINICAL_ACTIONS, "res-1", id="clinical-review"),
    pytest.param(
        "/v1/residents/res-1/urinalysis", {**URINALYSIS, "episode_id": str(EPISODE_ID)},
        events.UrinalysisResult(**_envelope(NOW - timedelta(minutes=20)), resident_id="res-1",
                                recorded_by="nurse-2", reader="smartphone_reader", leukocytes="++",
                                nitrites="positive", blood="trace", protein="negative", episode_id=EPISODE_ID),
        topics.CLINICAL_ACTIONS, "res-1", id="urinalysis"),
    pytest.param(
        "/v1/residents/res-1/urinalysis", {**URINALYSIS, "reader": "visual", "nitrites": "negative"},
        events.UrinalysisResult(**_envelope(NOW - timedelta(minutes=20)), resident_id="res-1",
                                recorded_by="nurse-2", reader="visual", leukocytes="++", nitrites="negative",
                                blood="trace", protein="negative"),
        topics.CLINICAL_ACTIONS, "res-1", id="urinalysis-read-by-eye-for-the-open-recommendation"),
]
RESIDENT_PATHS = sorted({param.values[0] for param in ACCEPTED if param.values[0].startswith("/v1/residents/")})
ENTRY_PATHS = sorted({param.values[0] for param in ACCEPTED})


def _buffered(buffer):
    """(topic, key, event) of every buffered message; the value must parse as a carepulse event."""
    return [(row.topic, row.key, events.any_event_adapter.validate_json(row.value))
            for row in buffer.pending(100)]


@pytest.mark.parametrize("path, body, expected, spec, key", ACCEPTED)
def test_each_entry_is_buffered_as_its_event(client, buffer, path, body, expected, spec, key):
    response = client.post(path, json={"event_id": str(EVENT_ID), **body})
    assert (response.status_code, response.json()) == (202, {"event_id": str(EVENT_ID), "status": "accepted"})
    assert _buffered(buffer) == [(spec.name, key.encode(), expected)]
    assert type(expected) in spec.value_models


def test_the_gateway_assigns_an_event_id_when_the_tablet_sends_none(client, buffer):
    response = client.post("/v1/residents/res-1/observations", json=OBSERVATION)
    event_id = uuid.UUID(response.json()["event_id"])
    assert (response.status_code, response.json(), event_id.version) == (
        202, {"event_id": str(event_id), "status": "accepted"}, 4
    )
    assert [event.event_id for _, _, event in _buffered(buffer)] == [event_id]


def test_a_retried_entry_keeps_its_event_id_so_consumers_can_drop_the_duplicate(client, buffer):
    body = {"event_id": str(EVENT_ID), **OBSERVATION}
    responses = [client.post("/v1/residents/res-1/observations", json=body) for _ in range(2)]
    assert [(r.status_code, r.json()) for r in responses] == [
        (202, {"event_id": str(EVENT_ID), "status": "accepted"})
    ] * 2
    assert [event.event_id for _, _, event in _buffered(buffer)] == [EVENT_ID, EVENT_ID]


@pytest.mark.parametrize("path", ENTRY_PATHS)
def test_an_entry_without_a_token_is_refused(client, buffer, path):
    response = client.post(path, json={}, headers={"Authorization": ""})
    assert (response.status_code, response.json(), response.headers["WWW-Authenticate"]) == (
        401, UNAUTHORISED, "Bearer"
    )
    assert buffer.depth() == 0


@pytest.mark.parametrize("authorization", ["Bearer not-a-token", "Bearer", "Basic dGFiLTE6c2VjcmV0"])
def test_an_entry_with_a_wrong_token_is_refused(client, buffer, authorization):
    response = client.post("/v1/residents/res-1/observations", json=OBSERVATION,
                           headers={"Authorization": authorization})
    assert (response.status_code, response.json(), response.headers["WWW-Authenticate"]) == (
        401, UNAUTHORISED, "Bearer"
    )
    assert buffer.depth() == 0


def test_a_revoked_token_is_refused(client, registry, buffer):
    registry.revoke_tablet("tab-1")
    response = client.post("/v1/residents/res-1/observations", json=OBSERVATION)
    assert (response.status_code, response.json()) == (401, UNAUTHORISED)
    assert buffer.depth() == 0


def test_the_token_is_checked_before_the_body(client):
    response = client.post("/v1/residents/res-1/observations", json={"unknown": 1},
                           headers={"Authorization": ""})
    assert (response.status_code, response.json()) == (401, UNAUTHORISED)


@pytest.mark.parametrize("path", RESIDENT_PATHS)
@pytest.mark.parametrize("resident", ["res-9", "res-2"], ids=["unknown", "other-location"])
def test_a_resident_not_at_the_tablets_location_is_not_found(client, buffer, path, resident):
    response = client.post(path.replace("res-1", resident), json={})
    assert (response.status_code, response.json()) == (
        404, {"error": f"resident {resident} is not registered at location loc-a"}
    )
    assert buffer.depth() == 0


def test_a_call_bell_answer_naming_a_resident_elsewhere_is_not_found(client, buffer):
    response = client.post("/v1/call-bells/call-42/answer", json={
        "answered_by": "carer-7", "priority": "routine", "call_type": "call_point", "resident_id": "res-2"})
    assert (response.status_code, response.json()) == (
        404, {"error": "resident res-2 is not registered at location loc-a"}
    )
    assert buffer.depth() == 0


def _invalid(*details):
    summary = "; ".join(f"{field}: {message}" for field, message in details)
    return {"error": f"request is not valid: {summary}",
            "details": [{"field": field, "message": message} for field, message in details]}


@pytest.mark.parametrize("path, body, expected", [
    pytest.param(
        "/v1/residents/res-1/observations",
        {"occurred_at": "2026-11-23T08:50:00", "respiration_rate": "fast", "consciousness": "X",
         "on_oxygen": False, "note": "hi"},
        _invalid(("occurred_at", "Input should have timezone info"), ("recorded_by", "Field required"),
                 ("respiration_rate", "Input should be a valid number, unable to parse string as a number"),
                 ("consciousness", "Input should be 'A', 'C', 'V', 'P' or 'U'"),
                 ("note", "Extra inputs are not permitted")),
        id="observation-fields"),
    pytest.param(
        "/v1/residents/res-1/observations", {**OBSERVATION, "spo2": 104, "temperature": 60},
        _invalid(("spo2", "Value error, must be between 50 and 100 %"),
                 ("temperature", "Value error, must be between 25.0 and 45.0 °C")),
        id="impossible-vitals-refused-at-the-bedside"),
    pytest.param(
        "/v1/residents/res-1/observations", {**OBSERVATION, "occurred_at": None},
        _invalid(("occurred_at", "Input should be a valid datetime")), id="observation-needs-occurred-at"),
    pytest.param(
        "/v1/residents/4505577104/observations", OBSERVATION,
        _invalid(("resident_id", "Value error, resident_id must be a pseudonymous id; this value looks like "
                                 "an NHS number")),
        id="nhs-number-not-echoed"),
    pytest.param(
        "/v1/residents/res-1/fluids", {"offered_ml": 200, "consumed_ml": -5, "recorded_by": "carer-7"},
        _invalid(("consumed_ml", "Input should be greater than or equal to 0")), id="fluid-volume"),
    pytest.param(
        "/v1/residents/res-1/falls",
        {"detected_by": "device", "confirmed": False, "harm": "moderate", "recorded_by": "carer-7"},
        _invalid(("harm", "Value error, harm is recorded only for a confirmed fall; an unconfirmed alert is "
                          "not a fall")),
        id="harm-needs-a-confirmed-fall"),
    pytest.param(
        "/v1/residents/res-1/visits/visit-9/check-out",
        {"carer_id": "carer-7", "task_outcomes": [{"task_id": "meds-am", "outcome": "forgot"}]},
        _invalid(("task_outcomes.0.outcome", "Input should be 'done', 'refused', 'withheld_by_clinician', "
                                             "'not_required', 'in_hospital' or 'not_done'")),
        id="task-outcome"),
    pytest.param(
        "/v1/call-bells/call 42/answer",
        {"answered_by": "carer-7", "priority": "urgent", "call_type": "call_point"},
        _invalid(("call_id", "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'"),
                 ("priority", "Input should be 'routine' or 'emergency'")),
        id="call-bell"),
    pytest.param(
        "/v1/residents/res-1/urinalysis",
        {**URINALYSIS, "leukocytes": "++++", "nitrites": "+", "blood": None, "episode_id": "episode-1"},
        _invalid(("leukocytes", "Input should be 'negative', 'trace', '+', '++' or '+++'"),
                 ("nitrites", "Input should be 'negative' or 'positive'"),
                 ("blood", "Input should be 'negative', 'trace', '+', '++' or '+++'"),
                 ("episode_id", "Input should be a valid UUID, invalid character: found `p` at 1")),
        id="urinalysis-grades"),
    pytest.param(
        "/v1/residents/res-1/urinalysis",
        {key: value for key, value in URINALYSIS.items() if key not in ("occurred_at", "reader", "protein")},
        _invalid(("occurred_at", "Field required"), ("reader", "Field required"), ("protein", "Field required")),
        id="urinalysis-needs-its-time-reader-and-every-grade"),
])
def test_an_invalid_entry_is_refused_field_by_field(client, buffer, path, body, expected):
    response = client.post(path, json=body)
    assert (response.status_code, response.json()) == (422, expected)
    assert buffer.depth() == 0


@pytest.mark.parametrize("occurred_at, expected", [
    (NOW + timedelta(minutes=5, seconds=1), _invalid((
        "occurred_at", "must not be more than 5 minutes ahead of the gateway clock "
                       "(2026-11-23T09:00:00+00:00); check the tablet's clock"))),
    (NOW - timedelta(days=7, seconds=1), _invalid((
        "occurred_at", "must not be more than 7 days before the gateway clock (2026-11-23T09:00:00+00:00)"))),
    (NOW + timedelta(minutes=5), {"event_id": str(EVENT_ID), "status": "accepted"}),
    (NOW - timedelta(days=7), {"event_id": str(EVENT_ID), "status": "accepted"}),
], ids=["too-far-ahead", "too-old", "at-the-lead-limit", "at-the-age-limit"])
def test_occurred_at_must_be_near_the_gateway_clock(client, buffer, occurred_at, expected):
    body = {**OBSERVATION, "event_id": str(EVENT_ID), "occurred_at": occurred_at.isoformat()}
    response = client.post("/v1/residents/res-1/observations", json=body)
    accepted = "status" in expected
    assert (response.status_code, response.json()) == (202 if accepted else 422, expected)
    assert [event.occurred_at for _, _, event in _buffered(buffer)] == ([occurred_at] if accepted else [])


def test_malformed_json_is_a_bad_request(client, buffer):
    response = client.post("/v1/residents/res-1/observations", content=b'{"recorded_by": ',
                           headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (
        400, {"error": "request body is not valid JSON: Expecting value at character 16"}
    )
    assert buffer.depth() == 0


TOO_LARGE = {"error": "request body larger than 65536 bytes"}


def test_a_body_declared_larger_than_the_limit_is_refused(client, buffer):
    response = client.post("/v1/residents/res-1/observations",
                           json={**OBSERVATION, "recorded_by": "x" * 70_000})
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    assert buffer.depth() == 0


def test_a_streamed_body_larger_than_the_limit_is_refused(client, buffer):
    chunks = iter([b'{"recorded_by": "', b"x" * 40_000, b"x" * 40_000, b'"}'])  # chunked: no Content-Length
    response = client.post("/v1/residents/res-1/observations", content=chunks,
                           headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    assert buffer.depth() == 0


def test_a_body_of_exactly_the_limit_is_accepted(client, buffer):
    body = json.dumps({**OBSERVATION, "event_id": str(EVENT_ID)}).encode()
    response = client.post("/v1/residents/res-1/observations", content=body.ljust(65_536),
                           headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (202, {"event_id": str(EVENT_ID), "status": "accepted"})
    assert buffer.depth() == 1


def test_a_full_buffer_refuses_the_entry_with_its_reason(registry, token, tmp_path):
    full = DurableBuffer(tmp_path / "full.sqlite", max_bytes=100)
    with _client(registry, full, token) as client:
        response = client.post("/v1/residents/res-1/observations", json=OBSERVATION)
    assert (response.status_code, response.json()) == (507, {
        "error": f"gateway buffer {full.path} is full (0 of 100 bytes; the last 10 bytes are kept for device "
                 "readings): the broker has been unreachable too long or the disk limit is too small"})
    assert full.depth() == 0


def test_an_unexpected_failure_is_an_internal_error_without_details(client, buffer, caplog):
    buffer.close()  # publishing now fails inside SQLite
    response = client.post("/v1/residents/res-1/observations", json=OBSERVATION)
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    assert "internal error in POST /v1/residents/{resident_id}/observations: ProgrammingError" in caplog.text


def test_log_lines_carry_no_resident_id_or_token(registry, buffer, token, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    full = DurableBuffer(tmp_path / "full.sqlite", max_bytes=100)
    with _client(registry, buffer, token) as client, _client(registry, full, token) as client_of_full_buffer:
        statuses = [
            client.post("/v1/residents/res-1/observations", json=OBSERVATION).status_code,
            client.post("/v1/residents/res-1/observations", json=OBSERVATION,
                        headers={"Authorization": f"Bearer {token}x"}).status_code,
            client.post("/v1/residents/res-2/fluids", json={}).status_code,
            client.post("/v1/residents/4505577104/observations", json=OBSERVATION).status_code,
            client_of_full_buffer.post("/v1/residents/res-1/observations", json=OBSERVATION).status_code,
        ]
        buffer.close()
        statuses.append(client.post("/v1/residents/res-1/observations", json=OBSERVATION).status_code)
    assert statuses == [202, 401, 404, 422, 507, 500]
    # httpx is the test's client, logging the URLs it requests; everything else is the gateway side.
    lines = [record.getMessage() for record in caplog.records if not record.name.startswith("httpx")]
    secrets = ("res-1", "res-2", "4505577104", token)
    assert lines and not [line for line in lines if any(secret in line for secret in secrets)]


def test_health_needs_no_token_and_reports_the_buffer_depth(client):
    unauthenticated = {"Authorization": ""}
    before = client.get("/v1/health", headers=unauthenticated)
    client.post("/v1/residents/res-1/observations", json=OBSERVATION)
    after = client.get("/v1/health", headers=unauthenticated)
    assert [(r.status_code, r.json()) for r in (before, after)] == [
        (200, {"status": "ok", "buffer_depth": 0}), (200, {"status": "ok", "buffer_depth": 1})
    ]


def test_the_openapi_document_lists_every_endpoint_with_its_auth_and_errors(client):
    response = client.get("/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    document = response.json()
    assert {path: sorted(operations) for path, operations in document["paths"].items()} == {
        "/v1/health": ["get"],
        "/v1/residents/{resident_id}/observations": ["post"],
        "/v1/residents/{resident_id}/fluids": ["post"],
        "/v1/residents/{resident_id}/falls": ["post"],
        "/v1/residents/{resident_id}/visits/{visit_id}/check-in": ["post"],
        "/v1/residents/{resident_id}/visits/{visit_id}/check-out": ["post"],
        "/v1/residents/{resident_id}/escalations/acknowledge": ["post"],
        "/v1/residents/{resident_id}/clinical-reviews": ["post"],
        "/v1/residents/{resident_id}/urinalysis": ["post"],
        "/v1/call-bells/{call_id}/answer": ["post"],
    }
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    entries = [operations["post"] for path, operations in document["paths"].items() if path != "/v1/health"]
    assert [(entry["security"], sorted(entry["responses"])) for entry in entries] == [
        ([{"HTTPBearer": []}], ["202", "400", "401", "404", "413", "422", "507"])
    ] * len(ENTRY_PATHS)
    assert "security" not in document["paths"]["/v1/health"]["get"]


def test_an_accepted_observation_reaches_the_readings_topic(broker, tmp_path):
    resident = unique_resident()
    registry = Registry(tmp_path / "registry.sqlite")
    registry.add_resident(resident, "loc-int")
    token = registry.provision_tablet("tab-int", "loc-int")
    now = events.utc_now()
    publisher = Publisher(broker.bootstrap, DurableBuffer(tmp_path / "buffer.sqlite")).start()
    try:
        app = create_intake_app(registry, publisher, gateway_id="gw-test", now=lambda: now)
        with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
            response = client.post(f"/v1/residents/{resident}/observations",
                                   json={**OBSERVATION, "occurred_at": now.isoformat()})
        assert response.status_code == 202
        event_id = uuid.UUID(response.json()["event_id"])
        values = read_topic(broker.bootstrap, topics.READINGS.name,
                            until=lambda vs: event_id in {e.event_id for e in parse_all(vs)})
    finally:
        publisher.stop(drain_timeout_s=30)
        registry.close()
    assert [e for e in parse_all(values) if e.event_id == event_id] == [events.ManualObservation(
        event_id=event_id, occurred_at=now, received_at=now,
        source=events.Source(gateway_id="gw-test", device_id="tab-int"), location_id="loc-int",
        resident_id=resident, recorded_by="carer-7", respiration_rate=18, consciousness="A", on_oxygen=False,
    )]
    assert publisher.buffer.depth() == 0
