"""score_batch must return exactly what score returns, row for row, for every float64 input."""

import math
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indicators import news2
from indicators.news2 import (
    CONSCIOUSNESS_BY_CODE,
    PARAMETERS,
    RISK_BY_CODE,
    Consciousness,
    ImpossibleValue,
    IncompleteScore,
    ObservationSet,
    Risk,
    encode_consciousness,
    score,
    score_batch,
)

NORMAL = ObservationSet(16, 97, 1, False, 120, 70, "A", 37.0)  # every parameter scores 0 [C1]
MEASURED = ("respiration_rate", "spo2", "systolic_bp", "pulse", "temperature")
PLAUSIBLE = {
    "respiration_rate": (0, 80),
    "spo2": (50, 100),
    "systolic_bp": (40, 300),
    "pulse": (20, 300),
    "temperature": (25.0, 45.0),
}
STEP = {name: Decimal("0.1") if name == "temperature" else Decimal(1) for name in MEASURED}


def columns_for(observations: list[ObservationSet]) -> dict[str, np.ndarray]:
    columns = {
        name: np.array(
            [math.nan if getattr(obs, name) is None else getattr(obs, name) for obs in observations],
            dtype=np.float64,
        )
        for name in MEASURED
    }
    columns["spo2_scale"] = np.array([obs.spo2_scale for obs in observations], dtype=np.int64)
    columns["on_oxygen"] = np.array(
        [-1 if obs.on_oxygen is None else int(obs.on_oxygen) for obs in observations], dtype=np.int8
    )
    columns["consciousness"] = encode_consciousness([obs.consciousness for obs in observations])
    return columns


def expected_row(obs: ObservationSet) -> tuple[list[int], int, bool, int, bool, bool]:
    """(parameter scores, total, any single 3, risk code, complete, impossible) as score() has it."""
    try:
        result = score(obs)
    except ImpossibleValue:
        return [-1] * len(PARAMETERS), -1, False, -1, False, True
    row = [result.parameter_scores.get(name, -1) for name in PARAMETERS]
    if isinstance(result, IncompleteScore):
        return row, -1, result.any_single_3, -1, False, False
    return row, result.total, result.any_single_3, RISK_BY_CODE.index(result.risk), True, False


def assert_batch_matches_scalar(observations: list[ObservationSet]) -> None:
    batch = score_batch(columns_for(observations))
    actual = [
        (
            batch.parameter_scores[row].tolist(),
            int(batch.total[row]),
            bool(batch.any_single_3[row]),
            int(batch.risk[row]),
            bool(batch.complete[row]),
            bool(batch.impossible[row]),
        )
        for row in range(len(observations))
    ]
    assert actual == [expected_row(obs) for obs in observations]
    for row, obs in enumerate(observations):
        if not batch.impossible[row]:
            assert batch.score_at(row) == score(obs)
    complete = batch.complete
    assert (batch.total[complete] == batch.parameter_scores[complete].sum(axis=1)).all()


# ---------------------------------------------------------------------------------------------------
# Edge floats, named and swept.

EDGE_FLOATS = [
    ("temperature", 38.05, 1),
    ("temperature", 35.05, 1),
    ("temperature", 38.04999999, 0),
    ("temperature", 35.04, 3),
    ("respiration_rate", 24.5, 3),
    ("respiration_rate", 8.5, 1),
    ("respiration_rate", 11.5, 0),
    ("respiration_rate", 20.5, 2),
    ("spo2", 91.5, 2),
    ("systolic_bp", 90.5, 2),
    ("pulse", 130.5, 3),
]


@pytest.mark.parametrize(("name", "value", "expected"), EDGE_FLOATS)
def test_edge_floats(name: str, value: float, expected: int) -> None:
    batch = score_batch(columns_for([replace(NORMAL, **{name: value})]))
    assert batch.parameter_scores[0].tolist() == [expected if p == name else 0 for p in PARAMETERS]
    assert_batch_matches_scalar([replace(NORMAL, **{name: value})])


def test_scale_2_spo2_92_5_on_oxygen() -> None:
    batch = score_batch(columns_for([replace(NORMAL, spo2=92.5, spo2_scale=2, on_oxygen=True)]))
    assert batch.parameter_scores[0].tolist() == [0, 1, 2, 0, 0, 0, 0]
    assert (batch.total[0], RISK_BY_CODE[batch.risk[0]]) == (3, Risk.LOW)


def values_near_every_edge(name: str) -> list[float]:
    """Every chart value and half value of the plausible range, and the floats around them."""
    low, high = PLAUSIBLE[name]
    step = STEP[name]
    units = range(int(Decimal(str(low)) / step) - 2, int(Decimal(str(high)) / step) + 3)
    centres = [float(u * step) for u in units] + [float((u - Decimal("0.5")) * step) for u in units]
    values = set()
    for centre in centres:
        below = above = centre
        values.add(centre)
        for _ in range(3):
            below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
            values.update((below, above))
    return sorted(values)


@pytest.mark.parametrize("name", MEASURED)
def test_sweep_around_every_chart_and_half_value(name: str) -> None:
    variants = (
        [{}]
        if name != "spo2"
        else [
            {"spo2_scale": 1},
            {"spo2_scale": 2, "on_oxygen": False},
            {"spo2_scale": 2, "on_oxygen": True},
            {"spo2_scale": 2, "on_oxygen": None},
        ]
    )
    assert_batch_matches_scalar(
        [
            replace(NORMAL, **{name: value}, **variant)
            for value in values_near_every_edge(name)
            for variant in variants
        ]
    )


# ---------------------------------------------------------------------------------------------------
# Property: scalar == vectorised on any inputs, including impossible and missing ones.


def measured_strategy(name: str) -> st.SearchStrategy:
    low, high = PLAUSIBLE[name]
    half_values = st.integers(int(low) * 10, int(high) * 10).map(
        lambda tenths: float(
            Decimal(tenths) / 10 + (Decimal("0.05") if name == "temperature" else Decimal("0.5"))
        )
    )
    return st.one_of(
        st.none(),
        st.floats(low, high),
        st.decimals(low, high, places=2).map(float),
        half_values,
        half_values.flatmap(
            lambda x: st.sampled_from([math.nextafter(x, -math.inf), math.nextafter(x, math.inf)])
        ),
        st.floats(low - 30, high + 30),  # partly impossible
        st.floats(allow_nan=False),  # anything, mostly impossible
    )


@st.composite
def any_observation_set(draw: st.DrawFn) -> ObservationSet:
    return ObservationSet(
        **{name: draw(measured_strategy(name)) for name in MEASURED},
        spo2_scale=draw(st.sampled_from([1, 2, 2, 3, 0])),
        on_oxygen=draw(st.sampled_from([None, False, True])),
        consciousness=draw(st.sampled_from([None, "A", "C", "V", "P", "U", "X", Consciousness.PAIN])),
    )


@settings(max_examples=300)
@given(st.lists(any_observation_set(), min_size=1, max_size=40))
def test_scalar_equals_vectorised(observations: list[ObservationSet]) -> None:
    assert_batch_matches_scalar(observations)


@given(st.lists(any_observation_set(), min_size=1, max_size=40))
def test_batch_totals_and_risks_are_consistent(observations: list[ObservationSet]) -> None:
    batch = score_batch(columns_for(observations))
    complete = batch.complete
    assert ((batch.total[complete] >= 0) & (batch.total[complete] <= 20)).all()
    assert (batch.total[complete] == batch.parameter_scores[complete].sum(axis=1)).all()
    assert (batch.any_single_3 == (batch.parameter_scores == 3).any(axis=1)).all()
    for row in np.flatnonzero(complete):
        scores = dict(zip(PARAMETERS, batch.parameter_scores[row].tolist(), strict=True))
        assert RISK_BY_CODE[batch.risk[row]] == news2.risk_for(scores)
    assert (batch.total[~complete] == -1).all()
    assert (batch.risk[~complete] == -1).all()
    assert not (complete & batch.impossible).any()


# ---------------------------------------------------------------------------------------------------
# Blocks, masks, codes and input checks.


def random_observations(count: int, seed: int) -> list[ObservationSet]:
    rng = np.random.default_rng(seed)

    def value(name: str) -> float | None:
        low, high = PLAUSIBLE[name]
        return None if rng.random() < 0.05 else round(float(rng.uniform(low - 2, high + 2)), 2)

    return [
        ObservationSet(
            **{name: value(name) for name in MEASURED},
            spo2_scale=int(rng.choice([1, 2])),
            on_oxygen=[None, False, True][rng.integers(3)],
            consciousness=[None, "A", "A", "A", "C", "V", "P", "U"][rng.integers(8)],
        )
        for _ in range(count)
    ]


def test_rows_across_many_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(news2, "_BLOCK_ROWS", 64)
    assert_batch_matches_scalar(random_observations(64 * 7 + 13, seed=7))


def test_default_blocks_agree_with_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    columns = columns_for(random_observations(news2._BLOCK_ROWS + 1000, seed=11))
    whole = score_batch(columns)
    monkeypatch.setattr(news2, "_BLOCK_ROWS", 1000)
    small = score_batch(columns)
    for field in ("parameter_scores", "total", "any_single_3", "risk", "complete", "impossible"):
        np.testing.assert_array_equal(getattr(whole, field), getattr(small, field))


def test_output_types_and_masks() -> None:
    observations = [NORMAL, replace(NORMAL, pulse=None, consciousness="U"), replace(NORMAL, spo2=101)]
    batch = score_batch(columns_for(observations))
    assert batch.parameter_scores.shape == (3, 7)
    assert {
        field: getattr(batch, field).dtype for field in ("parameter_scores", "total", "risk")
    } == dict.fromkeys(("parameter_scores", "total", "risk"), np.int8)
    assert batch.parameter_scores.tolist() == [[0] * 7, [0, 0, 0, 0, -1, 3, 0], [-1] * 7]
    assert batch.total.tolist() == [0, -1, -1]
    assert batch.risk.tolist() == [0, -1, -1]
    assert batch.any_single_3.tolist() == [False, True, False]
    assert batch.complete.tolist() == [True, False, False]
    assert batch.impossible.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="row 2 holds an impossible value"):
        batch.score_at(2)


def test_empty_batch() -> None:
    batch = score_batch(columns_for([]))
    assert batch.parameter_scores.shape == (0, 7)
    assert batch.total.shape == (0,)


@pytest.mark.parametrize(
    ("column", "code"),
    [
        ("on_oxygen", 2),
        ("on_oxygen", -2),
        ("on_oxygen", 127),
        ("on_oxygen", -128),
        ("consciousness", 5),
        ("consciousness", -2),
        ("consciousness", 127),
        ("consciousness", -128),
        ("spo2_scale", 0),
        ("spo2_scale", 3),
        ("spo2_scale", -1),
        ("spo2_scale", 2**40),
    ],
)
def test_impossible_codes(column: str, code: int) -> None:
    columns = columns_for([NORMAL, NORMAL])
    columns[column] = columns[column].copy()
    columns[column][1] = code
    batch = score_batch(columns)
    assert batch.impossible.tolist() == [False, True]
    assert batch.parameter_scores[1].tolist() == [-1] * 7


def test_encode_consciousness() -> None:
    codes = encode_consciousness(["A", "C", "V", "P", "U", None, "X", "a", Consciousness.PAIN, 3])
    assert codes.dtype == np.int8
    assert codes.tolist() == [0, 1, 2, 3, 4, -1, -2, -2, 3, -2]
    assert [level.value for level in CONSCIOUSNESS_BY_CODE] == ["A", "C", "V", "P", "U"]
    assert RISK_BY_CODE == (Risk.LOW, Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH)


def test_integer_measurement_columns_are_accepted() -> None:
    columns = columns_for([replace(NORMAL, pulse=131)])
    columns["pulse"] = np.array([131], dtype=np.int64)
    assert score_batch(columns).parameter_scores[0].tolist() == [0, 0, 0, 0, 3, 0, 0]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"pulse": None}, ValueError, "score_batch needs the columns pulse"),
        ({"pulse": np.zeros(2)}, ValueError, "must be 1-D and of one length"),
        ({"pulse": np.zeros((1, 1))}, ValueError, "must be 1-D and of one length"),
        ({"temperature": np.array([37.0], dtype=np.float32)}, TypeError, "temperature must be float64"),
        ({"on_oxygen": np.array([0])}, TypeError, "on_oxygen must be int8"),
        ({"consciousness": np.array(["A"])}, TypeError, "consciousness must be int8"),
        ({"spo2_scale": np.array([1.0])}, TypeError, "spo2_scale must be integer"),
    ],
)
def test_bad_columns_are_refused(change: dict, error: type, message: str) -> None:
    columns = columns_for([NORMAL])
    for name, array in change.items():
        if array is None:
            del columns[name]
        else:
            columns[name] = array
    with pytest.raises(error, match=message):
        score_batch(columns)
