"""``image.augment``: seeded camera nuisances on a live image stream (stress a line, or a recipe)."""

from __future__ import annotations

from typing import Any

from lineguard.learn.augment import AUGMENTATIONS, AugmentConfig, augment_image
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort


def _range(description: str, default: list[float], *, minimum: float | None = None, maximum: float | None = None, integer: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "integer" if integer else "number"}
    if minimum is not None:
        item["minimum"] = minimum
    if maximum is not None:
        item["maximum"] = maximum
    return {"type": "array", "items": item, "minItems": 2, "maxItems": 2, "default": default, "description": f"[low, high]: {description}"}


def _section(description: str, p: float, **props: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": description,
        "properties": {"p": {"type": "number", "minimum": 0, "maximum": 1, "default": p, "description": "probability per frame (0 = off, 1 = every frame)"}, **props},
    }


_D = AugmentConfig()  # the defaults live in one place: lineguard.learn.augment


class ImageAugment(Node):
    """Seeded camera nuisances: motion blur, brightness/contrast, gamma, sensor noise, JPEG
    artefacts and perspective, each with a probability per frame and a range to draw from.

    Puts a live line or a simulated one under stress without touching the camera: wire it between
    the camera and the detector and watch what the detector, tracker and vote make of it. The same
    functions make ``lineguard train``'s training data (``lineguard.learn.augment``).

    Deterministic: what each frame gets depends only on ``seed`` and the frame's ``frame_id``, so a
    rerun gives identical pixels, and switching one augmentation off leaves the others' draws
    unchanged. Augmentations apply in the order light meets them (perspective, motion blur,
    brightness/contrast, gamma, noise, JPEG). Frames that draw no augmentation pass through
    untouched (not copied). Output frames are read-only, inputs are never modified.

    Cost at 1280x720 on one core (measured): about 9 ms per frame with the defaults (~110 fps),
    about 20 ms with all six on every frame (~50 fps); a long diagonal motion blur costs more (its
    kernel is larger). It runs in a worker thread, so the event loop stays free.

    Example:
        stress:
          type: image.augment
          params:
            seed: 7
            motion_blur: {p: 1.0, length_px: [4, 10], angle_deg: [-2, 2]}
            brightness_contrast: {p: 0.5, brightness: [-40, 10]}
            jpeg: {p: 0}
          in: {image: cam.image}
    """

    type_name = "image.augment"
    version = 1
    inputs = {"image": InPort("image", queue=4, policy="block", doc="BGR uint8 frames")}
    outputs = {"image": OutPort("image", "the augmented BGR uint8 frames, read-only")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "With the frame_id, decides every draw."},
            "perspective": _section(
                "The camera knocked askew: every image corner moves independently.",
                _D.perspective.p,
                max_shift_frac={"type": "number", "minimum": 0, "maximum": 0.2, "default": _D.perspective.max_shift_frac, "description": "largest corner shift, as a fraction of the image width (x) and height (y)"},
            ),
            "motion_blur": _section(
                "A longer exposure on a moving belt: a streak of length_px along angle_deg.",
                _D.motion_blur.p,
                length_px=_range("streak length in pixels", list(_D.motion_blur.length_px), minimum=0, maximum=64),
                angle_deg=_range("streak direction in degrees, 0 = along the belt (image x), counter-clockwise positive", list(_D.motion_blur.angle_deg), minimum=-180, maximum=180),
            ),
            "brightness_contrast": _section(
                "Lamp and gain drift: (x - mean) * contrast + mean + brightness.",
                _D.brightness_contrast.p,
                brightness=_range("offset in grey levels", list(_D.brightness_contrast.brightness), minimum=-255, maximum=255),
                contrast=_range("factor about the frame's mean grey level, 1 = unchanged", list(_D.brightness_contrast.contrast), minimum=0, maximum=4),
            ),
            "gamma": _section(
                "The camera's tone curve: 255 * (x / 255) ** gamma (drawn log-uniformly).",
                _D.gamma.p,
                gamma=_range("gamma, < 1 lifts the shadows, > 1 darkens them", list(_D.gamma.gamma), minimum=0.05, maximum=10),
            ),
            "noise": _section(
                "Sensor noise: Gaussian, independent per pixel and channel.",
                _D.noise.p,
                sigma=_range("standard deviation in grey levels", list(_D.noise.sigma), minimum=0, maximum=80),
            ),
            "jpeg": _section(
                "Compression artefacts of a network camera (8x8 blocks).",
                _D.jpeg.p,
                quality=_range("JPEG quality 1..100", list(_D.jpeg.quality), minimum=1, maximum=100, integer=True),
            ),
        },
    }

    @classmethod
    def check_params(cls, params, line):
        problems = []
        for name in AUGMENTATIONS:
            for key, value in params.get(name, {}).items():
                if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] > value[1]:
                    problems.append((f"{name}.{key}", f"expected [low, high] with low <= high, got {list(value)}"))
        if problems:
            return problems
        try:
            AugmentConfig.from_params(params)
        except ValueError as exc:
            param, _, why = str(exc).partition(": ")
            return [(param, why)]
        return []

    async def open(self) -> None:
        self.config = AugmentConfig.from_params(self.params)
        self.seed = int(self.params["seed"])

    async def process(self, port: str, envelope: Envelope) -> None:
        image = envelope.payload
        if self.config.active:
            image = await self.ctx.clock.run_in_thread(augment_image, image, self.config, self.seed, envelope.frame_id)
            if image is not envelope.payload:
                image.flags.writeable = False
        await self.ctx.emit("image", envelope.derive(image))

