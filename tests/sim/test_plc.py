"""The virtual PLC's logic, without a protocol: gate, shift register, watchdog, scoring, report.

Everything runs on simulated time (``run_sim``), except one short wall-clock run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from lineguard.runtime.clock import Clock, run_sim
from lineguard.sim.plc import (
    AckStatus,
    HandshakeCommand,
    Verdict,
    VirtualPlc,
    arrival_count,
    parts_for_duration,
    periodic_parts,
)
from lineguard.sim.plc_cli import register
from lineguard.sim.truth import BeltGeometry, DefectTruth, PartTruth

GEOMETRY = BeltGeometry(belt_speed_mm_s=400.0, reject_distance_mm=800.0, encoder_counts_per_mm=10.0, gate_window_mm=40.0)
SCRATCH = (DefectTruth("scratch", (0, 0, 5, 5)),)
MS = 1_000_000


def _part(part_id: int, x0_mm: float, defective: bool = True) -> PartTruth:
    return PartTruth(part_id, "pcb", x0_mm, 0.0, 120.0, 80.0, SCRATCH if defective else ())


def _run(parts, script, *, mode="pulse", heartbeat_timeout_ms=0.0, **kwargs):
    """Run ``script(plc, clock)`` on the sim clock until every part is scored; return (report, script's result)."""

    async def main():
        clock = Clock()
        async with VirtualPlc(GEOMETRY, parts, clock, mode=mode, heartbeat_timeout_ms=heartbeat_timeout_ms, **kwargs) as plc:
            result = await script(plc, clock)
            await plc.wait_all_scored()
        return plc.report(), result

    return run_sim(main)


def _capture(plc: VirtualPlc, clock: Clock, part: PartTruth, strobe: int, verdict: int = Verdict.REJECT) -> HandshakeCommand:
    """What a perfect vision side sends for ``part`` now."""
    return HandshakeCommand(
        strobe=strobe,
        part_id=part.part_id,
        verdict=verdict,
        encoder_at_capture=plc.encoder(),
        position_at_capture_counts=round(part.position_mm(GEOMETRY, clock.now_ns()) * GEOMETRY.encoder_counts_per_mm),
    )


# -- pulse mode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_mm", [0.0, 5.0, -5.0, 15.0])
def test_a_pulse_within_the_window_rejects_the_part_with_its_timing_error(offset_mm):
    # given one defective part
    part = _part(1, -100.0)

    async def script(plc, clock):
        # when the gate fires when the part's centre is offset_mm from the gate
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, GEOMETRY.reject_distance_mm + offset_mm))
        plc.fire_gate()

    report, _ = _run([part], script)
    # then it is rejected and the report says how far off the firing was
    score = report.part(1)
    assert (score.rejected, score.outcome, score.reject_source) == (True, "correct_reject", "command")
    assert score.timing_error_mm == pytest.approx(offset_mm, abs=1e-3)
    assert report.summary.timing_error_max_abs_mm == pytest.approx(abs(offset_mm), abs=1e-3)


def test_a_pulse_after_the_part_left_the_window_is_late_and_the_part_escapes():
    # given a defective part and a firing 100 ms (40 mm) after it passed the gate
    part = _part(1, -100.0)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_reject_ns(GEOMETRY) + 100 * MS)
        plc.fire_gate()

    report, _ = _run([part], script)
    # then the part escaped, with one late command and its timing error
    score = report.part(1)
    assert (score.rejected, score.outcome, score.late_commands) == (False, "escape", 1)
    assert score.timing_error_mm == pytest.approx(40.0, abs=1e-3)
    assert (report.summary.escapes, report.summary.late_commands, report.summary.misfires) == (1, 1, 1)


def test_a_pulse_long_before_the_part_arrives_is_a_misfire_not_a_late_command():
    # given a defective part and a firing 150 ms (60 mm) before it reaches the gate
    part = _part(1, -100.0)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_reject_ns(GEOMETRY) - 150 * MS)
        plc.fire_gate()

    report, _ = _run([part], script)
    # then the part escaped; the firing missed early
    assert report.part(1).outcome == "escape"
    assert report.part(1).timing_error_mm == pytest.approx(-60.0, abs=1e-3)
    assert (report.summary.misfires, report.summary.late_commands) == (1, 0)


def test_a_pulse_rejects_every_part_in_the_window_so_a_good_neighbour_is_a_false_reject():
    # given a defective part with a good part only 30 mm behind it
    bad, good = _part(1, -100.0), _part(2, -130.0, defective=False)

    async def script(plc, clock):
        await clock.sleep_until_ns(bad.t_at_reject_ns(GEOMETRY))
        plc.fire_gate()

    report, _ = _run([bad, good], script)
    # then both went into the reject bin
    assert report.part(1).outcome == "correct_reject"
    assert report.part(2).outcome == "false_reject"
    assert report.part(2).timing_error_mm == pytest.approx(-30.0, abs=1e-3)


def test_gate_active_follows_the_pulse_length():
    async def script(plc, clock):
        plc.fire_gate()
        during = plc.status().gate_active
        await clock.sleep_until_ns(clock.now_ns() + 60 * MS)
        return during, plc.status().gate_active

    # given a 50 ms gate pulse, when it fires, then the gate is active during it and not 60 ms later
    _, (during, after) = _run([_part(1, -100.0)], script, gate_pulse_ms=50)
    assert (during, after) == (True, False)


# -- handshake mode -------------------------------------------------------------------------------


def test_a_handshake_command_is_acked_and_the_shift_register_fires_at_the_arrival_count():
    # given a defective part captured 50 mm past the camera axis
    part = _part(7, -200.0)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, 50.0))
        command = _capture(plc, clock, part, strobe=1)
        # when the vision side strobes its reject verdict
        ack = plc.strobe(command)
        return command, ack, plc.status().shift_register_depth

    report, (command, ack, depth) = _run([part], script, mode="handshake")
    # then the PLC acks it with the arrival count of docs/plc-map.md, holds it, and rejects the part on time
    assert (ack.strobe, ack.part_id, ack.status) == (1, 7, AckStatus.ACCEPTED)
    assert ack.arrival_count == command.encoder_at_capture + 8000 - command.position_at_capture_counts
    assert ack.arrival_count == part.encoder_at_reject(GEOMETRY)
    assert depth == 1
    assert report.part(7).outcome == "correct_reject"
    assert abs(report.part(7).timing_error_mm) < 0.1


def test_a_pass_verdict_does_not_fire_the_gate():
    part = _part(1, -200.0, defective=False)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, 0.0))
        return plc.strobe(_capture(plc, clock, part, strobe=1, verdict=Verdict.PASS))

    # given a good part with a pass verdict, then it is acked and passes
    report, ack = _run([part], script, mode="handshake")
    assert ack.status is AckStatus.ACCEPTED
    assert report.part(1).outcome == "correct_pass"
    assert report.summary.misfires == 0


@pytest.mark.parametrize(
    ("no_verdict", "outcome", "source"), [("reject", "correct_reject", "no_verdict"), ("pass", "escape", None)]
)
def test_a_handshake_command_for_a_part_past_the_gate_is_late(no_verdict, outcome, source):
    # given a defective part whose centre passed the gate 10 mm ago
    part = _part(1, -200.0)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, GEOMETRY.reject_distance_mm + 10.0))
        # when its reject command arrives now
        return plc.strobe(_capture(plc, clock, part, strobe=1))

    report, ack = _run([part], script, mode="handshake", no_verdict=no_verdict)
    # then the ack says late and nothing fires for it; the part, which reached the gate without a
    # verdict, was rejected at its arrival by positive release (the default), or escaped without it
    assert ack.status is AckStatus.LATE
    score = report.part(1)
    assert (score.outcome, score.reject_source, score.late_commands) == (outcome, source, 1)
    assert report.summary.late_commands == 1
    assert report.summary.no_verdict_rejects == (1 if no_verdict == "reject" else 0)


def test_positive_release_rejects_a_good_part_whose_pass_verdict_came_late():
    # given a good part whose pass verdict reaches the PLC 5 mm after its centre reached the gate
    part = _part(1, -200.0, defective=False)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, GEOMETRY.reject_distance_mm + 5.0))
        return plc.strobe(_capture(plc, clock, part, strobe=1, verdict=Verdict.PASS))

    report, ack = _run([part], script, mode="handshake")
    # then it was rejected, not released uninspected: a false reject, never an escape
    assert ack.status is AckStatus.LATE
    assert (report.part(1).outcome, report.part(1).reject_source) == ("false_reject", "no_verdict")


def test_positive_release_rejects_a_part_nobody_sent_a_verdict_for_and_releases_the_rest():
    # given three good parts: a pass verdict in time for the first and third, none for the second
    parts = [_part(i, -200.0 - 260 * i, defective=False) for i in range(1, 4)]

    async def script(plc, clock):
        acks = []
        for strobe, p in ((1, parts[0]), (2, parts[2])):
            await clock.sleep_until_ns(p.t_at_position_ns(GEOMETRY, 0.0))
            acks.append(plc.strobe(_capture(plc, clock, p, strobe=strobe, verdict=Verdict.PASS)))
        return acks

    report, acks = _run(parts, script, mode="handshake")
    # then the two with verdicts pass and the one the vision side never judged is rejected at the gate
    assert [a.status for a in acks] == [AckStatus.ACCEPTED, AckStatus.ACCEPTED]
    assert [report.part(p.part_id).outcome for p in parts] == ["correct_pass", "false_reject", "correct_pass"]
    assert report.part(2).reject_source == "no_verdict"
    assert (report.summary.no_verdict_rejects, report.summary.misfires) == (1, 0)
    assert [c.kind for c in report.commands] == ["handshake", "handshake", "no_verdict"]


def test_a_verdict_aimed_outside_the_gate_window_does_not_release_the_part():
    # given a good part, and a pass verdict whose position is off by 30 mm (more than half the 40 mm window)
    part = _part(1, -200.0, defective=False)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, 0.0))
        command = _capture(plc, clock, part, strobe=1, verdict=Verdict.PASS)
        wrong = HandshakeCommand(**{**command.__dict__, "position_at_capture_counts": command.position_at_capture_counts + 300})
        return plc.strobe(wrong)

    report, ack = _run([part], script, mode="handshake")
    # then the PLC took it, but no verdict was waiting when the part reached the gate: rejected
    assert ack.status is AckStatus.ACCEPTED
    assert (report.part(1).rejected, report.part(1).reject_source) == (True, "no_verdict")


@pytest.mark.parametrize(
    ("sent_mm", "status", "outcome"),
    [(-0.5, AckStatus.ACCEPTED, "correct_pass"), (0.0, AckStatus.LATE, "false_reject"), (0.5, AckStatus.LATE, "false_reject")],
)
def test_a_pass_verdict_releases_its_part_only_if_it_came_before_the_part_reached_the_gate(sent_mm, status, outcome):
    # given a good part and a pass verdict whose count is 1 mm behind the part (the vision side's
    # estimate a little off), sent when the part's centre is sent_mm from the gate
    part = _part(1, -200.0, defective=False)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, GEOMETRY.reject_distance_mm + sent_mm))
        command = _capture(plc, clock, part, strobe=1, verdict=Verdict.PASS)
        return plc.strobe(HandshakeCommand(**{**command.__dict__, "position_at_capture_counts": command.position_at_capture_counts - 10}))

    report, ack = _run([part], script, mode="handshake")
    # then before the gate it is taken and releases the part; from the moment the part is at the gate
    # it is late, and the ack says so: the part was already rejected for want of a verdict
    assert ack.status is status
    assert report.part(1).outcome == outcome


def test_a_pass_verdict_due_a_hair_before_its_part_still_releases_it():
    # given a pass verdict whose count is 1 mm ahead of the part: it leaves the shift register
    # before the part's centre reaches the gate
    part = _part(1, -200.0, defective=False)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, 0.0))
        command = _capture(plc, clock, part, strobe=1, verdict=Verdict.PASS)
        return plc.strobe(HandshakeCommand(**{**command.__dict__, "position_at_capture_counts": command.position_at_capture_counts + 10}))

    report, ack = _run([part], script, mode="handshake")
    assert ack.status is AckStatus.ACCEPTED
    assert report.part(1).outcome == "correct_pass"


def test_a_verdict_for_a_part_added_to_the_line_afterwards_releases_it():
    # given a pass verdict strobed before the conveyor told the PLC about its part
    part = _part(1, -200.0, defective=False)

    async def main():
        clock = Clock()
        async with VirtualPlc(GEOMETRY, [], clock, mode="handshake", heartbeat_timeout_ms=0) as plc:
            await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, 0.0))
            ack = plc.strobe(_capture(plc, clock, part, 1, Verdict.PASS))
            plc.add_parts([part])
            await plc.wait_all_scored()
        return plc.report(), ack

    report, ack = run_sim(main)
    # then the part is released when it reaches the gate
    assert (ack.status, report.part(1).outcome) == (AckStatus.ACCEPTED, "correct_pass")


def test_the_report_says_whether_positive_release_was_on():
    report, _ = _run([_part(1, -200.0)], _noop, mode="handshake")
    assert report.to_dict()["no_verdict"] == "reject"
    assert "positive release" in report.summary_table().title
    report, _ = _run([_part(1, -200.0)], _noop, mode="handshake", no_verdict="pass")
    assert report.to_dict()["no_verdict"] == "pass" and "positive release" not in report.summary_table().title


def test_pulse_mode_has_no_verdicts_to_wait_for():
    # given a pulse-mode PLC and a good part nobody fires for, then it passes (pulse mode: the vision side owns the gate)
    report, _ = _run([_part(1, -200.0, defective=False)], _noop, mode="pulse")
    assert report.part(1).outcome == "correct_pass"
    assert report.summary.no_verdict_rejects == 0


async def _noop(plc, clock):
    return None


def test_an_invalid_verdict_is_taken_as_reject():
    part = _part(1, -200.0, defective=False)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, 0.0))
        return plc.strobe(_capture(plc, clock, part, strobe=1, verdict=0))

    # given a verdict word of 0, then the PLC acks "invalid verdict" and rejects the part (fail safe)
    report, ack = _run([part], script, mode="handshake")
    assert ack.status is AckStatus.INVALID_VERDICT
    assert report.part(1).rejected


def test_the_same_strobe_twice_is_one_command():
    part = _part(1, -200.0)

    async def script(plc, clock):
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, 0.0))
        first = plc.strobe(_capture(plc, clock, part, strobe=5))
        again = plc.strobe(_capture(plc, clock, part, strobe=5))
        return first, again, plc.status().shift_register_depth

    # given a command strobed twice with the same value (a retry), then it is taken once
    report, (first, again, depth) = _run([part], script, mode="handshake")
    assert again == first and depth == 1
    assert [c.kind for c in report.commands] == ["handshake"]


def test_an_ack_shows_after_its_delay_and_a_stopped_plc_shows_no_more_acks():
    part = _part(1, -200.0)

    async def main():
        clock = Clock()
        plc = VirtualPlc(GEOMETRY, [part], clock, mode="handshake", heartbeat_timeout_ms=0.0, ack_delay_ms=30)
        changes: list[int] = []
        plc.subscribe(lambda: changes.append(clock.now_ns()))
        plc.start()
        await clock.sleep_until_ns(part.t_at_position_ns(GEOMETRY, 0.0))
        sent = clock.now_ns()
        plc.strobe(_capture(plc, clock, part, strobe=1))
        await clock.sleep(0.010)
        before = plc.status().ack
        await clock.sleep(0.030)
        shown = plc.status().ack
        plc.strobe(_capture(plc, clock, part, strobe=2, verdict=Verdict.PASS))
        plc.stop()
        await clock.sleep(0.100)
        return sent, before, shown, plc.status().ack, changes

    # given a PLC whose ack registers show an ack 30 ms after its command
    sent, before, shown, after_stop, changes = run_sim(main)
    # then the ack is not there 10 ms after the strobe, and is there 40 ms after
    assert before is None and shown is not None and shown.strobe == 1
    assert changes == [sent + 30 * MS]
    # and when the PLC is stopped with an ack still to show, it shows no more and tells nobody
    assert after_stop.strobe == 1


def test_a_full_shift_register_refuses_commands():
    parts = [_part(i, -200.0 - 260 * i) for i in range(1, 4)]

    async def script(plc, clock):
        return [plc.strobe(_capture(plc, clock, p, strobe=i)) for i, p in enumerate(parts, start=1)]

    # given a shift register of 2 entries, when 3 commands arrive before any part reaches the gate
    report, acks = _run(parts, script, mode="handshake", shift_register_size=2)
    # then the third is refused, and its part is rejected for want of a verdict (positive release) ...
    assert [a.status for a in acks] == [AckStatus.ACCEPTED, AckStatus.ACCEPTED, AckStatus.SHIFT_REGISTER_FULL]
    assert [report.part(p.part_id).reject_source for p in parts] == ["command", "command", "no_verdict"]
    assert report.summary.refused_commands == 1
    # ... where a PLC without positive release lets it escape
    report, _ = _run(parts, script, mode="handshake", shift_register_size=2, no_verdict="pass")
    assert [report.part(p.part_id).outcome for p in parts] == ["correct_reject", "correct_reject", "escape"]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    speed=st.floats(100, 2000),
    reject_distance=st.floats(200, 2000),
    counts_per_mm=st.sampled_from([1.0, 4.0, 10.0, 25.0]),
    capture_mm=st.floats(-100, 100),
    x0=st.floats(-500, -150),
)
def test_the_shift_register_fires_within_rounding_of_the_counts_for_any_geometry(speed, reject_distance, counts_per_mm, capture_mm, x0):
    # given any belt and a part captured anywhere in the image
    geometry = BeltGeometry(speed, reject_distance, counts_per_mm, gate_window_mm=40.0)
    part = _part(1, x0)

    async def main():
        clock = Clock()
        async with VirtualPlc(geometry, [part], clock, mode="handshake", heartbeat_timeout_ms=0) as plc:
            await clock.sleep_until_ns(part.t_at_position_ns(geometry, capture_mm))
            encoder = plc.encoder()
            position = round(part.position_mm(geometry, clock.now_ns()) * counts_per_mm)
            plc.strobe(HandshakeCommand(1, 1, Verdict.REJECT, encoder, position))
            await plc.wait_all_scored()
        return plc.report()

    # when a perfect vision side sends its verdict, then the part is rejected within 1.5 encoder counts
    # (the encoder at capture, the position and the PLC's reject distance are whole counts: ±0.5 each)
    score = run_sim(main).part(1)
    assert score.rejected
    assert abs(score.timing_error_mm) <= 1.5 / counts_per_mm + 1e-6


# -- heartbeat watchdog ------------------------------------------------------------------------


def test_without_heartbeat_every_part_is_rejected_until_it_comes_back():
    # given good parts at 260 mm pitch and a watchdog of 300 ms, and no heartbeat until t = 5 s
    parts = periodic_parts(count=10, spacing_mm=260.0, defect_rate=0.0)
    resume_ns = 5_000_000_000

    async def script(plc, clock):
        await clock.sleep_until_ns(resume_ns)
        plc.write_heartbeat(1)  # heartbeats come back ...
        for beat in range(2, 100):  # ... and keep coming
            await clock.sleep(0.1)
            plc.write_heartbeat(beat)

    report, _ = _run(parts, script, heartbeat_timeout_ms=300)
    # then every part reaching the gate before 5 s was rejected by the fail-safe, and none after
    for score in report.parts:
        if score.t_at_reject_ns < resume_ns:
            assert (score.rejected, score.fail_safe, score.outcome) == (True, True, "false_reject")
        else:
            assert (score.rejected, score.outcome) == (False, "correct_pass")
    assert report.summary.fail_safe_episodes == 1
    assert report.summary.fail_safe_rejects == sum(p.t_at_reject_ns(GEOMETRY) < resume_ns for p in parts) > 0


def test_a_repeated_heartbeat_value_is_no_heartbeat():
    async def script(plc, clock):
        plc.write_heartbeat(7)
        for _ in range(5):
            await clock.sleep(0.1)
            plc.write_heartbeat(7)  # stuck value
        return plc.status().fail_safe

    # given a heartbeat word that stops changing, then the watchdog trips
    _, fail_safe = _run([_part(1, -100.0)], script, heartbeat_timeout_ms=300)
    assert fail_safe


# -- commands in the wrong mode, parameters -------------------------------------------------------


def test_commands_of_the_other_mode_are_refused_with_a_clear_error():
    async def main():
        clock = Clock()
        async with VirtualPlc(GEOMETRY, [], clock, mode="handshake") as plc:
            plc.fire_gate()

    with pytest.raises(PermissionError, match="fire_gate is a pulse-mode command; this PLC runs in handshake mode"):
        run_sim(main)


def test_commands_before_start_say_to_start_the_plc():
    plc = VirtualPlc(GEOMETRY, [], clock=None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="VirtualPlc.fire_gate: start the PLC first"):
        plc.fire_gate()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "burst"}, r"mode: expected one of \('pulse', 'handshake'\), got 'burst'"),
        ({"heartbeat_timeout_ms": -1}, r"heartbeat_timeout_ms: expected >= 0"),
        ({"gate_pulse_ms": 0}, r"gate_pulse_ms: expected > 0"),
        ({"shift_register_size": 0}, r"shift_register_size: expected >= 1"),
        ({"no_verdict": "release"}, r"no_verdict: expected one of \('reject', 'pass'\), got 'release'"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, message):
    async def main():
        VirtualPlc(GEOMETRY, [], Clock(), **kwargs)

    with pytest.raises(ValueError, match=message):
        run_sim(main)


def test_duplicate_part_ids_are_refused():
    async def main():
        VirtualPlc(GEOMETRY, [_part(1, -100.0), _part(1, -300.0)], Clock())

    with pytest.raises(ValueError, match="part_id 1 appears twice"):
        run_sim(main)


# -- parts, streaming, report -----------------------------------------------------------------


def test_parts_added_while_running_are_scored():
    async def script(plc, clock):
        late_part = _part(2, -100.0 - GEOMETRY.travel_mm(clock.now_ns()) - 50)
        await clock.sleep(1.0)
        plc.add_parts([late_part])
        await clock.sleep_until_ns(late_part.t_at_reject_ns(GEOMETRY))
        plc.fire_gate()

    # given a line with one part, when the conveyor adds another one a second later
    report, _ = _run([_part(1, -100.0, defective=False)], script)
    # then both are scored, the late one as commanded
    assert [(p.part_id, p.outcome) for p in report.parts] == [(1, "correct_pass"), (2, "correct_reject")]


def test_periodic_parts_are_seeded_and_evenly_spaced():
    a = periodic_parts(count=50, spacing_mm=200.0, defect_rate=0.3, seed=4)
    assert a == periodic_parts(count=50, spacing_mm=200.0, defect_rate=0.3, seed=4)
    assert a != periodic_parts(count=50, spacing_mm=200.0, defect_rate=0.3, seed=5)
    assert [p.part_id for p in a] == list(range(1, 51))
    assert {round(p.x0_mm - q.x0_mm, 6) for p, q in zip(a, a[1:])} == {200.0}
    assert 5 < sum(p.defective for p in a) < 25
    # and parts_for_duration makes just enough to reach the gate in time
    parts = parts_for_duration(GEOMETRY, 10.0, spacing_mm=200.0)
    assert all(p.t_at_reject_ns(GEOMETRY) <= 10_000_000_000 for p in parts)
    assert len(parts) == 16


def test_arrival_count_formula():
    # given the docs' example: encoder 12345 at capture, centre 12.3 mm past the camera axis
    assert arrival_count(GEOMETRY, 12345, 123) == 20222


def test_the_report_is_json_and_a_table_that_show_the_escapes():
    # given a run with one escape and one correct reject
    parts = [_part(1, -100.0), _part(2, -400.0)]

    async def script(plc, clock):
        await clock.sleep_until_ns(parts[0].t_at_reject_ns(GEOMETRY))
        plc.fire_gate()

    report, _ = _run(parts, script)
    # when it is written as JSON, then it holds the summary, every part and every command
    data = json.loads(report.to_json())
    assert data["summary"]["escapes"] == 1 and data["summary"]["correct_rejects"] == 1
    assert [(p["part_id"], p["outcome"]) for p in data["parts"]] == [(1, "correct_reject"), (2, "escape")]
    assert data["commands"][0]["kind"] == "pulse" and data["commands"][0]["target_part_id"] == 1
    assert data["geometry"]["reject_distance_mm"] == 800.0
    # and as tables, one row per part plus the summary
    out = io.StringIO()
    Console(file=out, width=120).print(report)
    text = out.getvalue()
    assert "correct_reject" in text and "escape" in text
    assert "escapes (defective passed)" in text


def test_parts_still_upstream_are_pending_in_the_report():
    async def main():
        clock = Clock()
        parts = [_part(1, -100.0), _part(2, -2000.0)]
        async with VirtualPlc(GEOMETRY, parts, clock, heartbeat_timeout_ms=0) as plc:
            await clock.sleep(3.0)  # part 1 is past the gate, part 2 is not
        return plc.report()

    report = run_sim(main)
    assert (report.summary.parts, report.summary.pending) == (1, 1)
    assert [p.part_id for p in report.parts] == [1]


# -- wall clock --------------------------------------------------------------------------------


async def test_on_a_wall_clock_loop_a_pulse_at_arrival_rejects_the_part():
    # given a fast belt on real time: parts reach the gate within half a second
    geometry = BeltGeometry(belt_speed_mm_s=1000.0, reject_distance_mm=150.0, gate_window_mm=40.0)
    parts = [PartTruth(i, "pcb", -100.0 * i, 0.0, 60.0, 40.0, SCRATCH if i % 2 else ()) for i in (1, 2, 3)]
    clock = Clock()
    async with VirtualPlc(geometry, parts, clock, heartbeat_timeout_ms=0, gate_pulse_ms=10) as plc:
        # when the vision side fires at each defective part's arrival time
        for part in parts:
            if part.defective:
                await clock.sleep_until_ns(part.t_at_reject_ns(geometry))
                plc.fire_gate()
        await plc.wait_all_scored()
    report = plc.report()
    # then the defective parts were rejected (timer jitter of a few ms is a few mm at 1 m/s)
    assert [p.outcome for p in report.parts] == ["correct_reject", "correct_pass", "correct_reject"]
    assert report.summary.timing_error_max_abs_mm < 20.0


async def test_on_a_wall_clock_loop_a_busy_vision_side_does_not_make_the_shift_register_fire_late():
    # given a fast belt on real time and a reject command already in the PLC's shift register
    geometry = BeltGeometry(belt_speed_mm_s=1000.0, reject_distance_mm=300.0, encoder_counts_per_mm=10.0, gate_window_mm=40.0)
    part = PartTruth(1, "pcb", -50.0, 0.0, 60.0, 40.0, SCRATCH)
    clock = Clock()
    loop = asyncio.get_running_loop()
    async with VirtualPlc(geometry, [part], clock, mode="handshake", heartbeat_timeout_ms=0, gate_pulse_ms=10) as plc:
        ack = plc.strobe(
            HandshakeCommand(1, 1, Verdict.REJECT, plc.encoder(), round(part.position_mm(geometry, clock.now_ns()) * 10))
        )
        assert ack.status == AckStatus.ACCEPTED
        # when the vision side holds the loop (and the interpreter) for 200 ms around the arrival,
        # as a long numpy call does: 200 mm of belt at this speed, five gate windows
        t_due_s = (part.t_at_reject_ns(geometry) - clock.now_ns()) / 1e9
        loop.call_later(max(0.0, t_due_s - 0.05), time.sleep, 0.2)
        await plc.wait_all_scored()
    report = plc.report()
    # then the gate fired at the arrival count, as a PLC's encoder-clocked shift register does,
    # and the report says how late the PLC's own timer ran
    assert report.part(1).outcome == "correct_reject"
    assert abs(report.part(1).timing_error_mm) < 0.5
    assert report.summary.misfires == 0
    assert report.summary.timer_lag_max_ms >= 100


def _stall_then(t_ns: int, stall_s: float, then):
    """At ``t_ns`` the vision side holds the loop for ``stall_s`` (sim time passes, the PLC's timers
    cannot run), then calls ``then()``: what a long computation does on a real line."""

    async def script(plc, clock):
        loop = asyncio.get_running_loop()

        def busy():
            loop.busy(stall_s)
            then(plc, clock)

        loop.call_later((t_ns - clock.now_ns()) / 1e9, busy)
        return None

    return script


def test_positive_release_judges_a_part_at_its_arrival_even_when_the_plc_timer_runs_late():
    # given a good part, and a vision side that holds the loop from 50 ms before the part reaches
    # the gate to 25 ms (10 mm) after it, then sends a pass whose count it placed 18 mm downstream:
    # not yet due by its own count, but the part was at the gate without a verdict 25 ms ago
    part = _part(1, -200.0, defective=False)
    acks = []

    def send_pass(plc, clock):
        command = _capture(plc, clock, part, strobe=1, verdict=Verdict.PASS)
        acks.append(plc.strobe(HandshakeCommand(**{**command.__dict__, "position_at_capture_counts": command.position_at_capture_counts - 180})))

    t_arrive = part.t_at_reject_ns(GEOMETRY)
    report, _ = _run([part], _stall_then(t_arrive - 50 * MS, 0.075, send_pass), mode="handshake")
    # then the part was judged at its arrival as if the timer had been on time: rejected, the verdict late
    assert [a.status for a in acks] == [AckStatus.LATE]
    assert (report.part(1).outcome, report.part(1).reject_source) == ("false_reject", "no_verdict")
    assert report.summary.timer_lag_max_ms >= 25


def test_a_part_that_reached_the_gate_during_a_fail_safe_is_rejected_though_the_heartbeat_returns_before_its_timer_ran():
    # given a pulse-mode PLC gone fail-safe (no heartbeat for 300 ms) and a defective part nobody
    # fires for; the vision side holds the loop across the part's arrival and then beats again
    part = _part(1, -200.0)
    t_arrive = part.t_at_reject_ns(GEOMETRY)
    report, _ = _run([part], _stall_then(t_arrive - 50 * MS, 0.2, lambda plc, clock: plc.write_heartbeat(7)), heartbeat_timeout_ms=300)
    # then the part, at the gate while the fail-safe held, was rejected by it
    assert (report.part(1).outcome, report.part(1).reject_source) == ("correct_reject", "fail_safe")


# -- command line ----------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lineguard sim")
    register(parser.add_subparsers())
    args = parser.parse_args(["plc", *argv])
    return args.func(args)


def test_cli_port_in_use_is_a_usage_error_naming_the_option(busy_port, capsys):
    # given a port something else listens on, when the PLC is asked to serve Modbus there
    code = _cli("--modbus-port", str(busy_port), "--duration-s", "1")
    # then it refuses with exit code 2 and names the option and the port
    assert code == 2
    assert f"error: --modbus-port {busy_port} is already in use on 127.0.0.1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give --modbus-port and/or --opcua-port"),
        (("--modbus-port", "0", "--belt-speed-mm-s", "0"), "--belt-speed-mm-s: expected > 0"),
        (("--modbus-port", "0", "--defect-rate", "2"), "--defect-rate: expected 0..1"),
        (("--modbus-port", "0", "--parts-out", "x.json"), "--parts-out needs --duration-s"),
        (("--opcua-port", "0",), "--opcua-port: expected a port number, got 0"),
        (("--modbus-port", "0", "--ack-delay-ms", "-5"), "--ack-delay-ms: expected >= 0, got -5"),
    ],
)
def test_cli_bad_arguments_name_the_option(argv, message, capsys):
    assert _cli(*argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("mode", "extra"), [("pulse", ()), ("handshake", ()), ("handshake", ("--no-verdict", "pass"))])
def test_cli_runs_both_servers_standalone_and_prints_the_report(tmp_path, capsys, pick_free_port, mode, extra):
    # given a fast belt so that parts reach the gate within the run, and no vision side at all
    parts_file = tmp_path / "parts.json"
    code = _cli(
        "--modbus-port", "0", "--opcua-port", str(pick_free_port()), "--mode", mode, *extra,
        "--belt-speed-mm-s", "2000", "--reject-distance-mm", "100", "--part-spacing-mm", "100",
        "--defect-rate", "0.5", "--seed", "2", "--heartbeat-timeout-ms", "0",
        "--duration-s", "0.4", "--json", "--parts-out", str(parts_file),
    )
    out, err = capsys.readouterr()
    # then it said where it listened, wrote the truth, and scored the parts that reached the gate
    assert code == 0
    assert "Modbus TCP 127.0.0.1:" in err and "OPC UA opc.tcp://127.0.0.1:" in err
    truth = json.loads(parts_file.read_text())
    report = json.loads(out)
    assert report["mode"] == mode and report["summary"]["parts"] >= 2
    scored = {p["part_id"]: p for p in report["parts"]}
    # without verdicts: a handshake PLC with positive release (the default) rejects every part, else all pass
    everything_rejected = mode == "handshake" and not extra
    assert report["summary"]["no_verdict_rejects"] == (report["summary"]["parts"] if everything_rejected else 0)
    for part in truth:
        if part["part_id"] in scored:
            if everything_rejected:
                assert scored[part["part_id"]]["outcome"] == ("correct_reject" if part["defective"] else "false_reject")
            else:
                assert scored[part["part_id"]]["outcome"] == ("escape" if part["defective"] else "correct_pass")
