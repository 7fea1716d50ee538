"""Runs a compiled graph on asyncio.

- Every node is opened before anything flows (a broken model fails the start, not frame 1000).
- One task per node. Sources run ``run()``; the others read their inbox and call ``process()``.
- End of stream: a source returning closes its outputs; a node whose inputs have all ended calls
  ``flush()`` and closes its outputs. When every node has finished, nodes are closed in reverse
  topological order.
- ``stop()`` (SIGINT/SIGTERM in the CLI) ends the sources and lets the rest drain the same way.
- A node that raises stops the graph with :class:`NodeFailure` naming the node and the frame,
  unless its recipe gives it a ``restart`` policy with restarts left.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lineguard.runtime.clock import Clock, SimEventLoop
from lineguard.runtime.compiler import CompiledGraph, CompiledNode
from lineguard.runtime.edges import Edge, Inbox
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.errors import NodeFailure
from lineguard.runtime.metrics import GraphMetrics
from lineguard.runtime.node import Node, NodeContext

log = logging.getLogger("lineguard.executor")

_TIMING_WINDOW = 4096  # processing times kept per node for the run summary's percentiles


class _EndOfStream(Exception):
    """Raised inside a source's ``emit`` once it may not emit any more (max frames, stop)."""


class _Emitter:
    __slots__ = ("rt", "outputs", "max_frames", "executor", "taps")

    def __init__(self, rt: "NodeRuntime", outputs: Mapping[str, list[Edge]], max_frames: int | None, executor: "Executor") -> None:
        self.rt = rt
        self.outputs = outputs
        self.max_frames = max_frames
        self.executor = executor
        self.taps = {port: fn for key, fn in executor.taps.items() for node, _, port in [key.partition(".")] if node == rt.id}

    async def emit(self, port: str, envelope: Envelope) -> None:
        rt = self.rt
        try:
            edges = self.outputs[port]
        except KeyError:
            raise ValueError(f"node '{rt.id}' ({rt.type_id}) emitted on '{port}', which is not one of its outputs {sorted(self.outputs)}") from None
        if rt.is_source and (self.executor.stopping or (self.max_frames is not None and rt.emitted_frames >= self.max_frames)):
            raise _EndOfStream
        for edge in edges:
            await edge.put(envelope)
        rt.envelopes_out[port] += 1
        if self.taps:
            tap = self.taps.get(port)
            if tap is not None:
                tap(envelope)
        if rt.is_source:
            rt.emitted_frames += 1
            rt.handled(envelope.t_capture_ns)

    def is_wired(self, port: str) -> bool:
        return bool(self.outputs.get(port)) or port in self.taps

    def count_drop(self, reason: str, n: int = 1) -> None:
        self.rt.node_drops[reason] = self.rt.node_drops.get(reason, 0) + n

    def count_event(self, event: str, n: int = 1) -> None:
        self.rt.events[event] = self.rt.events.get(event, 0) + n


@dataclass
class NodeRuntime:
    """A node instance and what the executor knows about it."""

    id: str
    spec: CompiledNode
    inbox: Inbox
    node: Node | None = None
    envelopes_in: int = 0
    envelopes_out: dict[str, int] = field(default_factory=dict)
    emitted_frames: int = 0
    errors: int = 0
    restarts: int = 0
    node_drops: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    state: str = "created"  # created, open, running, draining, done, failed, closed
    process_ns: deque[int] = field(default_factory=lambda: deque(maxlen=_TIMING_WINDOW))
    process_count: int = 0
    process_total_ns: int = 0
    restart_times_ns: deque[int] = field(default_factory=deque)
    # capture time of the newest envelope the node has handled (processed, or emitted by a source)
    newest_t_ns: int | None = None
    carry: dict[str, Any] = field(default_factory=dict)  # what the node keeps across its restarts

    def handled(self, t_capture_ns: int) -> None:
        """An envelope captured at ``t_capture_ns`` was processed (or emitted, by a source)."""
        if self.newest_t_ns is None or t_capture_ns > self.newest_t_ns:
            self.newest_t_ns = t_capture_ns

    @property
    def type_id(self) -> str:
        return self.spec.type_id

    @property
    def is_source(self) -> bool:
        return self.spec.cls.is_source()


@dataclass
class RunReport:
    """What happened in one run, for the summary table and ``--json``."""

    recipe: str
    clock: str
    status: str  # completed, stopped, failed
    sim_duration_s: float
    wall_duration_s: float
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "clock": self.clock,
            "status": self.status,
            "clock_duration_s": round(self.sim_duration_s, 6),
            "wall_duration_s": round(self.wall_duration_s, 6),
            "nodes": self.nodes,
            "edges": self.edges,
            "error": self.error,
        }


class Executor:
    def __init__(
        self,
        graph: CompiledGraph,
        *,
        max_frames: int | None = None,
        metrics: GraphMetrics | None = None,
        drain_timeout_s: float = 30.0,
        node_factory: Callable[[CompiledNode, NodeContext], Node] | None = None,
        taps: Mapping[str, Callable[[Envelope], None]] | None = None,
        clock: Clock | None = None,
        on_flow_start: Sequence[Callable[[], Any]] = (),
    ) -> None:
        """``taps`` maps ``"node.port"`` to a function called with every envelope emitted there
        (after it was delivered): how scorers and monitors watch a graph without changing it.
        ``clock`` shares a clock with things outside the graph (a simulated PLC); it is restarted
        at 0 when data starts to flow, and then ``on_flow_start`` hooks run."""
        self.graph = graph
        self._given_clock = clock
        self._on_flow_start = list(on_flow_start)
        self.taps = dict(taps or {})
        for key in self.taps:
            node, _, port = key.partition(".")
            if node not in graph.nodes or port not in graph.nodes[node].cls.outputs:
                raise ValueError(f"tap '{key}': expected NODE.OUTPUT of this graph")
        self.max_frames = max_frames
        self.metrics = metrics or GraphMetrics()
        self.drain_timeout_s = drain_timeout_s
        self._node_factory = node_factory or (lambda spec, ctx: spec.cls(ctx, spec.params))
        self.runtimes: dict[str, NodeRuntime] = {nid: NodeRuntime(nid, spec, Inbox()) for nid, spec in graph.nodes.items()}
        self.edges: list[Edge] = []
        self._outputs: dict[str, dict[str, list[Edge]]] = {nid: {p: [] for p in spec.cls.outputs} for nid, spec in graph.nodes.items()}
        for wire in graph.wires:
            edge = Edge(wire.name, wire.dst_port, wire.queue, wire.policy, wire.kind, self.runtimes[wire.dst_node].inbox)
            self._outputs[wire.src_node][wire.src_port].append(edge)
            self.edges.append(edge)
        for nid, rt in self.runtimes.items():
            rt.envelopes_out = {p: 0 for p in self._outputs[nid]}
        self.stopping = False
        self.clock: Clock | None = None
        self._source_work: dict[str, asyncio.Task[None]] = {}
        self._stop_requested: asyncio.Future[None] | None = None
        self._started_wall = 0.0
        self.metrics.attach(self)

    # -- control ------------------------------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """End the sources; everything already captured drains through the graph."""
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping: %s; draining the graph", reason)
        for task in self._source_work.values():
            task.cancel()
        if self._stop_requested is not None and not self._stop_requested.done():
            self._stop_requested.set_result(None)

    def status(self) -> dict[str, Any]:
        """A snapshot for monitors."""
        return {
            "nodes": {rt.id: {"state": rt.state, "in": rt.envelopes_in, "out": dict(rt.envelopes_out), "errors": rt.errors, "restarts": rt.restarts} for rt in self.runtimes.values()},
            "edges": {e.name: {"depth": e.depth, "capacity": e.capacity, "dropped": e.dropped} for e in self.edges},
        }

    # -- running ------------------------------------------------------------------------------------
    async def run(self) -> RunReport:
        self.clock = self._given_clock or Clock()
        self._started_wall = time.perf_counter()
        status, error = "completed", None
        opened: list[NodeRuntime] = []
        try:
            for nid in self.graph.order:  # open everything before anything flows
                rt = self.runtimes[nid]
                rt.node = self._make(rt)
                opened.append(rt)  # closed at the end even if open() fails half way
                try:
                    await rt.node.open()
                except Exception as exc:
                    rt.state = "failed"
                    rt.errors += 1
                    raise NodeFailure(rt.id, rt.type_id, None, exc) from exc
                rt.state = "open"
            self.clock.restart()  # time 0 = the moment data starts to flow
            for hook in self._on_flow_start:  # e.g. a simulated PLC starting its belt with ours
                hook()
            tasks = {asyncio.create_task(self._run_node(rt), name=f"lineguard-node-{rt.id}"): rt for rt in opened}
            pending: set[asyncio.Task[None]] = set(tasks)
            failure: BaseException | None = None
            self._stop_requested = asyncio.get_running_loop().create_future()
            try:
                while pending:
                    waiting = pending if self.stopping else pending | {self._stop_requested}
                    timeout = self.drain_timeout_s if self.stopping else None
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED, timeout=timeout)
                    if not done:
                        failure = TimeoutError(f"the graph did not drain within {self.drain_timeout_s:g} s after the stop; cancelled the rest")
                        break
                    done.discard(self._stop_requested)  # type: ignore[arg-type]
                    pending -= done
                    for task in done:
                        if task.exception() is not None and failure is None:
                            failure = task.exception()
                    if failure is not None:
                        break
            finally:
                if not self._stop_requested.done():
                    self._stop_requested.cancel()
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
            if failure is not None:
                raise failure
            if self.stopping:
                status = "stopped"
        except (NodeFailure, TimeoutError) as exc:
            status, error = "failed", str(exc)
            raise
        except asyncio.CancelledError:
            status, error = "stopped", "cancelled"
            raise
        finally:
            await self._close_all(opened)
            self.report = self._report(status, error)
        return self.report

    def _make(self, rt: NodeRuntime) -> Node:
        logger = logging.LoggerAdapter(logging.getLogger(f"lineguard.node.{rt.id}"), {"node": rt.id})
        assert self.clock is not None
        feeders = [self.runtimes[n] for n in dict.fromkeys(w.src_node for w in self.graph.inputs_of(rt.id))]

        def inputs_newest_ns() -> int | None:
            times = [f.newest_t_ns for f in feeders if f.newest_t_ns is not None]
            return max(times) if times else None

        ctx = NodeContext(rt.id, self.clock, self.graph.line, _Emitter(rt, self._outputs[rt.id], self.max_frames, self), logger, inputs_newest_ns, rt.carry)
        return self._node_factory(rt.spec, ctx)

    async def _run_node(self, rt: NodeRuntime) -> None:
        rt.state = "running"
        try:
            assert rt.node is not None
            await rt.node.start()
            if rt.is_source:
                await self._run_source(rt)
            else:
                await self._run_consumer(rt)
            rt.state = "draining"
            assert rt.node is not None
            try:
                await rt.node.flush()
            except Exception as exc:  # a failure found while draining names the node like any other
                raise NodeFailure(rt.id, rt.type_id, None, exc) from exc
            rt.state = "done"
        except BaseException:
            rt.state = "failed"
            rt.inbox.abandon()
            raise
        finally:
            for edges in self._outputs[rt.id].values():
                for edge in edges:
                    edge.close()

    async def _run_source(self, rt: NodeRuntime) -> None:
        while not self.stopping:
            assert rt.node is not None
            work = asyncio.create_task(rt.node.run(), name=f"lineguard-source-{rt.id}")
            self._source_work[rt.id] = work
            if self.stopping:
                work.cancel()
            try:
                await work
                return
            except _EndOfStream:
                return
            except asyncio.CancelledError:
                if self.stopping and not _being_cancelled():
                    return  # stop(): the source ends, the graph drains
                work.cancel()
                raise
            except Exception as exc:
                await self._on_error(rt, None, exc)
            finally:
                self._source_work.pop(rt.id, None)

    async def _run_consumer(self, rt: NodeRuntime) -> None:
        inbox = rt.inbox
        hist = self.metrics.process_seconds.labels(node=rt.id)
        timings = rt.process_ns
        perf = time.perf_counter_ns
        while True:
            item = await inbox.get()
            if item is None:
                return
            port, envelope = item
            rt.envelopes_in += 1
            assert rt.node is not None
            t0 = perf()
            try:
                await rt.node.process(port, envelope)
            except _EndOfStream:
                raise RuntimeError("only sources end the stream") from None
            except Exception as exc:
                await self._on_error(rt, envelope.frame_id, exc)
                continue
            dt = perf() - t0
            rt.handled(envelope.t_capture_ns)
            timings.append(dt)
            rt.process_count += 1
            rt.process_total_ns += dt
            hist.observe(dt / 1e9)

    async def _on_error(self, rt: NodeRuntime, frame_id: int | None, exc: Exception) -> None:
        rt.errors += 1
        policy = rt.spec.restart
        failure = NodeFailure(rt.id, rt.type_id, frame_id, exc)
        if policy is None:
            raise failure from exc
        assert self.clock is not None
        now = self.clock.now_ns()
        window_ns = int(policy.within_s * 1e9)
        while rt.restart_times_ns and now - rt.restart_times_ns[0] > window_ns:
            rt.restart_times_ns.popleft()
        if len(rt.restart_times_ns) >= policy.max_restarts:
            raise NodeFailure(rt.id, rt.type_id, frame_id, RuntimeError(f"{exc} (gave up after {policy.max_restarts} restarts within {policy.within_s:g} s)")) from exc
        rt.restart_times_ns.append(now)
        rt.restarts += 1
        log.error("%s; restarting it (%d of %d within %g s)", failure, len(rt.restart_times_ns), policy.max_restarts, policy.within_s, extra={"node": rt.id, "frame_id": frame_id})
        assert rt.node is not None
        try:
            await rt.node.close()
        except Exception as close_exc:  # the restart goes on; say what the old instance left behind
            log.error("node '%s' raised while closing before its restart: %s", rt.id, close_exc, extra={"node": rt.id})
        if policy.backoff_s > 0:
            await self.clock.sleep(policy.backoff_s)
        rt.node = self._make(rt)
        try:
            await rt.node.open()
            await rt.node.start()
        except Exception as open_exc:
            raise NodeFailure(rt.id, rt.type_id, frame_id, open_exc) from open_exc

    async def _close_all(self, opened: list[NodeRuntime]) -> None:
        for rt in reversed(opened):
            if rt.node is None:
                continue
            try:
                await rt.node.close()
            except Exception as exc:
                log.error("node '%s' (%s) raised while closing: %s", rt.id, rt.type_id, exc, extra={"node": rt.id})
                rt.errors += 1
            if rt.state != "failed":
                rt.state = "closed"

    def _report(self, status: str, error: str | None) -> RunReport:
        nodes = []
        for rt in self.runtimes.values():
            times = np.fromiter(rt.process_ns, dtype=np.int64) if rt.process_ns else None
            nodes.append(
                {
                    "node": rt.id,
                    "type": rt.type_id,
                    "state": rt.state,
                    "in": rt.envelopes_in,
                    "out": dict(rt.envelopes_out),
                    "errors": rt.errors,
                    "restarts": rt.restarts,
                    "dropped": dict(rt.node_drops),
                    "events": dict(rt.events),
                    "mean_ms": round(rt.process_total_ns / rt.process_count / 1e6, 4) if rt.process_count else None,
                    "p99_ms": round(float(np.percentile(times, 99)) / 1e6, 4) if times is not None else None,
                }
            )
        edges = [{"edge": e.name, "policy": e.policy, "capacity": e.capacity, "delivered": e.delivered, "dropped": e.dropped, "high_water": e.high_water} for e in self.edges]
        return RunReport(
            recipe=self.graph.file,
            clock=self.clock.kind if self.clock else "wall",
            status=status,
            sim_duration_s=(self.clock.now_ns() / 1e9) if self.clock else 0.0,
            wall_duration_s=time.perf_counter() - self._started_wall,
            nodes=nodes,
            edges=edges,
            error=error,
        )


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return bool(task and task.cancelling())


async def run_graph(graph: CompiledGraph, **kwargs: Any) -> RunReport:
    """Run ``graph`` on the running loop (its clock is the loop's: sim on a SimEventLoop)."""
    return await Executor(graph, **kwargs).run()


def run_graph_sync(
    graph: CompiledGraph,
    clock: str = "sim",
    *,
    handle_signals: bool = False,
    on_start: Callable[[Executor], Any] | None = None,
    **kwargs: Any,
) -> RunReport:
    """Run ``graph`` to the end on a fresh loop of the given clock (``sim`` or ``wall``).

    With ``handle_signals``, SIGINT/SIGTERM stop the sources and drain the graph; a second signal
    cancels everything (nodes are still closed).
    """
    if clock not in ("sim", "wall"):
        raise ValueError(f"clock: expected 'sim' or 'wall', got {clock!r}")
    factory = SimEventLoop if clock == "sim" else asyncio.SelectorEventLoop

    async def main() -> RunReport:
        executor = Executor(graph, **kwargs)
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        installed: list[int] = []
        if handle_signals:

            def on_signal(signum: int) -> None:
                if executor.stopping and main_task is not None:
                    main_task.cancel()
                else:
                    executor.stop(f"{signal.Signals(signum).name} received")

            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
        try:
            if on_start is not None:
                on_start(executor)
            return await executor.run()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())
