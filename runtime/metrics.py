"""Prometheus metrics of a running graph.

Counters and queue depths are plain integers on the nodes and edges (nothing extra on the hot path);
a collector reads them when /metrics is scraped. Processing time is a histogram per node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from lineguard.runtime.executor import Executor

PROCESS_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class GraphCollector(Collector):
    def __init__(self, executor: "Executor") -> None:
        self._executor = executor

    def collect(self) -> Iterable:
        ex = self._executor
        env_in = CounterMetricFamily("lineguard_node_envelopes_in", "Envelopes a node has taken from its inputs.", labels=["node", "type"])
        env_out = CounterMetricFamily("lineguard_node_envelopes_out", "Envelopes a node has emitted.", labels=["node", "type", "port"])
        errors = CounterMetricFamily("lineguard_node_errors", "Exceptions raised by a node.", labels=["node", "type"])
        restarts = CounterMetricFamily("lineguard_node_restarts", "Times a node was restarted by its restart policy.", labels=["node", "type"])
        node_drops = CounterMetricFamily("lineguard_node_dropped", "Items a node itself discarded (e.g. frames a camera skipped).", labels=["node", "type", "reason"])
        events = CounterMetricFamily("lineguard_node_events", "Things a node counted (reconnects, missed deadlines, ...).", labels=["node", "type", "event"])
        depth = GaugeMetricFamily("lineguard_edge_queue_depth", "Envelopes waiting on an edge.", labels=["edge"])
        capacity = GaugeMetricFamily("lineguard_edge_queue_capacity", "Envelopes an edge can hold.", labels=["edge", "policy"])
        dropped = CounterMetricFamily("lineguard_edge_dropped", "Envelopes an edge discarded because it was full.", labels=["edge", "policy"])
        for rt in ex.runtimes.values():
            t = rt.type_id
            env_in.add_metric([rt.id, t], rt.envelopes_in)
            for port, n in rt.envelopes_out.items():
                env_out.add_metric([rt.id, t, port], n)
            errors.add_metric([rt.id, t], rt.errors)
            restarts.add_metric([rt.id, t], rt.restarts)
            for reason, n in rt.node_drops.items():
                node_drops.add_metric([rt.id, t, reason], n)
            for event, n in rt.events.items():
                events.add_metric([rt.id, t, event], n)
        for edge in ex.edges:
            depth.add_metric([edge.name], edge.depth)
            capacity.add_metric([edge.name, edge.policy], edge.capacity)
            dropped.add_metric([edge.name, edge.policy], edge.dropped)
        yield from (env_in, env_out, errors, restarts, node_drops, events, depth, capacity, dropped)


class GraphMetrics:
    """The prometheus registry of one run."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.process_seconds = Histogram(
            "lineguard_node_process_seconds",
            "Time a node spent handling one envelope (or producing one, for sources).",
            ["node"],
            registry=self.registry,
            buckets=PROCESS_BUCKETS_S,
        )
        self._collector: GraphCollector | None = None

    def attach(self, executor: "Executor") -> None:
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = GraphCollector(executor)
        self.registry.register(self._collector)

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Serve /metrics over HTTP. Returns (server, thread); call ``server.shutdown()`` to stop."""
        return start_http_server(port, addr=addr, registry=self.registry)
