"""Provision carepulse's dashboards into a running Grafana through its HTTP API (grafana-client).

The lead's CLI exposes this as ``carepulse dashboards push --url URL --token TOKEN``; the token is a Grafana
service-account token with the Editor role (or one allowed to write dashboards and folders). Dashboards go
into the folder ``carepulse`` (created if missing) and overwrite earlier versions with the same uid, so a push
is idempotent. Their panels expect a Prometheus datasource with uid ``carepulse-prometheus`` (as
deploy/grafana/provisioning/datasources/prometheus.yaml provisions); in a Grafana that was not provisioned
from deploy/, create one with that uid first.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dashboards import build

FOLDER_UID = "carepulse"
FOLDER_TITLE = "carepulse"


def payloads(folder_uid: str = FOLDER_UID) -> list[dict[str, Any]]:
    """The body of ``POST /api/dashboards/db`` for each dashboard, ordered by uid."""
    bodies = []
    for name, content in sorted(build.render_all().items()):
        dashboard = json.loads(content)
        dashboard["id"] = None  # matched by uid; a server-side id from another Grafana must not be sent
        bodies.append({
            "dashboard": dashboard,
            "folderUid": folder_uid,
            "overwrite": True,
            "message": f"carepulse dashboards push ({name})",
        })
    return sorted(bodies, key=lambda body: body["dashboard"]["uid"])


def client(url: str, token: str, timeout_s: float = 10.0):
    """A `grafana_client.GrafanaApi` for `url` (e.g. ``https://grafana.example/`` or one under a sub-path)
    authenticated with a service-account `token`."""
    from grafana_client import GrafanaApi

    parts = urlsplit(url)
    # grafana-client appends "api" to the path as given: a sub-path needs its trailing slash.
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return GrafanaApi.from_url(urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")),
                               credential=token, timeout=timeout_s)


def ensure_folder(api, uid: str = FOLDER_UID, title: str = FOLDER_TITLE) -> str:
    if not any(folder.get("uid") == uid for folder in api.folder.get_all_folders()):
        api.folder.create_folder(title, uid=uid)
    return uid


def push_dashboards(api, folder_uid: str = FOLDER_UID) -> list[dict[str, Any]]:
    """Create the folder if needed and upload every dashboard; returns Grafana's answers."""
    ensure_folder(api, folder_uid)
    return [api.dashboard.update_dashboard(body) for body in payloads(folder_uid)]


def push(url: str, token: str) -> list[dict[str, Any]]:
    """What ``carepulse dashboards push --url URL --token TOKEN`` does."""
    return push_dashboards(client(url, token))
