"""Schemathesis against the published OpenAPI document, in-process (ASGI), with a provider key on a seeded
SQLite database: no server errors and every response as documented."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from carepulse.settings import Settings
from feed import db
from feed.api import create_feed_app
from tests.feed.conftest import NOW, key
from tests.feed.test_api import seed


_APP = None


def _schema():
    import tempfile
    from pathlib import Path

    global _APP
    engine = db.make_engine(f"sqlite:///{Path(tempfile.mkdtemp(prefix='feed-openapi-')) / 'feed.sqlite3'}")
    db.migrate(engine)
    seed(engine)
    app = create_feed_app(Settings(feed_consume=False), engine=engine, now=lambda: NOW)
    _APP = (app, key(engine, "provider:prov-a"))
    # The live stream never ends, so it is exercised by test_live instead.
    return schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/v1/stream")


schema = _schema()
STATUSES: list[int] = []


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case):
    _, headers = _APP
    # A generated Authorization header is replaced by a real key; one the negative case left out stays out.
    if case.headers and "Authorization" in case.headers:
        case.headers["Authorization"] = headers["Authorization"]
    response = case.call_and_validate()
    STATUSES.append(response.status_code)


def test_the_fuzzing_reached_the_data_with_a_valid_key():
    """Guards the test above against passing on 401s alone (run after it, in file order)."""
    assert STATUSES.count(200) >= 12 and 401 in STATUSES
