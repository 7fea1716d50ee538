"""The virtual PLC behind a real OPC UA server, scored with a scripted asyncua client as oracle.

One server serves the whole module (an asyncua server takes about a second to start): it lives on
a module-scoped runner on simulated time, and each test attaches a fresh PLC to it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from asyncua import Client, ua

from lineguard.runtime.clock import Clock, SimEventLoop
from lineguard.sim.plc import AckStatus, PlcPortInUseError, VirtualPlc, periodic_parts
from lineguard.sim.plc_opcua import NAMESPACE_URI, OPCUA_NODES, OpcUaPlcServer
from lineguard.sim.truth import BeltGeometry

GEOMETRY = BeltGeometry(belt_speed_mm_s=400.0, reject_distance_mm=800.0, encoder_counts_per_mm=10.0, gate_window_mm=40.0)
PARTS = periodic_parts(count=12, spacing_mm=260.0, defect_rate=0.4, seed=3)
INT32 = ua.VariantType.Int32


class Ack(NamedTuple):
    ack: int
    part_id: int
    status: int
    arrival_count: int


class OpcUaLine(NamedTuple):
    runner: asyncio.Runner
    server: OpcUaPlcServer


@pytest.fixture(scope="module")
def opcua_line(pick_free_port) -> Iterator[OpcUaLine]:
    with asyncio.Runner(loop_factory=SimEventLoop) as runner:
        server = OpcUaPlcServer(port=pick_free_port())
        runner.run(server.start())
        try:
            yield OpcUaLine(runner, server)
        finally:
            runner.run(server.stop())


class OpcUaLink:
    """The vision side's OPC UA calls, written from the node map in docs/plc-map.md."""

    def __init__(self, client: Client, ns: int) -> None:
        self.client = client
        self.node = {name: client.get_node(f"ns={ns};s=Line.{name}") for name in (p.name for p in OPCUA_NODES)}

    @classmethod
    async def connect(cls, client: Client) -> OpcUaLink:
        await client.connect()
        return cls(client, await client.get_namespace_index(NAMESPACE_URI))

    async def heartbeat(self, value: int) -> None:
        await self.node["Heartbeat"].write_value(ua.Variant(value, INT32))

    async def fire_gate(self) -> None:
        await self.node["Gate"].write_value(ua.Variant(True, ua.VariantType.Boolean))

    async def read_encoder(self) -> int:
        return int(await self.node["Encoder"].read_value())

    async def send_command(self, *, strobe, part_id, verdict, encoder_at_capture, position_at_capture_counts) -> Ack:
        n = self.node
        await self.client.write_values(  # one Write service call, Strobe last
            [n["PartId"], n["EncoderAtCapture"], n["PositionAtCaptureCounts"], n["Verdict"], n["Strobe"]],
            [ua.Variant(v, INT32) for v in (part_id, encoder_at_capture, position_at_capture_counts, verdict, strobe)],
        )
        values = await self.client.read_values([n["Ack"], n["AckPartId"], n["AckStatus"], n["AckArrivalCount"]])
        return Ack(*(int(v) for v in values))


async def _with_link(server: OpcUaPlcServer, clock: Clock, body: Any) -> Any:
    client = Client(server.endpoint)
    async with clock.hold():
        link = await OpcUaLink.connect(client)
    try:
        return await body(link)
    finally:
        async with clock.hold():
            await client.disconnect()


def _run_line(line: OpcUaLine, scripted_vision, *, mode, send_commands=True, heartbeat_until_s=None, heartbeat_timeout_ms=300.0, no_verdict="reject"):
    async def scenario():
        clock = Clock()
        async with VirtualPlc(GEOMETRY, PARTS, clock, mode=mode, heartbeat_timeout_ms=heartbeat_timeout_ms, no_verdict=no_verdict) as plc:
            await line.server.attach(plc)

            async def body(link: OpcUaLink):
                vision = scripted_vision(
                    link, GEOMETRY, PARTS, clock, mode=mode, send_commands=send_commands,
                    heartbeat_until_ns=None if heartbeat_until_s is None else round(heartbeat_until_s * 1e9),
                )
                return await vision.run(until=plc.wait_all_scored())

            acks = await _with_link(line.server, clock, body)
        return plc.report(), acks

    return line.runner.run(scenario())


@pytest.mark.parametrize("mode", ["pulse", "handshake"])
def test_perfect_rejects_leave_no_escape_no_false_reject_and_no_timing_error(opcua_line, scripted_vision, mode):
    # given a vision side that commands every defective part exactly (oracle), over OPC UA
    # when the line runs
    report, acks = _run_line(opcua_line, scripted_vision, mode=mode)
    # then every defective part was rejected within 1 mm of the gate, and nothing else
    s = report.summary
    assert (s.parts, s.pending) == (len(PARTS), 0)
    assert (s.escapes, s.false_rejects, s.late_commands, s.fail_safe_rejects) == (0, 0, 0, 0)
    assert s.correct_rejects == sum(p.defective for p in PARTS) > 0
    assert s.timing_error_max_abs_mm is not None and s.timing_error_max_abs_mm < 0.2
    for part in PARTS:
        score = report.part(part.part_id)
        assert score.rejected == part.defective
        if part.defective:
            assert abs(score.timing_error_mm) < 1.0, f"part {part.part_id} rejected {score.timing_error_mm} mm off"
    if mode == "handshake":
        # and every command was acked with its strobe and part id, at the arrival count the doc defines
        assert [a.ack for a in acks] == list(range(1, len(PARTS) + 1))
        assert [a.part_id for a in acks] == [p.part_id for p in sorted(PARTS, key=lambda p: -p.x0_mm)]
        assert {a.status for a in acks} == {int(AckStatus.ACCEPTED)}
        for ack in acks:
            part = next(p for p in PARTS if p.part_id == ack.part_id)
            assert abs(ack.arrival_count - part.encoder_at_reject(GEOMETRY)) <= 1


@pytest.mark.parametrize(("mode", "no_verdict"), [("pulse", "reject"), ("handshake", "pass")])
def test_no_commands_let_every_defective_part_escape(opcua_line, scripted_vision, mode, no_verdict):
    # given a vision side that only sends heartbeats, and a PLC that releases parts without a verdict
    report, _ = _run_line(opcua_line, scripted_vision, mode=mode, send_commands=False, no_verdict=no_verdict)
    # then every defective part escaped and no part was rejected
    s = report.summary
    assert s.escapes == sum(p.defective for p in PARTS) > 0
    assert (s.rejected, s.false_rejects, s.fail_safe_rejects) == (0, 0, 0)


def test_in_handshake_mode_no_commands_reject_every_part_for_want_of_a_verdict(opcua_line, scripted_vision):
    # given a vision side alive (heartbeats) but sending no verdicts, and a handshake PLC as it comes
    report, _ = _run_line(opcua_line, scripted_vision, mode="handshake", send_commands=False)
    # then each part was rejected at the gate for want of a verdict
    s = report.summary
    assert (s.escapes, s.fail_safe_rejects) == (0, 0)
    assert s.no_verdict_rejects == s.rejected == len(PARTS)


def test_heartbeat_stop_makes_the_plc_reject_every_part_from_then_on(opcua_line, scripted_vision):
    # given perfect pulse commands, but the heartbeat stops at 4.0 s and the watchdog waits 300 ms
    stop_s, timeout_ms = 4.0, 300.0
    report, _ = _run_line(opcua_line, scripted_vision, mode="pulse", heartbeat_until_s=stop_s, heartbeat_timeout_ms=timeout_ms)
    # then parts at the gate before the watchdog fired were scored as commanded ...
    fail_safe_from_ns = round((stop_s + timeout_ms / 1000) * 1e9)
    before = [p for p in report.parts if p.t_at_reject_ns < fail_safe_from_ns]
    after = [p for p in report.parts if p.t_at_reject_ns > fail_safe_from_ns]
    assert before and after and any(not p.defective for p in after)
    assert all(p.rejected == p.defective and not p.fail_safe for p in before)
    # ... and every part reaching the gate after it was rejected: good ones by the fail-safe
    assert all(p.rejected for p in after)
    assert all(p.fail_safe and p.outcome == "false_reject" for p in after if not p.defective)
    assert (report.summary.escapes, report.summary.fail_safe_episodes) == (0, 1)


def test_status_nodes_show_gate_fail_safe_and_encoder_as_they_change(opcua_line):
    # given a pulse-mode PLC with a 200 ms watchdog, and a client that beats once at t = 0
    async def scenario():
        clock = Clock()
        async with VirtualPlc(GEOMETRY, PARTS, clock, heartbeat_timeout_ms=200, gate_pulse_ms=50) as plc:
            await opcua_line.server.attach(plc)

            async def body(link: OpcUaLink):
                n = link.node
                seen = {}

                async def read(*names):
                    async with clock.hold():
                        return tuple([await n[name].read_value() for name in names])

                async with clock.hold():
                    await link.heartbeat(1)
                    # when the client fires the gate at t = 0.1 s
                await clock.sleep_until_ns(100_000_000)
                async with clock.hold():
                    await link.fire_gate()
                seen["firing"] = await read("Gate", "GateActive", "FailSafe", "Encoder")
                await clock.sleep_until_ns(160_000_000)  # pulse over
                seen["after pulse"] = await read("Gate", "GateActive", "FailSafe", "Encoder")
                await clock.sleep_until_ns(250_000_000)  # no heartbeat for 250 ms
                seen["no heartbeat"] = await read("Gate", "GateActive", "FailSafe", "Encoder")
                async with clock.hold():
                    await link.heartbeat(2)
                seen["heartbeat back"] = await read("FailSafe",)
                seen["config"] = await read("Mode", "RejectDistanceCounts", "EncoderCountsPerMm", "HeartbeatTimeoutMs", "GatePulseMs")
                return seen

            return await _with_link(opcua_line.server, clock, body)

    seen = opcua_line.runner.run(scenario())
    # then the nodes follow the PLC: gate on then off, fail-safe on then off, encoder = speed x time
    assert seen["firing"] == (True, True, False, 400)
    assert seen["after pulse"] == (False, False, False, 640)
    assert seen["no heartbeat"] == (False, False, True, 1000)
    assert seen["heartbeat back"] == (False,)
    assert seen["config"] == ("pulse", 8000, 10.0, 200, 50)


def test_a_strobe_in_pulse_mode_is_refused_as_access_denied(opcua_line):
    # given a PLC in pulse mode
    async def scenario():
        clock = Clock()
        async with VirtualPlc(GEOMETRY, PARTS, clock) as plc:
            await opcua_line.server.attach(plc)

            async def body(link: OpcUaLink):
                async with clock.hold():
                    # when the vision side writes the handshake strobe
                    await link.node["Strobe"].write_value(ua.Variant(1, INT32))

            await _with_link(opcua_line.server, clock, body)

    # then the server refuses the write
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        opcua_line.runner.run(scenario())


def test_the_node_map_matches_docs_plc_map(opcua_line, doc_text):
    # given the live server's Line object
    async def scenario():
        clock = Clock()

        async def body(link: OpcUaLink):
            ns = await link.client.get_namespace_index(NAMESPACE_URI)
            line = await link.client.nodes.objects.get_child(f"{ns}:Line")
            children = await line.get_children()
            return ns, {(await c.read_browse_name()).Name: (c.nodeid.to_string(), (await c.read_data_type_as_variant_type()).name) for c in children}

        return await _with_link(opcua_line.server, clock, body)

    ns, live = opcua_line.runner.run(scenario())
    # then it has exactly the documented variables, each at its documented node id and type
    assert ns == 2
    assert set(live) == {p.name for p in OPCUA_NODES}
    for name, (node_id, type_name) in live.items():
        row = re.search(rf"^\|\s*`{name}`\s*\|\s*`{re.escape(node_id)}`\s*\|\s*{type_name}\s*\|", doc_text, re.MULTILINE)
        assert row, f"`{name}` `{node_id}` {type_name} is not in docs/plc-map.md's node map"


def test_a_port_in_use_is_a_clear_error_naming_opcua_port(busy_port):
    # given a port something else listens on
    async def scenario():
        server = OpcUaPlcServer(port=busy_port)
        # when the OPC UA server starts there
        await server.start()

    # then the error names the parameter, the port and the address
    with pytest.raises(PlcPortInUseError, match=rf"opcua_port {busy_port} is already in use on 127\.0\.0\.1"):
        asyncio.run(scenario())
