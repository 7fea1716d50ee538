"""``inspect.surface``: scratches found by comparing each part, over many frames, with a golden reference.

A detector judges one frame at a time; a faint scratch on a busy surface (a board with traces, a
brushed plate) is lost in one frame's noise. This node looks at a part the way an inspector with a
golden sample does:

1. **Stack.** While a tracked part crosses the middle of the image (``zone_px``) with its whole box
   in view, its crop is registered onto the reference of its type (OpenCV's ECC, a homography: the
   part's turn on the belt and a tilted camera's foreshortening), its brightness fitted to the
   reference, and kept; up to ``frames`` crops. Their per-pixel median drops the sensor noise by
   about √n and removes what moves across the part (glare, a passing shadow).
2. **Compare.** The stack minus the reference, high-passed (lighting gradients and sheen go), in
   units of the reference's own per-pixel variation (learnt from many parts, plus an edge allowance
   for sub-pixel registration). The high-pass averages over the part's own steady surface only, so
   what differs from part to part (the belt seen through a hole, a component's shade) does not
   spill into its neighbourhood. Motion blur differs with the exposure; the reference is blurred
   along the travel by the amount that fits best. A part-wide noise level above the reference's
   scales the units down (a noisier camera raises no alarms).
3. **Components on their own.** What the part-wide comparison has to leave out because it moves
   from part to part (a chip placed with its own offset and turn, its pins, its body's shade) is
   compared in a window of its own: registered onto the component's own reference (by its shift,
   and by a turn and shift; of the two, the one that leaves less anomaly counts, so a long, plain
   feature whose turn is barely determined is not turned off its place), its shade, its pins'
   brightness and the light's slope fitted, and the rest in units of how much that varied over
   the taught parts. A scratch across a chip's pins shows there.
4. **Judge.** Pixels beyond ``z_seed`` grow into everything connected beyond ``z_low``; a region
   at least ``min_length_mm`` long (dust fibres are shorter) is a scratch, and so is one from
   ``short_line_mm`` that is strong (``short_line_strength``; fibres are faint): a scratch running
   into a hole is cut short there. Only the part's own surface counts: the reference's mask leaves
   out its outline and holes, and what varies from part to part but is too small to be a
   component (a pad, a via, a hole's rim).

From then on every finding of that part carries ``scratch`` (so ``vote.part`` counts it), with a
note such as ``"surface: 14 mm line at (-20, 8) mm"``. Findings pass through unchanged otherwise.
A chip that is missing or off its place differs from the reference too. When ``inspect.rules``
has flagged one of the part's components and the line lies mostly within components' windows,
the note ends ``", on a component the rules flag"`` and the finding carries
``scratch_on_flagged_component`` instead of ``scratch``: ``vote.part`` rejects the part for what
the rules named when their defect passes its vote, and for a scratch when it does not (a
component flagged in a few frames only must not hide a line the surface shows).

**Teaching** (``teach: true``): run the line over good parts (a few defective ones do no harm: the
reference is a median). The node keeps the crops of up to ``teach_parts`` parts per type and, at
the end of the stream, writes the reference file (``reference``): per part type the median image,
its variation and its mask, and its components (found as what varies from part to part, each with
its own reference and variation). ``lineguard surface show FILE`` draws it.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineguard.nodes.detection import candidate_paths
from lineguard.nodes.inspect_rules import MISALIGNED, MISSING
from lineguard.nodes.parts_model import SCRATCH_ON_FLAGGED_COMPONENT, FrameFindings, PartFindings
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort

SCRATCH = "scratch"
FORMAT = "lineguard.surface/3"
# /1: no weight map (the plain high-pass); /2: no component windows (components left out of the search)
_FORMATS_READ = ("lineguard.surface/1", "lineguard.surface/2", FORMAT)
_PAD_PX = 8  # the reference reaches this far beyond the part's box
_ECC = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-4)
_HP_SIGMA_PX = 5.0  # high-pass: what varies slower than this is lighting, not a scratch
_BLUR_LENGTHS = (1, 3, 5, 7, 9, 11)  # motion blur along the travel tried on the reference (px)
_IMAGES_KEPT = 24  # frames waiting for their findings (the detector and tracker lag the camera)
_PARTS_KEPT = 64  # per-part stacks (a part is in view for about a second)
_MIN_STACK = 3  # fewer crops than this judge nothing
_MASK_SIGMA = 3.0  # a pixel varying more than this x the part's median variation is left out
_WINDOW_MARGIN_PX = 8  # a component's window reaches this far beyond its varying patch
_WINDOW_BORDER_PX = 4  # a component is registered within this much of the stack around its window
_WINDOW_MAX_SHIFT_PX = 3.0  # a component registered further off than this (1.5 mm) did not register
_WINDOW_MAX_TURN_DEG = 4.0  # ... or turned further
_WINDOW_MIN_PX = 150  # a varying patch smaller than this (a pad, a via, a hole's rim) is no component


class ReferenceError(ValueError):
    """A reference file that cannot be used. The message names the file and what is wrong."""


@dataclass(frozen=True, eq=False)
class Component:
    """One component's window on the reference, with its own reference image and variation."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in reference pixels
    image: np.ndarray  # float32: the median of its windows, each registered on its own
    sigma: np.ndarray  # float32: per-pixel variation of what the fit leaves (see _fit_residual)


@dataclass(frozen=True, eq=False)
class Reference:
    """The golden image of one part type: median grey image, per-pixel variation, and where to look."""

    image: np.ndarray  # float32 H x W
    sigma: np.ndarray  # float32 H x W (grey levels, of the high-passed residual)
    mask: np.ndarray  # uint8 H x W: 255 where a scratch is looked for
    fit_mask: np.ndarray  # uint8 H x W: 255 on the part (used to register)
    parts: int  # how many parts it was learnt from
    # uint8 H x W: 255 on the part's own steady surface, what the high-pass averages over (None:
    # a reference file of format /1, the plain high-pass)
    weight: np.ndarray | None = None
    # Components placed with their own offset and turn (a chip, its pins), each compared on its
    # own: ``labels`` (uint8 H x W) marks each one's varying patch (1..N, 0 none) and
    # ``components`` holds, per label, its window and its own reference and variation. None: a
    # file of format /1 or /2, where components are left out of the search.
    labels: np.ndarray | None = None
    components: tuple[Component, ...] | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def save_references(path: str | Path, refs: Mapping[str, Reference], mm_per_px: float) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta = {"format": FORMAT, "mm_per_px": mm_per_px, "part_types": {}}
    for name, r in refs.items():
        arrays[f"{name}.image"] = r.image.astype(np.float16)  # 1/8 grey level at worst: plenty
        arrays[f"{name}.sigma"] = r.sigma.astype(np.float16)
        arrays[f"{name}.mask"] = r.mask
        arrays[f"{name}.fit_mask"] = r.fit_mask
        if r.weight is not None:
            arrays[f"{name}.weight"] = r.weight
        if r.labels is not None and r.components is not None:
            arrays[f"{name}.labels"] = r.labels
            arrays[f"{name}.boxes"] = np.array([c.box for c in r.components], np.int32).reshape(-1, 4)
            for i, c in enumerate(r.components):
                arrays[f"{name}.component{i}.image"] = c.image.astype(np.float16)
                arrays[f"{name}.component{i}.sigma"] = c.sigma.astype(np.float16)
        meta["part_types"][name] = {"parts": r.parts, "size_px": list(r.size)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)


def _components_in(z: Any, name: str) -> tuple[()] | tuple[np.ndarray, tuple[Component, ...]]:
    """A part type's component labels and components from an open reference file (none before /3)."""
    if f"{name}.labels" not in z.files:
        return ()
    boxes = z[f"{name}.boxes"].astype(int).tolist()
    comps = tuple(
        Component(tuple(box), z[f"{name}.component{i}.image"].astype(np.float32), z[f"{name}.component{i}.sigma"].astype(np.float32))
        for i, box in enumerate(boxes)
    )
    return z[f"{name}.labels"], comps


def load_references(path: str | Path) -> tuple[dict[str, Reference], dict[str, Any]]:
    """Read a reference file. A relative path is looked for like a model path (the current
    directory first, then the shipped ``models/``)."""
    tried = candidate_paths(path)
    p = next((c for c in tried if c.is_file()), None)
    if p is None:
        raise ReferenceError(f"{path}: no such reference file (looked for {', '.join(map(str, tried))}; teach one with teach: true over good parts)")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") not in _FORMATS_READ:
                raise ReferenceError(f"{p}: expected a {FORMAT} reference file, got format {meta.get('format')!r}")
            refs = {
                name: Reference(
                    z[f"{name}.image"].astype(np.float32),
                    z[f"{name}.sigma"].astype(np.float32),
                    z[f"{name}.mask"],
                    z[f"{name}.fit_mask"],
                    int(info["parts"]),
                    z[f"{name}.weight"] if f"{name}.weight" in z.files else None,
                    *_components_in(z, name),
                )
                for name, info in meta["part_types"].items()
            }
    except ReferenceError:
        raise
    except Exception as exc:  # not an npz, or keys missing
        raise ReferenceError(f"{p}: not a readable reference file ({type(exc).__name__}: {exc})") from exc
    if not refs:
        raise ReferenceError(f"{p}: the reference file holds no part type")
    return refs, meta


# -- image work (pure functions) --------------------------------------------------------------------


def crop_at(grey: np.ndarray, centre: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    return cv2.getRectSubPix(grey, size, centre).astype(np.float32)


def register(ref: np.ndarray, fit_mask: np.ndarray, crop: np.ndarray) -> np.ndarray | None:
    """``crop`` (same size as ``ref``, roughly centred) warped onto ``ref`` and fitted to its
    brightness; None when the registration does not converge.

    The warp is a homography: a flat part seen by a camera that is not square to the belt is
    foreshortened, and an affine warp leaves that as a sub-pixel misfit that grows towards the
    part's corners (on a camera tilted 3-6 degrees it showed as lines by a board's corner)."""
    warp = np.eye(3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(ref, crop, warp, cv2.MOTION_HOMOGRAPHY, _ECC, fit_mask, 3)
    except cv2.error:
        return None
    h, w = ref.shape
    aligned = cv2.warpPerspective(crop, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    on = fit_mask > 0
    a, b = np.polyfit(aligned[on], ref[on], 1)
    return aligned * np.float32(a) + np.float32(b)


def high_pass(x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """``x`` minus its local mean (a Gaussian of ``_HP_SIGMA_PX``): lighting gradients and sheen go.

    With ``weight`` (uint8, 255 = use) the local mean is taken over the weighted pixels only
    (normalised convolution) and the result is 0 elsewhere. What differs from part to part (the
    belt seen through a hole, a component's shade) then does not spill into its neighbourhood as
    a halo that would have to be left out of the search too."""
    if weight is None:
        return x - cv2.GaussianBlur(x, (0, 0), _HP_SIGMA_PX)
    w = (weight > 0).astype(np.float32)
    mean = cv2.GaussianBlur(x * w, (0, 0), _HP_SIGMA_PX) / np.maximum(cv2.GaussianBlur(w, (0, 0), _HP_SIGMA_PX), 1e-3)
    return np.where(w > 0, x - mean, 0).astype(np.float32)


def _steady(sigma: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Where ``sigma`` stays under _MASK_SIGMA x its median over ``region`` (uint8, eroded, so
    the neighbours of what varies are left out too)."""
    steady = ((sigma < _MASK_SIGMA * np.median(sigma[region > 0])) * 255).astype(np.uint8)
    return cv2.erode(steady, np.ones((5, 5), np.uint8))


def _edge_allowance(sigma: np.ndarray, image: np.ndarray, edge_px: float) -> np.ndarray:
    """``sigma`` plus what a sub-pixel registration error of ``edge_px`` leaves at ``image``'s edges."""
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3) / 8
    grad = cv2.dilate(np.hypot(gx, gy), np.ones((3, 3), np.uint8))
    return np.sqrt(sigma**2 + (edge_px * grad) ** 2).astype(np.float32)


def edge_sigma(ref: Reference, edge_px: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference's variation plus an allowance where it has edges (a sub-pixel registration
    error shows there as a residual of ``edge_px`` x the gradient), and the search mask without
    the places that vary most (strong edges, the belt through a hole, a component's print)."""
    sigma = _edge_allowance(ref.sigma, ref.image, edge_px)
    return sigma, _steady(sigma, ref.fit_mask) & ref.mask


# -- components: registered on their own ------------------------------------------------------------
#
# A chip is placed with its own small offset and turn, and its body's shade differs from part to
# part, so the part-wide comparison has to leave it out (with its pins, a band round it). A scratch
# across a chip and its pins is then seen nowhere. Each such component gets a window of its own:
# the window is registered onto the component's own reference (a rigid turn and shift), the
# component's shade, its pins' brightness and the light's slope across it are fitted, and what is
# left is compared with how much that varied over the taught parts.


@dataclass(frozen=True, eq=False)
class Window:
    """One component, ready to judge with (see :func:`component_windows`)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in reference pixels
    image: np.ndarray  # float32: the component's own reference
    fit: np.ndarray  # uint8: the component's varying patch (what is registered)
    sigma: np.ndarray  # float32: variation after the fit, with the edge allowance
    search: np.ndarray  # bool: where the window's comparison stands in for the part-wide one
    designs: tuple[np.ndarray, ...]  # the fit's design (see _design) per _BLUR_LENGTHS entry


def _component_labels(fit: np.ndarray, weight: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """What varies from part to part on the part's own surface, slightly grown, as patches labelled
    1..N (uint8; the largest 255 if there are more); patches under ``_WINDOW_MIN_PX`` get none."""
    varying = ((fit > 0) & (weight == 0) & (holes == 0)).astype(np.uint8) * 255
    varying = cv2.dilate(varying, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(varying, connectivity=8)
    big = sorted((j for j in range(1, n) if stats[j, cv2.CC_STAT_AREA] >= _WINDOW_MIN_PX), key=lambda j: -stats[j, cv2.CC_STAT_AREA])[:255]
    lut = np.zeros(n, np.uint8)
    for i, j in enumerate(sorted(big), start=1):
        lut[j] = i
    return lut[labels]


def _component_box(labels: np.ndarray, i: int, fit: np.ndarray) -> tuple[int, int, int, int]:
    """Patch ``i``'s bounding box grown by the margin, on the part."""
    ys, xs = np.nonzero(labels == i)
    fy, fx = np.nonzero(fit)
    m = _WINDOW_MARGIN_PX
    return (
        int(max(fx.min(), xs.min() - m)),
        int(max(fy.min(), ys.min() - m)),
        int(min(fx.max() + 1, xs.max() + 1 + m)),
        int(min(fy.max() + 1, ys.max() + 1 + m)),
    )


def _enclosed(patch: np.ndarray) -> np.ndarray:
    """Where ``patch`` (uint8, 255) lies or what it encloses: not reachable from the border
    without crossing it."""
    h, w = patch.shape
    outside = np.pad((patch == 0).astype(np.uint8), 1, constant_values=1)
    flood = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(outside, flood, (0, 0), 2, flags=4)
    return outside[1:-1, 1:-1] != 2


def _nearest_component(labels: np.ndarray) -> np.ndarray:
    """Per pixel, the label of the nearest component patch (where windows overlap, a pixel is
    judged by the component it lies nearest to)."""
    _, nearest = cv2.distanceTransformWithLabels((labels == 0).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP)
    lut = np.zeros(int(nearest.max()) + 1, np.uint8)
    on = labels > 0
    lut[nearest[on]] = labels[on]
    return lut[nearest]


def _window_registrations(own: np.ndarray, fit: np.ndarray, around: np.ndarray) -> list[np.ndarray]:
    """A component shifted onto its own reference, and turned and shifted (the turn searched from
    that shift), each as far as a placement can be off (none: no convergence, or too far off).
    ``around`` is the window with ``_WINDOW_BORDER_PX`` more of the stack on every side, so that
    what a shift brings into the window is the part, not a repeated edge.

    Both are kept because on a long, narrow feature (a board's connector) the turn is barely
    determined: its search can settle degrees off where a shift alone fits, and the feature's
    straight edge is then left in the comparison as a line."""
    b = _WINDOW_BORDER_PX
    h, w = own.shape
    inner = np.ascontiguousarray(around[b : b + h, b : b + w])
    cx, cy = (w - 1) / 2, (h - 1) / 2  # the window's centre: how far it moved is the placement's offset
    out = []
    warp = np.eye(2, 3, dtype=np.float32)
    for motion in (cv2.MOTION_TRANSLATION, cv2.MOTION_EUCLIDEAN):
        try:
            _, warp = cv2.findTransformECC(own, inner, warp.copy(), motion, _ECC, fit, 1)
        except cv2.error:
            continue
        turn = math.degrees(math.atan2(float(warp[1, 0]), float(warp[0, 0])))
        # the warp turns about the window's corner, so its shift is read at the centre
        dx = float(warp[0, 0] * cx + warp[0, 1] * cy + warp[0, 2]) - cx
        dy = float(warp[1, 0] * cx + warp[1, 1] * cy + warp[1, 2]) - cy
        if math.hypot(dx, dy) > _WINDOW_MAX_SHIFT_PX or abs(turn) > _WINDOW_MAX_TURN_DEG:
            continue
        read = warp.copy()
        read[:, 2] += b  # the same turn and shift, read from the wider crop
        out.append(cv2.warpAffine(around, read, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE))
    return out


def _register_window(own: np.ndarray, fit: np.ndarray, around: np.ndarray, design: np.ndarray) -> np.ndarray | None:
    """Of :func:`_window_registrations`, the one the fit (``design``, see :func:`_design`) leaves
    least of on the component's patch ``fit`` (teaching; None: neither registered)."""
    on = fit.reshape(-1) > 0
    candidates = _window_registrations(own, fit, around)
    left = [float(np.mean(np.square(_fit_residual(a, design).reshape(-1)[on]))) for a in candidates]
    return candidates[int(np.argmin(left))] if candidates else None


def _around(stack: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The window ``box`` of ``stack`` with ``_WINDOW_BORDER_PX`` more on every side (edges repeated
    where the stack ends)."""
    b = _WINDOW_BORDER_PX
    x0, y0, x1, y1 = box
    padded = cv2.copyMakeBorder(stack[max(0, y0 - b) : y1 + b, max(0, x0 - b) : x1 + b], max(0, b - y0), 0, max(0, b - x0), 0, cv2.BORDER_REPLICATE)
    h, w = y1 - y0 + 2 * b, x1 - x0 + 2 * b
    return cv2.copyMakeBorder(padded, 0, max(0, h - padded.shape[0]), 0, max(0, w - padded.shape[1]), cv2.BORDER_REPLICATE)[:h, :w]


def _design(own: np.ndarray) -> np.ndarray:
    """What a component's window is fitted with (pixels x 6): the component's reference (gain),
    a constant (offset), the light's slope across it, and its dark (a chip's body) and bright
    (its pins) parts, each free to shade differently."""
    h, w = own.shape
    lo, mid, hi = np.percentile(own, (5, 50, 95))
    dark = cv2.GaussianBlur((own < (lo + mid) / 2).astype(np.float32), (0, 0), 0.7)
    bright = cv2.GaussianBlur((own > (mid + hi) / 2).astype(np.float32), (0, 0), 0.7)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([own, np.ones_like(own), xs / w - 0.5, ys / h - 0.5, dark, bright], axis=-1).reshape(-1, 6)


def _designs(own: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`_design` of the component's reference blurred along the travel by each of
    ``_BLUR_LENGTHS`` (what a window is judged with)."""
    return tuple(_design(cv2.blur(own, (length, 1)) if length > 1 else own) for length in _BLUR_LENGTHS)


def _fit_residual(aligned: np.ndarray, design: np.ndarray) -> np.ndarray:
    """``aligned`` minus its best fit by ``design`` (see :func:`_design`). Two rounds of least
    squares, the second without the pixels the first fitted worst (a scratch)."""
    y = aligned.reshape(-1).astype(np.float64)
    a = design.astype(np.float64)
    keep = np.ones(len(y))
    for _ in range(2):
        weighted = a * keep[:, None]
        coef = np.linalg.lstsq(weighted.T @ a, weighted.T @ y, rcond=None)[0]  # the normal equations: 6 x 6
        residual = y - a @ coef
        keep = (np.abs(residual) < 3 * 1.4826 * float(np.median(np.abs(residual))) + 1.0).astype(np.float64)
    return residual.reshape(aligned.shape).astype(np.float32)


def component_windows(ref: Reference, edge_px: float, mask: np.ndarray) -> tuple[Window, ...]:
    """The reference's components, each with its variation plus the edge allowance, and where it
    is searched: what the part-wide ``mask`` leaves out, nearer to it than to any other
    component, off the holes and clear of its window's edge."""
    if ref.labels is None or not ref.components or ref.weight is None:
        return ()
    rim = cv2.dilate(_holes(ref.image), np.ones((5, 5), np.uint8))
    nearest = _nearest_component(ref.labels)
    out = []
    for i, comp in enumerate(ref.components, start=1):
        x0, y0, x1, y1 = comp.box
        sigma = _edge_allowance(comp.sigma, comp.image, edge_px)
        patch = (ref.labels[y0:y1, x0:x1] == i).astype(np.uint8) * 255
        # a chip's body is as dark as the belt seen through a hole; what the patch (its pins)
        # encloses is the component, not a hole
        off_holes = (rim[y0:y1, x0:x1] == 0) | _enclosed(patch)
        inside = (ref.fit_mask[y0:y1, x0:x1] > 0) & off_holes & (nearest[y0:y1, x0:x1] == i)
        # no steadiness cut as on the part-wide map: a scratch shows best across the pins, whose
        # edges vary most; their variation is in sigma, so z stays fair there
        search = inside & (mask[y0:y1, x0:x1] == 0)
        band = max(_BLUR_LENGTHS) // 2  # the blurred reference is not right within this of the window's edge
        search[:band], search[-band:], search[:, :band], search[:, -band:] = False, False, False, False
        if not search.any():
            continue
        out.append(Window(comp.box, comp.image, patch, sigma, search, _designs(comp.image)))
    return tuple(out)


def _window_z(stack: np.ndarray, win: Window, z_low: float) -> np.ndarray | None:
    """The component's comparison, in units of its variation (None: it did not register). The
    motion blur is fitted on the component alone (the part-wide choice is made on the board). Of
    its two registrations (see :func:`_window_registrations`) the one that leaves less beyond
    ``z_low`` counts: a scratch shows on both, a misfit edge on only one."""
    best: tuple[float, np.ndarray] | None = None
    for aligned in _window_registrations(win.image, win.fit, _around(stack, win.box)):
        fitted: tuple[float, np.ndarray] | None = None
        for design in win.designs:  # one per motion blur length
            z = _fit_residual(aligned, design) / win.sigma
            level = float(np.median(np.abs(z[win.search])))
            if fitted is None or level < fitted[0]:
                fitted = (level, z)
        assert fitted is not None
        level, z = fitted
        z = z / max(1.0, level / 0.6745)  # a noisier part: as in judge()
        excess = float(np.sum(np.maximum(np.abs(z[win.search]) - z_low, 0.0)))
        if best is None or excess < best[0]:
            best = (excess, z)
    return None if best is None else best[1]


@dataclass(frozen=True)
class ScratchRule:
    """Which anomaly is a scratch: one at least ``min_length_mm`` long, or a shorter one, from
    ``short_length_mm``, that stands out strongly (``short_strength``: its pixels' z summed, in
    sigma x mm²). Dust fibres are short and faint; a scratch cut short by what the check cannot
    look at (a chip, a hole) can still be strong. ``short_length_mm`` 0 turns the second way off."""

    min_length_mm: float
    short_length_mm: float = 0.0
    short_strength: float = 0.0

    def is_scratch(self, length_mm: float, strength: float) -> bool:
        if length_mm >= self.min_length_mm:
            return True
        return 0 < self.short_length_mm <= length_mm and strength >= self.short_strength


@dataclass(frozen=True)
class SurfaceResult:
    length_mm: float  # the reported anomaly's length (0: none): a scratch if any (the longest), else the longest
    centre_px: tuple[float, float]  # where it is, in reference pixels
    peak_z: float
    blur_px: int
    noise_scale: float
    frames: int
    strength: float = 0.0  # the reported anomaly's z summed over its pixels (sigma x mm²)
    scratch: bool = False  # the reported anomaly is a scratch by the rule judge() was given
    unregistered: int = 0  # component windows that did not register: on this part they were not looked at
    on_component: bool = False  # the reported anomaly lies mostly within components' windows


def judge(
    stack: np.ndarray,
    ref: Reference,
    sigma: np.ndarray,
    mask: np.ndarray,
    mm_per_px: float,
    z_seed: float,
    z_low: float,
    rule: ScratchRule | None = None,
    windows: tuple[Window, ...] = (),
) -> tuple[SurfaceResult, np.ndarray]:
    """Compare a part's median stack with its reference (``sigma`` and ``mask`` from
    :func:`edge_sigma`, ``windows`` from :func:`component_windows`); the anomaly that is most a
    scratch by ``rule`` (without one: the longest) and the z map."""
    best: tuple[float, np.ndarray, int] | None = None
    on = mask > 0
    for length in _BLUR_LENGTHS:
        blurred = cv2.blur(ref.image, (length, 1)) if length > 1 else ref.image
        z = high_pass(stack - blurred, ref.weight) / sigma
        level = float(np.median(np.abs(z[on])))
        if best is None or level < best[0]:
            best = (level, z, length)
    assert best is not None
    level, z, blur = best
    scale = max(1.0, level / 0.6745)  # robust sigma of z: 1 on a part as quiet as the reference's
    z = z / scale
    z[~on] = 0
    unregistered = 0
    for win in windows:  # the components, each on its own: a scratch running onto one goes on there
        zw = _window_z(stack, win, z_low)
        if zw is None:
            unregistered += 1
            continue
        x0, y0, x1, y1 = win.box
        z[y0:y1, x0:x1][win.search] = zw[win.search]
    strength = np.abs(z)
    low = cv2.dilate((strength > z_low).astype(np.uint8), np.ones((3, 3), np.uint8))  # bridge one-pixel gaps
    n, labels, stats, _ = cv2.connectedComponentsWithStats(low, connectivity=8)
    seeds = np.unique(labels[strength > z_seed])
    found = SurfaceResult(0.0, (0.0, 0.0), round(float(strength.max(initial=0.0)), 2), blur, round(scale, 3), 0, unregistered=unregistered)
    where: tuple[np.ndarray, np.ndarray] | None = None  # the reported anomaly's pixels
    for j in seeds:
        if j == 0 or stats[j, cv2.CC_STAT_AREA] < 4:
            continue
        ys, xs = np.nonzero(labels == j)
        (cx, cy), (w, h), _ = cv2.minAreaRect(np.stack([xs, ys], axis=1).astype(np.float32))
        length = max(w, h) * mm_per_px
        total = float(strength[ys, xs].sum()) * mm_per_px**2
        scratch = rule is not None and rule.is_scratch(length, total)
        if (scratch, length) > (found.scratch, found.length_mm):
            found = replace(found, length_mm=round(length, 1), centre_px=(round(cx, 1), round(cy, 1)), strength=round(total, 1), scratch=scratch)
            where = (xs, ys)
    if where is not None and windows:
        found = replace(found, on_component=_mostly_within(where, [w.box for w in windows]))
    return found, z


def _mostly_within(pixels: tuple[np.ndarray, np.ndarray], boxes: list[tuple[int, int, int, int]]) -> bool:
    """Whether at least half of ``pixels`` (xs, ys) lie within the ``boxes`` (x0, y0, x1, y1)."""
    xs, ys = pixels
    inside = np.zeros(len(xs), bool)
    for x0, y0, x1, y1 in boxes:
        inside |= (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return bool(inside.mean() >= 0.5)


def _holes(ref: np.ndarray) -> np.ndarray:
    """Where the reference looks like the belt around the part (its border band): a hole through
    the part. What shows there (a label on the belt, grime) is not the part's surface. Returns a
    uint8 mask (255 = belt-like)."""
    ring = np.ones(ref.shape, bool)
    ring[_PAD_PX // 2 : -_PAD_PX // 2, _PAD_PX // 2 : -_PAD_PX // 2] = False
    level = float(np.median(ref[ring]))
    surface = float(np.median(ref[~ring]))
    # nearer the belt's grey than half way to the part's: on a part much like the belt, nothing
    like = (np.abs(ref - level) < abs(surface - level) / 2).astype(np.uint8) * 255
    return cv2.morphologyEx(like, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))  # holes, not single dark pixels


def _spread(residuals: list[np.ndarray]) -> np.ndarray:
    """Per-pixel variation of many parts' residuals (robust: 1.4826 MAD), smoothed, with a floor."""
    res = np.array(residuals)
    sigma = 1.4826 * np.median(np.abs(res - np.median(res, axis=0)), axis=0)
    return (cv2.GaussianBlur(sigma.astype(np.float32), (0, 0), 2) + 0.5).astype(np.float32)


def teach_reference(crops_per_part: list[list[np.ndarray]], mask_margin_px: int, rounds: int = 3) -> Reference:
    """A reference from the crops of many parts of one type (each part: its crops, same size)."""
    crops_per_part = [[c.astype(np.float32) for c in crops] for crops in crops_per_part if crops]
    mids = [c[len(c) // 2] for c in crops_per_part]
    h, w = mids[0].shape
    ref = np.median(mids, axis=0).astype(np.float32)
    # registration looks at the part only, not at the belt around it (a different patch under every part)
    fit = np.zeros((h, w), np.uint8)
    m = _PAD_PX + mask_margin_px
    fit[m : h - m, m : w - m] = 255
    for _ in range(rounds):
        aligned = [a for a in (register(ref, fit, c) for c in mids) if a is not None]
        ref = np.median(aligned, axis=0).astype(np.float32)
    stacks = []  # each part's median, registered onto the reference
    for crops in crops_per_part:
        aligned = [a for a in (register(ref, fit, c) for c in crops) if a is not None]
        if aligned:
            stacks.append(np.median(aligned, axis=0).astype(np.float32))
    diffs = [s - ref for s in stacks]
    # The part's own surface: no holes. What still varies much from part to part there (a
    # component's shade, a bolt head's turn) is left out of the high-pass's mean too, so that it
    # does not spill into its neighbours; the variation is then learnt again without it.
    holes = _holes(ref)
    surface = fit & ~holes
    first = _spread([high_pass(d, surface) for d in diffs])
    weight = np.where(first < _MASK_SIGMA * np.median(first[surface > 0]), surface, 0).astype(np.uint8)
    sigma = np.where(weight > 0, _spread([high_pass(d, weight) for d in diffs]), first).astype(np.float32)
    # searched: the weighted surface, away from what varies (eroded), and from a hole's rim
    steady = _steady(np.where(weight > 0, sigma, np.float32(1e3)), fit)
    mask = steady & weight & ~cv2.dilate(holes, np.ones((5, 5), np.uint8))
    labels, components = _teach_components(stacks, ref, fit, _component_labels(fit, weight, holes), rounds)
    return Reference(ref, sigma, mask, fit, len(crops_per_part), weight, labels, components)


def _teach_components(stacks: list[np.ndarray], ref: np.ndarray, fit: np.ndarray, labels: np.ndarray, rounds: int) -> tuple[np.ndarray, tuple[Component, ...]]:
    """Each component's own reference (the median of its windows, each registered on its own onto
    it) and the variation left after the fit (see :func:`_fit_residual`). A component that does
    not register on most parts is dropped (left out of the search, as before components were
    looked at); the labels are renumbered to match."""
    kept: list[Component] = []
    lut = np.zeros(int(labels.max()) + 1, np.uint8)
    for i in range(1, len(lut)):
        x0, y0, x1, y1 = box = _component_box(labels, i, fit)
        own, patch = ref[y0:y1, x0:x1], (labels[y0:y1, x0:x1] == i).astype(np.uint8) * 255
        aligned: list[np.ndarray] = []
        for r in range(rounds + 1):  # the last round: registered onto the final own reference
            design = _design(own)
            aligned = [a for a in (_register_window(own, patch, _around(s, box), design) for s in stacks) if a is not None]
            if r < rounds and aligned:
                own = np.median(aligned, axis=0).astype(np.float32)
        if len(aligned) >= max(3, len(stacks) // 2):
            design = _design(own)
            kept.append(Component(box, own, _spread([_fit_residual(a, design) for a in aligned])))
            lut[i] = len(kept)
    return lut[labels], tuple(kept)


# -- the node ---------------------------------------------------------------------------------------


@dataclass
class _Stack:
    part_type: str
    crops: list[np.ndarray] = field(default_factory=list)
    last_x: float = -math.inf  # image column of the last stacked crop
    result: SurfaceResult | None = None
    note: str = ""  # set when the result is a scratch
    component_flagged: bool = False  # inspect.rules found one of its components missing or misaligned
    counted_as_component: bool = False


class SurfaceInspector(Node):
    """Finds scratches on each part by stacking its frames and comparing them with a golden reference.

    Sits between ``inspect.rules`` and ``vote.part``: findings in, the same findings out, with
    ``scratch`` added to every later finding of a part whose surface shows a line at least
    ``min_length_mm`` long. Needs the camera's frames too (``image``). How it works, and how to
    teach the reference (``teach: true``): see the module's documentation.

    Example:
        surf:
          type: inspect.surface
          params: {reference: models/sim-v8/surface.npz}
          in: {findings: insp.findings, image: cam.image}
    """

    type_name = "inspect.surface"
    version = 1
    inputs = {
        "findings": InPort("part_findings", queue=8),
        "image": InPort("image", queue=_IMAGES_KEPT, policy="drop_oldest"),
    }
    outputs = {"findings": OutPort("part_findings", "the inspector's findings, with scratch added where the surface shows one")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["reference"],
        "properties": {
            "reference": {"type": "string", "description": "Reference file (.npz): read, or written when teach is true."},
            "teach": {"type": "boolean", "default": False, "description": "Learn the reference from this run's parts and write it at the end; findings pass through unchanged."},
            "teach_parts": {"type": "integer", "minimum": 5, "default": 60, "description": "Parts per type a reference is learnt from."},
            "frames": {"type": "integer", "minimum": _MIN_STACK, "default": 12, "description": "Crops stacked per part before it is judged."},
            "zone_px": {
                "type": "array",
                "items": {"type": "number", "minimum": 0},
                "minItems": 2,
                "maxItems": 2,
                "default": [320, 960],
                "description": "Image columns [x0, x1] the part's centre must lie between for a crop to be stacked (away from the lens' edges).",
            },
            "z_seed": {"type": "number", "exclusiveMinimum": 0, "default": 4.5, "description": "A scratch needs pixels this many sigmas off the reference."},
            "z_low": {"type": "number", "exclusiveMinimum": 0, "default": 3.0, "description": "...and grows over connected pixels beyond this."},
            "min_length_mm": {"type": "number", "exclusiveMinimum": 0, "default": 10.0, "description": "Shorter anomalies (dust, fibres) are not scratches..."},
            "short_line_mm": {
                "type": "number",
                "minimum": 0,
                "default": 5.0,
                "description": "...unless at least this long and strong (short_line_strength): a scratch cut short by a chip or a hole, where the check does not look. 0 = length alone decides.",
            },
            "short_line_strength": {
                "type": "number",
                "minimum": 0,
                "default": 120.0,
                "description": "How strong such a shorter line must be: its z summed over its pixels, in sigma x mm² (a 5 mm line 1.5 mm wide at 16 sigma is 120). Dust fibres are faint.",
            },
            "edge_px": {"type": "number", "minimum": 0, "default": 0.3, "description": "Registration error allowed at the reference's edges (px)."},
            "step_px": {"type": "number", "minimum": 0, "default": 40, "description": "A crop is stacked when the part has moved at least this far since the last one: crops from across the zone see the part under different light and glare."},
            "mask_margin_mm": {"type": "number", "minimum": 0, "default": 8.0, "description": "Teaching: the band inside the part's outline left out of the search (something lying next to the part, or its edge on a tilted camera, shows there)."},
        },
    }

    @classmethod
    def check_params(cls, params, line):
        problems = []
        zone = params["zone_px"]
        if zone[1] <= zone[0]:
            problems.append(("zone_px", f"expected [x0, x1] with x0 < x1, got {list(zone)}"))
        if params["z_low"] > params["z_seed"]:
            problems.append(("z_low", f"expected at most z_seed ({params['z_seed']}), got {params['z_low']}"))
        if not params["teach"]:
            try:
                _, meta = load_references(params["reference"])
            except ReferenceError as exc:
                problems.append(("reference", str(exc)))
            else:
                mm = float(line["mm_per_px"])
                if abs(meta["mm_per_px"] - mm) > 0.02 * mm:
                    problems.append(("reference", f"{params['reference']}: taught at {meta['mm_per_px']:g} mm/px, but the line's mm_per_px is {mm:g}; teach it again at this scale"))
        return problems

    async def open(self) -> None:
        p = self.params
        self.mm_per_px = float(self.ctx.line["mm_per_px"])
        self.images: OrderedDict[int, np.ndarray] = OrderedDict()
        self.stacks: OrderedDict[int, _Stack] = OrderedDict()
        self.refs: dict[str, Reference] = {}
        self.search: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per part type: sigma with the edge allowance, search mask
        self.windows: dict[str, tuple[Window, ...]] = {}  # per part type: its components' windows
        self.taught: dict[str, list[list[np.ndarray]]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}  # teaching: crop size per part type
        self.unknown_types: set[str] = set()
        if not p["teach"]:
            self.refs, _ = load_references(p["reference"])
            self.search = {name: edge_sigma(r, p["edge_px"]) for name, r in self.refs.items()}
            self.windows = {name: component_windows(r, p["edge_px"], self.search[name][1]) for name, r in self.refs.items()}
            self.rule = ScratchRule(p["min_length_mm"], p["short_line_mm"], p["short_line_strength"])
            self.ctx.log.info("surface references for %s from %s", ", ".join(f"{n} ({r.parts} parts)" for n, r in self.refs.items()), p["reference"])

    async def process(self, port: str, envelope: Envelope) -> None:
        if port == "image":
            image = envelope.payload
            self.images[envelope.frame_id] = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
            while len(self.images) > _IMAGES_KEPT:
                self.images.popitem(last=False)
            return
        frame: FrameFindings = envelope.payload
        grey = self.images.get(envelope.frame_id)
        if grey is None:
            self.ctx.count("surface_frame_missing")
        else:
            await self.ctx.clock.run_in_thread(self._stack_frame, frame, grey)
        parts = tuple(self._with_result(f) for f in frame.parts)
        for tid in frame.ended:
            stack = self.stacks.pop(tid, None)
            if stack is not None and stack.result is None and not self.params["teach"]:
                self.ctx.count("surface_unjudged")  # never whole in the zone long enough: the detector alone judged it
        await self.ctx.emit("findings", envelope.derive(FrameFindings(frame.image_hw, parts, frame.ended)))

    async def flush(self) -> None:
        if not self.params["teach"]:
            return
        refs = {}
        margin = max(1, round(self.params["mask_margin_mm"] / self.mm_per_px))
        for name, parts in self.taught.items():
            if len(parts) < 5:
                self.ctx.log.warning("surface teaching: only %d %s parts seen (need 5); no reference for it", len(parts), name)
                continue
            # in the loop's own thread: a teaching run is not inspecting, and a long computation
            # in a worker would let a simulated clock run ahead of it
            refs[name] = teach_reference(parts, margin)
        if not refs:
            raise RuntimeError(f"surface teaching saw too few whole parts to write {self.params['reference']}")
        save_references(self.params["reference"], refs, self.mm_per_px)
        self.ctx.log.info("surface reference written to %s: %s", self.params["reference"], ", ".join(f"{n} ({r.parts} parts)" for n, r in refs.items()))

    # -- helpers -------------------------------------------------------------------------------------

    def _stack_frame(self, frame: FrameFindings, grey: np.ndarray) -> None:
        p = self.params
        x0, x1 = p["zone_px"]
        for f in frame.parts:
            t = f.track
            bx0, by0, bx1, by1 = t.box_xyxy
            if not (t.in_view and x0 <= t.centre_x_px <= x1):  # in_view: the whole box, clear of the image edge
                continue
            if p["teach"]:
                self._teach(t.track_id, t.part_type, grey, t.box_xyxy)
                continue
            ref = self.refs.get(t.part_type)
            if ref is None:
                if t.part_type not in self.unknown_types:
                    self.unknown_types.add(t.part_type)
                    self.ctx.log.warning("no surface reference for part type %r in %s: its surface is not checked (teach one)", t.part_type, p["reference"])
                self.ctx.count("surface_no_reference")
                continue
            stack = self._stack(t.track_id, t.part_type)
            if stack.result is not None or stack.part_type != t.part_type or t.centre_x_px - stack.last_x < p["step_px"]:
                continue
            stack.last_x = t.centre_x_px
            centre = ((bx0 + bx1) / 2, (by0 + by1) / 2)
            aligned = register(ref.image, ref.fit_mask, crop_at(grey, centre, ref.size))
            if aligned is None:
                self.ctx.count("surface_not_registered")
                continue
            stack.crops.append(aligned)
            if len(stack.crops) >= p["frames"]:
                self._judge(stack)
        if p["teach"]:
            return
        # a part leaving the zone before its stack is full is judged on what it has
        for f in frame.parts:
            stack = self.stacks.get(f.track.track_id)
            if stack is not None and stack.result is None and f.track.centre_x_px > x1 and len(stack.crops) >= _MIN_STACK:
                self._judge(stack)

    def _stack(self, track_id: int, part_type: str) -> _Stack:
        stack = self.stacks.get(track_id)
        if stack is None:
            stack = self.stacks[track_id] = _Stack(part_type)
            while len(self.stacks) > _PARTS_KEPT:
                self.stacks.popitem(last=False)
        return stack

    def _judge(self, stack: _Stack) -> None:
        p = self.params
        ref = self.refs[stack.part_type]
        sigma, mask = self.search[stack.part_type]
        result, _ = judge(np.median(stack.crops, axis=0), ref, sigma, mask, self.mm_per_px, p["z_seed"], p["z_low"], self.rule, self.windows[stack.part_type])
        stack.result = replace(result, frames=len(stack.crops))
        stack.crops = []  # judged: the crops are no longer needed
        self.ctx.count("surface_judged")
        if result.unregistered:  # a component not looked at on this part: counted, so a line can see how often
            self.ctx.count("surface_component_not_registered", result.unregistered)
        if result.scratch:
            h, w = ref.image.shape
            x_mm = (result.centre_px[0] - w / 2) * self.mm_per_px
            y_mm = (result.centre_px[1] - h / 2) * self.mm_per_px
            kind = "line" if result.length_mm >= p["min_length_mm"] else "strong line"  # shorter, but it stands out
            stack.note = f"surface: {result.length_mm:.0f} mm {kind} at ({x_mm:.0f}, {y_mm:.0f}) mm"
            self.ctx.count("surface_scratch")

    def _with_result(self, f: PartFindings) -> PartFindings:
        flagged = bool(f.defects.get(MISSING) or f.defects.get(MISALIGNED))
        stack = self.stacks.get(f.track.track_id)
        if stack is None and flagged and not self.params["teach"]:
            stack = self._stack(f.track.track_id, f.track.part_type)  # remembered until its surface is judged
        if stack is None:
            return f
        stack.component_flagged |= flagged
        if stack.result is None or not stack.note:
            return f
        kind, note = SCRATCH, stack.note
        if stack.component_flagged and stack.result.on_component:
            # a chip missing or off its place differs from the reference too: if the rules' defect
            # holds, a scratch would only be a second name for it; if it does not (flagged in a
            # few frames), the line is a scratch. vote.part decides which.
            if not stack.counted_as_component:
                stack.counted_as_component = True
                self.ctx.count("surface_on_flagged_component")
            kind, note = SCRATCH_ON_FLAGGED_COMPONENT, f"{stack.note}, on a component the rules flag"
        conf = min(1.0, 0.5 + stack.result.length_mm / (4 * self.params["min_length_mm"]))
        defects = dict(f.defects)
        defects[kind] = max(defects.get(kind, 0.0), conf)
        judged = f.judged if kind in f.judged else (*f.judged, kind)
        notes = f.notes if note in f.notes else (*f.notes, note)
        return replace(f, defects=defects, judged=judged, notes=notes)

    def _teach(self, track_id: int, part_type: str, grey: np.ndarray, box: tuple[float, float, float, float]) -> None:
        parts = self.taught.setdefault(part_type, [])
        if part_type not in self.sizes:
            bw, bh = box[2] - box[0], box[3] - box[1]
            self.sizes[part_type] = (int(math.ceil(bw)) + 2 * _PAD_PX, int(math.ceil(bh)) + 2 * _PAD_PX)
        stack = self._stack(track_id, part_type)
        if not stack.crops:
            if len(parts) >= self.params["teach_parts"]:
                return
            parts.append(stack.crops)  # the list fills as the part crosses the zone
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        if len(stack.crops) < self.params["frames"] and centre[0] - stack.last_x >= self.params["step_px"]:
            stack.last_x = centre[0]
            stack.crops.append(cv2.getRectSubPix(grey, self.sizes[part_type], centre))  # uint8 until teaching ends
