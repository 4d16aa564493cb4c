"""``carepulse locations profile``: a location's profile published to the real broker, or refused with one
sentence and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from carepulse import events, topics
from tests.kafka_helpers import read_topic


def run_cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "carepulse", "locations", "profile", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "CAREPULSE_KAFKA_BOOTSTRAP": bootstrap})


def profiles_of(bootstrap: str, location_id: str, count: int) -> list[events.LocationProfile]:
    """The location's profiles on the topic (waiting for `count` of them), in the order published."""
    ours = f'"location_id":"{location_id}"'.encode()
    values = read_topic(bootstrap, topics.LOCATION_PROFILES.name, timeout_s=30,
                        until=lambda values: sum(ours in v for v in values) >= count)
    return [events.any_event_adapter.validate_json(v) for v in values if ours in v]


def new_location() -> str:
    return f"loc-cli-{uuid.uuid4().hex[:8]}"


def test_profiles_are_published_in_order_for_their_location(broker):
    home, agency = new_location(), new_location()
    done = run_cli(broker.bootstrap, home, "--setting", "care_home", "--beds", "40", "--name", "Oak House")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"published the profile of {home} to location-profiles: care_home, 40 registered beds\n"
    done = run_cli(broker.bootstrap, agency, "--setting", "homecare", "--commissioned-hours", "900")
    assert done.stdout.endswith(": homecare, 900 commissioned hours a week\n"), done.stderr
    # The home registers more beds: the new profile follows the first on the location's key.
    assert run_cli(broker.bootstrap, home, "--setting", "care_home", "--beds", "44").returncode == 0
    first, second = profiles_of(broker.bootstrap, home, 2)
    [homecare] = profiles_of(broker.bootstrap, agency, 1)
    published = [(p.setting, p.name, p.registered_beds, p.commissioned_hours_per_week)
                 for p in (first, second, homecare)]
    assert published == [("care_home", "Oak House", 40, None), ("care_home", None, 44, None),
                         ("homecare", None, None, 900.0)]
    assert first.occurred_at < second.occurred_at


@pytest.mark.parametrize("args, message", [
    (["--setting", "care_home"], "a care home's profile needs --beds"),
    (["--setting", "homecare", "--beds", "3"], "a homecare agency has no --beds (give --commissioned-hours)"),
    (["--setting", "hospital", "--beds", "3"], "--setting: Input should be 'care_home' or 'homecare'"),
    (["--setting", "care_home", "--beds", "0"], "--beds: Input should be greater than or equal to 1"),
    (["--setting", "care_home", "--beds", "1001"], "--beds: Input should be less than or equal to 1000"),
    (["--setting", "homecare", "--commissioned-hours", "-5"], "--commissioned-hours: Input should be greater than 0"),
    (["--setting", "homecare", "--commissioned-hours", "inf"], "--commissioned-hours: Input should be a finite number"),
    (["--setting", "care_home", "--beds", "4", "--name", ""], "--name: String should have at least 1 character"),
])
def test_an_invalid_profile_is_refused_with_one_line_and_nothing_is_published(broker, args, message):
    location_id = new_location()
    refused = run_cli(broker.bootstrap, location_id, *args)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == f"carepulse: not a valid location profile: {message}\n"
    # The same key afterwards: its partition keeps order, so the valid profile is the location's first.
    assert run_cli(broker.bootstrap, location_id, "--setting", "care_home", "--beds", "7").returncode == 0
    [published] = profiles_of(broker.bootstrap, location_id, 1)
    assert published.registered_beds == 7


def test_an_invalid_location_id_is_refused(broker):
    refused = run_cli(broker.bootstrap, "loc/with/slashes", "--setting", "homecare")
    assert refused.returncode == 2
    assert refused.stderr.startswith("carepulse: not a valid location profile: LOCATION_ID: String should match")
    assert refused.stderr.count("\n") == 1


def test_a_broker_that_does_not_answer_is_a_clear_error():
    closed_port = "127.0.0.1:1"
    refused = run_cli(closed_port, new_location(), "--setting", "homecare", "--commissioned-hours", "10")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"carepulse: could not publish to the broker at {closed_port}: ")
    assert refused.stderr.count("\n") == 1
