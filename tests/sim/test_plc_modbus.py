"""The virtual PLC behind a real Modbus TCP server, scored with a scripted pymodbus client as oracle.

Each test runs a short line on simulated time (real sockets on loopback, simulated belt).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from lineguard.runtime.clock import Clock, run_sim
from lineguard.sim.plc import AckStatus, PlcPortInUseError, VirtualPlc, periodic_parts
from lineguard.sim.plc_modbus import HOST, MODBUS_MAP, UNIT_ID, ModbusPlcServer
from lineguard.sim.truth import BeltGeometry

GEOMETRY = BeltGeometry(belt_speed_mm_s=400.0, reject_distance_mm=800.0, encoder_counts_per_mm=10.0, gate_window_mm=40.0)
PARTS = periodic_parts(count=12, spacing_mm=260.0, defect_rate=0.4, seed=3)
DT = AsyncModbusTcpClient.DATATYPE


class Ack(NamedTuple):
    ack: int
    part_id: int
    status: int
    arrival_count: int


def _ok(response: ModbusPDU) -> ModbusPDU:
    assert not response.isError(), f"Modbus exception: {response}"
    return response


class ModbusLink:
    """The vision side's Modbus calls, written from the map in docs/plc-map.md."""

    def __init__(self, client: AsyncModbusTcpClient) -> None:
        self.client = client

    async def heartbeat(self, value: int) -> None:
        _ok(await self.client.write_register(0, value & 0xFFFF, device_id=UNIT_ID))

    async def fire_gate(self) -> None:
        _ok(await self.client.write_coil(0, True, device_id=UNIT_ID))

    async def read_encoder(self) -> int:
        rr = _ok(await self.client.read_input_registers(0, count=2, device_id=UNIT_ID))
        return int(self.client.convert_from_registers(rr.registers, DT.INT32))

    async def send_command(self, *, strobe, part_id, verdict, encoder_at_capture, position_at_capture_counts):
        c = self.client
        words = (
            c.convert_to_registers(part_id, DT.UINT32)
            + c.convert_to_registers(encoder_at_capture, DT.INT32)
            + c.convert_to_registers(position_at_capture_counts, DT.INT32)
            + [verdict, strobe & 0xFFFF]
        )
        _ok(await c.write_registers(1, words, device_id=UNIT_ID))  # HR1..HR8, strobe last: one atomic command
        rr = _ok(await c.read_input_registers(2, count=14, device_id=UNIT_ID))
        regs = rr.registers
        return Ack(
            ack=regs[0],
            part_id=int(c.convert_from_registers(regs[1:3], DT.UINT32)),
            status=regs[3],
            arrival_count=int(c.convert_from_registers(regs[12:14], DT.INT32)),
        )


async def _run_line(scripted_vision, *, mode, send_commands=True, heartbeat_until_s=None, heartbeat_timeout_ms=300.0, no_verdict="reject"):
    clock = Clock()
    async with (
        VirtualPlc(GEOMETRY, PARTS, clock, mode=mode, heartbeat_timeout_ms=heartbeat_timeout_ms, no_verdict=no_verdict) as plc,
        ModbusPlcServer(plc, port=0) as server,
    ):
        client = AsyncModbusTcpClient(HOST, port=server.port)
        async with clock.hold():
            assert await client.connect()
        try:
            vision = scripted_vision(
                ModbusLink(client), GEOMETRY, PARTS, clock, mode=mode, send_commands=send_commands,
                heartbeat_until_ns=None if heartbeat_until_s is None else round(heartbeat_until_s * 1e9),
            )
            acks = await vision.run(until=plc.wait_all_scored())
        finally:
            client.close()
    return plc.report(), acks


def test_given_the_parts_then_both_good_and_defective_parts_are_on_the_line():
    assert 3 <= sum(p.defective for p in PARTS) <= 9


@pytest.mark.parametrize("mode", ["pulse", "handshake"])
def test_perfect_rejects_leave_no_escape_no_false_reject_and_no_timing_error(scripted_vision, mode):
    # given a vision side that commands every defective part exactly (oracle), over Modbus
    # when the line runs
    report, acks = run_sim(lambda: _run_line(scripted_vision, mode=mode))
    # then every defective part was rejected within 1 mm of the gate, and nothing else
    s = report.summary
    assert (s.parts, s.pending) == (len(PARTS), 0)
    assert (s.escapes, s.false_rejects, s.late_commands, s.fail_safe_rejects) == (0, 0, 0, 0)
    assert s.correct_rejects == sum(p.defective for p in PARTS)
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
def test_no_commands_let_every_defective_part_escape(scripted_vision, mode, no_verdict):
    # given a vision side that only sends heartbeats, and a PLC that releases parts without a verdict
    # (pulse mode always does: the vision side owns the gate)
    report, _ = run_sim(lambda: _run_line(scripted_vision, mode=mode, send_commands=False, no_verdict=no_verdict))
    # then every defective part escaped and no part was rejected
    s = report.summary
    assert s.escapes == sum(p.defective for p in PARTS) > 0
    assert (s.rejected, s.false_rejects, s.fail_safe_rejects, s.no_verdict_rejects) == (0, 0, 0, 0)
    assert all(report.part(p.part_id).outcome == "escape" for p in PARTS if p.defective)


def test_in_handshake_mode_no_commands_reject_every_part_for_want_of_a_verdict(scripted_vision):
    # given a vision side alive (heartbeats) but sending no verdicts, and a handshake PLC as it comes
    report, _ = run_sim(lambda: _run_line(scripted_vision, mode="handshake", send_commands=False))
    # then no part went through uninspected: each was rejected at the gate for want of a verdict
    s = report.summary
    assert (s.escapes, s.fail_safe_rejects, s.fail_safe_episodes) == (0, 0, 0)
    assert s.no_verdict_rejects == s.rejected == len(PARTS)
    assert all(report.part(p.part_id).reject_source == "no_verdict" for p in PARTS)


def test_heartbeat_stop_makes_the_plc_reject_every_part_from_then_on(scripted_vision):
    # given perfect commands, but the heartbeat stops at 4.0 s and the watchdog waits 300 ms
    stop_s, timeout_ms = 4.0, 300.0
    report, _ = run_sim(
        lambda: _run_line(scripted_vision, mode="handshake", heartbeat_until_s=stop_s, heartbeat_timeout_ms=timeout_ms)
    )
    # then parts at the gate before the watchdog fired were scored as commanded ...
    fail_safe_from_ns = round((stop_s + timeout_ms / 1000) * 1e9)
    before = [p for p in report.parts if p.t_at_reject_ns < fail_safe_from_ns]
    after = [p for p in report.parts if p.t_at_reject_ns > fail_safe_from_ns]
    assert before and after and any(not p.defective for p in after)
    assert all(p.rejected == p.defective and not p.fail_safe for p in before)
    # ... and every part reaching the gate after it was rejected: good ones by the fail-safe
    assert all(p.rejected for p in after)
    assert all(p.fail_safe and p.outcome == "false_reject" for p in after if not p.defective)
    assert report.summary.escapes == 0
    assert report.summary.fail_safe_episodes == 1
    assert report.summary.fail_safe_rejects >= sum(not p.defective for p in after)


def test_encoder_and_config_registers_follow_the_clock_and_the_geometry():
    # given a PLC on the sim clock
    async def scenario():
        clock = Clock()
        async with VirtualPlc(GEOMETRY, PARTS, clock, heartbeat_timeout_ms=0) as plc, ModbusPlcServer(plc, port=0) as server:
            client = AsyncModbusTcpClient(HOST, port=server.port)
            async with clock.hold():
                await client.connect()
            try:
                readings = []
                for t_s in (0.0, 1.25, 2.5):
                    # when the belt has run t_s seconds
                    await clock.sleep_until_ns(round(t_s * 1e9))
                    async with clock.hold():
                        rr = _ok(await client.read_input_registers(0, count=16, device_id=UNIT_ID))
                    readings.append(rr.registers)
            finally:
                client.close()
        return readings

    readings = run_sim(scenario)
    c = AsyncModbusTcpClient
    encoders = [c.convert_from_registers(r[0:2], DT.INT32) for r in readings]
    # then the encoder reads speed x time x counts/mm
    assert encoders == [0, 5000, 10000]
    # and the PLC shows its configuration
    regs = readings[0]
    assert c.convert_from_registers(regs[8:10], DT.INT32) == 8000  # reject distance in counts
    assert c.convert_from_registers(regs[10:12], DT.UINT32) == 10000  # counts per metre
    assert (regs[12], regs[13]) == (0, 50)  # heartbeat timeout, gate pulse


def test_a_strobe_in_pulse_mode_is_refused_with_a_modbus_exception():
    # given a PLC in pulse mode
    async def scenario():
        clock = Clock()
        async with VirtualPlc(GEOMETRY, PARTS, clock) as plc, ModbusPlcServer(plc, port=0) as server:
            client = AsyncModbusTcpClient(HOST, port=server.port)
            async with clock.hold():
                await client.connect()
                # when the vision side writes the handshake strobe
                strobe = await client.write_register(8, 1, device_id=UNIT_ID)
                heartbeat = await client.write_register(0, 1, device_id=UNIT_ID)
            client.close()
        return strobe, heartbeat

    strobe, heartbeat = run_sim(scenario)
    # then the write is refused (illegal address), while the heartbeat is accepted
    assert strobe.isError() and strobe.exception_code == 2
    assert not heartbeat.isError()


def test_a_port_in_use_is_a_clear_error_naming_modbus_port(busy_port):
    # given a port something else listens on
    async def scenario():
        async with VirtualPlc(GEOMETRY, PARTS, Clock()) as plc:
            # when the Modbus server starts there
            await ModbusPlcServer(plc, port=busy_port).start()

    # then the error names the parameter, the port and the address
    with pytest.raises(PlcPortInUseError, match=rf"modbus_port {busy_port} is already in use on 127\.0\.0\.1"):
        run_sim(scenario)


def test_the_register_map_is_documented_in_docs_plc_map(doc_text):
    # given the register map the server implements, then docs/plc-map.md lists every point at its address
    for point in MODBUS_MAP:
        row = re.search(rf"^\|[^|\n]*\b{point.address}\b[^|\n]*\|\s*`{point.name}`\s*\|", doc_text, re.MULTILINE)
        assert row, f"{point.table} {point.address} `{point.name}` is not in docs/plc-map.md"
