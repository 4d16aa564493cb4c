"""The mock digital inspection: a location's indicators mapped to CQC key questions and quality statements
(versioned mapping, ``feed/config/inspection_mapping.toml``), with the evidence for each — value, trend over
the window, RAG and the source of its thresholds — the gaps in the data, and an indicative view per key
question. Issue 11's indicators are marked as such (every threshold a proposal with no benchmark), an indicator
with a clinical caveat carries it (urinalysis timeliness: dipstick tests are not recommended over 65,
cqc_domain.md §2.2 row 13 [U3]), and the location's live capacity, when it has reported any, is shown as
context.

Indicative only, never a rating: CQC is replacing the framework and carepulse must not output a "predicted
CQC rating" (cqc_domain.md §0 point 1); the mock inspection shows RAG and evidence linked to the CQC item,
labelled as not a CQC score (§1.4, implementation rule). The view words avoid CQC's rating words.

Pure: the API passes in rows it has already filtered for the caller, and today's date.
"""

from __future__ import annotations

import html
import tomllib
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from indicators.quality import ALL_INDICATOR_IDS, EXTENSION_INDICATOR_IDS

STATUS_LABELS = {"green": "Green", "amber": "Amber", "red": "Red", "insufficient_data": "Insufficient data"}
#: Indicative views per key question (P): words chosen not to echo CQC's four ratings.
VIEWS = {
    "concerns": "Indicators suggest concerns to look into",
    "review": "Some indicators to review",
    "no_concerns": "No concerns indicated by the indicators available",
    "no_view": "No indicative view: not enough data",
    "not_measured": "Not measured from carepulse data",
}
#: A current value whose window ended longer ago than this is reported as a gap (stale feed).
STALE_AFTER = timedelta(days=2)


@dataclass(frozen=True)
class StatementMapping:
    indicator_id: str
    key_question: str
    quality_statement: str
    source: str
    #: Shown only once the location has a value or a snapshot of it (an indicator behind a switch that is off by
    #: default would otherwise be reported as a gap in every provider's data).
    when_reported: bool = False


@dataclass(frozen=True)
class Caveat:
    """A clinical caveat shown with an indicator wherever its value is (inspection page, FHIR Measure)."""

    text: str
    source: str


@dataclass(frozen=True)
class InspectionMapping:
    version: str
    framework: str
    disclaimer: str
    key_questions: dict[str, str]
    mappings: tuple[StatementMapping, ...]
    unmapped: dict[str, dict[str, str]]
    caveats: dict[str, Caveat]


def load_mapping(path: Path | None = None) -> InspectionMapping:
    """The packaged mapping or another file of the same layout; a broken file is refused with a sentence."""
    text = path.read_text() if path else resources.files("feed").joinpath("config/inspection_mapping.toml").read_text()
    config = tomllib.loads(text)
    for name in ("mapping_version", "framework", "disclaimer"):
        if not isinstance(config.get(name), str) or not config[name].strip():
            raise ValueError(f"inspection mapping: {name} is missing.")
    key_questions = config.get("key_questions") or {}
    mappings = []
    for number, entry in enumerate(config.get("mappings", []), start=1):
        where = f"inspection mapping: mapping {number}"
        if entry.get("indicator_id") not in ALL_INDICATOR_IDS:
            raise ValueError(f"{where}: unknown indicator {entry.get('indicator_id')!r}.")
        if entry.get("key_question") not in key_questions:
            raise ValueError(f"{where}: unknown key question {entry.get('key_question')!r}.")
        if not entry.get("quality_statement"):
            raise ValueError(f"{where}: quality_statement is missing.")
        if "cqc_domain.md" not in str(entry.get("source", "")):
            raise ValueError(f"{where}: source must cite cqc_domain.md.")
        if not isinstance(entry.get("when_reported", False), bool):
            raise ValueError(f"{where}: when_reported must be true or false.")
        mappings.append(StatementMapping(entry["indicator_id"], entry["key_question"], entry["quality_statement"],
                                         entry["source"], entry.get("when_reported", False)))
    unmapped = {}
    for entry in config.get("unmapped", []):
        if entry.get("key_question") not in key_questions or "cqc_domain.md" not in str(entry.get("source", "")):
            raise ValueError("inspection mapping: an unmapped entry needs a known key question and a cited source.")
        unmapped[entry["key_question"]] = {"reason": entry["reason"], "source": entry["source"]}
    caveats = {}
    for entry in config.get("caveats", []):
        if entry.get("indicator_id") not in ALL_INDICATOR_IDS or not str(entry.get("text", "")).strip():
            raise ValueError("inspection mapping: a caveat needs a known indicator and a text.")
        if "cqc_domain.md" not in str(entry.get("source", "")):
            raise ValueError(f"inspection mapping: the caveat of {entry['indicator_id']} must cite cqc_domain.md.")
        caveats[entry["indicator_id"]] = Caveat(entry["text"], entry["source"])
    return InspectionMapping(config["mapping_version"], config["framework"], config["disclaimer"],
                             dict(key_questions), tuple(mappings), unmapped, caveats)


@cache
def packaged_mapping() -> InspectionMapping:
    return load_mapping()


def trend(points: list[tuple[date, float | None]], direction: str) -> str:
    """improving / worsening / stable / unknown, from the first and last known values of the window."""
    known = [value for _, value in points if value is not None]
    if len(known) < 2:
        return "unknown"
    first, last = known[0], known[-1]
    scale = max(abs(first), abs(last), 1e-9)
    if abs(last - first) / scale < 0.05:
        return "stable"
    better = last < first if direction == "lower_is_better" else last > first
    return "improving" if better else "worsening"


def sparkline_svg(points: list[tuple[date, float | None]], *, title: str, width: int = 160, height: int = 36) -> str:
    """A small inline SVG trend line (no JavaScript); gaps in the data break the line."""
    label = html.escape(title)
    known = [(day, value) for day, value in points if value is not None]
    if len(known) < 2:
        return (f'<svg class="spark" width="{width}" height="{height}" role="img" aria-label="{label}: no trend">'
                f'<title>{label}: not enough daily values for a trend</title>'
                f'<text x="4" y="{height // 2 + 4}" font-size="10">no trend data</text></svg>')
    low = min(v for _, v in known)
    high = max(v for _, v in known)
    span = (high - low) or 1.0
    pad = 3
    n = len(points) - 1 or 1
    segments: list[list[str]] = [[]]
    for index, (_, value) in enumerate(points):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        x = pad + index * (width - 2 * pad) / n
        y = height - pad - (value - low) * (height - 2 * pad) / span
        segments[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{" ".join(s)}"/>'
                    for s in segments if len(s) > 1)
    dots = "".join(f'<circle r="1.8" cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}"/>'
                   for s in segments if len(s) == 1)
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{label}"><title>{label}: {known[0][1]:g} to {known[-1][1]:g}</title>{lines}{dots}</svg>')


def _evidence(indicator_id: str, current: MappingType[str, Any] | None, history: list[MappingType[str, Any]],
              *, window_days: int, today: date, caveat: Caveat | None) -> dict[str, Any]:
    days = [today - timedelta(days=offset) for offset in range(window_days - 1, -1, -1)]
    by_day = {row["day"]: row for row in history}
    points = [(day, by_day[day]["value"] if day in by_day else None) for day in days]
    gaps = []
    if current is None:
        gaps.append("No value received for this indicator.")
    else:
        if current["status"] == "insufficient_data":
            gaps.append(f"Insufficient data: the denominator is below the minimum of {current['minimum_denominator']:g}.")
        if current.get("suppressed"):
            gaps.append("Counts below the small-number threshold are suppressed in this view.")
        window_end: datetime = current["window_end"]
        if today - window_end.date() > STALE_AFTER:
            gaps.append(f"The latest value is for a window ending {window_end.date().isoformat()}: the feed may be stale.")
    missing_days = sum(1 for day in days if day not in by_day)
    if missing_days:
        gaps.append(f"No daily snapshot on {missing_days} of the last {window_days} days.")
    title = current["title"] if current else indicator_id
    direction = current["direction"] if current else "higher_is_better"
    return {
        "indicator_id": indicator_id,
        "title": title,
        "unit": current["unit"] if current else None,
        "value": current["value"] if current else None,
        "numerator": current["numerator"] if current else None,
        "denominator": current["denominator"] if current else None,
        "status": current["status"] if current else "no_data",
        "status_label": STATUS_LABELS.get(current["status"], current["status"]) if current else "No data",
        "window_start": current["window_start"] if current else None,
        "window_end": current["window_end"] if current else None,
        "threshold_sources": {"green": current["green"], "red": current["red"]} if current else None,
        "trend": trend(points, direction),
        "trend_points": [{"day": day, "value": value} for day, value in points],
        "trend_svg": sparkline_svg(points, title=title),
        "gaps": gaps,
        "extension": indicator_id in EXTENSION_INDICATOR_IDS,
        "caveat": None if caveat is None else {"text": caveat.text, "source": caveat.source},
    }


def _view(statuses: list[str]) -> str:
    if "red" in statuses:
        return "concerns"
    if "amber" in statuses:
        return "review"
    if "green" in statuses:
        return "no_concerns"
    return "no_view"


def build_inspection(location: MappingType[str, Any], current: dict[str, MappingType[str, Any]],
                     history: dict[str, list[MappingType[str, Any]]], *, mapping: InspectionMapping,
                     window_days: int, today: date, generated_at: datetime,
                     capacity: MappingType[str, Any] | None = None) -> dict[str, Any]:
    """The mock inspection of one location from its (access-filtered) current and daily indicator views and
    capacity view."""
    shown = [m for m in mapping.mappings
             if not m.when_reported or m.indicator_id in current or history.get(m.indicator_id)]
    evidence = {
        indicator_id: _evidence(indicator_id, current.get(indicator_id), history.get(indicator_id, []),
                                window_days=window_days, today=today, caveat=mapping.caveats.get(indicator_id))
        for indicator_id in dict.fromkeys(m.indicator_id for m in shown)
    }
    key_questions = []
    for kq_id, kq_title in mapping.key_questions.items():
        rows = [m for m in shown if m.key_question == kq_id]
        statements: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            statements.setdefault(row.quality_statement, []).append(
                {**evidence[row.indicator_id], "mapping_source": row.source}
            )
        indicator_ids = list(dict.fromkeys(m.indicator_id for m in rows))
        statuses = [evidence[i]["status"] for i in indicator_ids]
        view = "not_measured" if not rows else _view(statuses)
        key_questions.append({
            "key_question": kq_id,
            "title": kq_title,
            "indicative_view": view,
            "indicative_view_label": VIEWS[view],
            "status_counts": {s: statuses.count(s) for s in ("green", "amber", "red", "insufficient_data", "no_data")},
            "quality_statements": [{"quality_statement": name, "evidence": items} for name, items in statements.items()],
            "not_measured": mapping.unmapped.get(kq_id),
        })
    gaps = [{"indicator_id": e["indicator_id"], "title": e["title"], "gaps": e["gaps"]}
            for e in evidence.values() if e["gaps"]]
    return {
        "location": dict(location),
        "indicative_only": True,
        "disclaimer": mapping.disclaimer,
        "mapping_version": mapping.version,
        "framework": mapping.framework,
        "window_days": window_days,
        "generated_at": generated_at,
        "capacity": None if capacity is None else dict(capacity),
        "key_questions": key_questions,
        "gaps": gaps,
    }
