"""The part pipeline on the simulated line: camera.sim -> detector.truth -> tracker.belt ->
inspect.rules -> vote.part, on the sim clock, scored part by part against the conveyor's truth.

The detector stand-in is imperfect (misses, box jitter, false boxes, uneven confidence) and does
not report missing or misaligned components itself: those rejects come from the inspection rules.
"""

from __future__ import annotations

import textwrap
from collections import Counter, defaultdict

import pytest
import testnodes
from testnodes import COLLECTED

from lineguard.nodes.camera_sim import scenario_for
from lineguard.nodes.detector_truth import TruthDetector
from lineguard.nodes.inspect_rules import RuleInspector
from lineguard.nodes.parts_model import PartVerdict, TrackedFrame
from lineguard.nodes.tracker_belt import BeltTracker
from lineguard.nodes.vote_part import PartVote
from lineguard.runtime.compiler import CompiledGraph, compile_document
from lineguard.runtime.executor import RunReport, run_graph_sync
from lineguard.runtime.loader import load_text
from lineguard.sim.conveyor import Conveyor
from lineguard.sim.truth import PartTruth

REALISTIC_DETECTOR = (
    "{image_size_px: [640, 480], seed: 11, miss_rate: 0.03, box_jitter_px: 1.0, false_positives_per_frame: 0.2,"
    " confidence: [0.5, 0.95], class_miss_rates: {missing_component: 1.0, misaligned: 1.0}}"
)


class FlakyTracker(BeltTracker):
    """tracker.belt that fails once, on frame ``fail_at`` (a bug, a bad input), to be restarted."""

    type_name = "test.flaky_tracker"
    params_schema = {**BeltTracker.params_schema, "properties": {**BeltTracker.params_schema["properties"], "fail_at": {"type": "integer"}}}
    failed = False

    def update(self, envelope):
        if envelope.frame_id == self.params["fail_at"] and not FlakyTracker.failed:
            FlakyTracker.failed = True
            raise RuntimeError(f"tracker broke on frame {envelope.frame_id}")
        return super().update(envelope)


def compile_line(cam: str, det: str = REALISTIC_DETECTOR, vote: str = "{exit_x_px: 560}", trk: str = "{type: tracker.belt, in: {detections: det.detections}}") -> CompiledGraph:
    registry = testnodes.test_registry()
    for cls in (TruthDetector, BeltTracker, RuleInspector, PartVote, FlakyTracker):
        registry.register(cls)
    text = textwrap.dedent(f"""\
        version: 1
        line: {{belt_speed_mm_s: 400, mm_per_px: 0.5, encoder_counts_per_mm: 10, reject_distance_mm: 800}}
        nodes:
          cam: {{type: camera.sim, params: {cam}}}
          det: {{type: detector.truth, params: {det}, in: {{truth: cam.truth}}}}
          trk: {trk}
          insp: {{type: inspect.rules, in: {{tracks: trk.tracks}}}}
          vote: {{type: vote.part, params: {vote}, in: {{findings: insp.findings}}}}
          verdicts: {{type: test.collect, params: {{key: verdicts}}, in: {{in: vote.verdicts}}}}
          tracks: {{type: test.collect, params: {{key: tracks}}, in: {{in: trk.tracks}}}}
    """)
    return compile_document(load_text(text, "line.yaml"), registry)


class Run:
    """One run of the line: its verdicts, what the tracker saw, and the truth."""

    def __init__(self, graph: CompiledGraph) -> None:
        testnodes.reset()
        self.report: RunReport = run_graph_sync(graph, "sim")
        self.verdicts: list[PartVerdict] = [p for _, _, p, _ in COLLECTED["verdicts"]]
        self.tracks: list[TrackedFrame] = [p for _, _, p, _ in COLLECTED["tracks"]]
        testnodes.reset()
        self.conveyor = Conveyor(scenario_for(graph.nodes["cam"].params, graph.line))
        self.parts: dict[int, PartTruth] = {p.part_id: p for p in self.conveyor.parts}
        self.by_part: dict[int | None, list[PartVerdict]] = defaultdict(list)
        for v in self.verdicts:
            self.by_part[v.truth_part_id].append(v)

    def node(self, name: str) -> dict:
        return next(n for n in self.report.nodes if n["node"] == name)


@pytest.fixture(scope="module")
def line() -> Run:
    # 60 parts (pcb and bracket, ~1/3 with one defect each), 640 x 480 at 60 fps, four times an
    # operator's hand over the belt
    return Run(compile_line("{scenario: nominal, seed: 2, parts: 60, set: {camera.resolution: vga}}"))


def test_every_part_gets_exactly_one_verdict(line):
    assert line.report.status == "completed"
    assert sorted(line.by_part) == sorted(line.parts)  # no part without a verdict, none made up
    assert all(len(v) == 1 for v in line.by_part.values())
    assert len({v.part_id for v in line.verdicts}) == len(line.verdicts)
    assert {v.decided_by for v in line.verdicts} == {"exit_line"}


@pytest.mark.parametrize("kind", ["missing_component", "misaligned", "scratch"])
def test_each_defect_is_rejected_for_the_right_reason(line, kind):
    defective = [p for p in line.parts.values() if kind in p.defect_kinds]
    assert len(defective) >= 5
    for part in defective:
        (v,) = line.by_part[part.part_id]
        assert (v.verdict, v.reasons) == ("reject", (kind,)), f"part {part.part_id} ({part.part_type}, {[d.detail for d in part.defects]}): {v.to_json()}"
        assert v.evidence[kind], "the frames that showed it"


def test_good_parts_with_tolerated_variation_pass(line):
    good = [p for p in line.parts.values() if not p.defective]
    assert len(good) >= 30
    failed = [(p.part_id, line.by_part[p.part_id][0].reasons) for p in good if line.by_part[p.part_id][0].verdict != "pass"]
    assert failed == []


def test_part_level_precision_and_recall(line):
    tally = Counter()
    for pid, part in line.parts.items():
        rejected = line.by_part[pid][0].verdict == "reject"
        tally[("tp" if rejected else "fn") if part.defective else ("fp" if rejected else "tn")] += 1
    precision = tally["tp"] / (tally["tp"] + tally["fp"])
    recall = tally["tp"] / (tally["tp"] + tally["fn"])
    print(f"\nparts {len(line.parts)}: {dict(tally)}, precision {precision:.3f}, recall {recall:.3f}")
    assert (precision, recall) == (1.0, 1.0)


def test_the_reject_gate_arrival_is_predicted_to_within_a_few_millimetres(line):
    geometry = line.conveyor.geometry
    for v in line.verdicts:
        part = line.parts[v.truth_part_id]
        assert abs(v.arrival_encoder - part.encoder_at_reject(geometry)) <= 3 * 10  # 3 mm of encoder counts
        assert abs(v.arrival_t_ns - part.t_at_reject_ns(geometry)) <= 7_500_000  # 3 mm at 400 mm/s
        assert v.first_t_ns < v.last_t_ns < v.arrival_t_ns
        assert v.frames_inspected >= 10


def test_the_tracker_counts_id_switches_as_the_truth_does(line):
    ids: dict[int, set[int]] = defaultdict(set)
    for frame in line.tracks:
        for p in frame.parts:
            ids[p.truth_part_id].add(p.track_id)
    truth_switches = sum(len(v) - 1 for v in ids.values())
    assert truth_switches == line.node("trk")["events"].get("id_switch", 0) == 0
    assert max(f.live_tracks for f in line.tracks) <= 3


def test_a_part_that_leaves_after_one_sighting_is_rejected_as_insufficient_evidence():
    # a camera at 1 fps: the belt moves 400 mm between two frames, more than a part stays in view
    run = Run(compile_line("{scenario: nominal, seed: 5, parts: 8, set: {camera.resolution: vga, camera.fps: 1.0}}", det="{image_size_px: [640, 480]}", vote="{}"))
    sighted = {p.truth_part_id for f in run.tracks for p in f.parts}
    assert len(sighted) >= 4
    assert sorted(run.by_part) == sorted(sighted)  # every part seen gets its verdict...
    assert all(len(v) == 1 for v in run.by_part.values())  # ...exactly one
    for v in run.verdicts:
        assert v.frames_seen == 1
        assert (v.verdict, v.reasons) == ("reject", ("insufficient_evidence",))


def test_a_tracker_restarted_mid_run_gives_new_ids_and_every_part_still_gets_a_verdict():
    # given the tracker failing once while parts are in view, with a restart policy
    FlakyTracker.failed = False
    trk = "{type: test.flaky_tracker, params: {fail_at: 400}, in: {detections: det.detections}, restart: {max_restarts: 1, within_s: 60}}"
    run = Run(compile_line("{scenario: nominal, seed: 2, parts: 24, set: {camera.resolution: vga}}", trk=trk))
    assert run.node("trk")["restarts"] == 1
    # then the new tracker's ids go on from the old one's: none is used for two parts
    parts_of: dict[int, set[int]] = defaultdict(set)
    for f in run.tracks:
        for p in f.parts:
            if p.truth_part_id is not None:
                parts_of[p.track_id].add(p.truth_part_id)
    assert all(len(parts) == 1 for parts in parts_of.values()), {i: v for i, v in parts_of.items() if len(v) > 1}
    # and every part that crossed the camera got its verdict (the part in view when the tracker
    # broke may get two: its old track is decided as stale, its new one at the exit)
    seen = {p.truth_part_id for f in run.tracks for p in f.parts if p.truth_part_id is not None}
    assert seen <= {pid for pid in run.by_part if pid is not None}, sorted(seen - set(run.by_part))
    stale = [v for v in run.verdicts if v.decided_by == "stale"]
    assert len(stale) <= 2
