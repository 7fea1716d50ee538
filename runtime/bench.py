"""``lineguard bench runtime``: what the executor costs per edge.

Envelopes go through a chain of no-op nodes twice: back to back (throughput: mean cost per edge),
and one at a time, each waiting for the previous to reach the sink (latency: mean and p99 per edge).
The same is measured on a chain of plain ``asyncio.Queue`` tasks in the same process, and the
ratio printed, because absolute figures on a shared machine are noisy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from lineguard.runtime.compiler import compile_document
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.executor import Executor
from lineguard.runtime.loader import load_text
from lineguard.runtime.node import InPort, Node, OutPort
from lineguard.runtime.registry import Registry

TARGET_P99_US = 30.0


class _BenchSource(Node):
    """Emits ``count`` envelopes; in latency mode waits for each to reach the sink."""

    type_name = "bench.source"
    outputs = {"out": OutPort("bench")}
    params_schema = {"type": "object", "additionalProperties": False, "properties": {"count": {"type": "integer"}, "ping": {"type": "boolean"}}}
    arrivals: asyncio.Queue[int] | None = None
    sent_ns: list[int] = []

    async def run(self) -> None:
        ping = self.params["ping"]
        perf = time.perf_counter_ns
        sent = _BenchSource.sent_ns
        for i in range(self.params["count"]):
            sent.append(perf())
            await self.ctx.emit("out", Envelope(i, 0, None))
            if ping:
                assert _BenchSource.arrivals is not None
                await _BenchSource.arrivals.get()


class _BenchPass(Node):
    type_name = "bench.pass"
    inputs = {"in": InPort("bench", queue=64)}
    outputs = {"out": OutPort("bench")}

    async def process(self, port: str, envelope: Envelope) -> None:
        await self.ctx.emit("out", envelope)


class _BenchSink(Node):
    type_name = "bench.sink"
    inputs = {"in": InPort("bench", queue=64)}
    received_ns: list[int] = []

    async def process(self, port: str, envelope: Envelope) -> None:
        _BenchSink.received_ns.append(time.perf_counter_ns())
        if _BenchSource.arrivals is not None:
            _BenchSource.arrivals.put_nowait(envelope.frame_id)


def _recipe(chain_nodes: int, count: int, ping: bool) -> str:
    lines = ["version: 1", "nodes:", f"  n0: {{type: bench.source, params: {{count: {count}, ping: {str(ping).lower()}}}}}"]
    for i in range(1, chain_nodes - 1):
        lines.append(f"  n{i}: {{type: bench.pass, in: {{in: n{i - 1}.out}}}}")
    lines.append(f"  n{chain_nodes - 1}: {{type: bench.sink, in: {{in: n{chain_nodes - 2}.out}}}}")
    return "\n".join(lines) + "\n"


async def _run_lineguard(chain_nodes: int, count: int, ping: bool) -> tuple[float, np.ndarray]:
    registry = Registry()
    for cls in (_BenchSource, _BenchPass, _BenchSink):
        registry.register(cls)
    graph = compile_document(load_text(_recipe(chain_nodes, count, ping), "<bench>"), registry)
    _BenchSource.sent_ns, _BenchSink.received_ns = [], []
    _BenchSource.arrivals = asyncio.Queue() if ping else None
    started = time.perf_counter()
    await Executor(graph).run()
    elapsed = time.perf_counter() - started
    latency = np.array(_BenchSink.received_ns, dtype=np.int64) - np.array(_BenchSource.sent_ns, dtype=np.int64)
    _BenchSource.arrivals = None
    return elapsed, latency


async def _run_baseline(chain_nodes: int, count: int, ping: bool) -> tuple[float, np.ndarray]:
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(64) for _ in range(chain_nodes - 1)]
    arrivals: asyncio.Queue[int] = asyncio.Queue()
    sent, received = [], []
    perf = time.perf_counter_ns

    async def source() -> None:
        for i in range(count):
            sent.append(perf())
            await queues[0].put(Envelope(i, 0, None))
            if ping:
                await arrivals.get()
        await queues[0].put(None)

    async def passer(k: int) -> None:
        while (item := await queues[k].get()) is not None:
            await queues[k + 1].put(item)
        await queues[k + 1].put(None)

    async def sink() -> None:
        while (item := await queues[-1].get()) is not None:
            received.append(perf())
            if ping:
                arrivals.put_nowait(item.frame_id)

    started = time.perf_counter()
    await asyncio.gather(source(), *(passer(k) for k in range(chain_nodes - 2)), sink())
    elapsed = time.perf_counter() - started
    return elapsed, np.array(received, dtype=np.int64) - np.array(sent, dtype=np.int64)


def bench_runtime(envelopes: int = 10_000, chain_nodes: int = 6) -> dict[str, Any]:
    if chain_nodes < 2:
        raise ValueError(f"chain_nodes: expected ≥ 2, got {chain_nodes}")
    edges = chain_nodes - 1

    async def measure() -> dict[str, Any]:
        # Warm up both, then measure each mode for both back to back.
        await _run_lineguard(chain_nodes, 200, False)
        await _run_baseline(chain_nodes, 200, False)
        out: dict[str, Any] = {}
        for name, runner in (("lineguard", _run_lineguard), ("asyncio_queue", _run_baseline)):
            elapsed, _ = await runner(chain_nodes, envelopes, False)
            _, latency = await runner(chain_nodes, envelopes, True)
            per_edge_us = latency / edges / 1000.0
            out[name] = {
                "throughput_envelopes_s": envelopes / elapsed,
                "mean_us_per_edge_throughput": elapsed / envelopes / edges * 1e6,
                "mean_us_per_edge_latency": float(per_edge_us.mean()),
                "p50_us_per_edge_latency": float(np.percentile(per_edge_us, 50)),
                "p99_us_per_edge_latency": float(np.percentile(per_edge_us, 99)),
            }
        return out

    result = asyncio.run(measure())
    lg, base = result["lineguard"], result["asyncio_queue"]
    result.update(
        envelopes=envelopes,
        chain_nodes=chain_nodes,
        edges=edges,
        target_p99_us_per_edge=TARGET_P99_US,
        meets_target=lg["p99_us_per_edge_latency"] <= TARGET_P99_US,
        ratio_p99=lg["p99_us_per_edge_latency"] / base["p99_us_per_edge_latency"],
        ratio_throughput=lg["throughput_envelopes_s"] / base["throughput_envelopes_s"],
    )
    text = [
        f"runtime overhead: {envelopes} envelopes through {chain_nodes} no-op nodes ({edges} edges)",
        f"{'':24}{'lineguard':>12}{'asyncio.Queue':>16}{'ratio':>8}",
    ]
    for key, label in (
        ("mean_us_per_edge_throughput", "mean µs/edge (stream)"),
        ("mean_us_per_edge_latency", "mean µs/edge (one-by-one)"),
        ("p50_us_per_edge_latency", "p50 µs/edge"),
        ("p99_us_per_edge_latency", "p99 µs/edge"),
    ):
        text.append(f"{label:<24}{lg[key]:>12.2f}{base[key]:>16.2f}{lg[key] / base[key]:>8.2f}")
    text.append(f"{'envelopes/s (stream)':<24}{lg['throughput_envelopes_s']:>12.0f}{base['throughput_envelopes_s']:>16.0f}{result['ratio_throughput']:>8.2f}")
    verdict = "meets" if result["meets_target"] else "MISSES"
    text.append(f"p99 per edge {lg['p99_us_per_edge_latency']:.1f} µs {verdict} the target of ≤ {TARGET_P99_US:g} µs")
    result["text"] = "\n".join(text)
    return result


if __name__ == "__main__":
    print(bench_runtime()["text"])
