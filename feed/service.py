"""Running the feed: uvicorn serving `create_feed_app` until SIGINT/SIGTERM."""

from __future__ import annotations

import logging

import uvicorn

from carepulse.settings import Settings
from feed.api import create_feed_app


def run_feed(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_feed_app(settings)
    uvicorn.run(app, host=settings.feed_host, port=settings.feed_port, log_level=settings.log_level.lower(),
                # Live-stream clients are told to reconnect rather than holding a shutdown open.
                timeout_graceful_shutdown=5, proxy_headers=False, server_header=False)
