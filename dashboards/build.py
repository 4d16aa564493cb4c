"""carepulse's Grafana dashboards as code (grafana-foundation-sdk), written to ``dashboards/generated/*.json``.

    python -m dashboards.build            # rewrite dashboards/generated/
    python -m dashboards.build --check    # exit 1 if the committed JSON is out of date

Three dashboards, every query on metrics from carepulse/metrics.py only (a test parses them):

- ``carepulse-pipeline``: pipeline health (throughput, event-time latency, lag, dead letters, gateways, feed);
- ``carepulse-care-quality``: care quality by location, red locations first, issue 11's indicators (continuity
  of carers, travel between visits, urinalysis timeliness) and live capacity (care-home beds, homecare hours);
- ``carepulse-oncall``: open and overdue escalations for the on-call clinician.

All panels use the Prometheus datasource with uid ``DATASOURCE_UID``, which deploy/grafana provisions.
`queries` lists every PromQL expression of a dashboard and `executable` substitutes Grafana's macros and
variables, so a test can run each one against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, TableSortByFieldState, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard, QueryVariable, Row, ThresholdsConfig
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from indicators.quality import EXTENSION_INDICATOR_IDS

GENERATED = Path(__file__).resolve().parent / "generated"
DATASOURCE_UID = "carepulse-prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
TAGS = ["carepulse", "generated"]

#: carepulse.metrics.RAG_CODES as Grafana value mappings.
RAG_MAPPING = ValueMap(options={
    "-1": ValueMappingResult(text="insufficient data", color="text", index=0),
    "0": ValueMappingResult(text="green", color="green", index=1),
    "1": ValueMappingResult(text="amber", color="orange", index=2),
    "2": ValueMappingResult(text="red", color="red", index=3),
})


def _query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> Dataquery:
    query = Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query


def _thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(value=v, color=c) for v, c in steps])


def _ts(title: str, unit: str, *queries: Dataquery, description: str = "", w: int = 12, h: int = 8,
        stacked: bool = False) -> timeseries.Panel:
    panel = (
        timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).height(h).span(w)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.TABLE).placement(LegendPlacement.BOTTOM)
                .show_legend(True))
    )
    if description:
        panel = panel.description(description)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stat(title: str, query: Dataquery, *, unit: str = "short", thresholds: ThresholdsConfig | None = None,
          description: str = "", w: int = 6, h: int = 5) -> stat.Panel:
    panel = (
        stat.Panel().title(title).unit(unit).datasource(DATASOURCE).height(h).span(w).with_target(query)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if thresholds is not None:
        panel = panel.thresholds(thresholds)
    if description:
        panel = panel.description(description)
    return panel


def _organize(rename: dict[str, str], exclude: tuple[str, ...] = ("Time",)) -> DataTransformerConfig:
    return DataTransformerConfig(id_val="organize", options={
        "excludeByName": {name: True for name in exclude}, "renameByName": rename,
    })


# --- pipeline health ---------------------------------------------------------------------------------------

def pipeline_health() -> Dashboard:
    rate = "[$__rate_interval]"
    return (
        Dashboard("carepulse / pipeline health").uid("carepulse-pipeline").tags(TAGS).refresh("30s")
        .time("now-6h", "now").description("Throughput, event-time latency, lag and dead letters of the workers, "
                                           "gateways and regulator feed.")
        .with_row(Row("Scrape targets"))
        .with_panel(_stat("Targets up", _query('sum(up{job=~"carepulse-.*"})', "up"),
                          description="carepulse processes Prometheus can scrape.", w=6))
        .with_panel(_stat("Targets down", _query('count(up{job=~"carepulse-.*"} == 0) or vector(0)', "down"),
                          thresholds=_thresholds((None, "green"), (1, "red")), w=6))
        .with_panel(_stat("Worker events in /s", _query(f"sum(rate(carepulse_worker_events_in_total{rate}))"),
                          unit="ops", w=6))
        .with_panel(_stat("Dead letters (1 h)",
                          _query("sum(increase(carepulse_dead_letters_total[1h]))"),
                          thresholds=_thresholds((None, "green"), (1, "orange"), (50, "red")), w=6))
        .with_row(Row("Worker"))
        .with_panel(_ts("Events in by topic", "ops",
                        _query(f"sum by (topic) (rate(carepulse_worker_events_in_total{rate}))", "{{topic}}")))
        .with_panel(_ts("Events out by topic", "ops",
                        _query(f"sum by (topic) (rate(carepulse_worker_events_out_total{rate}))", "{{topic}}")))
        .with_panel(_ts(
            "Event time to processed (p50, p95)", "s",
            _query("histogram_quantile(0.5, sum by (le, topic) "
                   f"(rate(carepulse_worker_event_latency_seconds_bucket{rate})))", "p50 {{topic}}", "A"),
            _query("histogram_quantile(0.95, sum by (le, topic) "
                   f"(rate(carepulse_worker_event_latency_seconds_bucket{rate})))", "p95 {{topic}}", "B"),
            description="From the event's occurred_at to the worker processing it; includes time in a "
                        "gateway's buffer during an outage."))
        .with_panel(_ts("Consumer lag by topic", "short",
                        _query("sum by (topic) (carepulse_worker_consumer_lag_messages)", "worker {{topic}}", "A"),
                        _query("sum by (topic) (carepulse_feed_consumer_lag_messages)", "feed {{topic}}", "B")))
        .with_panel(_ts("Dead letters by stage and reason", "short",
                        _query("sum by (stage, reason) (increase(carepulse_dead_letters_total[5m]))",
                               "{{stage}} {{reason}}"),
                        description="Per 5 minutes. The full reason is in each dead letter on dead-letters."))
        .with_panel(_ts("Escalation transitions by risk", "short",
                        _query("sum by (risk, event) (increase(carepulse_worker_escalations_total[15m]))",
                               "{{risk}} {{event}}"), description="Per 15 minutes."))
        .with_row(Row("Gateways"))
        .with_panel(_ts("Buffer depth", "short",
                        _query("carepulse_gateway_buffer_messages", "{{instance}}")))
        .with_panel(_ts("Oldest buffered message", "s",
                        _query("carepulse_gateway_buffer_oldest_age_seconds", "{{instance}}")))
        .with_panel(_ts("Buffer use", "percentunit",
                        _query("carepulse_gateway_buffer_bytes / carepulse_gateway_buffer_limit_bytes",
                               "{{instance}}")))
        .with_panel(_ts("Buffer level", "short",
                        _query("carepulse_gateway_buffer_level", "{{instance}}"),
                        description="What the buffer admits (gateway.buffer.BufferLevel): 0 everything, 1 filling, "
                                    "2 tablet entries refused (the tablets send them again), 3 device readings "
                                    "refused too (lost)."))
        .with_panel(_ts("Device readings lost", "short",
                        _query("sum by (instance) (increase(carepulse_gateway_device_readings_lost_total[5m]))",
                               "{{instance}}"),
                        description="Per 5 minutes. Nobody sends these again; each is in the gateway's log as a "
                                    "CRITICAL \"LOST value\" line with its bytes."))
        .with_panel(_ts("Since last event", "s",
                        _query("time() - carepulse_gateway_last_event_timestamp_seconds", "{{instance}}"),
                        description="Seconds since the gateway last accepted an event from a device or tablet."))
        .with_panel(_ts("BLE devices", "short",
                        _query("sum by (instance) (carepulse_gateway_ble_devices_seen)", "seen {{instance}}", "A"),
                        _query("sum by (instance) (carepulse_gateway_ble_devices_connected)",
                               "connected {{instance}}", "B")))
        .with_panel(_ts("Gateway events in / forwarded", "ops",
                        _query(f"sum by (topic) (rate(carepulse_gateway_events_in_total{rate}))", "in {{topic}}",
                               "A"),
                        _query(f"sum by (topic) (rate(carepulse_gateway_events_out_total{rate}))",
                               "forwarded {{topic}}", "B")))
        .with_row(Row("Regulator feed"))
        .with_panel(_ts("Feed events stored by topic", "ops",
                        _query(f"sum by (topic) (rate(carepulse_feed_events_in_total{rate}))", "{{topic}}")))
        .with_panel(_ts("Feed API requests by status", "reqps",
                        _query(f"sum by (status_class) (rate(carepulse_feed_http_requests_total{rate}))",
                               "{{status_class}}")))
    )


# --- care quality ------------------------------------------------------------------------------------------

def _indicator_table(title: str, selector: str, *, height: int, description: str) -> table.Panel:
    """A table of the indicators `selector` picks: location, indicator, RAG status (coloured) and value, red
    first."""
    return (
        table.Panel().title(title).datasource(DATASOURCE).height(height).span(24).description(description)
        .with_target(_query(f"carepulse_indicator_status{{{selector}}}", ref="A", instant=True))
        .with_target(_query(f"carepulse_indicator_value{{{selector}}}", ref="B", instant=True))
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(_organize(
            {"location_id": "Location", "indicator_id": "Indicator", "Value #A": "Status", "Value #B": "Value"},
            exclude=("Time", "__name__", "job", "instance")))
        .sort_by([TableSortByFieldState().display_name("Status").desc(True)])
        .override_by_name("Status", [
            DynamicConfigValue(id_val="mappings", value=[RAG_MAPPING]),
            DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
        ])
    )


def care_quality() -> Dashboard:
    location = 'location_id=~"$location"'
    worst = (
        table.Panel().title("Locations, worst first").datasource(DATASOURCE).height(10).span(10)
        .description("Worst indicator status per location (red first) and how many indicators are red or amber.")
        .with_target(_query(f"max by (location_id) (carepulse_indicator_status{{{location}}})", ref="A",
                            instant=True))
        .with_target(_query(f"count by (location_id) (carepulse_indicator_status{{{location}}} == 2)", ref="B",
                            instant=True))
        .with_target(_query(f"count by (location_id) (carepulse_indicator_status{{{location}}} == 1)", ref="C",
                            instant=True))
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(_organize({"location_id": "Location", "Value #A": "Worst status",
                                        "Value #B": "Red indicators", "Value #C": "Amber indicators"}))
        .sort_by([TableSortByFieldState().display_name("Worst status").desc(True)])
        .override_by_name("Worst status", [
            DynamicConfigValue(id_val="mappings", value=[RAG_MAPPING]),
            DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
        ])
    )
    indicators = _indicator_table(
        "Indicators by location", location, height=14,
        description="Every indicator of every location, red first. Values in each indicator's published unit.")
    new_indicators = _indicator_table(
        "Continuity, travel and urinalysis (new indicators)",
        f'{location}, indicator_id=~"{"|".join(EXTENSION_INDICATOR_IDS)}"', height=10,
        description="Issue 11's indicators: continuity of carers, homecare travel between visits and urinalysis "
                    "after an amber NEWS2 episode (only where the urinalysis pathway is switched on: dipstick tests "
                    "are not recommended over 65, cqc_domain.md §2.2 row 13 [U3]). Every threshold is a carepulse "
                    "proposal with no benchmark.")
    beds = (
        table.Panel().title("Care-home beds, most vacant first").datasource(DATASOURCE).height(10).span(14)
        .description("Live capacity with the DHSC Capacity Tracker's bed fields (maximum, occupied, reserved for "
                     "residents in hospital) and the vacancies they leave; 'Age' is how old the figures are.")
        .with_target(_query(f'sum by (location_id) (carepulse_capacity_beds{{{location}, state="vacant"}})', ref="A",
                            instant=True))
        .with_target(_query(f"sum by (location_id) (carepulse_capacity_max_beds{{{location}}})", ref="B",
                            instant=True))
        .with_target(_query(f'sum by (location_id) (carepulse_capacity_beds{{{location}, state="occupied"}})',
                            ref="C", instant=True))
        .with_target(_query(f'sum by (location_id) (carepulse_capacity_beds{{{location}, state="reserved"}})',
                            ref="D", instant=True))
        .with_target(_query(f"max by (location_id) (time() - carepulse_capacity_as_of_timestamp_seconds{{{location}}})",
                            ref="E", instant=True))
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(_organize({"location_id": "Location", "Value #A": "Vacant", "Value #B": "Maximum",
                                        "Value #C": "Occupied", "Value #D": "Reserved (in hospital)",
                                        "Value #E": "Age"}))
        .sort_by([TableSortByFieldState().display_name("Vacant").desc(True)])
        .override_by_name("Age", [DynamicConfigValue(id_val="unit", value="s")])
    )
    homecare = (
        table.Panel().title("Homecare capacity (last 7 days)").datasource(DATASOURCE).height(10).span(24)
        .description("People with a planned visit and hours planned in the last 7 days, hours commissioned a week, "
                     "and commissioned hours not planned (spare capacity; negative: planned beyond the commission).")
        .with_target(_query(f"sum by (location_id) (carepulse_capacity_people_receiving_care{{{location}}})", ref="A",
                            instant=True))
        .with_target(_query(f"sum by (location_id) (carepulse_capacity_planned_care_seconds{{{location}}})", ref="B",
                            instant=True))
        .with_target(_query(f"sum by (location_id) (carepulse_capacity_commissioned_care_seconds{{{location}}})",
                            ref="C", instant=True))
        .with_target(_query(f"sum by (location_id) (carepulse_capacity_commissioned_care_seconds{{{location}}}) - "
                            f"sum by (location_id) (carepulse_capacity_planned_care_seconds{{{location}}})", ref="D",
                            instant=True))
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(_organize({"location_id": "Location", "Value #A": "People", "Value #B": "Planned",
                                        "Value #C": "Commissioned a week", "Value #D": "Not planned"}))
        .sort_by([TableSortByFieldState().display_name("Not planned").desc(True)])
        .override_by_name("Planned", [DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("Commissioned a week", [DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("Not planned", [DynamicConfigValue(id_val="unit", value="s")])
    )
    return (
        Dashboard("carepulse / care quality by location").uid("carepulse-care-quality").tags(TAGS)
        .refresh("1m").time("now-7d", "now")
        .description("CQC care-quality indicators per location (RAG), red locations first.")
        .with_variable(
            QueryVariable("location").label("Location").datasource(DATASOURCE)
            .query("label_values(carepulse_indicator_status, location_id)")
            .multi(True).include_all(True).all_value(".+").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
        .with_panel(worst)
        .with_panel(_stat("Red locations",
                          _query(f"count(max by (location_id) (carepulse_indicator_status{{{location}}}) == 2) "
                                 "or vector(0)"),
                          thresholds=_thresholds((None, "green"), (1, "red")), w=14, h=10))
        .with_panel(indicators)
        .with_panel(_ts("Red and amber indicators over time", "short",
                        _query(f"count by (location_id) (carepulse_indicator_status{{{location}}} == 2)",
                               "red {{location_id}}", "A"),
                        _query(f"count by (location_id) (carepulse_indicator_status{{{location}}} == 1)",
                               "amber {{location_id}}", "B"), w=24))
        .with_panel(_ts("Indicator values", "short",
                        _query(f"carepulse_indicator_value{{{location}}}", "{{location_id}} {{indicator_id}}"),
                        w=24))
        .with_panel(new_indicators)
        .with_row(Row("Live capacity"))
        .with_panel(beds)
        .with_panel(_stat("Vacant care-home beds",
                          _query(f'sum(carepulse_capacity_beds{{{location}, state="vacant"}}) or vector(0)'),
                          description="Across the selected care homes, as last reported.", w=10, h=10))
        .with_panel(homecare)
    )


# --- on-call -----------------------------------------------------------------------------------------------

def on_call() -> Dashboard:
    open_by = (
        table.Panel().title("Open escalations needing action").datasource(DATASOURCE).height(10).span(24)
        .description("Unacknowledged escalations by location and risk: overdue first, then red.")
        .with_target(_query('sum by (location_id, risk) (carepulse_escalations_open{state="overdue"})', ref="A",
                            instant=True))
        .with_target(_query('sum by (location_id, risk) (carepulse_escalations_open{state="pending"})', ref="B",
                            instant=True))
        .with_target(_query("max by (location_id, risk) (carepulse_escalations_oldest_unacknowledged_seconds)",
                            ref="C", instant=True))
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(_organize({"location_id": "Location", "risk": "Risk", "Value #A": "Overdue",
                                        "Value #B": "Within deadline", "Value #C": "Oldest waiting"}))
        .sort_by([TableSortByFieldState().display_name("Overdue").desc(True)])
        .override_by_name("Oldest waiting", [DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("Overdue", [
            DynamicConfigValue(id_val="thresholds", value={"mode": "absolute", "steps": [
                {"value": None, "color": "green"}, {"value": 1, "color": "red"}]}),
            DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
        ])
    )
    red = _thresholds((None, "green"), (1, "red"))
    return (
        Dashboard("carepulse / on-call").uid("carepulse-oncall").tags(TAGS).refresh("10s").time("now-24h", "now")
        .description("Open and overdue NEWS2 escalations across all locations, for the on-call clinician.")
        .with_panel(_stat("Red escalations waiting",
                          _query('sum(carepulse_escalations_open{risk="high", state=~"pending|overdue"}) or vector(0)'),
                          thresholds=red, w=6))
        .with_panel(_stat("Overdue (any risk)",
                          _query('sum(carepulse_escalations_open{state="overdue"}) or vector(0)'),
                          thresholds=red, w=6))
        .with_panel(_stat("Open escalations", _query("sum(carepulse_escalations_open) or vector(0)"), w=6))
        .with_panel(_stat("Clinical alerts firing",
                          _query('count(ALERTS{alertstate="firing", category="clinical"}) or vector(0)'),
                          thresholds=red, w=6))
        .with_panel(open_by)
        .with_panel(_ts("Open escalations by risk and state", "short",
                        _query("sum by (risk, state) (carepulse_escalations_open)", "{{risk}} {{state}}"), w=12))
        .with_panel(_ts("Raised, acknowledged, overdue per hour", "short",
                        _query("sum by (risk, event) (increase(carepulse_worker_escalations_total[1h]))",
                               "{{risk}} {{event}}"), w=12))
    )


DASHBOARDS = {"pipeline-health": pipeline_health, "care-quality": care_quality, "on-call": on_call}


# --- output ------------------------------------------------------------------------------------------------

def render(name: str) -> str:
    """A dashboard's JSON as committed: stable key order, 2-space indent, trailing newline."""
    model = DASHBOARDS[name]().build()
    return json.dumps(json.loads(JSONEncoder().encode(model)), indent=2, sort_keys=True) + "\n"


def render_all() -> dict[str, str]:
    """File name under dashboards/generated/ -> content."""
    return {f"{name}.json": render(name) for name in DASHBOARDS}


def write(directory: Path = GENERATED) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, content in render_all().items():
        path = directory / file_name
        path.write_text(content)
        written.append(path)
    return written


def stale(directory: Path = GENERATED) -> list[str]:
    """Generated files missing, different from what the code builds, or no longer built."""
    expected = render_all()
    present = {p.name for p in directory.glob("*.json")} if directory.exists() else set()
    out_of_date = [name for name, content in expected.items()
                   if name not in present or (directory / name).read_text() != content]
    return sorted(out_of_date + sorted(present - set(expected)))


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target and query variable of a dashboard's JSON."""
    found = [(panel.get("title", ""), target["expr"])
             for panel in panels(dashboard) for target in panel.get("targets", []) if target.get("expr")]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and query:
            found.append((f"${variable['name']}", query if isinstance(query, str) else query.get("query", "")))
    return found


_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,]+),\s*(?P<label>\w+)\)$")


def executable(expr: str, *, rate_interval: str = "1m", range_: str = "1h") -> str:
    """`expr` with Grafana's macros and this module's variables substituted, ready for Prometheus's
    /api/v1/query. A ``label_values(metric, label)`` variable query becomes ``group by (label) (metric)``
    (the series Grafana's label-values call would read)."""
    match = _LABEL_VALUES.match(expr.strip())
    if match:
        return f"group by ({match['label']}) ({match['metric'].strip()})"
    return (expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
            .replace("$__range", range_).replace("$location", ".+"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        out_of_date = stale()
        if out_of_date:
            print(f"dashboards/generated is out of date: {', '.join(out_of_date)}; run python -m dashboards.build",
                  file=sys.stderr)
            return 1
        return 0
    for path in write():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
