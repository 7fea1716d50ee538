"""mAP of a YOLO detector exported to OpenVINO IR, on a YOLO-format validation set.

Used by ``lineguard train`` (held-out ``nominal`` and ``shift`` sets) and ``lineguard eval-model``.
It needs only numpy, cv2, openvino and supervision — never ultralytics.

- Pre-processing is ultralytics' letterbox (``cv2.INTER_LINEAR``, centred, pad value 114, RGB,
  /255), post-processing its class-aware NMS (``conf`` 0.001, ``iou`` 0.7, at most 300 boxes,
  multi-label, the settings of ``yolo val``). The minimal decode for the ultralytics head ``[1, 4 + nc, N]``
  lives here (the runtime's detector node has its own; this module stays independent of it).
- mAP50 and mAP50-95 (overall and per class) are COCO-style, from ``supervision.metrics
  .MeanAveragePrecision`` (101-point interpolation, 100 detections per image). Precision/recall
  curves at IoU 0.5 are computed here (greedy matching by confidence) for the PR-curve PNG and the
  precision and recall at the working threshold ``conf_report`` (0.25).
- OpenVINO compiles at ``precision`` (``f32`` by default; this CPU's default would be ``bf16``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineguard.sim.truth import CLASSES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


# ---------------------------------------------------------------------------------------------
# Pre- and post-processing (ultralytics-compatible)


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int = 114) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize ``image`` (BGR) to fit ``size`` = (height, width) keeping its aspect, centred on a
    ``pad_value`` canvas, as ultralytics' ``LetterBox``. Returns ``(canvas, ratio, (pad_x, pad_y))``."""
    h, w = image.shape[:2]
    new_h, new_w = size
    r = min(new_h / h, new_w / w)
    unpad_w, unpad_h = int(round(w * r)), int(round(h * r))
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    if (w, h) != (unpad_w, unpad_h):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    canvas = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return canvas, r, (left, top)


def to_input(canvas: np.ndarray) -> np.ndarray:
    """BGR uint8 HxWx3 → float32 1x3xHxW RGB in [0, 1]."""
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def decode_yolo(
    output: np.ndarray,
    ratio: float,
    pad: tuple[float, float],
    image_size: tuple[int, int],
    *,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    max_wh: float = 7680.0,
    multi_label: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode an ultralytics head ``[1, 4 + nc, N]`` (cx, cy, w, h, class scores) into boxes in the
    original image: ``(xyxy float32 [M, 4], confidence float32 [M], class_id int64 [M])``.

    Class-aware NMS (boxes offset by ``class * max_wh``, as ultralytics does), best ``max_det``.
    ``multi_label=False`` is ``predict`` (an anchor's best class only); ``True`` is ``yolo val``
    (every class scoring above ``conf``), which lets one anchor report a component and its
    ``misaligned`` box — both are in the ground truth."""
    pred = np.asarray(output)[0].T  # [N, 4 + nc]
    scores = pred[:, 4:]
    if multi_label:
        rows, class_id = np.nonzero(scores > conf)
        confidence = scores[rows, class_id]
        pred = pred[rows]
    else:
        class_id = scores.argmax(axis=1)
        confidence = scores[np.arange(len(scores)), class_id]
        keep = confidence > conf
        pred, class_id, confidence = pred[keep], class_id[keep], confidence[keep]
    if len(pred) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    order = np.argsort(-confidence, kind="stable")[:30000]
    pred, class_id, confidence = pred[order], class_id[order], confidence[order]
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    chosen = nms(xyxy + (class_id * max_wh)[:, None], confidence, iou, max_keep=max_det)
    xyxy, confidence, class_id = xyxy[chosen], confidence[chosen], class_id[chosen]
    xyxy = (xyxy - np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)) / ratio
    width, height = image_size
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    return xyxy.astype(np.float32), confidence.astype(np.float32), class_id.astype(np.int64)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression of boxes sorted by descending ``scores``; returns the kept
    indices in order (at most ``max_keep``)."""
    x0, y0, x1, y1 = xyxy.astype(np.float64).T
    area = (x1 - x0).clip(0) * (y1 - y0).clip(0)
    alive = np.ones(len(xyxy), bool)
    kept = []
    for i in range(len(xyxy)):
        if not alive[i]:
            continue
        kept.append(i)
        if max_keep is not None and len(kept) >= max_keep:
            break
        rest = np.flatnonzero(alive[i + 1 :]) + i + 1
        if len(rest) == 0:
            break
        iw = (np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest])).clip(0)
        ih = (np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])).clip(0)
        inter = iw * ih
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        alive[rest[overlap > iou]] = False
    return np.array(kept, np.int64)


# ---------------------------------------------------------------------------------------------
# The model


class IrDetector:
    """An ultralytics-exported OpenVINO IR, compiled at ``precision`` on the CPU."""

    def __init__(self, model_xml: str | Path, precision: str = "f32") -> None:
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
        path = Path(model_xml)
        if path.is_dir():
            found = sorted(path.glob("*.xml"))
            if not found:
                raise ValueError(f"model {path}: no .xml in this folder")
            path = found[0]
        if not path.is_file():
            raise ValueError(f"model {path}: no such file")
        core = ov.Core()
        model = core.read_model(str(path))
        shape = model.inputs[0].get_partial_shape()
        if shape.is_dynamic:
            raise ValueError(f"model {path}: input shape {shape} is dynamic; export with a fixed imgsz")
        self.input_hw = (int(shape[2].get_length()), int(shape[3].get_length()))
        self.names = read_class_names(model) or list(CLASSES)
        self.path = path
        self.precision = precision
        self._compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": PRECISIONS[precision]})
        self._request = self._compiled.create_infer_request()

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, float, tuple[float, float]]:
        canvas, r, pad = letterbox(image, self.input_hw)
        out = self._request.infer({0: to_input(canvas)})
        return np.asarray(next(iter(out.values()))), r, pad

    def __call__(self, image: np.ndarray, conf: float = 0.001, iou: float = 0.7, max_det: int = 300, multi_label: bool = False):
        out, r, pad = self.raw(image)
        return decode_yolo(out, r, pad, (image.shape[1], image.shape[0]), conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)


def read_class_names(model: Any) -> list[str]:
    """Class names from ``rt_info['model_info']['labels']`` (ultralytics' export), or []."""
    try:
        value = model.get_rt_info(["model_info", "labels"])
    except RuntimeError:
        return []
    text = value.astype(str) if hasattr(value, "astype") else str(value)
    return text.split()


# ---------------------------------------------------------------------------------------------
# Data


def render_eval_set(
    out_dir: str | Path,
    scenario: str,
    seed: int,
    frames: int,
    *,
    stride: int = 30,
    on_image: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Render ``frames`` PNG frames of ``scenario`` (its own parameters, seed ``seed``) as a YOLO
    folder for :func:`evaluate_model`; reuses an earlier identical render. ``stride`` frames apart
    (30 ≈ a third of the image of belt travel), so more distinct parts are seen."""
    from lineguard.sim.dataset import export_dataset
    from lineguard.sim.scenario import load_scenario

    out = Path(out_dir)
    stamp = out / "eval-set.json"
    key = {"scenario": scenario, "seed": seed, "frames": frames, "stride": stride}
    if stamp.exists():
        saved = json.loads(stamp.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            _tick(on_image, frames)
            return saved
    sc = load_scenario(scenario, seed=seed)
    export_dataset(sc, frames, out, val_fraction=0.0, stride=stride, image_format="png", overwrite=True, progress=False)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    summary = {"key": key, "scenario": scenario, "seed": seed, "frames": frames, "stride": stride, "run_seeds": [r["seed"] for r in manifest["runs"]]}
    stamp.write_text(json.dumps(summary) + "\n", encoding="utf-8")
    _tick(on_image, frames)
    return summary


def _tick(callback: Callable[[], None] | None, n: int) -> None:
    for _ in range(n if callback else 0):
        callback()


def labelled_images(dataset: str | Path, split: str | None = None) -> list[tuple[Path, Path]]:
    """(image, label file) pairs of a YOLO folder: ``images/<split>/*`` ↔ ``labels/<split>/*.txt``
    (every split when ``split`` is None)."""
    root = Path(dataset)
    images_root = root / "images"
    if not images_root.is_dir():
        raise ValueError(f"dataset {root}: no images/ folder (expected a YOLO dataset: images/, labels/)")
    pairs = []
    for image in sorted(images_root.rglob("*")):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = image.relative_to(images_root)
        if split is not None and rel.parts[0] != split:
            continue
        pairs.append((image, root / "labels" / rel.with_suffix(".txt")))
    if not pairs:
        raise ValueError(f"dataset {root}: no images{' in split ' + split if split else ''}")
    return pairs


def read_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    from lineguard.learn.train import read_yolo_labels

    return read_yolo_labels(path, width, height)


# ---------------------------------------------------------------------------------------------
# Metrics


def evaluate_model(
    model_xml: str | Path,
    dataset: str | Path,
    *,
    split: str | None = None,
    precision: str = "f32",
    conf: float = 0.001,
    iou: float = 0.7,
    conf_report: float = 0.25,
    multi_label: bool = True,
    on_image: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run the IR over every labelled image of ``dataset`` and report mAP50, mAP50-95 (overall and
    per class), precision/recall at ``conf_report`` and PR curves at IoU 0.5 (101 recall points).
    Decoding is ``yolo val``'s (multi-label, see :func:`decode_yolo`)."""
    detector = IrDetector(model_xml, precision)
    preds, targets = [], []
    for image_path, label_path in labelled_images(dataset, split):
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"could not read image {image_path}")
        h, w = image.shape[:2]
        t_cls, t_xyxy = read_labels(label_path, w, h)
        xyxy, confidence, class_id = detector(image, conf=conf, iou=iou, multi_label=multi_label)
        preds.append((xyxy, confidence, class_id))
        targets.append((t_xyxy, t_cls))
        if on_image:
            on_image()
    report = map_report(preds, targets, detector.names, conf_report=conf_report)
    report.update({"model": str(detector.path), "dataset": str(dataset), "precision": precision, "conf": conf, "iou": iou, "multi_label": multi_label})
    return report


def map_report(
    preds: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    targets: list[tuple[np.ndarray, np.ndarray]],
    names: list[str],
    *,
    conf_report: float = 0.25,
) -> dict[str, Any]:
    """Metrics of per-image predictions ``(xyxy, conf, class_id)`` against targets ``(xyxy, class_id)``."""
    import supervision as sv
    from supervision.metrics import MeanAveragePrecision

    metric = MeanAveragePrecision()
    for (p_xyxy, p_conf, p_cls), (t_xyxy, t_cls) in zip(preds, targets):
        metric.update(
            sv.Detections(xyxy=np.asarray(p_xyxy, np.float32).reshape(-1, 4), confidence=np.asarray(p_conf, np.float32), class_id=np.asarray(p_cls, int)),
            sv.Detections(xyxy=np.asarray(t_xyxy, np.float32).reshape(-1, 4), class_id=np.asarray(t_cls, int)),
        )
    result = metric.compute()
    instances = {name: 0 for name in names}
    for _, t_cls in targets:
        for c in t_cls:
            instances[names[int(c)]] += 1
    per_class: dict[str, Any] = {}
    matched = {int(c): row for c, row in zip(result.matched_classes, result.ap_per_class)}
    curves: dict[str, Any] = {}
    for c, name in enumerate(names):
        recall, prec, confs = pr_curve(preds, targets, c)
        p_at, r_at = _at_conf(recall, prec, confs, conf_report, instances[name])
        row = matched.get(c)
        valid = row[row >= 0] if row is not None else np.zeros(0)
        per_class[name] = {
            "instances": instances[name],
            "ap50": round(float(row[0]), 4) if row is not None and row[0] >= 0 else None,
            "ap50_95": round(float(valid.mean()), 4) if len(valid) else None,
            f"precision@{conf_report}": p_at,
            f"recall@{conf_report}": r_at,
        }
        curves[name] = _resample(recall, prec)
    return {
        "images": len(targets),
        "instances": instances,
        "map50": round(float(result.map50), 4),
        "map50_95": round(float(result.map50_95), 4),
        "per_class": per_class,
        "conf_report": conf_report,
        "pr_curves": curves,
        "metric": "COCO-style AP (supervision MeanAveragePrecision: 101-point interpolation, 100 detections/image)",
    }


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    ih = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def pr_curve(
    preds: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    targets: list[tuple[np.ndarray, np.ndarray]],
    class_id: int,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, precision and confidence after each prediction of ``class_id`` (by falling
    confidence); a prediction is a true positive when it overlaps an unmatched target of its class
    by ``iou_threshold`` (greedy, best IoU first, per image)."""
    scores, hits = [], []
    n_targets = 0
    for (p_xyxy, p_conf, p_cls), (t_xyxy, t_cls) in zip(preds, targets):
        p_sel = np.asarray(p_cls) == class_id
        t_sel = np.asarray(t_cls) == class_id
        tb = np.asarray(t_xyxy).reshape(-1, 4)[t_sel]
        n_targets += len(tb)
        pb = np.asarray(p_xyxy).reshape(-1, 4)[p_sel]
        pc = np.asarray(p_conf)[p_sel]
        order = np.argsort(-pc, kind="stable")
        ious = box_iou(pb[order], tb) if len(tb) else np.zeros((len(pb), 0))
        taken = np.zeros(len(tb), bool)
        for k, i in enumerate(order):
            hit = False
            if len(tb):
                cand = np.where(taken, -1.0, ious[k])
                j = int(cand.argmax())
                if cand[j] >= iou_threshold:
                    taken[j] = True
                    hit = True
            scores.append(float(pc[i]))
            hits.append(hit)
    if not scores:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-np.array(scores), kind="stable")
    tp = np.cumsum(np.array(hits)[order])
    fp = np.cumsum(~np.array(hits)[order])
    recall = tp / max(n_targets, 1)
    precision = tp / np.maximum(tp + fp, 1)
    return recall, precision, np.array(scores)[order]


def _at_conf(recall: np.ndarray, precision: np.ndarray, confs: np.ndarray, conf: float, n: int) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    k = int(np.sum(confs >= conf))
    if k == 0:
        return None, 0.0
    return round(float(precision[k - 1]), 4), round(float(recall[k - 1]), 4)


def _resample(recall: np.ndarray, precision: np.ndarray) -> dict[str, list[float]]:
    """Interpolated precision (max precision at recall >= r) at 101 recall points, COCO-style."""
    grid = np.linspace(0, 1, 101)
    if len(recall) == 0:
        return {"recall": grid.round(2).tolist(), "precision": [0.0] * 101}
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, grid, side="left")
    prec = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return {"recall": grid.round(2).tolist(), "precision": prec.round(4).tolist()}


def write_pr_curve(reports: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """One panel per evaluation set, one PR curve per class (IoU 0.5), AP50 in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(reports)
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 5), squeeze=False)
    for ax, name in zip(axes[0], sets):
        report = reports[name]
        for cls, curve in report["pr_curves"].items():
            ap = report["per_class"][cls]["ap50"]
            ax.plot(curve["recall"], curve["precision"], label=f"{cls} {ap:.3f}" if ap is not None else f"{cls} n/a")
        ax.set_title(f"{name}: mAP50 {report['map50']:.3f}, mAP50-95 {report['map50_95']:.3f}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8, title="class AP50")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
