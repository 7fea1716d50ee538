"""plc.modbus against the virtual PLC's real Modbus TCP server on loopback, on the sim clock."""

from __future__ import annotations

import asyncio
import re

import pytest
import testnodes
from plc_support import GEOMETRY, LINE, PARTS, TruthVerdicts, free_loopback_port

from lineguard.runtime.clock import Clock, SimEventLoop
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.errors import NodeFailure
from lineguard.runtime.executor import Executor
from lineguard.runtime.loader import load_text
from lineguard.nodes.plc_modbus import ModbusPlcOutput
from lineguard.sim.plc import VirtualPlc
from lineguard.sim.plc_modbus import ModbusPlcServer


class FlakyModbusOutput(ModbusPlcOutput):
    """plc.modbus that fails once, right after taking the verdict of part ``fail_on_part`` into its
    outbox (a bug), to be restarted."""

    type_name = "test.flaky_plc_modbus"
    params_schema = {**ModbusPlcOutput.params_schema, "properties": {**ModbusPlcOutput.params_schema["properties"], "fail_on_part": {"type": "integer"}}}
    failed = False

    async def process(self, port, envelope):
        await super().process(port, envelope)
        if envelope.payload.part_id == self.params["fail_on_part"] and not FlakyModbusOutput.failed:
            FlakyModbusOutput.failed = True
            raise RuntimeError(f"broke after taking the verdict of part {envelope.payload.part_id}")


def graph(plc_params: str, source_params: str = "{}", plc_type: str = "plc.modbus", plc_extra: str = ""):
    registry = testnodes.test_registry()
    registry.register(TruthVerdicts)
    registry.register(FlakyModbusOutput)
    text = f"""version: 1
line: {LINE}
nodes:
  vision: {{type: test.truth_verdicts, params: {source_params}}}
  plc: {{type: {plc_type}, params: {plc_params}, in: {{verdicts: vision.verdicts}}{plc_extra}}}
"""
    return compile_document(load_text(text, "line.yaml"), registry)


def run_line(plc_params: str, *, mode: str = "handshake", source_params: str = "{}", audit: list | None = None, geometry=GEOMETRY, outage_s: tuple[float, float] | None = None, fails: str | None = None, no_verdict: str = "reject", ack_delay_ms: float = 0.0, plc_type: str = "plc.modbus", plc_extra: str = ""):
    """Run the graph against a virtual PLC sharing its clock; return (PLC report, run report).

    With ``fails``, the run must fail with a NodeFailure matching it; the second value is then the
    clock time of the failure (ns)."""

    async def main():
        clock = Clock()
        plc = VirtualPlc(geometry, PARTS, clock, mode=mode, heartbeat_timeout_ms=300, no_verdict=no_verdict, ack_delay_ms=ack_delay_ms)
        async with ModbusPlcServer(plc, port=free_loopback_port()) as server:
            g = graph(plc_params.replace("PORT", str(server.port)), source_params, plc_type, plc_extra)
            taps = {"plc.audit": audit.append} if audit is not None else {}
            hooks = [plc.start]
            if outage_s is not None:  # the PLC's server goes away and comes back on the same port

                async def outage():
                    await clock.sleep_until_ns(int(outage_s[0] * 1e9))
                    await server.stop()
                    await clock.sleep_until_ns(int(outage_s[1] * 1e9))
                    async with clock.hold():
                        await server.start()

                hooks.append(lambda: tasks.append(asyncio.ensure_future(outage())))
            tasks: list = []
            executor = Executor(g, clock=clock, on_flow_start=hooks, taps=taps)
            try:
                if fails is None:
                    report = await executor.run()
                else:
                    with pytest.raises(NodeFailure, match=fails):
                        await executor.run()
                    report = clock.now_ns()
                await asyncio.wait_for(plc.wait_all_scored(), 30)
                await asyncio.gather(*tasks)
            finally:
                plc.stop()
        return plc.report(), report

    with asyncio.Runner(loop_factory=SimEventLoop) as runner:
        return runner.run(main())


@pytest.mark.parametrize("mode", ["handshake", "pulse"])
def test_every_defective_part_is_rejected_at_the_gate_and_every_good_one_passes(mode):
    audit: list = []
    plc_report, run = run_line(f"{{port: PORT, mode: {mode}}}", mode=mode, audit=audit)
    s = plc_report.summary
    assert (s.escapes, s.false_rejects, s.fail_safe_rejects) == (0, 0, 0), plc_report.summary
    assert s.parts == len(PARTS) and s.rejected == sum(p.defective for p in PARTS)
    assert s.timing_error_max_abs_mm <= 1.0  # each reject within 1 mm of the gate
    assert run.status == "completed"
    assert len(audit) == len(PARTS)
    assert {a.payload.outcome for a in audit} <= ({"acked"} if mode == "handshake" else {"fired", "passed"})


def test_a_plc_that_acks_on_its_next_scan_is_waited_for_not_reconnected():
    # given a PLC whose ack registers show a command 30 ms after it was written (its next scan)
    audit: list = []
    plc_report, run = run_line("{port: PORT}", audit=audit, ack_delay_ms=30)
    # then every command was acked once the PLC answered, with no reconnect, and every part went right
    s = plc_report.summary
    assert (s.escapes, s.false_rejects, s.no_verdict_rejects) == (0, 0, 0)
    assert {a.payload.outcome for a in audit} == {"acked"} and len(audit) == len(PARTS)
    assert all(30e6 <= a.payload.acked_t_ns - a.payload.sent_t_ns < 40e6 for a in audit)
    assert "connection_lost" not in next(n for n in run.nodes if n["node"] == "plc")["events"]


def test_a_plc_that_acks_too_slowly_is_a_lost_link_named_by_its_strobe(caplog):
    # given a PLC whose acks show only 400 ms after a command, beyond the 250 ms the node waits
    # (two parts: each reconnect costs real time on loopback)
    audit: list = []
    plc_report, run = run_line("{port: PORT}", audit=audit, ack_delay_ms=400, source_params="{stop_after: 2}")
    # then the node said so and reconnected, as for a lost link; sending a command again did not
    # double it (the PLC took each strobe once), and no part went through on a command the PLC
    # had not taken: what went wrong went wrong as a reject (fail-safe or for want of a verdict)
    lost = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "reconnecting" in r.getMessage()]
    assert lost and "PLC did not ack strobe 1 within 250 ms (its ack shows strobe 0)" in lost[0]
    assert sum(c.kind == "handshake" for c in plc_report.commands) == len(audit) == 2
    assert plc_report.summary.escapes == 0
    assert all(p.reject_source in ("fail_safe", "no_verdict") for p in plc_report.parts if p.outcome == "false_reject")


@pytest.mark.parametrize(("mode", "breaks_on"), [("pulse", "its verdict"), ("handshake", "its verdict"), ("pulse", "the next verdict")])
def test_a_plc_output_restarted_by_its_policy_sends_the_verdicts_it_had_taken(mode, breaks_on):
    # given a PLC output with a restart policy that breaks right after taking the first defective
    # part's verdict (still in its outbox), or the next one's (in pulse mode, the first one's
    # reject then waits for its part to reach the gate)
    first_bad = min((p for p in PARTS if p.defective), key=lambda p: p.t_at_reject_ns(GEOMETRY))
    fail_on = first_bad.part_id if breaks_on == "its verdict" else first_bad.part_id + 1
    assert first_bad.t_at_reject_ns(GEOMETRY) > next(p for p in PARTS if p.part_id == fail_on).t_at_position_ns(GEOMETRY, 0.0)
    FlakyModbusOutput.failed = False
    audit: list = []
    plc_report, run = run_line(
        f"{{port: PORT, mode: {mode}, fail_on_part: {fail_on}}}", mode=mode, audit=audit,
        plc_type="test.flaky_plc_modbus", plc_extra=", restart: {max_restarts: 1, within_s: 60}",
    )
    # then the restarted node sent it: the PLC rejected the part on its verdict
    assert next(n for n in run.nodes if n["node"] == "plc")["restarts"] == 1
    assert plc_report.part(first_bad.part_id).reject_source == "command"
    assert plc_report.summary.escapes == 0
    assert first_bad.part_id in {a.payload.part_id for a in audit}


def test_a_verdict_that_comes_too_late_is_an_alarm_not_silence(caplog):
    # Verdicts 2.5 s after the part crossed the camera: its arrival (800 mm at 400 mm/s = 2 s) has passed.
    audit: list = []
    plc_report, run = run_line("{port: PORT}", source_params="{late_ms: 2500}", audit=audit)
    plc_node = next(n for n in run.nodes if n["node"] == "plc")
    assert plc_node["events"]["late"] == len(PARTS)
    assert plc_node["events"]["deadline_missed"] == len(PARTS)
    assert {a.payload.outcome for a in audit} == {"late"}
    # and no part went through on a verdict that came too late: the PLC rejected each one at the
    # gate for want of a verdict (positive release), good ones included
    s = plc_report.summary
    assert (s.escapes, s.no_verdict_rejects, s.rejected) == (0, len(PARTS), len(PARTS))
    # and each alarm says so, once
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == len(PARTS)
    assert all(m.endswith(f"deadline_missed, late, the PLC rejects the part for want of a verdict; PLC at {m.rsplit(' ', 1)[-1]}") for m in errors), errors[0]


def test_a_plc_without_positive_release_is_a_warning_at_start_and_a_late_verdict_says_the_part_went_through(caplog):
    # given a handshake PLC that lets a part without a verdict go, and verdicts that come too late
    plc_report, _ = run_line("{port: PORT}", source_params="{late_ms: 2500}", no_verdict="pass")
    # then the start warned that late verdicts let parts through, and every late one says it did
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "lineguard.nodes.plc"]
    assert len(warnings) == 1
    assert "releases a part that reaches the gate without a verdict" in warnings[0] and "Switch on positive release" in warnings[0]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == len(PARTS) and all("late, the part goes on without its verdict" in m for m in errors)
    assert plc_report.summary.escapes == sum(p.defective for p in PARTS) > 0


def test_a_pulse_mode_plc_is_a_warning_at_start_and_a_late_reject_lets_its_part_through(caplog):
    # given a PLC in pulse mode (vision fires the gate) and verdicts that come too late
    plc_report, _ = run_line("{port: PORT, mode: pulse}", mode="pulse", source_params="{late_ms: 2500}")
    # then the start warned that such parts go on, and they did
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "lineguard.nodes.plc"]
    assert len(warnings) == 1
    assert "is in pulse mode: a part whose reject comes too late, or never, goes on uninspected" in warnings[0]
    assert "Handshake mode with positive release rejects it" in warnings[0]
    assert plc_report.summary.escapes == sum(p.defective for p in PARTS) > 0


@pytest.mark.parametrize("vision_timeout", ["default", "null"])
def test_a_camera_that_stops_delivering_frames_stops_the_heartbeat_and_the_plc_rejects_the_unseen_parts(caplog, vision_timeout):
    # given a PLC in pulse mode (it rejects only what vision fires at) and a camera that delivers
    # nothing from 3.4 s to 8.0 s: parts 7, 8 and 9 (defective) and 6 and 10 (good) cross it unseen
    plc_params = "{port: PORT, mode: pulse}" if vision_timeout == "default" else "{port: PORT, mode: pulse, vision_timeout_ms: null}"
    plc_report, run = run_line(plc_params, mode="pulse", source_params="{freeze_s: [3.4, 8.0], end_s: 9.5}")
    unseen_bad = {7, 8, 9}
    assert {p.part_id for p in PARTS if p.defective} == unseen_bad  # what the freeze is placed for
    by_id = {p.part_id: p for p in plc_report.parts}
    events = next(n for n in run.nodes if n["node"] == "plc")["events"]
    if vision_timeout == "null":
        # without the check the heartbeat beats on: the defective parts nobody saw go through
        assert {i for i, p in by_id.items() if p.outcome == "escape"} == unseen_bad
        assert "vision_stalled" not in events
        return
    # then 2 s into the freeze the heartbeat stopped, loudly, and the PLC's fail-safe rejected
    # every defective part nobody saw; part 6 (good, unseen) was at the gate then too
    assert plc_report.summary.escapes == 0
    assert all(by_id[i].rejected and by_id[i].reject_source == "fail_safe" for i in unseen_bad)
    assert by_id[6].reject_source == "fail_safe" and by_id[5].outcome == "correct_pass"
    assert events["vision_stalled"] == 1 and plc_report.summary.fail_safe_episodes == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "lineguard.nodes.plc"]
    assert len(errors) == 1
    assert "no frame has been inspected for 2.0 s" in errors[0].getMessage() and "heartbeat withheld" in errors[0].getMessage()
    # and once frames flowed again the heartbeat did too: part 10 (good, unseen) passed at 8.5 s
    resumed = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "inspection resumed after" in r.getMessage()]
    assert len(resumed) == 1
    # withheld from 2.0 s after the last frame (3.37 s) until the first frame back (8.0 s), each
    # seen at the heartbeat's next 100 ms beat
    assert 2.5 <= float(re.search(r"after ([0-9.]+) s", resumed[0]).group(1)) <= 2.8, resumed[0]
    assert by_id[10].outcome == "correct_pass"


def test_in_pulse_mode_a_reject_that_could_not_be_fired_in_its_window_is_never_fired_later():
    # given a PLC in pulse mode whose link drops 30 ms before a defective part reaches the gate and
    # comes back 250 ms later (100 mm of belt: past the gate window, near the next part)
    first_bad = min((p for p in PARTS if p.defective), key=lambda p: p.t_at_reject_ns(GEOMETRY))
    t_gate_s = first_bad.t_at_reject_ns(GEOMETRY) / 1e9
    audit: list = []
    plc_report, _ = run_line("{port: PORT, mode: pulse, reconnect: {first_delay_s: 0.1, max_delay_s: 0.2}}", mode="pulse", audit=audit, outage_s=(t_gate_s - 0.03, t_gate_s + 0.25))
    # then its reject is an alarm, "missed", and the gate was not fired at whatever passed later
    record = next(a.payload for a in audit if a.payload.part_id == first_bad.part_id)
    assert (record.outcome, record.alarms) == ("missed", ["deadline_missed"])
    assert plc_report.summary.misfires == 0
    assert all(p.outcome in ("correct_reject", "correct_pass") for p in plc_report.parts if p.part_id != first_bad.part_id)


def test_a_plc_that_is_gone_at_the_end_of_the_stream_fails_the_run_once_the_last_part_has_passed():
    # given a PLC that goes away 5 s into the run and comes back only an hour later; the last
    # part is seen at 6.5 s and reaches the gate at 8.5 s
    last_arrival_s = max(p.t_at_reject_ns(GEOMETRY) for p in PARTS) / 1e9
    # then the run ends in an error naming the parts whose verdicts never reached the PLC, one
    # reconnect cycle (0.4 + 5 + 1 s) after the last part passed the gate, instead of waiting for
    # the PLC forever
    plc_report, failed_at_ns = run_line("{port: PORT, reconnect: {first_delay_s: 0.1, max_delay_s: 0.4}}", outage_s=(5.0, 3600.0), fails=r"PLC at modbus://127\.0\.0\.1:\d+ did not take \d+ verdicts before their parts passed the gate \(parts \d+(, \d+)*\); the PLC rejected them for want of a verdict")
    assert last_arrival_s + 6.4 < failed_at_ns / 1e9 < last_arrival_s + 6.5
    assert plc_report.summary.escapes == 0


def test_a_plc_with_positive_release_starts_without_a_warning(caplog):
    run_line("{port: PORT}")
    assert not [r for r in caplog.records if r.levelname == "WARNING" and r.name == "lineguard.nodes.plc"]


def test_when_vision_stops_the_plc_rejects_every_part_from_then_on():
    # The vision side stops after 3 parts (end of stream) — its heartbeat stops after the last one passed.
    plc_report, _ = run_line("{port: PORT}", source_params="{stop_after: 3}")
    scored = {p.part_id: p for p in plc_report.parts}
    later = [p for p in sorted(PARTS, key=lambda p: -p.x0_mm)[4:]]
    assert all(scored[p.part_id].rejected for p in later)
    assert plc_report.summary.fail_safe_rejects >= len([p for p in later if not p.defective])


def test_when_the_vision_side_breaks_mid_run_the_run_fails_loudly_and_the_plc_rejects_every_later_part():
    failure = r"node 'vision' \(test.truth_verdicts@v1\) failed: RuntimeError: inference failed on the frame of part"
    report, failed_ns = run_line("{port: PORT}", source_params="{fail_after: 3}", fails=failure)
    s = report.summary
    assert s.parts == len(PARTS) and s.escapes == 0  # no defective part got through, judged or not
    # every part reaching the gate once the watchdog ran out (300 ms after the failure) was rejected,
    # the good ones by the fail-safe: none went through uninspected
    after = [p for p in report.parts if p.t_at_reject_ns > failed_ns + 300_000_000]
    assert len(after) >= len(PARTS) - 4 and all(p.rejected for p in after)
    assert s.fail_safe_episodes == 1 and s.fail_safe_rejects >= sum(not p.defective for p in after) > 0


def test_an_unreachable_plc_fails_the_start_naming_it(free_port):
    with pytest.raises(NodeFailure, match=rf"node 'plc' \(plc.modbus@v1\) failed: ConnectionError: PLC at modbus://127.0.0.1:{free_port} is unreachable .*the line must not run uninspected"):
        from lineguard.runtime.executor import run_graph_sync

        run_graph_sync(graph(f"{{port: {free_port}, connect_timeout_s: 1}}"), "sim")


def test_a_plc_whose_gate_distance_disagrees_with_the_recipe_fails_the_start():
    from lineguard.sim.truth import BeltGeometry

    other = BeltGeometry(belt_speed_mm_s=400.0, reject_distance_mm=750.0, encoder_counts_per_mm=10.0)
    with pytest.raises(NodeFailure, match=r"PLC at modbus://127.0.0.1:\d+ has the gate 7500 counts downstream at 10 counts/mm; the recipe's line says 800 mm × 10 counts/mm = 8000 counts"):
        run_line("{port: PORT}", geometry=other)


def test_a_plc_in_the_other_mode_fails_the_start():
    with pytest.raises(NodeFailure, match=r"PLC at modbus://127.0.0.1:\d+ is in pulse mode, the recipe asks for handshake mode"):
        run_line("{port: PORT, mode: handshake}", mode="pulse")


def test_a_plc_restart_loses_no_verdict_and_the_plc_fails_safe_meanwhile():
    audit: list = []
    plc_report, run = run_line("{port: PORT, reconnect: {first_delay_s: 0.1, max_delay_s: 0.4}}", audit=audit, outage_s=(1.0, 2.5))
    plc_node = next(n for n in run.nodes if n["node"] == "plc")
    assert plc_node["events"]["connection_lost"] >= 1 and plc_node["events"]["reconnected"] >= 1
    assert sorted(a.payload.part_id for a in audit) == sorted(p.part_id for p in PARTS)  # every verdict reached the PLC
    assert plc_report.summary.escapes == 0  # no defective part got through
    assert plc_report.summary.fail_safe_episodes >= 1  # while vision was cut off, the PLC rejected everything
