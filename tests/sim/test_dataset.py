"""Dataset export (YOLO, COCO), preview, and the ``lineguard sim dataset|preview`` commands."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import cv2
import pytest
import yaml

from lineguard.sim import render_cli
from lineguard.sim.conveyor import Conveyor
from lineguard.sim.dataset import export_dataset, run_seed
from lineguard.sim.preview import write_preview
from lineguard.sim.scenario import load_scenario
from lineguard.sim.truth import CLASSES

SMALL = {"camera.resolution": "vga", "parts.count": 4}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineguard sim")
    render_cli.register(parser.add_subparsers(dest="sim_command", required=True))
    return parser


@pytest.fixture(scope="module")
def yolo_export(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("yolo")
    summary = export_dataset(load_scenario("shift", SMALL, seed=3), 10, out, progress=False)
    return out, summary


def test_yolo_export_has_the_layout_ultralytics_expects(yolo_export) -> None:
    out, summary = yolo_export
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES)) and data["nc"] == len(CLASSES)
    assert (out / data["train"]).is_dir() and (out / data["val"]).is_dir()
    assert Path(data["path"]) == out.resolve()
    train = sorted((out / "images" / "train").glob("*.jpg"))
    val = sorted((out / "images" / "val").glob("*.jpg"))
    assert summary["train"] == len(train) and summary["val"] == len(val) and len(train) + len(val) == 10
    assert len(val) == 2  # one run in five is a val run
    for image in train + val:
        label = out / "labels" / image.parent.name / (image.stem + ".txt")
        assert cv2.imread(str(image)).shape == (480, 640, 3)
        for line in label.read_text().splitlines():
            cls, *box = line.split()
            assert 0 <= int(cls) < len(CLASSES)
            assert all(0.0 <= float(v) <= 1.0 for v in box)


def test_yolo_labels_are_the_frame_truth_of_the_exported_frame(yolo_export) -> None:
    out, _ = yolo_export
    manifest = json.loads((out / "manifest.json").read_text())
    image = max(manifest["images"], key=lambda im: im["boxes"])
    scenario = load_scenario("shift", SMALL, seed=run_seed(3, image["run"]))
    truth = Conveyor(scenario).frame_truth(image["frame"])
    keep = truth.select(truth.visible >= 0.25)
    label = out / image["file"].replace("images/", "labels/").replace(".jpg", ".txt")
    rows = [line.split() for line in label.read_text().splitlines()]
    assert len(rows) == len(keep) == image["boxes"] > 0
    for (cls, cx, cy, w, h), box, c in zip(rows, keep.boxes_xyxy, keep.class_ids):
        assert int(cls) == c
        assert float(cx) * 640 == pytest.approx((box[0] + box[2]) / 2, abs=0.01)
        assert float(h) * 480 == pytest.approx(box[3] - box[1], abs=0.01)


def test_a_tiny_export_still_has_a_val_run(tmp_path) -> None:
    summary = export_dataset(load_scenario("nominal", SMALL), 3, tmp_path, progress=False)
    assert (summary["train"], summary["val"]) == (2, 1)


def test_train_and_val_never_share_a_run(yolo_export) -> None:
    out, _ = yolo_export
    manifest = json.loads((out / "manifest.json").read_text())
    split_of_run: dict[int, set[str]] = {}
    for image in manifest["images"]:
        split_of_run.setdefault(image["run"], set()).add(image["split"])
    assert all(len(splits) == 1 for splits in split_of_run.values())
    parts = json.loads((out / "parts.json").read_text())
    assert [r["run"] for r in parts["runs"]] == sorted(split_of_run)
    part = parts["runs"][0]["parts"][0]
    assert {"part_id", "part_type", "defective", "defect_kinds", "t_at_reject_ns", "encoder_at_reject"} <= set(part)


def test_export_is_byte_identical_for_the_same_seed(yolo_export) -> None:
    out, summary = yolo_export
    before = _hashes(out)
    again = export_dataset(load_scenario("shift", SMALL, seed=3), 10, out, overwrite=True, progress=False)
    assert again == summary
    assert _hashes(out) == before


def test_export_into_a_non_empty_directory_needs_overwrite(yolo_export) -> None:
    out, _ = yolo_export
    with pytest.raises(ValueError, match=r"out: directory .* is not empty; choose a new one or pass --overwrite"):
        export_dataset(load_scenario("shift", SMALL, seed=3), 10, out, progress=False)


def test_coco_export_matches_the_manifest(tmp_path) -> None:
    summary = export_dataset(load_scenario("nominal", SMALL, seed=1), 6, tmp_path, fmt="coco", val_fraction=0.5, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    total = 0
    for split in ("train", "val"):
        coco = json.loads((tmp_path / "annotations" / f"instances_{split}.json").read_text())
        assert [c["name"] for c in coco["categories"]] == list(CLASSES)
        assert len(coco["images"]) == summary[split]
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 640.01 and y + h <= 480.01 and ann["visible"] >= 0.25
            assert 1 <= ann["category_id"] <= len(CLASSES)
        for image in coco["images"]:
            assert (tmp_path / "images" / image["file_name"]).is_file()
        total += len(coco["annotations"])
    assert total == sum(i["boxes"] for i in manifest["images"]) == sum(summary["boxes_per_class"].values())
    assert not (tmp_path / "labels").exists()


def test_bad_export_arguments_are_named(tmp_path) -> None:
    scenario = load_scenario("nominal", SMALL)
    with pytest.raises(ValueError, match="format: expected one of yolo, coco, got 'voc'"):
        export_dataset(scenario, 5, tmp_path, fmt="voc", progress=False)
    with pytest.raises(ValueError, match="frames: expected an integer >= 1, got 0"):
        export_dataset(scenario, 0, tmp_path, progress=False)


def test_preview_writes_a_playable_mp4_and_a_contact_sheet(tmp_path) -> None:
    result = write_preview(load_scenario("harsh", SMALL), tmp_path / "run.mp4", frames=12, sheet_tiles=6, with_truth=True, progress=False)
    video = cv2.VideoCapture(result["video"])
    try:
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
        assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (640, 480)
    finally:
        video.release()
    sheet = cv2.imread(str(tmp_path / "run.png"))
    assert sheet is not None and sheet.shape[1] > sheet.shape[0]


def test_cli_dataset_command_exports(tmp_path, capsys) -> None:
    args = _parser().parse_args(
        ["dataset", "--scenario", "nominal", "--frames", "5", "--out", str(tmp_path / "ds"), "--format", "coco", "--set", "camera.resolution=vga", "--set", "parts.count=3", "--no-progress"]
    )
    assert args.func(args) == 0
    assert "images: 5" in capsys.readouterr().out
    assert (tmp_path / "ds" / "annotations" / "instances_train.json").is_file()


def test_cli_preview_command_writes_the_files(tmp_path) -> None:
    args = _parser().parse_args(["preview", "--out", str(tmp_path / "p.mp4"), "--frames", "3", "--set", "camera.resolution=vga", "--no-progress"])
    assert args.func(args) == 0
    assert (tmp_path / "p.mp4").stat().st_size > 0 and (tmp_path / "p.png").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "nominl"], "error: unknown scenario 'nominl': known scenarios are harsh, nominal, shift"),
        (["--set", "belt.speed_mm_s=-5"], "parameter 'belt.speed_mm_s': expected a number > 0 (mm/s), got -5"),
        (["--set", "parts.spacing_mm=120"], "parameter 'parts.spacing_mm': parts would overlap on the belt"),
        (["--set", "belt.speed_mm_s"], "--set 'belt.speed_mm_s': expected NAME=VALUE"),
    ],
)
def test_cli_bad_input_exits_1_with_a_message_naming_it(tmp_path, capsys, argv: list[str], message: str) -> None:
    args = _parser().parse_args(["dataset", "--out", str(tmp_path / "ds"), "--frames", "2", "--no-progress", *argv])
    assert args.func(args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_cli_help_shows_defaults() -> None:
    help_text = _parser()._subparsers._group_actions[0].choices["dataset"].format_help()
    assert "--format {yolo,coco}" in help_text and "(default: yolo)" in help_text and "(default: 0.2)" in help_text
