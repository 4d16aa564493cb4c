"""The body of ``carepulse indicators recompute``: an event log in, every indicator recomputed out.

An event log is JSON lines, one event per line in its wire form (what ``carepulse tail <topic>
--from-beginning --to-end`` prints), from any number of files. An auditor exports the topics that feed
the indicators (residents, care-events, clinical-actions, news2-scores, escalations, location-profiles),
runs this and compares the result with what the regulator feed shows. The computation is the batch oracle, ``indicators.recompute``; this
module only reads, validates and prints.

By default it recomputes what the worker publishes under the same rules (``streamed_indicator_ids``): the
ten core indicators, continuity of carers and travel between visits, and urinalysis timeliness when the
rules switch that pathway on. The auditor gives the worker's rules file (``CAREPULSE_QUALITY_RULES_PATH``
or ``--rules``) so thresholds and windows are the ones the published values used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TextIO

from pydantic import ValidationError

from carepulse import events
from indicators.quality import IndicatorValue, QualityRules, streamed_indicator_ids
from indicators.recompute import recompute


class EventLogError(ValueError):
    """A line of an event log is not an event; the message names the file and line."""


def read_event_log(sources: Iterable[tuple[str, TextIO]]) -> list[events.Event]:
    """Every event in the (name, text) sources; blank lines are skipped, anything else must be an event."""
    log: list[events.Event] = []
    for name, text in sources:
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                log.append(events.any_event_adapter.validate_json(line))
            except ValidationError as exc:
                raise EventLogError(f"{name}, line {number}: not an event: "
                                    f"{events.describe_validation_error(exc)}") from None
    return log


def default_as_of(log: list[events.Event]) -> datetime:
    """The minute after the newest event: every event in the log is inside the windows."""
    newest = max(event.occurred_at for event in log)
    return newest.replace(second=0, microsecond=0) + timedelta(minutes=1)


def as_json(value: IndicatorValue) -> dict:
    return {
        "location_id": value.location_id, "indicator_id": value.indicator_id,
        "window_start": value.window_start.isoformat(), "window_end": value.window_end.isoformat(),
        "numerator": value.numerator, "denominator": value.denominator, "value": value.value,
        "status": value.status.value, "details": value.details, "rules_version": value.rules_version,
    }


def run(sources: Iterable[tuple[str, TextIO]], out: TextIO, *, as_of: datetime | None,
        bed_counts: Mapping[str, int], as_json_lines: bool, rules: QualityRules,
        indicator_ids: Sequence[str] = ()) -> int:
    """Recompute `indicator_ids` (default: those the worker streams under `rules`) and print them."""
    log = read_event_log(sources)
    if not log:
        raise EventLogError("the event log is empty")
    as_of = as_of or default_as_of(log)
    values = recompute(log, as_of=as_of, bed_counts=bed_counts, rules=rules,
                       indicator_ids=tuple(indicator_ids) or streamed_indicator_ids(rules))
    if as_json_lines:
        for value in values:
            out.write(json.dumps(as_json(value)) + "\n")
        return 0
    out.write(f"{len(log)} events; indicators as of {as_of.isoformat()}\n")
    out.write(f"{'location':<28} {'indicator':<31} {'status':<18} {'value':>9} {'numerator':>11} {'denominator':>12}\n")
    for value in values:
        shown = "-" if value.value is None else f"{value.value:.2f}"
        out.write(f"{value.location_id:<28} {value.indicator_id:<31} {value.status.value:<18} {shown:>9} "
                  f"{value.numerator:>11g} {value.denominator:>12g}\n")
    return 0
