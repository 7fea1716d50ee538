"""Node types that exist only to exercise the runtime: counting sources, slow or failing
pass-throughs, a fan-in merge and a collecting sink. Registered in :func:`test_registry`."""

from __future__ import annotations

import tracemalloc
from collections import defaultdict

import numpy as np

from lineguard.runtime.compiler import CompiledGraph, compile_document
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.loader import load_text
from lineguard.runtime.node import InPort, Node, OutPort
from lineguard.runtime.registry import Registry, default_registry

COLLECTED: dict[str, list] = defaultdict(list)
EVENTS: list[str] = []  # open/close order, "open:ID" / "close:ID"


class Counter(Node):
    """Emits ``count`` envelopes (payload = index) every ``period_s`` on the clock.

    Example:
        src: {type: test.counter, params: {count: 10}}
    """

    type_name = "test.counter"
    outputs = {"out": OutPort("number")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "count": {"type": "integer", "minimum": 0, "default": 10},
            "period_s": {"type": "number", "minimum": 0, "default": 0.01},
            "payload_bytes": {"type": "integer", "minimum": 0, "default": 0},
            "fail_at": {"type": "integer", "default": -1},
        },
    }

    async def open(self):
        EVENTS.append(f"open:{self.ctx.node_id}")

    async def run(self):
        clock = self.ctx.clock
        period_ns = int(self.params["period_s"] * 1e9)
        i = 0
        while self.params["count"] == 0 or i < self.params["count"]:
            await clock.sleep_until_ns(i * period_ns)
            if i == self.params["fail_at"]:
                raise RuntimeError(f"source broke at {i}")
            payload = np.full(self.params["payload_bytes"], i % 251, np.uint8) if self.params["payload_bytes"] else i
            await self.ctx.emit("out", Envelope(i, clock.now_ns(), payload))
            i += 1

    async def close(self):
        EVENTS.append(f"close:{self.ctx.node_id}")


class Slow(Node):
    """Passes envelopes on after ``delay_s`` of (clock) work; raises on frames in ``fail_on``."""

    type_name = "test.slow"
    inputs = {"in": InPort("number", queue=4, policy="block")}
    outputs = {"out": OutPort("number")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "delay_s": {"type": "number", "minimum": 0, "default": 0},
            "fail_on": {"type": "array", "items": {"type": "integer"}, "default": []},
            "fail_open": {"type": "boolean", "default": False},
            "add": {"type": "integer", "default": 0},
        },
    }

    async def open(self):
        EVENTS.append(f"open:{self.ctx.node_id}")
        if self.params["fail_open"]:
            raise FileNotFoundError("model.xml not found")

    async def process(self, port, envelope):
        if envelope.frame_id in self.params["fail_on"]:
            raise ValueError(f"cannot handle frame {envelope.frame_id}")
        if self.params["delay_s"]:
            await self.ctx.clock.sleep(self.params["delay_s"])
        payload = envelope.payload + self.params["add"] if isinstance(envelope.payload, int) else envelope.payload
        await self.ctx.emit("out", envelope.derive(payload))

    async def close(self):
        EVENTS.append(f"close:{self.ctx.node_id}")


class Merge(Node):
    """Fan-in: forwards what arrives on ``a`` or ``b`` as (port, payload)."""

    type_name = "test.merge"
    inputs = {"a": InPort("number"), "b": InPort("number")}
    outputs = {"out": OutPort("pair")}

    async def process(self, port, envelope):
        await self.ctx.emit("out", envelope.derive((port, envelope.payload)))


class Collect(Node):
    """Records (frame_id, t_capture_ns, payload, clock now) into COLLECTED[key]; emits a count at flush."""

    type_name = "test.collect"
    inputs = {"in": InPort("any", multiple=True, queue=8)}
    outputs = {"count": OutPort("number")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string", "default": "default"},
            "delay_s": {"type": "number", "default": 0},
            "fail_flush": {"type": "boolean", "default": False},
        },
    }

    async def open(self):
        EVENTS.append(f"open:{self.ctx.node_id}")

    async def process(self, port, envelope):
        if self.params["delay_s"]:
            await self.ctx.clock.sleep(self.params["delay_s"])
        payload = envelope.payload
        if isinstance(payload, np.ndarray):
            payload = ("array", payload.shape, int(payload.flat[0]) if payload.size else None)
        COLLECTED[self.params["key"]].append((envelope.frame_id, envelope.t_capture_ns, payload, self.ctx.clock.now_ns()))

    async def flush(self):
        if self.params["fail_flush"]:
            raise OSError("could not write the last batch")
        COLLECTED[self.params["key"] + ":flushed"].append(len(COLLECTED[self.params["key"]]))

    async def close(self):
        EVENTS.append(f"close:{self.ctx.node_id}")


class Memory(Node):
    """Records the traced memory (tracemalloc) each time an envelope arrives."""

    type_name = "test.memory"
    inputs = {"in": InPort("number", queue=4)}
    params_schema = {"type": "object", "additionalProperties": False, "properties": {"delay_s": {"type": "number", "default": 0}}}

    async def process(self, port, envelope):
        await self.ctx.clock.sleep(self.params["delay_s"])
        COLLECTED["memory"].append((envelope.t_capture_ns, tracemalloc.get_traced_memory()[0]))


class Letters(Node):
    """A source of another kind, for port-kind mismatches."""

    type_name = "test.letters"
    outputs = {"out": OutPort("letter"), "spare": OutPort("letter")}

    async def run(self):
        await self.ctx.emit("out", Envelope(0, 0, "a"))


TEST_NODES = [Counter, Slow, Merge, Collect, Memory, Letters]


def test_registry() -> Registry:
    registry = default_registry(include_entry_points=False)
    for cls in TEST_NODES:
        registry.register(cls)
    return registry


test_registry.__test__ = False  # not a pytest test


def compile_text(text: str, file: str = "recipe.yaml") -> CompiledGraph:
    return compile_document(load_text(text, file), test_registry())


def reset() -> None:
    COLLECTED.clear()
    EVENTS.clear()
