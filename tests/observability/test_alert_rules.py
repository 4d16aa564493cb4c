"""Alert rules and Alertmanager routing, checked by Prometheus's own tools (Debian packages `prometheus` and
`prometheus-alertmanager`): `promtool check rules`, `promtool test rules` (deploy/prometheus/alerts_test.yml),
`amtool check-config` and `amtool config routes test`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RENDER = ROOT / "deploy" / "alertmanager" / "render.sh"

promtool = shutil.which("promtool")
amtool = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool not installed (Debian package 'prometheus')")
needs_amtool = pytest.mark.skipif(amtool is None, reason="amtool not installed (Debian package 'prometheus-alertmanager')")

ONCALL_URL = "http://127.0.0.1:9/oncall?token=a&b=c"
TEAM_URL = "http://127.0.0.1:9/team"


def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=False, capture_output=True, text=True, timeout=60, env=env)


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@needs_promtool
def test_promtool_check_rules():
    result = _run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass():
    result = _run(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_and_routing_labels():
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    for rule in _rules():
        assert rule["alert"] in tested, f"{rule['alert']} is never shown firing in alerts_test.yml"
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["labels"]["category"] in {"clinical", "quality", "pipeline"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.fixture
def rendered_alertmanager(tmp_path: Path) -> Path:
    out = tmp_path / "alertmanager.yml"
    env = {**os.environ, "ALERTMANAGER_ONCALL_WEBHOOK_URL": ONCALL_URL, "ALERTMANAGER_TEAM_WEBHOOK_URL": TEAM_URL}
    result = _run("sh", RENDER, ALERTMANAGER, out, env=env)
    assert result.returncode == 0, result.stderr
    return out


def test_render_substitutes_the_webhook_urls_verbatim(rendered_alertmanager: Path):
    config = yaml.safe_load(rendered_alertmanager.read_text())
    urls = {r["name"]: r["webhook_configs"][0]["url"] for r in config["receivers"]}
    assert urls == {"oncall": ONCALL_URL, "team": TEAM_URL}
    assert "${" not in rendered_alertmanager.read_text().split("receivers:")[1]


def test_render_refuses_a_missing_url(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTMANAGER_")}
    result = _run("sh", RENDER, ALERTMANAGER, tmp_path / "out.yml", env=env)
    assert result.returncode != 0
    assert "ALERTMANAGER_ONCALL_WEBHOOK_URL" in result.stderr


@needs_amtool
def test_amtool_check_config(rendered_alertmanager: Path):
    result = _run(amtool, "check-config", rendered_alertmanager)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_amtool
def test_red_clinical_alerts_route_to_oncall_and_the_rest_to_the_team(rendered_alertmanager: Path):
    for rule in _rules():
        labels = [f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in rule["labels"].items()),
                  "location_id=loc-a"]
        result = _run(amtool, "config", "routes", "test", f"--config.file={rendered_alertmanager}", *labels)
        assert result.returncode == 0, result.stderr
        expected = "oncall" if rule["labels"] == {"severity": "critical", "category": "clinical"} else "team"
        assert result.stdout.strip() == expected, f"{rule['alert']} routed to {result.stdout.strip()}"
    assert {r["alert"] for r in _rules() if r["labels"]["category"] == "clinical"
            and r["labels"]["severity"] == "critical"} == {"CarePulseRedEscalationOverdue",
                                                           "CarePulseRedEscalationUnacknowledged"}
