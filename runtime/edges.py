"""Bounded edges between nodes, and the inbox a node reads all its inputs from.

Every edge holds at most ``capacity`` envelopes. When it is full, its policy decides:

- ``block``: the producer waits until there is room (backpressure reaches the source),
- ``drop_oldest``: the oldest queued envelope is discarded (a live view stays fresh),
- ``drop_newest``: the arriving envelope is discarded.

Every discarded envelope is counted on its edge.
"""

from __future__ import annotations

import asyncio
from collections import deque

from lineguard.runtime.envelope import Envelope


class Edge:
    __slots__ = ("name", "port", "capacity", "policy", "kind", "items", "closed", "dropped", "delivered", "high_water", "_space_waiters", "_inbox")

    def __init__(self, name: str, port: str, capacity: int, policy: str, kind: str, inbox: "Inbox") -> None:
        self.name = name
        self.port = port  # the consumer's input port
        self.capacity = capacity
        self.policy = policy
        self.kind = kind
        self.items: deque[Envelope] = deque()
        self.closed = False
        self.dropped = 0
        self.delivered = 0
        self.high_water = 0
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._inbox = inbox
        inbox.edges.append(self)

    @property
    def depth(self) -> int:
        return len(self.items)

    async def put(self, envelope: Envelope) -> None:
        items = self.items
        if self._inbox.abandoned:
            self.dropped += 1  # the consumer has stopped; nothing will read this
            return
        if len(items) >= self.capacity:
            if self.policy == "drop_newest":
                self.dropped += 1
                return
            if self.policy == "drop_oldest":
                items.popleft()
                self.dropped += 1
            else:
                loop = asyncio.get_running_loop()
                while len(items) >= self.capacity and not self._inbox.abandoned:
                    waiter = loop.create_future()
                    self._space_waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if not waiter.done():
                            waiter.cancel()
                if self._inbox.abandoned:
                    self.dropped += 1
                    return
        items.append(envelope)
        self.delivered += 1
        if len(items) > self.high_water:
            self.high_water = len(items)
        self._inbox.wake()

    def take(self) -> Envelope:
        envelope = self.items.popleft()
        self._release_one()
        return envelope

    def _release_one(self) -> None:
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def release_all(self) -> None:
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """The producer has ended: the consumer reads what is queued, then sees end of stream."""
        self.closed = True
        self._inbox.wake()


class Inbox:
    """All input edges of one node, read fairly (round robin) in one place."""

    __slots__ = ("edges", "abandoned", "_waiter", "_next")

    def __init__(self) -> None:
        self.edges: list[Edge] = []
        self.abandoned = False
        self._waiter: asyncio.Future[None] | None = None
        self._next = 0

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> tuple[str, Envelope] | None:
        """The next envelope and its input port, or None once every input has ended and drained."""
        edges = self.edges
        n = len(edges)
        while True:
            for k in range(n):
                edge = edges[(self._next + k) % n]
                if edge.items:
                    self._next = (self._next + k + 1) % n
                    return edge.port, edge.take()
            if all(edge.closed for edge in edges):
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def abandon(self) -> None:
        """The consumer has stopped for good: unblock producers; further puts are counted as drops."""
        self.abandoned = True
        for edge in self.edges:
            edge.dropped += len(edge.items)
            edge.items.clear()
            edge.release_all()
