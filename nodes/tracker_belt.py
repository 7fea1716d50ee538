"""``tracker.belt``: follows parts across frames with the belt's motion as the prior."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import math

import numpy as np
import supervision as sv
from scipy.optimize import linear_sum_assignment
from supervision.detection.utils.iou_and_nms import box_iou_batch

from lineguard.nodes.parts_model import (
    IMAGE_HW,
    PartTrack,
    TrackedFrame,
    belt_travel_mm,
    class_names,
    image_x_to_belt_mm,
    truth_ids,
)
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort

NS_PER_S = 1_000_000_000
_MAX_DRIFT_FRACTION = 0.2  # a part creeps on the belt at most this fraction of the belt speed
_DRIFT_BASELINE_NS = 100_000_000  # creep is measured over at least this long
_GRAVEYARD_MAX = 64  # ended tracks remembered for id-switch detection
_HIDDEN_AREA = 0.8  # a box under this share of the part's size, inside its place, shows the part partly hidden
_WHOLE_AREAS = 16  # the part's size: the median area of its last boxes fully in view
_WHOLE_SIZES = 64  # a part type's size: the median of its parts' last whole boxes
_SIZE_SLACK = 1.15  # a part lies turned a few degrees, and boxes jitter: its box varies this much


@dataclass
class _Track:
    track_id: int
    belt_box: np.ndarray  # float64 xyxy in belt pixels: image box shifted back by the belt's travel
    last_frame_id: int
    last_t_ns: int
    confidence: float
    hits: int = 1
    types: Counter = field(default_factory=Counter)
    truth: Counter = field(default_factory=Counter)
    drift_px_s: float = 0.0  # the part's own motion relative to the belt (slip), belt px/s
    centre_belt_px: float | None = None  # part centre from the sighting fully in view nearest the image centre
    centre_t_ns: int = 0
    centre_off_px: float = math.inf  # how far from the image centre that sighting was
    anchor_belt_px: float | None = None  # part centre at the first sighting fully in view
    anchor_t_ns: int = 0
    max_width_px: float = 0.0  # widest box seen: the part is at least this long
    whole_areas: deque = field(default_factory=lambda: deque(maxlen=_WHOLE_AREAS))  # areas of its boxes fully in view (belt px²)
    cut_centre_belt_px: float = 0.0  # centre guessed from a box cut by the image edge
    reidentified_from: int | None = None

    def predicted(self, t_ns: int) -> np.ndarray:
        dx = self.drift_px_s * (t_ns - self.last_t_ns) / NS_PER_S
        return self.belt_box + (dx, 0.0, dx, 0.0)

    def centre_estimate(self, t_ns: int) -> float:
        """The part centre in belt pixels: from its last sighting fully in view, else a guess from
        the uncut edge of a cut box (off by at most half the part's length)."""
        if self.centre_belt_px is None:
            return self.cut_centre_belt_px
        return self.centre_belt_px + self.drift_px_s * (t_ns - self.centre_t_ns) / NS_PER_S


class BeltTracker(Node):
    """Follows parts on a moving belt and gives each one an id, with its components and defects.

    Every part box (``part_classes``) is moved into belt coordinates (the image box shifted back by
    the belt's travel since time 0: from the frame's encoder count, else from the recipe's belt
    speed × capture time), where a part lies still (without an encoder, a per-track drift absorbs a
    belt speed that differs from the recipe's). Parts are then associated ByteTrack-style on IoU
    (Hungarian): confident boxes (``high_confidence``) first against every track, the remaining boxes (down to ``min_confidence``) against the tracks still
    unmatched, and an unmatched box of at least ``new_track_confidence`` starts a track. A part
    box mostly inside a bigger one is a fragment or a duplicate and is dropped (``duplicate_ios``).
    A hand over a part can make the detector see it as pieces, so an unmatched box starts no track
    when it is a piece of a part already tracked or started in the same frame: mostly inside its
    place on the belt (``fragment_ios``), or overlapping it with both together no bigger than a
    whole part of that type (learnt from the whole boxes seen). A box inside a part's place and
    well under the part's size (from its whole sightings) is the part partly hidden: the part keeps
    its place.

    A track unseen for more than ``max_lost_frames`` frames (or predicted past the image's
    downstream edge) ends; its id is reported once in ``ended``. Part ids survive occlusions up to
    that many frames. A new track at the belt place of a track that ended within
    ``reid_window_frames`` is an id switch: counted (event ``id_switch``) and marked with
    ``reidentified_from``. State is bounded: live tracks plus at most 64 ended ones.

    Component and defect detections are assigned to the part box that contains their centre (the
    smallest, if several); the rest are counted (event ``unassigned_detections``). Needs the image
    size, from the detections' ``metadata['image_hw']`` or ``image_size_px``.

    Example:
        trk:
          type: tracker.belt
          params: {max_lost_frames: 15}
          in: {detections: det.detections}
    """

    type_name = "tracker.belt"
    version = 1
    inputs = {"detections": InPort("detections", queue=8)}
    outputs = {"tracks": OutPort("tracks", "lineguard.nodes.parts_model.TrackedFrame per frame")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "part_classes": {
                "description": "Class names of whole parts; every other class is a component or defect.",
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "uniqueItems": True,
                "default": ["pcb", "bracket"],
            },
            "image_size_px": {
                "description": "[width, height] when the detections do not carry metadata['image_hw'].",
                "type": ["array", "null"],
                "items": {"type": "integer", "minimum": 1},
                "minItems": 2,
                "maxItems": 2,
                "default": None,
            },
            "min_confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1, "description": "Part boxes below this are ignored."},
            "high_confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5, "description": "First association stage: boxes at least this confident."},
            "new_track_confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.6, "description": "An unmatched box at least this confident starts a track."},
            "min_iou": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.2, "description": "Least IoU (belt coordinates) of a box and its track."},
            "max_lost_frames": {"type": "integer", "minimum": 0, "default": 15, "description": "A track unseen for more frames ends."},
            "edge_margin_px": {"type": "number", "minimum": 0, "default": 8.0, "description": "A part box this close to the image edge may be cut off (not in view); keep it well above the detector's box jitter."},
            "duplicate_ios": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.8, "description": "A part box this much (of its area) inside a bigger one is dropped."},
            "fragment_ios": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 0.5,
                "description": "An unmatched box this much (of its area) inside a tracked part's place on the belt is a piece of that part (seen around a hand) and starts no track; parts lie side by side, never on each other.",
            },
            "reid_iou": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.3, "description": "IoU with a recently ended track that makes a new track an id switch."},
            "reid_window_frames": {"type": "integer", "minimum": 0, "default": 120, "description": "How long an ended track is remembered for id-switch detection."},
        },
    }

    @classmethod
    def check_params(cls, params, line):
        problems = []
        if not params["min_confidence"] <= params["high_confidence"]:
            problems.append(("high_confidence", f"expected >= min_confidence ({params['min_confidence']}), got {params['high_confidence']}"))
        if not params["high_confidence"] <= params["new_track_confidence"]:
            problems.append(("new_track_confidence", f"expected >= high_confidence ({params['high_confidence']}), got {params['new_track_confidence']}"))
        return problems

    async def open(self) -> None:
        self.part_classes = list(self.params["part_classes"])
        self.no_detections = sv.Detections.empty()
        self.tracks: dict[int, _Track] = {}
        self.graveyard: deque[tuple[int, np.ndarray, int]] = deque(maxlen=_GRAVEYARD_MAX)  # (id, belt box, ended at frame)
        # ids go on after a restart of this node: vote.part remembers the ids it has decided and
        # would ignore a new part under an old id
        self.next_id = self.ctx.carry.get("next_id", 1)
        self.whole_sizes: dict[str, deque] = {}  # per part type: (width, height) of its latest whole boxes
        self.id_switches = 0

    async def process(self, port: str, envelope: Envelope) -> None:
        await self.ctx.emit("tracks", envelope.derive(self.update(envelope)))

    # -- one frame ----------------------------------------------------------------------------------

    def update(self, envelope: Envelope) -> TrackedFrame:
        detections: sv.Detections = envelope.payload
        p, line = self.params, self.ctx.line
        mm_per_px = float(line["mm_per_px"])
        w, h = self._image_wh(detections)
        frame_id, t_ns = envelope.frame_id, envelope.t_capture_ns
        travel_px = belt_travel_mm(envelope, line) / mm_per_px
        shift = np.array([travel_px, 0.0, travel_px, 0.0])

        names = class_names(detections)
        conf = detections.confidence if detections.confidence is not None else np.ones(len(detections), np.float32)
        is_part = np.isin(names, self.part_classes) if len(names) else np.zeros(0, bool)
        part_idx = np.flatnonzero(is_part & (conf >= p["min_confidence"]))
        part_idx = self._without_duplicates(detections.xyxy, part_idx)
        boxes_img = detections.xyxy[part_idx].astype(np.float64)
        boxes_belt = boxes_img - shift
        part_conf = conf[part_idx]

        # two-stage association in belt coordinates
        live = list(self.tracks.values())
        predicted = np.array([t.predicted(t_ns) for t in live]).reshape(-1, 4)
        high = np.flatnonzero(part_conf >= p["high_confidence"])
        low = np.flatnonzero(part_conf < p["high_confidence"])
        pairs, free_tracks, free_high = _associate(predicted, boxes_belt, list(range(len(live))), high, p["min_iou"])
        pairs2, free_tracks, _ = _associate(predicted, boxes_belt, free_tracks, low, p["min_iou"])
        matched = {int(d): live[ti] for ti, d in pairs + pairs2}

        t_ids = truth_ids(detections)
        edge = p["edge_margin_px"]
        in_view = (boxes_img[:, 0] >= edge) & (boxes_img[:, 2] <= w - edge) & (boxes_img[:, 1] >= edge) & (boxes_img[:, 3] <= h - edge)
        # a new part from each unmatched confident box, most confident first, unless it is a piece
        # of a tracked part or of a part started in this frame (a hand over it): parts lie side by
        # side on the belt, never on each other
        places = list(predicted)
        place_types = [t.types.most_common(1)[0][0] for t in live]
        for d in sorted(free_high, key=lambda d: (-part_conf[d], d)):
            if part_conf[d] >= p["new_track_confidence"]:
                if self._is_piece(boxes_belt[d], places, place_types):
                    self.ctx.count("fragment_boxes")
                    continue
                matched[int(d)] = self._start(boxes_belt[d], frame_id, t_ns)
                places.append(boxes_belt[d])
                place_types.append(str(names[part_idx[d]]))
        for d, track in matched.items():
            truth = int(t_ids[part_idx[d]]) if t_ids is not None else None
            in_view[d] = self._observe(track, boxes_belt[d], bool(in_view[d]), str(names[part_idx[d]]), float(part_conf[d]), truth, frame_id, t_ns, travel_px, w, envelope.encoder is not None)

        ended = self._expire(frame_id, t_ns, travel_px, w, seen={id(t) for t in matched.values()})

        # components and defects go to the part box that contains their centre
        order = sorted(matched)  # detection order: deterministic
        others = np.flatnonzero(~is_part)
        owner = _owners(detections.xyxy[others], boxes_img[order]) if others.size else np.zeros(0, np.int64)
        unassigned = int(np.count_nonzero(owner < 0))
        if unassigned:
            self.ctx.count("unassigned_detections", unassigned)
        parts = []
        for k, d in enumerate(order):
            track = matched[d]
            mine = others[owner == k]
            parts.append(
                PartTrack(
                    track_id=track.track_id,
                    part_type=track.types.most_common(1)[0][0],
                    box_xyxy=tuple(float(v) for v in boxes_img[d]),
                    confidence=float(part_conf[d]),
                    position_mm=image_x_to_belt_mm(track.centre_estimate(t_ns) + travel_px, w, mm_per_px),
                    in_view=bool(in_view[d]),
                    hits=track.hits,
                    detections=detections[mine] if mine.size else self.no_detections,
                    reidentified_from=track.reidentified_from,
                    truth_part_id=track.truth.most_common(1)[0][0] if track.truth else None,
                )
            )
        parts.sort(key=lambda pt: pt.track_id)
        return TrackedFrame((h, w), tuple(parts), tuple(ended), unassigned, len(self.tracks))

    async def flush(self) -> None:
        """End of stream: nothing more to emit (vote.part decides the tracks still open)."""

    # -- helpers -------------------------------------------------------------------------------------

    def _image_wh(self, detections: sv.Detections) -> tuple[int, int]:
        hw = detections.metadata.get(IMAGE_HW) if detections.metadata else None
        if hw is not None:
            return int(hw[1]), int(hw[0])
        wh = self.params["image_size_px"]
        if wh is None:
            raise ValueError("tracker.belt needs the image size: the detections carry no metadata['image_hw'], so set params.image_size_px to the camera's [width, height]")
        return int(wh[0]), int(wh[1])

    def _without_duplicates(self, xyxy: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Parts do not nest: of two part boxes that overlap by ``duplicate_ios`` of the smaller,
        the smaller is a fragment or a second detection of the same part, and is dropped."""
        if idx.size < 2:
            return idx
        boxes = xyxy[idx].astype(np.float64)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-area, kind="stable")
        inter = _intersection(boxes, boxes)
        keep: list[int] = []
        for i in order:
            if all(inter[i, j] < self.params["duplicate_ios"] * area[i] for j in keep):
                keep.append(int(i))
        return np.sort(idx[keep])

    def _is_piece(self, box: np.ndarray, places: list[np.ndarray], place_types: list[str]) -> bool:
        """Whether ``box`` is a piece of the part at one of ``places``: mostly inside it
        (``fragment_ios``), or overlapping it so that both together still fit in one part of its
        type (as big as that type's whole boxes have been, give or take _SIZE_SLACK). The second
        catches a track that has only ever seen its part with a hand over it: its place is itself
        a piece, and the next piece may reach beyond it."""
        area = _area(box)
        for place, part_type in zip(places, place_types):
            inter = float(_intersection(box[None, :], place[None, :])[0, 0])
            if inter <= 0:
                continue
            if inter >= self.params["fragment_ios"] * area:
                return True
            sizes = self.whole_sizes.get(part_type)
            if sizes:
                w, h = np.median(np.array(sizes), axis=0) * _SIZE_SLACK
                union_w = max(box[2], place[2]) - min(box[0], place[0])
                union_h = max(box[3], place[3]) - min(box[1], place[1])
                if union_w <= w and union_h <= h:
                    return True
        return False

    def _start(self, belt_box: np.ndarray, frame_id: int, t_ns: int) -> _Track:
        track = _Track(self.next_id, belt_box.copy(), frame_id, t_ns, 0.0, hits=0)
        self.next_id += 1
        self.ctx.carry["next_id"] = self.next_id
        recent = [(old_id, old_box) for old_id, old_box, ended_at in self.graveyard if frame_id - ended_at <= self.params["reid_window_frames"]]
        if recent:
            iou = box_iou_batch(np.array([box for _, box in recent]), belt_box[None, :])[:, 0]
            best = int(np.argmax(iou))
            if iou[best] >= self.params["reid_iou"]:
                track.reidentified_from = recent[best][0]
                self.id_switches += 1
                self.ctx.count("id_switch")
        self.tracks[track.track_id] = track
        return track

    def _observe(self, track: _Track, belt_box: np.ndarray, in_view: bool, part_type: str, conf: float, truth: int | None, frame_id: int, t_ns: int, travel_px: float, width: int, encoder: bool) -> bool:
        """Update ``track`` with its box in this frame; returns whether the whole part is in view.

        The part's centre is taken from the whole sighting nearest the image centre, where the
        image scale is mm_per_px even with a tilted camera. With an encoder the belt's travel is
        known, and a part is taken to lie still on the belt; without one, the belt speed in the
        recipe may be off, and the part's drift against it is learnt."""
        centre = float(belt_box[0] + belt_box[2]) / 2
        if in_view:
            if track.anchor_belt_px is None:
                track.anchor_belt_px, track.anchor_t_ns = centre, t_ns
            elif t_ns - track.anchor_t_ns >= _DRIFT_BASELINE_NS:
                speed_px_s = float(self.ctx.line["belt_speed_mm_s"]) / float(self.ctx.line["mm_per_px"])
                v = (centre - track.anchor_belt_px) / ((t_ns - track.anchor_t_ns) / NS_PER_S)
                if abs(v) > _MAX_DRIFT_FRACTION * speed_px_s:
                    in_view = False  # a box cut by the image edge that looked whole: not a creep
                elif not encoder:
                    track.drift_px_s = v
        off_centre = abs(centre + travel_px - width / 2)
        if in_view and off_centre <= track.centre_off_px:
            track.centre_belt_px, track.centre_t_ns, track.centre_off_px = centre, t_ns, off_centre
        track.max_width_px = max(track.max_width_px, float(belt_box[2] - belt_box[0]))
        if not in_view:
            edge = self.params["edge_margin_px"]
            if belt_box[0] + travel_px < edge:  # cut on the left (upstream): its right edge is real
                track.cut_centre_belt_px = float(belt_box[2]) - track.max_width_px / 2
            elif belt_box[2] + travel_px > width - edge:
                track.cut_centre_belt_px = float(belt_box[0]) + track.max_width_px / 2
            else:
                track.cut_centre_belt_px = centre
        # a box well inside the part's place and smaller than the part is the part partly hidden or
        # leaving the image: the part keeps its place (moved by its drift), else the next sighting
        # of it whole would not match. The part's size is what its whole sightings showed, not its
        # last place: a hand sliding over a part shrinks its box a little every frame.
        place = track.predicted(t_ns)
        size = float(np.median(track.whole_areas)) if track.whole_areas else _area(place)
        # a box cut by the image's upstream edge shows nothing of where the part begins: only its
        # downstream end can show it smaller than the part (a hand over an entering part)
        probe = place.copy()
        if belt_box[0] + travel_px < self.params["edge_margin_px"]:
            probe[0] = min(probe[0], belt_box[0])
        hidden_part = _area(belt_box) < _HIDDEN_AREA * size and _intersection(belt_box[None, :], probe[None, :])[0, 0] >= self.params["duplicate_ios"] * _area(belt_box)
        track.belt_box = place if hidden_part else belt_box.copy()
        if in_view and not hidden_part:
            track.whole_areas.append(_area(belt_box))
            self.whole_sizes.setdefault(part_type, deque(maxlen=_WHOLE_SIZES)).append((float(belt_box[2] - belt_box[0]), float(belt_box[3] - belt_box[1])))
        track.last_frame_id, track.last_t_ns = frame_id, t_ns
        track.confidence = conf
        track.hits += 1
        if len(track.types) < 8 or part_type in track.types:
            track.types[part_type] += 1
        if truth is not None and (len(track.truth) < 8 or truth in track.truth):
            track.truth[truth] += 1
        return in_view

    def _expire(self, frame_id: int, t_ns: int, travel_px: float, width: int, seen: set[int]) -> list[int]:
        ended = []
        for tid, track in list(self.tracks.items()):
            if id(track) in seen:
                continue
            gone_downstream = track.predicted(t_ns)[0] + travel_px >= width
            if gone_downstream or frame_id - track.last_frame_id > self.params["max_lost_frames"]:
                ended.append(tid)
                self.graveyard.append((tid, track.predicted(t_ns), frame_id))
                del self.tracks[tid]
        while self.graveyard and frame_id - self.graveyard[0][2] > self.params["reid_window_frames"]:
            self.graveyard.popleft()
        return ended


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def _associate(tracks: np.ndarray, boxes: np.ndarray, track_rows: list[int], det_rows: np.ndarray, min_iou: float):
    """Hungarian matching on IoU of the given rows. Returns (pairs, unmatched track rows, unmatched det rows)."""
    det_rows = np.asarray(det_rows, np.int64)
    if not track_rows or det_rows.size == 0:
        return [], list(track_rows), det_rows
    iou = box_iou_batch(tracks[track_rows], boxes[det_rows])
    rows, cols = linear_sum_assignment(iou, maximize=True)
    pairs = [(track_rows[r], int(det_rows[c])) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
    used_t = {t for t, _ in pairs}
    used_d = {d for _, d in pairs}
    return pairs, [t for t in track_rows if t not in used_t], np.array([d for d in det_rows if d not in used_d], np.int64)


def _owners(boxes: np.ndarray, part_boxes: np.ndarray) -> np.ndarray:
    """For each box, the index of the smallest part box containing its centre, or -1."""
    if part_boxes.size == 0:
        return np.full(len(boxes), -1, np.int64)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (cx[:, None] >= part_boxes[None, :, 0]) & (cx[:, None] <= part_boxes[None, :, 2]) & (cy[:, None] >= part_boxes[None, :, 1]) & (cy[:, None] <= part_boxes[None, :, 3])
    area = (part_boxes[:, 2] - part_boxes[:, 0]) * (part_boxes[:, 3] - part_boxes[:, 1])
    cost = np.where(inside, area[None, :], np.inf)
    best = np.argmin(cost, axis=1)
    return np.where(np.isfinite(cost[np.arange(len(boxes)), best]), best, -1)
