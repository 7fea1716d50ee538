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

NS_PER_S = 1_000_000_000

DEFECT_KINDS = ("scratch", "missing_component", "misaligned")


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
class PartTruth:
    """A part as it really is.

    ``x0_mm`` is the belt position of the part's centre at time 0 (usually negative: upstream of the
    camera). Its position at time t is ``x0_mm + travel_mm(t)``.
    """

    part_id: int
    part_type: str
    x0_mm: float
    y_mm: float  # across the belt, 0 = image centre line
    length_mm: float
    width_mm: float
    defects: tuple[DefectTruth, ...] = field(default_factory=tuple)

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
