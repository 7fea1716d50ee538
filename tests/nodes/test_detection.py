"""Detection helpers: letterbox, the three decoders, NMS, thresholds and ROI, model inspection and
every bad-model error (each names the model path, what was found and what was expected)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.nodes.detection import (
    Detector,
    Letterbox,
    ModelError,
    ModelInfo,
    Preprocess,
    Thresholds,
    batched_nms,
    decode_detection_output,
    decode_yolo,
    decode_yolo_e2e,
    build_inference_model,
    letterbox,
    letterbox_geometry,
    load_model,
    model_file_problem,
    nms,
    read_model,
    resolve_model_path,
    stretch,
)


def quoted(path: Path) -> str:
    return re.escape(str(path))


# -- letterbox ----------------------------------------------------------------------------------------
def test_letterbox_centres_the_image_on_grey_114_and_maps_boxes_back():
    # Given a 480×640 white frame and a 320×320 model
    image = np.full((480, 640, 3), 255, np.uint8)
    boxed, lb = letterbox(image, (320, 320))
    # Then it is scaled by 0.5 and padded 40 px above and below with 114
    assert boxed.shape == (320, 320, 3)
    assert (boxed[:40] == 114).all() and (boxed[280:] == 114).all() and (boxed[40:280] == 255).all()
    # And a box drawn in model pixels maps back to original pixels, clipped to the image
    back = lb.to_image(np.array([[10, 50, 110, 150], [-5, 30, 400, 300]], np.float32))
    assert back.tolist() == [[20, 20, 220, 220], [0, 0, 640, 480]]


def test_letterbox_splits_an_odd_padding_as_ultralytics_does():
    # 100×333 into 64×64: resized to 64×19, 45 rows of padding → 22 on top, 23 below
    image = np.zeros((100, 333, 3), np.uint8)
    (new_w, new_h), (top, bottom, left, right), lb = letterbox_geometry(image.shape[:2], (64, 64))
    assert (new_w, new_h, top, bottom, left, right) == (64, 19, 22, 23, 0, 0)
    boxed, _ = letterbox(image, (64, 64))
    assert (boxed[:22] == 114).all() and (boxed[22:41] == 0).all() and (boxed[41:] == 114).all()
    assert lb.pad_y == round((64 - 100 * 64 / 333) / 2 - 0.1)


def test_letterbox_uses_inter_linear_and_leaves_the_input_untouched():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (90, 120, 3), np.uint8)
    image.flags.writeable = False
    boxed, _ = letterbox(image, (64, 64))
    expected = cv2.resize(image, (64, 48), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(boxed[8:56], expected)


def test_letterboxing_into_a_reused_buffer_gives_the_same_pixels():
    rng = np.random.default_rng(4)
    buffer = np.full((64, 64, 3), 7, np.uint8)  # left over from another frame
    for shape in ((90, 120, 3), (120, 90, 3), (64, 64, 3)):
        image = rng.integers(0, 256, shape, np.uint8)
        fresh, lb = letterbox(image, (64, 64))
        reused, lb2 = letterbox(image, (64, 64), out=buffer)
        assert reused is buffer and np.array_equal(reused, fresh) and lb == lb2
    image = rng.integers(0, 256, (100, 50, 3), np.uint8)
    assert np.array_equal(stretch(image, (64, 64), out=buffer)[0], stretch(image, (64, 64))[0])


def test_stretch_keeps_no_aspect_ratio_and_maps_back_per_axis():
    image = np.zeros((100, 200, 3), np.uint8)
    fitted, lb = stretch(image, (50, 50))
    assert fitted.shape == (50, 50, 3)
    assert lb.to_image(np.array([[5, 5, 25, 25]], np.float32)).tolist() == [[20, 10, 100, 50]]


def test_folded_preprocessing_feeds_the_model_exactly_what_ultralytics_would(tmp_path, tiny_models):
    import openvino as ov

    # Given a model that returns its input, and a BGR frame letterboxed the ultralytics way
    path = tiny_models.identity("identity", (64, 64))
    info = ModelInfo(path, "yolo_e2e", "images", (64, 64), 0, (1, 3, 64, 64), None, (), "none", Preprocess(), None)
    compiled = ov.Core().compile_model(build_inference_model(read_model(path), info), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(5)
    boxed, _ = letterbox(rng.integers(0, 256, (48, 80, 3), np.uint8), (64, 64))
    # When the folded model runs on the uint8 letterboxed frame
    seen = compiled({0: boxed[None]})[0]
    # Then it saw RGB, divided by 255, NCHW float32 — what numpy preprocessing would give
    expected = boxed[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    np.testing.assert_allclose(seen, expected, rtol=1e-6, atol=1e-7)


def test_mean_and_scale_from_rt_info_are_applied_per_channel(tmp_path, tiny_models):
    import openvino as ov

    path = tiny_models.identity("identity", (8, 8))
    prep = Preprocess(resize="stretch", rgb=False, mean=(10.0, 20.0, 30.0), scale=(2.0, 4.0, 5.0))
    info = ModelInfo(path, "detection_output", "images", (8, 8), 0, (1, 3, 8, 8), None, (), "none", prep, None)
    compiled = ov.Core().compile_model(build_inference_model(read_model(path), info), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    image = np.full((1, 8, 8, 3), (50, 60, 70), np.uint8)  # B, G, R
    seen = compiled({0: image})[0]
    assert seen[0, :, 0, 0].tolist() == [20.0, 10.0, 8.0]  # (50-10)/2, (60-20)/4, (70-30)/5


# -- NMS ----------------------------------------------------------------------------------------------
def test_nms_suppresses_only_overlaps_above_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 6], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # IoU(0, 1) = 0.5 exactly: kept at threshold 0.5; IoU(0, 2) = 0.6: suppressed
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 3]
    assert nms(boxes, scores, 0.45).tolist() == [0, 3]


def test_nms_is_class_aware_and_orders_by_score():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    assert batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5).tolist() == [1, 2]


def test_nms_gives_the_same_answer_for_many_candidates_as_for_few(monkeypatch):
    import lineguard.nodes.detection as detection

    rng = np.random.default_rng(9)
    xy = rng.uniform(0, 600, (700, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (700, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0.2, 1.0, 700).astype(np.float32)
    classes = rng.integers(0, 3, 700)
    one_by_one = batched_nms(boxes, scores, classes, 0.45)  # 700 > NMS_MATRIX_MAX
    monkeypatch.setattr(detection, "NMS_MATRIX_MAX", 10_000)
    assert np.array_equal(batched_nms(boxes, scores, classes, 0.45), one_by_one)


# -- decoders on raw outputs ----------------------------------------------------------------------------
def test_decode_yolo_keeps_the_best_class_per_anchor_and_applies_nms(tiny_models):
    head = tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3, pad_to=20)
    raw = decode_yolo(head, Thresholds(0.25), iou=0.45)
    assert raw.class_id.tolist() == [0, 1, 2]
    assert raw.confidence.tolist() == [0.875, 0.625, 0.3125]
    assert raw.xyxy.tolist() == [[8, 8, 24, 24], [44, 12, 52, 20], [26, 46, 38, 50]]


def test_decode_yolo_with_a_loose_iou_keeps_the_duplicate(tiny_models):
    raw = decode_yolo(tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3), Thresholds(0.25), iou=0.9)
    assert raw.class_id.tolist() == [0, 0, 1, 2]


def test_decode_yolo_per_class_thresholds_class_filter_and_max_det(tiny_models):
    head = tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3)
    # scratch needs 0.5 now, bracket only 0.6: the weak scratch goes
    assert decode_yolo(head, Thresholds(0.25, {2: 0.5, 1: 0.6}), 0.45).class_id.tolist() == [0, 1]
    # a per-class threshold below conf lets a weak class through that conf alone would drop
    assert decode_yolo(head, Thresholds(0.7, {2: 0.3}), 0.45).class_id.tolist() == [0, 2]
    # only brackets and scratches
    assert decode_yolo(head, Thresholds(0.25, keep=[1, 2]), 0.45).class_id.tolist() == [1, 2]
    assert len(decode_yolo(head, Thresholds(0.25), 0.45, max_det=2)) == 2
    # a score equal to the threshold does not pass (score > conf)
    assert decode_yolo(head, Thresholds(0.3125), 0.45).class_id.tolist() == [0, 1]


def test_decode_yolo_with_the_model_computed_best_scores_is_the_same(tiny_models):
    rng = np.random.default_rng(2)
    head = rng.uniform(0, 1, (1, 84, 2100)).astype(np.float32) ** 6  # mostly low scores, some high
    head[0, :4] = rng.uniform(0, 320, (4, 2100))
    best = head[0, 4:].max(axis=0)
    bf16_like = (best.view(np.uint32) & 0xFFFF0000).view(np.float32)  # as a bf16 CPU may compute it
    for hint in (best, bf16_like):
        with_hint = decode_yolo(head, Thresholds(0.25, {3: 0.6}), 0.45, best_scores=hint)
        without = decode_yolo(head, Thresholds(0.25, {3: 0.6}), 0.45)
        assert len(without) > 10
        assert np.array_equal(with_hint.xyxy, without.xyxy) and np.array_equal(with_hint.class_id, without.class_id)


def test_decode_yolo_e2e_keeps_rows_above_threshold_in_model_order():
    rows = np.array([[[8, 8, 24, 24, 0.9, 1], [40, 8, 56, 24, 0.5, 0], [0, 0, 4, 4, 0.1, 0], [1, 1, 5, 5, 0.6, 2]]], np.float32)
    raw = decode_yolo_e2e(rows, Thresholds(0.25))
    assert raw.class_id.tolist() == [1, 0, 2] and raw.xyxy[0].tolist() == [8, 8, 24, 24]
    assert decode_yolo_e2e(rows, Thresholds(0.25, {0: 0.7}, keep=[0, 1])).class_id.tolist() == [1]
    assert len(decode_yolo_e2e(rows, Thresholds(0.25), max_det=1)) == 1


def test_decode_detection_output_stops_at_the_end_marker_and_scales_to_input_pixels():
    rows = np.zeros((1, 1, 5, 7), np.float32)
    rows[0, 0, 0] = [0, 2, 0.6, 0.5, 0.5, 1.0, 1.0]
    rows[0, 0, 1] = [0, 1, 0.9, 0.0, 0.0, 0.25, 0.5]
    rows[0, 0, 2] = [-1, 0, 0, 0, 0, 0, 0]
    rows[0, 0, 3] = [0, 1, 0.99, 0, 0, 1, 1]  # after the end marker: garbage, ignored
    raw = decode_detection_output(rows, Thresholds(0.25), input_hw=(100, 200))
    assert raw.class_id.tolist() == [1, 2]  # best first
    assert raw.xyxy.tolist() == [[0, 0, 50, 50], [100, 50, 200, 100]]


# -- each layout end to end on a tiny model -------------------------------------------------------------------
def test_a_yolo_model_gives_boxes_in_original_pixels_with_names_from_metadata(yolo_model):
    detector = Detector(yolo_model, conf=0.25, iou=0.45)
    assert (detector.info.layout, detector.info.class_names_source) == ("yolo", "metadata.yaml")
    # a 96×128 frame: gain 0.5, 8 px of padding above and below in the 64×64 input
    detections = detector.detect(np.zeros((96, 128, 3), np.uint8))
    assert detections.xyxy.dtype == np.float32 and detections.confidence.dtype == np.float32
    assert detections.xyxy.tolist() == [[16, 0, 48, 32], [88, 8, 104, 24], [52, 76, 76, 84]]
    assert detections.data["class_name"].tolist() == ["pcb", "bracket", "scratch"]
    assert detections.metadata["image_hw"] == (96, 128)


def test_a_yolo_e2e_model_is_recognised_and_needs_no_nms(tmp_path, tiny_models):
    path = tiny_models.yolo_e2e("e2e", [[8, 8, 24, 24, 0.875, 1], [9, 9, 25, 25, 0.75, 1], [0, 0, 4, 4, 0.125, 0]], metadata={"task": "detect", "names": {0: "pcb", 1: "bracket"}, "end2end": True})
    detector = Detector(path)
    assert detector.info.layout == "yolo_e2e"
    detections = detector.detect(np.zeros((128, 128, 3), np.uint8))
    # both overlapping rows stay: an end-to-end head has already done its suppression
    assert detections.xyxy.tolist() == [[16, 16, 48, 48], [18, 18, 50, 50]]
    assert detections.data["class_name"].tolist() == ["bracket", "bracket"]


def test_a_detection_output_model_is_stretched_not_letterboxed(tmp_path, tiny_models):
    priors = [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.7], [0.0, 0.0, 1.0, 1.0]]
    scores = [[0.1, 0.875, 0.0], [0.25, 0.0, 0.75], [0.5, 0.25, 0.25]]  # class 0 = background
    path = tiny_models.detection_output("ssd", priors, scores, size=(64, 96))
    detector = Detector(path, class_names=["background", "pcb", "scratch"])
    assert (detector.info.layout, detector.info.num_classes, detector.info.preprocess.resize) == ("detection_output", 3, "stretch")
    detections = detector.detect(np.zeros((200, 100, 3), np.uint8))
    np.testing.assert_allclose(detections.xyxy, [[10, 20, 30, 60], [50, 100, 90, 140]], atol=1e-4)
    assert detections.data["class_name"].tolist() == ["pcb", "scratch"]


def test_rt_info_labels_name_the_classes_when_there_is_no_metadata(tmp_path, tiny_models):
    path = tiny_models.yolo("m", tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3), rt_info={"labels": ["a", "b", "c"]})
    assert load_model(path)[1].class_names == ("a", "b", "c")


def test_class_names_param_overrides_the_model_and_unnamed_classes_get_generated_names(tmp_path, tiny_models):
    path = tiny_models.yolo("m", tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3))
    assert load_model(path)[1].class_names == ("class0", "class1", "class2")
    assert load_model(path, class_names=["x", "y", "z"])[1].class_names == ("x", "y", "z")


def test_roi_class_filter_and_per_class_thresholds_by_name(yolo_model):
    image = np.zeros((96, 128, 3), np.uint8)
    # the belt: the right half of the frame (centres of bracket (96,16) and scratch (64,80) are inside)
    assert Detector(yolo_model, roi=[60, 0, 128, 96]).detect(image).data["class_name"].tolist() == ["bracket", "scratch"]
    triangle = [[0, 0], [128, 0], [0, 96]]
    assert Detector(yolo_model, roi=triangle).detect(image).data["class_name"].tolist() == ["pcb", "bracket"]
    assert Detector(yolo_model, classes=["scratch"]).detect(image).data["class_name"].tolist() == ["scratch"]
    assert Detector(yolo_model, class_conf={"scratch": 0.5}).detect(image).data["class_name"].tolist() == ["pcb", "bracket"]
    with pytest.raises(ModelError, match=r"classes: expected class names of the model \(pcb, bracket, scratch\), got 'screw'"):
        Detector(yolo_model, classes=["screw"])


def test_roi_keep_box_drops_a_box_that_reaches_over_the_belts_edge(yolo_model):
    image = np.zeros((96, 128, 3), np.uint8)
    # pcb [16, 0, 48, 32] reaches over the belt's top edge (y 4) like a hand would; bracket
    # [88, 8, 104, 24] and scratch [52, 76, 76, 84] lie inside
    belt = [0, 4, 128, 96]
    assert Detector(yolo_model, roi=belt).detect(image).data["class_name"].tolist() == ["pcb", "bracket", "scratch"]
    assert Detector(yolo_model, roi=belt, roi_keep="box").detect(image).data["class_name"].tolist() == ["bracket", "scratch"]
    # the scratch's centre (64, 80) is inside [60, 0, 128, 96], its left end (52) is not
    assert Detector(yolo_model, roi=[60, 0, 128, 96], roi_keep="box").detect(image).data["class_name"].tolist() == ["bracket"]
    with pytest.raises(ValueError, match=r"roi_keep: expected one of centre, box, got 'corner'"):
        Detector(yolo_model, roi=belt, roi_keep="corner")


def test_a_dynamic_input_needs_imgsz_and_works_with_it(tmp_path, tiny_models):
    path = tiny_models.yolo("dyn", tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3), input_shape=(None, 3, None, None))
    with pytest.raises(ModelError, match=rf"model {quoted(path)}: expected a fixed input size, found a dynamic input \[\?, 3, \?, \?\]; set imgsz"):
        load_model(path)
    detector = Detector(path, imgsz=64)
    assert detector.detect(np.zeros((64, 64, 3), np.uint8)).data["class_name"].tolist() == ["class0", "class1", "class2"]


def _pb_varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _pb(field: int, value: int | bytes | str) -> bytes:
    """One protobuf field: an int as a varint, bytes/str/sub-message length-delimited."""
    if isinstance(value, int):
        return _pb_varint(field << 3) + _pb_varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _pb_varint(field << 3 | 2) + _pb_varint(len(data)) + data


def onnx_bytes(head: np.ndarray) -> bytes:
    """A tiny ONNX model (written by hand: the onnx package is not a dependency):
    out = head + 0 × ReduceMean(images), images [1, 3, 64, 64]."""

    def value_info(name: str, dims: tuple[int, ...]) -> bytes:
        shape = b"".join(_pb(1, _pb(1, d)) for d in dims)
        return _pb(1, name) + _pb(2, _pb(1, _pb(1, 1) + _pb(2, shape)))

    def tensor(name: str, array: np.ndarray) -> bytes:
        return b"".join(_pb(1, d) for d in array.shape) + _pb(2, 1) + _pb(8, name) + _pb(9, array.astype("<f4").tobytes())

    def node(op: str, inputs: list[str], output: str, attrs: bytes = b"") -> bytes:
        return b"".join(_pb(1, i) for i in inputs) + _pb(2, output) + _pb(4, op) + attrs

    keepdims_0 = _pb(5, _pb(1, "keepdims") + _pb(3, 0) + _pb(20, 2))
    graph = (
        _pb(1, node("ReduceMean", ["images"], "m", keepdims_0))
        + _pb(1, node("Mul", ["m", "zero"], "z"))
        + _pb(1, node("Add", ["head", "z"], "out"))
        + _pb(2, "tiny")
        + _pb(5, tensor("head", head))
        + _pb(5, tensor("zero", np.zeros((), np.float32)))
        + _pb(11, value_info("images", (1, 3, 64, 64)))
        + _pb(12, value_info("out", head.shape))
    )
    return _pb(1, 7) + _pb(2, "lineguard-test") + _pb(7, graph) + _pb(8, _pb(1, "") + _pb(2, 13))


def test_an_onnx_model_loads_like_an_ir(tmp_path, tiny_models):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(onnx_bytes(tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3)))
    detector = Detector(path)
    assert detector.info.layout == "yolo"
    assert detector.detect(np.zeros((64, 64, 3), np.uint8)).class_id.tolist() == [0, 1, 2]


# -- finding the model ---------------------------------------------------------------------------------
def test_relative_paths_resolve_against_the_current_directory_then_the_installation(tmp_path, yolo_model):
    import lineguard.nodes

    folder = yolo_model.parent
    # a folder stands for the model file in it (an ultralytics export folder)
    assert resolve_model_path(folder.name, cwd=folder.parent)[0] == yolo_model
    # models/… is looked up in the package lineguard.models wherever it is installed, like
    # nodes/… in lineguard.nodes here, after the current directory
    found, tried = resolve_model_path("nodes/detection.py", cwd=tmp_path)
    assert tried[0] == tmp_path / "nodes/detection.py"
    assert found == Path(lineguard.nodes.__file__).parent / "detection.py"


# -- bad models are loud ------------------------------------------------------------------------------------
def test_a_missing_model_file_names_the_path_and_where_it_looked(tmp_path):
    path, problem = model_file_problem("models/nope/model.xml", cwd=tmp_path)
    assert path is None
    assert re.search(rf"expected an OpenVINO IR \(.xml with its .bin\) or ONNX model file.*got 'models/nope/model.xml', which does not exist \(looked for {quoted(tmp_path)}/models/nope/model.xml", problem)
    with pytest.raises(ModelError, match=r"model models/nope/model.xml: expected an OpenVINO IR .* which does not exist"):
        load_model("models/nope/model.xml")


def test_an_ir_without_its_weights_or_a_file_of_another_kind_is_named(tmp_path, yolo_model):
    yolo_model.with_suffix(".bin").unlink()
    with pytest.raises(ModelError, match=rf"model {quoted(yolo_model)}: expected the IR weights 'model.bin' beside '{quoted(yolo_model)}', found no such file"):
        load_model(yolo_model)
    other = tmp_path / "model.pt"
    other.write_bytes(b"torch")
    with pytest.raises(ModelError, match=rf"expected a model file ending in .xml \(OpenVINO IR\) or .onnx, got '{quoted(other)}'"):
        load_model(other)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=rf"model {quoted(broken)}: expected a readable OpenVINO IR or ONNX model, but OpenVINO could not read it"):
        load_model(broken)


def test_an_unsupported_output_layout_names_what_was_found_and_the_layouts_expected(tmp_path, tiny_models):
    path = tiny_models.raw("cls", (1, 3, 64, 64), [(1, 1000)])
    with pytest.raises(ModelError, match=rf"model {quoted(path)}: unsupported output layout: found 1 output\(s\) \[1, 1000\]; expected exactly one output of a supported layout: yolo \[1, 4\+nc, N\].*yolo_e2e \[1, K, 6\].*detection_output \[1, 1, N, 7\]"):
        load_model(path)
    two = tiny_models.raw("seg", (1, 3, 64, 64), [(1, 38, 84), (1, 32, 16, 16)])
    with pytest.raises(ModelError, match=rf"model {quoted(two)}: unsupported output layout: found 2 output\(s\) \[1, 38, 84\], \[1, 32, 16, 16\]"):
        load_model(two)


def test_a_forced_layout_that_does_not_match_says_what_it_expected(yolo_model):
    with pytest.raises(ModelError, match=rf"model {quoted(yolo_model)}: layout 'detection_output' expects one output \[1, 1, N, 7\].*found 1 output\(s\) \[1, 7, 84\]"):
        load_model(yolo_model, layout="detection_output")


def test_a_wrong_input_rank_or_channel_count_is_named(tmp_path, tiny_models):
    flat = tiny_models.raw("flat", (1, 64), [(1, 7, 84)])
    with pytest.raises(ModelError, match=rf"model {quoted(flat)}: wrong input rank: expected an image input of rank 4 \[1, 3, H, W\] \(NCHW\), found rank 2 \[1, 64\]"):
        load_model(flat)
    nhwc = tiny_models.raw("nhwc", (1, 64, 64, 3), [(1, 7, 84)])
    with pytest.raises(ModelError, match=rf"model {quoted(nhwc)}: expected an input with 3 colour channels \[1, 3, H, W\], found \[1, 64, 64, 3\] \(it looks like NHWC"):
        load_model(nhwc)


def test_class_names_that_disagree_with_the_model_are_a_class_count_mismatch(yolo_model, tmp_path, tiny_models):
    with pytest.raises(ModelError, match=rf"model {quoted(yolo_model)}: class-count mismatch: class_names lists 2 names, but its output \[1, 7, 84\] has 4\+3 channels; expected 3 names"):
        load_model(yolo_model, class_names=["pcb", "bracket"])
    bad_meta = tiny_models.yolo("meta", tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3), metadata={"task": "detect", "names": {0: "a", 1: "b", 2: "c", 3: "d"}})
    with pytest.raises(ModelError, match=rf"model {quoted(bad_meta)}: class-count mismatch: metadata.yaml lists 4 class names, but its output \[1, 7, 4\] has 4\+3 channels; expected 3"):
        load_model(bad_meta)
    ssd = tiny_models.detection_output("ssd", [[0, 0, 1, 1]], [[0.5, 0.5, 0.0]])
    with pytest.raises(ModelError, match=rf"model {quoted(ssd)}: class-count mismatch: class_names lists 2 names, but its DetectionOutput has num_classes 3"):
        load_model(ssd, class_names=["pcb", "scratch"])


def test_a_segmentation_export_is_not_taken_for_a_detector(tmp_path, tiny_models):
    path = tiny_models.yolo("seg", tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3), metadata={"task": "segment", "names": {0: "a", 1: "b", 2: "c"}})
    with pytest.raises(ModelError, match=rf"model {quoted(path)}: expected a detection model \(metadata.yaml task 'detect'\), found task 'segment'"):
        load_model(path)


def test_two_image_inputs_are_refused(tmp_path):
    import openvino as ov
    import openvino.opset13 as ops

    a = ops.parameter([1, 3, 64, 64], np.float32, name="image")
    b = ops.parameter([1, 3], np.float32, name="image_info")
    out = ops.add(ops.constant(np.zeros((1, 7, 84), np.float32)), ops.multiply(ops.reduce_sum(b, ops.constant(np.array([0, 1], np.int64)), False), ops.constant(np.float32(0))))
    ops_mean = ops.reduce_mean(a, ops.constant(np.array([0, 1, 2, 3], np.int64)), False)
    out = ops.add(out, ops.multiply(ops_mean, ops.constant(np.float32(0))))
    path = tmp_path / "two.xml"
    ov.save_model(ov.Model([out], [a, b], "two"), str(path))
    with pytest.raises(ModelError, match=rf"model {quoted(path)}: expected one image input \[1, 3, H, W\], found 2 inputs: 'image' \[1, 3, 64, 64\], 'image_info' \[1, 3\]"):
        load_model(path)


def test_imgsz_on_a_fixed_input_and_an_absent_device_are_refused(yolo_model):
    with pytest.raises(ModelError, match=rf"model {quoted(yolo_model)}: imgsz 320x320 given, but the model's input is fixed at \[1, 3, 64, 64\]"):
        load_model(yolo_model, imgsz=320)
    with pytest.raises(ModelError, match=r"device: expected one of CPU.*AUTO, got 'GPU.7'"):
        Detector(yolo_model, device="GPU.7")


def test_a_letterbox_that_matches_the_model_input_is_a_plain_copy():
    image = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    boxed, lb = letterbox(image, (64, 64))
    assert np.array_equal(boxed, image) and lb == Letterbox((64, 64), (64, 64), 1.0, 1.0, 0, 0)
