"""inspect.surface: a scratch too faint for one frame is found in a part's stacked frames."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.nodes.inspect_surface import (
    ReferenceError,
    Window,
    _designs,
    _window_z,
    ScratchRule,
    component_windows,
    edge_sigma,
    judge,
    load_references,
    register,
    save_references,
    teach_reference,
)
from lineguard.runtime.cli import main

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "sim-v8" / "surface.npz"

MPP = 0.5
PART_PX = (240, 140)  # a 120 x 70 mm part at 0.5 mm/px
CROP = (PART_PX[0] + 16, PART_PX[1] + 16)
NOISE = 4.0  # grey levels, as in the shift scenario


def _surface() -> np.ndarray:
    """A busy part surface: mottled, with traces and pads (the same on every part)."""
    rng = np.random.default_rng(5)
    w, h = PART_PX
    img = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3) * 25 + 120
    for _ in range(6):  # traces
        x0, y0 = rng.integers(10, w - 10), rng.integers(10, h - 10)
        horizontal = rng.random() < 0.5
        x1, y1 = (int(rng.integers(10, w - 10)), int(y0)) if horizontal else (int(x0), int(rng.integers(10, h - 10)))
        cv2.line(img, (int(x0), int(y0)), (x1, y1), 150.0, 2)
    for _ in range(8):  # pads
        x, y = rng.integers(10, w - 20), rng.integers(10, h - 20)
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 8, int(y) + 5), 200.0, -1)
    return img


SURFACE = _surface()


FOCAL_PX = 640 / math.tan(math.radians(22.5))  # the simulated HD camera: 45 degrees across 1280 px


def sighting(
    rng: np.random.Generator,
    *,
    line: tuple | None = None,
    speck: tuple | None = None,
    gain: float = 1.0,
    offset: float = 0.0,
    blur_px: int = 1,
    tilt_deg: float = 0.0,
    surface: np.ndarray | None = None,
    chip: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """One frame's crop of a part: turned and shifted a little, lit, blurred along the travel, noisy.
    ``line`` = ((x0, y0), (x1, y1), delta): a scratch in part pixels, ``delta`` grey levels.
    ``tilt_deg``: the camera is turned this much about both image axes, so the flat part is
    foreshortened (a homography; near the image centre, where the check stacks its crops).
    ``surface``: another part surface than ``SURFACE``. ``chip``: a component placed on it (see
    :func:`place_chip`), under the scratch."""
    w, h = CROP
    part = (SURFACE if surface is None else surface).copy()
    if chip is not None:
        place_chip(part, *chip)
    if line is not None:
        (p0, p1, delta) = line
        mask = np.zeros_like(part)
        cv2.line(mask, p0, p1, 1.0, 2, cv2.LINE_AA)
        part += mask * delta
    if speck is not None:
        cv2.circle(part, speck[:2], 1, float(speck[2]), -1)
    canvas = np.full((h, w), 40.0, np.float32)  # the belt around the part
    canvas[8 : 8 + PART_PX[1], 8 : 8 + PART_PX[0]] = part
    angle, dx, dy = rng.uniform(-2, 2), rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, 2] += (dx, dy)
    img = cv2.warpAffine(canvas, m, (w, h), borderValue=40.0)
    if tilt_deg:
        k = math.sin(math.radians(tilt_deg)) / FOCAL_PX
        centre = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]])
        tilt = centre @ np.array([[1, 0, 0], [0, 1, 0], [k, k, 1]]) @ np.linalg.inv(centre)
        img = cv2.warpPerspective(img, tilt, (w, h), borderValue=40.0)
    if blur_px > 1:
        img = cv2.blur(img, (blur_px, 1))
    img = img * gain + offset + rng.normal(0, NOISE, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.float32)


CHIP_AT = (180, 60)  # the chip's nominal centre, part pixels (a 20 x 17 mm chip with its pins)
CHIP_BODY = (28, 26)  # its body, px


def place_chip(part: np.ndarray, dx: float, dy: float, turn_deg: float, shade: float) -> None:
    """A chip as a pick-and-place machine puts it: a dark body (``shade`` grey) with a bright row
    of pins on two sides, off its nominal place by (``dx``, ``dy``) px and ``turn_deg``. Drawn
    four times finer and averaged down, so that sub-pixel offsets show as they do on a camera."""
    k, size = 4, 48
    big = np.zeros((size * k, size * k), np.float32)
    alpha = np.zeros_like(big)
    bw, bh = CHIP_BODY
    c = size * k / 2
    for i in range(6):  # pins: 2 px wide, 4 px long, 4 px apart, left and right of the body
        y = c + (i - 2.5) * 4 * k
        for x0, x1 in ((c - bw * k / 2 - 4 * k, c - bw * k / 2), (c + bw * k / 2, c + bw * k / 2 + 4 * k)):
            cv2.rectangle(big, (int(x0), int(y - k)), (int(x1), int(y + k)), 205.0, -1)
            cv2.rectangle(alpha, (int(x0), int(y - k)), (int(x1), int(y + k)), 1.0, -1)
    body = ((int(c - bw * k / 2), int(c - bh * k / 2)), (int(c + bw * k / 2), int(c + bh * k / 2)))
    cv2.rectangle(big, *body, shade, -1)
    cv2.rectangle(alpha, *body, 1.0, -1)
    cv2.circle(big, (int(c - bw * k / 3), int(c - bh * k / 3)), 2 * k, shade + 40.0, -1)  # pin-1 dot
    m = cv2.getRotationMatrix2D((c, c), turn_deg, 1.0)
    m[:, 2] += (dx * k, dy * k)
    big = cv2.resize(cv2.warpAffine(big, m, big.shape[::-1]), (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(cv2.warpAffine(alpha, m, alpha.shape[::-1]), (size, size), interpolation=cv2.INTER_AREA)
    x0, y0 = CHIP_AT[0] - size // 2, CHIP_AT[1] - size // 2
    patch = part[y0 : y0 + size, x0 : x0 + size]
    patch[:] = patch * (1 - alpha) + big * alpha


def chip_pose(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A placement within tolerance: up to 1.5 px (0.75 mm) off, 2 degrees turned, any body shade."""
    return (float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-2, 2)), float(rng.uniform(26, 44)))


@pytest.fixture(scope="module")
def chipped():
    """A reference taught on parts that each carry the chip placed a little differently."""
    rng = np.random.default_rng(31)
    parts = []
    for _ in range(24):
        pose = chip_pose(rng)
        parts.append([sighting(rng, chip=pose) for _ in range(12)])
    ref = teach_reference(parts, mask_margin_px=6)
    sigma, mask = edge_sigma(ref, 0.3)
    return ref, (sigma, mask), component_windows(ref, 0.3, mask)


def inspect_chipped(chipped, crops, windows: bool = True):
    ref, (sigma, mask), wins = chipped
    aligned = [register(ref.image, ref.fit_mask, c) for c in crops]
    stack = np.median([a for a in aligned if a is not None], axis=0)
    rule = ScratchRule(8.0, 5.0, 120.0)  # the shipped recipe's rule
    return judge(stack, ref, sigma, mask, MPP, z_seed=4.5, z_low=3.0, rule=rule, windows=wins if windows else ())[0]


# across the chip from pins to pins: 19 mm, 30 grey darker (a seventh of a pin's brightness)
OVER_CHIP = ((161, 52), (199, 64), -30.0)


def test_a_scratch_across_a_chip_and_its_pins_is_found_though_every_chip_sits_a_little_differently(chipped):
    ref, (_, mask), wins = chipped
    (x0, y0), (x1, y1), _ = OVER_CHIP
    assert len(wins) >= 1 and not mask[y0 + 8, x0 + 8 + 6 : x1 + 8].any()  # the part-wide check leaves the chip out
    rng = np.random.default_rng(32)
    pose = chip_pose(rng)
    scratched = [sighting(rng, line=OVER_CHIP, chip=pose) for _ in range(12)]
    found = inspect_chipped(chipped, scratched)
    assert found.scratch and found.length_mm >= 8.0 and on_line(found.centre_px, OVER_CHIP)
    assert not inspect_chipped(chipped, scratched, windows=False).scratch  # without its window: unseen
    assert found.unregistered == 0


def test_a_chip_too_far_off_to_register_is_counted_as_not_looked_at(chipped):
    # 5 px (2.5 mm) off: beyond placement tolerance, so its window does not register (nor may the
    # windows of the pads it now lies on); the result says how many components went unlooked at
    rng = np.random.default_rng(35)
    result = inspect_chipped(chipped, [sighting(rng, chip=(5.0, 5.0, 0.0, 35.0)) for _ in range(12)])
    assert result.unregistered >= 1


def test_good_chips_placed_within_tolerance_and_under_other_light_show_no_line(chipped):
    rng = np.random.default_rng(33)
    for kwargs in ({}, {"gain": 0.75, "offset": 12.0}, {"blur_px": 7}):
        for _ in range(3):
            result = inspect_chipped(chipped, [sighting(rng, chip=chip_pose(rng), **kwargs) for _ in range(12)])
            assert result.length_mm < 3.0, kwargs


CONNECTOR = Path(__file__).resolve().parents[1] / "fixtures" / "connector_window.npz"


def test_a_long_narrow_feature_is_not_turned_off_its_place_and_leaves_no_line():
    # The board's connector, a long bright bar at its edge, in its window of the shipped
    # reference, and the stacks of three good boards on which it showed as an 8-10 mm line along
    # the connector's edge, a false reject (simulated line, nominal, seed 7000: parts 92 and 193
    # of a 400-part run, 541 of a 1000-part run). Its turn is barely determined: registered by
    # turn and shift together, or by the one that fits its patch best, the edge is left as a line.
    saved = np.load(CONNECTOR)
    own, fit, sigma, search = saved["own"], saved["fit"], saved["sigma"], saved["search"]
    h, w = own.shape
    b = (saved["around"].shape[1] - h) // 2
    window = Window((b, b, b + w, b + h), own, fit, sigma, search, _designs(own))
    for around in saved["around"]:
        z = _window_z(around, window, z_low=3.0)
        assert z is not None and np.abs(z[search]).max() < 4.5  # z_seed: nothing there can start a line


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(11)
    parts = [[sighting(rng) for _ in range(12)] for _ in range(24)]
    ref = teach_reference(parts, mask_margin_px=6)
    return ref, edge_sigma(ref, 0.3)


def inspect(reference, crops, rule: ScratchRule | None = None):
    ref, (sigma, mask) = reference
    aligned = [a for a in (register(ref.image, ref.fit_mask, c) for c in crops) if a is not None]
    assert len(aligned) == len(crops)  # every sighting registered
    result, _ = judge(np.median(aligned, axis=0), ref, sigma, mask, MPP, z_seed=4.5, z_low=3.0, rule=rule)
    return result


def on_line(point_px, line) -> bool:
    """Whether a point in reference pixels lies on a scratch drawn in part pixels (within 4 px)."""
    (x0, y0), (x1, y1), _ = line
    a, b, p = np.array([x0 + 8, y0 + 8], float), np.array([x1 + 8, y1 + 8], float), np.array(point_px, float)
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return float(np.linalg.norm(a + t * (b - a) - p)) <= 4.0


# a 53 mm scratch across the part, 8 grey levels darker: 2 sigma of one frame's noise
FAINT = ((60, 30), (130, 110), -8.0)
FAINT_LENGTH_MM = math.hypot(70, 80) * MPP


def test_a_faint_scratch_is_found_in_twelve_stacked_frames_but_not_in_one(reference):
    rng = np.random.default_rng(1)
    stacked = inspect(reference, [sighting(rng, line=FAINT) for _ in range(12)])
    single = inspect(reference, [sighting(rng, line=FAINT)])
    assert stacked.length_mm >= 0.35 * FAINT_LENGTH_MM  # a scratch: the node's min_length_mm is 10
    assert single.length_mm < 10.0
    assert on_line(stacked.centre_px, FAINT)  # found where it is


def test_good_parts_show_no_line_even_under_other_light_and_longer_exposure(reference):
    rng = np.random.default_rng(2)
    for kwargs in ({}, {"gain": 0.75, "offset": 12.0}, {"blur_px": 7}, {"speck": (150, 60, 30.0)}):
        result = inspect(reference, [sighting(rng, **kwargs) for _ in range(12)])
        assert result.length_mm < 3.0, kwargs  # a dust speck is an anomaly, but no line


def test_a_camera_knocked_askew_leaves_no_anomaly_on_a_good_part_and_still_finds_a_scratch(reference):
    # taught square to the belt, then the camera is tilted 10 degrees both ways (on this smaller
    # part, the corner misfit of a 6 degree tilt on the simulated board): the part is foreshortened.
    # Only a homography registers that; an affine fit left a 5 mm anomaly at a corner here, and a
    # false scratch at 15 degrees.
    rng = np.random.default_rng(4)
    good = inspect(reference, [sighting(rng, tilt_deg=10.0) for _ in range(12)])
    assert good.length_mm == 0.0 and good.peak_z < 4.5  # not one pixel past z_seed
    scratched = inspect(reference, [sighting(rng, line=FAINT, tilt_deg=10.0) for _ in range(12)])
    assert scratched.length_mm >= 10.0 and on_line(scratched.centre_px, FAINT)


def test_a_bright_scratch_on_a_dimmer_line_is_found(reference):
    rng = np.random.default_rng(3)
    line = ((30, 100), (200, 95), 14.0)
    result = inspect(reference, [sighting(rng, line=line, gain=0.8, blur_px=5) for _ in range(12)])
    assert result.length_mm >= 20.0 and on_line(result.centre_px, line)


HOLE = (115, 30, 155, 60)  # x0, y0, x1, y1 in part pixels: a 20 x 15 mm hole through the part


def holed_surface(belt_seed: int) -> np.ndarray:
    """SURFACE with a hole; through it shows the patch of belt the part lies on, a different one
    under every part (textured, as a worn belt is) and the same in all of that part's frames."""
    x0, y0, x1, y1 = HOLE
    belt = np.random.default_rng(belt_seed).normal(0, 1, (y1 - y0, x1 - x0)).astype(np.float32)
    surface = SURFACE.copy()
    surface[y0:y1, x0:x1] = np.clip(cv2.GaussianBlur(belt, (0, 0), 1.5) * 60 + 40, 0, 255)
    return surface


def test_a_scratch_two_millimetres_from_a_hole_is_found_though_the_belt_under_every_part_differs():
    # The belt seen through the hole differs on every part. The high-pass's mean is taken over the
    # part's own surface only, so that difference does not spill around the hole, and the search
    # comes within 1 mm of its rim; with a plain high-pass a 3.5 mm band round the hole was left out.
    rng = np.random.default_rng(21)
    ref = teach_reference([[sighting(rng, surface=holed_surface(100 + i)) for _ in range(12)] for i in range(24)], mask_margin_px=6)
    holed = (ref, edge_sigma(ref, 0.3))
    x0, _, x1, y1 = HOLE
    line = ((x0, y1 + 4), (x1, y1 + 4), -10.0)  # 20 mm along the hole's edge, 2 mm from it
    scratched = inspect(holed, [sighting(rng, line=line, surface=holed_surface(999)) for _ in range(12)])
    assert scratched.length_mm >= 15.0 and on_line(scratched.centre_px, line)
    good = inspect(holed, [sighting(rng, surface=holed_surface(998)) for _ in range(12)])
    assert good.length_mm == 0.0 and good.peak_z < 4.5


def test_a_short_strong_line_is_a_scratch_and_a_short_faint_one_is_dust(reference):
    rule = ScratchRule(min_length_mm=10.0, short_length_mm=5.0, short_strength=120.0)
    rng = np.random.default_rng(7)
    strong = ((40, 60), (49, 61), -40.0)  # 5 mm drawn, as a scratch cut short by a chip
    faint = ((40, 60), (49, 61), -8.0)  # the same length, as faint as a dust fibre
    cut_short = inspect(reference, [sighting(rng, line=strong) for _ in range(12)], rule)
    assert 5.0 <= cut_short.length_mm < 10.0 and cut_short.strength >= 120.0
    assert cut_short.scratch and on_line(cut_short.centre_px, strong)
    fibre = inspect(reference, [sighting(rng, line=faint) for _ in range(12)], rule)
    assert 5.0 <= fibre.length_mm < 10.0 and not fibre.scratch  # an anomaly, but no scratch
    length_only = inspect(reference, [sighting(rng, line=strong) for _ in range(12)], ScratchRule(10.0))
    assert not length_only.scratch


def test_a_reference_taught_before_the_weight_map_still_loads_and_judges(reference, tmp_path):
    # format /1 had no weight map: its sigma was learnt with the plain high-pass, which it keeps
    ref, _ = reference
    path = tmp_path / "old.npz"
    save_references(path, {"plate": replace(ref, weight=None)}, MPP)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    assert "plate.weight" not in arrays
    meta["format"] = "lineguard.surface/1"
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    refs, _ = load_references(path)
    assert refs["plate"].weight is None
    rng = np.random.default_rng(1)
    old = (refs["plate"], edge_sigma(refs["plate"], 0.3))
    assert inspect(old, [sighting(rng, line=FAINT) for _ in range(12)]).length_mm >= 10.0


def test_the_reference_round_trips_through_its_file(chipped, tmp_path):
    ref, _, windows = chipped
    path = tmp_path / "surface.npz"
    save_references(path, {"plate": ref}, MPP)
    refs, meta = load_references(path)
    back = refs["plate"]
    assert meta["mm_per_px"] == MPP and back.parts == 24
    np.testing.assert_array_equal(back.mask, ref.mask)
    np.testing.assert_array_equal(back.weight, ref.weight)
    np.testing.assert_array_equal(back.labels, ref.labels)
    assert [c.box for c in back.components] == [c.box for c in ref.components] and len(windows) >= 1
    for c, d in zip(back.components, ref.components):
        np.testing.assert_allclose(c.image, d.image, atol=0.25)  # stored as float16
        np.testing.assert_allclose(c.sigma, d.sigma, rtol=1e-3, atol=1e-3)


def test_a_reference_taught_before_components_were_looked_at_still_judges_without_them(chipped, tmp_path):
    # format /2 had no component windows: the chip stays left out, as it was, and nothing fails
    ref, _, _ = chipped
    path = tmp_path / "v2.npz"
    save_references(path, {"plate": replace(ref, labels=None, components=None)}, MPP)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    assert not any("component" in k or "labels" in k for k in arrays)
    meta["format"] = "lineguard.surface/2"
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    old = load_references(path)[0]["plate"]
    sigma, mask = edge_sigma(old, 0.3)
    assert old.components is None and component_windows(old, 0.3, mask) == ()
    rng = np.random.default_rng(34)
    assert inspect_chipped((old, (sigma, mask), ()), [sighting(rng, line=FAINT, chip=chip_pose(rng)) for _ in range(12)]).length_mm >= 10.0


def test_a_missing_or_foreign_reference_file_is_named(tmp_path):
    with pytest.raises(ReferenceError, match=r"nothere\.npz: no such reference file \(looked for "):
        load_references(tmp_path / "nothere.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a reference")
    with pytest.raises(ReferenceError, match=r"bad\.npz: not a readable reference file"):
        load_references(bad)


# -- on the simulated line --------------------------------------------------------------------------

# The detector stand-in is the ground truth, blind to scratches: what finds them is inspect.surface
# alone. HD at 0.5 mm/px like the default recipe (the shipped reference was taught at that scale).
LINE_RECIPE = textwrap.dedent("""\
    version: 1
    line: {belt_speed_mm_s: 400, mm_per_px: 0.5, encoder_counts_per_mm: 10, reject_distance_mm: 800}
    nodes:
      cam: {type: camera.sim, params: {set: {camera.fps: 30, distractors.gloves_per_min: 0, defects.rate: 0.5, defects.mix: {scratch: 1, missing_component: 0, misaligned: 0}}}}
      det: {type: detector.truth, params: {class_miss_rates: {scratch: 1.0}}, in: {truth: cam.truth}}
      trk: {type: tracker.belt, in: {detections: det.detections}}
      insp: {type: inspect.rules, params: {placement_zone_px: [320, 960]}, in: {tracks: trk.tracks}}
      surf: {type: inspect.surface, params: SURF, in: {findings: insp.findings, image: cam.image}}
      vote: {type: vote.part, in: {findings: surf.findings}}
      log: {type: record.jsonl, params: {path: LOG}, in: {items: [vote.verdicts]}}
    """)


def line_recipe(tmp_path, surf: str) -> str:
    path = tmp_path / "line.yaml"
    path.write_text(LINE_RECIPE.replace("SURF", surf).replace("LOG", str(tmp_path / "v.jsonl")))
    return str(path)


def sim_eval(capsys, *args: str) -> dict:
    assert main(["sim", "eval", *args, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_scratches_the_detector_cannot_see_are_rejected_from_the_stacked_frames(tmp_path, capsys):
    recipe = line_recipe(tmp_path, f"{{reference: {SHIPPED}}}")
    result = sim_eval(capsys, recipe, "--parts", "24", "--seed", "1301")
    scratched = [p for p in result["parts"] if p["defective"]]
    good = [p for p in result["parts"] if not p["defective"]]
    assert len(scratched) >= 8 and len(good) >= 8
    found = [p for p in scratched if p["rejected"] and "scratch" in p["reasons"]]
    print(f"{len(found)} of {len(scratched)} scratched parts rejected for scratch; {len(good)} good parts")
    assert len(found) >= 0.8 * len(scratched)
    assert not any(p["rejected"] for p in good)  # no good part rejected
    verdicts = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    notes = [n for v in verdicts for n in v["payload"]["notes"] if n.startswith("surface: ")]
    assert len(notes) == len(found)  # each says where: "surface: 23 mm line at (-12, 8) mm"


def test_a_missing_or_misaligned_component_is_not_also_called_a_scratch(tmp_path, capsys):
    # Where a chip is missing or off its place the surface differs from the reference too. The
    # rules name what is wrong; the surface check notes what it saw there but does not add a
    # scratch to the part's reasons.
    recipe = line_recipe(tmp_path, f"{{reference: {SHIPPED}}}")
    text = Path(recipe).read_text()
    text = text.replace("defects.mix: {scratch: 1, missing_component: 0, misaligned: 0}", "defects.mix: {scratch: 0, missing_component: 1, misaligned: 1}")
    text = text.replace("class_miss_rates: {scratch: 1.0}", "class_miss_rates: {scratch: 1.0, missing_component: 1.0, misaligned: 1.0}")
    Path(recipe).write_text(text)
    result = sim_eval(capsys, recipe, "--parts", "24", "--seed", "1304")
    defective = [p for p in result["parts"] if p["defective"]]
    assert len(defective) >= 8
    for part in defective:
        assert (part["rejected"], part["reasons"]) == (True, part["defect_kinds"]), part
    notes = [n for p in defective for v in p["verdicts"] for n in v["notes"] if n.startswith("surface: ")]
    print(f"{len(defective)} parts with a missing or misaligned component; the surface check saw {len(notes)} of them")
    assert notes, "the surface check does see something there"
    assert all(n.endswith("on a component the rules flag") for n in notes), notes
    assert not any(p["rejected"] for p in result["parts"] if not p["defective"])
    assert {k: v["other_reasons"] for k, v in result["summary"]["by_defect_kind"].items()} == {"missing_component": 0, "misaligned": 0}


def test_teaching_writes_a_reference_for_each_part_type(tmp_path, capsys):
    reference = tmp_path / "taught.npz"
    recipe = line_recipe(tmp_path, f"{{reference: {reference}, teach: true, teach_parts: 5}}")
    result = sim_eval(capsys, recipe, "--parts", "14", "--seed", "1302")
    assert result["summary"]["parts"] == 14
    refs, meta = load_references(reference)
    assert sorted(refs) == ["bracket", "pcb"] and meta["mm_per_px"] == 0.5
    for ref in refs.values():
        assert ref.parts == 5
        assert 0.3 < (ref.mask > 0).mean() < 0.9  # the part's surface, without its outline band and holes


def test_a_recipe_naming_a_missing_reference_is_refused_with_the_file(tmp_path, capsys):
    recipe = line_recipe(tmp_path, "{reference: models/none/surface.npz}")
    assert main(["sim", "eval", recipe, "--parts", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "surf" in err and "models/none/surface.npz: no such reference file" in err


def test_a_reference_taught_at_another_scale_is_refused(tmp_path, capsys):
    recipe = line_recipe(tmp_path, f"{{reference: {SHIPPED}}}")
    Path(recipe).write_text(Path(recipe).read_text().replace("mm_per_px: 0.5", "mm_per_px: 1.0"))
    assert main(["sim", "eval", recipe, "--parts", "2", "--no-progress"]) == 1
    assert "taught at 0.5 mm/px, but the line's mm_per_px is 1" in capsys.readouterr().err


def test_a_part_type_without_a_reference_is_named_in_a_warning(tmp_path, capsys):
    refs, _ = load_references(SHIPPED)
    pcb_only = tmp_path / "pcb_only.npz"
    save_references(pcb_only, {"pcb": refs["pcb"]}, 0.5)
    assert main(["sim", "eval", line_recipe(tmp_path, f"{{reference: {pcb_only}}}"), "--parts", "6", "--seed", "1303", "--json", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["summary"]["parts"] == 6
    assert "no surface reference for part type 'bracket'" in err
