"""The simulated conveyor: deterministic frames, truthful boxes, motion blur that matches the belt."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lineguard.sim.conveyor import Conveyor
from lineguard.sim.parts import PART_TYPES
from lineguard.sim.render_bench import bench_renderer
from lineguard.sim.scenario import load_scenario
from lineguard.sim.truth import CLASS_ID, CLASSES, DEFECT_KINDS, FrameTruth

# Everything that is not the belt and its parts switched off, so pixels can be measured.
CLEAN = {
    "camera.tilt_deg": [0, 0],
    "camera.noise_sigma": 0,
    "belt.texture_contrast": 0,
    "lighting.gradient": [0, 0],
    "lighting.vignetting": 0,
    "lighting.flicker_depth": 0,
    "lighting.specular_count": [0, 0],
    "lighting.gain_range": [1, 1],
    "distractors.gloves_per_min": 0,
    "distractors.labels_per_m": 0,
    "distractors.fixture_prob": 0,
    "distractors.neighbours_per_min": 0,
    "parts.rotation_jitter_deg": 0,
    "parts.dust_per_part": [0, 0],
}


@pytest.fixture(scope="module")
def harsh_vga() -> Conveyor:
    return Conveyor(load_scenario("harsh", {"camera.resolution": "vga", "parts.count": 6}, seed=5))


def test_classes_cover_parts_components_and_defects_and_stay_small() -> None:
    assert {"pcb", "bracket", "chip", "fastener", "scratch", "missing_component", "misaligned"} <= set(CLASSES)
    assert len(CLASSES) <= 8
    for ptype in PART_TYPES.values():
        assert ptype.name in CLASSES
        assert all(c.kind in CLASSES for c in ptype.components)


def test_frames_are_bgr_uint8_c_contiguous_at_the_configured_resolution(harsh_vga: Conveyor) -> None:
    image = harsh_vga.render(harsh_vga.n_frames // 2)
    assert harsh_vga.resolution == (640, 480)
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8 and image.flags.c_contiguous


def test_same_seed_gives_byte_identical_frames_and_truth_in_any_order(harsh_vga: Conveyor) -> None:
    again = Conveyor(load_scenario("harsh", {"camera.resolution": "vga", "parts.count": 6}, seed=5))
    assert again.parts == harsh_vga.parts and again.n_frames == harsh_vga.n_frames
    frames = [harsh_vga.n_frames - 1, 0, 97, 13, 98, 55]
    for i in frames:  # random access: the order of rendering does not matter
        assert again.render(i).tobytes() == harsh_vga.render(i).tobytes()
        assert again.frame_truth(i) == harsh_vga.frame_truth(i)
    other = Conveyor(load_scenario("harsh", {"camera.resolution": "vga", "parts.count": 6}, seed=6))
    assert other.render(97).tobytes() != harsh_vga.render(97).tobytes()


def test_iter_frames_yields_time_encoder_image_and_truth(harsh_vga: Conveyor) -> None:
    items = list(harsh_vga.iter_frames(start=10, stop=40, step=10))
    assert [i for i, *_ in items] == [10, 20, 30]
    for i, t_ns, encoder, image, truth in items:
        assert t_ns == harsh_vga.frame_time_ns(i) == round(i * 1e9 / harsh_vga.fps)
        assert encoder == harsh_vga.geometry.encoder_at(t_ns) == truth.encoder
        assert isinstance(truth, FrameTruth) and truth.frame_index == i
        assert np.array_equal(image, harsh_vga.render(i))


def test_frame_index_out_of_range_says_how_many_frames_there_are(harsh_vga: Conveyor) -> None:
    with pytest.raises(IndexError, match=f"this run has {harsh_vga.n_frames} frames"):
        harsh_vga.render(harsh_vga.n_frames)


def test_run_starts_and_ends_on_an_empty_belt_and_parts_enter_partly_visible(harsh_vga: Conveyor) -> None:
    part_ids = lambda i: set(harsh_vga.frame_truth(i).part_ids.tolist())  # noqa: E731
    assert part_ids(0) == set() and part_ids(harsh_vga.n_frames - 1) == set()
    seen = {p for i in range(0, harsh_vga.n_frames, 3) for p in part_ids(i)}
    assert seen == {p.part_id for p in harsh_vga.parts}
    # the first frame part 0 appears in, it is only partly visible
    first = next(i for i in range(harsh_vga.n_frames) if 0 in part_ids(i))
    truth = harsh_vga.frame_truth(first).of_class(harsh_vga.parts[0].part_type)
    assert 0 < truth.visible[0] < 0.2


def test_parts_are_spaced_on_the_belt_without_overlap_and_stay_on_it() -> None:
    scenario = load_scenario("harsh", {"parts.count": 60})
    parts = Conveyor(scenario).parts
    for ahead, behind in zip(parts, parts[1:]):
        gap = ahead.x0_mm - behind.x0_mm
        assert gap >= scenario.parts.spacing_mm - scenario.parts.spacing_jitter_mm - 1e-9
        assert gap - (ahead.length_mm + behind.length_mm) / 2 > 0
    assert all(abs(p.y_mm) + p.width_mm / 2 < scenario.belt.width_mm / 2 for p in parts)


def test_defects_follow_the_configured_rate_and_mix_and_good_parts_stay_within_tolerance() -> None:
    scenario = load_scenario("nominal", {"parts.count": 300}, seed=2)
    parts = Conveyor(scenario).parts
    rate = sum(p.defective for p in parts) / len(parts)
    assert 0.22 < rate < 0.38
    assert {k for p in parts for k in p.defect_kinds} == set(DEFECT_KINDS)
    tol_mm, tol_deg = scenario.parts.placement_tolerance_mm, scenario.parts.placement_tolerance_deg
    for p in parts:
        layout = PART_TYPES[p.part_type].components
        assert [c.name for c in p.components] == [c.name for c in layout]  # the nominal layout, in order
        for c in p.components:
            off = math.hypot(*c.offset_mm)
            beyond = off > tol_mm or abs(c.rotation_deg) > tol_deg
            misaligned = any(d.kind == "misaligned" and d.detail.startswith(c.name + " ") for d in p.defects)
            assert beyond == misaligned, (p.part_id, c)
            missing = any(d.kind == "missing_component" and d.detail == c.name for d in p.defects)
            assert c.present == (not missing)


def test_a_part_box_moves_with_the_belt_at_the_configured_speed() -> None:
    scenario = load_scenario("nominal", {**CLEAN, "parts.lateral_jitter_mm": 0}, seed=1)
    conveyor = Conveyor(scenario)
    part = conveyor.parts[2]
    w, _ = conveyor.resolution
    t_centre = part.t_at_position_ns(conveyor.geometry, 0.0)
    i = round(t_centre * conveyor.fps / 1e9)
    for j in (i - 20, i, i + 20):
        truth = conveyor.frame_truth(j)
        box = truth.boxes_xyxy[(truth.part_ids == part.part_id) & (truth.class_ids == CLASS_ID[part.part_type])][0]
        expected_px = part.position_mm(conveyor.geometry, conveyor.frame_time_ns(j)) / conveyor.mm_per_px + w / 2
        assert (box[0] + box[2]) / 2 == pytest.approx(expected_px, abs=0.5)
        assert box[2] - box[0] == pytest.approx(part.length_mm / conveyor.mm_per_px, abs=1.0)
    assert part.encoder_at_reject(conveyor.geometry) == conveyor.geometry.encoder_at(part.t_at_reject_ns(conveyor.geometry))
    record = part.record(conveyor.geometry)
    assert record["t_at_reject_ns"] - record["t_at_camera_ns"] == pytest.approx(
        scenario.belt.reject_distance_mm / scenario.belt.speed_mm_s * 1e9, abs=1
    )


@pytest.mark.parametrize("scenario_name", ["nominal", "shift", "harsh"])
def test_rendered_defects_lie_inside_their_truth_boxes(scenario_name: str) -> None:
    """Render each frame with and without defects: every changed pixel is inside a defect box.

    Allowance around each box: the motion-blur half-length plus 3 px (1 px sub-pixel belt
    position, 1 px tilt resampling, 1 px anti-aliased edges); a misaligned component also
    uncovers the place it should have been (its nominal box).
    """
    scenario = load_scenario(scenario_name, {"defects.rate": 0.7, "parts.count": 8}, seed=12)
    with_defects, without = Conveyor(scenario), Conveyor(scenario, render_defects=False)
    assert {k for p in with_defects.parts for k in p.defect_kinds} == set(DEFECT_KINDS)
    margin = math.ceil(scenario.motion_blur_px / 2) + 3
    by_id = {p.part_id: p for p in with_defects.parts}
    defect_ids = [CLASS_ID[k] for k in DEFECT_KINDS]
    seen_kinds: set[str] = set()
    for i in range(0, with_defects.n_frames, 23):
        a, b = with_defects.render(i), without.render(i)
        changed = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)
        truth = with_defects.frame_truth(i)
        allowed = np.zeros(changed.shape, bool)

        def allow(box) -> None:
            x0, y0, x1, y1 = box
            allowed[max(0, math.floor(y0) - margin) : max(0, math.ceil(y1) + margin), max(0, math.floor(x0) - margin) : max(0, math.ceil(x1) + margin)] = True

        for box, cid in zip(truth.boxes_xyxy, truth.class_ids):
            if cid in defect_ids:
                allow(box)
                inside = changed[int(box[1]) : math.ceil(box[3]), int(box[0]) : math.ceil(box[2])]
                assert inside.max() > 0, f"frame {i}: a {CLASSES[cid]} box shows no defect"
                seen_kinds.add(CLASSES[cid])
        for pid in set(truth.part_ids.tolist()):
            part = by_id[pid]
            for d in part.defects:
                allow(with_defects.project_part_box(part, d.box_part_mm, i))  # blur tail of a defect just outside
                if d.kind == "misaligned":
                    nominal = PART_TYPES[part.part_type].component(d.detail.split()[0]).box_mm
                    allow(with_defects.project_part_box(part, nominal, i))
        stray = (changed > 0) & ~allowed
        assert not stray.any(), f"frame {i}: {int(stray.sum())} changed pixels outside every defect box"
    assert seen_kinds == set(DEFECT_KINDS)


def test_defects_are_clearly_visible_in_the_nominal_scenario() -> None:
    scenario = load_scenario("nominal", {"defects.rate": 1.0, "parts.count": 6}, seed=4)
    a, b = Conveyor(scenario), Conveyor(scenario, render_defects=False)
    for part in a.parts:
        i = round(part.t_at_position_ns(a.geometry, 0.0) * a.fps / 1e9)
        changed = np.abs(a.render(i).astype(np.int16) - b.render(i).astype(np.int16)).max(axis=2)
        assert (changed > 12).sum() >= 15, (part.part_id, part.defects)


def test_a_scratch_shows_along_its_whole_length_never_over_a_hole() -> None:
    # A scratch is cut into material: a path over a hole (the bracket has three) would be drawn
    # where nothing shows it, and a part labelled scratched would look good. Every point of every
    # scratch path must show in the image of the part (render with and without defects).
    scenario = load_scenario("nominal", {**CLEAN, "parts.count": 40, "defects.rate": 1.0, "defects.mix": {"scratch": 1.0}, "parts.mix": {"bracket": 1.0}}, seed=31)
    with_defects, without = Conveyor(scenario), Conveyor(scenario, render_defects=False)
    mm_per_px = scenario.camera.mm_per_px
    for part, plan in zip(with_defects.parts, with_defects.plans):
        i = round(part.t_at_position_ns(with_defects.geometry, 0.0) * with_defects.fps / 1e9)
        changed = np.abs(with_defects.render(i).astype(np.int16) - without.render(i).astype(np.int16)).max(axis=2) > 4
        truth = with_defects.frame_truth(i)
        (box,) = [b for b, c, p in zip(truth.boxes_xyxy, truth.class_ids, truth.part_ids) if p == part.part_id and c == CLASS_ID["bracket"]]
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        path = plan.scratch.points_mm
        samples = np.concatenate([p + (q - p) * np.linspace(0, 1, 30)[:, None] for p, q in zip(path[:-1], path[1:])])
        unseen = [
            tuple(s)
            for s in samples
            if not changed[(v := int(round(centre[1] + s[1] / mm_per_px))) - 2 : v + 3, (u := int(round(centre[0] + s[0] / mm_per_px))) - 2 : u + 3].any()
        ]
        assert not unseen, f"part {part.part_id}: its scratch does not show at {unseen[:3]} (mm, part frame)"


def test_training_scratches_can_be_sent_through_components_and_the_scenarios_stay_as_they_were() -> None:
    # defects.scratch_over_component: the fraction of scratches drawn through a chip or fastener,
    # the hardest place to see one; training sets ask for more of them. Every such path crosses
    # its component's footprint, and nothing else about the parts changes.
    over = {"parts.count": 30, "defects.rate": 1.0, "defects.mix": {"scratch": 1.0}}
    through = Conveyor(load_scenario("nominal", {**over, "defects.scratch_over_component": 1.0}, seed=41))
    for part, plan in zip(through.parts, through.plans):
        ptype = PART_TYPES[part.part_type]
        path = plan.scratch.points_mm
        samples = np.concatenate([p + (q - p) * np.linspace(0, 1, 40)[:, None] for p, q in zip(path[:-1], path[1:])])
        crossed = [
            c.name
            for c in ptype.components
            if (np.abs(samples - np.array(c.centre_mm)) <= np.array(c.box_mm[2:]) - np.array(c.centre_mm) + 0.5).all(axis=1).any()
        ]
        assert crossed, f"part {part.part_id} ({part.part_type}): its scratch misses every component"
    anywhere = Conveyor(load_scenario("nominal", over, seed=41))
    for a, b in zip(anywhere.plans, through.plans):  # only where the scratch lies differs
        assert (a.truth.part_type, a.placements, a.tint) == (b.truth.part_type, b.placements, b.tint)
        assert [(d.kind, d.size_mm, d.points_mm.tolist()) for d in a.dust] == [(d.kind, d.size_mm, d.points_mm.tolist()) for d in b.dust]
        assert a.scratch.contrast == b.scratch.contrast and a.scratch.width_mm == b.scratch.width_mm
    moved = sum(not np.array_equal(a.scratch.points_mm, b.scratch.points_mm) for a, b in zip(anywhere.plans, through.plans))
    assert moved >= 25, f"only {moved} of 30 scratches moved onto a component"


@pytest.mark.parametrize("exposure_ms", [5.0, 10.0, 20.0])
def test_motion_blur_extent_matches_belt_speed_times_exposure(exposure_ms: float) -> None:
    """The blurred edge of a part is a ramp as long as the belt moves during the exposure.

    Measured as (plateau difference) / (steepest step) along a row across the part's leading
    edge, which for a box blur of L px is L. Tolerance: 0.6 px + 5 % (the edge itself is
    anti-aliased over about one pixel before any blur).
    """
    scenario = load_scenario(
        "nominal",
        {**CLEAN, "camera.exposure_ms": exposure_ms, "camera.fps": 40, "parts.mix": {"bracket": 1}, "parts.lateral_jitter_mm": 0},
        seed=3,
    )
    expected_px = scenario.belt.speed_mm_s * exposure_ms / 1000 / scenario.camera.mm_per_px
    assert scenario.motion_blur_px == pytest.approx(expected_px)
    conveyor = Conveyor(scenario)
    part = conveyor.parts[1]
    w, h = conveyor.resolution
    for i in range(conveyor.n_frames):
        edge_px = part.position_mm(conveyor.geometry, conveyor.frame_time_ns(i)) + part.length_mm / 2
        edge_px = edge_px / conveyor.mm_per_px + w / 2
        if not 100 < edge_px < w - 100 or i % 3:
            continue
        row = round(h / 2 + 10 / conveyor.mm_per_px)  # across the plate, clear of holes
        profile = conveyor.render(i)[row - 2 : row + 3, round(edge_px) - 40 : round(edge_px) + 40].mean(axis=(0, 2))
        measured = (profile.max() - profile.min()) / np.abs(np.diff(profile)).max()
        assert measured == pytest.approx(expected_px, abs=0.6 + 0.05 * expected_px), f"frame {i}"


def test_tilt_keeps_the_image_centre_on_belt_position_zero() -> None:
    scenario = load_scenario("harsh", {"parts.lateral_jitter_mm": 0, "parts.rotation_jitter_deg": 0})
    conveyor = Conveyor(scenario)
    assert min(abs(v) for v in conveyor.tilt_deg) >= scenario.camera.tilt_deg[0]
    part = conveyor.parts[1]
    i = round(part.t_at_position_ns(conveyor.geometry, 0.0) * conveyor.fps / 1e9)
    box = conveyor.frame_truth(i).of_class(part.part_type)
    box = box.boxes_xyxy[box.part_ids == part.part_id][0]
    w, h = conveyor.resolution
    square_on_x = part.position_mm(conveyor.geometry, conveyor.frame_time_ns(i)) / conveyor.mm_per_px + w / 2
    assert (box[0] + box[2]) / 2 == pytest.approx(square_on_x, abs=3)
    assert (box[1] + box[3]) / 2 == pytest.approx(h / 2, abs=3)
    # but the part no longer looks rectangular: its box is larger than the part
    assert (box[2] - box[0]) * (box[3] - box[1]) > 1.02 * part.length_mm * part.width_mm / conveyor.mm_per_px**2


def test_a_hand_over_a_part_lowers_its_visible_fraction() -> None:
    scenario = load_scenario("nominal", {"distractors.gloves_per_min": 120, "parts.count": 6}, seed=9)
    conveyor = Conveyor(scenario)
    w, h = conveyor.resolution
    hidden = []
    for i in range(0, conveyor.n_frames, 4):
        t = conveyor.frame_truth(i)
        b = t.boxes_xyxy
        whole = (b[:, 0] > 1) & (b[:, 2] < w - 1) & (b[:, 1] > 1) & (b[:, 3] < h - 1)
        hidden.extend(t.visible[whole & (t.visible < 0.9)].tolist())
    assert hidden, "no box was ever partly hidden by a hand"


def test_bench_reports_fps_and_ratio_at_both_resolutions() -> None:
    result = bench_renderer(frames=3)
    for preset, size in (("vga", [640, 480]), ("hd", [1280, 720])):
        assert result[preset]["resolution"] == size
        assert result[preset]["fps"] > 0 and result[preset]["ratio_to_baseline"] > 0
        assert result[preset]["motion_blur_px"] > 2 and min(abs(v) for v in result[preset]["tilt_deg"]) >= 3
