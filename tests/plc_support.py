"""A perfect vision side for PLC output tests: one verdict per true part, emitted when the part
crosses the camera axis, with its true arrival at the gate."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import Node, OutPort
from lineguard.sim.plc import periodic_parts
from lineguard.sim.truth import BeltGeometry

GEOMETRY = BeltGeometry(belt_speed_mm_s=400.0, reject_distance_mm=800.0, encoder_counts_per_mm=10.0, gate_window_mm=40.0)
PARTS = periodic_parts(count=10, spacing_mm=260.0, defect_rate=0.4, seed=5)
LINE = "{belt_speed_mm_s: 400, encoder_counts_per_mm: 10, reject_distance_mm: 800}"


@dataclass(frozen=True)
class Verdict:
    part_id: int
    verdict: str
    arrival_t_ns: int
    arrival_encoder: int
    first_t_ns: int
    last_t_ns: int


class TruthVerdicts(Node):
    """Verdicts straight from the ground truth (``late_ms`` delays each one, ``stop_after`` ends the
    stream after that many parts, ``fail_after`` raises there, as a vision node that breaks)."""

    type_name = "test.truth_verdicts"
    outputs = {"verdicts": OutPort("part_verdict")}
    params_schema = {"type": "object", "additionalProperties": False, "properties": {"late_ms": {"type": "number", "default": 0}, "stop_after": {"type": "integer", "default": -1}, "fail_after": {"type": "integer", "default": -1}}}

    async def run(self):
        clock = self.ctx.clock
        for k, part in enumerate(sorted(PARTS, key=lambda p: -p.x0_mm)):
            if k == self.params["stop_after"]:
                return
            if k == self.params["fail_after"]:
                raise RuntimeError(f"inference failed on the frame of part {part.part_id}")
            t_seen = max(0, part.t_at_position_ns(GEOMETRY, 0.0)) + int(self.params["late_ms"] * 1e6)
            await clock.sleep_until_ns(t_seen)
            verdict = Verdict(part.part_id, "reject" if part.defective else "pass", part.t_at_reject_ns(GEOMETRY), part.encoder_at_reject(GEOMETRY), t_seen, t_seen)
            await self.ctx.emit("verdicts", Envelope(k, t_seen, verdict, GEOMETRY.encoder_at(t_seen)))


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
