"""plc.opcua against the virtual PLC's real OPC UA server on loopback, on the sim clock."""

from __future__ import annotations

import asyncio

import pytest
import testnodes
from plc_support import GEOMETRY, LINE, PARTS, TruthVerdicts, free_loopback_port

from lineguard.runtime.clock import Clock, SimEventLoop
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.errors import NodeFailure
from lineguard.runtime.executor import Executor, run_graph_sync
from lineguard.runtime.loader import load_text
from lineguard.sim.plc import VirtualPlc
from lineguard.sim.plc_opcua import OpcUaPlcServer


def graph(plc_params: str):
    registry = testnodes.test_registry()
    registry.register(TruthVerdicts)
    text = f"""version: 1
line: {LINE}
nodes:
  vision: {{type: test.truth_verdicts}}
  plc: {{type: plc.opcua, params: {plc_params}, in: {{verdicts: vision.verdicts}}}}
"""
    return compile_document(load_text(text, "line.yaml"), registry)


def run_line(mode: str, no_verdict: str = "reject", gate_writable: bool = True, ack_delay_ms: float = 0.0):
    async def main():
        clock = Clock()
        plc = VirtualPlc(GEOMETRY, PARTS, clock, mode=mode, heartbeat_timeout_ms=300, no_verdict=no_verdict, ack_delay_ms=ack_delay_ms)
        async with OpcUaPlcServer(plc, port=free_loopback_port()) as server:
            if not gate_writable:  # a PLC whose access rights refuse the gate to the vision side
                await server._nodes["Gate"].set_writable(False)
            audit: list = []
            executor = Executor(graph(f"{{endpoint: '{server.endpoint}', mode: {mode}}}"), clock=clock, on_flow_start=[plc.start], taps={"plc.audit": audit.append})
            try:
                await executor.run()
                async with asyncio.timeout(30):
                    await plc.wait_all_scored()
            finally:
                plc.stop()
        return plc.report(), audit

    with asyncio.Runner(loop_factory=SimEventLoop) as runner:
        return runner.run(main())


@pytest.mark.parametrize("mode", ["handshake", "pulse"])
def test_every_defective_part_is_rejected_at_the_gate_and_every_good_one_passes(mode):
    report, audit = run_line(mode)
    s = report.summary
    assert (s.escapes, s.false_rejects, s.fail_safe_rejects) == (0, 0, 0), s
    assert s.rejected == sum(p.defective for p in PARTS) and s.timing_error_max_abs_mm <= 1.0
    assert sorted(a.payload.part_id for a in audit) == sorted(p.part_id for p in PARTS)


def test_a_plc_that_acks_on_its_next_scan_is_waited_for(caplog):
    # given a PLC whose Ack variables show a command 30 ms after it was written (its next scan)
    report, audit = run_line("handshake", ack_delay_ms=30)
    # then each command was acked when the PLC answered, with no reconnect, and every part went right
    s = report.summary
    assert (s.escapes, s.false_rejects, s.no_verdict_rejects) == (0, 0, 0)
    assert {a.payload.outcome for a in audit} == {"acked"}
    assert all(30e6 <= a.payload.acked_t_ns - a.payload.sent_t_ns < 40e6 and a.payload.attempts == 0 for a in audit)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_gate_the_plc_refuses_to_fire_stops_the_line_and_its_part_is_on_record(caplog):
    # given a pulse-mode PLC that refuses the vision side's writes to its gate (an OPC UA status
    # error, not a lost link)
    first_bad = min((p for p in PARTS if p.defective), key=lambda p: p.t_at_reject_ns(GEOMETRY))
    # then the line stops with the PLC's reason
    with pytest.raises(NodeFailure, match=r"node 'plc' \(plc\.opcua@v1\) failed: BadUserAccessDenied"):
        run_line("pulse", gate_writable=False)
    # and the part whose reject was not fired is an alarm when it happened, not only at the end
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "lineguard.nodes.plc"]
    assert errors[0].startswith(f"part {first_bad.part_id} (reject): gate_error, missed; PLC at opc.tcp://127.0.0.1:")
    assert "PLC output to opc.tcp://127.0.0.1:" in errors[1] and "stopped: BadUserAccessDenied" in errors[1]


@pytest.mark.parametrize(("no_verdict", "warned"), [("reject", False), ("pass", True)])
def test_the_vision_side_reads_whether_the_plc_rejects_parts_without_a_verdict(caplog, no_verdict, warned):
    # given a handshake PLC with or without positive release, when the line starts over OPC UA
    report, _ = run_line("handshake", no_verdict=no_verdict)
    # then only the PLC that lets a part without a verdict through is a warning, and the run is the same
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "lineguard.nodes.plc"]
    assert [("without a verdict" in w) for w in warnings] == ([True] if warned else [])
    assert (report.summary.escapes, report.summary.no_verdict_rejects) == (0, 0)


def test_an_unreachable_plc_fails_the_start_naming_its_endpoint():
    port = free_loopback_port()
    with pytest.raises(NodeFailure, match=rf"node 'plc' \(plc.opcua@v1\) failed: ConnectionError: PLC at opc.tcp://127.0.0.1:{port}/ is unreachable"):
        run_graph_sync(graph(f"{{endpoint: 'opc.tcp://127.0.0.1:{port}/', connect_timeout_s: 1}}"), "sim")
