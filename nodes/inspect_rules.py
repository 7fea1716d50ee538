"""``inspect.rules``: per part type, in millimetres — is every component there and in its place?"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from lineguard.nodes.parts_model import FrameFindings, PartFindings, PartTrack, class_names
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort

MISSING = "missing_component"
MISALIGNED = "misaligned"
SCRATCH = "scratch"
_SCALE_RANGE = (0.85, 1.15)  # image scale a part may be seen at, against the line's mm_per_px
_SCALE_FRAMES = 200  # the image scale is the median over this many recent frames of a part type
_SCALE_MIN_FRAMES = 20  # before that many, mm_per_px is taken as it is
_SCALE_WARN = 0.02  # a scale further off than this is worth a warning
_MIN_SAMPLES = 3  # placement is judged from the median of at least this many frames
_STALE_FRAMES = 600  # per-part measurement state unseen this long is dropped (a lost "ended")


def _chip(name: str, x: float, y: float, size: float | tuple[float, float]) -> dict[str, Any]:
    length, width = (size, size) if isinstance(size, (int, float)) else size
    return {"name": name, "kind": "chip", "x_mm": x, "y_mm": y, "length_mm": length, "width_mm": width}


def _fastener(name: str, x: float, y: float) -> dict[str, Any]:
    return {"name": name, "kind": "fastener", "x_mm": x, "y_mm": y, "length_mm": 14.0, "width_mm": 14.0, "check_rotation": False}


# The shipped model's part types (the simulated line's nominal layouts, lineguard.sim.parts): a
# recipe for that line needs no table of its own. A recipe's ``part_types`` replaces this table.
DEFAULT_PART_TYPES: dict[str, dict[str, Any]] = {
    "pcb": {
        "length_mm": 150.0,
        "width_mm": 100.0,
        "components": [
            _chip("U1", -30.0, -4.0, 26.0),
            _chip("U2", 14.0, -30.0, (17.0, 11.0)),
            _chip("U3", 14.0, -10.0, (17.0, 11.0)),
            _chip("U4", 46.0, -20.0, 11.0),
            _chip("U5", 36.0, 22.0, 18.0),
        ],
    },
    "bracket": {
        "length_mm": 140.0,
        "width_mm": 70.0,
        "components": [_fastener(f"B{i + 1}", sx * 52.0, sy * 20.0) for i, (sx, sy) in enumerate(((-1, -1), (1, -1), (-1, 1), (1, 1)))],
    },
}

_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_COMPONENT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "kind", "x_mm", "y_mm", "length_mm", "width_mm"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "Reference designator, e.g. U3."},
        "kind": {"type": "string", "minLength": 1, "description": "The detector's class name for it, e.g. chip."},
        "x_mm": {"type": "number", "description": "Nominal centre along travel, from the part centre."},
        "y_mm": {"type": "number", "description": "Nominal centre across the belt, from the part centre."},
        "length_mm": {**_POSITIVE, "description": "Footprint along x."},
        "width_mm": {**_POSITIVE, "description": "Footprint along y."},
        "rotation_deg": {"type": "number", "default": 0.0, "description": "Nominal rotation."},
        "check_rotation": {"type": "boolean", "default": True, "description": "False for round parts (washers): a turn changes nothing."},
    },
}
_PART_TYPE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["length_mm", "width_mm"],
    "properties": {
        "length_mm": {**_POSITIVE, "description": "Outline along travel."},
        "width_mm": {**_POSITIVE, "description": "Outline across the belt."},
        "components": {"type": "array", "items": _COMPONENT_SCHEMA, "default": []},
        "offset_tolerance_mm": {**_POSITIVE, "default": 1.5, "description": "A component further off its place is misaligned."},
        "rotation_tolerance_deg": {**_POSITIVE, "default": 8.0, "description": "A component turned further is misaligned."},
        "match_radius_mm": {**_POSITIVE, "default": 12.0, "description": "A detection further from a component's place is not that component."},
        "outline_tolerance_mm": {**_POSITIVE, "default": 6.0, "description": "A part box this much smaller than the outline is cut off or hidden (not inspected)."},
    },
}


@dataclass
class _PartHistory:
    """What the inspector remembers of one part: recent measurements, per component."""

    last_frame_id: int
    offsets: dict[str, deque] = field(default_factory=dict)
    turns: dict[str, deque] = field(default_factory=dict)
    seen: dict[str, deque] = field(default_factory=dict)


@dataclass(frozen=True)
class _Component:
    name: str
    kind: str
    xy_mm: tuple[float, float]
    size_mm: tuple[float, float]
    rotation_deg: float
    check_rotation: bool


@dataclass(frozen=True)
class _PartRule:
    name: str
    length_mm: float
    width_mm: float
    components: tuple[_Component, ...]
    offset_tolerance_mm: float
    rotation_tolerance_deg: float
    match_radius_mm: float
    outline_tolerance_mm: float

    @classmethod
    def from_params(cls, name: str, p: Mapping[str, Any]) -> "_PartRule":
        comps = tuple(
            _Component(c["name"], c["kind"], (float(c["x_mm"]), float(c["y_mm"])), (float(c["length_mm"]), float(c["width_mm"])), float(c["rotation_deg"]), bool(c["check_rotation"]))
            for c in p["components"]
        )
        return cls(name, float(p["length_mm"]), float(p["width_mm"]), comps, float(p["offset_tolerance_mm"]), float(p["rotation_tolerance_deg"]), float(p["match_radius_mm"]), float(p["outline_tolerance_mm"]))


class RuleInspector(Node):
    """Turns each tracked part in each frame into findings, by the rules of its part type.

    Rules live in the recipe, per part type, in millimetres (the line's ``mm_per_px`` converts):
    the outline and every component's nominal place and footprint in the part's own frame (origin
    at the part centre, x along travel). The defaults are the simulated line's ``pcb`` and
    ``bracket``; a recipe's ``part_types`` replaces them.

    - ``missing_component``: a component with no detection of its kind near its place in at least
      ``missing_fraction`` of the part's last ``measure_frames`` frames (a detector's occasional
      miss is not a missing component). Judged only when the whole part is in view (not cut by the
      image edge, box as large as the outline).
    - ``misaligned``: a component further than ``offset_tolerance_mm`` from its place, or turned by
      more than ``rotation_tolerance_deg``. The part's own pose (where it lies and how it is turned
      on the belt, and the image scale there) is fitted first from its box centre and its
      components, leaving out a component that is off when seen from the others, so a turned part
      is not a misplaced component (a part with fewer than two components found is taken to lie
      square). Offsets and turns are the
      median of the part's last ``measure_frames`` frames, judged from the third frame on (a stray
      match or a noisy box does not decide). A turn is read from the size of the component's box:
      its sign is not visible, and of the two readings the smaller is taken. With
      ``placement_zone_px``, placements are measured only while the part's box lies within those
      image columns (a camera that is not square to the belt distorts the image edges most).
    - Detections of ``defect_classes`` (scratch, and a detector's own missing/misaligned boxes)
      are defects of that kind wherever the part is seen.

    Example:
        insp:
          type: inspect.rules
          params:
            part_types:
              bracket:
                length_mm: 140
                width_mm: 70
                offset_tolerance_mm: 2.0
                components:
                  - {name: B1, kind: fastener, x_mm: -52, y_mm: -20, length_mm: 14, width_mm: 14, check_rotation: false}
                  - {name: B2, kind: fastener, x_mm: 52, y_mm: -20, length_mm: 14, width_mm: 14, check_rotation: false}
          in: {tracks: trk.tracks}
    """

    type_name = "inspect.rules"
    version = 1
    inputs = {"tracks": InPort("tracks", queue=8)}
    outputs = {"findings": OutPort("part_findings", "lineguard.nodes.parts_model.FrameFindings per frame")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "part_types": {
                "description": "Rules per part type (the detector's class name of the whole part).",
                "type": "object",
                "minProperties": 1,
                "additionalProperties": _PART_TYPE_SCHEMA,
                "default": DEFAULT_PART_TYPES,
            },
            "defect_classes": {
                "description": "Detector classes that are defects by themselves (the class name is the defect kind).",
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "uniqueItems": True,
                "default": [SCRATCH, MISSING, MISALIGNED],
            },
            "measure_frames": {"type": "integer", "minimum": 1, "default": 5, "description": "Offsets, turns and presence are taken over this many frames of a part."},
            "placement_zone_px": {
                "description": "Image columns [x0, x1] a part's box must lie within for its placements to be measured; null: anywhere in view. Near the image edges a camera that is not square to the belt bends the part's geometry by a millimetre or more, beyond what the per-part fit takes out.",
                "type": ["array", "null"],
                "items": {"type": "number", "minimum": 0},
                "minItems": 2,
                "maxItems": 2,
                "default": None,
            },
            "missing_fraction": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 0.75,
                "description": "A component absent in at least this fraction of the last measure_frames frames is missing.",
            },
        },
    }

    @classmethod
    def check_params(cls, params, line):
        problems = []
        defect_classes = set(params["defect_classes"])
        for tname, t in params["part_types"].items():
            where = f"part_types.{tname}"
            names = [c["name"] for c in t["components"]]
            doubles = sorted({n for n in names if names.count(n) > 1})
            if doubles:
                problems.append((f"{where}.components", f"expected unique component names, got {doubles} more than once"))
            for c in t["components"]:
                if c["kind"] in defect_classes or c["kind"] == tname:
                    problems.append((f"{where}.components", f"expected component {c['name']}'s kind to be a component class, got '{c['kind']}' (a defect or part class)"))
                reach_x = abs(c["x_mm"]) + c["length_mm"] / 2
                reach_y = abs(c["y_mm"]) + c["width_mm"] / 2
                if reach_x > t["length_mm"] / 2 or reach_y > t["width_mm"] / 2:
                    problems.append((f"{where}.components", f"expected component {c['name']} inside the {t['length_mm']} x {t['width_mm']} mm outline, got it reaching {reach_x:g} mm along x and {reach_y:g} mm along y from the centre"))
            if t["match_radius_mm"] <= t["offset_tolerance_mm"]:
                problems.append((f"{where}.match_radius_mm", f"expected more than offset_tolerance_mm ({t['offset_tolerance_mm']}), so a misaligned component is still found, got {t['match_radius_mm']}"))
            if t["outline_tolerance_mm"] >= min(t["length_mm"], t["width_mm"]) / 2:
                problems.append((f"{where}.outline_tolerance_mm", f"expected less than half the outline's smaller side ({min(t['length_mm'], t['width_mm']) / 2:g}), got {t['outline_tolerance_mm']}"))
        zone = params["placement_zone_px"]
        if zone is not None and zone[1] <= zone[0]:
            problems.append(("placement_zone_px", f"expected [x0, x1] with x0 < x1, got {list(zone)}"))
        return problems

    async def open(self) -> None:
        self.rules = {name: _PartRule.from_params(name, p) for name, p in self.params["part_types"].items()}
        self.defect_classes = tuple(self.params["defect_classes"])
        self.kinds = tuple(dict.fromkeys((MISSING, MISALIGNED, *self.defect_classes)))
        self.mm_per_px = float(self.ctx.line["mm_per_px"])
        # per part: component name -> recent offsets (mm, part frame) and turns (deg)
        self.history: OrderedDict[int, _PartHistory] = OrderedDict()  # per part, least recently seen first
        self.scales: dict[str, deque] = {}  # per part type: image scale seen in recent frames (box against outline)
        self.scale_warned: set[str] = set()

    async def process(self, port: str, envelope: Envelope) -> None:
        frame = envelope.payload
        findings = tuple(self.inspect(track, envelope.frame_id) for track in frame.parts)
        for tid in frame.ended:
            self.history.pop(tid, None)
        while self.history:
            tid, oldest = next(iter(self.history.items()))
            if envelope.frame_id - oldest.last_frame_id <= _STALE_FRAMES:
                break
            del self.history[tid]
        await self.ctx.emit("findings", envelope.derive(FrameFindings(frame.image_hw, findings, frame.ended)))

    # -- one part in one frame ------------------------------------------------------------------------

    def inspect(self, track: PartTrack, frame_id: int) -> PartFindings:
        dets = track.detections
        names = class_names(dets)
        conf = dets.confidence if dets.confidence is not None else np.ones(len(dets), np.float32)
        defects: dict[str, float] = {}
        notes: list[str] = []
        for kind in self.defect_classes:
            sel = names == kind
            if np.any(sel):
                defects[kind] = float(conf[sel].max())
                notes.append(f"{kind} detected")
        rule = self.rules.get(track.part_type)
        if rule is None:
            notes.append(f"no rules for part type '{track.part_type}'")
            return PartFindings(track, False, defects, (), notes=tuple(notes))
        bw = (track.box_xyxy[2] - track.box_xyxy[0]) * self.mm_per_px
        bh = (track.box_xyxy[3] - track.box_xyxy[1]) * self.mm_per_px
        whole = track.in_view and bw >= rule.length_mm - rule.outline_tolerance_mm and bh >= rule.width_mm - rule.outline_tolerance_mm
        if not whole:
            return PartFindings(track, False, defects, (), notes=tuple(notes))

        m = self.params["measure_frames"]
        hist = self.history.pop(track.track_id, None) or _PartHistory(frame_id)
        hist.last_frame_id = frame_id
        self.history[track.track_id] = hist  # most recently seen last
        offsets_hist, rot_hist, seen_hist = hist.offsets, hist.turns, hist.seen
        enough = min(_MIN_SAMPLES, m)  # a median of fewer samples is one noisy box
        offsets: dict[str, float] = {}
        rotations: dict[str, float] = {}
        placement_judged = not rule.components
        zone = self.params["placement_zone_px"]
        in_zone = zone is None or (zone[0] <= track.box_xyxy[0] and track.box_xyxy[2] <= zone[1])
        if rule.components:
            # a detector's own "misaligned" box is the misplaced component's box: the component is there
            comp_sel = np.isin(names, [c.kind for c in rule.components] + [MISALIGNED])
            comp_idx = np.flatnonzero(comp_sel)
            measured = self._measure(rule, track, dets.xyxy[comp_idx].astype(np.float64), names[comp_idx], conf[comp_idx])
            for comp, found in zip(rule.components, measured):
                seen = seen_hist.setdefault(comp.name, deque(maxlen=m))
                seen.append(found is not None)
                if seen.count(False) >= self.params["missing_fraction"] * len(seen):
                    defects[MISSING] = max(defects.get(MISSING, 0.0), track.confidence)
                    notes.append(f"{comp.name} missing")
                if found is None or not in_zone:
                    continue
                offset_xy, turn_deg, det_conf = found
                oh = offsets_hist.setdefault(comp.name, deque(maxlen=m))
                oh.append((float(offset_xy[0]), float(offset_xy[1])))
                if len(oh) >= enough:
                    placement_judged = True
                    offsets[comp.name] = math.hypot(statistics.median(o[0] for o in oh), statistics.median(o[1] for o in oh))
                    if offsets[comp.name] > rule.offset_tolerance_mm:
                        defects[MISALIGNED] = max(defects.get(MISALIGNED, 0.0), det_conf)
                        notes.append(f"{comp.name} off by {offsets[comp.name]:.1f} mm")
                if turn_deg is None:
                    continue
                rh = rot_hist.setdefault(comp.name, deque(maxlen=m))
                rh.append(turn_deg)
                if len(rh) >= enough:
                    placement_judged = True
                    rotations[comp.name] = statistics.median(rh)
                    if rotations[comp.name] > rule.rotation_tolerance_deg:
                        defects[MISALIGNED] = max(defects.get(MISALIGNED, 0.0), det_conf)
                        notes.append(f"{comp.name} turned by {rotations[comp.name]:.0f} deg")
        judged = self.kinds if placement_judged else tuple(k for k in self.kinds if k != MISALIGNED)
        return PartFindings(track, True, defects, judged, offsets, rotations, tuple(notes))

    def _measure(self, rule: _PartRule, track: PartTrack, boxes: np.ndarray, kinds: np.ndarray, confs: np.ndarray):
        """Per nominal component: None (not found) or (offset in the part frame [mm, mm], turn in
        degrees or None, the detection's confidence)."""
        mpp = self.mm_per_px
        cx = (track.box_xyxy[0] + track.box_xyxy[2]) / 2
        cy = (track.box_xyxy[1] + track.box_xyxy[3]) / 2
        # detections in mm, relative to the part box centre (image axes)
        q = np.column_stack([((boxes[:, 0] + boxes[:, 2]) / 2 - cx) * mpp, ((boxes[:, 1] + boxes[:, 3]) / 2 - cy) * mpp])
        nominal = np.array([c.xy_mm for c in rule.components])
        kind_ok = np.array([[k in (c.kind, MISALIGNED) for k in kinds] for c in rule.components], bool).reshape(len(rule.components), len(kinds))
        box_w, box_h = (track.box_xyxy[2] - track.box_xyxy[0]) * mpp, (track.box_xyxy[3] - track.box_xyxy[1]) * mpp
        scales = self.scales.setdefault(rule.name, deque(maxlen=_SCALE_FRAMES))
        scale = float(np.median(scales)) if len(scales) >= _SCALE_MIN_FRAMES else 1.0
        pose = _Pose(scale=scale)
        pairs: list[tuple[int, int]] = []
        for _ in range(2):  # match with the current pose, fit the pose, match again
            pairs = _match(pose.apply(nominal), q, kind_ok, rule.match_radius_mm)
            pose = _robust_pose(nominal, q, pairs, rule.offset_tolerance_mm, scale)
        fitted = pose.scale if pose.fitted else _scale_from_box(box_w, box_h, rule, pose.theta)
        scales.append(fitted)
        if len(scales) == scales.maxlen and abs(scale - 1.0) > _SCALE_WARN and rule.name not in self.scale_warned:
            self.scale_warned.add(rule.name)
            self.ctx.count("scale_off")
            self.ctx.log.warning(
                "%s parts look %.1f %% %s than their outline at mm_per_px %g: check the line's mm_per_px (or the rules' outline); placements are measured at the seen scale",
                rule.name, abs(scale - 1) * 100, "larger" if scale > 1 else "smaller", self.mm_per_px,
            )
        out: list[Any] = [None] * len(rule.components)
        for i, j in pairs:
            comp = rule.components[i]
            offset = pose.to_part(q[j]) - nominal[i]
            turn = None
            if comp.check_rotation:
                bw, bh = (boxes[j, 2] - boxes[j, 0]) * mpp / pose.scale, (boxes[j, 3] - boxes[j, 1]) * mpp / pose.scale
                turn = _turn_from_box(bw, bh, comp.size_mm, math.degrees(pose.theta) + comp.rotation_deg)
            out[i] = (offset, turn, float(confs[j]))
        return out


# -- geometry -----------------------------------------------------------------------------------------


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


@dataclass(frozen=True)
class _Pose:
    """Where a part lies in the image (mm, relative to its box centre): turned by ``theta``,
    shifted by ``t``, and seen at ``scale`` (the image scale there against the line's mm_per_px).
    ``fitted``: turn and scale were fitted to the part's components (not assumed)."""

    theta: float = 0.0
    t: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    fitted: bool = False

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Part-frame points (mm) to where they appear."""
        return self.scale * points @ _rot(self.theta).T + self.t

    def to_part(self, point: np.ndarray) -> np.ndarray:
        """Where a seen point lies in the part's own frame (mm)."""
        return _rot(-self.theta) @ (point - self.t) / self.scale


def _match(expected: np.ndarray, found: np.ndarray, kind_ok: np.ndarray, radius: float) -> list[tuple[int, int]]:
    """Nominal components to detections, one to one, same kind, within ``radius`` (Hungarian)."""
    if len(expected) == 0 or len(found) == 0:
        return []
    dist = np.linalg.norm(expected[:, None, :] - found[None, :, :], axis=2)
    cost = np.where(kind_ok & (dist <= radius), dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] < 1e6]


def _fit(nominal: np.ndarray, found: np.ndarray) -> _Pose:
    """Least-squares turn, scale and shift taking ``nominal`` onto ``found`` (2-D Umeyama).

    The scale is fitted per part and frame because it is not one number for the whole image: a
    camera that is not square to the belt sees the near side of the image larger than the far side
    (5 % across the image at a 6 degree tilt), so one mm_per_px misplaces components by millimetres
    at the image edges. Kept within the range a part may be seen at."""
    mn, mf = nominal.mean(axis=0), found.mean(axis=0)
    a, b = nominal - mn, found - mf
    dot = float(np.sum(a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]))
    cross = float(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]))
    spread = float(np.sum(a * a))
    theta = math.atan2(cross, dot)
    scale = min(max(math.hypot(dot, cross) / spread, _SCALE_RANGE[0]), _SCALE_RANGE[1]) if spread > 0 else 1.0
    t = mf - scale * (_rot(theta) @ mn)
    return _Pose(theta, (float(t[0]), float(t[1])), scale, True)


def _left_out_residuals(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """For every point k but the first: how far it lies from where the fit of all the other points
    puts it."""
    out = np.empty(len(src) - 1)
    for k in range(1, len(src)):
        keep = np.arange(len(src)) != k
        out[k - 1] = float(np.linalg.norm(_fit(src[keep], dst[keep]).apply(src[k : k + 1])[0] - dst[k]))
    return out


def _scale_from_box(box_w_mm: float, box_h_mm: float, rule: "_PartRule", theta: float) -> float:
    """The image scale of a part against mm_per_px: its box (an L x W outline turned by theta
    fills (L + W)(|cos| + |sin|) of w + h) against its outline."""
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    scale = (box_w_mm + box_h_mm) / ((rule.length_mm + rule.width_mm) * (c + s))
    return min(max(scale, _SCALE_RANGE[0]), _SCALE_RANGE[1])


def _fit_pairs(nominal: np.ndarray, q: np.ndarray, pairs: list[tuple[int, int]]) -> _Pose:
    """The pose from the part's box centre (the nominal origin) and the given matched components."""
    src = np.vstack([[0.0, 0.0], nominal[[i for i, _ in pairs]].reshape(-1, 2)])
    dst = np.vstack([[0.0, 0.0], q[[j for _, j in pairs]].reshape(-1, 2)])
    return _fit(src, dst)


def _robust_pose(nominal: np.ndarray, q: np.ndarray, pairs: list[tuple[int, int]], tolerance: float, scale: float) -> _Pose:
    """The part's pose from its box centre and the components it rests on. A component whose
    place, seen from the pose fitted without it, is beyond ``tolerance`` is left out (the worst
    first, while two others remain), so that a misplaced component neither turns nor stretches the
    whole part nor hides its own error in the fit. One component cannot tell the part's turn from
    its own offset: the part is then taken to lie square at ``scale``."""
    use = list(pairs)
    while len(use) > 2:
        src = np.vstack([[0.0, 0.0], nominal[[i for i, _ in use]]])
        dst = np.vstack([[0.0, 0.0], q[[j for _, j in use]]])
        left_out = _left_out_residuals(src, dst)
        worst = int(np.argmax(left_out))
        if left_out[worst] <= tolerance:
            break
        use.pop(worst)
    if len(use) < 2:
        return _Pose(scale=scale)
    return _fit_pairs(nominal, q, use)


def _turn_from_box(box_w_mm: float, box_h_mm: float, size_mm: tuple[float, float], expected_deg: float) -> float:
    """How far (deg, >= 0) a component is turned from its expected angle, read from the size of its
    axis-aligned box: a L x W footprint turned by a fills (L + W)(|cos a| + |sin a|) of w + h. The
    sign of a is not visible in a box; of the two readings the one closer to expected is taken."""
    ratio = (box_w_mm + box_h_mm) / (size_mm[0] + size_mm[1])
    ratio = min(max(ratio, 1.0), math.sqrt(2.0))
    a = math.degrees(math.asin(ratio / math.sqrt(2.0))) - 45.0  # |turn| within [0, 45]
    return min(abs(_fold(sign * a - expected_deg)) for sign in (1.0, -1.0))


def _fold(deg: float) -> float:
    """An angle modulo 90 degrees, into [-45, 45) (a box looks the same every quarter turn)."""
    return (deg + 45.0) % 90.0 - 45.0
