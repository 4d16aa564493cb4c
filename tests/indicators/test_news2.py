"""The scalar NEWS2 core against RCP Charts 1, 2 and 4 as transcribed in shared/domain/news2.md.

Expected values are written out from the charts here, not read from the config, so a wrong band in
news2.toml fails these tests.
"""

import copy
import math
import tomllib
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indicators import news2
from indicators.news2 import (
    PARAMETERS,
    RULES_VERSION,
    Consciousness,
    ImpossibleValue,
    IncompleteScore,
    News2Score,
    ObservationSet,
    Risk,
    risk_for,
    score,
    score_parameter,
)

# A resident whose every parameter scores 0 [C1]; tests change one or two fields of it.
NORMAL = ObservationSet(
    respiration_rate=16,
    spo2=97,
    spo2_scale=1,
    on_oxygen=False,
    systolic_bp=120,
    pulse=70,
    consciousness="A",
    temperature=37.0,
)
ZERO_SCORES = dict.fromkeys(PARAMETERS, 0)


def load_config() -> dict:
    return tomllib.loads(
        resources.files("indicators").joinpath("config", "news2.toml").read_text(encoding="utf-8")
    )


# ---------------------------------------------------------------------------------------------------
# Chart 1 [C1]: both sides of every band edge, plus the plausible extremes.

CHART_1 = {
    "respiration_rate": [
        (0, 3),
        (8, 3),
        (9, 1),
        (11, 1),
        (12, 0),
        (20, 0),
        (21, 2),
        (24, 2),
        (25, 3),
        (80, 3),
    ],
    "spo2": [(50, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)],
    "systolic_bp": [
        (40, 3),
        (90, 3),
        (91, 2),
        (100, 2),
        (101, 1),
        (110, 1),
        (111, 0),
        (219, 0),
        (220, 3),
        (300, 3),
    ],
    "pulse": [
        (20, 3),
        (40, 3),
        (41, 1),
        (50, 1),
        (51, 0),
        (90, 0),
        (91, 1),
        (110, 1),
        (111, 2),
        (130, 2),
        (131, 3),
        (300, 3),
    ],
    "temperature": [
        (25.0, 3),
        (35.0, 3),
        (35.1, 1),
        (36.0, 1),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
        (45.0, 2),
    ],
    "consciousness": [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)],
}
CHART_1_CASES = [(name, value, points) for name, rows in CHART_1.items() for value, points in rows]


@pytest.mark.parametrize(("name", "value", "expected"), CHART_1_CASES)
def test_chart_1_band_edges(name: str, value: object, expected: int) -> None:
    assert score_parameter(name, value) == expected
    result = score(replace(NORMAL, **{name: value}))
    assert result.parameter_scores == {**ZERO_SCORES, name: expected}
    assert result.total == expected


@pytest.mark.parametrize(("spo2_scale", "spo2_points"), [(1, 3), (2, 0)])
@pytest.mark.parametrize(("on_oxygen", "expected"), [(False, 0), (True, 2)])
def test_air_or_oxygen_scores_on_both_scales(
    spo2_scale: int, spo2_points: int, on_oxygen: bool, expected: int
) -> None:
    assert score_parameter("air_or_oxygen", on_oxygen) == expected
    result = score(replace(NORMAL, spo2=90, spo2_scale=spo2_scale, on_oxygen=on_oxygen))
    assert result.parameter_scores == {**ZERO_SCORES, "spo2": spo2_points, "air_or_oxygen": expected}


def test_consciousness_accepts_the_enum() -> None:
    assert score_parameter("consciousness", Consciousness.CONFUSION) == 3
    assert score(replace(NORMAL, consciousness=Consciousness.ALERT)).total == 0


# SpO2 Scale 2 [C1] [Thorax-T1]: 88-92 scores 0 on air or oxygen; >= 93 scores only on oxygen.
SCALE_2_ON_AIR = {86: 1, 87: 1} | dict.fromkeys(range(88, 101), 0)
SCALE_2_ON_OXYGEN = {
    86: 1,
    87: 1,
    88: 0,
    89: 0,
    90: 0,
    91: 0,
    92: 0,
    93: 1,
    94: 1,
    95: 2,
    96: 2,
    97: 3,
    98: 3,
    99: 3,
    100: 3,
}
SCALE_2_LOW = {50: 3, 83: 3, 84: 2, 85: 2}


@pytest.mark.parametrize(
    ("spo2", "on_oxygen", "expected"),
    [(spo2, False, points) for spo2, points in (SCALE_2_LOW | SCALE_2_ON_AIR).items()]
    + [(spo2, True, points) for spo2, points in (SCALE_2_LOW | SCALE_2_ON_OXYGEN).items()],
)
def test_spo2_scale_2(spo2: int, on_oxygen: bool, expected: int) -> None:
    assert score_parameter("spo2", spo2, spo2_scale=2, on_oxygen=on_oxygen) == expected
    result = score(replace(NORMAL, spo2=spo2, spo2_scale=2, on_oxygen=on_oxygen))
    oxygen_points = 2 if on_oxygen else 0
    assert result.parameter_scores == {**ZERO_SCORES, "spo2": expected, "air_or_oxygen": oxygen_points}
    assert result.total == expected + oxygen_points


def test_scale_2_on_oxygen_at_97_is_already_medium() -> None:
    # news2.md §1a: SpO2 3 + oxygen 2 = 5, so this 3 can never give "low-medium".
    result = score(replace(NORMAL, spo2=97, spo2_scale=2, on_oxygen=True))
    assert (result.total, result.any_single_3, result.risk) == (5, True, Risk.MEDIUM)


def test_scale_2_from_93_without_oxygen_state_is_not_scorable() -> None:
    with pytest.raises(ValueError, match="needs on_oxygen") as raised:
        score_parameter("spo2", 93, spo2_scale=2)
    assert not isinstance(raised.value, ImpossibleValue)
    assert score(replace(NORMAL, spo2=93, spo2_scale=2, on_oxygen=None)) == IncompleteScore(
        missing=("spo2", "air_or_oxygen"),
        parameter_scores={name: 0 for name in PARAMETERS if name not in ("spo2", "air_or_oxygen")},
        any_single_3=False,
        rules_version=RULES_VERSION,
    )
    # 92.5 quantises to 93, so it depends on oxygen too; 92.4 (-> 92) scores 0 either way.
    assert score(replace(NORMAL, spo2=92.5, spo2_scale=2, on_oxygen=None)).missing == (
        "spo2",
        "air_or_oxygen",
    )
    assert score_parameter("spo2", 92.4, spo2_scale=2) == 0
    assert score(replace(NORMAL, spo2=92, spo2_scale=2, on_oxygen=None)).missing == ("air_or_oxygen",)


def test_scale_1_does_not_depend_on_oxygen_state() -> None:
    assert [score_parameter("spo2", spo2) for spo2 in (91, 93, 95, 100)] == [3, 2, 1, 0]


def test_score_parameter_rejects_unknown_and_missing() -> None:
    with pytest.raises(ValueError, match="'heart_rate' is not a NEWS2 parameter"):
        score_parameter("heart_rate", 80)
    with pytest.raises(ValueError, match="pulse is missing"):
        score_parameter("pulse", None)


# ---------------------------------------------------------------------------------------------------
# Decimal policy: half-up to chart precision, then the chart (news2.md §2, "round half-up" column).

DECIMAL_PROBES = [
    ("respiration_rate", 8.5, {}, 1),
    ("respiration_rate", 11.5, {}, 0),
    ("respiration_rate", 20.5, {}, 2),
    ("respiration_rate", 24.4, {}, 2),
    ("respiration_rate", 24.5, {}, 3),
    ("spo2", 91.5, {"spo2_scale": 1}, 2),
    ("spo2", 92.5, {"spo2_scale": 2, "on_oxygen": True}, 1),
    ("systolic_bp", 90.5, {}, 2),
    ("pulse", 130.5, {}, 3),
    ("temperature", 35.04, {}, 3),
    ("temperature", 35.05, {}, 1),
    ("temperature", 38.04, {}, 0),
    ("temperature", 38.05, {}, 1),
    # Further edge floats: 38.04999999 is below the half; the nearest floats to x.5 / x.x5 are not.
    ("temperature", 38.04999999, {}, 0),
    ("temperature", 36.05, {}, 0),
    ("temperature", 36.04, {}, 1),
    ("temperature", 39.05, {}, 2),
    ("temperature", 39.049, {}, 1),
    ("respiration_rate", math.nextafter(24.5, 0), {}, 2),
    ("respiration_rate", math.nextafter(24.5, 99), {}, 3),
    ("pulse", 40.5, {}, 1),
    ("pulse", 40.49, {}, 3),
    ("systolic_bp", 219.5, {}, 3),
    ("systolic_bp", 219.49, {}, 0),
    ("spo2", 95.5, {"spo2_scale": 1}, 0),
    ("spo2", 96.5, {"spo2_scale": 2, "on_oxygen": True}, 3),
]


@pytest.mark.parametrize(("name", "value", "context", "expected"), DECIMAL_PROBES)
def test_decimal_policy(name: str, value: float, context: dict, expected: int) -> None:
    assert score_parameter(name, value, **context) == expected
    assert score(replace(NORMAL, **{name: value}, **context)).parameter_scores[name] == expected


def test_whole_number_floats_and_ints_score_alike() -> None:
    assert score(replace(NORMAL, pulse=131.0, temperature=38)) == score(
        replace(NORMAL, pulse=131, temperature=38.0)
    )


# An independent reference scorer, written from news2.md §1 with integer comparisons.
def reference_points(name: str, units: int, spo2_scale: int, on_oxygen: bool) -> int:
    """Chart 1 [C1] at chart precision: ``units`` is whole numbers, or tenths of a °C."""
    if name == "respiration_rate":
        return 3 if units <= 8 else 1 if units <= 11 else 0 if units <= 20 else 2 if units <= 24 else 3
    if name == "spo2" and spo2_scale == 1:
        return 3 if units <= 91 else 2 if units <= 93 else 1 if units <= 95 else 0
    if name == "spo2":
        low = 3 if units <= 83 else 2 if units <= 85 else 1 if units <= 87 else 0
        high_on_oxygen = 1 if units <= 94 else 2 if units <= 96 else 3
        return low if units <= 92 or not on_oxygen else high_on_oxygen
    if name == "systolic_bp":
        return 3 if units <= 90 else 2 if units <= 100 else 1 if units <= 110 else 0 if units <= 219 else 3
    if name == "pulse":
        return (
            3
            if units <= 40
            else 1
            if units <= 50
            else 0
            if units <= 90
            else 1
            if units <= 110
            else 2
            if units <= 130
            else 3
        )
    return 3 if units <= 350 else 1 if units <= 360 else 0 if units <= 380 else 1 if units <= 390 else 2


PLAUSIBLE = {
    "respiration_rate": (0, 80),
    "spo2": (50, 100),
    "systolic_bp": (40, 300),
    "pulse": (20, 300),
    "temperature": (25.0, 45.0),
}


@st.composite
def measured_values(draw: st.DrawFn) -> tuple[str, float, int, bool]:
    name = draw(st.sampled_from(sorted(PLAUSIBLE)))
    low, high = PLAUSIBLE[name]
    value = draw(
        st.floats(low, high)
        | st.decimals(low, high, places=2).map(float).filter(lambda x: low <= x <= high)
        | st.integers(int(low), int(high))
    )
    return name, value, draw(st.sampled_from([1, 2])), draw(st.booleans())


@given(measured_values())
def test_every_value_scores_as_its_half_up_quantisation(case: tuple[str, float, int, bool]) -> None:
    name, value, spo2_scale, on_oxygen = case
    step = Decimal("0.1") if name == "temperature" else Decimal(1)
    units = int(Decimal(str(value)).quantize(step, rounding=ROUND_HALF_UP) / step)
    expected = reference_points(name, units, spo2_scale, on_oxygen)
    assert score_parameter(name, value, spo2_scale=spo2_scale, on_oxygen=on_oxygen) == expected


# ---------------------------------------------------------------------------------------------------
# Chart 2 risk (news2.md §3) and Chart 4 monitoring and response [C4].


def scores_with(**changes: int) -> dict[str, int]:
    return {**ZERO_SCORES, **changes}


RISK_CASES = [
    (scores_with(), Risk.LOW),
    (scores_with(temperature=1), Risk.LOW),
    (scores_with(respiration_rate=2, pulse=2), Risk.LOW),  # total 4, no single 3
    (scores_with(consciousness=3), Risk.LOW_MEDIUM),  # total 3 with a single 3
    (scores_with(consciousness=3, pulse=1), Risk.LOW_MEDIUM),  # total 4 with a single 3
    (scores_with(respiration_rate=2, pulse=2, temperature=1), Risk.MEDIUM),  # total 5
    (scores_with(consciousness=3, respiration_rate=2), Risk.MEDIUM),  # total 5 with a single 3
    (scores_with(respiration_rate=2, pulse=2, air_or_oxygen=2), Risk.MEDIUM),  # total 6
    (scores_with(consciousness=3, respiration_rate=3), Risk.MEDIUM),  # total 6, two 3s
    (scores_with(respiration_rate=2, pulse=2, air_or_oxygen=2, temperature=1), Risk.HIGH),  # total 7
    (scores_with(consciousness=3, respiration_rate=2, pulse=2), Risk.HIGH),  # total 7 with a single 3
    ({**dict.fromkeys(PARAMETERS, 3), "air_or_oxygen": 2}, Risk.HIGH),  # total 20
]


@pytest.mark.parametrize(("parameter_scores", "expected"), RISK_CASES)
def test_risk_precedence(parameter_scores: dict[str, int], expected: Risk) -> None:
    assert risk_for(parameter_scores) == expected


def test_risk_needs_every_parameter() -> None:
    with pytest.raises(ValueError, match="risk needs the scores of all of"):
        risk_for({"pulse": 3})
    with pytest.raises(ValueError, match="parameter scores are 0 to 3"):
        risk_for(scores_with(pulse=4))


# Observation sets realising the risk boundaries end to end.
BOUNDARY_SETS = {
    "total 0": (NORMAL, 0, False, Risk.LOW),
    "total 1": (replace(NORMAL, temperature=38.5), 1, False, Risk.LOW),
    "total 4": (replace(NORMAL, respiration_rate=21, pulse=111), 4, False, Risk.LOW),
    "total 4 with a single 3": (replace(NORMAL, consciousness="C", pulse=91), 4, True, Risk.LOW_MEDIUM),
    "total 5": (replace(NORMAL, respiration_rate=21, pulse=111, temperature=38.1), 5, False, Risk.MEDIUM),
    "total 5 with a single 3": (
        replace(NORMAL, consciousness="C", respiration_rate=21),
        5,
        True,
        Risk.MEDIUM,
    ),
    "total 6": (replace(NORMAL, respiration_rate=22, pulse=115, on_oxygen=True), 6, False, Risk.MEDIUM),
    "total 6 with a single 3": (
        replace(NORMAL, systolic_bp=90, respiration_rate=22, temperature=38.1),
        6,
        True,
        Risk.MEDIUM,
    ),
    "total 7": (
        replace(NORMAL, respiration_rate=22, pulse=115, on_oxygen=True, temperature=38.1),
        7,
        False,
        Risk.HIGH,
    ),
    "total 7 with a single 3": (
        replace(NORMAL, consciousness="V", respiration_rate=21, pulse=111),
        7,
        True,
        Risk.HIGH,
    ),
    "total 20": (ObservationSet(30, 85, 1, True, 80, 150, "U", 34.0), 20, True, Risk.HIGH),
}

# Chart 4 [C4]: minimum monitoring by level; the response is the config entry for that level.
MONITORING = {
    "total 0": ("12-hourly", 720, 0),
    "total 1-4": ("4-6-hourly", 360, 1),
    Risk.LOW_MEDIUM: ("1-hourly", 60, 2),
    Risk.MEDIUM: ("1-hourly", 60, 3),
    Risk.HIGH: ("continuous", None, 4),
}


def monitoring_level(total: int, risk: Risk) -> str | Risk:
    if risk is Risk.LOW:
        return "total 0" if total == 0 else "total 1-4"
    return risk


@pytest.mark.parametrize("case", BOUNDARY_SETS)
def test_risk_boundaries_with_monitoring_and_response(case: str) -> None:
    obs, total, any_single_3, risk = BOUNDARY_SETS[case]
    result = score(obs)
    monitoring, interval_minutes, response_entry = MONITORING[monitoring_level(total, risk)]
    assert result == News2Score(
        parameter_scores=result.parameter_scores,
        total=total,
        any_single_3=any_single_3,
        risk=risk,
        monitoring=monitoring,
        monitoring_interval_minutes=interval_minutes,
        response=load_config()["response"][response_entry]["response"],
        rules_version=RULES_VERSION,
    )
    assert sum(result.parameter_scores.values()) == total


def test_every_level_has_its_own_response() -> None:
    responses = [entry["response"] for entry in load_config()["response"]]
    assert len(set(responses)) == len(MONITORING) == len(responses)
    assert all("[C4]" in entry["source"] for entry in load_config()["response"])


def test_to_dict_exact_shape() -> None:
    result = score(replace(NORMAL, consciousness="C", pulse=91))
    assert result.to_dict() == {
        "total": 4,
        "parameter_scores": {
            "respiration_rate": 0,
            "spo2": 0,
            "air_or_oxygen": 0,
            "systolic_bp": 0,
            "pulse": 1,
            "consciousness": 3,
            "temperature": 0,
        },
        "risk": "low-medium",
        "any_single_3": True,
        "monitoring": "1-hourly",
        "response": load_config()["response"][2]["response"],
        "rules_version": "RCP-NEWS2-2017.carepulse.1",
    }
    assert list(result.to_dict()) == [
        "total",
        "parameter_scores",
        "risk",
        "any_single_3",
        "monitoring",
        "response",
        "rules_version",
    ]
    assert list(result.to_dict()["parameter_scores"]) == list(PARAMETERS)
    assert type(result.to_dict()["risk"]) is str


# ---------------------------------------------------------------------------------------------------
# Incomplete sets.


def test_empty_set_is_incomplete_in_every_parameter() -> None:
    assert score(ObservationSet()) == IncompleteScore(
        missing=PARAMETERS, parameter_scores={}, any_single_3=False, rules_version=RULES_VERSION
    )


def test_incomplete_set_scores_what_is_present() -> None:
    result = score(replace(NORMAL, temperature=None, pulse=None, consciousness="V", on_oxygen=None))
    assert result == IncompleteScore(
        missing=("air_or_oxygen", "pulse", "temperature"),
        parameter_scores={"respiration_rate": 0, "spo2": 0, "systolic_bp": 0, "consciousness": 3},
        any_single_3=True,
        rules_version=RULES_VERSION,
    )
    assert list(result.parameter_scores) == ["respiration_rate", "spo2", "systolic_bp", "consciousness"]


def test_spo2_scale_is_never_missing() -> None:
    missing = ("respiration_rate", "systolic_bp", "pulse", "consciousness", "temperature")
    assert score(ObservationSet(spo2=95, on_oxygen=False)).missing == missing


# ---------------------------------------------------------------------------------------------------
# Impossible values: checked on the raw value, before quantisation and before anything is scored.

IMPOSSIBLE = [
    ("respiration_rate", -1, "must be between 0 and 80 /min"),
    ("respiration_rate", 80.01, "must be between 0 and 80 /min"),
    ("spo2", 49.9, "must be between 50 and 100 %"),
    ("spo2", 101, "must be between 50 and 100 %"),
    ("spo2", 100.4, "must be between 50 and 100 %"),
    ("systolic_bp", 39, "must be between 40 and 300 mmHg"),
    ("systolic_bp", 300.5, "must be between 40 and 300 mmHg"),
    ("pulse", 19.99, "must be between 20 and 300 /min"),
    ("pulse", -80, "must be between 20 and 300 /min"),
    ("pulse", math.inf, "must be between 20 and 300 /min"),
    ("temperature", 24.9, "must be between 25.0 and 45.0 °C"),
    ("temperature", 45.04, "must be between 25.0 and 45.0 °C"),
    ("temperature", -37.0, "must be between 25.0 and 45.0 °C"),
    ("temperature", math.nan, "it is not a number (leave the field empty when not recorded)"),
    ("spo2_scale", 3, "must be the whole number 1 or 2"),
    ("spo2_scale", 0, "must be the whole number 1 or 2"),
    ("spo2_scale", True, "must be the whole number 1 or 2"),
    ("spo2_scale", 2.0, "must be the whole number 1 or 2"),
    ("consciousness", "X", "must be one of A, C, V, P, U (ACVPU)"),
    ("consciousness", "a", "must be one of A, C, V, P, U (ACVPU)"),
    ("consciousness", "", "must be one of A, C, V, P, U (ACVPU)"),
    ("consciousness", 1, "must be one of A, C, V, P, U (ACVPU)"),
]


@pytest.mark.parametrize(("field", "value", "reason"), IMPOSSIBLE)
def test_impossible_value_names_the_field(field: str, value: object, reason: str) -> None:
    with pytest.raises(ImpossibleValue) as raised:
        score(replace(NORMAL, **{field: value}))
    error = raised.value
    assert (error.field, error.reason) == (field, reason)
    assert error.value is value
    shown = repr(value) if isinstance(value, str) else str(value)
    assert str(error) == f"{field} = {shown} is impossible: {reason}"


def test_impossible_message_reads_as_a_sentence() -> None:
    with pytest.raises(ImpossibleValue, match=r"^spo2 = 101 is impossible: must be between 50 and 100 %$"):
        score(replace(NORMAL, spo2=101))


@pytest.mark.parametrize(
    ("field", "value", "reason"), [case for case in IMPOSSIBLE if case[0] != "spo2_scale"]
)
def test_score_parameter_rejects_impossible_values(field: str, value: object, reason: str) -> None:
    with pytest.raises(ImpossibleValue, match=f"^{field} = "):
        score_parameter(field, value)


def test_impossible_is_raised_even_when_the_set_is_incomplete() -> None:
    with pytest.raises(ImpossibleValue, match=r"^pulse = 500 is impossible"):
        score(ObservationSet(pulse=500))
    with pytest.raises(ImpossibleValue, match=r"^spo2_scale = 3 is impossible"):
        score(ObservationSet(spo2_scale=3))


@pytest.mark.parametrize(
    ("field", "value"),
    [("respiration_rate", 0), ("spo2", 50), ("spo2", 100), ("temperature", 25), ("pulse", 300)],
)
def test_plausible_limits_are_inclusive(field: str, value: float) -> None:
    assert isinstance(score(replace(NORMAL, **{field: value})), News2Score)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pulse", "80", "pulse must be a number, not str"),
        ("pulse", True, "pulse must be a number, not bool"),
        ("on_oxygen", 1, "on_oxygen must be True, False or None, not int"),
    ],
)
def test_wrong_types_are_type_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(TypeError, match=f"^{message}$"):
        score(replace(NORMAL, **{field: value}))


# ---------------------------------------------------------------------------------------------------
# Properties over any plausible set.


@st.composite
def observation_sets(draw: st.DrawFn) -> ObservationSet:
    def maybe(strategy: st.SearchStrategy) -> object:
        return draw(st.none() | strategy)

    measured = {
        name: maybe(st.floats(low, high) | st.decimals(low, high, places=1).map(float))
        for name, (low, high) in PLAUSIBLE.items()
    }
    return ObservationSet(
        **measured,
        spo2_scale=draw(st.sampled_from([1, 2])),
        on_oxygen=maybe(st.booleans()),
        consciousness=maybe(st.sampled_from("ACVPU")),
    )


@given(observation_sets())
def test_properties_of_every_result(obs: ObservationSet) -> None:
    result = score(obs)
    assert list(result.parameter_scores) == [name for name in PARAMETERS if name in result.parameter_scores]
    assert result.any_single_3 == (3 in result.parameter_scores.values())
    if isinstance(result, IncompleteScore):
        assert result.missing
        assert set(result.missing).isdisjoint(result.parameter_scores)
        assert set(result.missing) | set(result.parameter_scores) == set(PARAMETERS)
        return
    assert result.total == sum(result.parameter_scores.values())
    assert 0 <= result.total <= 20
    assert result.risk == risk_for(result.parameter_scores)
    assert (
        result.monitoring_interval_minutes
        == {
            Risk.LOW: 720 if result.total == 0 else 360,
            Risk.LOW_MEDIUM: 60,
            Risk.MEDIUM: 60,
            Risk.HIGH: None,
        }[result.risk]
    )


# ---------------------------------------------------------------------------------------------------
# The config: every band table contiguous, non-overlapping and covering the plausible range at chart
# precision, for a resident on air and on oxygen; every entry sourced.

MEASURED_TABLES = {
    "respiration_rate": "respiration_rate",
    "spo2_scale_1": "spo2",
    "spo2_scale_2": "spo2",
    "systolic_bp": "systolic_bp",
    "pulse": "pulse",
    "temperature": "temperature",
}


def band_problems(config: dict) -> list[str]:
    """Every chart value in the plausible range must fall in exactly one band, per oxygen state."""
    problems = []
    for table, field in MEASURED_TABLES.items():
        step = Decimal(config["quantisation"]["step"][field])
        limits = config["plausible_range"][field]
        low, high = (int(Decimal(str(limits[end])) / step) for end in ("min", "max"))
        for on_oxygen in (False, True):
            bands = [band for band in config["bands"][table] if band.get("on_oxygen", on_oxygen) == on_oxygen]
            for units in range(low, high + 1):
                value = units * step
                matching = [
                    band
                    for band in bands
                    if Decimal(str(band.get("min", "-Infinity")))
                    <= value
                    <= Decimal(str(band.get("max", "Infinity")))
                ]
                if len(matching) != 1:
                    problems.append(f"{table} on_oxygen={on_oxygen}: {value} is in {len(matching)} bands")
    return problems


def all_entries(config: dict) -> list[dict]:
    return [
        *(entry for table in config["bands"].values() for entry in table),
        *config["plausible_range"].values(),
        *config["risk"],
        *config["response"],
        config["quantisation"],
    ]


def test_config_bands_are_contiguous_and_cover_the_plausible_range() -> None:
    assert band_problems(load_config()) == []


def test_band_check_finds_gaps_and_overlaps() -> None:
    gap = load_config()
    del gap["bands"]["pulse"][2]  # 51-90
    overlap = load_config()
    overlap["bands"]["temperature"][1]["max"] = 36.1
    assert band_problems(gap)[0] == "pulse on_oxygen=False: 51 is in 0 bands"
    assert band_problems(overlap)[0] == "temperature on_oxygen=False: 36.1 is in 2 bands"


def test_config_every_entry_has_a_source() -> None:
    entries = all_entries(load_config())
    assert len(entries) == 5 + 4 + 8 + 5 + 6 + 5 + 2 + 5 + 5 + 4 + 5 + 1
    assert [entry for entry in entries if not entry.get("source", "").strip()] == []


def test_config_plausible_ranges_are_marked_proposals() -> None:
    plausible = load_config()["plausible_range"]
    assert {
        field: (limits["min"], limits["max"], limits["proposal"]) for field, limits in plausible.items()
    } == {field: (*PLAUSIBLE[field], True) for field in PLAUSIBLE}


def test_config_version_is_the_results_version() -> None:
    assert load_config()["rules_version"] == RULES_VERSION == "RCP-NEWS2-2017.carepulse.1"
    assert score(NORMAL).rules_version == RULES_VERSION


# The loader refuses a broken config rather than scoring residents with it.
def broken(edit) -> dict:
    config = copy.deepcopy(load_config())
    edit(config)
    return config


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["bands"]["pulse"].pop(2),
            r"bands\.pulse \(on air\): the band ending at 50 is followed by one starting at 91: a gap",
        ),
        (
            lambda c: c["bands"]["temperature"][1].update(max=36.1),
            "ending at 36.1 .* starting at 36.1: a gap or an overlap",
        ),
        (lambda c: c["bands"]["respiration_rate"][0].update(source=" "), "needs a non-empty source"),
        (lambda c: c["bands"]["systolic_bp"][0].update(maximum=90), "unknown keys"),
        (lambda c: c["bands"]["systolic_bp"][-1].update(max=299), "values up to 300 are not covered"),
        (lambda c: c["bands"]["temperature"][0].update(max=35.05), "not at chart precision"),
        (lambda c: c["bands"]["pulse"][0].update(score=4), "score 4 is not 0, 1, 2 or 3"),
        (lambda c: c["bands"]["consciousness"].pop(), "needs exactly one entry for each of"),
        (lambda c: c["risk"].reverse(), "the last rule must match every total"),
        (lambda c: c["response"].pop(1), "0 entries match risk low at total 1"),
        (
            lambda c: c["response"][4].update(monitoring_interval_minutes=0),
            "either monitoring_interval_minutes",
        ),
        (lambda c: c["plausible_range"]["pulse"].update(min=-1), "a negative measurement is impossible"),
        (lambda c: c["quantisation"].update(rounding="half-even"), "only half-up rounding"),
    ],
)
def test_loader_rejects_a_broken_config(edit, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        news2._compile_rules(broken(edit))
