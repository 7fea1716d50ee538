"""Object detection with OpenVINO, without the runtime: shared by the ``detector.openvino`` node,
``lineguard detect`` and model evaluation.

Pipeline, one function per step so each can be used and tested on its own:

- :func:`resolve_model_path` and :func:`model_file_problem` find the model file;
- :func:`inspect_model` reads what a model is (input size, output layout, class names, how to
  prepare its input) and raises :class:`ModelError` naming the path, what was found and what was
  expected when it cannot be used;
- :func:`letterbox` / :func:`stretch` fit an image to the model input (:class:`Letterbox` maps
  boxes back), :func:`build_inference_model` puts colour order, scaling and layout into the model;
- :func:`decode_yolo`, :func:`decode_yolo_e2e`, :func:`decode_detection_output` turn the three
  output layouts into boxes in model-input pixels, with :func:`batched_nms` where needed;
- :class:`DetectionFilter` applies per-class thresholds, the class filter and the region of
  interest, in original image pixels, and builds the ``supervision.Detections``;
- :class:`Detector` ties them together around one compiled model (the CLI uses it directly; the
  node adds asynchronous requests).

The ultralytics path (layouts ``yolo`` and ``yolo_e2e``) reproduces ultralytics' own predictions
on the same IR: letterbox with ``cv2.INTER_LINEAR``, pad 114, centred padding split as
``round(d - 0.1)`` / ``round(d + 0.1)``, BGR→RGB, /255 in float32; single best class per anchor,
``score > conf``, class-aware greedy NMS (boxes offset by ``class × 7680``, IoU ``>`` threshold
suppresses), at most 300 kept; boxes mapped back with ultralytics' padding formula and clipped.

OpenVINO and supervision are imported when first needed, so importing this module (and the node
registry) stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    import openvino as ov
    import supervision as sv

LAYOUTS = ("yolo", "yolo_e2e", "detection_output")
LAYOUT_SHAPES = {
    "yolo": "[1, 4+nc, N] (ultralytics YOLOv8/YOLO11 head: cx, cy, w, h, nc class scores per anchor)",
    "yolo_e2e": "[1, K, 6] (NMS-free YOLOv10/YOLO26 export: x0, y0, x1, y1, score, class)",
    "detection_output": "[1, 1, N, 7] (OpenVINO DetectionOutput: image_id, label, conf, x0, y0, x1, y1 normalised)",
}
PRECISIONS = ("auto", "f32", "bf16")
MODEL_SUFFIXES = (".xml", ".onnx")
PAD_VALUE = 114  # ultralytics' letterbox grey
MAX_WH = 7680  # ultralytics' class offset for class-aware NMS (pixels)
MAX_NMS = 30000  # candidates kept for NMS, highest scores first (as ultralytics)


class ModelError(ValueError):
    """A model that cannot be used as a detector. The message names the model path, what was
    found and what was expected."""


# -- finding the model file ---------------------------------------------------------------------------
def candidate_paths(model: str | Path, cwd: Path | None = None) -> list[Path]:
    """Where a model path is looked for, in order. An absolute path is taken as is; a relative
    one is tried against the current directory first, then — so that a shipped
    ``models/sim-v8/model.xml`` is found from any directory and in any kind of install —

    1. inside the package ``lineguard.<first part>`` (``lineguard.models`` when the models are
       packaged: the repository's ``models/`` in an editable install, the installed copy in a wheel);
    2. under the directory holding the ``lineguard`` package (the root of a source checkout);
    3. under the ``lineguard`` package directory itself.
    """
    import importlib.util

    import lineguard

    path = Path(model).expanduser()
    if path.is_absolute():
        return [path]
    out = [(cwd or Path.cwd()) / path]
    first, rest = (path.parts[0], path.parts[1:]) if path.parts else ("", ())
    if first.isidentifier() and rest:
        try:
            spec = importlib.util.find_spec(f"lineguard.{first}")
        except (ImportError, ValueError):
            spec = None
        out += [Path(location).joinpath(*rest) for location in ((spec.submodule_search_locations or []) if spec else [])]
    package_dir = Path(lineguard.__file__).resolve().parent
    out += [package_dir.parent / path, package_dir / path]
    return list(dict.fromkeys(out))


def resolve_model_path(model: str | Path, cwd: Path | None = None) -> tuple[Path | None, list[Path]]:
    """The model file ``model`` names (see :func:`candidate_paths`), and every place tried. A
    directory stands for the single ``.xml`` (else ``.onnx``) in it, so an ultralytics export
    folder (``best_openvino_model/``) works as a model path."""
    tried: list[Path] = []
    for candidate in candidate_paths(model, cwd):
        tried.append(candidate)
        if candidate.is_dir():
            for suffix in MODEL_SUFFIXES:
                found = sorted(candidate.glob(f"*{suffix}"))
                if len(found) == 1:
                    return found[0], tried
            continue
        if candidate.is_file():
            return candidate, tried
    return None, tried


def model_file_problem(model: str | Path, cwd: Path | None = None) -> tuple[Path | None, str | None]:
    """Cheap checks before reading a model: it exists, it is an IR or ONNX file, an IR has its
    weights beside it. Returns (path, None) or (None or path, 'expected …, got …')."""
    path, tried = resolve_model_path(model, cwd)
    if path is None:
        where = ", ".join(str(p) for p in tried)
        return None, (
            f"expected an OpenVINO IR (.xml with its .bin) or ONNX model file, or a folder holding one; "
            f"got '{model}', which does not exist (looked for {where})"
        )
    if path.suffix.lower() not in MODEL_SUFFIXES:
        return path, f"expected a model file ending in .xml (OpenVINO IR) or .onnx, got '{path}'"
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        return path, f"expected the IR weights '{path.with_suffix('.bin').name}' beside '{path}', found no such file"
    return path, None


# -- fitting an image to the model input --------------------------------------------------------------
@dataclass(frozen=True)
class Letterbox:
    """How an image of ``image_hw`` was fitted into the model input ``input_hw``, and how to map
    model-input pixels back: ``original = (input - pad) / gain``."""

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    gain_x: float
    gain_y: float
    pad_x: float
    pad_y: float

    def to_image(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes [N, 4] in model-input pixels → float32 boxes in original pixels, clipped."""
        boxes = np.array(xyxy, dtype=np.float32, copy=True).reshape(-1, 4)
        boxes[:, 0::2] -= self.pad_x
        boxes[:, 1::2] -= self.pad_y
        if self.gain_x == self.gain_y:
            boxes /= self.gain_x
        else:
            boxes[:, 0::2] /= self.gain_x
            boxes[:, 1::2] /= self.gain_y
        h, w = self.image_hw
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        return boxes


def letterbox_geometry(image_hw: tuple[int, int], input_hw: tuple[int, int], center: bool = True) -> tuple[tuple[int, int], tuple[int, int, int, int], Letterbox]:
    """Resized size (w, h), borders (top, bottom, left, right) and the :class:`Letterbox`."""
    h0, w0 = image_hw
    h, w = input_hw
    gain = min(h / h0, w / w0)
    new_w, new_h = int(round(w0 * gain)), int(round(h0 * gain))
    dw, dh = (w - new_w) / 2, (h - new_h) / 2
    if center:
        top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
        left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
        # Mapped back as ultralytics does: from the unrounded size, not the rounded one.
        pad_x = round((w - w0 * gain) / 2 - 0.1)
        pad_y = round((h - h0 * gain) / 2 - 0.1)
    else:
        top, left, bottom, right = 0, 0, h - new_h, w - new_w
        pad_x = pad_y = 0
    return (new_w, new_h), (top, bottom, left, right), Letterbox((h0, w0), (h, w), gain, gain, pad_x, pad_y)


def letterbox(image: np.ndarray, input_hw: tuple[int, int], pad_value: int = PAD_VALUE, center: bool = True, out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Scale ``image`` to fit ``input_hw`` keeping its aspect ratio (``cv2.INTER_LINEAR``) and pad
    the rest with ``pad_value``: centred (ultralytics) or, with ``center=False``, at the bottom
    and right (OpenVINO model API ``fit_to_window``). ``image`` is untouched; the result is a new
    array, or ``out`` (uint8 [H, W, C]) written in place — the same pixels, without allocating.

    >>> boxed, lb = letterbox(np.zeros((480, 640, 3), np.uint8), (320, 320))
    >>> boxed.shape, lb.gain_x, (lb.pad_x, lb.pad_y)
    ((320, 320, 3), 0.5, (0, 40))
    """
    (new_w, new_h), (top, bottom, left, right), lb = letterbox_geometry(image.shape[:2], input_hw, center)
    if out is None:
        resized = image if image.shape[1] == new_w and image.shape[0] == new_h else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        value = (pad_value,) * (image.shape[2] if image.ndim == 3 else 1)
        return cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value), lb
    out[:top] = pad_value
    out[top + new_h :] = pad_value
    out[top : top + new_h, :left] = pad_value
    out[top : top + new_h, left + new_w :] = pad_value
    inner = out[top : top + new_h, left : left + new_w]
    if image.shape[1] == new_w and image.shape[0] == new_h:
        inner[...] = image
    else:
        cv2.resize(image, (new_w, new_h), dst=inner, interpolation=cv2.INTER_LINEAR)
    return out, lb


def stretch(image: np.ndarray, input_hw: tuple[int, int], out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` to exactly ``input_hw`` (aspect ratio not kept), as SSD-style models from
    the Open Model Zoo expect; into ``out`` when given."""
    h0, w0 = image.shape[:2]
    h, w = input_hw
    lb = Letterbox((h0, w0), (h, w), w / w0, h / h0, 0, 0)
    if out is not None:
        if (h0, w0) == (h, w):
            out[...] = image
        else:
            cv2.resize(image, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)
        return out, lb
    resized = image if (h0, w0) == (h, w) else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized), lb


# -- NMS and decoders -----------------------------------------------------------------------------------
NMS_MATRIX_MAX = 512  # up to this many candidates, all IoUs at once; beyond, one kept box at a time


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, highest score first. A box is suppressed by
    a kept box when their IoU is greater than ``iou_threshold`` (torchvision's rule), computed in
    the boxes' own dtype with torchvision's operation order.

    >>> nms(np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32), np.array([0.9, 0.8, 0.7], np.float32), 0.5)
    array([0, 2])
    """
    n = len(xyxy)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    boxes = xyxy[order]
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    with np.errstate(invalid="ignore", divide="ignore"):
        if n <= NMS_MATRIX_MAX:
            w = np.maximum(np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]), 0)
            h = np.maximum(np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]), 0)
            inter = w * h
            suppresses = inter / (areas[:, None] + areas[None, :] - inter) > iou_threshold
            removed = np.zeros(n, bool)
            for i in range(n):
                if not removed[i]:
                    keep.append(i)
                    removed |= suppresses[i]
        else:
            rest = np.arange(n)
            while rest.size:
                i, rest = rest[0], rest[1:]
                keep.append(int(i))
                w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
                h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
                inter = w * h
                rest = rest[~(inter / (areas[i] + areas[rest] - inter) > iou_threshold)]
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_wh: float = MAX_WH) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other (each class is
    shifted by ``class × max_wh`` pixels, as ultralytics does)."""
    offsets = class_ids.astype(xyxy.dtype)[:, None] * xyxy.dtype.type(max_wh)
    return nms(xyxy + offsets, scores, iou_threshold)


@dataclass(frozen=True)
class RawDetections:
    """Decoded detections in model-input pixels, best first."""

    xyxy: np.ndarray  # float32 [N, 4]
    confidence: np.ndarray  # float32 [N]
    class_id: np.ndarray  # int64 [N]

    @classmethod
    def empty(cls) -> "RawDetections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.confidence)


def _per_class(values: np.ndarray, class_ids: np.ndarray, default: Any) -> np.ndarray:
    """``values[class_id]``, or ``default`` for ids outside ``values``."""
    inside = (class_ids >= 0) & (class_ids < len(values))
    out = np.full(class_ids.shape, default, dtype=values.dtype)
    out[inside] = values[class_ids[inside]]
    return out


class Thresholds:
    """Per-class score thresholds and the classes to keep, by class id.

    ``conf`` applies to every class not in ``per_class``; ``keep`` is None for all classes. A
    detection passes when ``score > threshold`` (strictly, as ultralytics) and its class is kept.

    >>> Thresholds(0.5, {1: 0.2}).passes(np.array([0.3, 0.3], np.float32), np.array([0, 1]))
    array([False,  True])
    """

    def __init__(self, conf: float = 0.25, per_class: Mapping[int, float] | None = None, keep: Sequence[int] | None = None) -> None:
        self.conf = float(conf)
        self.per_class = dict(per_class or {})
        self.keep = frozenset(keep) if keep is not None else None
        size = max([0, *(k + 1 for k in self.per_class), *(k + 1 for k in self.keep or ())])
        self._thr = np.full(size, self.conf, np.float32)
        for k, v in self.per_class.items():
            self._thr[k] = v
        self._keep = np.ones(size, bool) if self.keep is None else np.isin(np.arange(size), sorted(self.keep))
        kept = [self.conf] if self.keep is None else []
        kept += [float(self._thr[k]) for k in range(size) if self._keep[k]]
        self.floor = min(kept) if kept else math.inf  # no detection at or below it can pass

    def passes(self, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        ok = scores > _per_class(self._thr, class_ids, np.float32(self.conf))
        return ok & _per_class(self._keep, class_ids, self.keep is None)

    def __repr__(self) -> str:
        return f"Thresholds(conf={self.conf}, per_class={self.per_class}, keep={sorted(self.keep) if self.keep is not None else None})"


PREFILTER_MARGIN = 0.02  # a best score computed inside OpenVINO may be bf16-rounded: look a little lower


def decode_yolo(output: np.ndarray, thresholds: Thresholds, iou: float, max_det: int = 300, best_scores: np.ndarray | None = None) -> RawDetections:
    """Ultralytics YOLOv8/YOLO11 head ``[1, 4+nc, N]``: per anchor cx, cy, w, h and nc class
    scores. Best class per anchor, threshold, class-aware NMS; boxes in model-input pixels.

    ``best_scores`` [N], each anchor's best class score computed by the model itself (see
    :func:`build_inference_model`), only narrows the anchors looked at; scores, classes and
    thresholds always come from ``output``, so the result is the same with or without it.
    """
    pred = output.reshape(output.shape[-2], output.shape[-1])
    if pred.dtype != np.float32:
        pred = pred.astype(np.float32)
    scores = pred[4:]
    if best_scores is not None:
        cand = np.flatnonzero(best_scores.reshape(-1) > thresholds.floor - PREFILTER_MARGIN)
        sub = scores[:, cand]
        best = sub.max(axis=0) if cand.size else np.zeros(0, np.float32)
        ok = best > thresholds.floor
        cand, sub, best = cand[ok], sub[:, ok], best[ok]
    else:
        best_all = scores.max(axis=0)
        cand = np.flatnonzero(best_all > thresholds.floor)
        sub, best = scores[:, cand], best_all[cand]
    if not cand.size:
        return RawDetections.empty()
    cls = sub.argmax(axis=0)
    conf = best
    ok = thresholds.passes(conf, cls)
    cand, cls, conf = cand[ok], cls[ok], conf[ok]
    if not cand.size:
        return RawDetections.empty()
    if cand.size > MAX_NMS:
        top = np.argsort(-conf, kind="stable")[:MAX_NMS]
        cand, cls, conf = cand[top], cls[top], conf[top]
    xywh = pred[:4, cand].T
    half = xywh[:, 2:] / 2
    xyxy = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
    keep = batched_nms(xyxy, conf, cls, iou)[:max_det]
    return RawDetections(xyxy[keep], conf[keep], cls[keep].astype(np.int64))


def decode_yolo_e2e(output: np.ndarray, thresholds: Thresholds, max_det: int = 300) -> RawDetections:
    """NMS-free head ``[1, K, 6]`` (YOLOv10/YOLO26 end-to-end): x0, y0, x1, y1, score, class per
    row, in model-input pixels. Rows passing the thresholds, in the model's order, at most
    ``max_det``."""
    rows = output.reshape(-1, 6).astype(np.float32, copy=False)
    cls = np.rint(rows[:, 5]).astype(np.int64)
    idx = np.flatnonzero(thresholds.passes(rows[:, 4], cls))[:max_det]
    return RawDetections(rows[idx, :4].copy(), rows[idx, 4].copy(), cls[idx])


def decode_detection_output(output: np.ndarray, thresholds: Thresholds, input_hw: tuple[int, int], max_det: int = 300) -> RawDetections:
    """OpenVINO DetectionOutput ``[1, 1, N, 7]``: image_id, label, conf, x0, y0, x1, y1 with
    coordinates normalised to the model input; rows end at the first ``image_id == -1``. Best
    first, at most ``max_det``, boxes in model-input pixels."""
    rows = output.reshape(-1, 7).astype(np.float32, copy=False)
    ended = np.flatnonzero(rows[:, 0] < 0)
    rows = rows[: ended[0]] if ended.size else rows
    cls = np.rint(rows[:, 1]).astype(np.int64)
    conf = rows[:, 2]
    idx = np.flatnonzero(thresholds.passes(conf, cls))
    idx = idx[np.argsort(-conf[idx], kind="stable")][:max_det]
    h, w = input_hw
    xyxy = rows[idx, 3:7] * np.array([w, h, w, h], np.float32)
    return RawDetections(xyxy, conf[idx].copy(), cls[idx])


# -- what a model is ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocess:
    """How to prepare an image for a model: resize mode, pad value, colour order and the
    per-channel ``(x - mean) / scale`` folded into the model."""

    resize: str = "letterbox"  # letterbox (centred), fit (top-left), stretch
    pad_value: int = PAD_VALUE
    rgb: bool = True
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = (255.0,)


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`inspect_model` found."""

    path: Path
    layout: str
    input_name: str
    input_hw: tuple[int, int]
    output_index: int
    output_shape: tuple[int, ...]
    num_classes: int | None  # None when the model does not say
    class_names: tuple[str, ...]  # may be empty when nothing names the classes
    class_names_source: str  # params, metadata.yaml, rt_info, generated, none
    preprocess: Preprocess
    reshape_to: tuple[int, int, int, int] | None  # input shape to set before compiling, if dynamic

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) else f"class{class_id}"

    def describe(self) -> str:
        if not self.class_names:
            names = "no class names (ids shown as class<id>)"
        elif self.class_names_source == "generated":
            names = f"{len(self.class_names)} classes, unnamed (class0, class1, ...)"
        else:
            names = f"{len(self.class_names)} class names from {self.class_names_source}"
        return f"{self.path}: layout {self.layout}, input {self.input_hw[0]}x{self.input_hw[1]}, output {list(self.output_shape)}, {names}"


def read_metadata(model_path: Path) -> dict[str, Any]:
    """``metadata.yaml`` beside the model (ultralytics writes one into every export folder)."""
    meta = model_path.parent / "metadata.yaml"
    if not meta.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(meta.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelError(f"model {model_path}: expected a readable YAML file at {meta}, got: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _names_list(names: Any) -> list[str] | None:
    if isinstance(names, Mapping):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            return None
        if keys != list(range(len(keys))):
            return None
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return None


def rt_info(model: "ov.Model", key: str) -> str | None:
    """``rt_info['model_info'][key]`` as a string (the OpenVINO model API keys: model_type,
    labels, resize_type, pad_value, reverse_input_channels, scale_values, mean_values)."""
    path = ["model_info", key]
    if not model.has_rt_info(path):
        return None
    return str(model.get_rt_info(path).astype(str))


def _rt_floats(model: "ov.Model", key: str) -> tuple[float, ...] | None:
    text = rt_info(model, key)
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        return None


def _rt_bool(model: "ov.Model", key: str) -> bool | None:
    text = rt_info(model, key)
    return None if text is None else text.strip().lower() in ("yes", "true", "1")


def _dims(pshape: Any) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in pshape]


def _fmt(dims: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _classify_output(dims: list[int | None], end2end: bool | None) -> str | None:
    """Which layout an output shape has, or None."""
    if len(dims) == 4 and dims[1] == 1 and dims[3] == 7:
        return "detection_output"
    if len(dims) == 3 and dims[0] in (1, None):
        if dims[2] == 6 and end2end is not False:
            return "yolo_e2e"
        if dims[1] is not None and dims[1] > 4 and end2end is not True:
            return "yolo"
    return None


def _detection_output_classes(model: "ov.Model") -> int | None:
    """num_classes of a DetectionOutput op (from its attributes, or from its input shapes)."""
    for op in model.get_ordered_ops():
        if op.get_type_name() != "DetectionOutput":
            continue
        attrs = op.get_attributes()
        if isinstance(attrs.get("num_classes"), int) and attrs["num_classes"] > 0:
            return int(attrs["num_classes"])
        boxes = _dims(op.input(0).get_partial_shape())
        scores = _dims(op.input(1).get_partial_shape())
        if attrs.get("share_location", True) and boxes[-1] and scores[-1] and boxes[-1] % 4 == 0:
            priors = boxes[-1] // 4
            if priors and scores[-1] % priors == 0:
                return scores[-1] // priors
    return None


def inspect_model(
    model: "ov.Model",
    path: Path,
    *,
    layout: str = "auto",
    class_names: Sequence[str] | None = None,
    imgsz: int | Sequence[int] | None = None,
) -> ModelInfo:
    """Everything the detector needs to know about ``model`` (read from ``path``), checked.

    Raises :class:`ModelError` for a model that cannot work: not exactly one image input of rank 4
    with 3 channels (NCHW), a dynamic input size without ``imgsz``, no output of a supported
    layout (or ``layout`` forcing one that does not match), a non-detection ultralytics task, or
    class names whose count disagrees with the model's class count.
    """
    where = f"model {path}"
    if layout != "auto" and layout not in LAYOUTS:
        raise ModelError(f"{where}: expected layout 'auto' or one of {', '.join(LAYOUTS)}, got '{layout}'")
    meta = read_metadata(path)
    task = meta.get("task")
    if task is not None and task != "detect":
        raise ModelError(f"{where}: expected a detection model (metadata.yaml task 'detect'), found task '{task}'")

    # Input: one image, NCHW, 3 channels, fixed size (or made fixed with imgsz).
    inputs = model.inputs
    if len(inputs) != 1:
        found = ", ".join(f"'{i.get_any_name()}' {_fmt(_dims(i.get_partial_shape()))}" for i in inputs)
        raise ModelError(f"{where}: expected one image input [1, 3, H, W], found {len(inputs)} inputs: {found or 'none'}")
    inp = inputs[0]
    pshape = inp.get_partial_shape()
    if pshape.rank.is_dynamic or pshape.rank.get_length() != 4:
        rank = "a dynamic rank" if pshape.rank.is_dynamic else f"rank {pshape.rank.get_length()} {_fmt(_dims(pshape))}"
        raise ModelError(f"{where}: wrong input rank: expected an image input of rank 4 [1, 3, H, W] (NCHW), found {rank}")
    n, c, h, w = _dims(pshape)
    if c != 3:
        hint = " (it looks like NHWC; export the model with an NCHW input)" if _dims(pshape)[3] == 3 else ""
        raise ModelError(f"{where}: expected an input with 3 colour channels [1, 3, H, W], found {_fmt(_dims(pshape))}{hint}")
    if n not in (1, None):
        raise ModelError(f"{where}: expected an input of batch 1 [1, 3, H, W], found {_fmt(_dims(pshape))}")
    reshape_to = None
    if imgsz is not None:
        ih, iw = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
        if (h is not None and h != ih) or (w is not None and w != iw):
            raise ModelError(f"{where}: imgsz {ih}x{iw} given, but the model's input is fixed at {_fmt(_dims(pshape))}; leave imgsz out or export the model with a dynamic input")
        h, w = ih, iw
    if h is None or w is None:
        raise ModelError(f"{where}: expected a fixed input size, found a dynamic input {_fmt(_dims(pshape))}; set imgsz (e.g. imgsz: 640)")
    if n is None or pshape.is_dynamic:
        reshape_to = (1, 3, h, w)

    # Output shapes as they will be after fixing the input size.
    if reshape_to is not None:
        probe = model.clone()
        try:
            probe.reshape({probe.inputs[0]: reshape_to})
        except RuntimeError as exc:
            raise ModelError(f"{where}: could not set its input to {list(reshape_to)}: {str(exc).splitlines()[0]}") from exc
        outputs = [_dims(o.get_partial_shape()) for o in probe.outputs]
    else:
        outputs = [_dims(o.get_partial_shape()) for o in model.outputs]
    end2end = meta.get("end2end") if isinstance(meta.get("end2end"), bool) else None
    found_layouts = [_classify_output(d, end2end) for d in outputs]
    found_text = ", ".join(_fmt(d) for d in outputs) or "no outputs"
    if layout == "auto":
        # One output of a known layout; with several outputs, only a single DetectionOutput is
        # unambiguous (SSD-style models may expose extra outputs beside it).
        if len(outputs) == 1:
            matching = [0] if found_layouts[0] else []
        else:
            matching = [i for i, lay in enumerate(found_layouts) if lay == "detection_output"]
        if len(matching) != 1:
            expected = "; ".join(f"{k} {v}" for k, v in LAYOUT_SHAPES.items())
            raise ModelError(f"{where}: unsupported output layout: found {len(outputs)} output(s) {found_text}; expected exactly one output of a supported layout: {expected}")
        out_index = matching[0]
        chosen = found_layouts[out_index]
        assert chosen is not None
    else:
        chosen = layout
        forced = {"yolo_e2e": True, "yolo": False}.get(layout)
        matching = [i for i, d in enumerate(outputs) if _classify_output(d, forced) == layout]
        if len(matching) != 1:
            raise ModelError(f"{where}: layout '{layout}' expects one output {LAYOUT_SHAPES[layout]}, found {len(outputs)} output(s) {found_text}")
        out_index = matching[0]
    out_dims = outputs[out_index]

    # Class count and names.
    model_nc: int | None = None
    nc_from = ""
    if chosen == "yolo":
        if out_dims[1] is None:
            raise ModelError(f"{where}: expected a fixed number of channels 4+nc in output {_fmt(out_dims)}")
        model_nc, nc_from = out_dims[1] - 4, f"its output {_fmt(out_dims)} has 4+{out_dims[1] - 4} channels"
    elif chosen == "detection_output":
        model_nc = _detection_output_classes(model)
        nc_from = f"its DetectionOutput has num_classes {model_nc} (label ids 0..{(model_nc or 1) - 1}; label 0 is the background in most SSD models)"
    meta_names = _names_list(meta.get("names")) if "names" in meta else None
    rt_labels = rt_info(model, "labels")
    rt_names = rt_labels.split() if rt_labels else None
    for source, names in (("metadata.yaml", meta_names), ("rt_info labels", rt_names)):
        if names is None:
            continue
        if model_nc is not None and len(names) != model_nc:
            raise ModelError(f"{where}: class-count mismatch: {source} lists {len(names)} class names, but {nc_from}; expected {model_nc}")
        if model_nc is None:
            model_nc, nc_from = len(names), f"its {source} lists {len(names)} classes"
    if class_names is not None:
        if model_nc is not None and len(class_names) != model_nc:
            raise ModelError(f"{where}: class-count mismatch: class_names lists {len(class_names)} names, but {nc_from}; expected {model_nc} names")
        names_out, names_src = tuple(class_names), "params"
    elif meta_names is not None:
        names_out, names_src = tuple(meta_names), "metadata.yaml"
    elif rt_names is not None:
        names_out, names_src = tuple(rt_names), "rt_info"
    elif model_nc is not None and chosen == "yolo":
        names_out, names_src = tuple(f"class{i}" for i in range(model_nc)), "generated"
    else:
        names_out, names_src = (), "none"

    # Input preparation: layout defaults, refined by the OpenVINO model API rt_info when present.
    if chosen == "detection_output":
        prep = Preprocess(resize="stretch", rgb=False, mean=(), scale=())
    else:
        prep = Preprocess()
    resize_type = rt_info(model, "resize_type")
    resize_modes = {"fit_to_window_letterbox": "letterbox", "letterbox": "letterbox", "fit_to_window": "fit", "standard": "stretch"}
    if resize_type is not None and resize_type not in resize_modes:
        raise ModelError(f"{where}: rt_info resize_type '{resize_type}' is not supported; expected one of {', '.join(resize_modes)}")
    pad = _rt_floats(model, "pad_value")
    rgb = _rt_bool(model, "reverse_input_channels")
    mean = _rt_floats(model, "mean_values")
    scale = _rt_floats(model, "scale_values")
    prep = Preprocess(
        resize=resize_modes.get(resize_type or "", prep.resize),
        pad_value=int(pad[0]) if pad else prep.pad_value,
        rgb=prep.rgb if rgb is None else rgb,
        mean=prep.mean if mean is None else tuple(v for v in mean),
        scale=prep.scale if scale is None else tuple(v for v in scale),
    )
    for name, values in (("mean_values", prep.mean), ("scale_values", prep.scale)):
        if len(values) not in (0, 1, 3):
            raise ModelError(f"{where}: rt_info {name} must have 1 or 3 values, found {list(values)}")
    if any(v == 0 for v in prep.scale):
        raise ModelError(f"{where}: rt_info scale_values must not contain 0, found {list(prep.scale)}")
    return ModelInfo(
        path=path,
        layout=chosen,
        input_name=inp.get_any_name() if inp.get_names() else "",
        input_hw=(h, w),
        output_index=out_index,
        output_shape=tuple(d if d is not None else -1 for d in out_dims),
        num_classes=model_nc,
        class_names=names_out,
        class_names_source=names_src,
        preprocess=prep,
        reshape_to=reshape_to,
    )


def read_model(path: Path, core: "ov.Core | None" = None) -> "ov.Model":
    """Read an IR or ONNX file; a file OpenVINO cannot read is a :class:`ModelError` naming it."""
    import openvino as ov

    core = core or ov.Core()
    try:
        return core.read_model(str(path))
    except RuntimeError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip() and "Exception from" not in line), str(exc))
        raise ModelError(f"model {path}: expected a readable OpenVINO IR or ONNX model, but OpenVINO could not read it: {first.strip()}") from exc


def load_model(model: str | Path, *, layout: str = "auto", class_names: Sequence[str] | None = None, imgsz: int | Sequence[int] | None = None, core: "ov.Core | None" = None) -> tuple["ov.Model", ModelInfo]:
    """Resolve, check, read and inspect a model file. Raises :class:`ModelError`."""
    path, problem = model_file_problem(model)
    if problem is not None or path is None:
        raise ModelError(f"model {path or model}: {problem}")
    ov_model = read_model(path, core)
    return ov_model, inspect_model(ov_model, path, layout=layout, class_names=class_names, imgsz=imgsz)


BEST_SCORE_OUTPUT = "lineguard_best_score"


def build_inference_model(model: "ov.Model", info: ModelInfo) -> "ov.Model":
    """The model as the detector runs it, with pre- and post-processing folded in where it pays.

    Input: the letterboxed image as it is, uint8 ``[1, H, W, 3]`` BGR. Colour order,
    ``(x - mean) / scale`` and NHWC→NCHW run inside OpenVINO (its threads, not Python's). The
    scale is an explicit Divide (not ``PrePostProcessor.scale``, which OpenVINO folds into the
    first convolution): on a bf16 CPU that keeps results bit-identical to dividing in numpy
    first, as ultralytics does.

    Output, for the ``yolo`` layout, one more: ``lineguard_best_score`` [1, N], each anchor's best
    class score, so Python reads N values instead of nc × N to find the candidates.
    """
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.preprocess import ColorFormat, PrePostProcessor

    if info.reshape_to is not None:
        model.reshape({model.inputs[0]: list(info.reshape_to)})
    prep = info.preprocess
    ppp = PrePostProcessor(model)
    tensor = ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    tensor.set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    if prep.rgb:
        steps.convert_color(ColorFormat.RGB)

    def channel_constant(values: tuple[float, ...]) -> Any:
        array = np.asarray(values, np.float32)
        return ops.constant(array.reshape(1, 1, 1, 3) if array.size == 3 else array.reshape(()))

    if prep.mean and any(prep.mean):
        mean_const = channel_constant(prep.mean)
        steps.custom(lambda node: ops.subtract(node, mean_const).output(0))
    if prep.scale and any(v != 1 for v in prep.scale):
        scale_const = channel_constant(prep.scale)
        steps.custom(lambda node: ops.divide(node, scale_const).output(0))
    model = ppp.build()
    if info.layout == "yolo":
        head = model.get_results()[info.output_index].input_value(0)
        scores = ops.slice(head, ops.constant(np.array([4], np.int64)), ops.constant(np.array([np.iinfo(np.int64).max], np.int64)), ops.constant(np.array([1], np.int64)), ops.constant(np.array([1], np.int64)))
        best = ops.reduce_max(scores, ops.constant(np.array([1], np.int64)), False)
        best.output(0).get_tensor().set_names({BEST_SCORE_OUTPUT})
        model.add_outputs([best.output(0)])
    return model


def compile_config(device: str, precision: str, requests: int, core: "ov.Core") -> dict[str, Any]:
    """OpenVINO properties: THROUGHPUT with ``requests`` in flight (LATENCY for one), and the
    inference precision unless ``auto`` (the device default: bf16 on CPUs that have it)."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision: expected one of {', '.join(PRECISIONS)}, got '{precision}'")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT" if requests > 1 else "LATENCY"}
    if requests > 1:
        config["PERFORMANCE_HINT_NUM_REQUESTS"] = requests
    if precision != "auto":
        if device == "CPU" and precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ModelError("precision: expected a CPU with bf16 support for precision 'bf16', this CPU has none; use 'auto' or 'f32'")
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def check_device(device: str, core: "ov.Core") -> None:
    available = core.available_devices
    base = device.split(":", 1)[0].split(".", 1)[0]
    if base in ("AUTO", "MULTI", "HETERO", "BATCH") or device in available or base in {d.split(".")[0] for d in available}:
        return
    raise ModelError(f"device: expected one of {', '.join([*available, 'AUTO'])}, got '{device}'")


# -- thresholds, class filter, region of interest → supervision.Detections ------------------------------
ROI_KEEP = ("centre", "box")  # what of a detection's box must lie inside the roi


class DetectionFilter:
    """Turns decoded detections into the project's detections type, in original image pixels.

    ``roi`` is ``[x0, y0, x1, y1]`` or a polygon ``[[x, y], ...]`` in original pixels. With
    ``roi_keep="centre"`` a detection is kept when the centre of its box lies inside it; with
    ``"box"``, when all four corners of its box do (for a convex roi: the whole box), so a box
    reaching over the belt's edge is dropped (edges count as inside in both).
    """

    def __init__(self, info: ModelInfo, thresholds: Thresholds, roi: Sequence[Any] | None = None, metadata: Mapping[str, Any] | None = None, roi_keep: str = "centre") -> None:
        if roi_keep not in ROI_KEEP:
            raise ValueError(f"roi_keep: expected one of {', '.join(ROI_KEEP)}, got {roi_keep!r}")
        self.info = info
        self.thresholds = thresholds
        self.metadata = dict(metadata or {})
        self.polygon = roi_polygon(roi) if roi is not None else None
        self.roi_keep = roi_keep
        self._names = np.array(list(info.class_names) or [""], dtype=object)

    def __call__(self, raw: RawDetections, lb: Letterbox) -> "sv.Detections":
        import supervision as sv

        xyxy = lb.to_image(raw.xyxy)
        conf, cls = raw.confidence, raw.class_id
        if self.polygon is not None and len(xyxy):
            if self.roi_keep == "box":
                corners = xyxy[:, [[0, 1], [2, 1], [2, 3], [0, 3]]].reshape(-1, 2)
                inside = points_in_polygon(corners, self.polygon).reshape(-1, 4).all(axis=1)
            else:
                inside = points_in_polygon((xyxy[:, :2] + xyxy[:, 2:]) / 2, self.polygon)
            xyxy, conf, cls = xyxy[inside], conf[inside], cls[inside]
        known = (cls >= 0) & (cls < len(self.info.class_names))
        names = np.empty(len(cls), dtype=object)
        names[known] = self._names[cls[known]]
        for i in np.flatnonzero(~known):
            names[i] = self.info.class_name(int(cls[i]))
        return sv.Detections(
            xyxy=np.ascontiguousarray(xyxy, dtype=np.float32),
            confidence=np.asarray(conf, dtype=np.float32),
            class_id=np.asarray(cls, dtype=np.int64),
            data={"class_name": names.astype(str) if len(names) else np.zeros(0, dtype=str)},
            metadata={**self.metadata, "image_hw": lb.image_hw},
        )


def roi_polygon(roi: Sequence[Any]) -> np.ndarray:
    """``[x0, y0, x1, y1]`` or ``[[x, y], ...]`` → float32 polygon [K, 2]."""
    if len(roi) == 4 and all(isinstance(v, (int, float)) for v in roi):
        x0, y0, x1, y1 = (float(v) for v in roi)
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    return np.asarray([[float(p[0]), float(p[1])] for p in roi], np.float32)


def roi_problem(roi: Sequence[Any]) -> str | None:
    if len(roi) == 4 and all(isinstance(v, (int, float)) for v in roi):
        if not (roi[0] < roi[2] and roi[1] < roi[3]):
            return f"expected [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {list(roi)}"
        return None
    if len(roi) < 3 or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in roi):
        return f"expected [x0, y0, x1, y1] or a polygon of at least 3 [x, y] points, got {list(roi)}"
    if abs(cv2.contourArea(roi_polygon(roi))) == 0:
        return f"expected a polygon with an area, got {[list(p) for p in roi]}"
    return None


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Boolean [N]: each point inside ``polygon`` or on its edge."""
    contour = polygon.reshape(-1, 1, 2).astype(np.float32)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points], dtype=bool)


def thresholds_for(info: ModelInfo, conf: float, class_conf: Mapping[str, float] | None = None, classes: Sequence[str] | None = None) -> Thresholds:
    """Per-class thresholds and class filter by name; names must be the model's class names."""
    names = list(info.class_names)
    index = {n: i for i, n in enumerate(names)}

    def ids(param: str, wanted: Sequence[str]) -> list[int]:
        unknown = [n for n in wanted if n not in index]
        if unknown:
            known = ", ".join(names) if names else "none (the model names no classes; give class_names)"
            raise ModelError(f"model {info.path}: {param}: expected class names of the model ({known}), got {', '.join(repr(u) for u in unknown)}")
        return [index[n] for n in wanted]

    per_class = dict(zip(ids("class_conf", list(class_conf or {})), (float(v) for v in (class_conf or {}).values())))
    keep = ids("classes", list(classes)) if classes is not None else None
    return Thresholds(float(conf), per_class, keep)


# -- one compiled model with its pre- and post-processing -------------------------------------------------
class Detector:
    """A compiled detector: ``detect(image) -> supervision.Detections`` in original pixels.

    ``prepare`` (letterbox) and ``postprocess`` (decode, thresholds, NMS, ROI) are public so the
    node can run inference itself on an ``AsyncInferQueue`` with the very same steps.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "CPU",
        precision: str = "auto",
        layout: str = "auto",
        class_names: Sequence[str] | None = None,
        imgsz: int | Sequence[int] | None = None,
        conf: float = 0.25,
        iou: float = 0.45,
        class_conf: Mapping[str, float] | None = None,
        classes: Sequence[str] | None = None,
        roi: Sequence[Any] | None = None,
        roi_keep: str = "centre",
        max_detections: int = 300,
        requests: int = 1,
    ) -> None:
        import openvino as ov

        core = ov.Core()
        ov_model, self.info = load_model(model, layout=layout, class_names=class_names, imgsz=imgsz, core=core)
        self.thresholds = thresholds_for(self.info, conf, class_conf, classes)
        self.iou = float(iou)
        self.max_detections = int(max_detections)
        self.filter = DetectionFilter(self.info, self.thresholds, roi, {"model": str(self.info.path)}, roi_keep=roi_keep)
        check_device(device, core)
        self.other_devices = [d for d in core.available_devices if not d.startswith("CPU")]
        config = compile_config(device, precision, requests, core)
        try:
            self.compiled = core.compile_model(build_inference_model(ov_model, self.info), device, config)
        except RuntimeError as exc:
            raise ModelError(f"model {self.info.path}: OpenVINO could not compile it for {device} ({config}): {str(exc).strip().splitlines()[-1]}") from exc
        self.device = device
        self.output = self.compiled.outputs[self.info.output_index]
        self.best_output = next((o for o in self.compiled.outputs if BEST_SCORE_OUTPUT in o.get_names()), None)

    def prepare(self, image: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
        """The model input for ``image`` (uint8 [1, H, W, 3] BGR; written into ``out`` [H, W, 3]
        when given) and how to map boxes back."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image [H, W, 3], got {image.dtype} {list(image.shape)}")
        prep = self.info.preprocess
        if prep.resize == "stretch":
            fitted, lb = stretch(image, self.info.input_hw, out)
        else:
            fitted, lb = letterbox(image, self.info.input_hw, prep.pad_value, center=prep.resize == "letterbox", out=out)
        return fitted[None], lb

    def new_input(self) -> np.ndarray:
        """A buffer for :meth:`prepare`'s ``out``."""
        return np.empty((*self.info.input_hw, 3), np.uint8)

    def decode(self, output: np.ndarray, best_scores: np.ndarray | None = None) -> RawDetections:
        layout = self.info.layout
        if layout == "yolo":
            return decode_yolo(output, self.thresholds, self.iou, self.max_detections, best_scores)
        if layout == "yolo_e2e":
            return decode_yolo_e2e(output, self.thresholds, self.max_detections)
        return decode_detection_output(output, self.thresholds, self.info.input_hw, self.max_detections)

    def postprocess(self, output: np.ndarray, lb: Letterbox, best_scores: np.ndarray | None = None) -> "sv.Detections":
        return self.filter(self.decode(output, best_scores), lb)

    def postprocess_request(self, request: "ov.InferRequest", lb: Letterbox) -> "sv.Detections":
        """Decode straight from a finished request's output buffers (copies what it keeps)."""
        best = request.get_tensor(self.best_output).data if self.best_output is not None else None
        return self.postprocess(request.get_tensor(self.output).data, lb, best)

    def detect(self, image: np.ndarray) -> "sv.Detections":
        tensor, lb = self.prepare(image)
        result = self.compiled({0: tensor}, share_inputs=True)
        best = result[self.best_output] if self.best_output is not None else None
        return self.postprocess(result[self.output], lb, best)
