"""deploy/: the compose stack and Kubernetes manifests parse and agree with the code (settings, CLI, ports,
images, Prometheus targets, Grafana provisioning). Nothing is started: no Docker or cluster is assumed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from carepulse.settings import Settings
from dashboards import build

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
K8S = [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
KUSTOMIZATION = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())

#: The process role of each carepulse service, by its command; its metrics port setting.
METRICS_PORT_SETTING = {"worker": "worker_metrics_port", "gateway": "gateway_metrics_port",
                        "feed": "feed_metrics_port"}
JOB_OF_ROLE = {"worker": "carepulse-worker", "gateway": "carepulse-gateway", "feed": "carepulse-feed"}
CAREPULSE_IMAGE = "carepulse:0.1.0"


def _default(name: str):
    return Settings.model_fields[name].default


def _setting_value(env: dict[str, str], name: str):
    return env.get(f"CAREPULSE_{name.upper()}", _default(name))


def _carepulse_services() -> dict[str, dict]:
    return {name: s for name, s in SERVICES.items() if s.get("image") == CAREPULSE_IMAGE}


def _role(command: list[str]) -> str | None:
    return {"worker": "worker", "gateway": "gateway", "feed": "feed"}.get(command[0]) \
        if command[0] != "feed" or command[1:] == ["serve"] else None


def _k8s(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in K8S if doc["kind"] == kind}


def _containers(doc: dict) -> list[dict]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def _k8s_env(container: dict) -> dict[str, str]:
    configmaps = _k8s("ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<from secret>")
    return env


# --- settings ------------------------------------------------------------------------------------------------

def _all_carepulse_env_names() -> set[str]:
    names = {key for s in SERVICES.values() for key in (s.get("environment") or {}) if key.startswith("CAREPULSE_")}
    for doc in K8S:
        if doc["kind"] == "ConfigMap":
            names |= {k for k in doc["data"] if k.startswith("CAREPULSE_")}
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            names |= {e["name"] for c in _containers(doc) for e in c.get("env", []) if e["name"].startswith("CAREPULSE_")}
    names |= set(re.findall(r"CAREPULSE_[A-Z0-9_]+", (DEPLOY / "k8s" / "config.yaml").read_text()))
    return names - {"CAREPULSE_WORKERS"}  # compose's own replica count, not a setting


def test_every_carepulse_variable_is_a_setting():
    known = set(Settings.model_fields)
    unknown = sorted(n for n in _all_carepulse_env_names() if n.removeprefix("CAREPULSE_").lower() not in known)
    assert not unknown, f"not fields of carepulse.settings.Settings: {unknown}"


def test_compose_values_are_valid_settings():
    """Each carepulse service's environment builds a Settings (types and ranges checked by pydantic)."""
    for name, service in _carepulse_services().items():
        env = {k.removeprefix("CAREPULSE_").lower(): v for k, v in (service.get("environment") or {}).items()
               if k.startswith("CAREPULSE_") and k.removeprefix("CAREPULSE_").lower() in Settings.model_fields}
        env = {k: v.replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "secret") for k, v in env.items()}
        settings = Settings(**env)
        assert settings.bootstrap == "kafka-1:9092,kafka-2:9092,kafka-3:9092", name
        assert not settings.uses_embedded_broker


# --- commands and images -------------------------------------------------------------------------------------

def _cli_command_exists(args: list[str]) -> bool:
    import typer

    from carepulse.cli import cli

    command = typer.main.get_command(cli)
    # typer vendors its own click: use the Context class of the command's own module.
    ctx = type(command).__mro__[0].context_class(command)
    for arg in args:
        if arg.startswith("-"):
            break
        if not hasattr(command, "get_command"):
            return False
        sub = command.get_command(ctx, arg)
        if sub is None:
            return False
        command = sub
    return True


def test_every_carepulse_command_is_a_cli_command():
    commands = [s["command"] for s in _carepulse_services().values()]
    commands += [c["args"] for doc in K8S if doc["kind"] in ("Deployment", "StatefulSet", "Job")
                 for c in _containers(doc) if c["image"] == CAREPULSE_IMAGE]
    assert ["worker"] in commands and ["feed", "serve"] in commands and ["gateway"] in commands
    for command in commands:
        assert _cli_command_exists(command), f"`carepulse {' '.join(command)}` is not a command"


def test_images_are_the_same_in_compose_and_kubernetes():
    compose_images = {s["image"] for s in SERVICES.values()}
    k8s_images = {c["image"] for doc in K8S if doc["kind"] in ("Deployment", "StatefulSet", "Job")
                  for c in _containers(doc)}
    assert compose_images == k8s_images
    assert all(":" in image and not image.endswith(":latest") for image in compose_images), "pin image tags"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["carepulse"]' in dockerfile
    for service in _carepulse_services().values():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    for package in ("carepulse", "indicators", "streams", "gateway", "feed"):
        assert f"COPY {package} ./{package}" in dockerfile


# --- Kafka ---------------------------------------------------------------------------------------------------

def test_kafka_is_three_kraft_brokers_with_replication_factor_3():
    brokers = {name: s for name, s in SERVICES.items() if name.startswith("kafka-")}
    assert len(brokers) == 3
    voters = set()
    for name, service in brokers.items():
        env = service["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        assert f"{env['KAFKA_NODE_ID']}@{name}:9093" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert len(voters) == 1
    bootstrap = SERVICES["worker"]["environment"]["CAREPULSE_KAFKA_BOOTSTRAP"].split(",")
    assert sorted(bootstrap) == sorted(f"{name}:9092" for name in brokers)
    kafka = _k8s("StatefulSet")["kafka"]
    assert kafka["spec"]["replicas"] == 3
    k8s_bootstrap = _k8s("ConfigMap")["carepulse-env"]["data"]["CAREPULSE_KAFKA_BOOTSTRAP"].split(",")
    assert k8s_bootstrap == [f"kafka-{i}.kafka:9092" for i in range(3)]


# --- ports and Prometheus targets ----------------------------------------------------------------------------

def _scrape_targets() -> dict[str, list[str]]:
    targets: dict[str, list[str]] = {}
    for job in PROMETHEUS["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets.setdefault(job["job_name"], []).extend(static["targets"])
        for sd in job.get("dns_sd_configs", []):
            targets.setdefault(job["job_name"], []).extend(f"{n}:{sd['port']}" for n in sd["names"])
    return targets


def test_prometheus_scrapes_each_role_on_its_metrics_port_in_compose():
    targets = _scrape_targets()
    for name, service in _carepulse_services().items():
        role = _role(service["command"])
        if role is None:
            continue
        port = int(_setting_value(service["environment"], METRICS_PORT_SETTING[role]))
        assert targets[JOB_OF_ROLE[role]] == [f"{name}:{port}"], name
        assert str(port) in [str(p) for p in service.get("expose", [])], f"{name} does not expose {port}"
        assert service["environment"]["CAREPULSE_METRICS_HOST"] == "0.0.0.0"
    assert set(JOB_OF_ROLE.values()) <= set(targets)


def test_prometheus_scrapes_each_role_on_its_metrics_port_in_kubernetes():
    targets = _scrape_targets()
    services = _k8s("Service")
    workloads = {**_k8s("Deployment"), **_k8s("StatefulSet")}
    for role, job in JOB_OF_ROLE.items():
        (target,) = targets[job]
        host, port = target.split(":")
        service = services[host]
        assert int(port) in [p["port"] for p in service["spec"]["ports"]], f"Service {host} lacks {port}"
        workload = workloads[host]
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert int(port) in [p["containerPort"] for p in container["ports"]]
        assert int(_setting_value(_k8s_env(container), METRICS_PORT_SETTING[role])) == int(port)
    assert services["worker"]["spec"]["clusterIP"] == "None", "dns_sd needs a headless worker Service"


def test_api_ports_match_settings():
    feed_env, gateway_env = SERVICES["feed"]["environment"], SERVICES["gateway"]["environment"]
    assert SERVICES["feed"]["ports"] == [f"{_setting_value(feed_env, 'feed_port')}:{_setting_value(feed_env, 'feed_port')}"]
    assert SERVICES["gateway"]["ports"] == [
        f"{_setting_value(gateway_env, 'gateway_port')}:{_setting_value(gateway_env, 'gateway_port')}"]
    assert feed_env["CAREPULSE_FEED_HOST"] == gateway_env["CAREPULSE_GATEWAY_HOST"] == "0.0.0.0"
    env = _k8s("ConfigMap")["carepulse-env"]["data"]
    feed_ports = {p["port"] for p in _k8s("Service")["feed"]["spec"]["ports"]}
    assert int(env["CAREPULSE_FEED_PORT"]) in feed_ports
    assert int(env["CAREPULSE_GATEWAY_PORT"]) in {p["port"] for p in _k8s("Service")["gateway"]["spec"]["ports"]}


def test_alertmanager_and_grafana_point_at_the_right_services():
    (am_target,) = PROMETHEUS["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am_target == "alertmanager:9093"
    assert "alertmanager" in SERVICES and "9093:9093" in SERVICES["alertmanager"]["ports"]
    assert 9093 in [p["port"] for p in _k8s("Service")["alertmanager"]["spec"]["ports"]]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["uid"] == build.DATASOURCE_UID and ds["url"] == "http://prometheus:9090"
    assert 9090 in [p["port"] for p in _k8s("Service")["prometheus"]["spec"]["ports"]]


# --- files the containers mount ------------------------------------------------------------------------------

def test_compose_mounts_point_at_committed_files():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source, _target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_grafana_provisions_the_committed_dashboards():
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/carepulse.yaml").read_text())
    (entry,) = provider["providers"]
    mounts = dict(v.split(":")[:2][::-1] for v in SERVICES["grafana"]["volumes"])
    source = mounts[entry["options"]["path"]]
    assert (DEPLOY / source).resolve() == build.GENERATED
    assert sorted(p.name for p in build.GENERATED.glob("*.json")) == sorted(build.render_all())
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (build.GENERATED / Path(home).name).exists()
    grafana = _k8s("Deployment")["grafana"]["spec"]["template"]["spec"]
    k8s_mounts = {m["mountPath"]: m["name"] for m in grafana["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v["configMap"]["name"] for v in grafana["volumes"]}
    assert volumes[k8s_mounts[entry["options"]["path"]]] == "carepulse-dashboards"


def test_kustomization_lists_every_manifest_and_existing_files():
    assert sorted(KUSTOMIZATION["resources"]) == sorted(f"k8s/{p.name}" for p in (DEPLOY / "k8s").glob("*.yaml"))
    for generator in KUSTOMIZATION["configMapGenerator"]:
        for file in generator["files"]:
            assert (DEPLOY / file).exists(), file
    generated = {g["name"] for g in KUSTOMIZATION["configMapGenerator"]}
    used = {v["configMap"]["name"] for doc in K8S if doc["kind"] in ("Deployment", "StatefulSet")
            for v in doc["spec"]["template"]["spec"].get("volumes", []) if "configMap" in v}
    assert used - generated == {"carepulse-dashboards"}  # created from dashboards/generated (README)


def test_every_workload_selector_matches_its_pod_labels():
    for doc in K8S:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            assert doc["spec"]["selector"]["matchLabels"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package 'prometheus')")
def test_promtool_check_config():
    result = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
