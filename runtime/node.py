"""What a node type declares up front, and the base class every node derives from.

A node type is one class in one module under ``nodes/``. Before anything runs it declares:

- ``type_name`` and ``version`` (the id is ``type_name@vVERSION``; a recipe may pin a version),
- ``params_schema``: a JSON Schema (2020-12) object; defaults are applied, unknown keys rejected,
- ``inputs`` and ``outputs``: typed ports (:class:`InPort`, :class:`OutPort`),
- a docstring whose ``Example:`` section is a YAML snippet of the node in a recipe.

At run time the executor creates the node with its validated params and a :class:`NodeContext`,
then calls ``open()`` (every node, before anything flows), ``start()`` (the clock is at 0),
``process(port, envelope)`` for every input (or ``run()`` for a source that has no inputs),
``flush()`` at end of stream, and ``close()``.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from lineguard.runtime.envelope import Envelope

if TYPE_CHECKING:
    from lineguard.runtime.clock import Clock

QueuePolicy = Literal["block", "drop_oldest", "drop_newest"]
QUEUE_POLICIES: tuple[str, ...] = ("block", "drop_oldest", "drop_newest")
ANY_KIND = "any"


@dataclass(frozen=True)
class InPort:
    """An input port. ``kind`` is checked against the wired output's kind at compile time
    (``any`` accepts every kind). The queue in front of it holds ``queue`` envelopes and, when
    full, applies ``policy`` (block the producer, drop the oldest queued, drop the newest); a
    ``lossless`` port only blocks; its value says why every envelope must arrive, and the compiler
    quotes it when a recipe sets a dropping policy there."""

    kind: str
    required: bool = True
    multiple: bool = False  # may be wired to several outputs (merged in arrival order)
    queue: int = 8
    policy: QueuePolicy = "block"
    doc: str = ""
    # every envelope matters (e.g. one verdict per part, the only one): a recipe may not set a
    # policy that drops here. Empty: an ordinary port; otherwise what a dropped envelope would cost.
    lossless: str = ""


@dataclass(frozen=True)
class OutPort:
    """An output port. ``optional`` outputs (side information such as ground truth) raise no
    warning when nothing is wired to them."""

    kind: str
    doc: str = ""
    optional: bool = False


class NodeContext:
    """What a running node may use: its id, the clock, the line settings, a logger, and ``emit``."""

    def __init__(self, node_id: str, clock: "Clock", line: Mapping[str, Any], emitter: Any, logger: Any, inputs_newest_ns: Callable[[], int | None] | None = None, carry: dict[str, Any] | None = None) -> None:
        self.node_id = node_id
        self.clock = clock
        self.line = line
        self._emitter = emitter
        self.log = logger
        self._inputs_newest_ns = inputs_newest_ns
        # What a node keeps across its restarts (a ``restart:`` policy makes a new instance): the
        # same dict for every instance of this node in a run. For what must not start over (an id
        # sequence, verdicts not yet sent), not for working state, which a restart is meant to clear.
        self.carry: dict[str, Any] = carry if carry is not None else {}

    def inputs_newest_ns(self) -> int | None:
        """Capture time of the newest envelope the nodes feeding this one have handled (processed,
        or emitted by a source); None before the first. Upstream of a PLC output this says whether
        inspection is alive: a dead camera or a stuck detector leaves it behind the clock."""
        return self._inputs_newest_ns() if self._inputs_newest_ns is not None else None

    async def emit(self, port: str, envelope: Envelope) -> None:
        """Send ``envelope`` on output ``port`` to every wired input (may wait under ``block``)."""
        await self._emitter.emit(port, envelope)

    def is_wired(self, port: str) -> bool:
        """Whether anything reads output ``port`` (skip computing what nobody reads)."""
        return self._emitter.is_wired(port)

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count items a node itself discarded (e.g. a camera skipping frames it could not deliver)."""
        self._emitter.count_drop(reason, n)

    def count(self, event: str, n: int = 1) -> None:
        """Count something that happened in the node (a PLC reconnect, a missed deadline): shown in
        the run summary and in the ``lineguard_node_events_total`` metric."""
        self._emitter.count_event(event, n)


class Node:
    """Base class of every node type."""

    type_name: ClassVar[str]
    version: ClassVar[int] = 1
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "additionalProperties": False}
    inputs: ClassVar[Mapping[str, InPort]] = {}
    outputs: ClassVar[Mapping[str, OutPort]] = {}

    def __init__(self, ctx: NodeContext, params: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.params = params

    # -- declared contract ------------------------------------------------------------------
    @classmethod
    def type_id(cls) -> str:
        return f"{cls.type_name}@v{cls.version}"

    @classmethod
    def is_source(cls) -> bool:
        return not cls.inputs

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.split("\n\n", 1)[0].replace("\n", " ")

    @classmethod
    def example(cls) -> str:
        """The YAML snippet under ``Example:`` in the docstring."""
        doc = inspect.getdoc(cls) or ""
        _, sep, rest = doc.partition("Example:")
        return textwrap.dedent(rest).strip("\n") if sep else ""

    @classmethod
    def check_params(cls, params: Mapping[str, Any], line: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Checks a schema cannot express. Return (param, 'expected …, got …') pairs."""
        return []

    # -- life cycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Acquire resources (models, cameras, connections). Fail loud here, not later."""

    async def start(self) -> None:
        """The graph starts to flow (the clock is at 0): start background work such as a PLC
        heartbeat. Called after every node has opened (and again after a restart)."""

    async def run(self) -> None:
        """Sources only: produce envelopes with ``self.ctx.emit`` until the stream ends."""
        raise NotImplementedError(f"{self.type_id()} has no inputs, so it must implement run()")

    async def process(self, port: str, envelope: Envelope) -> None:
        """Handle one envelope that arrived on input ``port``."""
        raise NotImplementedError(f"{self.type_id()} has inputs, so it must implement process()")

    async def flush(self) -> None:
        """Every input has ended: emit whatever is still pending."""

    async def close(self) -> None:
        """Release resources. Called once, in reverse topological order, even after a failure."""
