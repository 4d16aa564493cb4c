"""Fuzzing the tablet intake over HTTP: the real app, a real Registry and a real DurableBuffer (in tmp).

Whatever a tablet (or anything that reaches the port) sends, the answer is 202 with the event durably
buffered, or a 4xx whose JSON body carries an ``error`` sentence and nothing is buffered; never a 5xx,
never a hang, and no log line carries a token or a resident id. Inputs are mostly *valid-looking*: a
correct entry for the endpoint with one or more fields replaced (wrong types, arbitrary JSON, extreme
numbers, timestamps from year 1 to 9999 in any offset), fields dropped or added; and around them raw
bytes, JSON that is not an object, nesting 10 000 levels deep, bodies over the size limit, unknown,
elsewhere-registered, NHS-number-like and path-traversal resident ids, and missing, junk, oversized and
revoked tokens.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from gateway.buffer import DurableBuffer
from gateway.intake import create_intake_app
from gateway.publisher import Publisher
from gateway.registry import Registry
from tests.factories import T0
from tests.fuzz.conftest import LogTrap, examples

pytestmark = pytest.mark.fuzz

NOW = T0
MAX_BODY = 64 * 1024
#: A request taking longer than this counts as a hang (generous: the machine is shared).
HANG_S = 10.0
#: Every status answered, over the module: the teardown checks the fuzzing reached both sides.
STATUSES: Counter[int] = Counter()
HERE, ELSEWHERE, UNREGISTERED = "res-fuzz-here-5b1e", "res-fuzz-elsewhere-9c2d", "res-fuzz-nobody-3f7a"


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("intake-fuzz")
    registry = Registry(root / "registry.sqlite")
    registry.add_resident(HERE, "loc-a")
    registry.add_resident(ELSEWHERE, "loc-b")
    token = registry.provision_tablet("tab-fuzz", "loc-a")
    revoked = registry.provision_tablet("tab-revoked", "loc-a")
    registry.revoke_tablet("tab-revoked")
    other = registry.provision_tablet("tab-other", "loc-b")
    buffer = DurableBuffer(root / "buffer.sqlite")
    # The publisher is not started: accepted entries stay in the buffer, where the test counts them.
    app = create_intake_app(registry, Publisher("127.0.0.1:9", buffer), gateway_id="gw-fuzz", now=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as client, LogTrap() as logs:
        yield {"client": client, "buffer": buffer, "logs": logs, "tokens": {"valid": token, "revoked": revoked,
                                                                            "other": other}}
    logs.assert_free_of(token, revoked, other, HERE, ELSEWHERE, UNREGISTERED)
    print(f"\nintake answers: {dict(sorted(STATUSES.items()))}")
    # The fuzzing reached both sides: entries accepted into the buffer and every kind of refusal.
    if STATUSES.total() < 200:
        return  # a single test was selected
    assert {202, 400, 401, 404, 413, 422} <= set(STATUSES), STATUSES
    buffer.close()
    registry.close()


# -- what the endpoints take -------------------------------------------------------------------------
OBSERVATION = {"occurred_at": "2026-11-23T08:50:00+00:00", "recorded_by": "carer-7", "respiration_rate": 18,
               "consciousness": "A", "on_oxygen": False, "spo2": 96, "pulse": 80, "systolic_bp": 120,
               "temperature": 36.9}
#: path template ({r}: the resident id, {v}: a visit or call id) -> a valid body
ENDPOINTS: dict[str, dict[str, Any]] = {
    "/v1/residents/{r}/observations": OBSERVATION,
    "/v1/residents/{r}/fluids": {"offered_ml": 200, "consumed_ml": 150, "recorded_by": "carer-7"},
    "/v1/residents/{r}/falls": {"detected_by": "device", "confirmed": True, "harm": "low", "alert_id": "alert-3",
                                "recorded_by": "carer-7"},
    "/v1/residents/{r}/visits/{v}/check-in": {"carer_id": "carer-7", "verification": "gps"},
    "/v1/residents/{r}/visits/{v}/check-out": {"carer_id": "carer-7",
                                               "task_outcomes": [{"task_id": "meds-am", "outcome": "done"}]},
    "/v1/residents/{r}/escalations/acknowledge": {"acknowledged_by": "nurse-1", "action": "GP called",
                                                  "episode_id": str(uuid.UUID(int=7))},
    "/v1/residents/{r}/clinical-reviews": {"reviewed_by": "gp-1", "outcome": "GP visited"},
    "/v1/residents/{r}/urinalysis": {"occurred_at": "2026-11-23T08:40:00+00:00", "recorded_by": "nurse-1",
                                     "reader": "smartphone_reader", "leukocytes": "trace", "nitrites": "negative",
                                     "blood": "negative", "protein": "+", "episode_id": str(uuid.UUID(int=7))},
    "/v1/call-bells/{v}/answer": {"answered_by": "carer-7", "priority": "emergency", "call_type": "pendant",
                                  "resident_id": HERE},
}
EXTRA_FIELDS = ["event_id", "occurred_at", "note", "resident_id", "location_id", "received_at", "source",
                "__proto__", "", "respiration_rate", "harm", "confirmed", "leukocytes", "episode_id"]

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
timestamps = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                          timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=14)),
                                                     timezone(timedelta(hours=-12, minutes=-30))]))
near_now = st.timedeltas(min_value=-timedelta(days=8), max_value=timedelta(minutes=10)).map(lambda d: NOW + d)
timestamp_text = st.one_of(
    (timestamps | near_now).map(lambda at: at.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59.999999+00:00",
                     "2026-11-23T08:50:00", "2026-02-30T00:00:00Z", "2026-11-23T25:00:00Z", "1e309", "now", "",
                     "2026-11-23T08:50:00+24:00", "-2026-11-23T08:50:00Z", "20261123T085000Z"]),
    st.integers(-(2**63), 2**63), st.floats(),
)
field_values = st.one_of(json_values, timestamp_text, st.text(min_size=60, max_size=70),
                         st.sampled_from(["4505577104", "450 557 7104", "../../etc/passwd", "A" * 65, "\x00", "NaN"]))


@st.composite
def mutated_bodies(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    body = dict(valid)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add", "occurred_at"]))
        if action == "replace" and body:
            body[draw(st.sampled_from(sorted(body)))] = draw(field_values)
        elif action == "drop" and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        elif action == "add":
            body[draw(st.sampled_from(EXTRA_FIELDS) | st.text(max_size=12))] = draw(field_values)
        else:
            body["occurred_at"] = draw(timestamp_text)
    return body


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"recorded_by":' + b"[" * depth + b"]" * depth + b"}"  # deep inside a field


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(_deep, st.sampled_from([10, 500, 999, 1000, 5000, 10_000]), st.sampled_from(["list", "object", "field"])),
    st.sampled_from([b"", b"null", b"[]", b"{}", b'"x"', b"1e999", b"NaN", b"{" , b'{"a":1,"a":2}', b"\xef\xbb\xbf{}",
                     b'{"recorded_by": "\\ud800"}', b"\x00" * 10]),
    st.integers(MAX_BODY - 100, MAX_BODY + 100).map(lambda n: b'{"recorded_by":"' + b"x" * n + b'"}'),
    json_values.map(lambda value: json.dumps(value).encode()),
)

resident_ids = st.one_of(
    st.just(HERE), st.just(HERE),  # half the requests name the tablet's own resident
    st.sampled_from([ELSEWHERE, UNREGISTERED, "4505577104", "..", "%2e%2e", "..%2F..%2Fetc",
                     "res-1%00", "A" * 65, "%20", "res%2Fx"]),
    st.text(st.characters(codec="ascii", exclude_categories=("Cc",), exclude_characters="/?#"), min_size=1, max_size=70),
)
visit_ids = st.sampled_from(["visit-9", "call-42", "..", "x" * 65, "%00", "call 42"])


def _authorization(kind: str, tokens: dict[str, str], junk: str) -> dict[str, Any]:
    if kind == "none":
        return {}
    if kind in tokens:
        return {"Authorization": f"Bearer {tokens[kind]}"}
    if kind == "huge":
        return {"Authorization": "Bearer " + "x" * 60_000}
    if kind == "basic":
        return {"Authorization": f"Basic {tokens['valid']}"}
    return {"Authorization": junk.encode("latin-1")}  # as bytes: any octet a client may put on the wire


request_shapes = st.fixed_dictionaries({
    "template": st.sampled_from(sorted(ENDPOINTS)),
    "resident": resident_ids,
    "visit": visit_ids,
    "auth": st.sampled_from(["valid"] * 6 + ["none", "revoked", "other", "huge", "basic", "junk"]),
    "junk": st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=80),
    "content_type": st.sampled_from(["application/json"] * 4 + ["text/plain", "application/x-www-form-urlencoded", ""]),
})


def _check(intake: dict, method: str, url: str, headers: dict[str, str], content: bytes) -> int:
    buffered = intake["buffer"].depth()
    started = time.monotonic()
    response = intake["client"].request(method, url, headers=headers, content=content)
    elapsed = time.monotonic() - started
    assert elapsed < HANG_S, f"{method} {url} took {elapsed:.1f} s"
    status = response.status_code
    STATUSES[status] += 1
    assert status < 500, (status, url, response.text[:300])
    if status == 202:
        assert set(response.json()) == {"event_id", "status"}
        assert intake["buffer"].depth() == buffered + 1
    else:
        assert 400 <= status < 500, (status, url, response.text[:300])
        error = response.json()["error"]
        assert isinstance(error, str) and error.strip(), (status, url, response.text[:300])
        assert intake["buffer"].depth() == buffered, (status, url)
    return status


@examples(0.5)
@given(shape=request_shapes, data=st.data())
def test_every_entry_is_accepted_or_refused_with_a_reason(intake, shape, data) -> None:
    valid = ENDPOINTS[shape["template"]]
    body = data.draw(mutated_bodies(valid) | st.just(valid))
    content = json.dumps(body).encode()  # Python's json writes NaN and Infinity, which it also reads
    headers = _authorization(shape["auth"], intake["tokens"], shape["junk"])
    if shape["content_type"]:
        headers["Content-Type"] = shape["content_type"]
    url = shape["template"].format(r=shape["resident"], v=shape["visit"])
    _check(intake, "POST", url, headers, content)


@examples(0.25)
@given(shape=request_shapes, content=raw_bodies)
def test_raw_bodies_are_refused_with_a_reason(intake, shape, content) -> None:
    headers = _authorization(shape["auth"], intake["tokens"], shape["junk"])
    headers["Content-Type"] = shape["content_type"] or "application/json"
    url = shape["template"].format(r=shape["resident"], v=shape["visit"])
    _check(intake, "POST", url, headers, content)


@examples(0.1)
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST"]),
       path=st.text(st.characters(codec="ascii", exclude_categories=("Cc",), exclude_characters="?#"), max_size=120).map(lambda p: "/" + p.lstrip("/")),
       auth=st.sampled_from(["valid", "none", "junk"]))
def test_any_path_and_method_answer_json_4xx_or_2xx(intake, method, path, auth) -> None:
    headers = _authorization(auth, intake["tokens"], "Bearer x")
    response = intake["client"].request(method, path, headers=headers)
    assert response.status_code < 500, (method, path, response.text[:300])
    if response.status_code >= 400 and method != "HEAD":
        assert response.json()["error"].strip()
    if response.status_code == 202:
        pass  # a valid POST with an empty body cannot be accepted (every entry has required fields)
    assert response.status_code != 202, (method, path)


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("kind", ["list", "object", "field"])
def test_deeply_nested_json_is_refused_quickly(intake, depth, kind) -> None:
    content = _deep(depth, kind)
    status = _check(intake, "POST", f"/v1/residents/{HERE}/observations",
                    {"Authorization": f"Bearer {intake['tokens']['valid']}", "Content-Type": "application/json"},
                    content)
    assert status in (400, 413, 422)
