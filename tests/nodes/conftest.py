"""Tiny OpenVINO detection models, built with the openvino Python API and saved as IR to tmp_path.

Tests get the builders through the ``tiny_models`` fixture (``tiny_models.yolo(...)`` etc.; a
``conftest`` cannot be imported by name beside ``tests/conftest.py``). Each builder returns the
path of a ``model.xml`` whose output is fully controlled by the test:
constant detections, optionally shifted by the mean of the input image so that a test can tell
which frame a result came from. Values are exactly representable in bf16, so the outputs do not
depend on the CPU's default inference precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Imported at collection time on purpose: `import openvino` starts a (non-daemon) telemetry sender
# thread, which must not count as a thread leaked by the first test that happens to import it.
import openvino as ov
import openvino.opset8 as opset8
import openvino.opset13 as ops
import pytest
import yaml


def _image_input(shape: Sequence[int | None]) -> ov.Node:
    return ops.parameter(ov.PartialShape([-1 if d is None else d for d in shape]), np.float32, name="images")


def _input_mean(x: ov.Node) -> ov.Node:
    """Mean of the whole input tensor, a scalar."""
    rank = x.get_output_partial_shape(0).rank.get_length()
    return ops.reduce_mean(x, ops.constant(np.arange(rank, dtype=np.int64)), False)


def _save(model: ov.Model, folder: Path, metadata: dict | None = None, rt_info: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in (rt_info or {}).items():
        model.set_rt_info(value, ["model_info", key])
    path = folder / "model.xml"
    ov.save_model(model, str(path), compress_to_fp16=False)
    if metadata is not None:
        (folder / "metadata.yaml").write_text(yaml.safe_dump(metadata), encoding="utf-8")
    return path


def yolo_head(anchors: Sequence[tuple[float, float, float, float, Sequence[float]]], nc: int, pad_to: int = 0) -> np.ndarray:
    """A [1, 4+nc, N] head: one column (cx, cy, w, h, scores...) per anchor; extra zero anchors up to pad_to."""
    n = max(len(anchors), pad_to)
    head = np.zeros((1, 4 + nc, n), np.float32)
    for j, (cx, cy, w, h, scores) in enumerate(anchors):
        head[0, :4, j] = (cx, cy, w, h)
        head[0, 4 : 4 + len(scores), j] = scores
    return head


def build_yolo(folder: Path, head: np.ndarray, *, size: int | tuple[int, int] = 64, shift_cx_by_mean: float = 0.0, input_shape: Sequence[int | None] | None = None, metadata: dict | None = None, rt_info: dict | None = None) -> Path:
    """An ultralytics-layout model: output = head (+ shift_cx_by_mean × mean(input) on every anchor's cx)."""
    h, w = (size, size) if isinstance(size, int) else size
    x = _image_input(input_shape or (1, 3, h, w))
    shift = np.zeros_like(head)
    shift[0, 0, :] = shift_cx_by_mean
    y = ops.add(ops.constant(head), ops.multiply(_input_mean(x), ops.constant(shift)))
    return _save(ov.Model([y], [x], "tiny_yolo"), folder, metadata, rt_info)


def build_yolo_e2e(folder: Path, rows: Sequence[Sequence[float]], *, size: int = 64, k: int = 10, metadata: dict | None = None, rt_info: dict | None = None) -> Path:
    """An NMS-free model [1, k, 6]: the given rows (x0, y0, x1, y1, score, class), then zero rows."""
    table = np.zeros((1, k, 6), np.float32)
    table[0, : len(rows)] = rows
    x = _image_input((1, 3, size, size))
    y = ops.add(ops.constant(table), ops.multiply(_input_mean(x), ops.constant(np.float32(0))))
    return _save(ov.Model([y], [x], "tiny_e2e"), folder, metadata, rt_info)


def build_detection_output(folder: Path, priors: Sequence[Sequence[float]], class_scores: Sequence[Sequence[float]], *, size: tuple[int, int] = (64, 96), keep_top_k: int = 8, nms_threshold: float = 0.5, rt_info: dict | None = None) -> Path:
    """A real DetectionOutput op (SSD style): zero box deltas on the given normalised priors
    (x0, y0, x1, y1), ``class_scores`` per prior (class 0 = background), so the detections are
    the priors themselves. Input [1, 3, size]."""
    num_priors, num_classes = len(priors), len(class_scores[0])
    x = _image_input((1, 3, *size))
    box_logits = ops.add(ops.constant(np.zeros((1, num_priors * 4), np.float32)), ops.multiply(_input_mean(x), ops.constant(np.float32(0))))
    proposals = np.zeros((1, 2, num_priors * 4), np.float32)
    proposals[0, 0] = np.asarray(priors, np.float32).reshape(-1)
    proposals[0, 1] = 0.1
    attrs = {"keep_top_k": [keep_top_k], "nms_threshold": nms_threshold, "background_label_id": 0, "top_k": keep_top_k, "code_type": "caffe.PriorBoxParameter.CORNER", "share_location": True, "normalized": True, "confidence_threshold": 0.01}
    det = opset8.detection_output(box_logits, ops.constant(np.asarray(class_scores, np.float32).reshape(1, -1)), ops.constant(proposals), attrs)
    return _save(ov.Model([det], [x], "tiny_ssd"), folder, None, rt_info)


def build_raw(folder: Path, input_shape: Sequence[int | None], output_shapes: Sequence[Sequence[int]], name: str = "odd") -> Path:
    """A model with the given input shape and constant outputs of the given shapes (for bad models)."""
    x = _image_input(input_shape)
    mean = _input_mean(x)
    outs = [ops.add(ops.constant(np.zeros(s, np.float32)), ops.multiply(mean, ops.constant(np.float32(0)))) for s in output_shapes]
    return _save(ov.Model(outs, [x], name), folder)


def build_identity(folder: Path, size: tuple[int, int]) -> Path:
    """Output = input [1, 3, H, W]: shows exactly what the model receives after preprocessing."""
    x = _image_input((1, 3, *size))
    return _save(ov.Model([ops.multiply(x, ops.constant(np.float32(1)))], [x], "identity"), folder)


# Three well-separated parts and one duplicate of part 0 (IoU 0.78) in a 64×64 model input.
THREE_CLASSES = ["pcb", "bracket", "scratch"]
YOLO_ANCHORS = [
    (16.0, 16.0, 16.0, 16.0, [0.875, 0.0, 0.0]),  # pcb, best
    (17.0, 17.0, 16.0, 16.0, [0.75, 0.0, 0.0]),  # pcb duplicate: suppressed by NMS
    (48.0, 16.0, 8.0, 8.0, [0.0, 0.625, 0.125]),  # bracket
    (32.0, 48.0, 12.0, 4.0, [0.0, 0.0, 0.3125]),  # scratch, weak
]


@pytest.fixture
def yolo_model(tmp_path: Path) -> Path:
    """ultralytics-style export folder: model.xml + metadata.yaml naming three classes."""
    return build_yolo(
        tmp_path / "tiny_openvino_model",
        yolo_head(YOLO_ANCHORS, 3, pad_to=84),
        metadata={"task": "detect", "names": dict(enumerate(THREE_CLASSES)), "imgsz": [64, 64], "end2end": False},
        rt_info={"model_type": "YOLO", "labels": THREE_CLASSES, "pad_value": 114, "reverse_input_channels": True, "scale_values": [255.0], "resize_type": "fit_to_window_letterbox"},
    )


class TinyModels:
    """The builders above, writing into one test's tmp_path: ``tiny_models.yolo("name", head)``."""

    THREE_CLASSES = THREE_CLASSES
    YOLO_ANCHORS = YOLO_ANCHORS
    yolo_head = staticmethod(yolo_head)

    def __init__(self, root: Path) -> None:
        self.root = root

    def yolo(self, name: str, head: np.ndarray, **kwargs) -> Path:
        return build_yolo(self.root / name, head, **kwargs)

    def yolo_e2e(self, name: str, rows: Sequence[Sequence[float]], **kwargs) -> Path:
        return build_yolo_e2e(self.root / name, rows, **kwargs)

    def detection_output(self, name: str, priors: Sequence[Sequence[float]], class_scores: Sequence[Sequence[float]], **kwargs) -> Path:
        return build_detection_output(self.root / name, priors, class_scores, **kwargs)

    def raw(self, name: str, input_shape: Sequence[int | None], output_shapes: Sequence[Sequence[int]]) -> Path:
        return build_raw(self.root / name, input_shape, output_shapes)

    def identity(self, name: str, size: tuple[int, int]) -> Path:
        return build_identity(self.root / name, size)


@pytest.fixture
def tiny_models(tmp_path: Path) -> TinyModels:
    return TinyModels(tmp_path)
