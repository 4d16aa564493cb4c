"""The live stream's fan-out: what the consumer stored is offered to every connected SSE client.

Each subscriber has a bounded queue; a client too slow to keep up is disconnected (it reconnects and
re-reads the current state from the API) rather than slowing the consumer or growing memory.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any, Literal

#: Put on a subscriber's queue when it fell behind: the stream ends.
OVERFLOW = object()


@dataclass(frozen=True)
class LiveEvent:
    kind: Literal["indicator", "capacity", "red_alert"]
    location_id: str
    payload: dict[str, Any]


class LiveHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue] = set()
        self._sequence = itertools.count(1)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, live_events: list[LiveEvent]) -> None:
        for event in live_events:
            item = (next(self._sequence), event)
            for queue in list(self._subscribers):
                if queue.qsize() >= self.queue_size - 1:
                    self._subscribers.discard(queue)
                    queue.put_nowait(OVERFLOW)
                else:
                    queue.put_nowait(item)
