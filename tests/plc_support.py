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
    stream after that many parts, ``fail_after`` raises there, as a vision node that breaks).

    Like a real vision side it handles a frame every 1/30 s, part or no part (on ``frames``, which
    nothing needs to read): that is what the PLC output's heartbeat follows. ``freeze_s: [from,
    to]`` is a camera that delivers nothing in between: no frames, and the parts that cross the
    camera then are never seen (no verdict). ``end_s``: frames go on until then (default: the stream
    ends with the last verdict)."""

    type_name = "test.truth_verdicts"
    outputs = {"verdicts": OutPort("part_verdict"), "frames": OutPort("frame_tick", optional=True)}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "late_ms": {"type": "number", "default": 0},
            "stop_after": {"type": "integer", "default": -1},
            "fail_after": {"type": "integer", "default": -1},
            "freeze_s": {"type": ["array", "null"], "items": {"type": "number"}, "default": None},
            "end_s": {"type": ["number", "null"], "default": None},
        },
    }

    async def run(self):
        clock = self.ctx.clock
        freeze = [round(t * 1e9) for t in self.params["freeze_s"]] if self.params["freeze_s"] else [0, 0]
        frozen = lambda t_ns: freeze[0] <= t_ns < freeze[1]  # noqa: E731
        events = []  # (time, order, k, part): verdicts and frame ticks, in time order
        for k, part in enumerate(sorted(PARTS, key=lambda p: -p.x0_mm)):
            t_seen = max(0, part.t_at_position_ns(GEOMETRY, 0.0))
            if not frozen(t_seen):
                events.append((t_seen + int(self.params["late_ms"] * 1e6), 0, k, part))
        end_ns = max(e[0] for e in events) if self.params["end_s"] is None else round(self.params["end_s"] * 1e9)
        events += [(t, 1, -1, None) for t in range(0, end_ns, round(1e9 / 30)) if not frozen(t)]
        for t_ns, _, k, part in sorted(events, key=lambda e: e[:3]):
            await clock.sleep_until_ns(t_ns)
            if part is None:
                await self.ctx.emit("frames", Envelope(-1, t_ns, None))
                continue
            if k == self.params["stop_after"]:
                return
            if k == self.params["fail_after"]:
                raise RuntimeError(f"inference failed on the frame of part {part.part_id}")
            t_seen = t_ns - int(self.params["late_ms"] * 1e6)
            verdict = Verdict(part.part_id, "reject" if part.defective else "pass", part.t_at_reject_ns(GEOMETRY), part.encoder_at_reject(GEOMETRY), t_seen, t_seen)
            await self.ctx.emit("verdicts", Envelope(k, t_seen, verdict, GEOMETRY.encoder_at(t_seen)))


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
