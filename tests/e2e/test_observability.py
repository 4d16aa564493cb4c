"""The pipeline watched by a real Prometheus and Alertmanager (Debian packages), as ops and on-call see it
(issue: observability). A worker, the feed and a simulated gateway run against the real broker with their
/metrics endpoints on; Prometheus scrapes them with the committed alert rules, and Alertmanager runs the
committed routing with its webhooks pointed at a receiver in this test.

- Every dashboard query and every alert expression is valid PromQL to this Prometheus, and every metric
  they read is being exported.
- A deteriorating resident's red escalation pages on-call: the webhook receives the clinical alert.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from carepulse import events, topics
from dashboards import build
from tests.factories import RED_VITALS, observation_set, unique_resident
from tests.kafka_helpers import CarepulseProcess, WorkerProcess, free_port, produce
from tests.observability.promql import metric_names

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
if PROMETHEUS is None or ALERTMANAGER is None:
    pytest.skip("needs Debian's prometheus and prometheus-alertmanager (.ci/run installs them)",
                allow_module_level=True)


class WebhookReceiver:
    """Collects the JSON bodies Alertmanager posts, on a free port."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_prometheus_reads_every_query_and_on_call_is_paged_for_a_red_score(broker, tmp_path):
    ports = {role: free_port() for role in ("worker", "feed", "gateway", "prometheus", "alertmanager", "api")}
    oncall, team = WebhookReceiver(), WebhookReceiver()
    processes: list = []
    started: list[subprocess.Popen] = []
    try:
        worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", worker_id=f"e2e-obs-{uuid.uuid4().hex[:8]}",
                               extra_env={"CAREPULSE_WORKER_METRICS_PORT": str(ports["worker"])}).start()
        processes.append(worker)
        processes.append(CarepulseProcess(
            ["feed", "serve"], broker.bootstrap, tmp_path / "feed.log",
            env={"CAREPULSE_FEED_METRICS_PORT": str(ports["feed"]), "CAREPULSE_FEED_PORT": str(ports["api"]),
                 "CAREPULSE_DATA_DIR": str(tmp_path / "feed"),
                 "CAREPULSE_FEED_CONSUMER_GROUP": f"feed-obs-{uuid.uuid4().hex[:8]}"}).start())
        processes.append(CarepulseProcess(
            ["gateway", "--simulate"], broker.bootstrap, tmp_path / "gateway.log",
            env={"CAREPULSE_GATEWAY_METRICS_PORT": str(ports["gateway"]), "CAREPULSE_GATEWAY_PORT": str(free_port()),
                 "CAREPULSE_DATA_DIR": str(tmp_path / "gateway"), "CAREPULSE_BLE_TRANSPORT": "virtual"}).start())

        alertmanager_config = tmp_path / "alertmanager.yml"
        subprocess.run(["sh", str(DEPLOY / "alertmanager" / "render.sh"), str(DEPLOY / "alertmanager" / "alertmanager.yml"),
                        str(alertmanager_config)], check=True,
                       env={"ALERTMANAGER_ONCALL_WEBHOOK_URL": oncall.url, "ALERTMANAGER_TEAM_WEBHOOK_URL": team.url})
        started.append(start([ALERTMANAGER, f"--config.file={alertmanager_config}",
                              f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                              "--cluster.listen-address="], tmp_path / "alertmanager.log"))
        prometheus_config = tmp_path / "prometheus.yml"
        prometheus_config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]},
            "scrape_configs": [{"job_name": f"carepulse-{role}", "static_configs": [{"targets": [f"127.0.0.1:{ports[role]}"]}]}
                               for role in ("worker", "feed", "gateway")],
        }))
        started.append(start([PROMETHEUS, f"--config.file={prometheus_config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                              f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], tmp_path / "prometheus.log"))
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"

        def query(expr: str) -> dict:
            return httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()

        # Work for every part of the pipeline: a deteriorating resident (red), a care event, a dead letter.
        resident = unique_resident()
        location = f"loc-obs-{uuid.uuid4().hex[:8]}"
        red = observation_set(resident, location_id=location, occurred_at=events.utc_now(), **RED_VITALS)
        produce(broker.bootstrap, topics.OBSERVATION_SETS.name, [(resident.encode(), events.to_json(red))])
        produce(broker.bootstrap, topics.CARE_EVENTS.name, [(location.encode(), b'{"not": "an event"}')])
        # Live capacity of a care home and a homecare agency, as the worker publishes it (issue 11).
        for setting, figures in (("care_home", dict(max_beds=20, occupied_beds=18, reserved_beds=1, vacant_beds=1,
                                                    over_max_beds=0)),
                                 ("homecare", dict(people_receiving_care=12, planned_hours_7d=80.0,
                                                   commissioned_hours_7d=100.0, commissioned_hours_not_planned=20.0))):
            capacity = events.LocationCapacity(
                event_id=uuid.uuid4(), occurred_at=events.utc_now(), received_at=events.utc_now(),
                source=events.Source(gateway_id="worker-obs"), location_id=f"{location}-{setting.replace('_', '-')}",
                setting=setting, profile_event_id=uuid.uuid4(), **figures)
            produce(broker.bootstrap, topics.CAPACITY.name, [(capacity.location_id.encode(), events.to_json(capacity))])

        def answers_ok(url: str) -> bool:
            try:  # refused while the process starts
                return httpx.get(url, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        # Prometheus answers its API with 503 "Service Unavailable" (plain text) until its TSDB is open;
        # /-/ready says when it is (a CI run read the API too early and failed on the plain-text body).
        wait_for(lambda: answers_ok(f"{prometheus}/-/ready"), 120, "Prometheus to be ready")

        def targets_up() -> bool:
            active = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            return len(active) == 3 and all(t["health"] == "up" for t in active)

        wait_for(targets_up, 120, "Prometheus to scrape the worker, the feed and the gateway")

        # A reader of the feed's API (its requests are on the pipeline dashboard).
        assert httpx.get(f"http://127.0.0.1:{ports['api']}/health", timeout=10).status_code == 200

        # On-call is paged for the red escalation, by the clinical route.
        def paged() -> list[dict]:
            return [a for body in oncall.bodies for a in body.get("alerts", [])
                    if a["labels"].get("alertname") == "CarePulseRedEscalationUnacknowledged"
                    and a["labels"].get("location_id") == location]
        alert = wait_for(paged, 150, "the on-call webhook to receive the red escalation alert")[0]
        assert (alert["status"], alert["labels"]["severity"], alert["labels"]["category"]) == ("firing", "critical", "clinical")
        assert not [a for body in team.bodies for a in body.get("alerts", [])
                    if a["labels"].get("alertname") == "CarePulseRedEscalationUnacknowledged"]

        # Every dashboard query and alert expression is valid, and every metric each reads is exported.
        expressions = [(f"{path.stem}: {title}", build.executable(expr))
                       for path in sorted((ROOT / "dashboards" / "generated").glob("*.json"))
                       for title, expr in build.queries(json.loads(path.read_text()))]
        rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
        expressions += [(f"alert {rule['alert']}", rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
        assert len(expressions) > 20
        invalid = [(what, expr, answer.get("error")) for what, expr in expressions
                   if (answer := query(expr))["status"] != "success"]
        assert not invalid, invalid
        needed = sorted({name for _, expr in expressions for name in metric_names(expr)} - {"ALERTS", "up"})
        missing = [name for name in needed if not query(name)["data"]["result"]]
        assert not missing, f"read by dashboards or alerts but not exported: {missing}"
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(timeout=10)
        for process in processes:
            process.stop()
        oncall.close()
        team.close()
