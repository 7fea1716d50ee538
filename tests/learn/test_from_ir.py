"""Training on from a shipped OpenVINO model: its PyTorch weights rebuilt from the IR."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.learn.from_ir import IrWeightsError, build_from_ir, ir_convolutions
from lineguard.learn.train import init_weights_ir
from lineguard.runtime.cli import main
from lineguard.sim.truth import CLASSES

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "sim-v8"
TINY_XML = Path(__file__).resolve().parents[1] / "fixtures" / "ultra_tiny" / "model.xml"


def test_every_convolution_of_the_shipped_model_is_read_with_its_module_and_folded_bias():
    convs = ir_convolutions(SHIPPED / "model.xml")
    assert len(convs) == 64  # YOLOv8n: 63 trained convolutions and the fixed DFL one
    weight, bias = convs["model.0.conv"]
    assert weight.shape == (16, 3, 3, 3) and bias is not None and bias.shape == (16,)
    weight, bias = convs["model.22.cv3.2.2"]  # the class scores of the coarsest scale
    assert weight.shape == (len(CLASSES), 64, 1, 1) and bias.shape == (len(CLASSES),)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w, _ in convs.values())


def test_init_weights_takes_a_model_folder_an_ir_or_a_checkpoint(tmp_path):
    assert init_weights_ir(SHIPPED) == SHIPPED / "model.xml"
    assert init_weights_ir(SHIPPED / "model.xml") == SHIPPED / "model.xml"
    (tmp_path / "best.pt").write_bytes(b"")
    assert init_weights_ir(tmp_path / "best.pt") is None


def test_an_ir_without_its_weights_file_is_refused_saying_what_is_missing(tmp_path):
    (tmp_path / "model.xml").write_text((SHIPPED / "model.xml").read_text())
    with pytest.raises(ValueError, match=r"has no model\.bin beside it"):
        init_weights_ir(tmp_path / "model.xml")


def test_init_weights_that_do_not_exist_are_refused_before_anything_is_rendered(tmp_path, capsys):
    pytest.importorskip("ultralytics")
    code = main(["train", "--name", "x", "--init-weights", str(tmp_path / "nope.xml"), "--out", str(tmp_path / "m"), "--workdir", str(tmp_path / "w")])
    assert code == 1
    assert "--init-weights: expected a trained .pt file, an OpenVINO model.xml or its folder" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def _frames(n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    from lineguard.learn.evaluate import letterbox
    from lineguard.sim.conveyor import Conveyor
    from lineguard.sim.scenario import load_scenario

    conveyor = Conveyor(load_scenario("nominal", {}, seed=4242))
    out = []
    for i in np.linspace(40, 0.8 * conveyor.n_frames, n).astype(int):  # the belt is empty at the end
        boxed = letterbox(cv2.cvtColor(conveyor.render(int(i)), cv2.COLOR_BGR2RGB), hw)[0]
        out.append(boxed.transpose(2, 0, 1).astype(np.float32) / 255.0)
    return out


@pytest.mark.allow_leaks  # torch keeps its intra-op thread pool alive for the process
def test_the_rebuilt_model_computes_what_the_shipped_ir_does_and_loads_for_training(tmp_path):
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    from lineguard.learn.from_ir import check_against_ir, save_checkpoint

    frames = _frames(6, (736, 1280))
    model = build_from_ir(SHIPPED / "model.xml", list(CLASSES), frames[:4])
    # the IR's weights are FP16: the same numbers in both, so the outputs agree to float rounding
    assert check_against_ir(model, SHIPPED / "model.xml", frames[5]) < 1e-5
    # and its batch norms hold the statistics of what the convolutions put out, not an identity
    bn = model.model[0].bn
    assert float(bn.running_var.min()) > 0 and not np.allclose(bn.running_var.numpy(), 1.0)
    path = save_checkpoint(model, tmp_path / "from_ir.pt", SHIPPED / "model.xml")
    loaded = YOLO(str(path))
    assert loaded.names == dict(enumerate(CLASSES))
    image = cv2.cvtColor((frames[5].transpose(1, 2, 0) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    boxes = loaded.predict(image, imgsz=(736, 1280), conf=0.5, verbose=False)[0].boxes
    assert {CLASSES[int(c)] for c in boxes.cls} & {"pcb", "bracket"}  # it still sees the parts


def test_an_ir_whose_class_count_differs_from_the_names_is_refused():
    pytest.importorskip("ultralytics")
    with pytest.raises(IrWeightsError, match=r"the head has 7 classes, but 3 class names were given"):
        build_from_ir(SHIPPED / "model.xml", ["a", "b", "c"], [np.zeros((3, 64, 64), np.float32)])


def test_the_model_card_says_the_weights_were_rebuilt_from_which_ir(tmp_path):
    from lineguard.learn.train import TrainSettings, model_card, model_metadata

    record = {"path": "models/sim-v8/model.xml", "sha256": "ab" * 32, "rebuilt_from_ir": True, "max_rel_diff": 5e-7, "bn_images": 32, "train_args": {}}
    meta = model_metadata(name="m", imgsz=1280, command="lineguard train --name m --init-weights models/sim-v8", data={"dataset": "mine"},
                          settings=TrainSettings(imgsz=1280), extra={"init_weights": record})
    card = model_card(meta, {"sets": {}}, tmp_path)
    assert "Continued from the OpenVINO model `models/sim-v8/model.xml` (sha256 of .xml and .bin `abababababababab…`)" in card
    assert "largest difference from the IR's output 5.0e-07 of its range; batch norms from 32 training images" in card
