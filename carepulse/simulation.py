"""A simulated care home for the demo and tests: residents whose vital signs drift, one deteriorating.

Pure and seeded: `CareHome.observe(now)` returns the observation sets taken at `now`; nothing here
sends anything. The deteriorating resident follows a sepsis-like course (breathing and pulse up,
SpO2 and blood pressure down, fever, then new confusion) and reaches a high NEWS2 risk after
`deterioration_s` seconds of simulated time.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from carepulse import events


@dataclass
class Resident:
    resident_id: str
    respiration_rate: float
    spo2: float
    systolic_bp: float
    pulse: float
    temperature: float
    deteriorating: bool = False


@dataclass
class CareHome:
    location_id: str = "loc-demo-oakwood"
    gateway_id: str = "gw-demo-1"
    residents_count: int = 5
    deterioration_s: float = 30.0
    seed: int = 7
    started_at: datetime | None = None
    residents: list[Resident] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        for index in range(self.residents_count):
            self.residents.append(
                Resident(
                    resident_id=f"res-{self.location_id[-7:]}-{index + 1:03d}",
                    respiration_rate=self._rng.uniform(13, 18),
                    spo2=self._rng.uniform(96, 99),
                    systolic_bp=self._rng.uniform(118, 140),
                    pulse=self._rng.uniform(60, 85),
                    temperature=self._rng.uniform(36.3, 37.2),
                    deteriorating=index == 0,
                )
            )

    def observe(self, now: datetime) -> list[events.ObservationSet]:
        """One round of observations for every resident, taken at `now` (timezone-aware)."""
        if self.started_at is None:
            self.started_at = now
        progress = min(1.0, (now - self.started_at).total_seconds() / self.deterioration_s)
        return [self._observation(resident, now, progress) for resident in self.residents]

    def _observation(self, resident: Resident, now: datetime, progress: float) -> events.ObservationSet:
        rng = self._rng
        # Stable residents drift a little around their baseline, staying within normal ranges.
        drift = dict(
            respiration_rate=resident.respiration_rate + rng.uniform(-1, 1),
            spo2=min(100.0, resident.spo2 + rng.uniform(-1, 1)),
            systolic_bp=resident.systolic_bp + rng.uniform(-5, 5),
            pulse=resident.pulse + rng.uniform(-4, 4),
            temperature=resident.temperature + rng.uniform(-0.2, 0.2),
        )
        consciousness = "A"
        if resident.deteriorating:
            drift["respiration_rate"] += 12 * progress  # -> ~27/min
            drift["spo2"] -= 7 * progress  # -> ~90 %
            drift["systolic_bp"] -= 40 * progress  # -> ~90 mmHg
            drift["pulse"] += 50 * progress  # -> ~125/min
            drift["temperature"] += 2.6 * progress  # -> ~39.3 C
            if progress >= 1.0:
                consciousness = "C"  # new confusion
        # Values leave the simulated devices at chart precision, as a carer's tablet records them.
        return events.ObservationSet(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            occurred_at=now,
            received_at=now,
            source=events.Source(gateway_id=self.gateway_id, device_id="tablet-1"),
            location_id=self.location_id,
            resident_id=resident.resident_id,
            respiration_rate=round(drift["respiration_rate"]),
            spo2=round(drift["spo2"]),
            spo2_scale=1,
            on_oxygen=False,
            systolic_bp=round(drift["systolic_bp"]),
            pulse=round(drift["pulse"]),
            consciousness=consciousness,
            temperature=round(drift["temperature"], 1),
        )
