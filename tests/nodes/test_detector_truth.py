"""detector.truth: the simulator's truth as supervision.Detections, with seeded imperfections."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import supervision as sv
import testnodes
from testnodes import COLLECTED

from lineguard.nodes.detector_truth import TruthDetector
from lineguard.runtime import schema
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.errors import NodeFailure, RecipeError
from lineguard.runtime.executor import run_graph_sync
from lineguard.runtime.loader import load_text
from lineguard.sim.conveyor import Conveyor
from lineguard.sim.scenario import load_scenario
from lineguard.sim.truth import CLASSES, FrameTruth

VGA = {"parts.count": 2, "camera.resolution": "vga", "camera.mm_per_px": 0.5}


@pytest.fixture(autouse=True)
def clean():
    testnodes.reset()
    yield
    testnodes.reset()


def compile_recipe(det_params: str, cam_params: str = "{scenario: nominal, seed: 3, parts: 2, set: {camera.resolution: vga}}"):
    registry = testnodes.test_registry()
    registry.register(TruthDetector)
    text = textwrap.dedent(f"""\
        version: 1
        line: {{belt_speed_mm_s: 400, mm_per_px: 0.5, encoder_counts_per_mm: 10}}
        nodes:
          cam: {{type: camera.sim, params: {cam_params}}}
          det:
            type: detector.truth
            params: {det_params}
            in: {{truth: cam.truth}}
          sink: {{type: test.collect, in: {{in: det.detections}}}}
          frames: {{type: test.collect, params: {{key: frames}}, in: {{in: cam.image}}}}
    """)
    return compile_document(load_text(text, "recipe.yaml"), registry)


def detector(**params) -> TruthDetector:
    """A detector.truth with validated params, outside a graph (detect() needs no context)."""
    full = schema.apply_defaults(TruthDetector.params_schema, params)
    assert not list(schema.problems(TruthDetector.params_schema, full))
    node = TruthDetector(None, schema.freeze(full))  # type: ignore[arg-type]
    import asyncio

    asyncio.run(node.open())
    return node


def many_boxes(n: int = 4000, frame_index: int = 0) -> FrameTruth:
    """A frame full of fully visible boxes of every class (for rates)."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(20, (560, 400), (n, 2))
    boxes = np.hstack([xy, xy + 40]).astype(np.float32)
    return FrameTruth(frame_index, 0, 0, boxes, np.arange(n) % len(CLASSES), np.arange(n) // 7, np.ones(n, np.float32))


def test_a_perfect_detector_reproduces_every_visible_truth_box_with_class_names_and_part_ids():
    # given camera.sim's truth output wired to detector.truth without imperfections
    run_graph_sync(compile_recipe("{image_size_px: [640, 480], min_visible: 0.0}"), "sim")
    conveyor = Conveyor(load_scenario("nominal", VGA, seed=3))
    outputs = COLLECTED["default"]
    assert len(outputs) == conveyor.n_frames
    for frame_id, t_ns, det, _ in outputs[:: max(1, len(outputs) // 15)]:
        truth = conveyor.frame_truth(frame_id)
        # then every truth box is a detection, in supervision's columns
        assert isinstance(det, sv.Detections) and len(det) == len(truth)
        assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
        np.testing.assert_allclose(det.xyxy, truth.boxes_xyxy, atol=1e-4)
        assert list(det.data["class_name"]) == [CLASSES[c] for c in truth.class_ids]
        assert list(det.class_id) == list(truth.class_ids)  # default classes are the sim's, in order
        assert list(det.data["truth_part_id"]) == list(truth.part_ids)
        assert det.metadata["image_hw"] == (480, 640)
        assert np.all((det.confidence >= 0.85) & (det.confidence <= 0.99))


def test_the_same_seed_gives_the_same_detections_and_another_seed_does_not():
    truth = many_boxes(200, frame_index=17)
    noisy = {"miss_rate": 0.2, "box_jitter_px": 1.0, "false_positives_per_frame": 3.0, "image_size_px": [640, 480]}
    a, b = detector(seed=5, **noisy).detect(truth), detector(seed=5, **noisy).detect(truth)
    c = detector(seed=6, **noisy).detect(truth)
    assert a == b
    assert not (len(a) == len(c) and np.array_equal(a.xyxy, c.xyxy))


def test_misses_follow_the_overall_and_per_class_rates():
    truth = many_boxes()
    det = detector(miss_rate=0.2, class_miss_rates={"scratch": 1.0, "chip": 0.0}, image_size_px=[640, 480]).detect(truth)
    names = list(det.data["class_name"])
    per_class = len(truth) / len(CLASSES)
    assert names.count("scratch") == 0
    assert names.count("chip") == pytest.approx(per_class, abs=1)
    assert names.count("pcb") == pytest.approx(0.8 * per_class, rel=0.12)


def test_boxes_less_visible_than_min_visible_are_not_detected():
    truth = many_boxes(100)
    truth = FrameTruth(0, 0, 0, truth.boxes_xyxy, truth.class_ids, truth.part_ids, np.linspace(0.01, 1.0, 100).astype(np.float32))
    det = detector(min_visible=0.5, image_size_px=[640, 480]).detect(truth)
    assert len(det) == int(np.count_nonzero(truth.visible >= 0.5))


def test_box_edges_jitter_by_the_given_standard_deviation():
    truth = many_boxes()
    det = detector(box_jitter_px=1.5, image_size_px=[640, 480]).detect(truth)
    error = det.xyxy - truth.boxes_xyxy
    assert float(np.std(error)) == pytest.approx(1.5, rel=0.05)
    assert np.all(det.xyxy[:, 2] > det.xyxy[:, 0])


def test_false_positives_have_no_part_and_only_the_chosen_classes():
    empty = FrameTruth(0, 0, 0, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    node = detector(false_positives_per_frame=2.0, false_positive_classes=["scratch"], image_size_px=[640, 480])
    counts = []
    for i in range(400):
        det = node.detect(FrameTruth(i, 0, 0, empty.boxes_xyxy, empty.class_ids, empty.part_ids, empty.visible))
        counts.append(len(det))
        assert set(det.data["class_name"]) <= {"scratch"}
        assert np.all(det.data["truth_part_id"] == -1)
        assert np.all((det.confidence >= 0.3) & (det.confidence <= 0.6))
        assert np.all((det.xyxy >= 0) & (det.xyxy[:, [2]] <= 640) & (det.xyxy[:, [3]] <= 480))
    assert np.mean(counts) == pytest.approx(2.0, rel=0.15)


def test_a_detector_trained_on_fewer_classes_numbers_its_own_and_sees_nothing_else():
    det = detector(classes=["scratch", "pcb"], image_size_px=[640, 480]).detect(many_boxes(70))
    assert set(det.data["class_name"]) == {"scratch", "pcb"}
    assert set(det.class_id[det.data["class_name"] == "pcb"]) == {1}


def test_an_image_size_the_truth_does_not_fit_fails_loud_naming_the_param():
    # the camera renders 640 x 480 but the detector was told 320 x 240
    with pytest.raises(NodeFailure, match=r"image_size_px \[320, 240\] differs from the camera's image size \[640, 480\]: drop the param or fix it"):
        run_graph_sync(compile_recipe("{image_size_px: [320, 240]}"), "sim")


def test_without_an_image_size_it_takes_the_one_the_camera_reports():
    run_graph_sync(compile_recipe("{}"), "sim")
    detections = [payload for _, _, payload, _ in testnodes.COLLECTED["default"]]
    assert detections and all(d.metadata["image_hw"] == (480, 640) for d in detections)


def test_bad_params_are_compile_errors_naming_file_line_and_param():
    with pytest.raises(RecipeError) as err:
        compile_recipe("{image_size_px: [640, 480], class_miss_rates: {scatch: 0.5}, confidence: [0.9, 0.5]}")
    text = str(err.value)
    assert "recipe.yaml:7:59: node 'det' param 'class_miss_rates': expected class names from 'classes'" in text and "['scatch']" in text
    assert "recipe.yaml:7:" in text and "node 'det' param 'confidence': expected [low, high] with low <= high <= 1, got [0.9, 0.5]" in text
    with pytest.raises(RecipeError, match=r"recipe.yaml:7:\d+: node 'det' param 'miss_rate': expected .*1"):
        compile_recipe("{miss_rate: 1.5}")
