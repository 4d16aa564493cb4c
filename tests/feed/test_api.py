"""The feed API against a real database (SQLite and PostgreSQL), in-process: the auth matrix, suppression,
pagination, ETags, live capacity, issue 11's indicators, FHIR, the mock inspection, errors and the audit log."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.measure import Measure
from fhir.resources.R4B.measurereport import MeasureReport
from sqlalchemy import select

from carepulse import topics
from carepulse.settings import Settings
from feed import auth, db
from feed.api import create_feed_app
from feed.ingest import store_capacity, store_escalation, store_indicator
from tests.feed.conftest import NOW, escalation, indicator_update, key, location_capacity

LOC_A, LOC_B, LOC_U = "loc-home-a", "loc-home-b", "loc-learned"
RESIDENTS = {LOC_A: [f"res-a{i}" for i in range(7)], LOC_B: [f"res-b{i}" for i in range(7)], LOC_U: ["res-u0"]}
#: Live capacity: Alder House a care home with one vacant bed and two residents in hospital, Birch Court a
#: homecare agency caring for three people (a small count), the learned location a full care home.
CAPACITY = {
    LOC_A: dict(setting="care_home", max_beds=30, occupied_beds=27, reserved_beds=2, vacant_beds=1, over_max_beds=0),
    LOC_B: dict(setting="homecare", people_receiving_care=3, planned_hours_7d=120.5, commissioned_hours_7d=140.0,
                commissioned_hours_not_planned=19.5),
    LOC_U: dict(setting="care_home", max_beds=10, occupied_beds=10, reserved_beds=0, vacant_beds=0, over_max_beds=0),
}


def seed(engine) -> None:
    auth.register_location(engine, LOC_A, provider_id="prov-a", name="Alder House", now=NOW)
    auth.register_location(engine, LOC_B, provider_id="prov-b", name="Birch Court", now=NOW)
    with engine.begin() as conn:
        for location in (LOC_A, LOC_B, LOC_U):
            store_indicator(conn, indicator_update(location), key=None, now=NOW)
            # 2 falls in 400 occupied bed days: a small count.
            store_indicator(conn, indicator_update(location, "falls_rate", numerator=2, denominator=400, status="amber",
                                                   value=5.0, direction="lower_is_better", title="Falls rate",
                                                   unit="falls per 1,000 occupied bed days"), key=None, now=NOW)
            # An issue-11 indicator, published like the others: 1 long gap in 40.
            store_indicator(conn, indicator_update(location, "travel_time", numerator=1, denominator=40,
                                                   direction="lower_is_better", title="Homecare travel between visits",
                                                   unit="% of travel gaps"), key=None, now=NOW)
            store_capacity(conn, location_capacity(location, **CAPACITY[location]), now=NOW)
            for days_ago in range(1, 6):
                day = (NOW - timedelta(days=days_ago)).date().isoformat()
                snapshot = indicator_update(location, kind="daily_snapshot", numerator=15 + days_ago,
                                            window_end=NOW - timedelta(days=days_ago))
                store_indicator(conn, snapshot, key=topics.indicator_history_key(location, snapshot.indicator_id, day),
                                now=NOW)
            residents = RESIDENTS[location]
            store_escalation(conn, escalation(location, residents[0], risk="high"), now=NOW)
            for resident in residents[1:]:
                store_escalation(conn, escalation(location, resident, risk="medium", status="acknowledged"), now=NOW)


@pytest.fixture
def client(engine):
    seed(engine)
    app = create_feed_app(Settings(feed_consume=False), engine=engine, now=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.keys = {
            "none": {}, "bad": {"Authorization": "Bearer cpf_not-a-real-key"},
            "regulator": key(engine, "regulator"), "provider_a": key(engine, "provider:prov-a"),
            "provider_b": key(engine, "provider:prov-b"),
        }
        # Keys that worked once: a provider's and the regulator's, revoked or past their expiry (the app's
        # clock is NOW; these were created two days earlier, to expire a day later).
        for who, role in (("provider_a", "provider:prov-a"), ("regulator", "regulator")):
            key_id, token = auth.create_key(engine, role=role, name=f"revoked {who}", now=NOW)
            auth.revoke_key(engine, key_id, now=NOW)
            client.keys[f"revoked_{who}"] = {"Authorization": f"Bearer {token}"}
            _, token = auth.create_key(engine, role=role, name=f"expired {who}", now=NOW - timedelta(days=2),
                                       expires_in_days=1)
            client.keys[f"expired_{who}"] = {"Authorization": f"Bearer {token}"}
        yield client


#: (path template, scoped to the location in it?)
ENDPOINTS = [
    ("/v1/locations", False),
    ("/v1/locations/{loc}", True),
    ("/v1/locations/{loc}/indicators", True),
    ("/v1/locations/{loc}/indicators/escalation_timeliness/history?from=2026-11-01&to=2026-11-23", True),
    ("/v1/escalations/summary", False),
    ("/v1/escalations/summary?location_id={loc}", False),
    ("/v1/locations/{loc}/escalations", True),
    ("/v1/fhir/Measure/falls_rate", False),
    ("/v1/locations/{loc}/fhir/MeasureReport", True),
    ("/v1/locations/{loc}/fhir/MeasureReport/falls_rate", True),
    ("/v1/locations/{loc}/inspection", True),
    ("/v1/locations/{loc}/inspection.html", True),
    ("/v1/locations/{loc}/indicators/urinalysis_timeliness/history?from=2026-11-01&to=2026-11-23", True),
    ("/v1/fhir/Measure/carer_continuity", False),
    ("/v1/locations/{loc}/fhir/MeasureReport/travel_time", True),
    ("/v1/capacity", False),
    ("/v1/capacity?setting=care_home&min_vacant_beds=0", False),
    ("/v1/locations/{loc}/capacity", True),
]
OWNER = {LOC_A: "provider_a", LOC_B: "provider_b"}


#: Callers whose key does not work: every endpoint answers them 401 with one message.
REFUSED = ("none", "bad", "revoked_provider_a", "revoked_regulator", "expired_provider_a", "expired_regulator")


def expected_status(who: str, path: str, scoped: bool, location: str) -> int:
    if who in REFUSED:
        return 401
    if who == "regulator":
        return 403 if path.endswith("/escalations") else 200
    if scoped and OWNER[location] != who:
        return 404
    return 200


@pytest.mark.parametrize("who", [*REFUSED, "regulator", "provider_a", "provider_b"])
def test_auth_matrix(client, who):
    """Every endpoint × every kind of caller: no cross-tenant read, no resident id for the regulator,
    small numbers suppressed for the regulator only."""
    for location in (LOC_A, LOC_B):
        other = LOC_B if location == LOC_A else LOC_A
        for template, scoped in ENDPOINTS:
            path = template.format(loc=location)
            response = client.get(path, headers=client.keys[who])
            want = expected_status(who, path, scoped, location)
            assert response.status_code == want, (who, path, response.text[:300])
            body = response.text
            if want != 200:
                assert set(response.json()) == {"error"}, (who, path)
                if want == 401:
                    # Unknown, revoked and expired keys are told apart by nothing.
                    assert response.json() == {"error": "missing, invalid or revoked API key"}, (who, path)
                    assert response.headers["www-authenticate"] == "Bearer"
                continue
            all_residents = [r for residents in RESIDENTS.values() for r in residents]
            if who == "regulator":
                assert not any(r in body for r in all_residents), (who, path)
                assert "episode" not in body or path.endswith("summary") or "summary?" in path
            else:
                mine = LOC_A if who == "provider_a" else LOC_B
                theirs = LOC_B if mine == LOC_A else LOC_A
                assert theirs not in body and LOC_U not in body, (who, path)
                assert not any(r in body for r in RESIDENTS[theirs] + RESIDENTS[LOC_U]), (who, path)
                assert "suppressed\"" not in body.replace('"suppressed":false', ""), (who, path)
    # The stream needs a working key too.
    if who in REFUSED:
        assert client.get("/v1/stream", headers=client.keys[who]).status_code == 401


def test_the_regulator_sees_every_location_with_unregistered_ones_as_provider_unknown(client):
    items = client.get("/v1/locations", headers=client.keys["regulator"]).json()["items"]
    assert [(i["location_id"], i["provider_id"], i["registered"]) for i in items] == [
        (LOC_A, "prov-a", True), (LOC_B, "prov-b", True), (LOC_U, None, False)]
    mine = client.get("/v1/locations", headers=client.keys["provider_a"]).json()
    assert [i["location_id"] for i in mine["items"]] == [LOC_A] and mine["total"] == 1


def test_small_numbers_are_suppressed_for_the_regulator_only(client):
    regulator = client.get(f"/v1/locations/{LOC_A}/indicators", headers=client.keys["regulator"]).json()["items"]
    falls = next(i for i in regulator if i["indicator_id"] == "falls_rate")
    assert (falls["numerator"], falls["denominator"], falls["value"], falls["status"], falls["suppressed"],
            falls["details"]) == ("suppressed", 400, None, "amber", True, None)
    timeliness = next(i for i in regulator if i["indicator_id"] == "escalation_timeliness")
    assert (timeliness["numerator"], timeliness["denominator"], timeliness["value"], timeliness["suppressed"]) == (
        19, 20, 95.0, False)
    provider = client.get(f"/v1/locations/{LOC_A}/indicators", headers=client.keys["provider_a"]).json()["items"]
    falls = next(i for i in provider if i["indicator_id"] == "falls_rate")
    assert (falls["numerator"], falls["value"], falls["suppressed"], falls["details"]) == (2, 5.0, False, {"late": 1})

    summary = client.get(f"/v1/escalations/summary?location_id={LOC_A}", headers=client.keys["regulator"]).json()
    assert [(r["risk"], r["status"], r["episodes"]) for r in summary["items"]] == [
        ("high", "raised", "suppressed"), ("medium", "acknowledged", 6)]
    assert summary["suppression_threshold"] == 5
    summary = client.get(f"/v1/escalations/summary?location_id={LOC_A}", headers=client.keys["provider_a"]).json()
    assert [(r["risk"], r["status"], r["episodes"]) for r in summary["items"]] == [
        ("high", "raised", 1), ("medium", "acknowledged", 6)]

    report = client.get(f"/v1/locations/{LOC_A}/fhir/MeasureReport/falls_rate", headers=client.keys["regulator"]).json()
    numerator = report["group"][0]["population"][0]
    assert "count" not in numerator and numerator["_count"]["extension"][0]["valueCode"] == "masked"


def test_providers_see_pseudonymous_escalation_episodes_of_their_own_locations(client):
    page = client.get(f"/v1/locations/{LOC_A}/escalations?limit=5", headers=client.keys["provider_a"]).json()
    assert page["total"] == 7 and len(page["items"]) == 5 and page["next_offset"] == 5
    rest = client.get(f"/v1/locations/{LOC_A}/escalations?limit=5&offset=5", headers=client.keys["provider_a"]).json()
    assert rest["next_offset"] is None
    assert sorted(e["resident_id"] for e in page["items"] + rest["items"]) == sorted(RESIDENTS[LOC_A])
    raised = client.get(f"/v1/locations/{LOC_A}/escalations?status=raised", headers=client.keys["provider_a"]).json()
    assert [(e["resident_id"], e["risk"]) for e in raised["items"]] == [("res-a0", "high")]


def test_history_over_a_date_range(client):
    headers = client.keys["provider_a"]
    url = f"/v1/locations/{LOC_A}/indicators/escalation_timeliness/history"
    page = client.get(f"{url}?from=2026-11-19&to=2026-11-21", headers=headers).json()
    assert [(p["day"], p["numerator"]) for p in page["items"]] == [
        ("2026-11-19", 19.0), ("2026-11-20", 18.0), ("2026-11-21", 17.0)]
    assert client.get(url, headers=headers).json()["total"] == 5  # default: the 28 days to today
    assert client.get(f"{url}?from=2026-11-22&to=2026-11-21", headers=headers).json()["total"] == 0  # inverted: empty
    assert client.get(f"/v1/locations/{LOC_A}/indicators/no_such/history", headers=headers).status_code == 404
    invalid = client.get(f"{url}?from=yesterday", headers=headers)
    assert invalid.status_code == 422
    assert invalid.json()["details"] == [{"field": "from", "message": "Value error, must be a date as YYYY-MM-DD"}]


def test_etag_lets_a_polling_client_skip_unchanged_data(client, engine):
    headers = client.keys["regulator"]
    url = f"/v1/locations/{LOC_A}/indicators"
    first = client.get(url, headers=headers)
    etag = first.headers["etag"]
    assert client.get(url, headers={**headers, "If-None-Match": etag}).status_code == 304
    with engine.begin() as conn:
        store_indicator(conn, indicator_update(LOC_A, window_end=NOW + timedelta(hours=1), numerator=20), key=None, now=NOW)
    changed = client.get(url, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_fhir_resources_validate_and_code_news2_with_snomed(client):
    headers = client.keys["provider_a"]
    measure = client.get("/v1/fhir/Measure/escalation_timeliness", headers=headers)
    assert measure.headers["content-type"].startswith("application/fhir+json")
    resource = Measure.model_validate(measure.json())
    assert resource.scoring.coding[0].code == "proportion"
    assert resource.improvementNotation.coding[0].code == "increase"
    assert resource.topic[0].coding[0].system == "http://snomed.info/sct"
    assert resource.topic[0].coding[0].code == "1104051000000101"
    assert "88330-6" not in measure.text
    falls = Measure.model_validate(client.get("/v1/fhir/Measure/falls_rate", headers=headers).json())
    assert (falls.scoring.coding[0].code, falls.improvementNotation.coding[0].code) == ("ratio", "decrease")

    bundle = Bundle.model_validate(client.get(f"/v1/locations/{LOC_A}/fhir/MeasureReport", headers=headers).json())
    reports = [MeasureReport.model_validate(e.resource.model_dump()) for e in bundle.entry]
    assert {r.measure for r in reports} == {"http://127.0.0.1:8480/fhir/Measure/escalation-timeliness",
                                            "http://127.0.0.1:8480/fhir/Measure/falls-rate",
                                            "http://127.0.0.1:8480/fhir/Measure/travel-time"}
    report = client.get(f"/v1/locations/{LOC_A}/fhir/MeasureReport/escalation_timeliness", headers=headers).json()
    assert report["type"] == "summary" and report["group"][0]["measureScore"]["value"] == 95.0
    assert [p["count"] for p in report["group"][0]["population"]] == [19, 20]
    missing = client.get(f"/v1/locations/{LOC_A}/fhir/MeasureReport/late_visits", headers=headers)
    assert missing.status_code == 404


def test_mock_inspection_maps_evidence_to_key_questions_and_says_it_is_not_a_rating(client):
    headers = client.keys["provider_a"]
    report = client.get(f"/v1/locations/{LOC_A}/inspection", headers=headers).json()
    assert report["indicative_only"] is True and "not a CQC rating" in report["disclaimer"]
    views = {kq["key_question"]: kq["indicative_view"] for kq in report["key_questions"]}
    assert views == {"safe": "review", "effective": "review", "caring": "not_measured",
                     "responsive": "no_view", "well_led": "not_measured"}
    safe = next(kq for kq in report["key_questions"] if kq["key_question"] == "safe")
    statement = next(s for s in safe["quality_statements"] if s["quality_statement"] == "Safe systems, pathways and transitions")
    evidence = statement["evidence"][0]
    assert (evidence["indicator_id"], evidence["value"], evidence["status"], evidence["trend"]) == (
        "escalation_timeliness", 95.0, "green", "worsening")  # 20/20 five days ago, 16/20 yesterday
    assert evidence["threshold_sources"]["green"]["source"] == "cqc_domain.md §2.2 row 7"
    assert evidence["mapping_source"].startswith("cqc_domain.md §1.3")
    assert "No daily snapshot on 23 of the last 28 days." in evidence["gaps"]
    assert any(g["indicator_id"] == "missed_visits" and g["gaps"][0] == "No value received for this indicator."
               for g in report["gaps"])

    page = client.get(f"/v1/locations/{LOC_A}/inspection.html", headers=headers)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "INDICATIVE ONLY" in html and "not a CQC rating" in html and "@media print" in html
    assert html.count("<svg") >= 10 and "<script" not in html and "Alder House" in html
    for rating in ("Outstanding", "Requires improvement", "Inadequate"):
        assert rating not in html


def test_errors_are_json_sentences(client):
    headers = client.keys["regulator"]
    response = client.get("/v1/locations/loc-nowhere", headers=headers)
    assert response.status_code == 404 and response.json() == {"error": "no location loc-nowhere visible to this key"}
    invalid = client.get("/v1/locations?limit=0", headers=headers)
    assert invalid.status_code == 422 and invalid.json()["details"][0]["field"] == "limit"
    assert client.post("/v1/locations", headers=headers).json() == {"error": "Method Not Allowed"}
    assert client.get("/v1/nothing", headers=headers).json() == {"error": "Not Found"}
    typo = client.get("/v1/locations?limt=5", headers=headers)
    assert typo.status_code == 422 and typo.json()["details"] == [{"field": "limt", "message": "unknown query parameter"}]


def test_every_read_is_audited_and_a_revoked_key_stops_working(client, engine):
    key_id, token = auth.create_key(engine, role="provider:prov-a", name="manager", now=NOW)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/locations?limit=1", headers=headers).status_code == 200
    auth.revoke_key(engine, key_id, now=NOW)
    assert client.get(f"/v1/locations/{LOC_A}/indicators", headers=headers).status_code == 401
    with engine.connect() as conn:
        rows = conn.execute(select(db.audit_log).order_by(db.audit_log.c.id)).mappings().all()
    assert [(r["key_id"], r["role"], r["method"], r["path"], r["query"], r["status_code"]) for r in rows[-2:]] == [
        (key_id, "provider:prov-a", "GET", "/v1/locations", "limit=1", 200),
        (None, None, "GET", f"/v1/locations/{LOC_A}/indicators", "", 401),
    ]
    assert rows[-1]["at"] == NOW


def test_health_needs_no_key_and_reports_the_consumer(client):
    assert client.get("/health").json() == {
        "status": "ok", "database": "ok", "live_subscribers": 0,
        "consumer": {"state": "disabled", "detail": None, "last_message_at": None, "messages_stored": 0,
                     "invalid_messages": 0, "assigned_partitions": []}}
    assert json.loads(client.get("/openapi.json").text)["info"]["title"] == "carepulse regulator feed"


# -- live capacity (issue 11) --------------------------------------------------------------------------------
def _capacity(client, who: str, query: str = "") -> dict:
    response = client.get(f"/v1/capacity{query}", headers=client.keys[who])
    assert response.status_code == 200, response.text
    return response.json()


def _where(page: dict) -> list[str]:
    return [item["location_id"] for item in page["items"]]


def test_capacity_lists_vacancies_first_with_the_capacity_tracker_bed_fields(client):
    page = _capacity(client, "regulator")
    assert [(i["location_id"], i["setting"], i["vacant_beds"], i["commissioned_hours_not_planned"])
            for i in page["items"]] == [(LOC_A, "care_home", 1, None), (LOC_U, "care_home", 0, None),
                                        (LOC_B, "homecare", None, 19.5)]
    assert (page["total"], page["next_offset"]) == (3, None)
    assert page["items"][0] == {
        "location_id": LOC_A, "name": "Alder House", "provider_id": "prov-a", "setting": "care_home",
        "as_of": "2026-11-23T09:00:00+00:00", "max_beds": 30, "occupied_beds": 27, "reserved_beds": 2, "vacant_beds": 1,
        "over_max_beds": 0, "people_receiving_care": None, "planned_hours_7d": None, "commissioned_hours_7d": None,
        "commissioned_hours_not_planned": None, "suppressed": False,
    }
    assert page["items"][1]["provider_id"] is None  # learned from a topic, not registered


@pytest.mark.parametrize(("query", "expected"), [
    ("?min_vacant_beds=1", [LOC_A]),
    ("?min_vacant_beds=0", [LOC_A, LOC_U]),
    ("?min_vacant_beds=2", []),
    ("?setting=homecare", [LOC_B]),
    ("?setting=care_home", [LOC_A, LOC_U]),
    ("?min_hours_not_planned=19.5", [LOC_B]),
    ("?min_hours_not_planned=20", []),
    ("?setting=homecare&min_vacant_beds=0", []),  # a homecare agency has no beds
])
def test_capacity_filters_for_a_discharge_team(client, query, expected):
    assert _where(_capacity(client, "regulator", query)) == expected


def test_capacity_pages_are_stable_and_errors_are_json(client):
    first = _capacity(client, "regulator", "?limit=2")
    rest = _capacity(client, "regulator", "?limit=2&offset=2")
    assert (_where(first), first["next_offset"], _where(rest), rest["next_offset"]) == (
        [LOC_A, LOC_U], 2, [LOC_B], None)
    for query, field in (("?min_vacant_beds=-1", "min_vacant_beds"), ("?setting=hospital", "setting"),
                         ("?min_hours_not_planned=nan", "min_hours_not_planned"), ("?vacant=1", "vacant")):
        response = client.get(f"/v1/capacity{query}", headers=client.keys["regulator"])
        assert response.status_code == 422 and response.json()["details"][0]["field"] == field, query


def test_each_provider_sees_only_its_own_capacity(client):
    assert _where(_capacity(client, "provider_a")) == [LOC_A]
    mine = _capacity(client, "provider_b")
    assert _where(mine) == [LOC_B] and mine["items"][0]["people_receiving_care"] == 3
    assert client.get(f"/v1/locations/{LOC_B}/capacity", headers=client.keys["provider_a"]).status_code == 404


def test_capacity_suppresses_small_counts_of_people_never_beds(client):
    """feed.privacy: a homecare agency's three people are suppressed for the regulator; a care home's one vacant
    bed and two residents in hospital are bed counts, shown exactly."""
    regulator = client.get(f"/v1/locations/{LOC_B}/capacity", headers=client.keys["regulator"]).json()
    assert (regulator["people_receiving_care"], regulator["suppressed"], regulator["planned_hours_7d"],
            regulator["commissioned_hours_not_planned"]) == ("suppressed", True, 120.5, 19.5)
    provider = client.get(f"/v1/locations/{LOC_B}/capacity", headers=client.keys["provider_b"]).json()
    assert (provider["people_receiving_care"], provider["suppressed"]) == (3, False)
    beds = client.get(f"/v1/locations/{LOC_A}/capacity", headers=client.keys["regulator"]).json()
    assert (beds["reserved_beds"], beds["vacant_beds"], beds["occupied_beds"], beds["suppressed"]) == (2, 1, 27, False)


def test_a_location_without_capacity_answers_404_and_a_newer_capacity_changes_the_etag(client, engine):
    auth.register_location(engine, "loc-home-c", provider_id="prov-a", name="Cedar Lodge", now=NOW)
    response = client.get("/v1/locations/loc-home-c/capacity", headers=client.keys["provider_a"])
    assert response.status_code == 404
    assert response.json() == {"error": "no capacity reported for location loc-home-c yet"}

    headers = client.keys["regulator"]
    first = client.get("/v1/capacity", headers=headers)
    assert client.get("/v1/capacity", headers={**headers, "If-None-Match": first.headers["etag"]}).status_code == 304
    with engine.begin() as conn:
        older = location_capacity(LOC_A, occurred_at=NOW - timedelta(hours=1), max_beds=30, occupied_beds=20,
                                  reserved_beds=0, vacant_beds=10, over_max_beds=0)
        assert store_capacity(conn, older, now=NOW) == []  # older than the stored figures: ignored
    assert client.get("/v1/capacity", headers={**headers, "If-None-Match": first.headers["etag"]}).status_code == 304
    with engine.begin() as conn:
        newer = location_capacity(LOC_A, occurred_at=NOW + timedelta(minutes=5), max_beds=30, occupied_beds=28,
                                  reserved_beds=2, vacant_beds=0, over_max_beds=0)
        assert store_capacity(conn, newer, now=NOW)
    changed = client.get("/v1/capacity?min_vacant_beds=1", headers={**headers, "If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200 and _where(changed.json()) == []


# -- issue 11's indicators -----------------------------------------------------------------------------------
def _urinalysis(location: str, **fields):
    return indicator_update(location, "urinalysis_timeliness", title="Urinalysis after an amber NEWS2 episode",
                            unit="% of amber episodes", **fields)


def test_issue_11_indicators_are_served_like_the_others(client, engine):
    headers = client.keys["provider_a"]
    with engine.begin() as conn:
        for days_ago in (1, 2):
            day = (NOW - timedelta(days=days_ago)).date().isoformat()
            snapshot = _urinalysis(LOC_A, kind="daily_snapshot", numerator=4 + days_ago, denominator=8,
                                   window_end=NOW - timedelta(days=days_ago))
            store_indicator(conn, snapshot, key=topics.indicator_history_key(LOC_A, "urinalysis_timeliness", day),
                            now=NOW)
    history = client.get(f"/v1/locations/{LOC_A}/indicators/urinalysis_timeliness/history?from=2026-11-20",
                         headers=headers).json()
    assert [(p["day"], p["numerator"], p["title"]) for p in history["items"]] == [
        ("2026-11-21", 6.0, "Urinalysis after an amber NEWS2 episode"),
        ("2026-11-22", 5.0, "Urinalysis after an amber NEWS2 episode")]

    measure = client.get("/v1/fhir/Measure/urinalysis_timeliness", headers=headers).json()
    resource = Measure.model_validate(measure)
    assert "not recommended" in resource.usage and "[U3]" in resource.usage
    assert resource.topic[0].coding[0].code == "1104051000000101"  # its population is amber NEWS2 episodes
    continuity = Measure.model_validate(client.get("/v1/fhir/Measure/carer_continuity", headers=headers).json())
    assert continuity.usage is None and continuity.experimental is True  # proposed thresholds: a draft
    assert (continuity.status, continuity.improvementNotation.coding[0].code) == ("draft", "decrease")

    report = client.get(f"/v1/locations/{LOC_A}/fhir/MeasureReport/travel_time", headers=headers).json()
    assert [p["count"] for p in report["group"][0]["population"]] == [1, 40]
    assert report["group"][0]["measureScore"]["value"] == 2.5
    masked = client.get(f"/v1/locations/{LOC_A}/fhir/MeasureReport/travel_time", headers=client.keys["regulator"]).json()
    assert masked["group"][0]["population"][0]["_count"]["extension"][0]["valueCode"] == "masked"


def _evidence(report: dict) -> dict[str, dict]:
    return {e["indicator_id"]: e for kq in report["key_questions"] for statement in kq["quality_statements"]
            for e in statement["evidence"]}


def test_the_inspection_marks_issue_11_indicators_and_shows_capacity(client):
    headers = client.keys["provider_a"]
    report = client.get(f"/v1/locations/{LOC_A}/inspection", headers=headers).json()
    evidence = _evidence(report)
    assert [(i, evidence[i]["extension"], evidence[i]["status"]) for i in ("falls_rate", "travel_time", "carer_continuity")] == [
        ("falls_rate", False, "amber"), ("travel_time", True, "green"), ("carer_continuity", True, "no_data")]
    # The urinalysis pathway is off by default: no value, so neither evidence nor a gap in the provider's data.
    assert "urinalysis_timeliness" not in evidence
    assert "urinalysis_timeliness" not in [g["indicator_id"] for g in report["gaps"]]
    assert report["mapping_version"] == "carepulse-saf-mapping.2"
    assert (report["capacity"]["setting"], report["capacity"]["vacant_beds"]) == ("care_home", 1)

    html = client.get(f"/v1/locations/{LOC_A}/inspection.html", headers=headers).text
    assert html.count("new indicator, proposed thresholds") == 2  # travel time and continuity of carers
    assert "Live capacity" in html and "<th scope=\"col\">Reserved (in hospital)</th>" in html
    assert "<td>30</td><td>27</td><td>2</td><td>1</td>" in html

    regulator = client.get(f"/v1/locations/{LOC_B}/inspection", headers=client.keys["regulator"]).json()
    assert (regulator["capacity"]["people_receiving_care"], regulator["capacity"]["suppressed"]) == ("suppressed", True)
    page = client.get(f"/v1/locations/{LOC_B}/inspection.html", headers=client.keys["regulator"]).text
    assert "<td>suppressed</td><td>120.5</td><td>140.0</td><td>19.5</td>" in page


def test_a_reported_urinalysis_value_is_shown_with_its_clinical_caveat(client, engine):
    with engine.begin() as conn:
        store_indicator(conn, _urinalysis(LOC_A, numerator=5, denominator=6, status="amber"), key=None, now=NOW)
    headers = client.keys["provider_a"]
    evidence = _evidence(client.get(f"/v1/locations/{LOC_A}/inspection", headers=headers).json())
    urinalysis = evidence["urinalysis_timeliness"]
    assert (urinalysis["extension"], urinalysis["status"]) == (True, "amber")
    assert urinalysis["caveat"]["text"].startswith("Clinical caveat: urine dipstick tests are not recommended")
    assert "[U3]" in urinalysis["caveat"]["source"] and "cqc_domain.md §2.2 row 13" in urinalysis["caveat"]["source"]
    assert urinalysis["mapping_source"].startswith("cqc_domain.md §1.3, row Safe / Safe systems")
    html = client.get(f"/v1/locations/{LOC_A}/inspection.html", headers=headers).text
    assert html.count('class="caveat"') == 1 and "not recommended to diagnose urinary tract infection" in html
