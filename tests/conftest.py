from __future__ import annotations

import pytest

from carepulse.broker import EmbeddedBroker, ensure_topics
from carepulse.settings import Settings
from tests.kafka_helpers import free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    """A real embedded Tansu broker process on a free loopback port, shared by the session's tests.

    Tests isolate themselves by using their own resident and location ids, not separate brokers.
    """
    settings = Settings(broker_port=free_port())
    embedded = EmbeddedBroker(settings, log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    embedded.start()
    ensure_topics(embedded.bootstrap, settings.topic_partitions)
    yield embedded
    embedded.stop()
