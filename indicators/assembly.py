"""Assembling NEWS2 observation sets from readings that arrive separately, pure and in event time.

Devices report parameters separately and at slightly different times: the oximeter SpO2 and pulse,
the cuff systolic BP and pulse, the thermometer temperature, the carer's tablet respiration rate,
consciousness (ACVPU) and oxygen. Per resident, readings whose event times lie within
`assembly_window_s` of each other form one set (``indicators/config/escalation.toml``).

- A set is emitted as soon as all seven parameters are present.
- When event time moves past the window (`expire`), the set is emitted incomplete, naming what is missing.
- Within a set, each parameter takes the earliest reading (ties broken by event id), so the same readings
  form the same set whatever order they arrive in -- as long as they arrive before the set completes: a
  reading that arrives after its set was emitted starts a new set.
- A reading that still fits the open set's window joins it, however late it arrives. One that does not,
  and is older than the resident's latest event time by more than the allowed lateness, is *late*: it is
  emitted as a set of its own, flagged late, so it is still recorded and scored (clinical data is never
  dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from indicators.escalation import EscalationRules

#: The observation-set fields NEWS2 needs, in the order of RCP Chart 1 (news2.md §1).
SET_FIELDS: tuple[str, ...] = (
    "respiration_rate", "spo2", "on_oxygen", "systolic_bp", "pulse", "consciousness", "temperature",
)

#: Which decoded device value feeds which set field (decoder output names: gateway/codecs). The heart-rate
#: strap is a continuous wearable, not a spot pulse for NEWS2, so it feeds no set.
DEVICE_FIELDS: dict[tuple[str, str], str] = {
    ("plx_spot_check_measurement", "spo2_pct"): "spo2",
    ("plx_spot_check_measurement", "pulse_rate_bpm"): "pulse",
    ("plx_continuous_measurement", "spo2_pct"): "spo2",
    ("plx_continuous_measurement", "pulse_rate_bpm"): "pulse",
    ("blood_pressure_measurement", "systolic_mmhg"): "systolic_bp",
    ("blood_pressure_measurement", "pulse_rate_bpm"): "pulse",
    ("temperature_measurement", "temperature_c"): "temperature",
}


#: Device status flags under which a reading must not enter a NEWS2 set: the device itself says the value is
#: not a valid, final measurement of this resident (Pulse Oximeter Measurement Status and Device and Sensor
#: Status [XML-PLXS]; Blood Pressure Measurement Status [GSS-BPM]; ble_health.md §6–7). Flags describing the
#: resident rather than the measurement (low perfusion, irregular pulse) do not disqualify it. carepulse
#: receiver policy (proposal): such readings are still recorded on the readings topic, only not scored.
UNUSABLE_DEVICE_STATUS: dict[str, frozenset[str]] = {
    "measurement_status": frozenset({
        # Pulse oximeter [XML-PLXS]. A stored measurement carries only the device's naive local time
        # (ble_health.md §4), so it cannot be placed in event time: never scored as if taken now.
        "measurement_ongoing", "early_estimated_data", "data_from_measurement_storage", "data_for_demonstration",
        "data_for_testing",
        "calibration_ongoing", "measurement_unavailable", "questionable_measurement_detected",
        "invalid_measurement_detected",
        # Blood pressure cuff [GSS-BPM]
        "body_movement", "cuff_too_loose", "improper_position",
    }),
    "device_and_sensor_status": frozenset({
        "equipment_malfunction", "signal_processing_irregularity", "inadequate_signal", "erratic_signal",
        "nonpulsatile_signal", "questionable_pulse", "sensor_interference", "sensor_unconnected_to_user",
        "unknown_sensor_connected", "sensor_displaced", "sensor_malfunctioning", "sensor_disconnected",
    }),
}


def unusable_status(values: Mapping[str, object]) -> list[str]:
    """The status flags of a decoded reading that keep it out of NEWS2 sets (empty: usable)."""
    return sorted(
        flag
        for field, unusable in UNUSABLE_DEVICE_STATUS.items()
        for flag in (values.get(field) or ())
        if isinstance(values.get(field), list) and flag in unusable
    )


def device_parameters(characteristic: str, values: Mapping[str, object]) -> dict[str, float]:
    """The set fields a decoded device reading supplies. Special values (an IEEE-11073 NaN, NRes, …)
    are strings, not numbers: the device had no valid result, so they supply nothing; neither does a
    reading whose device status says it is not a valid measurement (`UNUSABLE_DEVICE_STATUS`)."""
    if unusable_status(values):
        return {}
    return {
        field: float(values[name])
        for (char, name), field in DEVICE_FIELDS.items()
        if char == characteristic and isinstance(values.get(name), (int, float)) and not isinstance(values[name], bool)
    }


@dataclass(frozen=True)
class Reading:
    event_id: str
    occurred_at: datetime
    values: dict[str, float | str | bool]  # set field -> value


@dataclass(frozen=True)
class AssembledSet:
    values: dict[str, float | str | bool]
    occurred_at: datetime  # event time of the latest reading in the set
    event_ids: tuple[str, ...]  # sorted: the same readings always give the same set
    late: bool = False

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(field for field in SET_FIELDS if field not in self.values)

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class OpenSet:
    """The readings gathered so far: field -> (value, event time, event id)."""

    chosen: dict[str, tuple[float | str | bool, datetime, str]]
    event_ids: tuple[str, ...]
    first_at: datetime
    last_at: datetime

    @classmethod
    def start(cls, reading: Reading) -> OpenSet:
        return cls(
            chosen={field: (value, reading.occurred_at, reading.event_id) for field, value in reading.values.items()},
            event_ids=(reading.event_id,),
            first_at=reading.occurred_at,
            last_at=reading.occurred_at,
        )

    def fits(self, reading: Reading, window: timedelta) -> bool:
        return max(self.last_at, reading.occurred_at) - min(self.first_at, reading.occurred_at) <= window

    def add(self, reading: Reading) -> OpenSet:
        chosen = dict(self.chosen)
        for field, value in reading.values.items():
            current = chosen.get(field)
            if current is None or (reading.occurred_at, reading.event_id) < (current[1], current[2]):
                chosen[field] = (value, reading.occurred_at, reading.event_id)
        return OpenSet(
            chosen=chosen,
            event_ids=(*self.event_ids, reading.event_id),
            first_at=min(self.first_at, reading.occurred_at),
            last_at=max(self.last_at, reading.occurred_at),
        )

    def to_set(self, late: bool = False) -> AssembledSet:
        return AssembledSet(
            values={field: value for field, (value, _, _) in self.chosen.items()},
            occurred_at=self.last_at,
            event_ids=tuple(sorted(self.event_ids)),
            late=late,
        )

    def to_json(self) -> dict:
        return {
            "chosen": {field: [value, at.isoformat(), event_id] for field, (value, at, event_id) in self.chosen.items()},
            "event_ids": list(self.event_ids),
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict) -> OpenSet:
        return cls(
            chosen={field: (value, datetime.fromisoformat(at), eid) for field, (value, at, eid) in data["chosen"].items()},
            event_ids=tuple(data["event_ids"]),
            first_at=datetime.fromisoformat(data["first_at"]),
            last_at=datetime.fromisoformat(data["last_at"]),
        )


def add_reading(
    open_set: OpenSet | None, reading: Reading, latest_seen: datetime | None, rules: EscalationRules
) -> tuple[OpenSet | None, list[AssembledSet]]:
    """Place one reading; returns the resident's open set afterwards and any sets now ready to score."""
    if not reading.values:
        return open_set, []
    window = timedelta(seconds=rules.assembly_window_s)
    if open_set is not None and open_set.fits(reading, window):
        grown = open_set.add(reading)
        return (None, [grown.to_set()]) if grown.to_set().complete else (grown, [])
    late = latest_seen is not None and reading.occurred_at < latest_seen - timedelta(seconds=rules.allowed_lateness_s)
    if late:
        return open_set, [OpenSet.start(reading).to_set(late=True)]
    if open_set is not None and reading.occurred_at < open_set.first_at:
        # An earlier round than the one being gathered, and within lateness: it forms its own set.
        return open_set, [OpenSet.start(reading).to_set()]
    emitted = [open_set.to_set()] if open_set is not None else []  # moved past its window: incomplete
    started = OpenSet.start(reading)
    if started.to_set().complete:
        return None, [*emitted, started.to_set()]
    return started, emitted


def expire(open_set: OpenSet | None, clock: datetime | None, rules: EscalationRules) -> tuple[OpenSet | None, list[AssembledSet]]:
    """Emit the open set, incomplete, once `clock` (already lateness-adjusted) passes the end of its window."""
    if open_set is None or clock is None:
        return open_set, []
    if clock >= open_set.first_at + timedelta(seconds=rules.assembly_window_s):
        return None, [open_set.to_set()]
    return open_set, []
