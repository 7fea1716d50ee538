"""``lineguard detect`` on images, folders and videos (JSON lines, annotated images, errors that
name the file), ``lineguard bench detector`` runs, and parity with ultralytics' own predictions.

Parity fixture (added by whoever trains with ultralytics; skipped until it exists):
``tests/fixtures/ultra_tiny/`` holds a tiny model exported with ultralytics
(``model.export(format="openvino", imgsz=...)``: ``model.xml``, ``model.bin``, ``metadata.yaml``),
the test images, and ``predictions.json`` — ultralytics' predictions on that same IR::

    [
      {"image": "bus.png", "conf": 0.25, "iou": 0.45,
       "boxes": [{"class_id": 0, "conf": 0.87, "xyxy": [x0, y0, x1, y1]}, ...]},
      ...
    ]

``image`` is a file name beside predictions.json; ``conf``/``iou`` are what ultralytics predicted
with (``model.predict(image, conf=..., iou=...)``); ``boxes`` are ``results[0].boxes`` (``cls``,
``conf``, ``xyxy`` in original pixels). An optional ``"precision": "f32"`` says the predictions
were made at that OpenVINO precision (default ``auto``: the CPU's default, which is what
ultralytics uses). ``lineguard detect`` must give the same boxes within 1 px and 0.01 confidence,
and no others.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.nodes.detect_cli import register, register_bench

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ultra_tiny"


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lineguard")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    bench = sub.add_parser("bench").add_subparsers(dest="bench", required=True)
    register_bench(bench)
    args = parser.parse_args(argv)
    return args.func(args)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def frame_png(tmp_path) -> Path:
    path = tmp_path / "frames" / "belt.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), np.zeros((96, 128, 3), np.uint8))
    return path


EXPECTED_BELT = [
    {"class_id": 0, "class_name": "pcb", "conf": 0.875, "xyxy": [16.0, 0.0, 48.0, 32.0]},
    {"class_id": 1, "class_name": "bracket", "conf": 0.625, "xyxy": [88.0, 8.0, 104.0, 24.0]},
    {"class_id": 2, "class_name": "scratch", "conf": 0.3125, "xyxy": [52.0, 76.0, 76.0, 84.0]},
]


def test_json_gives_one_line_per_detection_in_original_pixels(yolo_model, frame_png, capsys):
    assert run_cli(["detect", str(yolo_model), str(frame_png), "--json"]) == 0
    records = json_lines(capsys.readouterr().out)
    assert records == [{"source": str(frame_png), "frame": 0, **r} for r in EXPECTED_BELT]


def test_conf_and_iou_change_what_is_kept(yolo_model, frame_png, capsys):
    run_cli(["detect", str(yolo_model), str(frame_png), "--json", "--conf", "0.5"])
    assert [r["class_name"] for r in json_lines(capsys.readouterr().out)] == ["pcb", "bracket"]
    run_cli(["detect", str(yolo_model), str(frame_png), "--json", "--iou", "0.9"])
    assert [r["class_name"] for r in json_lines(capsys.readouterr().out)] == ["pcb", "pcb", "bracket", "scratch"]


def test_a_folder_and_a_video_are_read_frame_by_frame(yolo_model, frame_png, tmp_path, capsys):
    cv2.imwrite(str(frame_png.with_name("belt2.jpg")), np.zeros((96, 128, 3), np.uint8))
    (frame_png.parent / "notes.txt").write_text("not an image")
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for _ in range(3):
        writer.write(np.zeros((96, 128, 3), np.uint8))
    writer.release()
    assert run_cli(["detect", str(yolo_model), str(frame_png.parent), str(video), "--json"]) == 0
    records = json_lines(capsys.readouterr().out)
    seen = sorted({(Path(r["source"]).name, r["frame"]) for r in records})
    assert seen == [("belt.png", 0), ("belt2.jpg", 0), ("line.avi", 0), ("line.avi", 1), ("line.avi", 2)]
    assert len(records) == 5 * 3


def test_save_writes_annotated_images_and_the_summary_counts_classes(yolo_model, frame_png, tmp_path, capsys):
    out = tmp_path / "annotated"
    assert run_cli(["detect", str(yolo_model), str(frame_png), "--save", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{frame_png}: 3 detections: 1 bracket, 1 pcb, 1 scratch" in captured.out
    assert "1 frames from 1 inputs: 3 detections" in captured.out
    assert "layout yolo, input 64x64" in captured.err
    annotated = cv2.imread(str(out / "belt.png"))
    assert annotated is not None and annotated.shape == (96, 128, 3)
    assert annotated.any()  # boxes drawn on a black frame


def test_a_missing_input_or_model_is_named_with_exit_code_1(yolo_model, frame_png, tmp_path, capsys):
    assert run_cli(["detect", str(yolo_model), str(tmp_path / "nope.png")]) == 1
    assert re.search(rf"error: input '{re.escape(str(tmp_path / 'nope.png'))}': expected an image, a folder or a video, found no such file or folder", capsys.readouterr().err)
    assert run_cli(["detect", str(tmp_path / "model.xml"), str(frame_png)]) == 1
    assert re.search(rf"error: model {re.escape(str(tmp_path / 'model.xml'))}: expected an OpenVINO IR .* which does not exist", capsys.readouterr().err)
    odd = tmp_path / "frame.raw"
    odd.write_bytes(b"\0" * 10)
    assert run_cli(["detect", str(yolo_model), str(odd)]) == 1
    assert "expected an image (.jpg" in capsys.readouterr().err


def test_bench_detector_prints_both_fps_the_ratio_and_latency(yolo_model, capsys):
    assert run_cli(["bench", "detector", str(yolo_model), "--frames", "20", "--latency-frames", "5", "--rounds", "2", "--requests", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["requests"] == 2 and result["layout"] == "yolo" and len(result["runs_fps"]) == 2
    for side in ("raw", "node"):
        assert result[side]["fps"] > 0 and result[side]["p99_ms"] >= result[side]["p50_ms"] > 0
    assert result["ratio_fps"] == pytest.approx(np.median([n / r for r, n in result["runs_fps"]]), rel=0.05)
    assert result["detections_per_frame"] == 3


# -- parity with ultralytics -----------------------------------------------------------------------------
def _match(expected: list[dict], got: list[dict], px: float = 1.0, conf: float = 0.01) -> list[str]:
    """Problems, if any: each expected box needs one box of its class within px and conf."""
    problems, free = [], list(got)
    for box in sorted(expected, key=lambda b: -b["conf"]):
        close = [g for g in free if g["class_id"] == box["class_id"] and max(abs(a - b) for a, b in zip(g["xyxy"], box["xyxy"])) <= px and abs(g["conf"] - box["conf"]) <= conf]
        if close:
            free.remove(min(close, key=lambda g: max(abs(a - b) for a, b in zip(g["xyxy"], box["xyxy"]))))
        else:
            problems.append(f"ultralytics found class {box['class_id']} conf {box['conf']:.3f} at {box['xyxy']}; lineguard did not (within {px} px, {conf})")
    problems += [f"lineguard found class {g['class_id']} conf {g['conf']:.3f} at {g['xyxy']}; ultralytics did not" for g in free]
    return problems


def ultralytics_style_predict(compiled, image: np.ndarray, conf: float, iou: float, max_det: int = 300) -> list[dict]:
    """An independent re-implementation of ultralytics' predict path (LetterBox, preprocess,
    non_max_suppression with torchvision's NMS rule, scale_boxes), on the unmodified IR."""
    h, w = compiled.inputs[0].get_shape()[2:]
    shape = image.shape[:2]
    r = min(h / shape[0], w / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = (w - new_unpad[0]) / 2, (h - new_unpad[1]) / 2
    img = cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR) if shape[::-1] != new_unpad else image
    img = cv2.copyMakeBorder(img, int(round(dh - 0.1)), int(round(dh + 0.1)), int(round(dw - 0.1)), int(round(dw + 0.1)), cv2.BORDER_CONSTANT, value=(114, 114, 114))
    x = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)[None]).astype(np.float32) / 255
    pred = compiled({0: x})[0][0].T  # [N, 4 + nc]
    pred = pred[pred[:, 4:].max(1) > conf]
    xy, half = pred[:, :2], pred[:, 2:4] / 2
    box = np.concatenate([xy - half, xy + half], 1)
    score, cls = pred[:, 4:].max(1), pred[:, 4:].argmax(1)
    box, score, cls = box[score > conf], score[score > conf], cls[score > conf]
    shifted = box + cls[:, None].astype(np.float32) * np.float32(7680)
    order, keep = list(np.argsort(-score, kind="stable")), []
    while order:  # torchvision.ops.nms: drop boxes whose IoU with a kept one is > iou
        i = order.pop(0)
        keep.append(i)
        area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
        rest = []
        for j in order:
            a, b = shifted[i], shifted[j]
            inter = max(min(a[2], b[2]) - max(a[0], b[0]), np.float32(0)) * max(min(a[3], b[3]) - max(a[1], b[1]), np.float32(0))
            if not inter / (area(a) + area(b) - inter) > iou:
                rest.append(j)
        order = rest
    keep = keep[:max_det]
    gain = min(h / shape[0], w / shape[1])
    pad = round((w - shape[1] * gain) / 2 - 0.1), round((h - shape[0] * gain) / 2 - 0.1)
    out = box[keep].copy()
    out[:, [0, 2]] -= pad[0]
    out[:, [1, 3]] -= pad[1]
    out /= gain
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, shape[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, shape[0])
    return [{"class_id": int(c), "conf": float(s), "xyxy": [float(v) for v in b]} for b, s, c in zip(out, score[keep], cls[keep])]


@pytest.mark.parametrize("precision", ["f32", "auto"])
def test_detect_matches_an_independent_ultralytics_style_reference(tmp_path, precision, capsys):
    import openvino as ov

    from lineguard.nodes.detector_bench import build_synthetic_yolo, synthetic_frame

    # Given a YOLO-shaped network whose outputs depend on the image, and frames of three shapes
    model = build_synthetic_yolo(tmp_path / "net", imgsz=128, nc=80, seed=3)  # 336 anchors
    config = {} if precision == "auto" else {"INFERENCE_PRECISION_HINT": precision}
    reference = ov.Core().compile_model(str(model), "CPU", config)
    rng = np.random.default_rng(8)
    images = {"belt.png": np.ascontiguousarray(synthetic_frame(), dtype=np.uint8), "portrait.png": rng.integers(0, 256, (300, 171, 3), np.uint8), "small.png": rng.integers(0, 256, (50, 90, 3), np.uint8)}
    problems, compared = [], 0
    for name, image in images.items():
        cv2.imwrite(str(tmp_path / name), image)
        # The second setting keeps hundreds of weak candidates whose overlaps sit around IoU 0.5
        # (neighbouring anchors), so NMS decides box by box at the threshold.
        for conf, iou, max_det in ((0.25, 0.45, 300), (0.0008, 0.5, 2000)):
            # When lineguard detect and the reference run at the same conf/iou/precision
            run_cli(["detect", str(model), str(tmp_path / name), "--json", "--conf", str(conf), "--iou", str(iou), "--max-det", str(max_det), "--precision", precision])
            got = json_lines(capsys.readouterr().out)
            expected = ultralytics_style_predict(reference, image, conf, iou, max_det)
            # Then they agree box for box (well inside ultralytics parity's 1 px / 0.01)
            problems += [f"{name} conf {conf} iou {iou}: {p}" for p in _match(expected, got, px=0.02, conf=1e-4)]
            compared += len(expected)
    assert not problems, "\n".join(problems[:20])
    assert compared > 500


@pytest.mark.skipif(not (FIXTURE / "predictions.json").is_file(), reason=f"needs the ultralytics-exported fixture {FIXTURE}/ (model.xml + predictions.json + images); see this module's docstring")
def test_detect_matches_ultralytics_predictions_on_the_same_ir(capsys):
    cases = json.loads((FIXTURE / "predictions.json").read_text(encoding="utf-8"))
    assert cases, "predictions.json lists no images"
    model = FIXTURE / "model.xml" if (FIXTURE / "model.xml").is_file() else FIXTURE
    problems = []
    for case in cases:
        argv = ["detect", str(model), str(FIXTURE / case["image"]), "--json", "--conf", str(case["conf"]), "--iou", str(case["iou"])]
        assert run_cli([*argv, "--precision", case.get("precision", "auto")]) == 0
        got = json_lines(capsys.readouterr().out)
        problems += [f"{case['image']}: {p}" for p in _match(case["boxes"], got)]
    assert not problems, "\n".join(problems)
