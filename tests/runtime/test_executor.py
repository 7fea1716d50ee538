"""Running a compiled graph: data flows, ends, drains, fails loudly, restarts, and is bounded."""

from __future__ import annotations

import textwrap
import tracemalloc

import pytest
import testnodes
from prometheus_client import generate_latest
from testnodes import COLLECTED, EVENTS, compile_text

from lineguard.runtime.errors import NodeFailure
from lineguard.runtime.executor import run_graph_sync
from lineguard.runtime.metrics import GraphMetrics


@pytest.fixture(autouse=True)
def clean_test_nodes():
    testnodes.reset()
    yield
    testnodes.reset()


def graph_of(text: str):
    return compile_text(textwrap.dedent(text).lstrip("\n"))


FAN = """
version: 1
nodes:
  src:  {type: test.counter, params: {count: 40, period_s: 0.01}}
  a:    {type: test.slow, params: {delay_s: 0.013, add: 1000}, in: {in: src.out}}
  b:    {type: test.slow, params: {delay_s: 0.004, add: 2000}, in: {in: src.out}}
  both: {type: test.merge, in: {a: a.out, b: b.out}}
  sink: {type: test.collect, in: {in: both.out}}
"""


def test_the_same_recipe_on_the_sim_clock_gives_identical_outputs():
    run_graph_sync(graph_of(FAN), "sim")
    first = list(COLLECTED["default"])
    testnodes.reset()
    run_graph_sync(graph_of(FAN), "sim")
    assert COLLECTED["default"] == first
    assert len(first) == 80


def test_fan_out_reaches_every_branch_and_fan_in_merges_them():
    report = run_graph_sync(graph_of(FAN), "sim")
    payloads = [p for _, _, p, _ in COLLECTED["default"]]
    assert sorted(v for port, v in payloads if port == "a") == [1000 + i for i in range(40)]
    assert sorted(v for port, v in payloads if port == "b") == [2000 + i for i in range(40)]
    assert report.status == "completed"
    assert {n["node"]: n["state"] for n in report.nodes} == dict.fromkeys(["src", "a", "b", "both", "sink"], "closed")


def test_the_sim_clock_never_really_sleeps():
    report = run_graph_sync(graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 100, period_s: 60}}
      sink: {type: test.collect, in: {in: src.out}}
    """), "sim")
    assert report.sim_duration_s >= 99 * 60
    assert report.wall_duration_s < 30  # an hour and a half of line time, in well under a minute
    assert [t for _, t, _, _ in COLLECTED["default"]][:3] == [0, 60_000_000_000, 120_000_000_000]


def test_a_slow_node_behind_drop_oldest_drops_and_counts_every_drop():
    report = run_graph_sync(graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 100, period_s: 0.01}}
      slow: {type: test.slow, params: {delay_s: 0.05}, in: {in: {from: src.out, queue: 2, policy: drop_oldest}}}
      sink: {type: test.collect, in: {in: slow.out}}
    """), "sim")
    edge = next(e for e in report.edges if e["edge"] == "src.out->slow.in")
    slow = next(n for n in report.nodes if n["node"] == "slow")
    assert edge["dropped"] > 50  # the node keeps up with one frame in five
    assert slow["in"] + edge["dropped"] == 100  # nothing vanished uncounted
    assert len(COLLECTED["default"]) == slow["in"]
    frame_ids = [f for f, _, _, _ in COLLECTED["default"]]
    assert frame_ids[-1] == 99  # the newest frame is the one that survives


def test_a_slow_node_behind_drop_newest_keeps_the_oldest():
    report = run_graph_sync(graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 50, period_s: 0.01}}
      slow: {type: test.slow, params: {delay_s: 0.05}, in: {in: {from: src.out, queue: 2, policy: drop_newest}}}
      sink: {type: test.collect, in: {in: slow.out}}
    """), "sim")
    edge = next(e for e in report.edges if e["edge"] == "src.out->slow.in")
    assert edge["dropped"] + len(COLLECTED["default"]) == 50
    assert [f for f, _, _, _ in COLLECTED["default"]][:3] == [0, 1, 2]


def test_behind_block_memory_stays_bounded_and_the_source_slows_down():
    # 200 envelopes of 1 MB each from a source that would produce them all at once.
    graph = graph_of("""
    version: 1
    nodes:
      src: {type: test.counter, params: {count: 200, period_s: 0, payload_bytes: 1000000}}
      mem: {type: test.memory, params: {delay_s: 0.01}, in: {in: {from: src.out, queue: 4, policy: block}}}
    """)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        report = run_graph_sync(graph, "sim")
    finally:
        tracemalloc.stop()
    samples = COLLECTED["memory"]
    assert len(samples) == 200 and report.edges[0]["dropped"] == 0
    peak_mb = (max(m for _, m in samples) - baseline) / 1e6
    assert peak_mb < 10, f"{peak_mb:.1f} MB held for 200 MB produced"
    # The source was held back to the consumer's pace: frame k was captured at about k × 10 ms.
    capture_s = [t / 1e9 for t, _ in samples]
    assert capture_s[-1] == pytest.approx(199 * 0.01 - 4 * 0.01, abs=0.03)


def test_a_node_that_raises_stops_the_graph_naming_node_and_frame_and_every_node_is_closed():
    graph = graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 10}}
      slow: {type: test.slow, params: {fail_on: [3]}, in: {in: src.out}}
      sink: {type: test.collect, in: {in: slow.out}}
    """)
    with pytest.raises(NodeFailure, match=r"node 'slow' \(test.slow@v1\) failed on frame 3: ValueError: cannot handle frame 3"):
        run_graph_sync(graph, "sim")
    assert [e for e in EVENTS if e.startswith("close:")] == ["close:sink", "close:slow", "close:src"]
    assert [f for f, _, _, _ in COLLECTED["default"]] == [0, 1, 2]


def test_a_source_that_raises_is_named():
    graph = graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 10, fail_at: 4}}
      sink: {type: test.collect, in: {in: src.out}}
    """)
    with pytest.raises(NodeFailure, match=r"node 'src' \(test.counter@v1\) failed: RuntimeError: source broke at 4"):
        run_graph_sync(graph, "sim")
    assert EVENTS[-2:] == ["close:sink", "close:src"]


def test_a_node_that_fails_to_open_fails_the_start_before_anything_flows():
    graph = graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 10}}
      slow: {type: test.slow, params: {fail_open: true}, in: {in: src.out}}
      sink: {type: test.collect, in: {in: slow.out}}
    """)
    with pytest.raises(NodeFailure, match=r"node 'slow' \(test.slow@v1\) failed: FileNotFoundError: model.xml not found"):
        run_graph_sync(graph, "sim")
    assert EVENTS == ["open:src", "open:slow", "close:slow", "close:src"]
    assert COLLECTED["default"] == []


def test_a_restart_policy_restarts_the_node_and_counts_it():
    report = run_graph_sync(graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 10}}
      slow: {type: test.slow, params: {fail_on: [3, 6]}, in: {in: src.out}, restart: {max_restarts: 2, within_s: 60, backoff_s: 0.1}}
      sink: {type: test.collect, in: {in: slow.out}}
    """), "sim")
    slow = next(n for n in report.nodes if n["node"] == "slow")
    assert (slow["errors"], slow["restarts"], report.status) == (2, 2, "completed")
    assert [f for f, _, _, _ in COLLECTED["default"]] == [0, 1, 2, 4, 5, 7, 8, 9]
    assert EVENTS.count("open:slow") == 3 and EVENTS.count("close:slow") == 3


def test_restarts_beyond_the_policy_stop_the_graph():
    graph = graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 10}}
      slow: {type: test.slow, params: {fail_on: [1, 2, 3]}, in: {in: src.out}, restart: {max_restarts: 2, within_s: 60, backoff_s: 0}}
      sink: {type: test.collect, in: {in: slow.out}}
    """)
    with pytest.raises(NodeFailure, match=r"node 'slow' \(test.slow@v1\) failed on frame 3: RuntimeError: cannot handle frame 3 \(gave up after 2 restarts within 60 s\)"):
        run_graph_sync(graph, "sim")


def test_end_of_stream_flushes_then_closes_in_reverse_order():
    run_graph_sync(graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 5}}
      slow: {type: test.slow, in: {in: src.out}}
      sink: {type: test.collect, in: {in: slow.out}}
    """), "sim")
    assert COLLECTED["default:flushed"] == [5]  # flush saw every envelope
    assert EVENTS == ["open:src", "open:slow", "open:sink", "close:sink", "close:slow", "close:src"]


def test_a_node_failing_at_end_of_stream_is_named_and_every_node_is_still_closed():
    graph = graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 3}}
      sink: {type: test.collect, params: {fail_flush: true}, in: {in: src.out}}
    """)
    with pytest.raises(NodeFailure, match=r"node 'sink' \(test.collect@v1\) failed: OSError: could not write the last batch"):
        run_graph_sync(graph, "sim")
    assert EVENTS[-2:] == ["close:sink", "close:src"]


def test_stop_ends_the_sources_and_drains_what_is_in_flight():
    graph = graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 0, period_s: 0.01}}
      slow: {type: test.slow, params: {delay_s: 0.03}, in: {in: {from: src.out, queue: 8}}}
      sink: {type: test.collect, in: {in: slow.out}}
    """)

    def stop_later(executor):
        import asyncio

        asyncio.get_running_loop().call_later(1.0, executor.stop, "test stop")

    report = run_graph_sync(graph, "sim", on_start=stop_later)
    src = next(n for n in report.nodes if n["node"] == "src")
    assert report.status == "stopped"
    assert len(COLLECTED["default"]) == sum(src["out"].values())  # everything captured was drained
    assert all(n["state"] == "closed" for n in report.nodes)


def test_max_frames_ends_each_source_after_n_frames():
    report = run_graph_sync(graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 0}}
      sink: {type: test.collect, in: {in: src.out}}
    """), "sim", max_frames=7)
    assert len(COLLECTED["default"]) == 7 and report.status == "completed"


def test_metrics_count_envelopes_drops_and_processing_time():
    metrics = GraphMetrics()
    run_graph_sync(graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 30, period_s: 0.01}}
      slow: {type: test.slow, params: {delay_s: 0.05}, in: {in: {from: src.out, queue: 2, policy: drop_oldest}}}
      sink: {type: test.collect, in: {in: slow.out}}
    """), "sim", metrics=metrics)
    text = generate_latest(metrics.registry).decode()
    assert 'lineguard_node_envelopes_out_total{node="src",port="out",type="test.counter@v1"} 30.0' in text
    dropped = next(line for line in text.splitlines() if line.startswith('lineguard_edge_dropped_total{edge="src.out->slow.in"'))
    assert float(dropped.split()[-1]) > 10
    assert 'lineguard_node_process_seconds_count{node="sink"}' in text
    assert 'lineguard_edge_queue_capacity{edge="src.out->slow.in",policy="drop_oldest"} 2.0' in text


def test_a_tap_sees_every_envelope_an_output_emits_without_changing_the_graph():
    seen = []
    report = run_graph_sync(graph_of("""
    version: 1
    nodes:
      src:  {type: test.counter, params: {count: 12}}
      slow: {type: test.slow, params: {add: 5}, in: {in: src.out}}
      sink: {type: test.collect, in: {in: slow.out}}
    """), "sim", taps={"slow.out": lambda env: seen.append(env.payload)})
    assert seen == [i + 5 for i in range(12)] and report.status == "completed"
    with pytest.raises(ValueError, match=r"tap 'slow.nope': expected NODE.OUTPUT of this graph"):
        from lineguard.runtime.executor import Executor

        Executor(graph_of("version: 1\nnodes:\n  src: {type: test.counter}\n  slow: {type: test.slow, in: {in: src.out}}\n"), taps={"slow.nope": print})
