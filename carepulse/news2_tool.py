"""The body of the NEWS2 JSON-lines command: observation sets in, NEWS2 results out.

Each non-blank input line is one JSON object with any of the fields respiration_rate (/min), spo2
(%), spo2_scale (1 or 2, default 1), on_oxygen (true/false), systolic_bp (mmHg), pulse (/min),
consciousness ("A", "C", "V", "P" or "U") and temperature (°C); an absent field or null means not
recorded. Each gets exactly one output line: ``News2Score.to_dict()``, or ``{"error": "..."}``
when the line cannot be scored (bad JSON, a wrong type, an unknown field, an impossible value), or
``{"error": "incomplete observation set: ...", "missing": [...]}``. One bad line never stops the
run; the exit status is 1 if any line failed, else 0.

This module only reads, checks types and writes; all scoring is ``indicators.news2``.
"""

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import TextIO

import numpy as np

from indicators.news2 import (
    ImpossibleValue,
    IncompleteScore,
    News2Score,
    ObservationSet,
    encode_consciousness,
    score,
    score_batch,
)

_MEASURED_FIELDS = ("respiration_rate", "spo2", "systolic_bp", "pulse", "temperature")
_FIELDS = tuple(field.name for field in fields(ObservationSet))
_JSON_TYPE_NAMES = {
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}

_Output = tuple[dict[str, object], bool]  # the line to write, and whether the line was scored


class _LineError(ValueError):
    """A line that is not an observation set; its message becomes the line's error."""


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES[type(value)]


def _reject_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity, which JSON does not; a missing value is null.
    raise _LineError(f"invalid JSON: {name} is not a JSON number (use null for a value not recorded)")


def _type_problem(field: str, value: object) -> str | None:
    if field in _MEASURED_FIELDS and (isinstance(value, bool) or not isinstance(value, int | float)):
        return f"{field} must be a number, got {_json_type(value)}"
    if field == "spo2_scale" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"spo2_scale must be the whole number 1 or 2, got {_json_type(value)} {json.dumps(value)}"
    if field == "on_oxygen" and not isinstance(value, bool):
        return f"on_oxygen must be true or false, got {_json_type(value)}"
    if field == "consciousness" and not isinstance(value, str):
        return f'consciousness must be one of "A", "C", "V", "P", "U", got {_json_type(value)}'
    return None


def _parse(line: str) -> ObservationSet:
    try:
        record = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _LineError(f"invalid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise _LineError(
            f"each line must be a JSON object, got {'null' if record is None else _json_type(record)}"
        )
    unknown = [key for key in record if key not in _FIELDS]
    if unknown:
        raise _LineError(f"unknown field {unknown[0]!r}; the fields are {', '.join(_FIELDS)}")
    present = {key: value for key, value in record.items() if value is not None}
    for key, value in present.items():
        problem = _type_problem(key, value)
        if problem:
            raise _LineError(problem)
    return ObservationSet(**present)


def _result_output(result: News2Score | IncompleteScore) -> _Output:
    if isinstance(result, IncompleteScore):
        missing = ", ".join(result.missing)
        return {
            "error": f"incomplete observation set: missing {missing}",
            "missing": list(result.missing),
        }, False
    return result.to_dict(), True


def _observation_output(obs: ObservationSet) -> _Output:
    try:
        return _result_output(score(obs))
    except ImpossibleValue as exc:
        return {"error": str(exc)}, False


def _line_output(line: str) -> _Output:
    try:
        obs = _parse(line)
    except _LineError as exc:
        return {"error": str(exc)}, False
    return _observation_output(obs)


def _as_float64(value: float | None) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except OverflowError:
        # An integer beyond float range: infinity is just as impossible, and the row is then
        # re-scored one by one so that its error names the value as written.
        return math.inf if value > 0 else -math.inf


def _columns(observations: list[ObservationSet]) -> dict[str, np.ndarray]:
    columns = {
        name: np.array([_as_float64(getattr(obs, name)) for obs in observations], dtype=np.float64)
        for name in _MEASURED_FIELDS
    }
    # Any scale but 1 or 2 is impossible; 0 stands for all of them, however large.
    columns["spo2_scale"] = np.array(
        [obs.spo2_scale if obs.spo2_scale in (1, 2) else 0 for obs in observations], dtype=np.int64
    )
    columns["on_oxygen"] = np.array(
        [-1 if obs.on_oxygen is None else int(obs.on_oxygen) for obs in observations], dtype=np.int8
    )
    columns["consciousness"] = encode_consciousness(obs.consciousness for obs in observations)
    return columns


def _batch_outputs(lines: list[str]) -> Iterator[_Output]:
    parsed: list[ObservationSet | _LineError] = []
    for line in lines:
        try:
            parsed.append(_parse(line))
        except _LineError as exc:
            parsed.append(exc)
    observations = [item for item in parsed if isinstance(item, ObservationSet)]
    scores = score_batch(_columns(observations))
    rows = iter(range(len(observations)))
    for item in parsed:
        if isinstance(item, _LineError):
            yield {"error": str(item)}, False
            continue
        row = next(rows)
        # The batch only flags an impossible row; scoring it alone gives the error naming the field.
        yield _observation_output(item) if scores.impossible[row] else _result_output(scores.score_at(row))


def run(stdin: TextIO, stdout: TextIO, *, batch: bool = False) -> int:
    """Score every JSON line of ``stdin`` onto ``stdout``; 1 if any line failed, else 0.

    ``batch=True`` reads all lines first and scores them with ``score_batch``; the output is
    byte-for-byte the same as line by line.
    """
    lines: Iterable[str] = (line for line in stdin if line.strip())
    outputs = _batch_outputs(list(lines)) if batch else map(_line_output, lines)
    failed = False
    for record, scored in outputs:
        stdout.write(json.dumps(record) + "\n")
        failed = failed or not scored
    return 1 if failed else 0
