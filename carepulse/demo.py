"""``carepulse demo``: the embedded broker, a worker, the gateway with a simulated care home (emulated
Bluetooth devices on a virtual link, and the carers' tablet entries through the gateway's intake API),
five weeks of care history at five locations that keeps advancing live, and a live view of escalations,
dead letters, urinalysis actions, and the locations' care-quality indicators and live capacity.

The demo's worker runs with the urinalysis pathway switched on (`demo_quality_rules`), which the packaged
rules keep off until a clinical safety officer signs it off.

One process tree: the broker, the worker and the gateway are child processes that die with the demo;
Ctrl-C stops everything in order (gateway, which keeps unsent readings in its buffer, worker, broker).
"""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from carepulse import events, topics
from carepulse.broker import BrokerError, EmbeddedBroker, ensure_topics, wait_until_ready
from carepulse.care_history import DEMO_HISTORY, CareActivity, demo_profiles, topic_and_key
from carepulse.processes import spawn, stop
from carepulse.settings import Settings, child_environment
from carepulse.simulation import CareHome
from indicators import quality

#: Care history published at start-up: the 28-day regulator-facing windows (cqc_domain.md §2.1) plus a week.
HISTORY = DEMO_HISTORY
#: How often the care history advances to the present once the demo runs.
ACTIVITY_INTERVAL_S = 5.0
#: How often the demo prints the locations' indicators, when they changed.
INDICATOR_SUMMARY_INTERVAL_S = 30.0
#: Escalations that happened longer ago than this come from the care history and are not printed one by one.
LIVE_WINDOW = timedelta(minutes=15)
_RAG_MARK = {"green": "G", "amber": "A", "red": "R", "insufficient_data": "-"}


def say(message: str) -> None:
    print(message, flush=True)


def run_demo(settings: Settings, duration_s: float | None = None) -> int:
    started = time.monotonic()
    run_dir = settings.data_dir / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)  # the embedded broker starts empty, so does the demo's gateway
    run_dir.mkdir(parents=True)
    rules_path = demo_quality_rules(run_dir)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    broker = EmbeddedBroker(settings, log_path=run_dir / "broker.log") if settings.uses_embedded_broker else None
    try:
        if broker is not None:
            broker.start()
        else:
            wait_until_ready(settings.bootstrap)
    except BrokerError as exc:
        say(f"carepulse: {exc}")
        return 2
    ensure_topics(settings.bootstrap, settings.topic_partitions)
    worker = spawn([sys.executable, "-m", "carepulse", "worker"], log_path=run_dir / "worker.log",
                   env=child_environment(quality_rules_path=str(rules_path)))
    gateway = spawn(
        [sys.executable, "-m", "carepulse", "gateway", "--simulate"],
        log_path=run_dir / "gateway.log",
        env=child_environment(data_dir=str(run_dir), ble_transport="virtual"),
    )
    home = CareHome(gateway_id=settings.gateway_id)
    profiles = demo_profiles()
    # The demo's feed database lives with the rest of the run, unless CAREPULSE_FEED_DATABASE_URL names one.
    keys = _provision_feed(settings.model_copy(update={"data_dir": run_dir}), profiles)
    feed = spawn([sys.executable, "-m", "carepulse", "feed", "serve"], log_path=run_dir / "feed.log",
                 env=child_environment(data_dir=str(run_dir)))

    say("carepulse demo is running")
    say(f"  broker    {settings.bootstrap} ({'embedded Tansu, in memory' if broker else 'external'})")
    say(f"  care home {home.location_id}: {len(home.residents)} residents with emulated Bluetooth oximeters, "
        "BP cuffs and thermometers; carers' entries through the tablet intake")
    say(f"            {home.residents[0].resident_id} is deteriorating and should turn red within a minute")
    say(f"  gateway   tablet intake API http://{settings.gateway_host}:{settings.gateway_port}/docs")
    say("  pipeline  devices -> gateway -> readings -> worker (NEWS2 sets, escalations) -> news2-scores, escalations;")
    say("            rejected input -> dead-letters")
    say(f"  history   {HISTORY.days} days of care at {', '.join(p.location_id for p in profiles)},")
    say("            advancing live: admissions, drinks, falls, call bells, visits, NEWS2 rounds")
    say("  indicators every location's care-quality indicators, summarised here every "
        f"{INDICATOR_SUMMARY_INTERVAL_S:.0f} s when they change (G green, A amber, R red, - insufficient data)")
    say("  capacity  with them, each location's live capacity: a care home's beds occupied, held for residents in")
    say("            hospital and vacant; an agency's hours planned against those commissioned. "
        f"{profiles[1].location_id} registers")
    say("            4 more beds a minute in, and residents from its waiting list take them within minutes; try")
    say(f"            .venv/bin/carepulse locations profile {profiles[2].location_id} --setting care_home --beds 30")
    say("  urinalysis ON in this demo only (worker rules: the packaged ones with urinalysis_pathway.enabled = true,")
    say(f"            {rules_path}): amber NEWS2 episodes get a 'urinalysis recommended' action")
    say("            and the urinalysis_timeliness indicator. It is OFF by default: NICE and UKHSA advise against")
    say("            dipstick diagnosis of UTI in people over 65 (cqc_domain.md §2.2 row 13, [U3]), and the pathway")
    say("            needs a clinical safety officer's sign-off before anyone switches it on")
    feed_url = f"http://{settings.feed_host}:{settings.feed_port}"
    say(f"  feed      regulator feed {feed_url}/docs (OpenAPI); mock inspection, e.g.")
    say(f"            {feed_url}/v1/locations/{profiles[1].location_id}/inspection.html (send the provider key)")
    for role, token in keys.items():
        say(f"            {role:<24} key {token}")
    say(f"            e.g. curl -H 'Authorization: Bearer {keys['regulator']}' {feed_url}/v1/locations")
    say("  watch     .venv/bin/carepulse tail escalations | news2-scores | indicators | capacity | urinalysis | "
        "dead-letters")
    say(f"  logs      {run_dir}/broker.log, worker.log, gateway.log, feed.log")
    say("Ctrl-C to stop.\n")

    watcher = threading.Thread(target=_watch, args=(settings, started, stopping), daemon=True)
    watcher.start()
    _publish_rejected_example(settings, home)
    activity = threading.Thread(target=_run_care_activity, args=(settings, home, profiles, started, stopping),
                                daemon=True)
    activity.start()
    try:
        while not stopping.is_set():
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            for name, process in (("worker", worker), ("gateway", gateway), ("feed", feed)):
                if process.poll() is not None:
                    say(f"carepulse: the {name} exited with status {process.returncode}; see {run_dir}/{name}.log")
                    return 1
            stopping.wait(0.5)
    finally:
        say("\nstopping: gateway, worker, feed, broker ...")
        stopping.set()
        stop(gateway, signal.SIGTERM, timeout_s=15)
        stop(feed, signal.SIGTERM, timeout_s=15)
        stop(worker, signal.SIGTERM, timeout_s=15)
        if broker is not None:
            broker.stop()
        say("stopped")
    return 0


def demo_quality_rules(run_dir: Path) -> Path:
    """The packaged care-quality rules with the urinalysis pathway switched on, written to `run_dir` for the
    demo's worker (settings field ``quality_rules_path``). Everything else is the packaged rules; the version
    is marked, so no value computed under these rules passes for one computed under the packaged ones."""
    packaged = resources.files("indicators").joinpath("config/quality.toml").read_text()
    head, header, pathway = packaged.partition("\n[urinalysis_pathway]\n")
    switched, found = re.subn(
        r'^enabled = \{ value = false, proposal = true, source = "',
        'enabled = { value = true, proposal = true, source = "Switched on for the carepulse demo only, not signed '
        'off. Packaged rules: ', pathway, count=1, flags=re.MULTILINE)
    versioned, versions = re.subn(r'^rules_version = "([^"]+)"$', r'rules_version = "\1+demo-urinalysis"', head,
                                  count=1, flags=re.MULTILINE)
    if not (header and found and versions):
        raise RuntimeError("The packaged quality rules no longer have the layout the demo edits "
                           "(rules_version, and urinalysis_pathway.enabled = { value = false, ... }).")
    path = run_dir / "quality-rules-demo.toml"
    path.write_text(versioned + header + switched)
    rules = quality.load_rules(path)
    if not rules.urinalysis_pathway.enabled or rules.indicators != quality.packaged_rules().indicators:
        raise RuntimeError(f"{path}: switching the urinalysis pathway on changed something else.")
    return path


def _provision_feed(settings: Settings, profiles: list) -> dict[str, str]:
    """The demo feed's database (SQLite in the demo's directory): each location registered to its provider,
    and one key for the regulator and one per provider, printed for the user to try."""
    from feed import auth, db

    engine = db.make_engine(db.database_url(settings))
    db.migrate(engine)
    now = datetime.now(timezone.utc)
    keys = {"regulator": auth.create_key(engine, role="regulator", name="demo regulator", now=now)[1]}
    for profile in profiles:
        provider = f"prov-{profile.location_id.removeprefix('loc-demo-')}"
        auth.register_location(engine, profile.location_id, provider_id=provider,
                               name=profile.name or profile.location_id, now=now)
        keys[f"provider:{provider}"] = auth.create_key(engine, role=f"provider:{provider}",
                                                       name=f"demo {provider}", now=now)[1]
    engine.dispose()
    return keys


def _publish_rejected_example(settings: Settings, home: CareHome) -> None:
    """One physiologically impossible reading (SpO2 104 %), to show that it is rejected, not scored."""
    now = datetime.now(timezone.utc)
    resident = home.residents[-1].resident_id
    impossible = events.ManualObservation(
        event_id=uuid.uuid4(), occurred_at=now, received_at=now,
        source=events.Source(gateway_id=settings.gateway_id, device_id="demo-bad-entry"),
        location_id=home.location_id, resident_id=resident, recorded_by="demo", spo2=104,
    )
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    producer.send(topics.READINGS.name, key=resident.encode(), value=events.to_json(impossible))
    producer.flush()
    producer.close()


def _run_care_activity(settings: Settings, home: CareHome, profiles: list, started: float,
                       stopping: threading.Event) -> None:
    """Publish the locations' care history up to now, then keep it advancing, as the homes' care-record
    and rostering systems would. The gateway simulates the live vital signs of `home`'s residents, so
    the history's NEWS2 rounds, and the acknowledgements and urine tests that answer them, are left out.
    Each location's profile (registered beds, commissioned hours) comes first, as the provider sets it up."""
    live = {resident.resident_id for resident in home.residents}
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20)
    activity = CareActivity(profiles, start=datetime.now(timezone.utc) - HISTORY, seed=2026)
    answers_live_rounds = (events.ObservationSet, events.EscalationAcknowledgement, events.UrinalysisResult)

    def publish() -> int:
        batch = [event for event in activity.advance(datetime.now(timezone.utc))
                 if not (isinstance(event, answers_live_rounds) and event.resident_id in live)]
        for event in batch:
            spec, key = topic_and_key(event)
            producer.send(spec.name, key=key.encode(), value=events.to_json(event))
        producer.flush()
        return len(batch)

    try:
        count = publish()
        say(f"[{time.monotonic() - started:6.1f} s] published {count:,} events of {HISTORY.days} days' care history; "
            "the worker catches up within a minute or two")
        while not stopping.wait(ACTIVITY_INTERVAL_S):
            publish()
    finally:
        producer.close()


def _watch(settings: Settings, started: float, stopping: threading.Event,
           summary_interval_s: float = INDICATOR_SUMMARY_INTERVAL_S) -> None:
    """Print live escalations, urinalysis actions and dead letters as they come, and every
    `summary_interval_s`, when something changed, each location's indicators, capacity and urinalysis."""
    consumer = KafkaConsumer(
        topics.ESCALATIONS.name,
        topics.DEAD_LETTERS.name,
        topics.INDICATORS.name,
        topics.CAPACITY.name,
        topics.URINALYSIS.name,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    seen: set[str] = set()
    first_high = True
    latest = LatestByLocation()
    summarised_at = time.monotonic()
    changed = False
    try:
        while not stopping.is_set():
            for message in itertools.chain([None], consumer):  # None: a summary check even when nothing arrives
                if changed and time.monotonic() - summarised_at >= summary_interval_s:
                    for line in latest.summary(time.monotonic() - started):
                        say(line)
                    summarised_at, changed = time.monotonic(), False
                if message is None:
                    continue
                elapsed = time.monotonic() - started
                try:
                    event = events.any_event_adapter.validate_json(message.value)
                except ValidationError:
                    continue  # not ours (an external broker may carry anything); the worker dead-letters inputs
                if str(event.event_id) in seen:
                    continue
                seen.add(str(event.event_id))
                changed = latest.add(event) or changed
                if isinstance(event, (events.Escalation, events.EscalationOverdue,
                                      events.UrinalysisRecommendation)) and (
                        datetime.now(timezone.utc) - event.occurred_at > LIVE_WINDOW):
                    continue  # derived from the care history: the summaries cover those
                if isinstance(event, events.Escalation):
                    colour = "RED" if event.risk == "high" else "AMBER"
                    total = f"NEWS2 {event.total}" if event.total is not None else "set still incomplete"
                    say(f"[{elapsed:6.1f} s] {colour} escalation {event.status} ({event.risk}, {total}) for "
                        f"{event.resident_id} at {event.location_id}: {event.response}")
                    if event.risk == "high" and first_high:
                        first_high = False
                        say(f"           first red escalation {elapsed:.1f} s after the demo started")
                elif isinstance(event, events.EscalationOverdue):
                    say(f"[{elapsed:6.1f} s] OVERDUE: the {event.risk} escalation for {event.resident_id} was not "
                        f"acknowledged by {event.deadline_at:%H:%M:%S}")
                elif isinstance(event, events.UrinalysisRecommendation):
                    say(f"[{elapsed:6.1f} s] URINALYSIS {describe_urinalysis_action(event)}")
                elif isinstance(event, events.DeadLetter):
                    say(f"[{elapsed:6.1f} s] dead letter from {event.stage}: {event.reason}")
    finally:
        consumer.close()


class LatestByLocation:
    """What the periodic summary shows: each location's latest indicator values, its latest capacity and
    the latest state of each of its urinalysis actions (by episode)."""

    def __init__(self) -> None:
        self.indicators: dict[tuple[str, str], events.IndicatorUpdate] = {}
        self.capacity: dict[str, events.LocationCapacity] = {}
        self.urinalysis: dict[str, dict[uuid.UUID, events.UrinalysisRecommendation]] = {}

    def add(self, event: events.Event) -> bool:
        """Keep `event` if the summary shows its kind; True if it did."""
        if isinstance(event, events.IndicatorUpdate):
            self.indicators[(event.location_id, event.indicator_id)] = event
        elif isinstance(event, events.LocationCapacity):
            known = self.capacity.get(event.location_id)
            if known is None or known.occurred_at <= event.occurred_at:
                self.capacity[event.location_id] = event
        elif isinstance(event, events.UrinalysisRecommendation):
            self.urinalysis.setdefault(event.location_id, {})[event.episode_id] = event
        else:
            return False
        return True

    def summary(self, elapsed: float) -> list[str]:
        """One line per location with each indicator's value and RAG, red locations first, then a line with its
        capacity and urinalysis actions when there are any."""
        by_location: dict[str, list[events.IndicatorUpdate]] = {
            location_id: [] for location_id in [*self.capacity, *self.urinalysis]}
        for (location_id, _), update in sorted(self.indicators.items()):
            by_location.setdefault(location_id, []).append(update)
        heading = (f"[{elapsed:6.1f} s] care-quality indicators (28-day windows unless noted; value and RAG), "
                   "capacity and urinalysis:")
        lines = [heading]
        for location_id, updates in sorted(by_location.items(), key=lambda item: (
                -sum(u.status == "red" for u in item[1]), item[0])):
            cells = [f"{u.indicator_id} {'-' if u.value is None else f'{u.value:.1f}'} {_RAG_MARK[u.status]}"
                     for u in updates if u.status != "insufficient_data"]
            lines.append(f"           {location_id}: {'; '.join(cells) or 'insufficient data so far'}")
            more = []
            if location_id in self.capacity:
                more.append(f"capacity: {describe_capacity(self.capacity[location_id])}")
            if location_id in self.urinalysis:
                more.append(f"urinalysis: {describe_urinalysis(self.urinalysis[location_id].values())}")
            if more:
                lines.append(f"             {'; '.join(more)}")
        return lines


def describe_capacity(capacity: events.LocationCapacity) -> str:
    """A location's live capacity in words: a care home's beds, or an agency's planned and commissioned hours."""
    if capacity.setting == "care_home":
        over = f", {capacity.over_max_beds} over the maximum" if capacity.over_max_beds else ""
        return (f"{capacity.occupied_beds} of {capacity.max_beds} beds occupied, {capacity.reserved_beds} held for "
                f"residents in hospital, {capacity.vacant_beds} vacant{over}")
    load = f"{capacity.people_receiving_care} people, {capacity.planned_hours_7d:.0f} h planned in 7 days"
    spare = capacity.commissioned_hours_not_planned
    if capacity.commissioned_hours_7d is None or spare is None:
        return f"{load} (no commissioned hours known)"
    balance = f"{spare:.0f} h spare" if spare >= 0 else f"{-spare:.0f} h beyond them"
    return f"{load} of {capacity.commissioned_hours_7d:.0f} commissioned ({balance})"


def describe_urinalysis(actions: Iterable[events.UrinalysisRecommendation]) -> str:
    """A location's urinalysis actions by their latest status."""
    actions = list(actions)
    statuses = Counter(a.status for a in actions)
    on_time = sum(1 for a in actions if a.status == "done" and a.on_time)
    return (f"{len(actions)} amber episodes: {statuses['done']} tested ({on_time} on time), "
            f"{statuses['not_done']} not tested by the target, {statuses['withdrawn']} withdrawn (upgraded to "
            f"high), {statuses['recommended']} awaiting a test")


def describe_urinalysis_action(action: events.UrinalysisRecommendation) -> str:
    """One urinalysis action as it happens."""
    who = f"{action.resident_id} at {action.location_id} ({action.risk} NEWS2 episode)"
    if action.status == "recommended":
        return f"recommended for {who}, due by {action.due_at:%H:%M:%S}"
    if action.status == "done":
        return f"done for {who}, {'on time' if action.on_time else 'late'}"
    if action.status == "not_done":
        return f"not done by {action.due_at:%H:%M:%S} for {who}"
    return f"withdrawn for {who}: upgraded to high risk, an emergency response instead"
