"""The training pipeline's pieces that need no ultralytics: dataset assembly, BYO datasets, the
model folder, evaluation (against ultralytics' own predictions on a tiny fixture IR) and the
missing-extra message. One end-to-end training run is marked slow."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lineguard.learn import train_cli
from lineguard.runtime.cli import main
from lineguard.learn.evaluate import IrDetector, evaluate_model, map_report, read_class_names
from lineguard.learn.train import (
    MissingTrainExtra,
    TrainJob,
    TrainSettings,
    build_sim_dataset,
    check_seeds_disjoint,
    clip_boxes,
    find_data_yaml,
    model_card,
    model_metadata,
    read_yolo_labels,
    require_ultralytics,
    run_training,
    tile_positions,
    train_yolo,
    write_model_folder,
    yolo_label_text,
)
from lineguard.sim.truth import CLASSES

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ultra_tiny"
TINY_XML = FIXTURE / "model.xml"
VGA = {"camera.resolution": "vga", "camera.mm_per_px": 1.0, "parts.spacing_mm": 180.0, "parts.spacing_jitter_mm": 10.0}


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lineguard")
    train_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def without_ultralytics(monkeypatch):
    for name in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_VERBOSE"):
        monkeypatch.setenv(name, "0" if name != "YOLO_OFFLINE" else "1")
    for name in [m for m in sys.modules if m == "ultralytics" or m.startswith("ultralytics.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics -> ImportError


# -- the optional extra -----------------------------------------------------------------------


def test_without_the_train_extra_the_error_says_how_to_install_it(without_ultralytics):
    with pytest.raises(MissingTrainExtra, match=r"optional 'train' extra \(ultralytics, AGPL-3.0, pulls torch\): pip install 'lineguard\[train\]'"):
        require_ultralytics()


def test_lineguard_train_without_the_extra_exits_2_before_rendering_anything(without_ultralytics, tmp_path, capsys):
    code = cli("train", "--name", "m", "--out", str(tmp_path / "models"), "--workdir", str(tmp_path / "work"), "--no-progress")
    assert code == train_cli.EXIT_MISSING_EXTRA
    assert "pip install 'lineguard[train]'" in capsys.readouterr().err
    assert not (tmp_path / "work").exists() and not (tmp_path / "models").exists()


def test_training_never_starts_from_a_downloaded_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"model: expected a model definition \(yolov8n.yaml, yolo11n.yaml or a .yaml file\) .* never downloads a checkpoint; got 'yolov8n.pt'"):
        train_yolo(tmp_path / "data.yaml", tmp_path / "run", TrainSettings(model="yolov8n.pt"))


# -- the sim dataset -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ds") / "data"
    summary = build_sim_dataset(out, 6, seed=5, imgsz=320, overrides=VGA, val_fraction=0.2, progress=False)
    return out, summary


def test_the_sim_dataset_is_a_yolo_dataset_ultralytics_can_read(sim_dataset):
    out, summary = sim_dataset
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES)) and data["train"] == "images/train" and data["val"] == "images/val"
    assert summary["images"]["train"] + summary["images"]["val"] == 6 and summary["images"]["val"] >= 1
    for image in (out / "images").rglob("*.jpg"):
        assert max(cv2.imread(str(image)).shape[:2]) == 320  # long side scaled to imgsz, as the letterbox does
        label = out / "labels" / image.parent.name / (image.stem + ".txt")
        rows = np.loadtxt(label, ndmin=2)
        assert len(rows) and ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()
        assert set(rows[:, 0].astype(int)) <= set(range(len(CLASSES)))
    assert not (out / "rendered").exists()


def test_train_images_are_augmented_and_val_images_are_not_and_seeds_are_recorded(sim_dataset):
    out, summary = sim_dataset
    manifest = json.loads((out / "manifest.json").read_text())
    train = [i for i in manifest["images"] if i["split"] == "train"]
    val = [i for i in manifest["images"] if i["split"] == "val"]
    assert any(i["augment"] and len(i["augment"]) > 2 for i in train)  # (seed, index) + at least one augmentation
    assert all(i["augment"] is None for i in val)
    assert summary["seed"] == 5 and summary["augment_seed"] == 5
    assert summary["run_seeds"]["train"] and summary["run_seeds"]["val"]
    assert not set(summary["run_seeds"]["train"]) & set(summary["run_seeds"]["val"])


def test_the_same_seed_builds_the_same_dataset_byte_for_byte(sim_dataset, tmp_path):
    out, _ = sim_dataset
    again = tmp_path / "again"
    build_sim_dataset(again, 6, seed=5, imgsz=320, overrides=VGA, val_fraction=0.2, progress=False)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name not in ("data.yaml", "manifest.json"))
    assert files and all((out / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_a_non_empty_dataset_folder_is_refused(sim_dataset):
    with pytest.raises(ValueError, match=r"dataset folder .* is not empty"):
        build_sim_dataset(sim_dataset[0], 2, seed=1, imgsz=320, progress=False)


def test_yolo_labels_round_trip(tmp_path):
    boxes = np.array([[10, 20, 110, 70], [0, 0, 640, 480]], np.float32)
    (tmp_path / "a.txt").write_text(yolo_label_text(np.array([2, 0]), boxes, 640, 480))
    classes, back = read_yolo_labels(tmp_path / "a.txt", 640, 480)
    assert classes.tolist() == [2, 0] and np.allclose(back, boxes, atol=1e-3)


def test_a_misaligned_components_two_boxes_are_labelled_misaligned_first(tmp_path):
    # ultralytics' assigner trains only the first of two identical boxes
    box = [100, 100, 120, 120]
    text = yolo_label_text(np.array([0, 2, 6, 3]), np.array([[0, 0, 300, 200], box, box, [10, 10, 20, 20]]), 640, 480)
    assert [int(line.split()[0]) for line in text.splitlines()] == [6, 0, 2, 3]


def test_tiles_cover_a_scaled_frame_with_half_overlap():
    assert tile_positions(640, 320) == [0, 160, 320]
    assert tile_positions(360, 320) == [20]  # 20 px of rail cut at top and bottom
    assert tile_positions(320, 320) == [0] and tile_positions(200, 320) == [0]


def test_boxes_cut_by_a_tile_are_clipped_and_kept_only_when_a_quarter_shows():
    classes, boxes = clip_boxes(np.array([0, 1, 2]), np.array([[150, 10, 250, 50], [300, 10, 400, 50], [10, 10, 12, 50]]), (0, 0, 320, 320))
    assert classes.tolist() == [0, 2]  # 20 of 100 px inside: dropped; a 2 px wide box inside: kept
    classes, boxes = clip_boxes(np.array([0, 1]), np.array([[150, 10, 250, 50], [140, 10, 240, 50]]), (160, 0, 480, 320))
    assert classes.tolist() == [0, 1] and boxes.tolist() == [[0, 10, 90, 50], [0, 10, 80, 50]]
    classes, _ = clip_boxes(np.array([0, 1]), np.array([[90, 10, 170, 50], [140, 10, 180, 50]]), (160, 0, 480, 320))
    assert classes.tolist() == [1]  # 10 of 80 px inside: dropped; 20 of 40 px: kept


def test_a_tiled_dataset_holds_tile_sized_images_with_boxes_inside(tmp_path):
    summary = build_sim_dataset(tmp_path / "tiles", 2, seed=6, imgsz=320, tile=160, overrides=VGA, val_fraction=0.0, progress=False)
    images = sorted((tmp_path / "tiles" / "images" / "train").glob("*.jpg"))
    assert summary["tile"] == 160 and len(images) == 2 * 6  # 320x240 frames: 3 x 2 tiles
    assert all(cv2.imread(str(p)).shape[:2] == (160, 160) for p in images)


# -- bring your own dataset ------------------------------------------------------------------


def test_a_yolo_folder_without_data_yaml_gets_one_with_the_lineguard_classes(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    path = find_data_yaml(tmp_path)
    assert yaml.safe_load(path.read_text())["names"] == dict(enumerate(CLASSES))


def test_a_folder_that_is_no_yolo_dataset_is_refused_with_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match=r"no data.yaml and no images/train \+ images/val"):
        find_data_yaml(tmp_path)
    (tmp_path / "data.yaml").write_text("train: images/train\n")
    with pytest.raises(ValueError, match=r"data.yaml: missing key\(s\) val, names"):
        find_data_yaml(tmp_path)


def test_evaluation_seeds_that_overlap_training_are_refused():
    with pytest.raises(ValueError, match=r"evaluation set 'shift' reuses training run seeds \[7\]"):
        check_seeds_disjoint([5, 7], {"nominal": [1, 2], "shift": [7, 9]})


# -- the model folder and evaluation (tiny ultralytics-exported IR) ---------------------------


def test_the_fixture_ir_carries_ultralytics_class_names():
    import openvino as ov

    assert read_class_names(ov.Core().read_model(str(TINY_XML))) == list(CLASSES)


def test_the_minimal_decode_reproduces_ultralytics_predictions_at_f32():
    records = json.loads((FIXTURE / "predictions.json").read_text())
    assert {r["precision"] for r in records} == {"f32"}
    detector = IrDetector(TINY_XML, precision="f32")
    assert sum(len(r["boxes"]) for r in records) > 0, "the fixture model should detect something"
    for record in records:
        image = cv2.imread(str(FIXTURE / record["image"]))
        xyxy, conf, cls = detector(image, conf=record["conf"], iou=record["iou"])
        expected = record["boxes"]
        assert len(xyxy) == len(expected), record["image"]
        order = np.argsort(-conf, kind="stable")
        for k, box in zip(order, sorted(expected, key=lambda b: -b["conf"])):
            assert int(cls[k]) == box["class_id"]
            assert conf[k] == pytest.approx(box["conf"], abs=1e-4)
            assert np.allclose(xyxy[k], box["xyxy"], atol=0.05)


@pytest.fixture
def labelled_fixture(tmp_path) -> Path:
    """The fixture's images labelled with ultralytics' predictions, as a YOLO folder."""
    records = json.loads((FIXTURE / "predictions.json").read_text())
    for record in records:
        image = cv2.imread(str(FIXTURE / record["image"]))
        h, w = image.shape[:2]
        (tmp_path / "images" / "val").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "val").mkdir(parents=True, exist_ok=True)
        shutil.copy2(FIXTURE / record["image"], tmp_path / "images" / "val" / record["image"])
        text = yolo_label_text(np.array([b["class_id"] for b in record["boxes"]], int), np.array([b["xyxy"] for b in record["boxes"]]).reshape(-1, 4), w, h)
        (tmp_path / "labels" / "val" / (Path(record["image"]).stem + ".txt")).write_text(text)
    return tmp_path


def test_evaluating_against_the_models_own_boxes_scores_a_perfect_map(labelled_fixture):
    report = evaluate_model(TINY_XML, labelled_fixture, conf=0.1)
    assert report["images"] == 3
    assert report["map50"] == pytest.approx(1.0) and report["map50_95"] > 0.95
    for name, row in report["per_class"].items():
        assert (row["ap50"] is None) == (row["instances"] == 0), name


def test_map_per_class_counts_misses_and_false_alarms():
    target = (np.array([[0, 0, 100, 100], [200, 200, 300, 300]], np.float32), np.array([0, 1]))
    perfect = (target[0], np.array([0.9, 0.8], np.float32), target[1])
    assert map_report([perfect], [target], list(CLASSES))["map50"] == pytest.approx(1.0)
    # class 1 missed, class 0 found: class 1 AP 0, mean over the two classes 0.5
    half = (target[0][:1], np.array([0.9], np.float32), target[1][:1])
    report = map_report([half], [target], list(CLASSES))
    assert report["per_class"]["pcb"]["ap50"] == pytest.approx(1.0)
    assert report["per_class"]["bracket"]["ap50"] == pytest.approx(0.0)
    assert report["per_class"]["bracket"]["recall@0.25"] == 0.0
    assert report["map50"] == pytest.approx(0.5)


def test_lineguard_eval_model_prints_map_per_class(labelled_fixture, capsys):
    assert cli("eval-model", str(TINY_XML.parent), "--data", str(labelled_fixture), "--no-progress") == 0
    out = capsys.readouterr().out
    assert "3 images, precision f32: mAP50" in out and "scratch" in out


def test_the_model_folder_keeps_class_names_in_rt_info_and_says_how_it_was_made(tmp_path):
    meta = model_metadata(name="t", imgsz=320, command="lineguard train --name t", data={"seed": 5}, settings=TrainSettings(imgsz=320))
    write_model_folder(tmp_path / "t", TINY_XML, meta, evaluation={"sets": {}})
    detector = IrDetector(tmp_path / "t" / "model.xml")
    assert detector.names == list(CLASSES) and detector.input_hw == (320, 320)
    saved = yaml.safe_load((tmp_path / "t" / "metadata.yaml").read_text())
    assert saved["names"] == dict(enumerate(CLASSES)) and saved["imgsz"] == [320, 320] and saved["task"] == "detect"
    assert saved["lineguard"]["command"] == "lineguard train --name t"
    assert saved["lineguard"]["data"] == {"seed": 5} and "openvino" in saved["lineguard"]["versions"]
    assert json.loads((tmp_path / "t" / "eval.json").read_text()) == {"sets": {}}


def test_the_model_card_reports_every_class_for_every_set_and_says_whether_targets_are_met(tmp_path):
    per_class = {c: {"instances": 10, "ap50": 0.99, "ap50_95": 0.8, "precision@0.25": 0.9, "recall@0.25": 0.95} for c in CLASSES}
    per_class["scratch"]["ap50"] = 0.5
    sets = {
        "nominal": {"scenario": "nominal", "seed": 2001, "images": 400, "run_seeds": [1, 2], "map50": 0.96, "map50_95": 0.8, "per_class": per_class},
        "shift": {"scenario": "shift", "seed": 3001, "images": 400, "run_seeds": [3], "map50": 0.85, "map50_95": 0.7, "per_class": per_class,
                  "other_precisions": {"bf16": {"map50": 0.84, "map50_95": 0.69}}},
    }
    meta = model_metadata(name="m", imgsz=640, command="lineguard train --name m", data={"dataset": "mine"}, settings=TrainSettings())
    card = model_card(meta, {"sets": sets}, tmp_path)
    assert "mAP50 **0.960**, mAP50-95 **0.800** — target mAP50 ≥ 0.95: **met**" in card
    assert "mAP50 **0.850**, mAP50-95 **0.700** — target mAP50 ≥ 0.90: **not met** (bf16: mAP50 0.840" in card
    assert all(f"| `{c}` |" in card for c in CLASSES)
    assert "| `scratch` | 0.500 | 0.800 | 0.900 / 0.950 | 10 | 0.500 |" in card
    assert "lineguard train --name m" in card and "AGPL-3.0" in card


def test_a_model_exported_at_the_cameras_aspect_says_its_input_and_output_shape(tmp_path):
    meta = model_metadata(name="r", imgsz=1280, command="lineguard train --name r --export-hw 736,1280", data={"dataset": "mine"}, settings=TrainSettings(imgsz=1280), input_hw=(736, 1280))
    assert meta["imgsz"] == [736, 1280]
    card = model_card(meta, {"sets": {}}, tmp_path)
    # 92 x 160 + 46 x 80 + 23 x 40 predictions at strides 8, 16 and 32
    assert "Input 736x1280 (height x width)" in card and "`[1, 4 + 7, 19320]`" in card


@pytest.mark.parametrize("value", ["700,1280", "736", "736,1280,3", "a,b"])
def test_an_export_shape_that_is_not_two_multiples_of_32_is_refused(value, capsys):
    assert main(["train", "--name", "x", "--export-hw", value]) == 1
    assert f"--export-hw {value!r}: expected HEIGHT,WIDTH, multiples of 32, e.g. 736,1280" in capsys.readouterr().err


def test_weights_that_do_not_exist_are_refused_before_anything_is_rendered(tmp_path, capsys):
    pytest.importorskip("ultralytics")
    code = main(["train", "--name", "x", "--weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m"), "--workdir", str(tmp_path / "w")])
    assert code == 1 and "--weights: expected a trained .pt file" in capsys.readouterr().err
    assert not (tmp_path / "w" / "dataset").exists()


def test_the_recorded_command_can_be_pasted_into_a_shell(monkeypatch):
    from lineguard.learn.train import command_line

    argv = ["/venv/bin/lineguard", "train", "--name", "m", "--set", "defects.mix={scratch: 6.0, misaligned: 2.5}"]
    monkeypatch.setattr(sys, "argv", argv)
    assert shlex.split(command_line()) == ["lineguard", *argv[1:]]


def test_set_changes_the_training_line_over_the_training_defaults():
    job = TrainJob(name="x", overrides={"defects.mix": {"scratch": 6.0, "missing_component": 1.0, "misaligned": 2.5}})
    merged = job.scenario_overrides()
    assert merged["defects.mix"] == {"scratch": 6.0, "missing_component": 1.0, "misaligned": 2.5}
    assert merged["parts.count"] == 16 and merged["defects.rate"] == 0.85  # the other training defaults stay


def test_a_scratch_only_training_line_labels_scratches_and_no_other_defect(tmp_path):
    overrides = {**VGA, "defects.rate": 1.0, "defects.mix": {"scratch": 1.0, "missing_component": 0.0, "misaligned": 0.0}}
    build_sim_dataset(tmp_path / "d", 4, seed=5, imgsz=320, overrides=overrides, val_fraction=0.25, progress=False)
    labelled = np.concatenate([np.loadtxt(f, ndmin=2)[:, 0] for f in (tmp_path / "d" / "labels").rglob("*.txt") if f.stat().st_size])
    names = {CLASSES[int(c)] for c in labelled}
    assert "scratch" in names and not names & {"missing_component", "misaligned"}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("defects.nope=1", r"unknown parameter 'defects.nope'"),
        ("defects.mix=[1", r"--set 'defects.mix=\[1': the value is not valid YAML"),
        ("defects.mix", r"--set 'defects.mix': expected NAME=VALUE"),
    ],
)
def test_a_wrong_set_is_named_before_anything_is_rendered_or_trained(pair, message, tmp_path, capsys):
    code = main(["train", "--name", "x", "--set", pair, "--out", str(tmp_path / "m"), "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert code == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "w").exists()


# -- end to end (ultralytics) ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.allow_leaks  # torch keeps its intra-op thread pool alive for the process
def test_lineguard_train_end_to_end_writes_an_evaluated_model(tmp_path):
    pytest.importorskip("ultralytics")
    job = TrainJob(
        name="e2e",
        frames=12,
        seed=9,
        settings=TrainSettings(epochs=1, imgsz=320, batch=4),
        out=str(tmp_path / "models"),
        workdir=str(tmp_path / "work"),
        eval_frames=4,
        command="test",
    )
    summary = run_training(job, progress=False)
    from lineguard.learn.train import training_threads

    # trained on every core (ultralytics' default leaves one to data workers, and we have none)
    assert f"training on {training_threads()} torch threads" in (tmp_path / "work" / "train.log").read_text()
    folder = tmp_path / "models" / "e2e"
    assert {p.name for p in folder.iterdir()} >= {"model.xml", "model.bin", "metadata.yaml", "eval.json", "pr_curve.png"}
    assert IrDetector(folder / "model.xml").names == list(CLASSES)
    evaluation = json.loads((folder / "eval.json").read_text())
    assert set(evaluation["sets"]) == {"nominal", "shift"}
    assert set(evaluation["sets"]["shift"]["per_class"]) == set(CLASSES)
    assert "nominal_map50" in summary
