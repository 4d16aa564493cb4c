from __future__ import annotations

import pytest
from hypothesis import settings

# Property tests and fuzzers run a few hundred examples in the default run; the dedicated fuzzing job
# uses `--hypothesis-profile=fuzz`.
settings.register_profile("carepulse", max_examples=300, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile("carepulse")

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
