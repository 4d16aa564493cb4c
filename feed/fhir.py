"""FHIR R4 `Measure` and `MeasureReport` resources for the indicators (cqc_domain.md §4.1), built and
validated with ``fhir.resources``.

``fhir.resources`` 8 ships R5 by default and R4B as a subpackage; Measure and MeasureReport are structurally
unchanged from R4 to R4B, so the R4B models validate the R4 resources we publish (fhirVersion 4.0.1).

Mapping (§4.1): `Measure.scoring` is ``ratio`` for rates per 1,000 occupied bed days (numerator and
denominator are different populations) and ``proportion`` for percentages; `improvementNotation` is
``decrease`` for lower-is-better indicators and ``increase`` otherwise. The regulator's reports are
``summary`` reports; suppressed counts are absent with the data-absent-reason ``masked``. The NEWS2 total
score, wherever a NEWS2 score is coded, is SNOMED CT 1104051000000101, never LOINC 88330-6 (§0 point 4,
§4.3): no MeasureReport here carries a NEWS2 score itself, and the escalation measures reference it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.measure import Measure
from fhir.resources.R4B.measurereport import MeasureReport

from indicators.quality import QualityRules, packaged_rules

MEASURE_SCORING = "http://terminology.hl7.org/CodeSystem/measure-scoring"
IMPROVEMENT = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
SNOMED = "http://snomed.info/sct"
NEWS2_TOTAL_SNOMED = "1104051000000101"

#: Rates per 1,000 OBD are ratios; the rest are proportions (cqc_domain.md §4.1 "Scoring type per indicator").
RATIO_INDICATORS = frozenset({"falls_rate", "falls_with_harm_rate"})
#: Indicators about NEWS2 escalation and observations, tagged with the NEWS2 total-score concept (§4.3); urinalysis
#: timeliness counts amber NEWS2 episodes.
NEWS2_INDICATORS = frozenset({"escalation_timeliness", "observation_compliance", "urinalysis_timeliness"})
FHIR_MEDIA_TYPE = "application/fhir+json"


def fhir_id(*parts: str) -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) for carepulse identifiers, which may hold '_' and ':'."""
    readable = "-".join(parts).replace("_", "-").replace(":", "-")
    if len(readable) <= 64 and all(c.isalnum() or c in "-." for c in readable):
        return readable
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:64]


def measure_url(base_url: str, indicator_id: str) -> str:
    return f"{base_url.rstrip('/')}/fhir/Measure/{fhir_id(indicator_id)}"


def location_system(base_url: str) -> str:
    """Identifier system of carepulse location ids. The CQC location id would be the natural identifier
    (§4.1 reporter/subject); carepulse ids are not CQC ids yet, so they are not labelled as such."""
    return f"{base_url.rstrip('/')}/Id/location"


def _code(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def measure(indicator_id: str, *, base_url: str, rules: QualityRules | None = None,
            usage: str | None = None) -> dict[str, Any]:
    """The Measure of one indicator, as validated JSON; `usage` is a caveat on its clinical use (the
    inspection mapping's, e.g. urinalysis timeliness's)."""
    rules = rules or packaged_rules()
    indicator = rules[indicator_id]
    scoring = "ratio" if indicator_id in RATIO_INDICATORS else "proportion"
    proposal = indicator.green.proposal or indicator.red.proposal
    resource: dict[str, Any] = {
        "resourceType": "Measure",
        "id": fhir_id(indicator_id),
        "url": measure_url(base_url, indicator_id),
        "version": rules.version,
        "name": "".join(part.capitalize() for part in indicator_id.split("_")),
        "title": indicator.title,
        # Thresholds awaiting sign-off (cqc_domain.md §0 point 3) make the measure a draft.
        "status": "draft" if proposal else "active",
        "experimental": proposal,
        "publisher": "carepulse",
        "description": f"{indicator.title} ({indicator.unit}). Numerator: {indicator.numerator}. "
                       f"Denominator: {indicator.denominator}. Window: {indicator.window_days} days rolling.",
        "scoring": _code(MEASURE_SCORING, scoring),
        "improvementNotation": _code(
            IMPROVEMENT, "decrease" if indicator.direction == "lower_is_better" else "increase"
        ),
        "guidance": f"Green {indicator.green.op} {indicator.green.value:g} ({indicator.green.source}); "
                    f"red {indicator.red.op} {indicator.red.value:g} ({indicator.red.source}); amber between. "
                    f"Below a denominator of {indicator.minimum_denominator:g}: insufficient data.",
        "group": [{
            "population": [
                {"code": _code(POPULATION, "numerator"), "description": indicator.numerator,
                 "criteria": {"language": "text/plain", "expression": indicator.numerator}},
                {"code": _code(POPULATION, "denominator"), "description": indicator.denominator,
                 "criteria": {"language": "text/plain", "expression": indicator.denominator}},
            ],
        }],
    }
    if usage:
        resource["usage"] = usage
    if indicator_id in NEWS2_INDICATORS:
        resource["topic"] = [_code(SNOMED, NEWS2_TOTAL_SNOMED, "National Early Warning Score 2 total score")]
    return Measure.model_validate(resource).model_dump(mode="json", exclude_none=True)


def _masked() -> dict[str, Any]:
    return {"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]}


def _population(code: str, count: float | str) -> dict[str, Any]:
    population: dict[str, Any] = {"code": _code(POPULATION, code)}
    if isinstance(count, str):  # suppressed
        population["_count"] = _masked()
    elif float(count).is_integer():
        population["count"] = int(count)
    else:
        # FHIR counts are integers; a volume (mL) denominator is published rounded, the exact value stays in
        # the JSON API.
        population["count"] = round(count)
    return population


def measure_report(view: dict[str, Any], *, base_url: str, generated_at: datetime) -> dict[str, Any]:
    """A summary MeasureReport for one location's indicator, from its (already access-filtered) view."""
    group: dict[str, Any] = {
        "population": [_population("numerator", view["numerator"]),
                       _population("denominator", view["denominator"])],
        "extension": [{"url": f"{base_url.rstrip('/')}/fhir/StructureDefinition/rag-status",
                       "valueCode": view["status"]}],
    }
    if view["value"] is not None:
        group["measureScore"] = {"value": round(view["value"], 6), "unit": view["unit"]}
    elif view.get("suppressed"):
        group["measureScore"] = _masked()
    resource = {
        "resourceType": "MeasureReport",
        "id": fhir_id(view["location_id"], view["indicator_id"]),
        "status": "complete",
        "type": "summary",
        "measure": measure_url(base_url, view["indicator_id"]),
        "subject": {"identifier": {"system": location_system(base_url), "value": view["location_id"]},
                    "display": f"Location {view['location_id']}"},
        "date": generated_at.isoformat(),
        "period": {"start": view["window_start"].isoformat(), "end": view["window_end"].isoformat()},
        "improvementNotation": _code(
            IMPROVEMENT, "decrease" if view["direction"] == "lower_is_better" else "increase"
        ),
        "group": [group],
    }
    return MeasureReport.model_validate(resource).model_dump(mode="json", exclude_none=True)


def bundle(resources: list[dict[str, Any]], *, base_url: str) -> dict[str, Any]:
    resource = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"{base_url.rstrip('/')}/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                  for r in resources],
    }
    return Bundle.model_validate(resource).model_dump(mode="json", exclude_none=True)
