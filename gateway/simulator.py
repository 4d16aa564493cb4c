"""`HomeSimulator`: drives the emulated care home from `CareHome`'s course, the way staff would.

Each round takes every resident's observation set from `carepulse.simulation.CareHome` and sends it
down the two real paths a care home uses: the device-measurable parameters (SpO2, pulse, blood
pressure, temperature) through the emulated BLE devices, so they travel devices → BLE → central →
``readings``; and the parameters a carer judges (respiration rate, ACVPU, oxygen) as an HTTP entry to
the gateway's own tablet intake, with a provisioned tablet token, exactly as a carer's tablet would.
Now and then a resident presses their call bell or their smart cup reports a drink level, so the
BTHome path and ``care-events`` carry traffic too.

Log lines never carry a resident id (cqc_domain.md §5); failures are counted per round instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from carepulse import events
from carepulse.simulation import CareHome
from gateway.ble.home import EmulatedHome

log = logging.getLogger(__name__)

#: The carer id the simulated tablet records entries under.
SIMULATED_CARER = "carer-demo"
#: Chance per round that one resident presses their call bell: occasional, so vitals dominate the traffic.
CALL_BELL_CHANCE = 0.2
#: Chance per round that one resident's smart cup reports what is left in it.
CUP_REPORT_CHANCE = 0.3
#: A smart cup's reported contents, ml: a part-drunk mug.
CUP_ML_RANGE = (50, 300)
#: How long one HTTP entry may take before the round counts it as failed.
INTAKE_TIMEOUT_S = 5.0


def manual_entry(observation: events.ObservationSet, recorded_by: str = SIMULATED_CARER) -> dict[str, Any]:
    """The tablet's JSON body for the parameters of `observation` that no device measures."""
    return {
        "occurred_at": observation.occurred_at.isoformat(),
        "recorded_by": recorded_by,
        "respiration_rate": observation.respiration_rate,
        "consciousness": observation.consciousness,
        "on_oxygen": observation.on_oxygen,
    }


def describe(error: BaseException) -> str:
    """An error for the log without a resident id: httpx messages can carry the URL, whose path has one."""
    if isinstance(error, httpx.HTTPError):
        return type(error).__name__
    return f"{type(error).__name__}: {error}"


class HomeSimulator:
    def __init__(
        self,
        care_home: CareHome,
        home: EmulatedHome,
        *,
        intake_url: str,
        tablet_token: str,
        observation_interval_s: float = 3.0,
        seed: int = 7,
        now: Callable[[], datetime] = events.utc_now,
    ) -> None:
        """`home` must be started; `intake_url` is the gateway's intake, e.g. http://127.0.0.1:8470."""
        self.care_home = care_home
        self.home = home
        self.intake_url = intake_url
        self.tablet_token = tablet_token
        self.observation_interval_s = observation_interval_s
        self.now = now
        self.rounds = 0
        self._rng = random.Random(seed)

    async def run(self, stopping: asyncio.Event) -> None:
        """One round every `observation_interval_s` until `stopping` is set."""
        # httpx logs every request URL at INFO, and the intake's paths carry resident ids.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        async with httpx.AsyncClient(
            base_url=self.intake_url,
            headers={"Authorization": f"Bearer {self.tablet_token}"},
            timeout=INTAKE_TIMEOUT_S,
        ) as client:
            while not stopping.is_set():
                started = time.monotonic()
                await self.round(client)
                remaining_s = self.observation_interval_s - (time.monotonic() - started)
                if remaining_s > 0:
                    try:
                        await asyncio.wait_for(stopping.wait(), remaining_s)
                    except TimeoutError:
                        pass

    async def round(self, client: httpx.AsyncClient) -> None:
        """Observe every resident once, plus the occasional call bell and cup report."""
        observations = self.care_home.observe(self.now())
        results = await asyncio.gather(
            *(self._observe(client, observation) for observation in observations), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, Exception)]
        if failures:
            log.warning("simulated round %d: %d of %d residents' observations failed (first: %s)",
                        self.rounds, len(failures), len(results), describe(failures[0]))
        resident_ids = [observation.resident_id for observation in observations]
        try:
            if self._rng.random() < CALL_BELL_CHANCE:
                await self.home.press_call_bell(self._rng.choice(resident_ids))
            if self._rng.random() < CUP_REPORT_CHANCE:
                await self.home.cup_volume(self._rng.choice(resident_ids), self._rng.randint(*CUP_ML_RANGE))
        except Exception as error:
            log.warning("simulated round %d: a BTHome device failed (%s)", self.rounds, describe(error))
        self.rounds += 1

    async def _observe(self, client: httpx.AsyncClient, observation: events.ObservationSet) -> None:
        await self.home.take_vitals(
            observation.resident_id,
            spo2=observation.spo2,
            pulse=observation.pulse,
            systolic=observation.systolic_bp,
            # CareHome charts systolic only; the cuff also measures diastolic, at a typical ratio.
            diastolic=round(observation.systolic_bp * 0.65),
            temperature_c=observation.temperature,
        )
        response = await client.post(
            f"/v1/residents/{observation.resident_id}/observations", json=manual_entry(observation)
        )
        if response.status_code != 202:
            # Status only: the intake's sentence for a 404 names the resident.
            raise RuntimeError(f"the intake answered {response.status_code}")
