"""Assembling NEWS2 observation sets from separate readings (indicators/assembly.py), as tables of
(readings, expected sets) plus the order-independence property.

Packaged rules: a set spans at most 600 s of event time; readings may arrive up to 120 s out of order.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indicators.assembly import (
    SET_FIELDS,
    AssembledSet,
    OpenSet,
    Reading,
    add_reading,
    device_parameters,
    expire,
)
from indicators.escalation import load_rules
from tests.factories import T0

RULES = load_rules()
S = timedelta(seconds=1)
MIN = timedelta(minutes=1)

# ---------------------------------------------------------------------------------------------------
# device_parameters: decoder output (gateway/codecs) -> set fields

DEVICE = [
    ("oximeter spot", "plx_spot_check_measurement", {"spo2_pct": 95.0, "pulse_rate_bpm": 88, "status": "ok"},
     {"spo2": 95.0, "pulse": 88.0}),
    ("oximeter continuous", "plx_continuous_measurement", {"spo2_pct": 91, "pulse_rate_bpm": 101.0},
     {"spo2": 91.0, "pulse": 101.0}),
    ("cuff", "blood_pressure_measurement",
     {"systolic_mmhg": 132.0, "diastolic_mmhg": 84.0, "mean_arterial_pressure_mmhg": "NaN", "pulse_rate_bpm": 70.0},
     {"systolic_bp": 132.0, "pulse": 70.0}),
    ("thermometer", "temperature_measurement", {"temperature_c": 37.4, "unit": "celsius"}, {"temperature": 37.4}),
    ("special SpO2 supplies nothing", "plx_spot_check_measurement", {"spo2_pct": "NaN", "pulse_rate_bpm": 72.0},
     {"pulse": 72.0}),
    ("NRes pulse", "blood_pressure_measurement", {"systolic_mmhg": 120.0, "pulse_rate_bpm": "NRes"},
     {"systolic_bp": 120.0}),
    ("infinite special", "temperature_measurement", {"temperature_c": "+INF"}, {}),
    ("bool is not a number", "plx_spot_check_measurement", {"spo2_pct": True, "pulse_rate_bpm": False}, {}),
    ("None is not a number", "blood_pressure_measurement", {"systolic_mmhg": None, "pulse_rate_bpm": 66}, {"pulse": 66.0}),
    ("heart-rate strap ignored", "heart_rate_measurement", {"heart_rate_bpm": 72, "sensor_contact": "detected"}, {}),
    ("weight scale ignored", "weight_measurement", {"weight_kg": 70.5}, {}),
    ("field missing", "blood_pressure_measurement", {"diastolic_mmhg": 80.0}, {}),
]


@pytest.mark.parametrize(("characteristic", "values", "expected"), [row[1:] for row in DEVICE],
                         ids=[row[0] for row in DEVICE])
def test_device_parameters(characteristic, values, expected):
    supplied = device_parameters(characteristic, values)
    assert supplied == expected
    assert all(type(value) is float for value in supplied.values())


# ---------------------------------------------------------------------------------------------------
# add_reading / expire: one table of (open set, latest seen before, readings) -> (open set after, sets)

def r(event_id: str, at: timedelta, **values) -> Reading:
    return Reading(event_id, T0 + at, values)


OXI = r("a-oxi", 0 * S, spo2=96.0, pulse=80.0)
CUFF = r("b-cuff", 40 * S, systolic_bp=118.0, pulse=84.0)
THERMO = r("c-thermo", 80 * S, temperature=37.1)
MANUAL = r("d-manual", 120 * S, respiration_rate=18, consciousness="A", on_oxygen=False)
ROUND = [OXI, CUFF, THERMO, MANUAL]
FULL_VALUES = dict(spo2=96.0, pulse=80.0, systolic_bp=118.0, temperature=37.1, respiration_rate=18,
                   consciousness="A", on_oxygen=False)
FULL_SET = AssembledSet(FULL_VALUES, T0 + 120 * S, ("a-oxi", "b-cuff", "c-thermo", "d-manual"))


def feed(readings: list[Reading], open_set: OpenSet | None = None, latest: datetime | None = None,
         rules=RULES) -> tuple[OpenSet | None, list[list[AssembledSet]]]:
    """Deliver readings in order; `latest` is the running max of event time, as the resident state keeps it."""
    emitted = []
    for reading in readings:
        open_set, ready = add_reading(open_set, reading, latest, rules)
        emitted.append(ready)
        latest = reading.occurred_at if latest is None else max(latest, reading.occurred_at)
    return open_set, emitted


def open_of(*readings: Reading) -> OpenSet:
    open_set = OpenSet.start(readings[0])
    for reading in readings[1:]:
        open_set = open_set.add(reading)
    return open_set


ASSEMBLY = [
    # (name, readings in delivery order, emitted per reading, open set afterwards)
    ("round completes at the 4th", ROUND, [[], [], [], [FULL_SET]], None),
    ("any order, same set", [MANUAL, THERMO, OXI, CUFF], [[], [], [], [FULL_SET]], None),
    ("pulse twice: earliest wins (oximeter)", [CUFF, OXI, THERMO, MANUAL], [[], [], [], [FULL_SET]], None),
    ("pulse twice at the same time: lower event id wins",
     [replace(CUFF, occurred_at=T0), OXI, THERMO, MANUAL],
     [[], [], [], [replace(FULL_SET, values={**FULL_VALUES, "pulse": 80.0})]], None),
    ("pulse tie, other id order",
     [replace(CUFF, event_id="0-cuff", occurred_at=T0), OXI, THERMO, MANUAL],
     [[], [], [], [AssembledSet({**FULL_VALUES, "pulse": 84.0}, T0 + 120 * S,
                                ("0-cuff", "a-oxi", "c-thermo", "d-manual"))]], None),
    ("one reading with all seven", [r("m", 0 * S, **FULL_VALUES)],
     [[AssembledSet(FULL_VALUES, T0, ("m",))]], None),
    ("partial round stays open", [OXI, THERMO], [[], []], open_of(OXI, THERMO)),
    ("exactly 600 s apart still fits", [OXI, r("t", 600 * S, temperature=37.0)], [[], []],
     open_of(OXI, r("t", 600 * S, temperature=37.0))),
    ("beyond the window closes the set incomplete and starts another",
     [OXI, THERMO, r("next", 601 * S, temperature=36.9)],
     [[], [], [AssembledSet({"spo2": 96.0, "pulse": 80.0, "temperature": 37.1}, T0 + 80 * S, ("a-oxi", "c-thermo"))]],
     open_of(r("next", 601 * S, temperature=36.9))),
    ("beyond the window, new reading complete: both emitted",
     [OXI, r("m", 700 * S, **FULL_VALUES)],
     [[], [AssembledSet({"spo2": 96.0, "pulse": 80.0}, T0, ("a-oxi",)),
           AssembledSet(FULL_VALUES, T0 + 700 * S, ("m",))]], None),
    ("a reading after completion within the window starts a new set",
     [*ROUND, r("e-oxi", 150 * S, spo2=97.0, pulse=79.0)], [[], [], [], [FULL_SET], []],
     open_of(r("e-oxi", 150 * S, spo2=97.0, pulse=79.0))),
    ("empty values: nothing", [r("empty", 0 * S)], [[]], None),
]


@pytest.mark.parametrize(("readings", "emitted", "open_after"), [row[1:] for row in ASSEMBLY],
                         ids=[row[0] for row in ASSEMBLY])
def test_add_reading(readings, emitted, open_after):
    assert feed(readings) == (open_after, emitted)


def test_a_late_reading_is_emitted_alone_and_leaves_the_open_set_unchanged():
    open_set = open_of(r("now-oxi", 20 * MIN, spo2=95.0, pulse=90.0))
    late = r("old-thermo", 20 * MIN - 121 * S - 10 * MIN, temperature=38.0)  # beyond window and lateness
    assert add_reading(open_set, late, T0 + 20 * MIN, RULES) == (
        open_set, [AssembledSet({"temperature": 38.0}, late.occurred_at, ("old-thermo",), late=True)])


def test_a_late_reading_with_no_open_set_is_still_emitted():
    late = r("old", 0 * S, temperature=38.0)
    assert add_reading(None, late, T0 + 121 * S, RULES) == (
        None, [AssembledSet({"temperature": 38.0}, T0, ("old",), late=True)])


def test_a_reading_exactly_at_the_lateness_bound_is_not_late():
    reading = r("edge", 0 * S, temperature=38.0)
    assert add_reading(None, reading, T0 + 120 * S, RULES) == (OpenSet.start(reading), [])


def test_a_reading_older_than_lateness_but_within_the_window_joins_the_open_set():
    """Lateness guards against re-opening closed rounds; a reading of the round still being gathered joins it."""
    open_set = open_of(r("m", 5 * MIN, respiration_rate=18, consciousness="A", on_oxygen=False))
    thermo = r("t", 0 * S, temperature=37.0)
    assert add_reading(open_set, thermo, T0 + 5 * MIN, RULES) == (open_set.add(thermo), [])


def test_an_earlier_round_within_lateness_forms_its_own_set():
    # Only reachable when lateness exceeds the window: here 60 s windows, 600 s lateness.
    rules = replace(RULES, assembly_window_s=60, allowed_lateness_s=600)
    open_set = open_of(r("now", 5 * MIN, temperature=37.0))
    earlier = r("earlier", 0 * S, spo2=94.0)
    assert add_reading(open_set, earlier, T0 + 5 * MIN, rules) == (
        open_set, [AssembledSet({"spo2": 94.0}, T0, ("earlier",))])


EXPIRE = [
    ("just before the window ends", T0 + 600 * S - timedelta(microseconds=1), False),
    ("at the window end", T0 + 600 * S, True),
    ("long after", T0 + 3600 * S, True),
]


@pytest.mark.parametrize(("clock", "closes"), [row[1:] for row in EXPIRE], ids=[row[0] for row in EXPIRE])
def test_expire(clock, closes):
    open_set = open_of(OXI, THERMO)
    incomplete = AssembledSet({"spo2": 96.0, "pulse": 80.0, "temperature": 37.1}, T0 + 80 * S, ("a-oxi", "c-thermo"))
    assert expire(open_set, clock, RULES) == ((None, [incomplete]) if closes else (open_set, []))


def test_expire_without_an_open_set_or_a_clock_does_nothing():
    assert expire(None, T0 + 3600 * S, RULES) == (None, [])
    assert expire(open_of(OXI), None, RULES) == (open_of(OXI), [])


def test_an_incomplete_set_names_what_is_missing():
    closed = open_of(OXI, THERMO).to_set()
    assert (closed.missing, closed.complete) == (
        ("respiration_rate", "on_oxygen", "systolic_bp", "consciousness"), False)
    assert (FULL_SET.missing, FULL_SET.complete) == ((), True)


def test_open_set_json_round_trip():
    open_set = open_of(CUFF, OXI, MANUAL)
    restored = OpenSet.from_json(json.loads(json.dumps(open_set.to_json())))
    assert restored == open_set
    assert feed([THERMO], restored) == feed([THERMO], open_set) == (None, [[FULL_SET]])


# ---------------------------------------------------------------------------------------------------
# Property: the readings of one round form the same set whatever order they arrive in.

@st.composite
def rounds(draw) -> list[Reading]:
    """2-6 readings within one 600 s window. Each reading holds at least one field no other reading has (so the
    set completes only with the last of them) and may repeat fields of others (pulse from oximeter and cuff),
    with values and event times that may tie."""
    count = draw(st.integers(2, 6))
    fields_shuffled = draw(st.permutations(SET_FIELDS))
    unique, shared = fields_shuffled[:count], fields_shuffled[count:]
    owner = {field: i for i, field in enumerate(unique)}
    owner.update({field: draw(st.integers(0, count - 1)) for field in shared})
    extras = draw(st.lists(st.tuples(st.sampled_from(shared), st.integers(0, count - 1)), max_size=4))
    start = T0 + draw(st.integers(0, 3600)) * S
    readings = []
    for i in range(count):
        fields = {f for f, o in owner.items() if o == i} | {f for f, o in extras if o == i}
        values = {f: draw(VALUES[f]) for f in sorted(fields)}
        at = start + draw(st.integers(0, RULES.assembly_window_s)) * S
        readings.append(Reading(draw(st.sampled_from("abcdef")) + str(i), at, values))
    return readings


VALUES = {
    "respiration_rate": st.integers(8, 30), "spo2": st.integers(85, 100), "on_oxygen": st.booleans(),
    "systolic_bp": st.integers(80, 200), "pulse": st.integers(40, 140), "consciousness": st.sampled_from("ACVPU"),
    "temperature": st.integers(350, 400).map(lambda t: t / 10),
}


@given(readings=rounds(), data=st.data())
def test_any_delivery_order_within_a_round_gives_the_same_set(readings, data):
    order = data.draw(st.permutations(readings))
    assert feed(order) == feed(sorted(readings, key=lambda x: (x.occurred_at, x.event_id)))
    open_after, emitted = feed(order)
    assert open_after is None and [len(ready) for ready in emitted] == [0] * (len(order) - 1) + [1]
    [assembled] = emitted[-1]
    assert assembled.complete
    assert assembled.event_ids == tuple(sorted(x.event_id for x in readings))
    assert assembled.occurred_at == max(x.occurred_at for x in readings)
    for field in SET_FIELDS:  # each field: the earliest reading that has it, ties by event id
        first = min((x for x in readings if field in x.values), key=lambda x: (x.occurred_at, x.event_id))
        assert assembled.values[field] == first.values[field]


@pytest.mark.parametrize(
    ("characteristic", "values", "expected"),
    [
        ("plx_spot_check_measurement", {"spo2_pct": 97.0, "pulse_rate_bpm": 70.0, "measurement_status": ["validated_data"]},
         {"spo2": 97.0, "pulse": 70.0}),
        ("plx_spot_check_measurement", {"spo2_pct": 97.0, "pulse_rate_bpm": 70.0,
                                        "measurement_status": ["invalid_measurement_detected"]}, {}),
        ("plx_spot_check_measurement", {"spo2_pct": 97.0, "pulse_rate_bpm": 70.0,
                                        "measurement_status": ["data_from_measurement_storage"]}, {}),
        ("plx_continuous_measurement", {"spo2_pct": 88.0, "pulse_rate_bpm": 70.0, "measurement_status": None,
                                        "device_and_sensor_status": ["low_perfusion"]}, {"spo2": 88.0, "pulse": 70.0}),
        ("plx_continuous_measurement", {"spo2_pct": 88.0, "pulse_rate_bpm": 70.0,
                                        "device_and_sensor_status": ["sensor_displaced"]}, {}),
        ("blood_pressure_measurement", {"systolic_mmhg": 95.0, "measurement_status": ["irregular_pulse"]},
         {"systolic_bp": 95.0}),
        ("blood_pressure_measurement", {"systolic_mmhg": 95.0, "measurement_status": ["cuff_too_loose"]}, {}),
    ],
)
def test_readings_the_device_marks_invalid_supply_nothing(characteristic, values, expected):
    assert device_parameters(characteristic, values) == expected
