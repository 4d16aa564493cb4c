"""The worker logs why it dead-letters a message; the reason must never carry a resident id or a value
from the payload (issue 10: no resident identifiers in logs). The dead letter itself keeps the key and
the payload, on a topic with access control."""

from __future__ import annotations

import json

import pytest

from carepulse import events, topics
from streams.app import parse_keyed_event
from tests.factories import observation_set

RESIDENT = "res-9f3a1c77e2"
SET = json.loads(events.to_json(observation_set(RESIDENT)))


def _payload(**changes) -> bytes:
    return json.dumps({**SET, **changes}).encode()


@pytest.mark.parametrize(("topic", "key", "payload"), [
    (topics.OBSERVATION_SETS.name, b"res-someone-else", _payload()),                     # key mismatch
    (topics.CARE_EVENTS.name, RESIDENT.encode(), _payload()),                             # wrong topic
    (topics.OBSERVATION_SETS.name, RESIDENT.encode(), _payload(unexpected=RESIDENT)),   # unknown field
    (topics.OBSERVATION_SETS.name, RESIDENT.encode(), _payload(pulse=RESIDENT)),        # wrong type
    (topics.OBSERVATION_SETS.name, RESIDENT.encode(), _payload(resident_id=RESIDENT + "!")),  # invalid id
    (topics.OBSERVATION_SETS.name, RESIDENT.encode(), json.dumps({"note": RESIDENT}).encode()),
    (topics.OBSERVATION_SETS.name, RESIDENT.encode(), RESIDENT.encode() + b"{"),       # not JSON
])
def test_a_rejection_reason_names_no_resident_and_no_payload_value(topic, key, payload):
    with pytest.raises(ValueError) as rejected:
        parse_keyed_event(topic, payload, key)
    reason = str(rejected.value)
    assert reason and "res-" not in reason and "someone" not in reason, reason
