"""``image.stats``: brightness and contrast of every frame."""

from __future__ import annotations

import cv2

from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort


class ImageStats(Node):
    """Mean and standard deviation of each frame's grey level (0–255), optionally in a region.

    The cheapest health check of a camera: a covered lens, a dead light or a gain jump shows up
    here first. Emits a dict ``{mean, std}`` per frame on ``stats``.

    Example:
        stats:
          type: image.stats
          params: {roi: [0, 120, 640, 360]}
          in: {image: cam.image}
    """

    type_name = "image.stats"
    version = 1
    inputs = {"image": InPort("image", queue=4, policy="drop_oldest")}
    outputs = {"stats": OutPort("image_stats", "{mean, std} of the grey level")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "roi": {
                "description": "Region [x0, y0, x1, y1] in pixels; whole frame when absent.",
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
                "minItems": 4,
                "maxItems": 4,
            },
        },
    }

    @classmethod
    def check_params(cls, params, line):
        roi = params.get("roi")
        if roi is not None and not (roi[0] < roi[2] and roi[1] < roi[3]):
            return [("roi", f"expected x0 < x1 and y0 < y1, got {list(roi)}")]
        return []

    async def process(self, port: str, envelope: Envelope) -> None:
        image = envelope.payload
        roi = self.params.get("roi")
        if roi is not None:
            image = image[roi[1] : roi[3], roi[0] : roi[2]]
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        mean, std = cv2.meanStdDev(grey)
        stats = {"mean": float(mean[0, 0]), "std": float(std[0, 0])}
        await self.ctx.emit("stats", envelope.derive(stats))
