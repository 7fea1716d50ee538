"""Part types of the simulated line, their nominal component layouts, and how one part is drawn.

Two part types, each with a fixed nominal layout in the part's own frame (mm, origin at the part's
centre, x along the belt's travel, y across it):

- ``pcb``: a 150 x 100 mm green board with five ICs (``chip``: QFP, SOIC, QFN), passives, a
  connector, traces, silkscreen, pads and mounting holes.
- ``bracket``: a 140 x 70 mm brushed steel plate with four bolted holes (``fastener``: hex bolt on a
  washer) and design holes/slots that are meant to stay empty (through them the belt is seen).

``PART_TYPES[name].components`` is the nominal layout an inspection rule is written against.

One part is planned (:func:`plan_part`: every random choice, hence its ground truth) separately from
being drawn (:func:`render_part`: a premultiplied BGRA sprite plus a gloss map, positioned to the
sub-pixel on the belt strip). Good parts carry harmless variation: small placement jitter within
tolerance, colour tint, dust specks and fibres, a soft sheen. Defects: a scratch (thin curved line,
lighter or darker than what it crosses), a missing component (bare pads or an empty hole; the box is
where it should be), a misaligned component (offset or turned beyond tolerance; box where it is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from lineguard.sim.truth import CLASS_ID, ComponentTruth, DefectTruth, PartTruth

SHIFT = 4  # fixed-point bits for cv2 drawing (1/16 px)
FIXED = 1 << SHIFT


# ---------------------------------------------------------------------------------------------
# Part types and their nominal layouts


@dataclass(frozen=True)
class ComponentSpec:
    """A component of a part type at its nominal place. ``size_mm`` is the full footprint (incl. pins)."""

    name: str
    kind: str  # a CLASSES entry: "chip" or "fastener"
    style: str  # "qfp", "soic", "qfn" (chips), "hex_bolt" (fasteners)
    centre_mm: tuple[float, float]
    size_mm: tuple[float, float]
    rotation_deg: float = 0.0

    @property
    def box_mm(self) -> tuple[float, float, float, float]:
        return _box_of(self.corners_mm())

    def corners_mm(self, dx: float = 0.0, dy: float = 0.0, rot_deg: float = 0.0) -> np.ndarray:
        """Corners (4 x 2, part frame, mm) of the footprint moved by (dx, dy) and turned by rot_deg."""
        if self.style == "hex_bolt":  # round footprint (washer): a spin changes nothing
            rot_deg = 0.0
        hx, hy = self.size_mm[0] / 2, self.size_mm[1] / 2
        local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]], np.float64)
        return local @ _rot(self.rotation_deg + rot_deg).T + (self.centre_mm[0] + dx, self.centre_mm[1] + dy)


@dataclass(frozen=True)
class HoleSpec:
    """A hole meant to stay empty (design feature). ``size_mm`` (length, width); round if equal."""

    centre_mm: tuple[float, float]
    size_mm: tuple[float, float]


@dataclass(frozen=True)
class PartType:
    name: str
    length_mm: float  # along travel
    width_mm: float  # across the belt
    components: tuple[ComponentSpec, ...]
    design_holes: tuple[HoleSpec, ...] = ()
    scratch_margin_mm: float = 6.0  # scratches stay this far inside the outline

    def component(self, name: str) -> ComponentSpec:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no component {name!r}")


PART_TYPES: dict[str, PartType] = {
    "pcb": PartType(
        name="pcb",
        length_mm=150.0,
        width_mm=100.0,
        components=(
            ComponentSpec("U1", "chip", "qfp", (-30.0, -4.0), (26.0, 26.0)),
            ComponentSpec("U2", "chip", "soic", (14.0, -30.0), (17.0, 11.0)),
            ComponentSpec("U3", "chip", "soic", (14.0, -10.0), (17.0, 11.0)),
            ComponentSpec("U4", "chip", "qfn", (46.0, -20.0), (11.0, 11.0)),
            ComponentSpec("U5", "chip", "qfp", (36.0, 22.0), (18.0, 18.0)),
        ),
        design_holes=tuple(HoleSpec((sx * 68.0, sy * 43.0), (3.2, 3.2)) for sx in (-1, 1) for sy in (-1, 1)),
    ),
    "bracket": PartType(
        name="bracket",
        length_mm=140.0,
        width_mm=70.0,
        components=tuple(
            ComponentSpec(f"B{i + 1}", "fastener", "hex_bolt", (sx * 52.0, sy * 20.0), (14.0, 14.0))
            for i, (sx, sy) in enumerate(((-1, -1), (1, -1), (-1, 1), (1, 1)))
        ),
        design_holes=(
            HoleSpec((0.0, 0.0), (20.0, 20.0)),
            HoleSpec((-26.0, 0.0), (16.0, 6.0)),
            HoleSpec((26.0, 0.0), (16.0, 6.0)),
        ),
    ),
}

FASTENER_HOLE_DIAMETER_MM = 8.5
DUST_MAX_MM = 6.0  # dust fibres are at most this long (scratches are longer)
# A scratch is labelled by its region: the line plus this margin on every side. A box hugging the
# line is a 1-2 px sliver for a straight scratch, whose IoU a detector cannot learn to hit (a one
# pixel miss halves it); a few millimetres of surface around the line are also what shows it is a
# scratch. Stays inside the part: scratches keep scratch_margin_mm (6) from the outline.
SCRATCH_BOX_MARGIN_MM = 3.0


# ---------------------------------------------------------------------------------------------
# Planning: every random choice of one part


@dataclass(frozen=True)
class Placement:
    """How one component sits on one part: harmless jitter, and the defect (if any) on top."""

    spec: ComponentSpec
    dx_mm: float
    dy_mm: float
    rot_deg: float
    defect: str | None = None  # None, "missing_component" or "misaligned"
    defect_dx_mm: float = 0.0
    defect_dy_mm: float = 0.0
    defect_rot_deg: float = 0.0

    def pose(self, with_defect: bool) -> tuple[float, float, float]:
        if with_defect and self.defect == "misaligned":
            return (self.dx_mm + self.defect_dx_mm, self.dy_mm + self.defect_dy_mm, self.rot_deg + self.defect_rot_deg)
        return (self.dx_mm, self.dy_mm, self.rot_deg)

    def present(self, with_defect: bool) -> bool:
        return not (with_defect and self.defect == "missing_component")


@dataclass(frozen=True)
class Scratch:
    points_mm: np.ndarray  # N x 2, part frame
    width_mm: float
    contrast: float  # > 0 lighter, < 0 darker (fraction of what it crosses)


@dataclass(frozen=True)
class Dust:
    kind: str  # "speck" or "fibre"
    points_mm: np.ndarray  # 1 x 2 (speck centre) or N x 2 (fibre)
    size_mm: float  # speck radius or fibre width
    shade: float  # target grey level
    opacity: float


@dataclass(frozen=True)
class TruthShape:
    """One ground-truth object of a part: class, polygon in the part frame (mm), padding (mm)."""

    class_id: int
    points_mm: np.ndarray
    pad_mm: float = 0.0


@dataclass(frozen=True, eq=False)
class PartPlan:
    truth: PartTruth
    tint: tuple[float, float, float]
    sheen_angle_deg: float
    sheen_strength: float
    placements: tuple[Placement, ...]
    dust: tuple[Dust, ...]
    scratch: Scratch | None
    shapes: tuple[TruthShape, ...] = field(default=())


@dataclass(frozen=True)
class PlanParams:
    """What :func:`plan_part` needs from a scenario (kept apart so parts.py needs no scenario)."""

    placement_jitter_mm: float
    placement_jitter_deg: float
    dust_per_part: tuple[int, int]
    defect_rate: float
    defect_mix: tuple[tuple[str, float], ...]
    scratch_length_mm: tuple[float, float]
    scratch_contrast: tuple[float, float]
    misaligned_offset_mm: tuple[float, float]
    misaligned_rotation_deg: tuple[float, float]
    scratch_over_component: float = 0.0  # fraction of scratches drawn through a component


def plan_part(
    part_id: int,
    part_type: str,
    x0_mm: float,
    y_mm: float,
    rotation_deg: float,
    params: PlanParams,
    rng: np.random.Generator,
) -> PartPlan:
    """Decide everything about one part (defect or not, placements, dust, scratch path) and its truth."""
    ptype = PART_TYPES[part_type]
    # draw all random numbers in a fixed order, whatever the outcome, so plans stay stable
    brightness = float(rng.uniform(-0.07, 0.07))
    tint = tuple(float(v) for v in 1.0 + brightness + rng.uniform(-0.015, 0.015, 3))
    sheen_angle = float(rng.uniform(0, 180))
    sheen_strength = float(rng.uniform(0.0, 0.12))
    jitters = [
        (
            float(rng.uniform(-1, 1) * params.placement_jitter_mm),
            float(rng.uniform(-1, 1) * params.placement_jitter_mm),
            float(rng.uniform(-1, 1) * params.placement_jitter_deg) if c.kind == "chip" else float(rng.uniform(0, 60)),
        )
        for c in ptype.components
    ]
    defective = rng.random() < params.defect_rate
    kinds = [k for k, w in params.defect_mix if w > 0]
    weights = np.array([w for k, w in params.defect_mix if w > 0], np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    target = int(rng.integers(len(ptype.components)))
    # misalignment: offset in a random direction, or (chips only) a turn
    turn = ptype.components[target].kind == "chip" and rng.random() < 0.5
    mis_angle = float(rng.uniform(0, 2 * math.pi))
    mis_offset = float(rng.uniform(*params.misaligned_offset_mm))
    mis_rot = float(rng.uniform(*params.misaligned_rotation_deg) * rng.choice([-1.0, 1.0]))
    scratch = _plan_scratch(ptype, params, rng)
    dust = _plan_dust(ptype, params, rng)

    placements = []
    for i, (spec, (dx, dy, rot)) in enumerate(zip(ptype.components, jitters)):
        p = Placement(spec, dx, dy, rot)
        if defective and i == target and kind == "missing_component":
            p = Placement(spec, dx, dy, rot, defect="missing_component")
        elif defective and i == target and kind == "misaligned":
            if turn:
                p = Placement(spec, dx, dy, rot, "misaligned", 0.0, 0.0, mis_rot)
            else:
                p = Placement(spec, dx, dy, rot, "misaligned", mis_offset * math.cos(mis_angle), mis_offset * math.sin(mis_angle), 0.0)
        placements.append(p)
    if not (defective and kind == "scratch"):
        scratch = None

    components = []
    shapes: list[TruthShape] = [
        TruthShape(CLASS_ID[part_type], _rect(ptype.length_mm, ptype.width_mm)),
    ]
    defects = []
    for p in placements:
        dx, dy, rot = p.pose(with_defect=True)
        corners = p.spec.corners_mm(dx, dy, rot)
        present = p.present(with_defect=True)
        box = _box_of(corners) if present else p.spec.box_mm
        spin_only = p.spec.style == "hex_bolt"
        components.append(ComponentTruth(p.spec.name, p.spec.kind, box, present, (dx, dy), 0.0 if spin_only else rot))
        if present:
            shapes.append(TruthShape(CLASS_ID[p.spec.kind], corners))
        if p.defect == "missing_component":
            shapes.append(TruthShape(CLASS_ID["missing_component"], p.spec.corners_mm()))
            defects.append(DefectTruth("missing_component", p.spec.box_mm, detail=p.spec.name))
        elif p.defect == "misaligned":
            shapes.append(TruthShape(CLASS_ID["misaligned"], corners))
            detail = (
                f"{p.spec.name} turned {p.defect_rot_deg:+.1f} deg"
                if p.defect_rot_deg
                else f"{p.spec.name} offset {math.hypot(p.defect_dx_mm, p.defect_dy_mm):.1f} mm"
            )
            defects.append(DefectTruth("misaligned", box, detail=detail))
    if scratch is not None:
        pad = scratch.width_mm / 2 + SCRATCH_BOX_MARGIN_MM
        shapes.append(TruthShape(CLASS_ID["scratch"], scratch.points_mm, pad))
        x0, y0, x1, y1 = _box_of(scratch.points_mm)
        length = float(np.sum(np.hypot(*np.diff(scratch.points_mm, axis=0).T)))
        defects.append(
            DefectTruth(
                "scratch",
                (x0 - pad, y0 - pad, x1 + pad, y1 + pad),
                detail=f"{length:.0f} mm, contrast {scratch.contrast:+.2f}",
            )
        )
    truth = PartTruth(
        part_id=part_id,
        part_type=part_type,
        x0_mm=x0_mm,
        y_mm=y_mm,
        length_mm=ptype.length_mm,
        width_mm=ptype.width_mm,
        defects=tuple(defects),
        rotation_deg=rotation_deg,
        components=tuple(components),
    )
    return PartPlan(truth, tint, sheen_angle, sheen_strength, tuple(placements), dust, scratch, tuple(shapes))


def _plan_scratch(ptype: PartType, params: PlanParams, rng: np.random.Generator) -> Scratch:
    # Through a component (training sets): somewhere on its footprint, pins and edges included.
    # Its numbers come from a child generator, drawn only when asked for: the scenarios' parts stay
    # as they were, and a part's other draws are the same either way.
    aim = None
    if params.scratch_over_component > 0 and ptype.components:
        child = rng.spawn(1)[0]
        spec = ptype.components[int(child.integers(len(ptype.components)))]
        if child.random() < params.scratch_over_component:
            aim = np.array(spec.centre_mm) + (child.uniform(-0.5, 0.5, 2) * np.array(spec.size_mm)) @ _rot(spec.rotation_deg).T
    points = _scratch_path(ptype, params, rng, aim)
    contrast = float(rng.uniform(*params.scratch_contrast)) * float(rng.choice([-1.0, 1.0]))
    width = float(rng.uniform(0.5, 0.9))
    # A scratch is cut into material: none may run over a hole, where nothing would show it (a
    # scratch drawn there is invisible, yet the part would be labelled scratched). Other paths
    # come from a child generator, so the part's later draws (dust) stay as they were.
    clearance = _hole_clearance(ptype, points, width)
    if clearance < 0:
        retry = rng.spawn(1)[0]
        for _ in range(_SCRATCH_TRIES):
            candidate = _scratch_path(ptype, params, retry, aim)
            gap = _hole_clearance(ptype, candidate, width)
            if gap > clearance:
                points, clearance = candidate, gap
            if clearance >= 0:
                break
    return Scratch(points, width, contrast)


_SCRATCH_TRIES = 200  # paths tried for a scratch clear of every hole (then the clearest is kept)
_HOLE_RIM_MM = 1.0  # a scratch keeps this clear of a hole's edge (its bevel shows there)


def _hole_clearance(ptype: PartType, points: np.ndarray, width_mm: float) -> float:
    """How far (mm) a scratch path stays clear of the part's design holes and their rims (< 0: it
    runs over one). The path is sampled every ~0.5 mm."""
    if not ptype.design_holes:
        return math.inf
    steps = [a + (b - a) * np.linspace(0, 1, max(2, int(np.hypot(*(b - a)) / 0.5) + 1))[:, None] for a, b in zip(points[:-1], points[1:])]
    pts = np.concatenate(steps)
    best = math.inf
    for hole in ptype.design_holes:
        length, width = hole.size_mm  # round when equal; else an obround along x
        d = pts - np.array(hole.centre_mm)
        along = np.maximum(np.abs(d[:, 0]) - max(0.0, (length - width) / 2), 0.0)
        edge = np.hypot(along, d[:, 1]) - width / 2
        best = min(best, float(edge.min()) - width_mm / 2 - _HOLE_RIM_MM)
    return best


def _scratch_path(ptype: PartType, params: PlanParams, rng: np.random.Generator, aim: np.ndarray | None = None) -> np.ndarray:
    """A gently bowed line of the scenario's length (shortened to fit), inside the scratch margin;
    centred on ``aim`` (mm, part frame) when given, as near as the margin allows."""
    length = float(rng.uniform(*params.scratch_length_mm))
    hx = ptype.length_mm / 2 - ptype.scratch_margin_mm
    hy = ptype.width_mm / 2 - ptype.scratch_margin_mm
    angle = float(rng.uniform(0, math.pi))
    direction = np.array([math.cos(angle), math.sin(angle)])
    # keep the whole scratch inside the margin: shorten if the part is too small that way
    reach = np.abs(direction) * length / 2
    scale = min(1.0, hx / max(reach[0], 1e-9), hy / max(reach[1], 1e-9)) * 0.98
    length *= scale
    half = np.abs(direction) * length / 2
    centre = np.array([rng.uniform(-hx + half[0], hx - half[0]), rng.uniform(-hy + half[1], hy - half[1])])
    if aim is not None:
        centre = np.clip(aim, [-hx + half[0], -hy + half[1]], [hx - half[0], hy - half[1]])
    bow = float(rng.uniform(-0.08, 0.08)) * length  # gentle curve
    s = np.linspace(-0.5, 0.5, 9)
    normal = np.array([-direction[1], direction[0]])
    points = centre + np.outer(s * length, direction) + np.outer(bow * (1 - 4 * s**2), normal)
    # a bowed scratch may poke out of the margin: pull it back in
    points[:, 0] = np.clip(points[:, 0], -hx, hx)
    points[:, 1] = np.clip(points[:, 1], -hy, hy)
    return points


def _plan_dust(ptype: PartType, params: PlanParams, rng: np.random.Generator) -> tuple[Dust, ...]:
    low, high = params.dust_per_part
    n = int(rng.integers(low, high + 1))
    hx, hy = ptype.length_mm / 2 - 1.5, ptype.width_mm / 2 - 1.5
    out = []
    for _ in range(n):
        centre = np.array([[rng.uniform(-hx, hx), rng.uniform(-hy, hy)]])
        shade = float(rng.choice([40.0, 200.0]))
        if rng.random() < 0.6:
            out.append(Dust("speck", centre, float(rng.uniform(0.15, 0.5)), shade, float(rng.uniform(0.3, 0.7))))
        else:
            length = float(rng.uniform(1.5, DUST_MAX_MM))
            angle = float(rng.uniform(0, math.pi))
            s = np.linspace(-0.5, 0.5, 5)[:, None]
            wiggle = rng.uniform(-0.3, 0.3, (5, 1))
            d = np.array([[math.cos(angle), math.sin(angle)]])
            nrm = np.array([[-math.sin(angle), math.cos(angle)]])
            pts = centre + s * length * d + wiggle * nrm
            out.append(Dust("fibre", pts, float(rng.uniform(0.15, 0.3)), shade, float(rng.uniform(0.1, 0.25))))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Geometry helpers


def _rot(deg: float) -> np.ndarray:
    r = math.radians(deg)
    c, s = math.cos(r), math.sin(r)
    return np.array([[c, -s], [s, c]])


def _rect(length: float, width: float) -> np.ndarray:
    return np.array([[-length / 2, -width / 2], [length / 2, -width / 2], [length / 2, width / 2], [-length / 2, width / 2]])


def _box_of(points: np.ndarray) -> tuple[float, float, float, float]:
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def part_to_strip(plan_or_truth: PartTruth, points_mm: np.ndarray, mm_per_px: float) -> np.ndarray:
    """Part-frame points (mm) to belt-strip pixels (u along travel, v across; edge convention).

    ``u = s / mm_per_px`` where s is the belt coordinate at time 0; ``v = y / mm_per_px`` (0 = belt
    centre line). The conveyor adds its own offsets.
    """
    t = plan_or_truth
    world = np.asarray(points_mm, np.float64) @ _rot(t.rotation_deg).T + (t.x0_mm, t.y_mm)
    return world / mm_per_px


# ---------------------------------------------------------------------------------------------
# Drawing


class _Pen:
    """Draws in mm on a hi-res canvas: px = (mm + origin_mm) * px_per_mm, cv2 fixed-point."""

    def __init__(self, px_per_mm: float, origin_mm: tuple[float, float]) -> None:
        self.k = px_per_mm
        self.origin = np.array(origin_mm, np.float64)

    def px(self, pts_mm: np.ndarray) -> np.ndarray:
        """Edge-convention pixel coordinates (float)."""
        return (np.asarray(pts_mm, np.float64) + self.origin) * self.k

    def fx(self, pts_mm: np.ndarray) -> np.ndarray:
        """cv2 fixed-point coordinates (centre convention)."""
        return np.round((self.px(pts_mm) - 0.5) * FIXED).astype(np.int32)

    def poly(self, img: np.ndarray, pts_mm: np.ndarray, color) -> None:
        cv2.fillPoly(img, [self.fx(pts_mm).reshape(-1, 1, 2)], color, cv2.LINE_AA, SHIFT)

    def polys(self, img: np.ndarray, polys_mm: list[np.ndarray], color) -> None:
        if polys_mm:
            cv2.fillPoly(img, [self.fx(p).reshape(-1, 1, 2) for p in polys_mm], color, cv2.LINE_AA, SHIFT)

    def circle(self, img: np.ndarray, c_mm, r_mm: float, color, thickness_mm: float = -1) -> None:
        c = self.fx(np.array([c_mm]))[0]
        th = -1 if thickness_mm < 0 else max(1, int(round(thickness_mm * self.k)))
        cv2.circle(img, (int(c[0]), int(c[1])), int(round(r_mm * self.k * FIXED)), color, th, cv2.LINE_AA, SHIFT)

    def line(self, img: np.ndarray, pts_mm: np.ndarray, color, width_mm: float) -> None:
        th = max(1, int(round(width_mm * self.k)))
        cv2.polylines(img, [self.fx(pts_mm).reshape(-1, 1, 2)], False, color, th, cv2.LINE_AA, SHIFT)


def _rounded_rect(length: float, width: float, r: float, n: int = 6) -> np.ndarray:
    pts = []
    for cx, cy, a0 in ((length / 2 - r, width / 2 - r, 0), (-length / 2 + r, width / 2 - r, 90), (-length / 2 + r, -width / 2 + r, 180), (length / 2 - r, -width / 2 + r, 270)):
        for a in np.linspace(a0, a0 + 90, n):
            pts.append((cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))))
    return np.array(pts)


def _obround(c: tuple[float, float], length: float, width: float) -> np.ndarray:
    r = width / 2
    pts = []
    for cx, a0 in ((length / 2 - r, -90), (-length / 2 + r, 90)):
        for a in np.linspace(a0, a0 + 180, 10):
            pts.append((c[0] + cx + r * math.cos(math.radians(a)), c[1] + r * math.sin(math.radians(a))))
    return np.array(pts)


@dataclass
class _Canvas:
    bgr: np.ndarray  # uint8 H x W x 3 (straight colour)
    alpha: np.ndarray  # uint8 H x W
    gloss: np.ndarray  # uint8 H x W
    pen: _Pen


def _supersample(mm_per_px: float) -> int:
    return 2 if mm_per_px > 0.25 else 1


@lru_cache(maxsize=8)
def _base(part_type: str, mm_per_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The part type's bare look (no placed components) on a hi-res canvas, cached per scale."""
    ptype = PART_TYPES[part_type]
    ss = _supersample(mm_per_px)
    k = ss / mm_per_px
    pad = 1.0  # mm around the outline
    w = int(math.ceil((ptype.length_mm + 2 * pad) * k))
    h = int(math.ceil((ptype.width_mm + 2 * pad) * k))
    pen = _Pen(k, (ptype.length_mm / 2 + pad, ptype.width_mm / 2 + pad))
    cv = _Canvas(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8), pen)
    if part_type == "pcb":
        _draw_pcb_base(cv, ptype)
    else:
        _draw_bracket_base(cv, ptype)
    for a in (cv.bgr, cv.alpha, cv.gloss):
        a.setflags(write=False)
    return cv.bgr, cv.alpha, cv.gloss


def _draw_pcb_base(cv: _Canvas, ptype: PartType) -> None:
    pen = cv.pen
    rng = np.random.default_rng(20261125)  # the layout of traces and passives is part of the type
    outline = _rounded_rect(ptype.length_mm, ptype.width_mm, 2.0)
    pen.poly(cv.bgr, outline, (28, 92, 26))
    pen.poly(cv.alpha, outline, 255)
    pen.poly(cv.gloss, outline, 150)
    inner = _rounded_rect(ptype.length_mm - 2.0, ptype.width_mm - 2.0, 1.5)
    pen.poly(cv.bgr, inner, (38, 112, 34))
    # traces: Manhattan runs between random points, a little lighter than the mask
    hx, hy = ptype.length_mm / 2 - 4, ptype.width_mm / 2 - 4
    for _ in range(70):
        a = np.array([rng.uniform(-hx, hx), rng.uniform(-hy, hy)])
        b = a + rng.uniform(-40, 40, 2)
        b = np.clip(b, [-hx, -hy], [hx, hy])
        mid = np.array([b[0], a[1]]) if rng.random() < 0.5 else np.array([a[0], b[1]])
        pen.line(cv.bgr, np.array([a, mid, b]), (52, 138, 50), float(rng.choice([0.3, 0.5, 0.8])))
    # vias
    for _ in range(60):
        c = (rng.uniform(-hx, hx), rng.uniform(-hy, hy))
        pen.circle(cv.bgr, c, 0.6, (120, 170, 185))
        pen.circle(cv.bgr, c, 0.25, (20, 40, 20))
    # pads and silkscreen of every chip position (what is seen when a chip is missing)
    for spec in ptype.components:
        _draw_chip_pads(cv, spec)
        outline_pts = spec.corners_mm()
        grow = (outline_pts - spec.centre_mm) * 1.08 + spec.centre_mm
        cv2.polylines(cv.bgr, [pen.fx(grow).reshape(-1, 1, 2)], True, (225, 230, 225), max(1, int(0.3 * pen.k)), cv2.LINE_AA, SHIFT)
        x0, y0, x1, y1 = _box_of(grow)
        org = pen.fx(np.array([[x0, y0 - 1.2]]))[0] / FIXED
        cv2.putText(cv.bgr, spec.name, (int(org[0]), int(org[1])), cv2.FONT_HERSHEY_SIMPLEX, 0.09 * pen.k / 4, (225, 230, 225), max(1, int(0.25 * pen.k)), cv2.LINE_AA)
    # passives (not inspected): small beige/brown blocks with silver ends
    occupied = [np.array(s.box_mm) + (-3, -5, 3, 3) for s in ptype.components]
    placed = 0
    while placed < 26:
        c = np.array([rng.uniform(-hx + 4, hx - 4), rng.uniform(-hy + 3, hy - 3)])
        if any(b[0] < c[0] < b[2] and b[1] < c[1] < b[3] for b in occupied) or abs(c[0] + 66) < 8:
            continue
        L, W = (3.2, 1.6) if rng.random() < 0.5 else (2.0, 1.25)
        vertical = rng.random() < 0.5
        size = (W, L) if vertical else (L, W)
        body = _rect(*size) + c
        color = (70, 110, 150) if rng.random() < 0.5 else (40, 40, 45)
        pen.poly(cv.bgr, body, color)
        cap = 0.5
        for sgn in (-1, 1):
            end = _rect(cap, size[1]) if not vertical else _rect(size[0], cap)
            off = np.array([sgn * (size[0] - cap) / 2, 0]) if not vertical else np.array([0, sgn * (size[1] - cap) / 2])
            pen.poly(cv.bgr, end + c + off, (185, 190, 195))
        occupied.append(np.array([c[0] - 3, c[1] - 3, c[0] + 3, c[1] + 3]))
        placed += 1
    # connector on the upstream edge
    conn = _rect(7.0, 34.0) + (-66.0, 0.0)
    pen.poly(cv.bgr, conn, (215, 220, 222))
    pen.poly(cv.gloss, conn, 60)
    for y in np.arange(-15, 16, 2.54):
        pen.poly(cv.bgr, _rect(1.2, 1.2) + (-66.0, y), (60, 150, 200))
    # fiducials and mounting holes (through: the belt shows)
    for c in ((-60.0, 40.0), (60.0, -40.0)):
        pen.circle(cv.bgr, c, 1.2, (150, 200, 210))
    for hole in ptype.design_holes:
        pen.circle(cv.bgr, hole.centre_mm, hole.size_mm[0] / 2 + 1.4, (120, 185, 205))
        pen.circle(cv.gloss, hole.centre_mm, hole.size_mm[0] / 2 + 1.4, 230)
        pen.circle(cv.alpha, hole.centre_mm, hole.size_mm[0] / 2, 0)
        pen.circle(cv.bgr, hole.centre_mm, hole.size_mm[0] / 2, (0, 0, 0))


def _chip_pins(spec: ComponentSpec) -> tuple[float, float, list[np.ndarray]]:
    """(body length, body width, pin rectangles in the chip's own frame, mm)."""
    L, W = spec.size_mm
    pins: list[np.ndarray] = []
    if spec.style == "qfp":
        pin_len = 2.2
        bl, bw = L - 2 * pin_len, W - 2 * pin_len
        n = int((bl - 2) // 1.0)
        for i in range(n):
            o = (i - (n - 1) / 2) * 1.0
            for sgn in (-1, 1):
                pins.append(_rect(0.5, pin_len) + (o, sgn * (bw / 2 + pin_len / 2)))
                pins.append(_rect(pin_len, 0.5) + (sgn * (bl / 2 + pin_len / 2), o))
    elif spec.style == "soic":
        pin_len = 2.0
        bl, bw = L, W - 2 * pin_len
        n = int((bl - 1) // 1.27)
        for i in range(n):
            o = (i - (n - 1) / 2) * 1.27
            for sgn in (-1, 1):
                pins.append(_rect(0.6, pin_len) + (o, sgn * (bw / 2 + pin_len / 2)))
    else:  # qfn: pads flush with the body edge
        bl, bw = L, W
        n = int((bl - 2) // 0.8)
        for i in range(n):
            o = (i - (n - 1) / 2) * 0.8
            for sgn in (-1, 1):
                pins.append(_rect(0.4, 0.8) + (o, sgn * (bw / 2 - 0.4)))
                pins.append(_rect(0.8, 0.4) + (sgn * (bl / 2 - 0.4), o))
    return bl, bw, pins


def _draw_chip_pads(cv: _Canvas, spec: ComponentSpec) -> None:
    bl, bw, pins = _chip_pins(spec)
    rot = _rot(spec.rotation_deg)
    c = np.array(spec.centre_mm)
    pads = []
    for p in pins:
        centre = p.mean(axis=0)
        grown = (p - centre) * 1.35 + centre
        pads.append(grown @ rot.T + c)
    cv.pen.polys(cv.bgr, pads, (175, 182, 188))
    cv.pen.polys(cv.gloss, pads, 235)
    if spec.style == "qfn":
        thermal = _rect(bl * 0.5, bw * 0.5) @ rot.T + c
        cv.pen.poly(cv.bgr, thermal, (175, 182, 188))
        cv.pen.poly(cv.gloss, thermal, 235)


def _draw_chip(cv: _Canvas, spec: ComponentSpec, dx: float, dy: float, rot_deg: float, shade: float) -> None:
    bl, bw, pins = _chip_pins(spec)
    rot = _rot(spec.rotation_deg + rot_deg)
    c = np.array(spec.centre_mm) + (dx, dy)
    pen = cv.pen
    if spec.style != "qfn":
        pen.polys(cv.bgr, [p @ rot.T + c for p in pins], (196, 198, 200))
        pen.polys(cv.gloss, [p @ rot.T + c for p in pins], 240)
    body = _rect(bl, bw) @ rot.T + c
    g = int(shade)
    pen.poly(cv.bgr, body, (g, g, g + 3))
    pen.poly(cv.gloss, body, 40)
    if spec.style == "qfn":
        pen.polys(cv.bgr, [p @ rot.T + c for p in pins], (170, 172, 175))
    # pin-1 dot and marking
    dot = np.array([[-bl / 2 + max(1.2, bl * 0.12), -bw / 2 + max(1.2, bw * 0.12)]]) @ rot.T + c
    pen.circle(cv.bgr, dot[0], max(0.45, min(bl, bw) * 0.05), (g + 45, g + 45, g + 45))
    for j, frac in enumerate((0.55, 0.3)):
        mark = _rect(bl * frac, max(0.5, bw * 0.07)) + (0.0, (j - 0.2) * bw * 0.22)
        pen.poly(cv.bgr, mark @ rot.T + c, (g + 70, g + 70, g + 72))


def _draw_bracket_base(cv: _Canvas, ptype: PartType) -> None:
    pen = cv.pen
    rng = np.random.default_rng(20261126)
    outline = _rounded_rect(ptype.length_mm, ptype.width_mm, 6.0)
    h, w = cv.alpha.shape
    # brushed steel: streaks along x
    streaks = rng.normal(0, 1, (h, 1)) * 7 + rng.normal(0, 1, (h, w)) * 2.5
    streaks = cv2.blur(streaks.astype(np.float32), (int(w / 10) | 1, 1))
    base = np.clip(158 + streaks, 0, 255).astype(np.uint8)
    metal = cv2.merge([np.clip(base.astype(np.int16) + 6, 0, 255).astype(np.uint8), base, np.clip(base.astype(np.int16) - 2, 0, 255).astype(np.uint8)])
    mask = np.zeros((h, w), np.uint8)
    pen.poly(mask, outline, 255)
    cv.bgr[:] = metal
    cv.alpha[:] = mask
    cv.gloss[:] = (mask.astype(np.uint16) * 200 // 255).astype(np.uint8)
    # flange bend lines (darker, then a highlight)
    for sy in (-1, 1):
        y = sy * (ptype.width_mm / 2 - 8)
        pen.line(cv.bgr, np.array([[-ptype.length_mm / 2 + 4, y], [ptype.length_mm / 2 - 4, y]]), (110, 108, 106), 1.2)
        pen.line(cv.bgr, np.array([[-ptype.length_mm / 2 + 4, y + sy * 1.3], [ptype.length_mm / 2 - 4, y + sy * 1.3]]), (205, 203, 200), 0.5)
    # fastener holes (empty unless a fastener is placed) and design holes: through to the belt
    for spec in ptype.components:
        _hole(cv, np.array(spec.centre_mm), FASTENER_HOLE_DIAMETER_MM, FASTENER_HOLE_DIAMETER_MM)
    for hole in ptype.design_holes:
        _hole(cv, np.array(hole.centre_mm), *hole.size_mm)
    # stamped part number
    org = pen.fx(np.array([[-10.0, ptype.width_mm / 2 - 12.5]]))[0] / FIXED
    cv2.putText(cv.bgr, "BRK-7", (int(org[0]), int(org[1])), cv2.FONT_HERSHEY_SIMPLEX, 0.12 * pen.k / 4, (120, 118, 116), max(1, int(0.3 * pen.k)), cv2.LINE_AA)


def _hole(cv: _Canvas, c: np.ndarray, length: float, width: float) -> None:
    pen = cv.pen
    if abs(length - width) < 1e-6:
        pen.circle(cv.bgr, c, length / 2 + 0.7, (92, 90, 88))  # bevel shadow
        pen.circle(cv.alpha, c, length / 2, 0)
        pen.circle(cv.bgr, c, length / 2, (0, 0, 0))
        pen.circle(cv.gloss, c, length / 2, 0)
    else:
        pen.poly(cv.bgr, _obround(tuple(c), length + 1.4, width + 1.4), (92, 90, 88))
        pts = _obround(tuple(c), length, width)
        pen.poly(cv.alpha, pts, 0)
        pen.poly(cv.bgr, pts, (0, 0, 0))
        pen.poly(cv.gloss, pts, 0)


def _draw_fastener(cv: _Canvas, spec: ComponentSpec, dx: float, dy: float, rot_deg: float, shade: float) -> None:
    pen = cv.pen
    c = np.array(spec.centre_mm) + (dx, dy)
    r_washer = spec.size_mm[0] / 2
    # the washer may sit partly over the hole: it covers what is under it, so alpha becomes 255
    pen.circle(cv.bgr, c + (0.5, 0.5), r_washer, (70, 70, 70))  # contact shadow
    pen.circle(cv.alpha, c + (0.5, 0.5), r_washer, 255)
    pen.circle(cv.bgr, c, r_washer, (186, 188, 190))
    pen.circle(cv.alpha, c, r_washer, 255)
    pen.circle(cv.gloss, c, r_washer, 230)
    pen.circle(cv.bgr, c, r_washer - 0.5, (160, 162, 165), 0.4)
    hexagon = np.array([[math.cos(math.radians(60 * i + rot_deg)), math.sin(math.radians(60 * i + rot_deg))] for i in range(6)]) * 5.2 + c
    g = int(shade)
    pen.poly(cv.bgr, hexagon, (g, g, g + 4))
    pen.poly(cv.gloss, hexagon, 120)
    top = (hexagon - c) * 0.62 + c
    pen.poly(cv.bgr, top, (g + 28, g + 28, g + 30))
    pen.circle(cv.bgr, c - (0.8, 0.8), 1.0, (min(255, g + 70),) * 3)


def _blend_draw(img: np.ndarray, pen: _Pen, pts_mm: np.ndarray, margin_mm: float, draw, opacity: float) -> None:
    """Draw with ``draw(roi_copy, offset_pen)`` in a small ROI and blend it in with ``opacity``."""
    px = pen.px(pts_mm)
    m = margin_mm * pen.k + 2
    x0, y0 = (np.floor(px.min(axis=0) - m)).astype(int)
    x1, y1 = (np.ceil(px.max(axis=0) + m)).astype(int)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    layer = roi.copy()
    sub = _Pen(pen.k, tuple(pen.origin - np.array([x0, y0]) / pen.k))
    draw(layer, sub)
    cv2.addWeighted(layer, opacity, roi, 1 - opacity, 0, dst=roi)


@dataclass(frozen=True, eq=False)
class Sprite:
    """A part drawn for the belt strip: premultiplied BGR + alpha + gloss, top-left at (u0, v0)."""

    bgr: np.ndarray  # uint8 h x w x 3, premultiplied by alpha
    alpha: np.ndarray  # uint8 h x w
    gloss: np.ndarray  # uint8 h x w, premultiplied by alpha
    u0: int
    v0: int


def render_part(plan: PartPlan, mm_per_px: float, strip_offset_px: tuple[float, float], with_defects: bool = True) -> Sprite:
    """Draw one part for the belt strip.

    The part's centre lands at strip pixel ``part_to_strip(...) + strip_offset_px`` (sub-pixel).
    ``with_defects=False`` draws the same part as if it were good (same jitter, dust and tint),
    which is how tests check that a defect's pixels lie inside its ground-truth box.
    """
    truth = plan.truth
    ptype = PART_TYPES[truth.part_type]
    base_bgr, base_alpha, base_gloss = _base(truth.part_type, mm_per_px)
    ss = _supersample(mm_per_px)
    k = ss / mm_per_px
    pad = 1.0
    pen = _Pen(k, (ptype.length_mm / 2 + pad, ptype.width_mm / 2 + pad))
    tint = np.array(plan.tint, np.float32)
    cv = _Canvas(
        cv2.multiply(base_bgr, tuple(float(t) for t in tint) + (0.0,), dtype=cv2.CV_8U),
        base_alpha.copy(),
        base_gloss.copy(),
        pen,
    )
    rng = np.random.default_rng([truth.part_id, 77])  # shades only; not part of the plan's truth
    shades = rng.uniform(0, 1, len(plan.placements))
    for p, shade in zip(plan.placements, shades):
        if not p.present(with_defects):
            continue
        dx, dy, rot = p.pose(with_defects)
        if p.spec.kind == "chip":
            _draw_chip(cv, p.spec, dx, dy, rot, 26 + 18 * float(shade))
        else:
            _draw_fastener(cv, p.spec, dx, dy, rot, 110 + 25 * float(shade))
    for d in plan.dust:
        shade = (d.shade,) * 3
        if d.kind == "speck":
            _blend_draw(cv.bgr, pen, d.points_mm, d.size_mm, lambda img, pn, d=d, s=shade: pn.circle(img, d.points_mm[0], d.size_mm, s), d.opacity)
        else:
            _blend_draw(cv.bgr, pen, d.points_mm, d.size_mm, lambda img, pn, d=d, s=shade: pn.line(img, d.points_mm, s, d.size_mm), d.opacity)
    if plan.sheen_strength > 0:
        _sheen(cv, plan.sheen_angle_deg, plan.sheen_strength)
    if with_defects and plan.scratch is not None:
        _scratch(cv, plan.scratch)
    return _place(cv, truth, mm_per_px, ss, pad, ptype, strip_offset_px)


def _sheen(cv: _Canvas, angle_deg: float, strength: float) -> None:
    """A broad soft reflection band across the part (harmless)."""
    h, w = cv.alpha.shape
    small = (max(2, w // 16), max(2, h // 16))
    xs = np.linspace(-1, 1, small[0], dtype=np.float32)[None, :]
    ys = np.linspace(-1, 1, small[1], dtype=np.float32)[:, None] * (h / w)
    a = math.radians(angle_deg)
    d = xs * math.cos(a) + ys * math.sin(a)
    band = np.exp(-((d - 0.2) ** 2) / 0.08) * strength * 255
    band = cv2.resize(band.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    add = band.astype(np.uint8)
    cv2.add(cv.bgr, cv2.merge([add, add, add]), dst=cv.bgr)


def _scratch(cv: _Canvas, scratch: Scratch) -> None:
    pen = cv.pen
    px = pen.px(scratch.points_mm)
    m = scratch.width_mm * pen.k + 3
    h, w = cv.alpha.shape
    x0, y0 = np.maximum(0, np.floor(px.min(axis=0) - m).astype(int))
    x1, y1 = np.minimum((w, h), np.ceil(px.max(axis=0) + m).astype(int))
    sub = _Pen(pen.k, tuple(pen.origin - np.array([x0, y0]) / pen.k))
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    sub.line(mask, scratch.points_mm, 255, scratch.width_mm)
    roi = cv.bgr[y0:y1, x0:x1].astype(np.float32)
    weight = (mask.astype(np.float32) / 255.0)[..., None]
    if scratch.contrast > 0:  # scratch through to brighter material: move towards white
        target = roi + (255.0 - roi) * scratch.contrast + 40.0 * scratch.contrast
    else:  # gouge: darker
        target = roi * (1.0 + scratch.contrast)
    cv.bgr[y0:y1, x0:x1] = np.clip(roi + (target - roi) * weight, 0, 255).astype(np.uint8)
    g = cv.gloss[y0:y1, x0:x1]
    g[mask > 0] = g[mask > 0] // 3  # scratches are matte


def _place(cv: _Canvas, truth: PartTruth, mm_per_px: float, ss: int, pad: float, ptype: PartType, offset: tuple[float, float]) -> Sprite:
    """Turn and shift the hi-res drawing onto the strip grid, then average down to strip pixels."""
    corners = part_to_strip(truth, _rect(ptype.length_mm + 2 * pad, ptype.width_mm + 2 * pad), mm_per_px) + offset
    u0 = int(math.floor(corners[:, 0].min())) - 1
    v0 = int(math.floor(corners[:, 1].min())) - 1
    u1 = int(math.ceil(corners[:, 0].max())) + 1
    v1 = int(math.ceil(corners[:, 1].max())) + 1
    centre = np.array(part_to_strip(truth, np.zeros((1, 2)), mm_per_px)[0]) + offset
    # hi-res edge coords: src X = (p + half) * k; dst X' = ss * (centre - (u0, v0)) + R p k
    R = _rot(truth.rotation_deg)
    k = ss / mm_per_px
    half = np.array([ptype.length_mm / 2 + pad, ptype.width_mm / 2 + pad]) * k
    b = ss * (centre - (u0, v0)) - R @ half
    # centre convention for cv2: x_c' = R x_c + (R 0.5 + b - 0.5)
    M = np.hstack([R, (R @ np.array([0.5, 0.5]) + b - 0.5)[:, None]])
    size = ((u1 - u0) * ss, (v1 - v0) * ss)
    a = cv.alpha
    premult = cv2.multiply(cv.bgr, cv2.merge([a, a, a]), scale=1 / 255)
    gloss = cv2.multiply(cv.gloss, a, scale=1 / 255)
    bgra = cv2.merge([premult, a])
    bgra = cv2.warpAffine(bgra, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    gloss = cv2.warpAffine(gloss, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if ss > 1:
        out = (u1 - u0, v1 - v0)
        bgra = cv2.resize(bgra, out, interpolation=cv2.INTER_AREA)
        gloss = cv2.resize(gloss, out, interpolation=cv2.INTER_AREA)
    return Sprite(np.ascontiguousarray(bgra[..., :3]), np.ascontiguousarray(bgra[..., 3]), gloss, u0, v0)
