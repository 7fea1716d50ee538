"""What travels between ``tracker.belt``, ``inspect.rules`` and ``vote.part``: parts, not boxes.

No node lives here; the three node modules and the scorers (``lineguard sim eval``) share these
payloads and the belt geometry helpers.

Belt geometry (the same as :mod:`lineguard.sim.truth`): parts move left to right in the image
(+x image = downstream); the image centre is belt position 0 mm; one pixel is ``mm_per_px`` mm of
belt. Belt travel since time 0 is ``encoder / encoder_counts_per_mm`` when the frame carries an
encoder count, else ``belt_speed_mm_s × t_capture``.

Payloads (all frozen, each with ``to_json()``):

- :class:`PartTrack`: one part in one frame (track id, box, part type, belt position, and the
  component/defect detections whose centre lies in its box, as ``supervision.Detections``).
- :class:`TrackedFrame`: what ``tracker.belt`` emits per frame (port kind ``tracks``).
- :class:`PartFindings` / :class:`FrameFindings`: what ``inspect.rules`` found per part per frame
  (port kind ``part_findings``).
- :class:`PartVerdict`: ``vote.part``'s one decision per part (port kind ``part_verdict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from lineguard.runtime.envelope import Envelope

NS_PER_S = 1_000_000_000
INSUFFICIENT_EVIDENCE = "insufficient_evidence"
# inspect.surface's line on a component that inspect.rules flagged (missing or misplaced): the
# same thing as the rules' defect if the vote confirms that one, else a scratch (vote.part decides)
SCRATCH_ON_FLAGGED_COMPONENT = "scratch_on_flagged_component"
# Sim-only: detector.truth attaches the true part id of every box under this data key, so that
# scorers can match tracks and verdicts to ground truth. A real detector never sets it.
TRUTH_PART_ID = "truth_part_id"
# Detections say how large their image was: metadata["image_hw"] = (height, width) px (as detector.openvino).
IMAGE_HW = "image_hw"


# -- belt geometry --------------------------------------------------------------------------------


def belt_travel_mm(envelope: Envelope, line: Mapping[str, Any]) -> float:
    """Belt travel since time 0 at the envelope's capture: from its encoder count if it has one,
    else from the recipe's belt speed and the capture time."""
    if envelope.encoder is not None:
        return envelope.encoder / float(line["encoder_counts_per_mm"])
    return float(line["belt_speed_mm_s"]) * envelope.t_capture_ns / NS_PER_S


def image_x_to_belt_mm(x_px: float, image_width_px: int, mm_per_px: float) -> float:
    """Belt position (mm downstream of the camera axis) of image column ``x_px``."""
    return (x_px - image_width_px / 2) * mm_per_px


def class_names(detections: sv.Detections) -> np.ndarray:
    """The ``data['class_name']`` column; the project's detections always carry it."""
    if len(detections) == 0:
        return np.array([], dtype=str)
    names = detections.data.get("class_name")
    if names is None:
        raise ValueError("detections carry no data['class_name']: the detector must name its classes (see lineguard.nodes.detector_truth)")
    return np.asarray(names)


def truth_ids(detections: sv.Detections) -> np.ndarray | None:
    """Sim only: the true part id of every detection (-1 for false positives), when known."""
    ids = detections.data.get(TRUTH_PART_ID)
    return None if ids is None else np.asarray(ids)


def _box_json(box: tuple[float, float, float, float]) -> list[float]:
    return [round(float(v), 2) for v in box]


def _detections_json(detections: sv.Detections) -> list[dict[str, Any]]:
    names = class_names(detections)
    conf = detections.confidence if detections.confidence is not None else np.ones(len(detections))
    return [{"class": str(n), "confidence": round(float(c), 3), "xyxy": _box_json(tuple(b))} for n, c, b in zip(names, conf, detections.xyxy)]


# -- tracker.belt -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PartTrack:
    """One tracked part as seen in one frame.

    ``box_xyxy`` is in image pixels. ``position_mm`` is the belt position of the part's centre at
    this frame's capture, from its whole sighting nearest the image centre moved on by the belt's
    travel (before the part was ever whole in view: a guess from its uncut edge). ``in_view``: the whole box lies inside the image (with the tracker's
    margin), so everything on the part could be seen. ``detections`` are the component and defect
    detections whose centre lies in the box. ``reidentified_from`` names a track that ended shortly
    before at the same belt place: the part lost its id and got this one (an id switch).
    """

    track_id: int
    part_type: str
    box_xyxy: tuple[float, float, float, float]
    confidence: float
    position_mm: float
    in_view: bool
    hits: int
    detections: sv.Detections
    reidentified_from: int | None = None
    truth_part_id: int | None = None  # sim only (from detector.truth)

    @property
    def centre_x_px(self) -> float:
        return (self.box_xyxy[0] + self.box_xyxy[2]) / 2

    def to_json(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "part_type": self.part_type,
            "box_xyxy": _box_json(self.box_xyxy),
            "confidence": round(self.confidence, 3),
            "position_mm": round(self.position_mm, 2),
            "in_view": self.in_view,
            "hits": self.hits,
            "detections": _detections_json(self.detections),
            "reidentified_from": self.reidentified_from,
            "truth_part_id": self.truth_part_id,
        }


@dataclass(frozen=True, eq=False)
class TrackedFrame:
    """``tracker.belt``'s output for one frame: the parts seen in it, and the tracks that ended
    (left the image, or unseen for longer than the tracker's ``max_lost_frames``)."""

    image_hw: tuple[int, int]
    parts: tuple[PartTrack, ...]
    ended: tuple[int, ...] = ()
    unassigned: int = 0  # component/defect detections outside every part box
    live_tracks: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "image_hw": list(self.image_hw),
            "parts": [p.to_json() for p in self.parts],
            "ended": list(self.ended),
            "unassigned": self.unassigned,
            "live_tracks": self.live_tracks,
        }


# -- inspect.rules ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PartFindings:
    """What one frame shows about one part.

    ``inspected``: the whole part was in view and its type is known, so every rule could be applied
    (only then does an absent component count as missing). ``defects`` maps each defect kind seen
    in this frame to a confidence (0–1). ``judged`` lists the defect kinds this frame could judge
    (all of them when inspected). ``offsets_mm`` / ``rotations_deg`` are the measured placement
    errors per component name (medians over the inspector's ``measure_frames``); ``notes`` say
    why, in words ("U3 missing", "B2 off by 4.1 mm").
    """

    track: PartTrack
    inspected: bool
    defects: Mapping[str, float] = field(default_factory=dict)
    judged: tuple[str, ...] = ()
    offsets_mm: Mapping[str, float] = field(default_factory=dict)
    rotations_deg: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        t = self.track
        return {
            "track_id": t.track_id,
            "part_type": t.part_type,
            "position_mm": round(t.position_mm, 2),
            "box_xyxy": _box_json(t.box_xyxy),
            "inspected": self.inspected,
            "defects": {k: round(v, 3) for k, v in sorted(self.defects.items())},
            "judged": list(self.judged),
            "offsets_mm": {k: round(v, 2) for k, v in sorted(self.offsets_mm.items())},
            "rotations_deg": {k: round(v, 1) for k, v in sorted(self.rotations_deg.items())},
            "notes": list(self.notes),
            "truth_part_id": t.truth_part_id,
        }


@dataclass(frozen=True, eq=False)
class FrameFindings:
    """``inspect.rules``' output for one frame: findings per part, and the tracks that ended."""

    image_hw: tuple[int, int]
    parts: tuple[PartFindings, ...]
    ended: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"image_hw": list(self.image_hw), "parts": [p.to_json() for p in self.parts], "ended": list(self.ended)}


# -- vote.part --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartVerdict:
    """The one decision about one part, and when and where it meets the reject gate.

    ``reasons`` are the defect kinds that passed the vote, plus ``insufficient_evidence`` when the
    part was inspected in fewer than ``min_frames`` frames (``verdict`` then follows the vote's
    ``insufficient_evidence`` policy, reject by default). ``evidence`` maps each reason to the
    frame ids that showed it (the first few). ``position_mm`` is the part centre's belt position at
    the last sighting (``last_t_ns``, ``last_encoder``). ``arrival_t_ns`` / ``arrival_encoder``
    predict when the part centre reaches the gate (``reject_distance_mm``); ``arrival_encoder`` is
    None when the camera has no encoder. ``decided_by``: ``exit_line``, ``track_ended``,
    ``stale`` (no sighting for ``stale_frames``, its track never ended) or ``end_of_stream``.
    ``truth_part_id`` is sim-only (for scoring).
    """

    part_id: int
    part_type: str
    verdict: str  # "pass" | "reject"
    reasons: tuple[str, ...]
    evidence: Mapping[str, tuple[int, ...]]
    frames_seen: int
    frames_inspected: int
    first_frame_id: int
    last_frame_id: int
    first_t_ns: int
    last_t_ns: int
    last_encoder: int | None
    position_mm: float
    reject_distance_mm: float
    arrival_t_ns: int
    arrival_encoder: int | None
    decided_by: str
    scores: Mapping[str, float] = field(default_factory=dict)  # best k-of-n window sum per defect kind
    notes: tuple[str, ...] = ()
    truth_part_id: int | None = None

    @property
    def rejected(self) -> bool:
        return self.verdict == "reject"

    def to_json(self) -> dict[str, Any]:
        return {
            "part_id": self.part_id,
            "part_type": self.part_type,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "evidence": {k: list(v) for k, v in sorted(self.evidence.items())},
            "frames_seen": self.frames_seen,
            "frames_inspected": self.frames_inspected,
            "first_frame_id": self.first_frame_id,
            "last_frame_id": self.last_frame_id,
            "first_t_ns": self.first_t_ns,
            "last_t_ns": self.last_t_ns,
            "last_encoder": self.last_encoder,
            "position_mm": round(self.position_mm, 2),
            "reject_distance_mm": self.reject_distance_mm,
            "arrival_t_ns": self.arrival_t_ns,
            "arrival_encoder": self.arrival_encoder,
            "decided_by": self.decided_by,
            "scores": {k: round(v, 3) for k, v in sorted(self.scores.items())},
            "notes": list(self.notes),
            "truth_part_id": self.truth_part_id,
        }
