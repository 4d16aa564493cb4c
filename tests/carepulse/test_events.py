from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from carepulse import events
from tests.factories import T0, observation_set

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_committed_json_schemas_match_the_models():
    committed = {path.name: json.loads(path.read_text()) for path in SCHEMA_DIR.glob("*.json")}
    assert committed == events.json_schemas(), "run `carepulse schemas --write` and commit docs/schemas"


def test_round_trip_through_the_wire_form():
    original = observation_set("res-1")
    assert events.any_event_adapter.validate_json(events.to_json(original)) == original


@pytest.mark.parametrize("resident_id", ["9434765919", "943-476-5919"])
def test_identifiers_that_look_like_nhs_numbers_are_refused(resident_id):
    with pytest.raises(ValidationError, match="looks like an NHS number"):
        observation_set(resident_id)


def test_event_time_must_carry_a_timezone():
    with pytest.raises(ValidationError, match="timezone"):
        observation_set("res-1", occurred_at=datetime(2026, 11, 23, 9, 0))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_vitals_are_refused(value):
    with pytest.raises(ValidationError, match="finite"):
        observation_set("res-1", pulse=value)


def test_unknown_fields_are_refused():
    payload = json.loads(events.to_json(observation_set("res-1")))
    payload["heart_rate"] = 80
    with pytest.raises(ValidationError, match="heart_rate"):
        events.parse(events.ObservationSet, json.dumps(payload))


def test_derived_ids_are_stable_and_distinct():
    source = uuid.uuid4()
    assert events.derived_event_id("news2-score", source) == events.derived_event_id("news2-score", source)
    assert events.derived_event_id("news2-score", source) != events.derived_event_id("escalation", source)


def test_validation_errors_read_as_one_sentence_per_field():
    with pytest.raises(ValidationError) as caught:
        events.parse(events.ObservationSet, json.dumps({"event_type": "observation_set", "pulse": "fast"}))
    message = events.describe_validation_error(caught.value)
    assert "pulse: Input should be a valid number" in message
    assert "event_id: Field required" in message
    assert "\n" not in message


def test_dead_letters_may_have_no_location():
    letter = events.DeadLetter(
        event_id=uuid.uuid4(), occurred_at=T0, received_at=T0, source=events.Source(gateway_id="w"),
        reason="bad", stage="worker.news2", original_topic="observation-sets", original_payload="x",
    )
    assert letter.location_id is None
