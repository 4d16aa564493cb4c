"""Running the feed: uvicorn serving `create_feed_app` until SIGINT/SIGTERM, and the feed's Prometheus
endpoint (`carepulse.metrics.FEED`) on ``metrics_host:feed_metrics_port`` (0: none). The endpoint is optional:
if it cannot listen, that is logged and the feed serves on without it."""

from __future__ import annotations

import logging

import uvicorn

from carepulse import metrics as metrics_catalog
from carepulse.metrics import FEED, FeedMetrics
from carepulse.settings import Settings
from feed.api import create_feed_app

log = logging.getLogger(__name__)


def run_feed(settings: Settings, *, metrics: FeedMetrics = FEED) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_feed_app(settings, metrics=metrics)
    metrics_server = metrics_catalog.serve_metrics_or_log(settings.feed_metrics_port, metrics.registry,
                                                          settings.metrics_host, role="feed")
    try:
        uvicorn.run(app, host=settings.feed_host, port=settings.feed_port, log_level=settings.log_level.lower(),
                    # Live-stream clients are told to reconnect rather than holding a shutdown open.
                    timeout_graceful_shutdown=5, proxy_headers=False, server_header=False)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
