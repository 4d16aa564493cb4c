"""Fuzzing the regulator feed's raw HTTP surface (schemathesis covers what the OpenAPI document describes).

Arbitrary paths under /v1 (path-traversal-looking, encoded, over-long and non-ASCII ids), arbitrary query
strings, and Authorization headers that are missing, malformed, huge, binary, of another scheme, or carry a
revoked or expired key: the answer is 2xx/304, or a 4xx whose JSON body has an ``error`` sentence; never
a 5xx, never a hang; no log line carries a key's secret or a resident id.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from carepulse.settings import Settings
from feed import auth, db
from feed.api import create_feed_app
from tests.feed.conftest import NOW
from tests.feed.test_api import LOC_A, LOC_B, RESIDENTS, seed
from tests.fuzz.conftest import LogTrap, examples

pytestmark = pytest.mark.fuzz

HANG_S = 10.0
STATUSES: Counter[int] = Counter()


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory):
    engine = db.make_engine(f"sqlite:///{tmp_path_factory.mktemp('feed-fuzz') / 'feed.sqlite3'}")
    db.migrate(engine)
    seed(engine)
    tokens = {role: auth.create_key(engine, role=role, name=f"fuzz {role}", now=NOW)[1]
              for role in ("regulator", "provider:prov-a")}
    revoked_id, tokens["revoked"] = auth.create_key(engine, role="regulator", name="revoked", now=NOW)
    auth.revoke_key(engine, revoked_id, now=NOW)
    _, tokens["expired"] = auth.create_key(engine, role="provider:prov-a", name="expired",
                                           now=NOW - timedelta(days=3), expires_in_days=1)
    app = create_feed_app(Settings(feed_consume=False), engine=engine, now=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as client, LogTrap() as logs:
        yield {"client": client, "tokens": tokens}
    all_residents = [r for residents in RESIDENTS.values() for r in residents]
    logs.assert_free_of(*tokens.values(), *all_residents)
    print(f"\nfeed answers: {dict(sorted(STATUSES.items()))}")
    if STATUSES.total() >= 200:
        assert {200, 401, 404, 422} <= set(STATUSES), STATUSES
    engine.dispose()


SEGMENTS = st.one_of(
    st.sampled_from([LOC_A, LOC_B, "loc-learned", "..", ".", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%00", "%ff",
                     "indicators", "escalations", "inspection", "inspection.html", "fhir", "MeasureReport", "Measure",
                     "history", "falls_rate", "escalation_timeliness", "capacity", "travel_time", "x" * 65, "x" * 5000, "%E2%80%AE", "~",
                     "res-a0", "'; DROP TABLE feed_api_keys; --"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20).map(
        lambda text: quote(text, safe="")),
)
ROUTES = ["/v1/locations", "/v1/locations/{x}", "/v1/locations/{x}/indicators", "/v1/locations/{x}/indicators/{y}/history",
          "/v1/escalations/summary", "/v1/locations/{x}/escalations", "/v1/fhir/Measure/{y}",
          "/v1/locations/{x}/fhir/MeasureReport", "/v1/locations/{x}/fhir/MeasureReport/{y}",
          "/v1/locations/{x}/inspection", "/v1/locations/{x}/inspection.html", "/v1/capacity",
          "/v1/locations/{x}/capacity"]
paths = st.one_of(
    st.lists(SEGMENTS, min_size=0, max_size=6).map(lambda parts: "/v1/" + "/".join(parts)),
    st.builds(lambda route, x, y: route.format(x=x, y=y), st.sampled_from(ROUTES),
              st.sampled_from([LOC_A, LOC_A, LOC_B]) | SEGMENTS, st.sampled_from(["falls_rate", "escalation_timeliness"]) | SEGMENTS),
    st.builds(lambda route, x, y: route.format(x=x, y=y), st.sampled_from(ROUTES), st.just(LOC_A), st.just("falls_rate")),
)
QUERY_NAMES = ["limit", "offset", "from", "to", "since", "until", "location_id", "status", "setting",
               "min_vacant_beds", "min_hours_not_planned", "limt", "", "a[]"]
query_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.sampled_from(["", "0", "500", "501", "1000001", "2026-11-01", "0001-01-01",
                                                            "9999-12-31", "2026-02-30", "NaN", "1e9", "raised", "care_home", "homecare",
                                                            "-1", "inf", LOC_A]),
    st.text(max_size=30),
)
queries = st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | st.text(max_size=8), query_values), max_size=4)


def _authorization(kind: str, tokens: dict[str, str], junk: bytes) -> dict[str, bytes | str]:
    match kind:
        case "none":
            return {}
        case "junk":
            return {"Authorization": junk}
        case "bearer-junk":
            return {"Authorization": b"Bearer " + junk}
        case "huge":
            return {"Authorization": "Bearer cpf_" + "A" * 100_000}
        case "basic":
            return {"Authorization": f"Basic {tokens['regulator']}"}
        case "lowercase":
            return {"Authorization": f"bearer {tokens['regulator']}"}
        case "twice":
            return {"Authorization": f"Bearer {tokens['regulator']} {tokens['regulator']}"}
        case _:
            return {"Authorization": f"Bearer {tokens[kind]}"}


AUTH_KINDS = ["regulator", "provider:prov-a", "regulator", "provider:prov-a", "revoked", "expired", "none", "junk",
              "bearer-junk", "huge", "basic", "lowercase", "twice"]
#: Keys that work: the auth scheme is case-insensitive (RFC 9110 §11.1).
WORKING = ("regulator", "provider:prov-a", "lowercase")
header_junk = st.binary(max_size=60).filter(lambda b: not any(c in b for c in b"\r\n\x00"))


@examples(0.3)
@given(path=paths, query=queries | st.just([]), auth_kind=st.sampled_from(AUTH_KINDS), junk=header_junk,
       if_none_match=st.none() | st.sampled_from(["*", '"x"', 'W/"abc", "def"', "x" * 10_000]),
       method=st.sampled_from(["GET"] * 8 + ["HEAD", "POST", "DELETE", "OPTIONS"]))
def test_any_request_answers_json_4xx_or_success_never_5xx(feed, path, query, auth_kind, junk, if_none_match,
                                                           method) -> None:
    headers = _authorization(auth_kind, feed["tokens"], junk)
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    started = time.monotonic()
    response = feed["client"].request(method, path, params=query, headers=headers)
    assert time.monotonic() - started < HANG_S, (method, path)
    status = response.status_code
    STATUSES[status] += 1
    assert status < 500, (method, path, query, response.text[:300])
    if status >= 400 and method != "HEAD":
        assert response.json()["error"].strip(), (path, response.text[:300])
    if status == 401 and auth_kind in WORKING:
        pytest.fail(f"a valid key was refused on {path}")
    if status < 300 and auth_kind not in WORKING:
        assert not path.startswith("/v1/") or path == "/v1/", (auth_kind, path, status)


@examples(0.1)
@given(template=st.sampled_from(["/v1/locations/{x}", "/v1/locations/{x}/indicators", "/v1/fhir/Measure/{x}",
                                 "/v1/locations/{x}/indicators/{x}/history", "/v1/locations/{x}/escalations"]),
       value=SEGMENTS, auth_kind=st.sampled_from(["regulator", "provider:prov-a", "expired", "revoked"]))
def test_path_ids_never_reach_anything_but_a_lookup(feed, template, value, auth_kind) -> None:
    response = feed["client"].get(template.format(x=value), headers=_authorization(auth_kind, feed["tokens"], b""))
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, (template, value, response.text[:300])
    if auth_kind in ("expired", "revoked"):
        assert response.status_code in (401, 404), (template, value)  # 404: the path matched no route
    if response.status_code >= 400:
        assert response.json()["error"].strip()
