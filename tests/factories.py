"""Event builders for tests: valid by default, every field overridable."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from carepulse import events

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)

#: A stable resident: every parameter in its NEWS2 0 band (news2.md §1).
NORMAL_VITALS = dict(
    respiration_rate=16, spo2=97, spo2_scale=1, on_oxygen=False, systolic_bp=125, pulse=72,
    consciousness="A", temperature=36.8,
)
#: Deteriorating: RR 26 (3), SpO2 90 (3), air (0), SBP 95 (2), pulse 125 (2), new confusion (3),
#: temperature 39.2 (2) -> total 15, high risk.
RED_VITALS = dict(
    respiration_rate=26, spo2=90, spo2_scale=1, on_oxygen=False, systolic_bp=95, pulse=125,
    consciousness="C", temperature=39.2,
)


def observation_set(resident_id: str, *, location_id: str = "loc-test", occurred_at: datetime = T0,
                    **vitals) -> events.ObservationSet:
    return events.ObservationSet(
        event_id=uuid.uuid4(),
        occurred_at=occurred_at,
        received_at=occurred_at,
        source=events.Source(gateway_id="gw-test", device_id="tablet-test"),
        location_id=location_id,
        resident_id=resident_id,
        **{**NORMAL_VITALS, **vitals},
    )


def unique_resident(prefix: str = "res") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
