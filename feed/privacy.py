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
