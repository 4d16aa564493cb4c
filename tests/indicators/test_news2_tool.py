"""The NEWS2 JSON-lines command body, driven through io.StringIO, line by line and in batch."""

import io
import json
import tomllib
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepulse.news2_tool import run

RESPONSES = tomllib.loads(
    resources.files("indicators").joinpath("config", "news2.toml").read_text(encoding="utf-8")
)["response"]
NORMAL = {
    "respiration_rate": 16,
    "spo2": 97,
    "on_oxygen": False,
    "systolic_bp": 120,
    "pulse": 70,
    "consciousness": "A",
    "temperature": 37.0,
}
FIELDS = "respiration_rate, spo2, spo2_scale, on_oxygen, systolic_bp, pulse, consciousness, temperature"


def run_lines(lines: list[str], *, batch: bool) -> tuple[int, str]:
    stdout = io.StringIO()
    status = run(io.StringIO("".join(line + "\n" for line in lines)), stdout, batch=batch)
    return status, stdout.getvalue()


def line(**changes: object) -> str:
    return json.dumps({**NORMAL, **changes})


@pytest.fixture(params=[False, True], ids=["line-by-line", "batch"])
def batch(request: pytest.FixtureRequest) -> bool:
    return request.param


def test_scores_a_line(batch: bool) -> None:
    # The README example: RR 22 (2), SpO2 95 (1), SBP 105 (1), pulse 112 (2), 38.4 °C (1) [C1].
    readme_line = (
        '{"respiration_rate": 22, "spo2": 95, "spo2_scale": 1, "on_oxygen": false, "systolic_bp": 105, '
        '"pulse": 112, "consciousness": "A", "temperature": 38.4}'
    )
    expected = {
        "total": 7,
        "parameter_scores": {
            "respiration_rate": 2,
            "spo2": 1,
            "air_or_oxygen": 0,
            "systolic_bp": 1,
            "pulse": 2,
            "consciousness": 0,
            "temperature": 1,
        },
        "risk": "high",
        "any_single_3": False,
        "monitoring": "continuous",
        "response": RESPONSES[4]["response"],
        "rules_version": "RCP-NEWS2-2017.carepulse.1",
    }
    assert run_lines([readme_line], batch=batch) == (0, json.dumps(expected) + "\n")


def test_spo2_scale_defaults_to_1_and_null_means_not_recorded(batch: bool) -> None:
    status, output = run_lines([line(), line(spo2_scale=1), line(spo2_scale=None)], batch=batch)
    first, *rest = output.splitlines()
    assert (status, rest) == (0, [first, first])
    assert json.loads(first)["risk"] == "low"


ERRORS = [
    ("not json", {"error": "invalid JSON: Expecting value: line 1 column 1 (char 0)"}),
    (
        '{"pulse": 80,}',
        {
            "error": "invalid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 14 (char 13)"
        },
    ),
    ("[1, 2]", {"error": "each line must be a JSON object, got array"}),
    ("null", {"error": "each line must be a JSON object, got null"}),
    ('{"temp": 37.0}', {"error": f"unknown field 'temp'; the fields are {FIELDS}"}),
    (line(pulse="80"), {"error": "pulse must be a number, got string"}),
    (line(pulse=True), {"error": "pulse must be a number, got boolean"}),
    (line(temperature=[37]), {"error": "temperature must be a number, got array"}),
    (line(spo2_scale=2.0), {"error": "spo2_scale must be the whole number 1 or 2, got number 2.0"}),
    (line(spo2_scale=True), {"error": "spo2_scale must be the whole number 1 or 2, got boolean true"}),
    (line(on_oxygen=1), {"error": "on_oxygen must be true or false, got number"}),
    (line(consciousness=1), {"error": 'consciousness must be one of "A", "C", "V", "P", "U", got number'}),
    (
        '{"pulse": NaN}',
        {"error": "invalid JSON: NaN is not a JSON number (use null for a value not recorded)"},
    ),
    (
        '{"pulse": -Infinity}',
        {"error": "invalid JSON: -Infinity is not a JSON number (use null for a value not recorded)"},
    ),
    (line(spo2=101), {"error": "spo2 = 101 is impossible: must be between 50 and 100 %"}),
    (line(temperature=45.1), {"error": "temperature = 45.1 is impossible: must be between 25.0 and 45.0 °C"}),
    (
        line(respiration_rate=-4),
        {"error": "respiration_rate = -4 is impossible: must be between 0 and 80 /min"},
    ),
    (
        line(consciousness="X"),
        {"error": "consciousness = 'X' is impossible: must be one of A, C, V, P, U (ACVPU)"},
    ),
    (line(spo2_scale=3), {"error": "spo2_scale = 3 is impossible: must be the whole number 1 or 2"}),
    (
        line(spo2_scale=10**30),
        {"error": f"spo2_scale = {10**30} is impossible: must be the whole number 1 or 2"},
    ),
    ('{"pulse": 1e999}', {"error": "pulse = inf is impossible: must be between 20 and 300 /min"}),
    (
        f'{{"pulse": {10**400}}}',
        {"error": f"pulse = {10**400} is impossible: must be between 20 and 300 /min"},
    ),
    (
        line(pulse=None, temperature=None),
        {
            "error": "incomplete observation set: missing pulse, temperature",
            "missing": ["pulse", "temperature"],
        },
    ),
    (
        line(spo2=95, spo2_scale=2, on_oxygen=None),
        {
            "error": "incomplete observation set: missing spo2, air_or_oxygen",
            "missing": ["spo2", "air_or_oxygen"],
        },
    ),
    (
        "{}",
        {
            "error": "incomplete observation set: missing respiration_rate, spo2, air_or_oxygen, "
            "systolic_bp, pulse, consciousness, temperature",
            "missing": [
                "respiration_rate",
                "spo2",
                "air_or_oxygen",
                "systolic_bp",
                "pulse",
                "consciousness",
                "temperature",
            ],
        },
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_error_lines(text: str, expected: dict, batch: bool) -> None:
    assert run_lines([text], batch=batch) == (1, json.dumps(expected) + "\n")


def test_the_run_goes_on_after_errors(batch: bool) -> None:
    status, output = run_lines(
        [line(), "", "not json", "   ", line(pulse=131), line(spo2=101), line()], batch=batch
    )
    results = [json.loads(text) for text in output.splitlines()]
    assert status == 1
    assert [result.get("total", result.get("error")) for result in results] == [
        0,
        "invalid JSON: Expecting value: line 1 column 1 (char 0)",
        3,
        "spo2 = 101 is impossible: must be between 50 and 100 %",
        0,
    ]


def test_blank_and_empty_input(batch: bool) -> None:
    assert run_lines([], batch=batch) == (0, "")
    assert run_lines(["", "  \t"], batch=batch) == (0, "")


def test_batch_output_is_byte_identical() -> None:
    lines = [text for text, _ in ERRORS] + [
        line(),
        line(respiration_rate=24.5, temperature=38.05),
        line(spo2=92.5, spo2_scale=2, on_oxygen=True),
        line(spo2=97, spo2_scale=2, on_oxygen=True, consciousness="C"),
        line(temperature=35.04, pulse=40.5, systolic_bp=219.5),
    ]
    assert run_lines(lines, batch=True) == run_lines(lines, batch=False)


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 400),
    st.floats(-10, 400),
    st.decimals(20, 110, places=2).map(float),
    st.sampled_from(["A", "C", "V", "P", "U", "X", ""]),
)


@settings(max_examples=200)
@given(
    st.lists(
        st.dictionaries(st.sampled_from([*NORMAL, "spo2_scale"]), json_values, min_size=5).map(
            lambda record: json.dumps({**NORMAL, **record})
        ),
        max_size=20,
    )
)
def test_batch_equals_line_by_line_on_any_lines(lines: list[str]) -> None:
    assert run_lines(lines, batch=True) == run_lines(lines, batch=False)
