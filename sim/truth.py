"""Ground truth of the simulated line: what each part really is and where it is on the belt.

Belt coordinates are millimetres along the direction of travel, measured from the camera's optical
axis (0 = centre of the image, positive = downstream, towards the reject station). The belt moves at
a constant ``belt_speed_mm_s``; the encoder counts ``encoder_counts_per_mm`` per millimetre of travel
from count 0 at time 0.

The renderer (``lineguard.sim.conveyor``) produces these records; the virtual PLC
(``lineguard.sim.plc``) and the scorers read them. Both sides share this one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NS_PER_S = 1_000_000_000

DEFECT_KINDS = ("scratch", "missing_component", "misaligned")
PART_KINDS = ("pcb", "bracket")
COMPONENT_KINDS = ("chip", "fastener")

# Detector classes, in class-id order. Part boxes use the part type, component boxes the component
# kind (only components that are present), defect boxes the defect kind. A missing component's box
# is where it should be; a misaligned component gets two boxes where it is: its kind and "misaligned".
CLASSES: tuple[str, ...] = PART_KINDS + COMPONENT_KINDS + DEFECT_KINDS
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}


@dataclass(frozen=True)
class BeltGeometry:
    """The fixed geometry of a line: belt speed, encoder scale and where the reject gate stands."""

    belt_speed_mm_s: float
    reject_distance_mm: float
    encoder_counts_per_mm: float = 10.0
    gate_window_mm: float = 40.0  # length of belt the gate's air jet / pusher covers

    def __post_init__(self) -> None:
        if self.belt_speed_mm_s <= 0:
            raise ValueError(f"belt_speed_mm_s: expected > 0, got {self.belt_speed_mm_s}")
        if self.reject_distance_mm <= 0:
            raise ValueError(f"reject_distance_mm: expected > 0, got {self.reject_distance_mm}")
        if self.encoder_counts_per_mm <= 0:
            raise ValueError(f"encoder_counts_per_mm: expected > 0, got {self.encoder_counts_per_mm}")

    def travel_mm(self, t_ns: int) -> float:
        """Belt travel since time 0."""
        return self.belt_speed_mm_s * t_ns / NS_PER_S

    def encoder_at(self, t_ns: int) -> int:
        """Encoder count at time ``t_ns``."""
        return int(round(self.travel_mm(t_ns) * self.encoder_counts_per_mm))

    def time_at_travel_ns(self, travel_mm: float) -> int:
        """Time at which the belt has travelled ``travel_mm`` since time 0."""
        return int(round(travel_mm / self.belt_speed_mm_s * NS_PER_S))


@dataclass(frozen=True)
class DefectTruth:
    """One defect on a part. ``box_part_mm`` is (x0, y0, x1, y1) in the part's own frame, in mm."""

    kind: str
    box_part_mm: tuple[float, float, float, float]
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in DEFECT_KINDS:
            raise ValueError(f"defect kind: expected one of {DEFECT_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class ComponentTruth:
    """One component as it was really placed on one part (part frame, mm; see :class:`PartTruth`).

    ``box_part_mm`` is the axis-aligned box of the component as placed (or, when ``present`` is
    False, as it should have been). ``offset_mm`` and ``rotation_deg`` are the placement error
    against the part type's nominal layout.
    """

    name: str
    kind: str
    box_part_mm: tuple[float, float, float, float]
    present: bool = True
    offset_mm: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0


@dataclass(frozen=True)
class PartTruth:
    """A part as it really is.

    ``x0_mm`` is the belt position of the part's centre at time 0 (usually negative: upstream of the
    camera). Its position at time t is ``x0_mm + travel_mm(t)``.

    The part's own frame has its origin at the part's centre, x along travel and y across the belt
    (same directions as the image's x and y when ``rotation_deg`` is 0); ``rotation_deg`` is how far
    the part lies turned on the belt (positive = clockwise in the image). ``components`` lists every
    component of the part type as it was placed on this part.
    """

    part_id: int
    part_type: str
    x0_mm: float
    y_mm: float  # across the belt, 0 = image centre line
    length_mm: float
    width_mm: float
    defects: tuple[DefectTruth, ...] = field(default_factory=tuple)
    rotation_deg: float = 0.0
    components: tuple[ComponentTruth, ...] = field(default_factory=tuple)

    @property
    def defective(self) -> bool:
        return bool(self.defects)

    @property
    def defect_kinds(self) -> tuple[str, ...]:
        return tuple(sorted({d.kind for d in self.defects}))

    def position_mm(self, geometry: BeltGeometry, t_ns: int) -> float:
        """Belt position of the part's centre at time ``t_ns``."""
        return self.x0_mm + geometry.travel_mm(t_ns)

    def t_at_position_ns(self, geometry: BeltGeometry, position_mm: float) -> int:
        """Time at which the part's centre reaches ``position_mm``."""
        return geometry.time_at_travel_ns(position_mm - self.x0_mm)

    def t_at_reject_ns(self, geometry: BeltGeometry) -> int:
        """Time at which the part's centre passes the reject gate."""
        return self.t_at_position_ns(geometry, geometry.reject_distance_mm)

    def encoder_at_reject(self, geometry: BeltGeometry) -> int:
        return geometry.encoder_at(self.t_at_reject_ns(geometry))

    def record(self, geometry: BeltGeometry) -> dict[str, Any]:
        """A JSON-ready summary: identity, verdict truth, and when/where the part meets the gate."""
        return {
            "part_id": self.part_id,
            "part_type": self.part_type,
            "defective": self.defective,
            "defect_kinds": list(self.defect_kinds),
            "defects": [
                {"kind": d.kind, "box_part_mm": [round(v, 3) for v in d.box_part_mm], "detail": d.detail}
                for d in self.defects
            ],
            "x0_mm": round(self.x0_mm, 3),
            "y_mm": round(self.y_mm, 3),
            "rotation_deg": round(self.rotation_deg, 3),
            "length_mm": self.length_mm,
            "width_mm": self.width_mm,
            "t_at_camera_ns": self.t_at_position_ns(geometry, 0.0),
            "t_at_reject_ns": self.t_at_reject_ns(geometry),
            "encoder_at_reject": self.encoder_at_reject(geometry),
        }


@dataclass(frozen=True, eq=False)
class FrameTruth:
    """What is really in one camera frame, columnar like the detector's output.

    ``boxes_xyxy`` are image pixels (float32 [N, 4], x right, y down, pixel edges: pixel j spans
    [j, j+1)), clipped to the image. ``class_ids`` index :data:`CLASSES`. ``part_ids`` says which
    part each box belongs to. ``visible`` is the fraction of the object inside the image and not
    hidden by a distractor (0 < visible <= 1; boxes with nothing visible are left out).
    ``image_hw`` is the frame's (height, width), so consumers need no separate image size.
    """

    frame_index: int
    t_ns: int
    encoder: int
    boxes_xyxy: np.ndarray
    class_ids: np.ndarray
    part_ids: np.ndarray
    visible: np.ndarray
    image_hw: tuple[int, int] | None = None  # (height, width) of the frame, px

    def __post_init__(self) -> None:
        n = len(self.class_ids)
        if self.boxes_xyxy.shape != (n, 4):
            raise ValueError(f"boxes_xyxy: expected shape ({n}, 4), got {self.boxes_xyxy.shape}")
        for name in ("part_ids", "visible"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name}: expected shape ({n},), got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return len(self.class_ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameTruth):
            return NotImplemented
        return (
            (self.frame_index, self.t_ns, self.encoder) == (other.frame_index, other.t_ns, other.encoder)
            and all(
                np.array_equal(getattr(self, k), getattr(other, k))
                for k in ("boxes_xyxy", "class_ids", "part_ids", "visible")
            )
        )

    def select(self, mask: np.ndarray) -> "FrameTruth":
        """The boxes where ``mask`` is True."""
        return FrameTruth(
            self.frame_index,
            self.t_ns,
            self.encoder,
            self.boxes_xyxy[mask],
            self.class_ids[mask],
            self.part_ids[mask],
            self.visible[mask],
            self.image_hw,
        )

    def of_class(self, name: str) -> "FrameTruth":
        return self.select(self.class_ids == CLASS_ID[name])

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame_index": self.frame_index,
            "t_ns": self.t_ns,
            "encoder": self.encoder,
            "boxes": [
                {
                    "xyxy": [round(float(v), 2) for v in box],
                    "class": CLASSES[int(c)],
                    "part_id": int(p),
                    "visible": round(float(vis), 3),
                }
                for box, c, p, vis in zip(self.boxes_xyxy, self.class_ids, self.part_ids, self.visible)
            ],
        }
