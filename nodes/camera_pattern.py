"""``camera.pattern``: a synthetic camera that needs no hardware and no simulation assets."""

from __future__ import annotations

import numpy as np

from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import Node, OutPort

NS_PER_S = 1_000_000_000


class PatternCamera(Node):
    """Test-pattern camera: grey rectangles ("parts") moving across a dark belt at the line's speed.

    Frames are paced by the recipe's clock at ``fps``; each carries its capture time and the
    encoder count the line settings imply. Use it to try a recipe or measure a pipeline without a
    camera. ``frames: 0`` runs until stopped.

    Example:
        cam:
          type: camera.pattern
          params: {fps: 30, frames: 300, width: 640, height: 480, part_spacing_mm: 250}
    """

    type_name = "camera.pattern"
    version = 1
    outputs = {"image": OutPort("image", "BGR uint8 frames")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "fps": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000, "default": 30},
            "frames": {"type": "integer", "minimum": 0, "default": 300, "description": "Frames to produce; 0 = until stopped."},
            "width": {"type": "integer", "minimum": 16, "maximum": 8192, "default": 640},
            "height": {"type": "integer", "minimum": 16, "maximum": 8192, "default": 480},
            "part_length_mm": {"type": "number", "exclusiveMinimum": 0, "default": 120},
            "part_spacing_mm": {"type": "number", "exclusiveMinimum": 0, "default": 250},
        },
    }

    @classmethod
    def check_params(cls, params, line):
        if params["part_spacing_mm"] <= params["part_length_mm"]:
            return [("part_spacing_mm", f"expected more than part_length_mm ({params['part_length_mm']}) so parts do not overlap, got {params['part_spacing_mm']}")]
        return []

    async def open(self) -> None:
        p = self.params
        self._period_ns = round(NS_PER_S / p["fps"])
        self._belt = np.full((p["height"], p["width"], 3), 40, np.uint8)
        self._belt[:: max(1, p["height"] // 12)] = 55  # belt seams, so motion is visible

    async def run(self) -> None:
        p, line, clock = self.params, self.ctx.line, self.ctx.clock
        mm_per_px = line["mm_per_px"]
        speed_px_s = line["belt_speed_mm_s"] / mm_per_px
        spacing_px = p["part_spacing_mm"] / mm_per_px
        length_px = int(p["part_length_mm"] / mm_per_px)
        h, w = p["height"], p["width"]
        frame_id = 0
        while p["frames"] == 0 or frame_id < p["frames"]:
            t_ns = frame_id * self._period_ns
            await clock.sleep_until_ns(t_ns)
            image = self._belt.copy()
            offset = (speed_px_s * t_ns / NS_PER_S) % spacing_px
            x = offset - spacing_px
            while x < w:
                x0, x1 = int(max(0, x)), int(min(w, x + length_px))
                if x1 > x0:
                    image[h // 4 : 3 * h // 4, x0:x1] = 170
                x += spacing_px
            image.flags.writeable = False
            encoder = round(line["belt_speed_mm_s"] * t_ns / NS_PER_S * line["encoder_counts_per_mm"])
            await self.ctx.emit("image", Envelope(frame_id, clock.now_ns(), image, encoder))
            frame_id += 1
