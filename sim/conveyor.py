"""The simulated conveyor: what the camera over a moving belt sees, frame by frame, with ground truth.

Geometry (shared with the virtual PLC through :mod:`lineguard.sim.truth`): belt coordinates are mm
along travel, 0 = the camera's optical axis (image centre), positive downstream; parts move left to
right in the image. At the image centre one pixel is ``mm_per_px`` mm of belt. Frame ``i`` is
captured at ``frame_time_ns(i) = i / fps`` (the middle of its exposure); time 0 is encoder count 0.

How a frame is made (all per-run work is done once; a frame only crops, filters and warps):

1. The belt is a long strip in belt coordinates: periodic belt texture and side rails, grime and
   paper labels, and every part drawn once as a sprite (with its defects), composited into cached
   chunks of strip. A frame is a window of one chunk at ``-travel / mm_per_px``.
2. One horizontal filter: motion blur (a line of ``belt_speed × exposure / mm_per_px`` px) and
   the belt's sub-pixel position (linear interpolation) in the same kernel.
3. Camera-fixed things, unblurred: glare spots on glossy surfaces, a fixture over the rail, a hand
   reaching in, totes on the neighbouring line.
4. Camera tilt (pitch/yaw about the optical axis; the image centre keeps looking at belt position
   0 at scale ``mm_per_px``): one ``remap`` with fixed-point tables made once per run (the
   homography's ``warpPerspective``, precomputed). No tilt: a crop.
5. Lighting: a static gradient/vignetting map times a per-frame gain (slow drift × mains flicker
   averaged over the exposure). Then sensor noise from a precomputed tile at a per-frame offset.

Every random choice derives from ``(scenario.seed, what, index)``, so any frame can be rendered on
its own (random access) and the same seed gives byte-identical frames and truth.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from lineguard.sim.parts import (
    PART_TYPES,
    PartPlan,
    PlanParams,
    Sprite,
    part_to_strip,
    plan_part,
    render_part,
)
from lineguard.sim.scenario import Scenario
from lineguard.sim.truth import NS_PER_S, BeltGeometry, FrameTruth, PartTruth

CELL_PX = 512  # belt grime/labels are planned per cell of strip, so chunks agree where they overlap
TILE_PX = 1024  # period of the belt texture along travel
NOISE_PAD_PX = 48  # the noise tile is this much larger than the image; offsets pick a window
SPRITE_CACHE = 24
CHUNK_CACHE = 3

# Stream ids for numpy SeedSequence([seed, stream, index])
_LAYOUT, _PART, _CAMERA, _NOISE, _EVENTS, _CELL, _FRAME = range(1, 8)


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index + (1 << 40)])


def _hash2(seed: int, i: int) -> int:
    """A cheap, well-mixed 64-bit hash of (seed, frame) (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + i * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


@dataclass(frozen=True, eq=False)
class _Overlay:
    """A camera-fixed object drawn over the belt: premultiplied BGR + alpha, top-left in ortho px."""

    bgr: np.ndarray
    alpha: np.ndarray
    x: int
    y: int


@dataclass(frozen=True)
class _Glove:
    t0_s: float
    duration_s: float
    from_top: bool
    x_px: float
    drift_px_s: float
    depth_px: float
    index: int


@dataclass(frozen=True)
class _Tote:
    t0_s: float
    speed_px_s: float
    length_px: int
    from_top: bool
    depth_px: int
    index: int


class Conveyor:
    """One run of the simulated line: ``scenario.parts.count`` parts pass under the camera.

    ``render_defects=False`` draws every part as if it were good (same positions, jitter, dust,
    lighting and noise) while ``parts`` and ``frame_truth`` still describe the planned defects; it
    exists to compare a frame with and without its defects.
    """

    def __init__(self, scenario: Scenario, *, render_defects: bool = True) -> None:
        self.scenario = scenario
        self.render_defects = render_defects
        cam = scenario.camera
        self.geometry: BeltGeometry = scenario.geometry
        self.fps: float = cam.fps
        self.resolution: tuple[int, int] = cam.resolution
        self.mm_per_px: float = cam.mm_per_px
        self.motion_blur_px: float = scenario.motion_blur_px
        self._seed = scenario.seed
        w, h = self.resolution
        self._setup_camera()
        self._plan_parts()
        run_s = self.n_frames / self.fps
        self._plan_events(run_s)
        self._belt_bgr, self._belt_gloss = self._belt_tile()
        # chunk geometry: a frame's window always lies inside one chunk
        self._win_w = w + 2 * self._mx + 2
        self._chunk_step = max(2048, 2 * w)
        self._chunks: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._sprites: OrderedDict[int, Sprite] = OrderedDict()
        self._overlay_cache: OrderedDict[tuple[str, int], _Overlay] = OrderedDict()
        self._part_u = [self._strip_extent(p) for p in self._plans]
        self._part_order = sorted(range(len(self._plans)), key=lambda j: self._part_u[j][0])
        self._part_u0_sorted = [self._part_u[j][0] for j in self._part_order]
        self._max_part_px = max(u1 - u0 for u0, u1 in self._part_u)

    # ------------------------------------------------------------------------------ public API

    @property
    def parts(self) -> Sequence[PartTruth]:
        """Every part of the run, in belt order (part 0 arrives first)."""
        return self._truths

    @property
    def plans(self) -> Sequence[PartPlan]:
        """Every part's full plan (truth plus how it is drawn)."""
        return self._plans

    def frame_time_ns(self, i: int) -> int:
        """Capture time of frame ``i`` (middle of the exposure), ns since encoder count 0."""
        return int(round(i * NS_PER_S / self.fps))

    def encoder_at_frame(self, i: int) -> int:
        return self.geometry.encoder_at(self.frame_time_ns(i))

    def render(self, i: int) -> np.ndarray:
        """Frame ``i`` as the camera sees it: uint8 H x W x 3 BGR, C-contiguous."""
        self._check_index(i)
        w, h = self.resolution
        t_ns = self.frame_time_ns(i)
        t_s = t_ns / NS_PER_S
        u_start = self._u_start(t_ns)
        u_int = math.floor(u_start)
        frac = u_start - u_int
        ws = u_int - self._mx
        k = ws // self._chunk_step
        j0 = ws - k * self._chunk_step
        chunk_bgr, chunk_gloss = self._chunk(k)
        window = chunk_bgr[:, j0 : j0 + self._win_w]
        # one horizontal filter: motion blur and the sub-pixel belt position together
        kernel, anchor = _shifted_kernel(self._blur_kernel, frac)
        frame = cv2.filter2D(window, -1, kernel, anchor=(anchor, 0), borderType=cv2.BORDER_REPLICATE)
        for spot, (sx, sy) in self._speculars:
            sh, sw = spot.shape
            x0, y0 = sx + self._mx, sy + self._my
            roi = frame[y0 : y0 + sh, x0 : x0 + sw]
            gloss = chunk_gloss[y0 : y0 + sh, j0 + x0 : j0 + x0 + sw]
            glare = cv2.multiply(spot, gloss, scale=1 / 255)
            cv2.add(roi, cv2.merge([glare, glare, glare]), dst=roi)
        for ov in self._overlays_at(t_s):
            _composite(frame, ov.bgr, ov.alpha, ov.x + self._mx, ov.y + self._my)
        if self._tilt_maps is None:
            out = np.ascontiguousarray(frame[self._my : self._my + h, self._mx : self._mx + w])
        else:  # camera tilt: a fixed per-run map (fixed-point, 1/32 px), faster than warpPerspective
            out = cv2.remap(frame, *self._tilt_maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cv2.multiply(out, self._light_map, dst=out, scale=self.gain_at(t_s) / 128.0)
        if self._noise_pos is not None:
            hsh = _hash2(self._seed, i)
            oy, ox = hsh % NOISE_PAD_PX, (hsh >> 16) % NOISE_PAD_PX
            cv2.add(out, self._noise_pos[oy : oy + h, ox : ox + w], dst=out)
            cv2.subtract(out, self._noise_neg[oy : oy + h, ox : ox + w], dst=out)
        return out

    def frame_truth(self, i: int) -> FrameTruth:
        """Boxes of every part, present component and defect in frame ``i`` (see FrameTruth)."""
        self._check_index(i)
        w, h = self.resolution
        t_ns = self.frame_time_ns(i)
        u_start = self._u_start(t_ns)
        overlays = self._overlays_at(t_ns / NS_PER_S)
        boxes, classes, pids, visible = [], [], [], []
        for j in self._parts_in_window(u_start - self._mx, u_start + w + self._mx):
            plan = self._plans[j]
            for shape in plan.shapes:
                pts = part_to_strip(plan.truth, shape.points_mm, self.mm_per_px)
                ortho = pts - (u_start, -h / 2)
                pad = shape.pad_mm / self.mm_per_px
                x0, y0 = ortho.min(axis=0) - pad
                x1, y1 = ortho.max(axis=0) + pad
                if pad > 0:
                    ortho = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
                cam = _apply_h(self._tilt, ortho)
                bx0, by0 = cam.min(axis=0)
                bx1, by1 = cam.max(axis=0)
                full = (bx1 - bx0) * (by1 - by0)
                cx0, cy0, cx1, cy1 = max(bx0, 0.0), max(by0, 0.0), min(bx1, float(w)), min(by1, float(h))
                if cx1 - cx0 < 0.5 or cy1 - cy0 < 0.5 or full <= 0:
                    continue
                inside = (cx1 - cx0) * (cy1 - cy0) / full
                hidden = _occluded_fraction(overlays, (x0, y0, x1, y1)) if overlays else 0.0
                vis = inside * (1.0 - hidden)
                if vis <= 1e-3:
                    continue
                boxes.append((cx0, cy0, cx1, cy1))
                classes.append(shape.class_id)
                pids.append(plan.truth.part_id)
                visible.append(vis)
        return FrameTruth(
            frame_index=i,
            t_ns=t_ns,
            encoder=self.geometry.encoder_at(t_ns),
            boxes_xyxy=np.array(boxes, np.float32).reshape(-1, 4),
            class_ids=np.array(classes, np.int64),
            part_ids=np.array(pids, np.int64),
            visible=np.array(visible, np.float32),
            image_hw=(self.resolution[1], self.resolution[0]),
        )

    def iter_frames(
        self, start: int = 0, stop: int | None = None, step: int = 1
    ) -> Iterator[tuple[int, int, int, np.ndarray, FrameTruth]]:
        """Yield ``(i, t_ns, encoder, image, truth)`` for frames start, start+step, ... < stop."""
        for i in range(start, self.n_frames if stop is None else min(stop, self.n_frames), step):
            truth = self.frame_truth(i)
            yield i, truth.t_ns, truth.encoder, self.render(i), truth

    def project_part_box(self, part: PartTruth, box_part_mm: Sequence[float], i: int) -> np.ndarray:
        """Where a box in a part's own frame (mm) appears in frame ``i``: xyxy px, not clipped."""
        x0, y0, x1, y1 = box_part_mm
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
        w, h = self.resolution
        ortho = part_to_strip(part, corners, self.mm_per_px) - (self._u_start(self.frame_time_ns(i)), -h / 2)
        cam = _apply_h(self._tilt, ortho)
        return np.array([*cam.min(axis=0), *cam.max(axis=0)], np.float32)

    def gain_at(self, t_s: float) -> float:
        """Global light level at time t: slow drift within gain_range × flicker averaged over the exposure."""
        drift = 0.65 * math.sin(2 * math.pi * self._drift_hz[0] * t_s + self._drift_phase[0]) + 0.35 * math.sin(
            2 * math.pi * self._drift_hz[1] * t_s + self._drift_phase[1]
        )
        flicker = 1.0 + self._flicker_amp * math.cos(2 * math.pi * self._flicker_hz * t_s + self._flicker_phase)
        return (self._gain_mid + self._gain_half * drift) * flicker


    @property
    def tilt_deg(self) -> tuple[float, float]:
        """(pitch, yaw) of the camera in this run, degrees."""
        return self._pitch_deg, self._yaw_deg

    # ------------------------------------------------------------------------------ set-up

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame index {i} out of range: this run has {self.n_frames} frames (0..{self.n_frames - 1})")

    def _u_start(self, t_ns: int) -> float:
        """Strip column (px) seen at the left image edge (before tilt) at time t."""
        return -self.geometry.travel_mm(t_ns) / self.mm_per_px - self.resolution[0] / 2

    def _setup_camera(self) -> None:
        s = self.scenario
        w, h = self.resolution
        rng = _rng(self._seed, _CAMERA)
        lo, hi = s.camera.tilt_deg
        self._pitch_deg = float(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0]))
        self._yaw_deg = float(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0]))
        self._tilt = _tilt_homography(w, h, s.camera.hfov_deg, self._pitch_deg, self._yaw_deg)
        tilt_inv = np.linalg.inv(self._tilt)
        # how far outside the image the tilted view reaches, in ortho px (sets window margins)
        edge = np.array([[x, y] for x in np.linspace(0, w, 9) for y in (0, h)] + [[x, y] for x in (0, w) for y in np.linspace(0, h, 9)])
        src = _apply_h(tilt_inv, edge)
        blur_half = int(math.ceil(self.motion_blur_px / 2)) + 1
        self._mx = int(math.ceil(max(0.0, -src[:, 0].min(), src[:, 0].max() - w))) + blur_half + 4
        self._my = int(math.ceil(max(0.0, -src[:, 1].min(), src[:, 1].max() - h))) + 4
        self._blur_kernel = _motion_kernel(self.motion_blur_px)
        self._tilt_maps = None if self._pitch_deg == 0 and self._yaw_deg == 0 else _remap_tables(tilt_inv, w, h, self._mx, self._my)
        # lighting: static map (gradient × vignetting) and per-frame gain
        li = s.lighting
        strength = float(rng.uniform(*li.gradient))
        angle = float(rng.uniform(0, 2 * math.pi))
        xs = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)
        ys = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (w / 2)
        X, Y = np.meshgrid(xs, ys)
        d = (X * math.cos(angle) + Y * math.sin(angle)) / math.hypot(1.0, h / w)
        r2 = (X**2 + Y**2) / (1.0 + (h / w) ** 2)
        light = (1.0 - strength * (0.5 + 0.5 * d)) * (1.0 - li.vignetting * r2)
        light8 = np.clip(np.round(light * 128), 0, 255).astype(np.uint8)
        self._light_map = cv2.merge([light8, light8, light8])
        self._gain_mid = (li.gain_range[0] + li.gain_range[1]) / 2
        self._gain_half = (li.gain_range[1] - li.gain_range[0]) / 2
        self._drift_hz = (float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.5, 1.5)))
        self._drift_phase = (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi)))
        flicker_hz = 2 * li.mains_hz
        x = math.pi * flicker_hz * s.camera.exposure_ms / 1000.0
        self._flicker_amp = li.flicker_depth * (math.sin(x) / x if x > 1e-9 else 1.0)
        self._flicker_hz = flicker_hz
        self._flicker_phase = float(rng.uniform(0, 2 * math.pi))
        # glare spots, fixed in the image, lighting up glossy surfaces below them
        self._speculars: list[tuple[np.ndarray, tuple[int, int]]] = []
        n_spots = int(rng.integers(li.specular_count[0], li.specular_count[1] + 1))
        belt_half_px = min(h / 2, s.belt.width_mm / 2 / self.mm_per_px)
        for _ in range(n_spots):
            sigma = float(rng.uniform(8, 22)) / self.mm_per_px
            amp = float(rng.uniform(*li.specular_intensity))
            elong = float(rng.uniform(1.0, 2.5))  # lamps are often long: wider than tall
            sx, sy = sigma * math.sqrt(elong), sigma / math.sqrt(elong)
            size_x = min(int(7 * sx) | 1, (w + 2 * self._mx) // 2 * 2 - 1)
            size_y = min(int(7 * sy) | 1, (h + 2 * self._my) // 2 * 2 - 1)
            yy, xx = np.mgrid[:size_y, :size_x].astype(np.float32)
            xx -= size_x // 2
            yy -= size_y // 2
            blob = np.exp(-(xx**2 / sx**2 + yy**2 / sy**2) / 2) * amp
            cx = float(rng.uniform(0.1, 0.9)) * w
            cy = h / 2 + float(rng.uniform(-0.7, 0.7)) * belt_half_px
            # keep the spot inside the window (margins included)
            x0 = min(max(int(cx - size_x // 2), -self._mx), w + self._mx - size_x)
            y0 = min(max(int(cy - size_y // 2), -self._my), h + self._my - size_y)
            self._speculars.append((np.clip(blob, 0, 255).astype(np.uint8), (x0, y0)))
        self._fixture = _draw_fixture(rng, self.resolution, self.mm_per_px, s.belt.width_mm) if rng.random() < s.distractors.fixture_prob else None
        # sensor noise: one Gaussian tile, split into what it adds and what it takes away
        sigma = s.camera.noise_sigma
        if sigma > 0:
            nrng = _rng(self._seed, _NOISE)
            noise = nrng.standard_normal((h + NOISE_PAD_PX, w + NOISE_PAD_PX, 3), dtype=np.float32) * sigma
            noise = np.clip(np.round(noise), -255, 255)
            self._noise_pos = np.maximum(noise, 0).astype(np.uint8)
            self._noise_neg = np.maximum(-noise, 0).astype(np.uint8)
        else:
            self._noise_pos = self._noise_neg = None

    def _plan_parts(self) -> None:
        s = self.scenario
        w, _ = self.resolution
        rng = _rng(self._seed, _LAYOUT)
        names = [n for n, wt in s.parts.mix if wt > 0]
        weights = np.array([wt for n, wt in s.parts.mix if wt > 0], np.float64)
        weights /= weights.sum()
        params = PlanParams(
            placement_jitter_mm=s.parts.placement_jitter_mm,
            placement_jitter_deg=s.parts.placement_jitter_deg,
            dust_per_part=s.parts.dust_per_part,
            defect_rate=s.defects.rate,
            defect_mix=s.defects.mix,
            scratch_length_mm=s.defects.scratch_length_mm,
            scratch_contrast=s.defects.scratch_contrast,
            scratch_over_component=s.defects.scratch_over_component,
            misaligned_offset_mm=s.defects.misaligned_offset_mm,
            misaligned_rotation_deg=s.defects.misaligned_rotation_deg,
        )
        view_half_mm = (w / 2 + self._mx) * self.mm_per_px
        plans = []
        x = 0.0
        for pid in range(s.parts.count):
            ptype = names[int(rng.choice(len(names), p=weights))]
            pitch = s.parts.spacing_mm + float(rng.uniform(-1, 1)) * s.parts.spacing_jitter_mm
            y = float(rng.uniform(-1, 1)) * s.parts.lateral_jitter_mm
            rot = float(rng.uniform(-1, 1)) * s.parts.rotation_jitter_deg
            half_diag = math.hypot(PART_TYPES[ptype].length_mm, PART_TYPES[ptype].width_mm) / 2
            x = -view_half_mm - half_diag - 2.0 if pid == 0 else x - pitch
            plans.append(plan_part(pid, ptype, x, y, rot, params, _rng(self._seed, _PART, pid)))
        self._plans: tuple[PartPlan, ...] = tuple(plans)
        self._truths: tuple[PartTruth, ...] = tuple(p.truth for p in plans)
        last = self._truths[-1]
        half_diag = math.hypot(last.length_mm, last.width_mm) / 2
        travel_end_mm = view_half_mm + half_diag + 2.0 - last.x0_mm
        self.n_frames: int = int(math.floor(travel_end_mm / self.geometry.belt_speed_mm_s * self.fps)) + 1

    def _plan_events(self, run_s: float) -> None:
        d = self.scenario.distractors
        w, h = self.resolution
        rng = _rng(self._seed, _EVENTS)
        self._gloves = []
        for n in range(int(rng.poisson(d.gloves_per_min * run_s / 60.0))):
            self._gloves.append(
                _Glove(
                    t0_s=float(rng.uniform(-0.5, run_s)),
                    duration_s=float(rng.uniform(0.6, 1.6)),
                    from_top=bool(rng.random() < 0.5),
                    x_px=float(rng.uniform(0.1, 0.9) * w),
                    drift_px_s=float(rng.uniform(-0.3, 0.3) * w),
                    depth_px=float(rng.uniform(0.35, 0.75) * h),
                    index=n,
                )
            )
        self._totes = []
        belt_half_px = self.scenario.belt.width_mm / 2 / self.mm_per_px
        rail_px = max(0.0, h / 2 - belt_half_px)
        for n in range(int(rng.poisson(d.neighbours_per_min * run_s / 60.0))):
            speed = float(rng.uniform(0.5, 1.5) * rng.choice([-1.0, 1.0])) * self.geometry.belt_speed_mm_s / self.mm_per_px
            self._totes.append(
                _Tote(
                    t0_s=float(rng.uniform(-1.0, run_s)),
                    speed_px_s=speed,
                    length_px=int(rng.uniform(250, 420) / self.mm_per_px),
                    from_top=bool(rng.random() < 0.5),
                    depth_px=int(max(6.0, rail_px * float(rng.uniform(0.3, 0.8)))),
                    index=n,
                )
            )

    def _belt_tile(self) -> tuple[np.ndarray, np.ndarray]:
        """One period of belt (texture, edges, rails) for the whole window height; x-periodic."""
        s = self.scenario
        _, h = self.resolution
        hc = h + 2 * self._my
        rng = _rng(self._seed, _CAMERA, 1)
        contrast = s.belt.texture_contrast
        # mottling: filtered noise, periodic along x (filtering in the Fourier domain)
        noise = rng.standard_normal((hc, TILE_PX)).astype(np.float32)
        fy = np.fft.fftfreq(hc)[:, None]
        fx = np.fft.fftfreq(TILE_PX)[None, :]
        low = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-(fx**2 + fy**2) / (2 * 0.02**2))))
        low /= max(1e-6, float(low.std()))
        fine = rng.standard_normal((hc, TILE_PX)).astype(np.float32)
        yy, xx = np.mgrid[:hc, :TILE_PX].astype(np.float32)
        period = 6.0 * 0.5 / self.mm_per_px  # 3 mm weave
        if period > 2:  # a whole number of weave periods per tile keeps the tile seamless
            weave = np.sin(2 * np.pi * (xx + yy) / (TILE_PX / round(TILE_PX / period)))
        else:
            weave = np.zeros_like(xx)
        base = 66.0
        grey = base * (1 + contrast * (0.6 * low + 0.25 * fine + 0.35 * weave))
        belt = np.stack([grey * 0.98, grey * 1.04, grey * 0.97], axis=-1)
        gloss = np.full((hc, TILE_PX), 14, np.float32)
        # edges and rails (uniform along x: moving or not, they look the same)
        v = (np.arange(hc, dtype=np.float32) + 0.5 - hc / 2) * self.mm_per_px  # mm across the belt
        half_belt = s.belt.width_mm / 2
        for sign in (-1, 1):
            off = sign * v - half_belt  # mm beyond the belt edge on this side
            edge = (off > -3) & (off <= 0)
            belt[edge] *= 0.75
            gap = (off > 0) & (off <= 6)
            belt[gap] = (22, 22, 24)
            rail = off > 6
            shade = 128 + 18 * np.cos(np.clip(off - 6, 0, None) / 12.0)
            belt[rail] = np.stack([shade * 1.02, shade, shade * 0.98], axis=-1)[rail][:, None, :]
            gloss[rail] = 160
            lip = (off > 6) & (off <= 8)
            belt[lip] = (200, 200, 204)
        return np.clip(belt, 0, 255).astype(np.uint8), gloss.astype(np.uint8)

    # ------------------------------------------------------------------------------ strip chunks

    def _strip_extent(self, plan: PartPlan) -> tuple[float, float]:
        t = plan.truth
        half = math.hypot(t.length_mm, t.width_mm) / 2 / self.mm_per_px + 2
        u = t.x0_mm / self.mm_per_px
        return u - half, u + half

    def _parts_in_window(self, u_lo: float, u_hi: float) -> list[int]:
        # parts sorted by left extent; any part with u0 <= u_hi and u1 >= u_lo
        hi = bisect.bisect_right(self._part_u0_sorted, u_hi)
        lo = bisect.bisect_left(self._part_u0_sorted, u_lo - self._max_part_px)
        return [j for j in self._part_order[lo:hi] if self._part_u[j][1] >= u_lo]

    def _sprite(self, j: int) -> Sprite:
        sp = self._sprites.get(j)
        if sp is None:
            _, h = self.resolution
            sp = render_part(self._plans[j], self.mm_per_px, (0.0, h / 2 + self._my), self.render_defects)
            self._sprites[j] = sp
            if len(self._sprites) > SPRITE_CACHE:
                self._sprites.popitem(last=False)
        else:
            self._sprites.move_to_end(j)
        return sp

    def _chunk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._chunks.get(k)
        if hit is not None:
            self._chunks.move_to_end(k)
            return hit
        u_lo = k * self._chunk_step
        width = self._chunk_step + self._win_w
        cols = np.arange(u_lo, u_lo + width) % TILE_PX
        bgr = np.ascontiguousarray(self._belt_bgr[:, cols])
        gloss = np.ascontiguousarray(self._belt_gloss[:, cols])
        for cell in range(math.floor(u_lo / CELL_PX) - 1, math.floor((u_lo + width) / CELL_PX) + 2):
            for sp in self._cell_items(cell):
                _composite(bgr, sp.bgr, sp.alpha, sp.u0 - u_lo, sp.v0)
        for j in self._parts_in_window(u_lo, u_lo + width):
            sp = self._sprite(j)
            _composite(bgr, sp.bgr, sp.alpha, sp.u0 - u_lo, sp.v0, gloss, sp.gloss)
        self._chunks[k] = (bgr, gloss)
        if len(self._chunks) > CHUNK_CACHE:
            self._chunks.popitem(last=False)
        return bgr, gloss

    def _cell_items(self, cell: int) -> list[Sprite]:
        """Grime and paper labels on the belt in one cell of strip (a pure function of the cell)."""
        s = self.scenario
        _, h = self.resolution
        rng = _rng(self._seed, _CELL, cell)
        mpp = self.mm_per_px
        half_belt_px = s.belt.width_mm / 2 / mpp
        centre_v = h / 2 + self._my
        items = []
        for _ in range(int(rng.integers(0, 4))):  # grime: faint blotches
            rx, ry = rng.uniform(3, 14, 2) / mpp
            u = cell * CELL_PX + rng.uniform(0, CELL_PX)
            v = centre_v + rng.uniform(-1, 1) * (half_belt_px - ry - 4)
            shade = float(rng.choice([30.0, 110.0]))
            opacity = float(rng.uniform(0.08, 0.2)) * (s.belt.texture_contrast / 0.12)
            items.append(_blob_sprite(u, v, rx, ry, float(rng.uniform(0, 180)), shade, min(1.0, opacity)))
        n_labels = int(rng.poisson(s.distractors.labels_per_m * CELL_PX * mpp / 1000.0))
        for _ in range(n_labels):
            u = cell * CELL_PX + rng.uniform(0, CELL_PX)
            lw, lh = float(rng.uniform(30, 50)), float(rng.uniform(18, 28))
            v = centre_v + rng.uniform(-1, 1) * max(0.0, half_belt_px - max(lw, lh) / 2 / mpp - 4)
            items.append(_label_sprite(rng, u, v, lw / mpp, lh / mpp, float(rng.uniform(-40, 40))))
        return items

    # ------------------------------------------------------------------------------ overlays

    def _overlays_at(self, t_s: float) -> list[_Overlay]:
        w, h = self.resolution
        out = []
        if self._fixture is not None:
            out.append(self._fixture)
        for tote in self._totes:
            x = (-tote.length_px if tote.speed_px_s > 0 else w) + tote.speed_px_s * (t_s - tote.t0_s)
            if t_s < tote.t0_s or x > w or x + tote.length_px < 0:
                continue
            sp = self._cached_overlay(("tote", tote.index), lambda tote=tote: _draw_tote(_rng(self._seed, _EVENTS, 1000 + tote.index), tote, self.mm_per_px))
            y = -sp.alpha.shape[0] + tote.depth_px if tote.from_top else h - tote.depth_px
            out.append(_Overlay(sp.bgr, sp.alpha, int(round(x)), int(y)))
        for g in self._gloves:
            phase = (t_s - g.t0_s) / g.duration_s
            if not 0.0 < phase < 1.0:
                continue
            sp = self._cached_overlay(("glove", g.index), lambda g=g: _draw_glove(_rng(self._seed, _EVENTS, 2000 + g.index), g.from_top, self.mm_per_px))
            reach = g.depth_px * math.sin(math.pi * phase)
            gh, gw = sp.alpha.shape
            x = g.x_px + g.drift_px_s * (t_s - g.t0_s) - gw / 2
            y = reach - gh if g.from_top else h - reach
            out.append(_Overlay(sp.bgr, sp.alpha, int(round(x)), int(round(y))))
        return out

    def _cached_overlay(self, key: tuple[str, int], make) -> _Overlay:
        ov = self._overlay_cache.get(key)
        if ov is None:
            ov = make()
            self._overlay_cache[key] = ov
            if len(self._overlay_cache) > 16:
                self._overlay_cache.popitem(last=False)
        return ov


# ---------------------------------------------------------------------------------------------
# Helpers


def _motion_kernel(length_px: float) -> np.ndarray:
    """A horizontal box of ``length_px`` (continuous, centred), integrated over pixels; odd length."""
    if length_px < 0.25:
        return np.ones((1, 1), np.float32)
    n = int(math.ceil(length_px / 2 - 0.5))
    taps = []
    for k in range(-n, n + 1):
        lo, hi = max(k - 0.5, -length_px / 2), min(k + 0.5, length_px / 2)
        taps.append(max(0.0, hi - lo))
    kernel = np.array(taps, np.float32)[None, :]
    return kernel / kernel.sum()


def _remap_tables(tilt_inv: np.ndarray, w: int, h: int, mx: int, my: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point remap tables: camera pixel -> window pixel (window origin at ortho (-mx, -my))."""
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    inv_c = np.linalg.inv(half) @ tilt_inv @ half  # pixel-centre convention, as cv2 samples
    ys, xs = np.mgrid[:h, :w].astype(np.float64)
    z = inv_c[2, 0] * xs + inv_c[2, 1] * ys + inv_c[2, 2]
    map_x = ((inv_c[0, 0] * xs + inv_c[0, 1] * ys + inv_c[0, 2]) / z + mx).astype(np.float32)
    map_y = ((inv_c[1, 0] * xs + inv_c[1, 1] * ys + inv_c[1, 2]) / z + my).astype(np.float32)
    return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)


def _shifted_kernel(box: np.ndarray, frac: float) -> tuple[np.ndarray, int]:
    """``box`` followed by a linear-interpolation shift: out[x] = blurred[x + frac]; (kernel, anchor)."""
    n = box.shape[1] // 2
    kernel = np.zeros((1, box.shape[1] + 1), np.float32)
    kernel[0, :-1] += (1.0 - frac) * box[0]
    kernel[0, 1:] += frac * box[0]
    return kernel, n


def _tilt_homography(w: int, h: int, hfov_deg: float, pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """Square-on image -> image of a camera turned by pitch/yaw about its centre (edge convention).

    Re-centred so the image centre still looks at the same belt point, and rescaled so the local
    scale there is unchanged: ``mm_per_px`` holds at the image centre.
    """
    f = (w / 2) / math.tan(math.radians(hfov_deg) / 2)
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    p, y = math.radians(pitch_deg), math.radians(yaw_deg)
    Rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    Ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    H = K @ Rx @ Ry @ np.linalg.inv(K)
    c = np.array([w / 2, h / 2])
    c2 = _apply_h(H, c[None])[0]
    T = np.array([[1, 0, c[0] - c2[0]], [0, 1, c[1] - c2[1]], [0, 0, 1]])
    H = T @ H
    # local Jacobian at the centre -> scale back to 1 (area-preserving there)
    eps = 1.0
    dx = _apply_h(H, np.array([c + (eps, 0)]))[0] - c
    dy = _apply_h(H, np.array([c + (0, eps)]))[0] - c
    s = 1.0 / math.sqrt(abs(dx[0] * dy[1] - dx[1] * dy[0]))
    S = np.array([[s, 0, c[0] * (1 - s)], [0, s, c[1] * (1 - s)], [0, 0, 1]])
    return S @ H


def _apply_h(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, np.float64)
    q = p @ H[:2, :2].T + H[:2, 2]
    z = p @ H[2, :2] + H[2, 2]
    return q / z[:, None]


def _composite(
    dst: np.ndarray,
    bgr: np.ndarray,
    alpha: np.ndarray,
    x: int,
    y: int,
    dst_gloss: np.ndarray | None = None,
    gloss: np.ndarray | None = None,
) -> None:
    """Premultiplied ``over``: dst = dst * (1 - alpha) + bgr, clipped to dst. In place."""
    H, W = dst.shape[:2]
    h, w = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    sx, sy = x0 - x, y0 - y
    a = alpha[sy : sy + y1 - y0, sx : sx + x1 - x0]
    inv = cv2.subtract(255, a) if a.size else a
    roi = dst[y0:y1, x0:x1]
    cv2.multiply(roi, cv2.merge([inv, inv, inv]), dst=roi, scale=1 / 255)
    cv2.add(roi, bgr[sy : sy + y1 - y0, sx : sx + x1 - x0], dst=roi)
    if dst_gloss is not None and gloss is not None:
        groi = dst_gloss[y0:y1, x0:x1]
        cv2.multiply(groi, inv, dst=groi, scale=1 / 255)
        cv2.add(groi, gloss[sy : sy + y1 - y0, sx : sx + x1 - x0], dst=groi)


def _occluded_fraction(overlays: list[_Overlay], box: tuple[float, float, float, float]) -> float:
    """Share of an ortho-pixel box covered (alpha > 50%) by camera-fixed overlays."""
    x0, y0, x1, y1 = (int(math.floor(box[0])), int(math.floor(box[1])), int(math.ceil(box[2])), int(math.ceil(box[3])))
    area = max(1, (x1 - x0) * (y1 - y0))
    covered = 0
    for ov in overlays:
        h, w = ov.alpha.shape
        ix0, iy0, ix1, iy1 = max(x0, ov.x), max(y0, ov.y), min(x1, ov.x + w), min(y1, ov.y + h)
        if ix1 > ix0 and iy1 > iy0:
            covered += int(np.count_nonzero(ov.alpha[iy0 - ov.y : iy1 - ov.y, ix0 - ov.x : ix1 - ov.x] > 127))
    return min(1.0, covered / area)


def _premultiplied(bgr: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = cv2.merge([alpha, alpha, alpha])
    return cv2.multiply(bgr, a, scale=1 / 255), alpha


def _blob_sprite(u: float, v: float, rx: float, ry: float, angle: float, shade: float, opacity: float) -> Sprite:
    size_w, size_h = int(2 * max(rx, ry) + 6), int(2 * max(rx, ry) + 6)
    alpha = np.zeros((size_h, size_w), np.uint8)
    cv2.ellipse(alpha, (size_w // 2, size_h // 2), (max(1, int(rx)), max(1, int(ry))), angle, 0, 360, int(255 * opacity), -1, cv2.LINE_AA)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, min(rx, ry) / 3))
    bgr = np.full((size_h, size_w, 3), int(shade), np.uint8)
    bgr, alpha = _premultiplied(bgr, alpha)
    return Sprite(bgr, alpha, alpha * 0, int(u) - size_w // 2, int(v) - size_h // 2)


def _label_sprite(rng: np.random.Generator, u: float, v: float, w_px: float, h_px: float, angle: float) -> Sprite:
    """A paper label with a barcode and a few text lines, lying turned on the belt."""
    w, h = max(8, int(w_px)), max(6, int(h_px))
    paper = np.full((h, w, 3), (226, 232, 236), np.uint8)
    paper[:] = np.array([226, 232, 236]) * float(rng.uniform(0.85, 1.0))
    bars_x = int(w * 0.1)
    while bars_x < w * 0.9:
        bw = int(rng.integers(1, 4))
        if rng.random() < 0.55:
            paper[int(h * 0.15) : int(h * 0.6), bars_x : bars_x + bw] = 30
        bars_x += bw
    for line in range(2):
        y = int(h * (0.7 + 0.13 * line))
        x = int(w * 0.1)
        while x < w * 0.85:
            lw = int(rng.integers(2, 6))
            paper[y : y + max(1, h // 25), x : x + lw] = 60
            x += lw + 2
    diag = int(math.hypot(w, h)) + 4
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    M[:, 2] += (diag / 2 - w / 2, diag / 2 - h / 2)
    bgr = cv2.warpAffine(paper, M, (diag, diag), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(np.full((h, w), 255, np.uint8), M, (diag, diag), flags=cv2.INTER_LINEAR)
    bgr, alpha = _premultiplied(bgr, alpha)
    return Sprite(bgr, alpha, alpha // 6, int(u) - diag // 2, int(v) - diag // 2)


def _draw_glove(rng: np.random.Generator, from_top: bool, mm_per_px: float) -> _Overlay:
    """An operator's gloved hand, fingers pointing into the image; slightly out of focus."""
    k = 1.0 / mm_per_px * 1.15  # the hand is above the belt: a little larger than belt scale
    w, h = int(170 * k), int(230 * k)
    alpha = np.zeros((h, w), np.uint8)
    cx = w / 2
    # fingers at the bottom (pointing down), palm above, cuff at the top
    palm_c = (int(cx), int(h * 0.47))
    cv2.ellipse(alpha, palm_c, (int(42 * k), int(50 * k)), 0, 0, 360, 255, -1, cv2.LINE_AA)
    for i, (dx, length) in enumerate(((-27, 62), (-9, 75), (9, 72), (27, 58))):
        spread = float(rng.uniform(-6, 6)) * k
        top = (int(cx + dx * k), int(h * 0.55))
        tip = (int(cx + dx * k * 1.15 + spread), int(h * 0.55 + length * k))
        cv2.line(alpha, top, tip, 255, int(17 * k), cv2.LINE_AA)
    thumb_side = 1 if rng.random() < 0.5 else -1
    cv2.line(alpha, (int(cx + thumb_side * 35 * k), int(h * 0.45)), (int(cx + thumb_side * 62 * k), int(h * 0.62)), 255, int(20 * k), cv2.LINE_AA)
    cv2.rectangle(alpha, (int(cx - 45 * k), 0), (int(cx + 45 * k), int(h * 0.3)), 255, -1)
    palette = [(190, 115, 45), (45, 45, 50), (215, 215, 212), (150, 80, 120)]
    color = np.array(palette[int(rng.integers(len(palette)))], np.float32)
    shading = cv2.GaussianBlur(alpha.astype(np.float32) / 255, (0, 0), 10 * k)
    bgr = (color[None, None, :] * (0.55 + 0.45 * shading[..., None])).astype(np.float32)
    bgr[: int(h * 0.3)] *= 0.85  # cuff
    bgr = np.clip(bgr, 0, 255).astype(np.uint8)
    blur = max(1.0, 1.5 * k)
    alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    bgr = cv2.GaussianBlur(bgr, (0, 0), blur)
    if not from_top:
        alpha, bgr = alpha[::-1].copy(), bgr[::-1].copy()
    bgr, alpha = _premultiplied(bgr, alpha)
    return _Overlay(bgr, alpha, 0, 0)


def _draw_tote(rng: np.random.Generator, tote: _Tote, mm_per_px: float) -> _Overlay:
    """The side of a plastic tote on the neighbouring line (only its edge enters the image)."""
    h = int(max(tote.depth_px + 4, 120 / mm_per_px))
    w = tote.length_px
    palette = [(150, 90, 30), (60, 60, 64), (40, 120, 220), (90, 150, 60)]
    color = np.array(palette[int(rng.integers(len(palette)))], np.float32)
    bgr = np.empty((h, w, 3), np.float32)
    bgr[:] = color
    rib = max(2, int(40 / mm_per_px))
    for x in range(rib // 2, w, rib):
        bgr[:, x : x + max(1, int(3 / mm_per_px))] *= 0.8
    rim = max(2, int(6 / mm_per_px))
    rim_rows = slice(h - rim, h) if tote.from_top else slice(0, rim)  # the rim faces the belt
    bgr[rim_rows] = np.minimum(255, color * 1.3)
    alpha = np.full((h, w), 255, np.uint8)
    r = max(2, int(12 / mm_per_px))
    corner = np.zeros((r, r), np.uint8)
    cv2.circle(corner, (r, r), r, 255, -1, cv2.LINE_AA)
    inner = slice(h - r, h) if tote.from_top else slice(0, r)
    c = corner if not tote.from_top else corner[::-1]
    alpha[inner, :r] = c
    alpha[inner, w - r :] = c[:, ::-1]
    bgr8, alpha = _premultiplied(np.clip(bgr, 0, 255).astype(np.uint8), alpha)
    return _Overlay(bgr8, alpha, 0, 0)


def _draw_fixture(rng: np.random.Generator, resolution: tuple[int, int], mm_per_px: float, belt_width_mm: float) -> _Overlay:
    """A sensor bracket bolted over a rail: an arm from the image edge and a photo-eye at its end."""
    w, h = resolution
    from_top = bool(rng.random() < 0.5)
    arm_w = int(28 / mm_per_px)
    reach_mm = max(10.0, (h * mm_per_px - belt_width_mm) / 2 + 12)  # just past the belt edge
    arm_h = int(reach_mm / mm_per_px)
    sensor = int(22 / mm_per_px)
    sh = arm_h + sensor
    sw = max(arm_w, int(34 / mm_per_px))
    bgr = np.zeros((sh, sw, 3), np.uint8)
    alpha = np.zeros((sh, sw), np.uint8)
    x0 = (sw - arm_w) // 2
    bgr[:arm_h, x0 : x0 + arm_w] = (66, 64, 62)
    alpha[:arm_h, x0 : x0 + arm_w] = 255
    bgr[:arm_h, x0 : x0 + max(1, arm_w // 8)] = (110, 108, 106)
    centre = (sw // 2, arm_h + sensor // 2 - 2)
    cv2.circle(bgr, centre, sensor // 2, (40, 40, 44), -1, cv2.LINE_AA)
    cv2.circle(alpha, centre, sensor // 2, 255, -1, cv2.LINE_AA)
    cv2.circle(bgr, centre, max(2, sensor // 5), (30, 30, 160), -1, cv2.LINE_AA)
    cv2.circle(bgr, (sw // 2, max(3, arm_h // 4)), max(2, arm_w // 5), (150, 150, 150), -1, cv2.LINE_AA)
    if not from_top:
        bgr, alpha = bgr[::-1].copy(), alpha[::-1].copy()
    bgr, alpha = _premultiplied(bgr, alpha)
    x = int(rng.uniform(0.05, 0.95) * w) - sw // 2
    y = 0 if from_top else h - sh
    return _Overlay(bgr, alpha, x, y)
