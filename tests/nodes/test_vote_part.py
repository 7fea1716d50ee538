"""vote.part: exactly one verdict per part, k of n frames, fail-safe on thin evidence, and when the
part will reach the reject gate."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections import Counter, defaultdict

import pytest
import supervision as sv
import testnodes

from lineguard.nodes.parts_model import FrameFindings, PartFindings, PartTrack, PartVerdict
from lineguard.nodes.vote_part import PartVote
from lineguard.runtime import schema
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.errors import RecipeError
from lineguard.runtime.loader import load_text
from lineguard.runtime.node import NodeContext

LINE = {"belt_speed_mm_s": 400.0, "mm_per_px": 0.5, "encoder_counts_per_mm": 10.0, "reject_distance_mm": 800.0}
KINDS = ("missing_component", "misaligned", "scratch")
FPS = 60


class Recorder:
    def __init__(self) -> None:
        self.out: dict[str, list[Envelope]] = defaultdict(list)
        self.events: Counter = Counter()

    async def emit(self, port, envelope):
        self.out[port].append(envelope)

    def is_wired(self, port):
        return True

    def count_drop(self, reason, n=1):
        self.events["drop:" + reason] += n

    def count_event(self, event, n=1):
        self.events[event] += n


class Line:
    """Feeds a vote.part node frame by frame: ``see(frame, part, ...)`` then ``frame_done``."""

    def __init__(self, encoder: bool = True, **params) -> None:
        full = schema.apply_defaults(PartVote.params_schema, params)
        assert not list(schema.problems(PartVote.params_schema, full)) and not PartVote.check_params(full, LINE)
        self.rec = Recorder()
        self.node = PartVote(NodeContext("vote", None, LINE, self.rec, logging.getLogger("test")), schema.freeze(full))  # type: ignore[arg-type]
        asyncio.run(self.node.open())
        self.encoder = encoder
        self.frame = 0

    def feed(self, parts: list[PartFindings], ended: tuple[int, ...] = ()) -> None:
        t_ns = round(self.frame * 1e9 / FPS)
        enc = round(400.0 * t_ns / 1e9 * 10) if self.encoder else None
        env = Envelope(self.frame, t_ns, FrameFindings((480, 640), tuple(parts), ended), enc)
        asyncio.run(self.node.process("findings", env))
        self.frame += 1

    def flush(self) -> None:
        asyncio.run(self.node.flush())

    @property
    def verdicts(self) -> list[PartVerdict]:
        return [e.payload for e in self.rec.out["verdicts"]]


def seen(track_id: int, *defects: str, inspected: bool = True, x_px: float = 320.0, position_mm: float = 0.0, conf: float = 1.0, reid: int | None = None) -> PartFindings:
    track = PartTrack(track_id, "pcb", (x_px - 150, 140, x_px + 150, 340), 0.9, position_mm, inspected, 1, sv.Detections.empty(), reidentified_from=reid, truth_part_id=track_id * 10)
    return PartFindings(track, inspected, dict.fromkeys(defects, conf), KINDS if inspected else ())


def test_a_defect_seen_in_k_of_n_frames_rejects_for_that_reason_with_its_evidence_frames():
    line = Line(k=3, n=5)
    pattern = ["scratch", None, "scratch", None, "scratch", None, None, None]  # 3 of 5 in frames 0-4
    for d in pattern:
        line.feed([seen(1, *([d] if d else []))])
    line.feed([], ended=(1,))
    (v,) = line.verdicts
    assert (v.verdict, v.reasons) == ("reject", ("scratch",))
    assert v.evidence == {"scratch": (0, 2, 4)}
    assert (v.frames_seen, v.frames_inspected, v.decided_by, v.truth_part_id) == (8, 8, "track_ended", 10)


def test_a_defect_seen_too_rarely_does_not_reject():
    line = Line(k=3, n=5)
    for d in ["scratch", None, None, "scratch", None, None, None, "scratch", None, None]:  # never 3 in 5
        line.feed([seen(1, *([d] if d else []))])
    line.flush()
    (v,) = line.verdicts
    assert (v.verdict, v.reasons) == ("pass", ())
    assert v.scores["scratch"] == 2


def test_components_hidden_for_a_while_are_not_missing_but_missing_throughout_are():
    # part 1: a hand covers two components for 15 of its 60 frames; part 2: one is gone all along
    line = Line(k=3, n=5)
    for i in range(60):
        line.feed([seen(1, *(["missing_component"] if 20 <= i < 35 else [])), seen(2, "missing_component")])
    line.flush()
    by_id = {v.part_id: v for v in line.verdicts}
    assert (by_id[1].verdict, by_id[1].reasons) == ("pass", ())
    assert by_id[1].scores["missing_component"] == 5  # k of n was reached, the share (25 %) was not
    assert line.rec.events["defect_below_min_fraction"] == 1  # and that is counted, not silent
    assert (by_id[2].verdict, by_id[2].reasons) == ("reject", ("missing_component",))


def test_confidence_weighting_sums_the_findings_confidences():
    weak, strong = Line(k=2.0, n=5, weighting="confidence"), Line(k=2.0, n=5, weighting="confidence")
    for _ in range(3):
        weak.feed([seen(1, "misaligned", conf=0.6)])
        strong.feed([seen(1, "misaligned", conf=0.7)])
    weak.flush()
    strong.flush()
    assert weak.verdicts[0].verdict == "pass" and weak.verdicts[0].scores["misaligned"] == pytest.approx(1.8)
    assert strong.verdicts[0].reasons == ("misaligned",)


def test_a_part_seen_once_is_rejected_as_insufficient_evidence():
    line = Line(min_frames=3)
    line.feed([seen(7)])
    line.feed([], ended=(7,))
    (v,) = line.verdicts
    assert (v.verdict, v.reasons, v.frames_seen) == ("reject", ("insufficient_evidence",), 1)


def test_frames_with_the_part_cut_by_the_image_edge_are_no_evidence_for_a_pass():
    line = Line(min_frames=3)
    for _ in range(10):
        line.feed([seen(7, inspected=False)])
    for _ in range(2):  # two frames judged, whole part in view
        line.feed([seen(7)])
    line.flush()
    (v,) = line.verdicts
    assert (v.verdict, v.reasons, v.frames_seen, v.frames_inspected) == ("reject", ("insufficient_evidence",), 12, 2)


def test_the_insufficient_evidence_policy_can_pass_but_still_names_the_reason():
    line = Line(min_frames=3, insufficient_evidence="pass")
    line.feed([seen(7)])
    line.flush()
    (v,) = line.verdicts
    assert (v.verdict, v.reasons) == ("pass", ("insufficient_evidence",))


def test_exactly_one_verdict_per_part_at_the_exit_line_and_none_for_later_sightings():
    line = Line(exit_x_px=560)
    for x in range(300, 640, 20):  # the part moves right; its centre crosses 560 px
        line.feed([seen(1, x_px=x)])
    line.feed([], ended=(1,))
    line.flush()
    (v,) = line.verdicts
    assert v.decided_by == "exit_line" and v.last_frame_id == 13  # x = 560
    assert line.rec.out["verdicts"][0].frame_id == 13  # the verdict's envelope is the deciding frame


def test_at_the_end_of_the_stream_every_open_part_gets_its_verdict_in_belt_order():
    line = Line()
    for _ in range(4):
        line.feed([seen(2), seen(3)])
    line.feed([seen(4)])
    line.flush()
    assert [(v.part_id, v.decided_by) for v in line.verdicts] == [(2, "end_of_stream"), (3, "end_of_stream"), (4, "end_of_stream")]
    line.flush()  # a second flush finds nothing open
    assert len(line.verdicts) == 3


def test_a_part_whose_track_never_ends_is_decided_once_it_has_not_been_seen_for_stale_frames():
    # given a scratched part seen in 4 frames whose track then vanishes without ending (a tracker
    # restarted under it), while other parts go on passing
    line = Line(stale_frames=30)
    for _ in range(4):
        line.feed([seen(1, "scratch")])
    for frame in range(40):
        line.feed([seen(2)])
    # then it got its verdict, rejected for what was seen, 31 frames after its last sighting, and
    # the vote holds no state for it any more
    (v,) = line.verdicts
    assert (v.part_id, v.verdict, v.reasons, v.decided_by, v.last_frame_id) == (1, "reject", ("scratch",), "stale", 3)
    assert line.rec.out["verdicts"][0].frame_id == 3 + 31
    assert set(line.node.parts) == {2} and line.rec.events["stale_part_decided"] == 1


def test_a_part_that_comes_back_under_a_new_id_after_its_verdict_gets_no_second_one():
    line = Line()
    for _ in range(5):
        line.feed([seen(1)])
    line.feed([], ended=(1,))
    for _ in range(5):
        line.feed([seen(2, reid=1)])  # the tracker lost it too long and re-found it
    line.feed([seen(3, reid=99)])  # an id switch of a part not yet decided is a part of its own
    line.flush()
    assert [v.part_id for v in line.verdicts] == [1, 3]
    assert line.rec.events["reidentified_after_verdict"] == 1


def test_arrival_at_the_reject_gate_is_predicted_from_the_last_sighting():
    # last seen at belt position +120 mm; the gate is 800 mm downstream of the camera axis
    line = Line()
    for i in range(6):
        line.feed([seen(1, position_mm=-200.0 + 64.0 * i)])
    line.flush()
    (v,) = line.verdicts
    last_t, last_enc = round(5 * 1e9 / FPS), round(400.0 * round(5 * 1e9 / FPS) / 1e9 * 10)
    assert (v.position_mm, v.last_t_ns, v.last_encoder) == (120.0, last_t, last_enc)
    assert v.arrival_encoder == last_enc + 680 * 10
    assert v.arrival_t_ns == last_t + round(680 / 400 * 1e9)
    assert (v.first_t_ns, v.first_frame_id) == (0, 0)


def test_without_an_encoder_the_arrival_time_still_comes_from_the_belt_speed():
    line = Line(encoder=False)
    for _ in range(3):
        line.feed([seen(1, position_mm=0.0)])
    line.flush()
    (v,) = line.verdicts
    assert v.arrival_encoder is None and v.last_encoder is None
    assert v.arrival_t_ns == v.last_t_ns + 2_000_000_000


def test_the_verdict_is_json_ready():
    line = Line()
    for _ in range(3):
        line.feed([seen(1, "scratch")])
    line.flush()
    data = line.verdicts[0].to_json()
    assert data["verdict"] == "reject" and data["reasons"] == ["scratch"] and data["evidence"] == {"scratch": [0, 1, 2]}
    assert isinstance(data["arrival_encoder"], int) and data["reject_distance_mm"] == 800.0


def test_k_larger_than_n_is_a_compile_error_naming_the_param():
    registry = testnodes.test_registry()
    registry.register(PartVote)
    text = textwrap.dedent("""\
        version: 1
        nodes:
          src: {type: test.counter}
          vote:
            type: vote.part
            params: {k: 6, n: 5}
            in: {findings: src.out}
    """)
    with pytest.raises(RecipeError, match=r"recipe.yaml:6:\d+: node 'vote' param 'k': expected at most n \(5\), got 6"):
        compile_document(load_text(text, "recipe.yaml"), registry)


def test_a_surface_line_at_a_flagged_component_is_the_rules_defect_when_it_holds_else_a_scratch():
    # inspect.surface saw a line where inspect.rules flagged a component. Part 1: the component
    # is off its place in every frame; part 2: a stray misaligned box in 2 of 10 frames only.
    line = Line(k=3, n=5)
    for i in range(10):
        line.feed([
            seen(1, "misaligned", "scratch_on_flagged_component"),
            seen(2, *(["misaligned"] if i in (3, 4) else []), "scratch_on_flagged_component"),
        ])
    line.flush()
    by_id = {v.part_id: v for v in line.verdicts}
    assert (by_id[1].verdict, by_id[1].reasons) == ("reject", ("misaligned",))
    assert (by_id[2].verdict, by_id[2].reasons) == ("reject", ("scratch",))  # not passed for a flag the vote did not confirm
    assert by_id[2].evidence == {"scratch": tuple(range(10))}
    assert line.rec.events["surface_line_at_unconfirmed_component"] == 1
