"""Dashboards as code: the committed JSON is what dashboards/build.py generates, every query is valid PromQL
on metrics the catalog defines, and the Grafana push builds the right payloads."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from carepulse import metrics
from dashboards import build, push
from tests.observability.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: Series Prometheus itself provides.
PROMETHEUS_BUILTINS = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def _dashboards() -> dict[str, dict]:
    return {name: json.loads(content) for name, content in build.render_all().items()}


def _alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [(f"{name}: {title}", expr) for name, dashboard in _dashboards().items()
            for title, expr in build.queries(dashboard)]


def test_committed_dashboards_are_up_to_date():
    out_of_date = build.stale()
    assert not out_of_date, (f"dashboards/generated is out of date ({', '.join(out_of_date)}): "
                             "run `python -m dashboards.build` and commit the result")


def test_stale_detects_an_edited_and_an_extra_file(tmp_path: Path):
    build.write(tmp_path)
    assert build.stale(tmp_path) == []
    (tmp_path / "on-call.json").write_text("{}")
    (tmp_path / "old.json").write_text("{}")
    assert build.stale(tmp_path) == ["old.json", "on-call.json"]
    assert build.main(["--check"]) == 0  # the committed directory


def test_the_three_dashboards_exist_with_stable_uids():
    dashboards = _dashboards()
    assert {d["uid"] for d in dashboards.values()} == {"carepulse-pipeline", "carepulse-care-quality",
                                                      "carepulse-oncall"}
    for dashboard in dashboards.values():
        assert "carepulse" in dashboard["tags"]
        for panel in build.panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": build.DATASOURCE_UID}, panel["title"]
            assert panel.get("targets"), f"{panel['title']} has no query"
            assert panel["gridPos"]["w"] > 0 and panel["gridPos"]["h"] > 0


def test_care_quality_puts_red_locations_first():
    dashboard = _dashboards()["care-quality.json"]
    first = next(p for p in build.panels(dashboard) if p["type"] == "table")
    assert first["title"] == "Locations, worst first"
    assert first["options"]["sortBy"] == [{"desc": True, "displayName": "Worst status"}]
    mapping = first["fieldConfig"]["overrides"][0]["properties"][0]["value"][0]["options"]
    assert {int(code): m["text"] for code, m in mapping.items()} == {
        code: status.replace("insufficient_data", "insufficient data") for status, code in metrics.RAG_CODES.items()
    }


def test_on_call_shows_open_and_overdue_escalations():
    exprs = [expr for _, expr in build.queries(_dashboards()["on-call.json"])]
    assert any('state="overdue"' in e for e in exprs)
    assert any("carepulse_escalations_open" in e and "overdue" not in e for e in exprs)


@pytest.mark.parametrize(("where", "expr"), _dashboard_exprs() + _alert_exprs())
def test_every_query_uses_only_catalog_metrics(where: str, expr: str):
    names = metric_names(build.executable(expr))
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - metrics.metric_names() - PROMETHEUS_BUILTINS
    assert not unknown, f"{where}: {sorted(unknown)} not defined in carepulse/metrics.py"


def test_every_catalog_metric_is_on_a_dashboard_or_in_an_alert():
    used = set().union(*(metric_names(build.executable(e)) for _, e in _dashboard_exprs() + _alert_exprs()))
    # Families are used through one of their samples (_total, _bucket, ...); _created never is.
    families = {name for name in metrics.metric_names() if not name.endswith(("_created", "_count", "_sum"))}
    unused = {name for name in families if name not in used}
    # Recorded for debugging and for ad-hoc queries, not charted.
    assert unused == {
        "carepulse_worker_last_event_timestamp_seconds",
        "carepulse_feed_event_latency_seconds_bucket",
        "carepulse_feed_http_request_duration_seconds_bucket",
        "carepulse_feed_invalid_messages_total",
        "carepulse_gateway_buffer_rejected_total",
        "carepulse_gateway_ble_rejected_total",
        "carepulse_indicator_window_end_timestamp_seconds",
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package 'prometheus')")
def test_every_dashboard_query_is_valid_promql(tmp_path: Path):
    """promtool parses each expression (as a recording rule) without a server."""
    rules = [{"record": f"carepulse:dashboard_check:{i}", "expr": build.executable(expr)}
             for i, (_, expr) in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_executable_substitutes_macros_and_variables():
    assert build.executable('rate(x_total{location_id=~"$location"}[$__rate_interval])') == \
        'rate(x_total{location_id=~".+"}[1m])'
    assert build.executable("label_values(carepulse_indicator_status, location_id)") == \
        "group by (location_id) (carepulse_indicator_status)"


# --- push ----------------------------------------------------------------------------------------------------

def test_push_payloads_overwrite_into_the_carepulse_folder():
    payloads = push.payloads(folder_uid="carepulse")
    assert [p["dashboard"]["uid"] for p in payloads] == ["carepulse-care-quality", "carepulse-oncall",
                                                        "carepulse-pipeline"]
    for payload in payloads:
        assert payload["overwrite"] is True
        assert payload["folderUid"] == "carepulse"
        assert payload["dashboard"]["id"] is None  # matched by uid, not by a server-side id
        assert "carepulse dashboards push" in payload["message"]


class _FakeGrafana:
    """Records calls where grafana_client.GrafanaApi would make HTTP requests."""

    def __init__(self, folders: list[dict] | None = None):
        self.calls: list[tuple[str, object]] = []
        self._folders = folders or []
        outer = self

        class Folder:
            def get_all_folders(self):
                outer.calls.append(("get_all_folders", None))
                return outer._folders

            def create_folder(self, title, uid=None):
                outer.calls.append(("create_folder", (title, uid)))
                return {"uid": uid, "title": title}

        class DashboardApi:
            def update_dashboard(self, payload):
                outer.calls.append(("update_dashboard", payload["dashboard"]["uid"]))
                return {"status": "success", "uid": payload["dashboard"]["uid"], "url": "/d/x"}

        self.folder = Folder()
        self.dashboard = DashboardApi()


def test_push_creates_the_folder_once_and_uploads_every_dashboard():
    grafana = _FakeGrafana()
    results = push.push_dashboards(grafana)
    assert grafana.calls[:2] == [("get_all_folders", None), ("create_folder", ("carepulse", "carepulse"))]
    assert [c for c in grafana.calls if c[0] == "update_dashboard"] == [
        ("update_dashboard", uid) for uid in ("carepulse-care-quality", "carepulse-oncall", "carepulse-pipeline")]
    assert [r["uid"] for r in results] == ["carepulse-care-quality", "carepulse-oncall", "carepulse-pipeline"]

    existing = _FakeGrafana(folders=[{"uid": "carepulse", "title": "carepulse"}])
    push.push_dashboards(existing)
    assert not [c for c in existing.calls if c[0] == "create_folder"]


def test_client_is_built_from_url_and_token():
    api = push.client("https://grafana.example:3000/grafana", "glsa_secret")
    assert api.client.url == "https://grafana.example:3000/grafana/api"
    assert push.client("http://localhost:3000", "t").client.url == "http://localhost:3000/api"
