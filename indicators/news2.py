"""NEWS2 (National Early Warning Score 2, RCP 2017) scoring: the pure core.

Scores one observation set (``score``) or a batch held in numpy columns (``score_batch``) with the
Royal College of Physicians' NEWS2 charts [RCP-report]:

- Chart 1 parameter scores [C1], including SpO2 Scale 2 and the air/oxygen item [C1] [Thorax-T1];
- Chart 2 clinical risk, in its order of precedence: total >= 7 high, else 5-6 medium, else a 3 in
  any single parameter low-medium, else low (news2.md §3);
- Chart 4 minimum monitoring frequency and clinical response [C4].

Every band, limit, rule and text lives in ``indicators/config/news2.toml`` next to the source that
supports it; this module names the rules and applies them. It reads that file once, at import, and
does no other I/O and reads no clock. Source tags refer to shared/domain/news2.md §9.

Input policy
------------
1. Missing values. ``None`` (``NaN`` in batch columns) means "not recorded". A set with any of the
   seven parameters missing gets no total and no risk (``IncompleteScore``), but the parameters that
   are present are still scored, so that a single 3 can be escalated before the set is complete.
   On SpO2 Scale 2 a reading of 93 % or more cannot be scored without knowing air or oxygen [C1],
   so SpO2 counts as missing until ``on_oxygen`` is recorded.
2. Impossible values. Every present value is checked before anything is scored, on the value as
   given (before quantisation), against the physiological plausibility limits in the config, which
   are carepulse proposals (news2.md §7.1). A value outside them -- or NaN, an SpO2 scale other
   than 1 or 2, a consciousness level other than A, C, V, P, U -- raises ``ImpossibleValue``
   naming the field. It is never scored.
3. Decimals. The chart is printed in whole numbers (respiration rate, SpO2, systolic BP, pulse) and
   to 0.1 °C (temperature); the RCP material gives no rounding rule (news2.md §2). carepulse
   quantises each value HALF-UP to chart precision and then reads the chart: 24.5 /min -> 25 -> 3,
   38.05 °C -> 38.1 -> 1, 35.04 °C -> 35.0 -> 3. The number quantised is the shortest decimal that
   reproduces the float, ``Decimal(str(x))``: the value as it was written, not its binary expansion
   (38.05 is stored as 38.04999...). Python's ``round()`` is never used: ``round(24.5) == 24`` and
   ``round(38.05, 1) == 38.0``.
"""

import itertools
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from importlib import resources

import numpy as np

__all__ = [
    "CONSCIOUSNESS_BY_CODE",
    "PARAMETERS",
    "RISK_BY_CODE",
    "RULES_VERSION",
    "BatchScores",
    "Consciousness",
    "ImpossibleValue",
    "IncompleteScore",
    "News2Score",
    "ObservationSet",
    "Risk",
    "encode_consciousness",
    "response_for",
    "risk_for",
    "risk_lower_bound",
    "score",
    "score_batch",
    "score_parameter",
]


class Consciousness(StrEnum):
    """ACVPU [C1]: new confusion scores 3, as V, P and U do [Williams-confusion]."""

    ALERT = "A"
    CONFUSION = "C"
    VOICE = "V"
    PAIN = "P"
    UNRESPONSIVE = "U"


class Risk(StrEnum):
    """The four clinical risk levels of RCP Chart 2 (news2.md §3)."""

    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


PARAMETERS: tuple[str, ...] = (
    "respiration_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)
"""The seven scored items of Chart 1 [C1], in the order of every ``parameter_scores``."""

RISK_BY_CODE: tuple[Risk, ...] = (Risk.LOW, Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH)
"""``BatchScores.risk`` code -> Risk (-1 means no risk: the row is incomplete or impossible)."""

CONSCIOUSNESS_BY_CODE: tuple[Consciousness, ...] = tuple(Consciousness)
"""Batch ``consciousness`` code -> level: 0 A, 1 C, 2 V, 3 P, 4 U (-1 missing)."""

# The fields that carry a measured number, each quantised to chart precision before band lookup.
_MEASURED_FIELDS: tuple[str, ...] = ("respiration_rate", "spo2", "systolic_bp", "pulse", "temperature")
_MAX_TOTAL = 20  # 3+3+2+3+3+3+3: one SpO2 scale is scored per set [C1] [ClinMed-T1]


class ImpossibleValue(ValueError):
    """A value that cannot be a measurement of a living resident: rejected, never scored."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value) if isinstance(value, str) else str(value)
        super().__init__(f"{field} = {shown} is impossible: {reason}")


@dataclass(frozen=True)
class ObservationSet:
    """One set of NEWS2 observations; ``None`` means not recorded."""

    respiration_rate: float | None = None  # breaths/min
    spo2: float | None = None  # %
    spo2_scale: int = 1  # 2 only where a clinician prescribed an 88-92 % target [Williams-HCRF]
    on_oxygen: bool | None = None  # supplemental oxygen
    systolic_bp: float | None = None  # mmHg
    pulse: float | None = None  # beats/min
    consciousness: str | Consciousness | None = None  # "A", "C", "V", "P" or "U"
    temperature: float | None = None  # °C


@dataclass(frozen=True)
class News2Score:
    """The NEWS2 result for a complete observation set."""

    parameter_scores: dict[str, int]
    total: int
    any_single_3: bool
    risk: Risk
    monitoring: str
    monitoring_interval_minutes: int | None  # None: continuous monitoring [C4]
    response: str
    rules_version: str

    def to_dict(self) -> dict[str, object]:
        """The JSON-ready form; ``risk`` as its string value."""
        return {
            "total": self.total,
            "parameter_scores": dict(self.parameter_scores),
            "risk": self.risk.value,
            "any_single_3": self.any_single_3,
            "monitoring": self.monitoring,
            "response": self.response,
            "rules_version": self.rules_version,
        }


@dataclass(frozen=True)
class IncompleteScore:
    """A set with parameters missing: no total and no risk, but the present parameters scored."""

    missing: tuple[str, ...]
    parameter_scores: dict[str, int]
    any_single_3: bool
    rules_version: str


# ---------------------------------------------------------------------------------------------------
# Rules: news2.toml, compiled once at import and checked so that a bad edit fails loudly instead of
# scoring residents wrongly.


@dataclass(frozen=True)
class _Band:
    """One Chart 1 band, inclusive at chart precision; bounds in chart units (None = open)."""

    min_units: int | None
    max_units: int | None
    score: int
    on_oxygen: bool | None  # None: applies on air and on oxygen

    def contains(self, units: int) -> bool:
        return (self.min_units is None or self.min_units <= units) and (
            self.max_units is None or units <= self.max_units
        )


_OXYGEN_STATE = {False: 0, True: 1, None: 2}  # on_oxygen -> index into a _BandTable score triple


@dataclass(frozen=True)
class _BandTable:
    """A measured parameter's Chart 1 score at every chart value of its plausible range."""

    bands: tuple[_Band, ...]
    # chart units -> (score on air, score on oxygen, score with oxygen not recorded); the last is
    # None where the two differ, as for SpO2 >= 93 % on Scale 2 [C1].
    scores_by_units: dict[int, tuple[int, int, int | None]]

    def score(self, units: int, on_oxygen: bool | None) -> int | None:
        """The score at ``units``; None when it depends on an oxygen state that is not recorded."""
        return self.scores_by_units[units][_OXYGEN_STATE[on_oxygen]]


@dataclass(frozen=True)
class _Limit:
    min: Decimal
    max: Decimal
    unit: str


@dataclass(frozen=True)
class _RiskRule:
    risk: Risk
    min_total: int
    requires_single_3: bool


@dataclass(frozen=True)
class _Outcome:
    """What Charts 2 and 4 say for one (total, any single 3) pair."""

    risk: Risk
    monitoring: str
    monitoring_interval_minutes: int | None
    response: str


@dataclass(frozen=True)
class _Rules:
    version: str
    step: dict[str, Decimal]  # chart precision per measured field
    limits: dict[str, _Limit]
    tables: dict[str, _BandTable]  # "respiration_rate", "spo2_scale_1", "spo2_scale_2", ...
    air_or_oxygen: dict[bool, int]  # on_oxygen -> score
    consciousness: dict[Consciousness, int]
    risk_rules: tuple[_RiskRule, ...]
    outcomes: dict[tuple[int, bool], _Outcome]

    def table(self, field: str, spo2_scale: int) -> _BandTable:
        return self.tables[f"spo2_scale_{spo2_scale}" if field == "spo2" else field]

    def units(self, field: str, value: Decimal) -> int:
        """Half-up quantisation to chart precision, as an integer count of chart steps (§2)."""
        step = self.step[field]
        return int(value.quantize(step, rounding=ROUND_HALF_UP) / step)


def _config_error(where: str, problem: str) -> ValueError:
    return ValueError(f"news2.toml: {where}: {problem}")


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _config_error(where, f"{value!r} is not a number")
    return Decimal(str(value))


def _chart_units(value: object, step: Decimal, where: str) -> int:
    units = _decimal(value, where) / step
    if units != units.to_integral_value():
        raise _config_error(where, f"{value} is not at chart precision {step}")
    return int(units)


def _checked_entry(entry: dict, allowed: set[str], where: str) -> dict:
    unknown = set(entry) - allowed
    if unknown:
        raise _config_error(where, f"unknown keys {sorted(unknown)}")
    if not str(entry.get("source", "")).strip():
        raise _config_error(where, "every entry needs a non-empty source")
    return entry


def _checked_score(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise _config_error(where, f"score {value!r} is not 0, 1, 2 or 3 [C1]")
    return value


def _compile_band_table(name: str, entries: list, step: Decimal, limit: _Limit) -> _BandTable:
    bands = []
    for number, entry in enumerate(entries):
        where = f"bands.{name}[{number}]"
        _checked_entry(entry, {"min", "max", "score", "on_oxygen", "source"}, where)
        if entry.get("on_oxygen") not in (None, False, True):
            raise _config_error(where, "on_oxygen must be true or false")
        bands.append(
            _Band(
                min_units=_chart_units(entry["min"], step, where) if "min" in entry else None,
                max_units=_chart_units(entry["max"], step, where) if "max" in entry else None,
                score=_checked_score(entry.get("score"), where),
                on_oxygen=entry.get("on_oxygen"),
            )
        )
    lowest, highest = int(limit.min / step), int(limit.max / step)
    bands_by_oxygen: dict[bool, tuple[_Band, ...]] = {}
    for on_oxygen in (False, True):
        where = f"bands.{name} ({'on oxygen' if on_oxygen else 'on air'})"
        applicable = sorted(
            (band for band in bands if band.on_oxygen in (None, on_oxygen)),
            key=lambda band: -math.inf if band.min_units is None else band.min_units,
        )
        if not applicable:
            raise _config_error(where, "no bands")
        first, last = applicable[0], applicable[-1]
        if first.min_units is not None and first.min_units > lowest:
            raise _config_error(where, f"values from {limit.min} up are not covered")
        if last.max_units is not None and last.max_units < highest:
            raise _config_error(where, f"values up to {limit.max} are not covered")
        for below, above in itertools.pairwise(applicable):
            if below.max_units is None or above.min_units is None or below.max_units + 1 != above.min_units:
                end = "no end" if below.max_units is None else below.max_units * step
                start = "no start" if above.min_units is None else above.min_units * step
                raise _config_error(
                    where,
                    f"the band ending at {end} is followed by one starting at {start}: a gap or an overlap",
                )
        bands_by_oxygen[on_oxygen] = tuple(applicable)
    scores_by_units = {}
    for units in range(lowest, highest + 1):
        on_air, on_o2 = (
            next(band for band in bands_by_oxygen[state] if band.contains(units)) for state in (False, True)
        )
        scores_by_units[units] = (on_air.score, on_o2.score, on_air.score if on_air is on_o2 else None)
    return _BandTable(bands=tuple(bands), scores_by_units=scores_by_units)


def _compile_categories(name: str, entries: list, values: tuple[str, ...]) -> dict[str, int]:
    scores = {}
    for number, entry in enumerate(entries):
        where = f"bands.{name}[{number}]"
        _checked_entry(entry, {"value", "score", "source"}, where)
        scores[entry.get("value")] = _checked_score(entry.get("score"), where)
    if set(scores) != set(values) or len(entries) != len(values):
        raise _config_error(f"bands.{name}", f"needs exactly one entry for each of {values}")
    return scores


def _compile_risk_rules(entries: list) -> tuple[_RiskRule, ...]:
    rules = []
    for number, entry in enumerate(entries):
        where = f"risk[{number}]"
        _checked_entry(entry, {"level", "min_total", "any_single_3", "source"}, where)
        rules.append(
            _RiskRule(
                risk=Risk(entry["level"]),
                min_total=entry.get("min_total", 0),
                requires_single_3=entry.get("any_single_3", False),
            )
        )
    if sorted(rule.risk for rule in rules) != sorted(Risk):
        raise _config_error("risk", "needs exactly one rule per risk level")
    if rules[-1].min_total or rules[-1].requires_single_3:
        raise _config_error("risk", "the last rule must match every total, so that every set gets a risk")
    return tuple(rules)


def _risk_by_precedence(rules: tuple[_RiskRule, ...], total: int, any_single_3: bool) -> Risk:
    """Chart 2: the first rule, in the config's order of precedence, that the set meets."""
    return next(
        rule.risk
        for rule in rules
        if total >= rule.min_total and (any_single_3 or not rule.requires_single_3)
    )


_RESPONSE_KEYS = {
    "risk",
    "min_total",
    "max_total",
    "monitoring",
    "monitoring_interval_minutes",
    "continuous",
    "response",
    "source",
}


def _compile_outcomes(entries: list, rules: tuple[_RiskRule, ...]) -> dict[tuple[int, bool], _Outcome]:
    responses = []
    for number, entry in enumerate(entries):
        where = f"response[{number}]"
        _checked_entry(entry, _RESPONSE_KEYS, where)
        if entry.get("continuous", False) == ("monitoring_interval_minutes" in entry):
            raise _config_error(where, "give either monitoring_interval_minutes or continuous = true")
        if not entry.get("monitoring") or not entry.get("response"):
            raise _config_error(where, "monitoring and response must not be empty")
        responses.append({**entry, "risk": Risk(entry["risk"])})
    outcomes = {}
    # A single 3 implies a total of at least 3, so only those pairs can occur.
    for any_single_3 in (False, True):
        for total in range(3 if any_single_3 else 0, _MAX_TOTAL + 1):
            risk = _risk_by_precedence(rules, total, any_single_3)
            matches = [
                entry
                for entry in responses
                if entry["risk"] == risk
                and entry.get("min_total", 0) <= total <= entry.get("max_total", _MAX_TOTAL)
            ]
            if len(matches) != 1:
                raise _config_error("response", f"{len(matches)} entries match risk {risk} at total {total}")
            (entry,) = matches
            outcomes[total, any_single_3] = _Outcome(
                risk=risk,
                monitoring=entry["monitoring"],
                monitoring_interval_minutes=entry.get("monitoring_interval_minutes"),
                response=entry["response"],
            )
    return outcomes


def _compile_rules(config: dict) -> _Rules:
    quantisation = _checked_entry(config["quantisation"], {"rounding", "source", "step"}, "quantisation")
    if quantisation["rounding"] != "half-up":
        raise _config_error("quantisation", "only half-up rounding is implemented (news2.md §2)")
    if sorted(quantisation["step"]) != sorted(_MEASURED_FIELDS):
        raise _config_error("quantisation.step", f"needs exactly {_MEASURED_FIELDS}")
    step = {
        field: _decimal(text, f"quantisation.step.{field}") for field, text in quantisation["step"].items()
    }
    limits = {}
    for field in _MEASURED_FIELDS:
        where = f"plausible_range.{field}"
        entry = _checked_entry(
            config["plausible_range"][field], {"min", "max", "unit", "proposal", "source"}, where
        )
        limits[field] = _Limit(
            min=_chart_units(entry["min"], step[field], where) * step[field],
            max=_chart_units(entry["max"], step[field], where) * step[field],
            unit=entry["unit"],
        )
        if not 0 <= limits[field].min < limits[field].max:
            raise _config_error(where, "needs 0 <= min < max; a negative measurement is impossible")
    bands = config["bands"]
    table_fields = {
        "respiration_rate": "respiration_rate",
        "spo2_scale_1": "spo2",
        "spo2_scale_2": "spo2",
        "systolic_bp": "systolic_bp",
        "pulse": "pulse",
        "temperature": "temperature",
    }
    if sorted(bands) != sorted([*table_fields, "air_or_oxygen", "consciousness"]):
        raise _config_error("bands", "needs one table per parameter, and one per SpO2 scale")
    tables = {
        name: _compile_band_table(name, bands[name], step[field], limits[field])
        for name, field in table_fields.items()
    }
    air_or_oxygen = _compile_categories("air_or_oxygen", bands["air_or_oxygen"], ("air", "oxygen"))
    consciousness = _compile_categories("consciousness", bands["consciousness"], tuple(Consciousness))
    risk_rules = _compile_risk_rules(config["risk"])
    return _Rules(
        version=config["rules_version"],
        step=step,
        limits=limits,
        tables=tables,
        air_or_oxygen={False: air_or_oxygen["air"], True: air_or_oxygen["oxygen"]},
        consciousness={Consciousness(letter): points for letter, points in consciousness.items()},
        risk_rules=risk_rules,
        outcomes=_compile_outcomes(config["response"], risk_rules),
    )


_RULES = _compile_rules(
    tomllib.loads(resources.files("indicators").joinpath("config", "news2.toml").read_text(encoding="utf-8"))
)
RULES_VERSION: str = _RULES.version


# ---------------------------------------------------------------------------------------------------
# Scalar scoring.


def _check_value(field: str, value: object) -> None:
    """Raise if a present value is of the wrong type (TypeError) or impossible (ImpossibleValue)."""
    if value is None:
        return
    if field == "spo2_scale":
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value not in (1, 2):
            raise ImpossibleValue(field, value, "must be the whole number 1 or 2")
    elif field == "on_oxygen":
        if not isinstance(value, bool):
            raise TypeError(f"on_oxygen must be True, False or None, not {type(value).__name__}")
    elif field == "consciousness":
        if value not in CONSCIOUSNESS_BY_CODE:
            raise ImpossibleValue(field, value, "must be one of A, C, V, P, U (ACVPU)")
    else:
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise TypeError(f"{field} must be a number, not {type(value).__name__}")
        written = Decimal(str(value))
        if written.is_nan():
            raise ImpossibleValue(
                field, value, "it is not a number (leave the field empty when not recorded)"
            )
        limit = _RULES.limits[field]
        if not limit.min <= written <= limit.max:
            raise ImpossibleValue(field, value, f"must be between {limit.min} and {limit.max} {limit.unit}")


def _score_present(name: str, obs: ObservationSet) -> int | None:
    """The score of parameter ``name``, or None when it cannot be scored yet (missing)."""
    if name == "air_or_oxygen":
        return None if obs.on_oxygen is None else _RULES.air_or_oxygen[obs.on_oxygen]
    if name == "consciousness":
        return None if obs.consciousness is None else _RULES.consciousness[Consciousness(obs.consciousness)]
    value = getattr(obs, name)
    if value is None:
        return None
    units = _RULES.units(name, Decimal(str(value)))
    return _RULES.table(name, obs.spo2_scale).score(units, obs.on_oxygen)


def _result(parameter_scores: dict[str, int]) -> News2Score | IncompleteScore:
    """Charts 2 and 4 applied to the scores of the parameters that are present."""
    any_single_3 = 3 in parameter_scores.values()
    missing = tuple(name for name in PARAMETERS if name not in parameter_scores)
    if missing:
        return IncompleteScore(missing, parameter_scores, any_single_3, RULES_VERSION)
    total = sum(parameter_scores.values())
    outcome = _RULES.outcomes[total, any_single_3]
    return News2Score(
        parameter_scores=parameter_scores,
        total=total,
        any_single_3=any_single_3,
        risk=outcome.risk,
        monitoring=outcome.monitoring,
        monitoring_interval_minutes=outcome.monitoring_interval_minutes,
        response=outcome.response,
        rules_version=RULES_VERSION,
    )


def score(obs: ObservationSet) -> News2Score | IncompleteScore:
    """Score one observation set with NEWS2 [C1], Chart 2 risk (news2.md §3) and Chart 4 [C4].

    Every present field is checked first: ``ImpossibleValue`` (or ``TypeError`` for a wrong type) is
    raised before anything is scored. A set with a parameter missing returns ``IncompleteScore``;
    SpO2 >= 93 % on Scale 2 counts as missing while ``on_oxygen`` is unknown [C1] [Thorax-T1].
    """
    for field in fields(ObservationSet):
        _check_value(field.name, getattr(obs, field.name))
    parameter_scores = {}
    for name in PARAMETERS:
        points = _score_present(name, obs)
        if points is not None:
            parameter_scores[name] = points
    return _result(parameter_scores)


def score_parameter(name: str, value: object, *, spo2_scale: int = 1, on_oxygen: bool | None = None) -> int:
    """Score one Chart 1 parameter [C1]; ``value`` of "air_or_oxygen" is True for oxygen.

    Raises ``ImpossibleValue`` for an impossible value, and ValueError for an unknown name, a
    missing value, or SpO2 >= 93 % on Scale 2 without ``on_oxygen``: there the score depends on air
    or oxygen [C1] [Thorax-T1], so it cannot be given.
    """
    if name not in PARAMETERS:
        raise ValueError(f"{name!r} is not a NEWS2 parameter; expected one of {', '.join(PARAMETERS)}")
    if value is None:
        raise ValueError(f"{name} is missing, so it cannot be scored")
    if name == "air_or_oxygen":
        _check_value("on_oxygen", value)
        obs = ObservationSet(on_oxygen=value)
    else:
        _check_value(name, value)
        _check_value("spo2_scale", spo2_scale)
        _check_value("on_oxygen", on_oxygen)
        obs = ObservationSet(**{name: value}, spo2_scale=spo2_scale, on_oxygen=on_oxygen)
    points = _score_present(name, obs)
    if points is None:
        raise ValueError(
            f"spo2 = {value} on Scale 2 needs on_oxygen: from 93 % up the score depends on air or oxygen [C1]"
        )
    return points


def risk_for(parameter_scores: Mapping[str, int]) -> Risk:
    """Chart 2 clinical risk of a complete set, in precedence order (news2.md §3).

    Total >= 7 high; else 5-6 medium; else a 3 in any single parameter low-medium; else low.
    """
    if set(parameter_scores) != set(PARAMETERS):
        raise ValueError(
            f"risk needs the scores of all of {', '.join(PARAMETERS)}; got {sorted(parameter_scores)}"
        )
    if any(not 0 <= points <= 3 for points in parameter_scores.values()):
        raise ValueError(f"parameter scores are 0 to 3 [C1]; got {dict(parameter_scores)}")
    return _risk_by_precedence(
        _RULES.risk_rules, sum(parameter_scores.values()), 3 in parameter_scores.values()
    )


def risk_lower_bound(parameter_scores: Mapping[str, int]) -> Risk:
    """The risk the parameters of an incomplete set already guarantee.

    Parameter scores only add up, and Chart 2's risk only rises with the total and with a single 3
    (news2.md §3), so the complete set's risk can only be this or worse. It lets a single 3 escalate
    before the set is complete.
    """
    if any(not 0 <= points <= 3 for points in parameter_scores.values()):
        raise ValueError(f"parameter scores are 0 to 3 [C1]; got {dict(parameter_scores)}")
    return _risk_by_precedence(_RULES.risk_rules, sum(parameter_scores.values()), 3 in parameter_scores.values())


def response_for(risk: Risk) -> str:
    """The Chart 4 clinical response for a risk band [C4] (for ``low``, that of a total of 0)."""
    return next(outcome.response for _, outcome in sorted(_RULES.outcomes.items()) if outcome.risk == risk)


# ---------------------------------------------------------------------------------------------------
# Vectorised scoring.
#
# Exactness. Half-up quantisation of the written decimal d = Decimal(str(x)) puts d in the band that
# starts at chart value m exactly when d >= e, e = m - step/2 (a "half edge", e.g. 38.05). For a
# float x and a short decimal e, d >= e  <=>  x >= float(e):
#   - if d >= e then x = float(d) >= float(e), since rounding to float is monotonic;
#   - if x > float(e) then d > e, for d <= e would give x = float(d) <= float(e);
#   - if x == float(e) then d == e: e round-trips (it has at most 15 significant digits) and no
#     other decimal as short lies within an ulp of it, so e is the shortest repr of that float.
# The same argument covers the plausibility limits (d >= min <=> x >= float(min); d <= max <=>
# x <= float(max)). So comparing the raw float64 column with the float64 half edges reproduces the
# scalar path for every float, with no decimal arithmetic per row.

_BLOCK_ROWS = 65536  # rows per block: keeps every temporary in the L2 cache
_CODE_LUT_SIZE = 256  # int8 codes plus 1, viewed as uint8, index a 256-entry table
_RISK_KEY_STRIDE = _MAX_TOTAL + 2  # risk key = (total + 1 if complete else 0) + stride * any_single_3

_COLUMN_DTYPES = {
    "respiration_rate": "float64 (NaN = missing)",
    "spo2": "float64 (NaN = missing)",
    "spo2_scale": "integer (1 or 2)",
    "on_oxygen": "int8 (1 oxygen, 0 air, -1 missing)",
    "systolic_bp": "float64 (NaN = missing)",
    "pulse": "float64 (NaN = missing)",
    "consciousness": "int8 (0..4 for A, C, V, P, U; -1 missing)",
    "temperature": "float64 (NaN = missing)",
}


@dataclass(frozen=True, eq=False)  # arrays: compare fields with numpy, not ==
class BatchScores:
    """``score_batch`` results, one row per input row; -1 marks "no value".

    ``parameter_scores`` is (n, 7) int8 in PARAMETERS order: -1 where a parameter is missing and on
    every impossible row. ``total`` and ``risk`` (a code into RISK_BY_CODE) are -1 unless the row is
    complete. ``any_single_3`` covers the parameters present. ``impossible`` rows hold a field that
    ``score`` would reject with ``ImpossibleValue``; nothing on them is scored.
    """

    parameter_scores: np.ndarray
    total: np.ndarray
    any_single_3: np.ndarray
    risk: np.ndarray
    complete: np.ndarray
    impossible: np.ndarray

    def score_at(self, row: int) -> News2Score | IncompleteScore:
        """Row ``row`` as the object ``score`` returns for it.

        Raises ValueError on an impossible row: ``score`` on that row's ObservationSet names the field.
        """
        if self.impossible[row]:
            raise ValueError(f"row {row} holds an impossible value; score() on its ObservationSet names it")
        row_scores = self.parameter_scores[row]
        return _result(
            {name: int(points) for name, points in zip(PARAMETERS, row_scores, strict=True) if points >= 0}
        )


@dataclass(frozen=True)
class _MeasuredPlan:
    """Band lookup of one measured column: edges[0] = lowest plausible value, then the half edges,
    then the first float above the highest plausible value. The count of edges <= x is a slot;
    slot 0 (NaN or too low) and the last slot (too high) score -1."""

    edges: np.ndarray  # float64, ascending
    scores: np.ndarray  # int8, (variants, len(edges) + 1) flattened; variant 0 unless SpO2


def _measured_plan(field: str, variants: list[tuple[_BandTable, bool | None]]) -> _MeasuredPlan:
    step, limit = _RULES.step[field], _RULES.limits[field]
    lowest, highest = int(limit.min / step), int(limit.max / step)
    band_starts = sorted(
        {
            band.min_units
            for table, _ in variants
            for band in table.bands
            if band.min_units is not None and lowest < band.min_units <= highest
        }
    )
    half_edges = [float((units - Decimal("0.5")) * step) for units in band_starts]
    edges = np.array([float(limit.min), *half_edges, np.nextafter(float(limit.max), math.inf)])
    # Each slot between two edges holds the chart values from its lower edge up; score one of them.
    slot_units = [lowest, *band_starts]
    scores = np.full((len(variants), len(edges) + 1), -1, dtype=np.int8)
    for variant, (table, on_oxygen) in enumerate(variants):
        for slot, units in enumerate(slot_units, start=1):
            points = table.score(units, on_oxygen)
            scores[variant, slot] = -1 if points is None else points
    return _MeasuredPlan(edges, scores.ravel())


def _code_table(scores_by_code: dict[int, int]) -> np.ndarray:
    """A 256-entry int8 table indexed by (code + 1) as uint8; codes not listed map to -2."""
    table = np.full(_CODE_LUT_SIZE, -2, dtype=np.int8)
    for code, points in scores_by_code.items():
        table[code + 1] = points
    return table


# SpO2 variants: Scale 1, then Scale 2 on air, on oxygen, and with oxygen not recorded [C1].
_SPO2_VARIANTS = [
    (_RULES.table("spo2", 1), None),
    (_RULES.table("spo2", 2), False),
    (_RULES.table("spo2", 2), True),
    (_RULES.table("spo2", 2), None),
]
_MEASURED_PLANS = {
    field: _measured_plan(field, _SPO2_VARIANTS if field == "spo2" else [(_RULES.table(field, 1), None)])
    for field in _MEASURED_FIELDS
}
_SPO2_SLOTS = _MEASURED_PLANS["spo2"].edges.size + 1
# on_oxygen code -> score (-1 missing, -2 impossible), and -> SpO2 variant (1 air, 2 oxygen, 3 unknown).
_AIR_OR_OXYGEN_BY_CODE = _code_table({-1: -1, 0: _RULES.air_or_oxygen[False], 1: _RULES.air_or_oxygen[True]})
_SPO2_VARIANT_BY_OXYGEN_CODE = np.full(_CODE_LUT_SIZE, 3, dtype=np.int8)  # not recorded (or impossible)
_SPO2_VARIANT_BY_OXYGEN_CODE[0 + 1] = 1
_SPO2_VARIANT_BY_OXYGEN_CODE[1 + 1] = 2
_CONSCIOUSNESS_BY_CODE = _code_table(
    {-1: -1} | {code: _RULES.consciousness[level] for code, level in enumerate(CONSCIOUSNESS_BY_CODE)}
)


def _risk_by_key() -> np.ndarray:
    """Risk code by key (total + 1) + stride * any single 3; key 0 and key stride (incomplete) -> -1."""
    table = np.full(2 * _RISK_KEY_STRIDE, -1, dtype=np.int8)
    for (total, any_single_3), outcome in _RULES.outcomes.items():
        table[total + 1 + _RISK_KEY_STRIDE * any_single_3] = RISK_BY_CODE.index(outcome.risk)
    return table


_RISK_BY_KEY = _risk_by_key()
# Coded input columns: (column, parameter scored, score by code + 1; -2 marks an impossible code).
_CODED_FIELDS = (
    ("on_oxygen", "air_or_oxygen", _AIR_OR_OXYGEN_BY_CODE),
    ("consciousness", "consciousness", _CONSCIOUSNESS_BY_CODE),
)


def encode_consciousness(levels: Iterable[str | Consciousness | None]) -> np.ndarray:
    """ACVPU letters -> int8 codes for ``score_batch``: A..U -> 0..4, None -> -1.

    Anything else encodes to -2, which ``score_batch`` flags as impossible, so that one bad row does
    not stop a batch.
    """
    codes = {level: code for code, level in enumerate(CONSCIOUSNESS_BY_CODE)}

    def code(level: object) -> int:
        if level is None:
            return -1
        return codes.get(level, -2) if isinstance(level, str) else -2

    return np.array([code(level) for level in levels], dtype=np.int8)


def _batch_inputs(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [name for name in _COLUMN_DTYPES if name not in columns]
    if missing:
        raise ValueError(f"score_batch needs the columns {', '.join(missing)}")
    inputs = {name: np.asarray(columns[name]) for name in _COLUMN_DTYPES}
    lengths = {array.shape for array in inputs.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"score_batch columns must be 1-D and of one length; got shapes {lengths}")
    for name, array in inputs.items():
        kind = _COLUMN_DTYPES[name].split()[0]
        ok = {
            # float32 is refused: its float64 expansion is not the number that was written.
            "float64": array.dtype == np.float64 or array.dtype.kind in "iu",
            "integer": array.dtype.kind in "iu",
            "int8": array.dtype == np.int8,
        }[kind]
        if not ok:
            raise TypeError(f"score_batch column {name} must be {_COLUMN_DTYPES[name]}, not {array.dtype}")
    for name in _MEASURED_FIELDS:
        inputs[name] = inputs[name].astype(np.float64, copy=False)
    return inputs


class _Block:
    """Scratch arrays for one block, allocated once per ``score_batch`` call."""

    def __init__(self, rows: int) -> None:
        self.slots = np.empty(rows, dtype=np.int8)
        self.flag = np.empty(rows, dtype=bool)
        self.index = np.empty(rows, dtype=np.uint8)
        self.is_scale_2 = np.empty(rows, dtype=bool)
        self.variant = np.empty(rows, dtype=np.int8)
        self.present_count = np.empty(rows, dtype=np.int8)


def _measured_slots(x: np.ndarray, plan: _MeasuredPlan, slots: np.ndarray, flag: np.ndarray) -> None:
    np.greater_equal(x, plan.edges[0], out=slots)
    for edge in plan.edges[1:]:
        np.greater_equal(x, edge, out=flag)
        np.add(slots, flag.view(np.int8), out=slots)


def _score_block(inputs: dict[str, np.ndarray], out: BatchScores, rows: slice, block: _Block) -> None:
    size = rows.stop - rows.start
    slots, flag, index = block.slots[:size], block.flag[:size], block.index[:size]
    is_scale_2, variant, present = block.is_scale_2[:size], block.variant[:size], block.present_count[:size]
    impossible, total, any_single_3 = out.impossible[rows], out.total[rows], out.any_single_3[rows]
    total[:] = 0
    any_single_3[:] = False
    present[:] = 0

    def record(column: int) -> None:
        points = out.parameter_scores[rows, column]
        np.add(total, points, out=total)
        np.equal(points, 3, out=flag)
        np.logical_or(any_single_3, flag, out=any_single_3)
        np.greater_equal(points, 0, out=flag)
        np.add(present, flag.view(np.int8), out=present)

    scale = inputs["spo2_scale"][rows]
    np.equal(scale, 2, out=is_scale_2)
    np.equal(scale, 1, out=flag)
    np.logical_or(flag, is_scale_2, out=flag)
    np.logical_not(flag, out=impossible)  # neither Scale 1 nor Scale 2

    # SpO2 variant offset into its score table: Scale 1, or Scale 2 on air / on oxygen / not recorded.
    np.add(inputs["on_oxygen"][rows], 1, out=index.view(np.int8))
    np.take(_SPO2_VARIANT_BY_OXYGEN_CODE, index, out=variant, mode="clip")
    np.multiply(variant, is_scale_2.view(np.int8), out=variant)
    np.multiply(variant, _SPO2_SLOTS, out=variant)

    for field, parameter, table in _CODED_FIELDS:
        np.add(inputs[field][rows], 1, out=index.view(np.int8))
        column = PARAMETERS.index(parameter)
        np.take(table, index, out=out.parameter_scores[rows, column], mode="clip")
        np.equal(out.parameter_scores[rows, column], -2, out=flag)
        np.logical_or(impossible, flag, out=impossible)
        record(column)

    for field in _MEASURED_FIELDS:
        plan = _MEASURED_PLANS[field]
        x = inputs[field][rows]
        _measured_slots(x, plan, slots, flag)
        np.equal(slots, plan.edges.size, out=flag)
        np.logical_or(impossible, flag, out=impossible)
        np.less(x, plan.edges[0], out=flag)
        np.logical_or(impossible, flag, out=impossible)
        if field == "spo2":
            np.add(slots, variant, out=slots)
        column = PARAMETERS.index(field)
        np.take(plan.scores, slots, out=out.parameter_scores[rows, column], mode="clip")
        record(column)

    # complete: all seven present. total = sum if complete else -1; risk via (total, any single 3).
    np.equal(present, len(PARAMETERS), out=out.complete[rows])
    np.add(total, 1, out=total)
    np.multiply(total, out.complete[rows].view(np.int8), out=total)
    np.multiply(any_single_3.view(np.int8), _RISK_KEY_STRIDE, out=slots)
    np.add(slots, total, out=slots)
    np.take(_RISK_BY_KEY, slots, out=out.risk[rows], mode="clip")
    np.subtract(total, 1, out=total)


def score_batch(columns: Mapping[str, np.ndarray]) -> BatchScores:
    """Score many observation sets at once; row for row the same results as ``score``.

    ``columns``: "respiration_rate", "spo2", "systolic_bp", "pulse", "temperature" float64 (NaN =
    missing; integer arrays are accepted), "spo2_scale" integer (1 or 2), "on_oxygen" int8 (1, 0, -1
    missing), "consciousness" int8 (``encode_consciousness``). Rows are never rejected: an impossible
    value marks its row in ``BatchScores.impossible``. Quantisation is exact for every float64 (see
    the note above ``_BLOCK_ROWS``).
    """
    inputs = _batch_inputs(columns)
    rows = inputs["spo2_scale"].shape[0]
    out = BatchScores(
        # Fortran order: each parameter's column is contiguous, so the block writes stream.
        parameter_scores=np.empty((rows, len(PARAMETERS)), dtype=np.int8, order="F"),
        total=np.empty(rows, dtype=np.int8),
        any_single_3=np.empty(rows, dtype=bool),
        risk=np.empty(rows, dtype=np.int8),
        complete=np.empty(rows, dtype=bool),
        impossible=np.empty(rows, dtype=bool),
    )
    block = _Block(min(rows, _BLOCK_ROWS))
    for start in range(0, rows, _BLOCK_ROWS):
        _score_block(inputs, out, slice(start, min(start + _BLOCK_ROWS, rows)), block)
    impossible_rows = np.flatnonzero(out.impossible)
    out.parameter_scores[impossible_rows] = -1
    out.total[impossible_rows] = -1
    out.risk[impossible_rows] = -1
    out.any_single_3[impossible_rows] = False
    out.complete[impossible_rows] = False
    return out
