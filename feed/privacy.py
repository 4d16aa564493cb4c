"""What the regulator role sees: aggregates with small numbers suppressed (cqc_domain.md §5).

§5 ("Pseudonymisation"): the regulator's default is summary reports only, with small-cell suppression
(counts < 5 in published views); resident-level drill-down is for the provider's own tenant. So, for the
regulator:

- no resident ids, episode ids or per-event detail anywhere;
- an indicator's numerator and denominator below the threshold are replaced by ``"suppressed"``; when either
  is, the value is suppressed too, since value and the other count give the small one back (complementary
  suppression). The RAG status stays: it is a band, not a count, and below each indicator's minimum
  denominator it is already "insufficient_data" (§2.1), so it reveals no more than the band;
- an indicator's ``details`` (call counts by priority, unanswered calls, …) are withheld: they are counts
  of unknown size;
- escalation counts below the threshold are ``"suppressed"``.

A zero is shown, not suppressed: small-cell suppression protects the few people a small count could point
to, and a zero points to nobody.

Live capacity (issue 11), by the same rule: what is suppressed is a small count of *people*, never a count of
beds or hours.

- A care home's beds (maximum, occupied, reserved for residents in hospital, vacant, over the maximum) are
  shown exactly, to every role. They count beds, not events in anyone's care; they are the bed fields every
  care home already returns, per home, to the DHSC Capacity Tracker (§1.5, [C24]); and a discharge team
  needs "1 vacant bed", not "suppressed". Withholding occupied or reserved alone would protect nothing:
  maximum − vacant gives back the beds in use.
- A homecare agency's ``people_receiving_care`` is a count of people, like an indicator's denominator, and
  no Capacity Tracker field in §1.5 covers it: below the threshold it is ``"suppressed"`` for the regulator.
  Nothing else in the view gives it back (the hours are totals, not per person), so nothing else is
  withheld with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUPPRESSED = "suppressed"


def is_small(count: float, threshold: int) -> bool:
    return 0 < count < threshold


def suppress_count(count: float, threshold: int) -> float | str:
    return SUPPRESSED if is_small(count, threshold) else count


def indicator_view(row: Mapping[str, Any], *, regulator: bool, threshold: int) -> dict[str, Any]:
    """An indicator row (current or snapshot) as the principal may see it."""
    view = {
        "location_id": row["location_id"],
        "indicator_id": row["indicator_id"],
        "title": row["title"],
        "unit": row["unit"],
        "window_start": row["window_start"],
        "window_end": row["window_end"],
        "numerator": row["numerator"],
        "denominator": row["denominator"],
        "value": row["value"],
        "status": row["status"],
        "minimum_denominator": row["minimum_denominator"],
        "direction": row["direction"],
        "green": row["green"],
        "red": row["red"],
        "rules_version": row["rules_version"],
        "suppressed": False,
        "details": None if regulator else row["details"],
    }
    if "day" in row:
        view["day"] = row["day"]
    if regulator and (is_small(row["numerator"], threshold) or is_small(row["denominator"], threshold)):
        view.update(
            numerator=suppress_count(row["numerator"], threshold),
            denominator=suppress_count(row["denominator"], threshold),
            value=None,
            suppressed=True,
        )
    return view


#: What a capacity view holds: the location, then the `carepulse.events.LocationCapacity` figures.
CAPACITY_FIELDS = (
    "location_id", "name", "provider_id", "setting", "as_of", "max_beds", "occupied_beds", "reserved_beds",
    "vacant_beds", "over_max_beds", "people_receiving_care", "planned_hours_7d", "commissioned_hours_7d",
    "commissioned_hours_not_planned",
)


def capacity_view(row: Mapping[str, Any], *, regulator: bool, threshold: int) -> dict[str, Any]:
    """A location's capacity row (joined with its location) as the principal may see it (module docstring)."""
    view = {name: row[name] for name in CAPACITY_FIELDS}
    view["suppressed"] = False
    people = row["people_receiving_care"]
    if regulator and people is not None and is_small(people, threshold):
        view.update(people_receiving_care=SUPPRESSED, suppressed=True)
    return view
