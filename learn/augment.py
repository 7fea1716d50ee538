"""Seeded image augmentations of a line camera, shared by the ``image.augment`` node and training.

Six nuisances a camera over a conveyor really meets, applied in the order light meets them:

=====================  ===========================================================================
``perspective``        the camera knocked askew: each image corner moves by up to ``max_shift_frac``
                       of the image width (x) and height (y); boxes follow (:func:`warp_boxes`)
``motion_blur``        a longer exposure on a moving belt: a line kernel of ``length_px`` at
                       ``angle_deg`` (0 = along the belt, i.e. image x)
``brightness_contrast`` lamp and gain drift: ``out = (x - mean) * contrast + mean + brightness``
``gamma``              a camera's tone curve: ``out = 255 * (x / 255) ** gamma``
``noise``              sensor noise: Gaussian, ``sigma`` grey levels, independent per pixel and channel
``jpeg``               compression artefacts (8x8 blocks) of a network camera: JPEG at ``quality``
=====================  ===========================================================================

Every function here is pure: it never changes its input and returns a new uint8 HxWx3 image.
Randomness is drawn by :func:`plan_augment` from ``(seed, index, augmentation)`` alone, so the same
seed and frame index give the same image on every run, and turning one augmentation off does not
change what the others draw. :func:`augment_image` is what the node calls;
:func:`augment_labelled` is what training calls (it also moves the boxes).

Example::

    >>> config = AugmentConfig.from_params({"motion_blur": {"p": 1.0, "length_px": [8, 8]}})
    >>> out = augment_image(frame, config, seed=7, index=42)     # same (7, 42) -> same pixels
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import cv2
import numpy as np

# Order of application (the order light meets them). Never reorder: the index is part of the seed.
AUGMENTATIONS: tuple[str, ...] = ("perspective", "motion_blur", "brightness_contrast", "gamma", "noise", "jpeg")

# ---------------------------------------------------------------------------------------------
# The pure functions


def motion_kernel(length_px: float, angle_deg: float) -> np.ndarray:
    """A normalised float32 line kernel: a streak of ``length_px`` at ``angle_deg`` (0 = +x, counter-
    clockwise positive in the usual maths sense, i.e. negative angles point down-right in an image).

    Sub-pixel lengths and angles are exact: the segment is sampled 4x per pixel and each sample is
    splatted bilinearly. Length < 1 px gives the identity kernel.
    """
    if length_px < 1.0:
        return np.ones((1, 1), np.float32)
    theta = math.radians(angle_deg)
    dx, dy = math.cos(theta), -math.sin(theta)
    half_w = math.ceil(abs(dx) * length_px / 2 + 1)
    half_h = math.ceil(abs(dy) * length_px / 2 + 1)
    # a horizontal or vertical streak stays one pixel thick (no leak into neighbouring rows)
    if abs(dy) < 1e-9:
        half_h = 0
    if abs(dx) < 1e-9:
        half_w = 0
    kernel = np.zeros((2 * half_h + 1, 2 * half_w + 1), np.float64)
    n = max(2, int(math.ceil(length_px * 4)) + 1)
    s = np.linspace(-0.5, 0.5, n) * length_px
    x = half_w + s * dx
    y = half_h + s * dy
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for ox, oy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xs, ys = np.clip(x0 + ox, 0, kernel.shape[1] - 1), np.clip(y0 + oy, 0, kernel.shape[0] - 1)
        np.add.at(kernel, (ys, xs), wgt)
    # trim empty border rows/columns (keeps the filter cheap), keeping the centre the anchor
    rows = np.flatnonzero(kernel.sum(axis=1) > 1e-12)
    cols = np.flatnonzero(kernel.sum(axis=0) > 1e-12)
    rh = max(half_h - rows[0], rows[-1] - half_h)
    rw = max(half_w - cols[0], cols[-1] - half_w)
    kernel = kernel[half_h - rh : half_h + rh + 1, half_w - rw : half_w + rw + 1]
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur(image: np.ndarray, length_px: float, angle_deg: float) -> np.ndarray:
    """The image as a camera exposing while it moved ``length_px`` along ``angle_deg``.

    Cost grows with the kernel's area: along the belt (|angle| of a few degrees) a 12 px streak
    costs 3–6 ms at 1280x720 on one core; a 20 px streak at 45° about 45 ms.
    """
    kernel = motion_kernel(length_px, angle_deg)
    if kernel.shape == (1, 1):
        return image.copy()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def brightness_contrast(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """``(x - mean) * contrast + mean + brightness``, saturated to 0..255 (one lookup table).

    ``brightness`` is in grey levels (moves the mean); ``contrast`` is a factor about the frame's
    mean grey level (1 = unchanged), so the two do not interfere.
    """
    mean = float(np.mean(cv2.mean(image)[: image.shape[2] if image.ndim == 3 else 1]))
    lut = (np.arange(256, dtype=np.float64) - mean) * contrast + mean + brightness
    return cv2.LUT(image, np.clip(np.rint(lut), 0, 255).astype(np.uint8))


def gamma_correct(image: np.ndarray, gamma: float) -> np.ndarray:
    """``255 * (x / 255) ** gamma`` (gamma < 1 lifts the shadows, > 1 darkens them)."""
    if gamma <= 0:
        raise ValueError(f"gamma: expected a number > 0, got {gamma}")
    lut = 255.0 * (np.arange(256, dtype=np.float64) / 255.0) ** gamma
    return cv2.LUT(image, np.clip(np.rint(lut), 0, 255).astype(np.uint8))


_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])


def sensor_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` grey levels, independent per pixel and channel.

    The noise is a random byte per sample mapped through the 256 quantiles of a normal
    distribution (a discretised Gaussian, std within 1% of ``sigma``): five times faster than
    drawing normals, and seeded by ``rng`` only.
    """
    table = np.rint(_NORMAL_QUANTILES * sigma)
    plus = np.clip(table, 0, 255).astype(np.uint8)
    minus = np.clip(-table, 0, 255).astype(np.uint8)
    u = np.frombuffer(rng.bytes(image.size), np.uint8).reshape(image.shape)
    out = cv2.add(image, cv2.LUT(u, plus))  # saturating; each sample is either raised or lowered
    cv2.subtract(out, cv2.LUT(u, minus), dst=out)
    return out


def jpeg_artefacts(image: np.ndarray, quality: int) -> np.ndarray:
    """The image after a JPEG round trip at ``quality`` (1..100): 8x8 blocks, ringing, colour bleed."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def perspective_homography(width: int, height: int, corner_shift_px: np.ndarray) -> np.ndarray:
    """The 3x3 homography that moves the image corners (TL, TR, BR, BL) by ``corner_shift_px`` [4, 2]."""
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    dst = src + np.asarray(corner_shift_px, np.float32).reshape(4, 2)
    return cv2.getPerspectiveTransform(src, dst)


def perspective_warp(image: np.ndarray, corner_shift_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp so the corners move by ``corner_shift_px`` [4, 2] (TL, TR, BR, BL); edges are replicated.

    Returns the image and the homography (to move boxes with :func:`warp_boxes`).
    """
    h, w = image.shape[:2]
    H = perspective_homography(w, h, corner_shift_px)
    out = cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, H


def warp_boxes(
    boxes_xyxy: np.ndarray, H: np.ndarray, width: int, height: int, min_visible: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes after the homography ``H``: the box around the four moved corners, clipped to the image.

    Returns ``(boxes float32 [M, 4], keep bool [N])``: boxes left with less than ``min_visible`` of
    their warped area inside the image, or under 2 px on a side, are dropped.
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, bool)
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1), np.stack([x0, y1], 1)], 1)
    moved = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), H).reshape(-1, 4, 2)
    lo, hi = moved.min(axis=1), moved.max(axis=1)
    area = np.prod(hi - lo, axis=1)
    clo = np.clip(lo, 0, [width, height])
    chi = np.clip(hi, 0, [width, height])
    size = chi - clo
    inside = np.where(area > 0, np.prod(size, axis=1) / np.maximum(area, 1e-12), 0.0)
    keep = (inside >= min_visible) & (size[:, 0] >= 2) & (size[:, 1] >= 2)
    return np.concatenate([clo, chi], axis=1)[keep].astype(np.float32), keep


# ---------------------------------------------------------------------------------------------
# Configuration (the node's params, also used by training)


@dataclass(frozen=True)
class MotionBlurConfig:
    p: float = 0.5
    length_px: tuple[float, float] = (2.0, 12.0)
    angle_deg: tuple[float, float] = (-3.0, 3.0)


@dataclass(frozen=True)
class BrightnessContrastConfig:
    p: float = 0.5
    brightness: tuple[float, float] = (-30.0, 30.0)
    contrast: tuple[float, float] = (0.75, 1.25)


@dataclass(frozen=True)
class GammaConfig:
    p: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)


@dataclass(frozen=True)
class NoiseConfig:
    p: float = 0.5
    sigma: tuple[float, float] = (1.0, 6.0)


@dataclass(frozen=True)
class JpegConfig:
    p: float = 0.3
    quality: tuple[int, int] = (35, 90)


@dataclass(frozen=True)
class PerspectiveConfig:
    p: float = 0.3
    max_shift_frac: float = 0.02


_SECTIONS: dict[str, type] = {
    "perspective": PerspectiveConfig,
    "motion_blur": MotionBlurConfig,
    "brightness_contrast": BrightnessContrastConfig,
    "gamma": GammaConfig,
    "noise": NoiseConfig,
    "jpeg": JpegConfig,
}


@dataclass(frozen=True)
class AugmentConfig:
    """Probability and ranges of every augmentation. Defaults mimic a line a few weeks after set-up
    (compare the ``shift`` scenario: 6 px of belt blur, 3–6° of tilt, darker, noisier)."""

    perspective: PerspectiveConfig = PerspectiveConfig()
    motion_blur: MotionBlurConfig = MotionBlurConfig()
    brightness_contrast: BrightnessContrastConfig = BrightnessContrastConfig()
    gamma: GammaConfig = GammaConfig()
    noise: NoiseConfig = NoiseConfig()
    jpeg: JpegConfig = JpegConfig()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "AugmentConfig":
        """From a (partial) mapping like the node's params; unknown keys and bad ranges are
        ``ValueError`` naming the parameter. Other top-level keys (``seed``) are ignored."""
        sections = {}
        for name, section_cls in _SECTIONS.items():
            given = dict(params.get(name) or {})
            fields = {f.name: f for f in dataclasses.fields(section_cls)}
            unknown = sorted(set(given) - set(fields))
            if unknown:
                raise ValueError(f"{name}.{unknown[0]}: unknown parameter; expected one of {', '.join(fields)}")
            values = {}
            for key, value in given.items():
                if isinstance(fields[key].default, tuple):
                    if not (isinstance(value, (list, tuple)) and len(value) == 2):
                        raise ValueError(f"{name}.{key}: expected [low, high], got {value!r}")
                    low, high = (type(fields[key].default[0])(v) for v in value)
                    if low > high:
                        raise ValueError(f"{name}.{key}: expected low <= high, got {list(value)}")
                    values[key] = (low, high)
                else:
                    values[key] = float(value)
            section = section_cls(**values)
            if not 0.0 <= section.p <= 1.0:
                raise ValueError(f"{name}.p: expected a probability in [0, 1], got {section.p}")
            sections[name] = section
        config = cls(**sections)
        config._check()
        return config

    def _check(self) -> None:
        checks = [
            ("motion_blur.length_px", self.motion_blur.length_px[0] >= 0, "lengths >= 0"),
            ("gamma.gamma", self.gamma.gamma[0] > 0, "values > 0"),
            ("brightness_contrast.contrast", self.brightness_contrast.contrast[0] >= 0, "factors >= 0"),
            ("noise.sigma", 0 <= self.noise.sigma[0] and self.noise.sigma[1] <= 80, "values in [0, 80]"),
            ("jpeg.quality", 1 <= self.jpeg.quality[0] and self.jpeg.quality[1] <= 100, "values in [1, 100]"),
            ("perspective.max_shift_frac", 0 <= self.perspective.max_shift_frac <= 0.2, "a value in [0, 0.2]"),
        ]
        for param, ok, expected in checks:
            if not ok:
                raise ValueError(f"{param}: expected {expected}")

    def to_params(self) -> dict[str, Any]:
        """Plain data (YAML/JSON ready), the inverse of :meth:`from_params`."""
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(self, name)).items()}
        return out

    @property
    def active(self) -> bool:
        """True when any augmentation may fire."""
        return any(getattr(self, name).p > 0 for name in _SECTIONS)


# ---------------------------------------------------------------------------------------------
# Drawing and applying one frame's augmentations


@dataclass(frozen=True)
class AugmentPlan:
    """What was drawn for one frame: the value of every augmentation that fires (None = off)."""

    seed: int
    index: int
    perspective: tuple[tuple[float, float], ...] | None = None  # corner shifts px (TL, TR, BR, BL)
    motion_blur: tuple[float, float] | None = None  # (length_px, angle_deg)
    brightness_contrast: tuple[float, float] | None = None  # (brightness, contrast)
    gamma: float | None = None
    noise: float | None = None  # sigma
    jpeg: int | None = None  # quality

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in AUGMENTATIONS)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed, "index": self.index}
        for name in AUGMENTATIONS:
            value = getattr(self, name)
            if value is not None:
                out[name] = [list(v) for v in value] if name == "perspective" else (list(value) if isinstance(value, tuple) else value)
        return out


def stream(seed: int, index: int, name: str) -> np.random.Generator:
    """The random stream of augmentation ``name`` for frame ``index`` of ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index: expected integers >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([int(seed), int(index), AUGMENTATIONS.index(name), 0xA116])


def plan_augment(config: AugmentConfig, seed: int, index: int, size: tuple[int, int]) -> AugmentPlan:
    """Draw frame ``index``'s augmentations for an image of ``size`` = (width, height)."""
    width, height = size
    drawn: dict[str, Any] = {}
    for name in AUGMENTATIONS:
        section = getattr(config, name)
        if section.p <= 0:
            continue
        rng = stream(seed, index, name)
        if rng.random() >= section.p:
            continue
        if name == "perspective":
            m = section.max_shift_frac
            shifts = rng.uniform(-m, m, size=(4, 2)) * (width, height)
            drawn[name] = tuple((float(x), float(y)) for x, y in shifts)
        elif name == "motion_blur":
            drawn[name] = (float(rng.uniform(*section.length_px)), float(rng.uniform(*section.angle_deg)))
        elif name == "brightness_contrast":
            drawn[name] = (float(rng.uniform(*section.brightness)), float(rng.uniform(*section.contrast)))
        elif name == "gamma":
            # log-uniform, so brighter and darker curves are equally likely
            lo, hi = section.gamma
            drawn[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        elif name == "noise":
            drawn[name] = float(rng.uniform(*section.sigma))
        elif name == "jpeg":
            drawn[name] = int(rng.integers(section.quality[0], section.quality[1] + 1))
    return AugmentPlan(seed, index, **drawn)


def apply_plan(image: np.ndarray, plan: AugmentPlan) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply ``plan`` to ``image``; returns the new image and the homography (None without perspective).

    With an empty plan the input itself is returned (nothing to copy); it is never modified.
    """
    _check_image(image)
    out, H = image, None
    if plan.perspective is not None:
        out, H = perspective_warp(out, np.array(plan.perspective))
    if plan.motion_blur is not None:
        out = motion_blur(out, *plan.motion_blur)
    if plan.brightness_contrast is not None:
        out = brightness_contrast(out, *plan.brightness_contrast)
    if plan.gamma is not None:
        out = gamma_correct(out, plan.gamma)
    if plan.noise is not None:
        out = sensor_noise(out, plan.noise, stream(plan.seed, plan.index, "noise"))
    if plan.jpeg is not None:
        out = jpeg_artefacts(out, plan.jpeg)
    return out, H


def augment_image(image: np.ndarray, config: AugmentConfig, seed: int, index: int) -> np.ndarray:
    """Frame ``index`` augmented with ``seed``: the same arguments always give the same pixels."""
    _check_image(image)
    plan = plan_augment(config, seed, index, (image.shape[1], image.shape[0]))
    return apply_plan(image, plan)[0]


def augment_labelled(
    image: np.ndarray,
    boxes_xyxy: np.ndarray,
    config: AugmentConfig,
    seed: int,
    index: int,
    min_visible: float = 0.25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, AugmentPlan]:
    """Like :func:`augment_image` for a labelled image: returns ``(image, boxes, keep, plan)``, the
    boxes moved by the perspective warp (see :func:`warp_boxes`) and ``keep`` saying which input
    boxes survived. Blur, light, noise and JPEG do not move boxes."""
    _check_image(image)
    h, w = image.shape[:2]
    plan = plan_augment(config, seed, index, (w, h))
    out, H = apply_plan(image, plan)
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    if H is None:
        return out, boxes.copy(), np.ones(len(boxes), bool), plan
    moved, keep = warp_boxes(boxes, H, w, h, min_visible)
    return out, moved, keep, plan


def _check_image(image: Any) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image: expected a uint8 H x W x 3 BGR array, got {got}")
