"""inspect.rules: per part type, in mm, from the recipe — missing, misaligned, scratched."""

from __future__ import annotations

import asyncio
import logging
import math
import textwrap
from collections import Counter, defaultdict

import numpy as np
import pytest
import supervision as sv
import testnodes

from lineguard.nodes.inspect_rules import DEFAULT_PART_TYPES, RuleInspector
from lineguard.nodes.parts_model import FrameFindings, PartFindings, PartTrack, TrackedFrame
from lineguard.runtime import schema
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.errors import RecipeError
from lineguard.runtime.loader import load_text
from lineguard.runtime.node import Node, NodeContext, OutPort
from lineguard.sim.conveyor import _apply_h, _tilt_homography
from lineguard.sim.parts import PART_TYPES

LINE = {"belt_speed_mm_s": 400.0, "mm_per_px": 0.5, "encoder_counts_per_mm": 10.0, "reject_distance_mm": 800.0}
MPP = LINE["mm_per_px"]


class Recorder:
    def __init__(self) -> None:
        self.out: dict[str, list[Envelope]] = defaultdict(list)
        self.events: Counter = Counter()

    async def emit(self, port, envelope):
        self.out[port].append(envelope)

    def is_wired(self, port):
        return True

    def count_drop(self, reason, n=1):
        pass

    def count_event(self, event, n=1):
        self.events[event] += n


def inspector(**params) -> RuleInspector:
    full = schema.apply_defaults(RuleInspector.params_schema, params)
    assert not list(schema.problems(RuleInspector.params_schema, full)) and not RuleInspector.check_params(full, LINE)
    node = RuleInspector(NodeContext("insp", None, LINE, Recorder(), logging.getLogger("test")), schema.freeze(full))  # type: ignore[arg-type]
    asyncio.run(node.open())
    return node


def _rot(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])


def part(
    part_type: str = "pcb",
    *,
    centre_px: tuple[float, float] = (320.0, 240.0),
    turned_deg: float = 0.0,
    moved: dict[str, tuple[float, float, float]] | None = None,
    missing: tuple[str, ...] = (),
    scratch: bool = False,
    jitter_px: float = 0.0,
    rng: np.random.Generator | None = None,
    track_id: int = 1,
    in_view: bool = True,
    scale: float = 1.0,
    view: np.ndarray | None = None,
) -> PartTrack:
    """A part as the tracker would hand it over: its box and its components' boxes in image px.

    ``turned_deg`` turns the whole part on the belt; ``moved[name] = (dx_mm, dy_mm, turn_deg)``
    places a component off its nominal place (part frame); ``missing`` leaves components out;
    ``scale`` is the image scale against the line's mm_per_px; ``view`` a homography from the
    square-on image to a tilted camera's (boxes are then those of the tilted corners)."""
    spec = DEFAULT_PART_TYPES[part_type]
    moved = moved or {}
    rng = rng or np.random.default_rng(0)
    r = _rot(turned_deg)
    c = np.array(centre_px)

    def box(corners_mm: np.ndarray) -> list[float]:
        px = corners_mm @ r.T / MPP * scale + c
        if view is not None:
            px = _apply_h(view, px)
        return [*px.min(axis=0), *px.max(axis=0)]

    def rect(length: float, width: float, at=(0.0, 0.0), turn=0.0) -> np.ndarray:
        local = np.array([[-length / 2, -width / 2], [length / 2, -width / 2], [length / 2, width / 2], [-length / 2, width / 2]])
        return local @ _rot(turn).T + at

    boxes = [box(rect(spec["length_mm"], spec["width_mm"]))]
    names = [part_type]
    for comp in spec["components"]:
        if comp["name"] in missing:
            continue
        dx, dy, turn = moved.get(comp["name"], (0.0, 0.0, 0.0))
        boxes.append(box(rect(comp["length_mm"], comp["width_mm"], (comp["x_mm"] + dx, comp["y_mm"] + dy), turn if comp.get("check_rotation", True) else 0.0)))
        names.append(comp["kind"])
    if scratch:
        boxes.append(box(rect(30.0, 4.0, (-20.0, 30.0), 20.0)))
        names.append("scratch")
    xyxy = np.array(boxes, np.float64) + rng.normal(0, 1, (len(boxes), 4)) * jitter_px
    det = sv.Detections(xyxy=xyxy[1:].astype(np.float32).reshape(-1, 4), confidence=np.full(len(boxes) - 1, 0.9, np.float32), class_id=np.zeros(len(boxes) - 1, int), data={"class_name": np.array(names[1:], dtype=str)})
    return PartTrack(track_id, part_type, tuple(float(v) for v in xyxy[0]), 0.95, 0.0, in_view, 1, det)


def judge(node: RuleInspector, tracks: list[PartTrack], ended: tuple[int, ...] = ()) -> list[PartFindings]:
    frame = getattr(node, "_frame", 0)
    node._frame = frame + 1  # type: ignore[attr-defined]
    asyncio.run(node.process("tracks", Envelope(frame, 0, TrackedFrame((480, 640), tuple(tracks), ended), 0)))
    out: FrameFindings = node.ctx._emitter.out["findings"][-1].payload
    return list(out.parts)


def over_frames(node: RuleInspector, make, frames: int = 6) -> list[PartFindings]:
    """The same part in ``frames`` consecutive frames (``make(i)`` gives its track in frame i)."""
    return [judge(node, [make(i)])[0] for i in range(frames)]


# -- tests ------------------------------------------------------------------------------------------------


def test_the_built_in_rules_are_the_simulated_lines_nominal_layouts():
    assert set(DEFAULT_PART_TYPES) == set(PART_TYPES)
    for name, ptype in PART_TYPES.items():
        rule = DEFAULT_PART_TYPES[name]
        assert (rule["length_mm"], rule["width_mm"]) == (ptype.length_mm, ptype.width_mm)
        assert [(c["name"], c["kind"], (c["x_mm"], c["y_mm"]), (c["length_mm"], c["width_mm"])) for c in rule["components"]] == [
            (c.name, c.kind, c.centre_mm, c.size_mm) for c in ptype.components
        ]
        assert all(c.get("check_rotation", True) == (c_sim.style != "hex_bolt") for c, c_sim in zip(rule["components"], ptype.components))


@pytest.mark.parametrize("part_type", ["pcb", "bracket"])
def test_a_good_part_with_tolerated_variation_has_no_findings(part_type):
    # turned 3 deg on the belt, components 0.4 mm and 2 deg off, box edges jittering by 0.7 px
    rng = np.random.default_rng(4)
    names = [c["name"] for c in DEFAULT_PART_TYPES[part_type]["components"]]
    moved = {n: (float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-2, 2))) for n in names}
    node = inspector()
    findings = over_frames(node, lambda i: part(part_type, centre_px=(300 + 5 * i, 250), turned_deg=-3.0, moved=moved, jitter_px=0.7, rng=rng), frames=12)
    assert all(f.inspected for f in findings)
    assert [dict(f.defects) for f in findings] == [{}] * 12
    assert set(findings[-1].judged) == {"missing_component", "misaligned", "scratch"}
    assert max(findings[-1].offsets_mm.values()) < 1.0


def test_a_missing_component_is_found_and_named():
    findings = over_frames(inspector(), lambda i: part("pcb", turned_deg=2.0, missing=("U4",)))
    assert all("missing_component" in f.defects for f in findings)
    assert "U4 missing" in findings[0].notes and not any("U1" in n for f in findings for n in f.notes)


def test_a_missing_component_is_not_judged_while_the_part_is_cut_by_the_image_edge():
    findings = over_frames(inspector(), lambda i: part("bracket", missing=("B2",), in_view=False))
    assert not any(f.inspected or f.defects for f in findings)
    assert findings[0].judged == ()
    # a box smaller than the outline (hidden or cut, though the tracker saw no edge) is not judged either
    shrunk = part("bracket", missing=("B2",))
    x0, y0, x1, y1 = shrunk.box_xyxy
    cut = PartTrack(1, "bracket", (x0 + 30, y0, x1, y1), 0.9, 0.0, True, 1, shrunk.detections)
    assert not judge(inspector(), [cut])[0].inspected


def test_a_detector_that_misses_a_component_now_and_then_does_not_make_it_missing():
    # U3 is missed in one frame of every five
    findings = over_frames(inspector(), lambda i: part("pcb", missing=("U3",) if i % 5 == 2 else ()), frames=15)
    assert not any("missing_component" in f.defects for f in findings)


@pytest.mark.parametrize(("part_type", "name", "move", "expect"), [
    ("pcb", "U3", (3.0, 0.0, 0.0), True),  # 3 mm off along travel
    ("pcb", "U1", (0.0, -2.2, 0.0), True),
    ("bracket", "B4", (-2.0, 2.0, 0.0), True),
    ("pcb", "U5", (0.0, 0.0, 20.0), True),  # turned 20 deg
    ("pcb", "U2", (0.0, 0.0, -15.0), True),
    ("pcb", "U3", (1.0, 0.0, 0.0), False),  # within the 1.5 mm tolerance
    ("pcb", "U4", (0.0, 0.0, 5.0), False),  # within the 8 deg tolerance
    ("bracket", "B1", (0.0, 0.0, 30.0), False),  # a washer turned is not misaligned
])
def test_a_component_off_its_place_or_turned_beyond_tolerance_is_misaligned(part_type, name, move, expect):
    # the whole part also lies turned by 3 deg on the belt: that is not a misalignment
    findings = over_frames(inspector(), lambda i: part(part_type, turned_deg=3.0, moved={name: move}, jitter_px=0.3, rng=np.random.default_rng(i)), frames=6)
    flagged = ["misaligned" in f.defects for f in findings[2:]]  # judged from the third frame on
    assert flagged == [expect] * 4
    if expect:
        assert any(n.startswith(name) for n in findings[-1].notes)
        assert "missing_component" not in findings[-1].defects


def test_a_line_whose_mm_per_px_is_a_few_percent_off_does_not_misplace_good_parts_and_says_so():
    # the camera sees parts 4 % larger than mm_per_px says (a changed lens or working distance)
    node = inspector()
    last = []  # each part's findings in the last of the 6 frames that see it
    for k in range(40):
        moved = {"U4": (3.0, 0.0, 0.0)} if k % 2 else {}
        last.append(over_frames(node, lambda i: part("pcb", moved=moved, turned_deg=2.0, scale=1.04, track_id=k), frames=6)[-1])
    good, bad = last[6::2], last[7::2]  # once the scale is learnt (20 frames)
    assert not any("misaligned" in f.defects for f in good)
    assert all("misaligned" in f.defects for f in bad)  # U4 3 mm off is still found
    assert node.ctx._emitter.events["scale_off"] == 1  # and the line engineer is told, once


@pytest.mark.parametrize("tilt", [(5.0, -5.0), (6.0, -6.0), (-6.0, 6.0)])
@pytest.mark.parametrize("part_type, name", [("pcb", "U4"), ("pcb", "U1"), ("bracket", "B3")])
def test_a_camera_tilted_askew_leaves_good_components_in_place_and_still_finds_a_3_mm_offset(part_type, name, tilt):
    # a 1280x720 camera turned ~6 deg in pitch and yaw: the part's box is not centred on the part
    # (1.3 mm off for a board) and the image scale changes by 5 % across the image. Parts are
    # measured where the shipped recipes measure them: boxes within columns 320-960.
    tilted = _tilt_homography(1280, 720, 45.0, *tilt)
    for x0 in (470, 560, 660, 750):
        for moved, expect in (({}, False), ({name: (3.0, 0.0, 0.0)}, True)):
            findings = over_frames(inspector(), lambda i: part(part_type, centre_px=(x0 + 8 * i, 360), turned_deg=2.0, moved=moved, view=tilted), frames=8)
            assert ["misaligned" in f.defects for f in findings[2:]] == [expect] * 6, (x0, moved)
            if expect:
                assert any(n.startswith(f"{name} off by") for n in findings[-1].notes)


def test_a_component_the_detector_calls_misaligned_is_there_and_measured_not_missing():
    # a model trained on the simulated line boxes a misplaced chip as "misaligned" and not as a chip
    def track(i):
        t = part("pcb", moved={"U4": (4.0, 0.0, 0.0)}, jitter_px=0.3, rng=np.random.default_rng(i))
        names = t.detections.data["class_name"].astype(object)
        names[3] = "misaligned"  # U4, the fourth component
        t.detections.data["class_name"] = names.astype(str)
        return t

    findings = over_frames(inspector(), track)
    assert all("missing_component" not in f.defects for f in findings)
    assert all("misaligned" in f.defects for f in findings)
    assert any(n.startswith("U4 off by 4.") for n in findings[-1].notes)


def test_placements_are_measured_only_inside_the_placement_zone():
    node = inspector(placement_zone_px=[320, 960])
    off = {"U4": (4.0, 0.0, 0.0)}
    near_edge = over_frames(node, lambda i: part("pcb", centre_px=(200 + 4 * i, 360), moved=off, track_id=1))
    assert all(f.inspected and "misaligned" not in f.defects and "misaligned" not in f.judged for f in near_edge)
    assert all("missing_component" in f.judged for f in near_edge)  # presence is still judged there
    middle = over_frames(node, lambda i: part("pcb", centre_px=(600 + 4 * i, 360), moved=off, track_id=2))
    assert all("misaligned" in f.defects for f in middle[2:])


def test_scratch_detections_are_scratches_wherever_the_part_is():
    cut = judge(inspector(), [part("bracket", scratch=True, in_view=False)])[0]
    whole = judge(inspector(), [part("bracket", scratch=True)])[0]
    assert cut.defects == {"scratch": pytest.approx(0.9)} and not cut.inspected
    assert whole.defects == {"scratch": pytest.approx(0.9)}


def test_a_part_type_without_rules_is_not_inspected_and_says_so():
    track = part("pcb")
    odd = PartTrack(1, "gearbox", track.box_xyxy, 0.9, 0.0, True, 1, track.detections)
    f = judge(inspector(), [odd])[0]
    assert not f.inspected and "no rules for part type 'gearbox'" in f.notes


def test_a_part_types_rules_come_from_the_recipe():
    widget = {"widget": {"length_mm": 150, "width_mm": 100, "offset_tolerance_mm": 4.0, "components": [{"name": "C1", "kind": "chip", "x_mm": 14, "y_mm": -10, "length_mm": 17, "width_mm": 11}]}}
    node = inspector(part_types=widget)
    track = part("pcb", moved={"U3": (3.0, 0.0, 0.0)})  # its U3 is the widget's C1, 3 mm off: tolerated
    f = over_frames(node, lambda i: PartTrack(1, "widget", track.box_xyxy, 0.9, 0.0, True, 1, track.detections))[-1]
    assert f.inspected and f.defects == {} and f.offsets_mm["C1"] == pytest.approx(3.0, abs=0.3)


def test_measurements_of_a_part_are_dropped_when_its_track_ends():
    node = inspector()
    judge(node, [part("pcb", track_id=1), part("bracket", track_id=2, centre_px=(320, 100))])
    assert set(node.history) == {1, 2}
    judge(node, [], ended=(1,))
    assert set(node.history) == {2}


class TracksSource(Node):
    """A source of the tracker's kind, to wire inspect.rules in a recipe."""

    type_name = "test.tracks"
    outputs = {"out": OutPort("tracks")}


def compile_rules(params: str):
    registry = testnodes.test_registry()
    registry.register(RuleInspector)
    registry.register(TracksSource)
    head = "version: 1\nnodes:\n  src: {type: test.tracks}\n  insp:\n    type: inspect.rules\n    in: {tracks: src.out}\n    params:\n"
    return compile_document(load_text(head + textwrap.indent(textwrap.dedent(params), "      "), "recipe.yaml"), registry)


def test_a_negative_tolerance_is_a_compile_error_naming_file_line_and_param():
    with pytest.raises(RecipeError, match=r"recipe.yaml:12:\d+: node 'insp' param 'part_types.pcb.offset_tolerance_mm': expected .*0.*got -1"):
        compile_rules("""\
            part_types:
              pcb:
                length_mm: 150
                width_mm: 100
                offset_tolerance_mm: -1
        """)


def test_a_placement_zone_ending_before_it_starts_is_a_compile_error():
    with pytest.raises(RecipeError, match=r"recipe.yaml:\d+:\d+: node 'insp' param 'placement_zone_px': expected \[x0, x1\] with x0 < x1, got \[900, 300\]"):
        compile_rules("placement_zone_px: [900, 300]\n")


def test_rules_that_contradict_themselves_are_compile_errors():
    with pytest.raises(RecipeError) as err:
        compile_rules("""\
            part_types:
              pcb:
                length_mm: 150
                width_mm: 100
                match_radius_mm: 1.0
                components:
                  - {name: U1, kind: chip, x_mm: 70, y_mm: 0, length_mm: 20, width_mm: 10}
                  - {name: U1, kind: scratch, x_mm: 0, y_mm: 0, length_mm: 5, width_mm: 5}
        """)
    text = str(err.value)
    assert "param 'part_types.pcb.components': expected unique component names, got ['U1'] more than once" in text
    assert "expected component U1 inside the 150 x 100 mm outline, got it reaching 80 mm along x" in text
    assert "expected component U1's kind to be a component class, got 'scratch'" in text
    assert "param 'part_types.pcb.match_radius_mm': expected more than offset_tolerance_mm (1.5)" in text
    assert all("recipe.yaml:" in line for line in text.splitlines() if "param" in line)
