"""The ``detector.openvino`` node in real graphs on the sim clock: boxes in original pixels, frame
order kept with several requests in flight, thresholds/classes/ROI from the recipe, and bad models
reported at compile time (file:line) or at start (NodeFailure naming the model path)."""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict

import numpy as np
import pytest

from lineguard.nodes.detector_openvino import OpenVinoDetector
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.errors import NodeFailure, RecipeError
from lineguard.runtime.executor import run_graph_sync
from lineguard.runtime.loader import load_text
from lineguard.runtime.node import InPort, Node, OutPort
from lineguard.runtime.registry import default_registry

SEEN: dict[str, list] = defaultdict(list)


class GreyFrames(Node):
    """Emits ``count`` solid frames; frame i has grey level ``(first + step × i) % 256``.

    Example:
        src: {type: test.grey_frames, params: {count: 5}}
    """

    type_name = "test.grey_frames"
    outputs = {"image": OutPort("image")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "count": {"type": "integer", "default": 5},
            "width": {"type": "integer", "default": 64},
            "height": {"type": "integer", "default": 64},
            "first": {"type": "integer", "default": 0},
            "step": {"type": "integer", "default": 0},
            "period_s": {"type": "number", "default": 0.01},
            "grey_only": {"type": "boolean", "default": False},
        },
    }

    @staticmethod
    def level(params, i: int) -> int:
        return (params["first"] + params["step"] * i) % 256

    async def run(self):
        p, clock = self.params, self.ctx.clock
        for i in range(p["count"]):
            await clock.sleep_until_ns(round(i * p["period_s"] * 1e9))
            shape = (p["height"], p["width"]) if p["grey_only"] else (p["height"], p["width"], 3)
            image = np.full(shape, self.level(p, i), np.uint8)
            image.flags.writeable = False
            await self.ctx.emit("image", Envelope(i, clock.now_ns(), image, encoder=1000 + i))


class DetectionSink(Node):
    """Records (frame_id, t_capture_ns, encoder, detections, clock now) into SEEN[key]."""

    type_name = "test.detection_sink"
    inputs = {"detections": InPort("detections", queue=4)}
    params_schema = {"type": "object", "additionalProperties": False, "properties": {"key": {"type": "string", "default": "default"}}}

    async def process(self, port, envelope):
        SEEN[self.params["key"]].append((envelope.frame_id, envelope.t_capture_ns, envelope.encoder, envelope.payload, self.ctx.clock.now_ns()))


@pytest.fixture(autouse=True)
def clean_seen():
    SEEN.clear()
    yield
    SEEN.clear()


def compile_recipe(text: str):
    registry = default_registry(include_entry_points=False)
    for cls in (OpenVinoDetector, GreyFrames, DetectionSink):
        registry.register(cls)
    return compile_document(load_text(textwrap.dedent(text).lstrip("\n"), "recipe.yaml"), registry)


def recipe(model, det_params: str = "", src_params: str = "count: 5") -> str:
    return f"""
    version: 1
    nodes:
      src:  {{type: test.grey_frames, params: {{{src_params}}}}}
      det:  {{type: detector.openvino, params: {{model: '{model}'{', ' + det_params if det_params else ''}}}, in: {{image: src.image}}}}
      sink: {{type: test.detection_sink, in: {{detections: det.detections}}}}
    """


# -- what comes out ------------------------------------------------------------------------------------
def test_every_frame_gives_its_detections_in_original_pixels(yolo_model):
    # Given 96×128 frames (letterboxed into the 64×64 model with 8 px bands) and requests in flight
    graph = compile_recipe(recipe(yolo_model, "requests: 3", "count: 8, width: 128, height: 96"))
    report = run_graph_sync(graph, "sim")
    assert report.status == "completed"
    seen = SEEN["default"]
    # Then every frame arrives once, in order, with its capture time and encoder count
    assert [s[0] for s in seen] == list(range(8))
    assert [s[1] for s in seen] == [i * 10_000_000 for i in range(8)]
    assert [s[2] for s in seen] == [1000 + i for i in range(8)]
    # And the detections are the project's type, in original pixels, named
    detections = seen[0][3]
    assert type(detections).__name__ == "Detections"
    assert detections.xyxy.tolist() == [[16, 0, 48, 32], [88, 8, 104, 24], [52, 76, 76, 84]]
    assert detections.data["class_name"].tolist() == ["pcb", "bracket", "scratch"]
    assert detections.class_id.tolist() == [0, 1, 2]
    assert detections.metadata == {"model": str(yolo_model), "image_hw": (96, 128)}


def test_frame_order_is_kept_with_three_requests_in_flight_and_inference_takes_no_sim_time(tiny_models):
    # Given a model whose pcb box moves with the mean grey level of its input, so each result
    # says which frame it came from, and frames that all arrive at once (period 0). At 320×320
    # requests finish out of order now and then (seen: about one in five).
    head = tiny_models.yolo_head(tiny_models.YOLO_ANCHORS, 3, pad_to=2100)
    model = tiny_models.yolo("moving", head, size=320, shift_cx_by_mean=40.0)
    src = "count: 40, first: 3, step: 97, period_s: 0, width: 320, height: 320"
    graph = compile_recipe(recipe(model, "requests: 3, precision: f32, classes: [class0]", src))
    run_graph_sync(graph, "sim")
    seen = SEEN["default"]
    # Then all 40 come out in frame order (the last ones drained at the end of the stream)
    assert [s[0] for s in seen] == list(range(40))
    for frame_id, _, _, detections, _ in seen:
        level = GreyFrames.level({"first": 3, "step": 97}, frame_id)
        expected_x0 = 16 + 40 * level / 255 - 8
        assert detections.xyxy[0, 0] == pytest.approx(expected_x0, abs=1e-3), f"frame {frame_id} got another frame's result"
    # And on the sim clock inference took no time: each result left at its capture time
    assert all(now == t_capture for _, t_capture, _, _, now in seen)


def test_recipe_thresholds_class_filter_and_roi(yolo_model):
    run_graph_sync(compile_recipe(recipe(yolo_model, "class_conf: {scratch: 0.5}", "count: 2, width: 128, height: 96")), "sim")
    assert SEEN["default"][0][3].data["class_name"].tolist() == ["pcb", "bracket"]
    SEEN.clear()
    run_graph_sync(compile_recipe(recipe(yolo_model, "classes: [bracket, scratch], conf: 0.5", "count: 2, width: 128, height: 96")), "sim")
    assert SEEN["default"][0][3].data["class_name"].tolist() == ["bracket"]
    SEEN.clear()
    run_graph_sync(compile_recipe(recipe(yolo_model, "roi: [[0, 0], [128, 0], [0, 96]]", "count: 2, width: 128, height: 96")), "sim")
    assert SEEN["default"][1][3].data["class_name"].tolist() == ["pcb", "bracket"]
    SEEN.clear()
    # roi_keep: box drops the pcb box [16, 0, 48, 32], which reaches over the belt's edge at y 4
    run_graph_sync(compile_recipe(recipe(yolo_model, "roi: [0, 4, 128, 96], roi_keep: box", "count: 2, width: 128, height: 96")), "sim")
    assert SEEN["default"][1][3].data["class_name"].tolist() == ["bracket", "scratch"]


def test_an_nms_free_model_runs_in_a_recipe(tiny_models):
    model = tiny_models.yolo_e2e("e2e", [[8, 8, 24, 24, 0.875, 1], [0, 0, 4, 4, 0.125, 0]], metadata={"task": "detect", "names": {0: "pcb", 1: "bracket"}, "end2end": True})
    run_graph_sync(compile_recipe(recipe(model, "requests: 2", "count: 3")), "sim")
    assert [d.data["class_name"].tolist() for *_, d, _ in SEEN["default"]] == [["bracket"]] * 3


def test_a_detection_output_model_runs_in_a_recipe_with_class_names_from_params(tiny_models):
    model = tiny_models.detection_output("ssd", [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.7]], [[0.1, 0.875, 0.0], [0.25, 0.0, 0.75]], size=(64, 64))
    run_graph_sync(compile_recipe(recipe(model, "class_names: [background, pcb, scratch], classes: [scratch]", "count: 3, width: 100, height: 50")), "sim")
    detections = SEEN["default"][2][3]
    assert detections.data["class_name"].tolist() == ["scratch"]
    np.testing.assert_allclose(detections.xyxy, [[50, 25, 90, 35]], atol=1e-4)


def test_it_runs_behind_the_built_in_pattern_camera(yolo_model):
    text = f"""
    version: 1
    line: {{name: t, belt_speed_mm_s: 400, mm_per_px: 0.5, encoder_counts_per_mm: 10}}
    nodes:
      cam:  {{type: camera.pattern, params: {{fps: 30, frames: 4, width: 320, height: 240}}}}
      det:  {{type: detector.openvino, params: {{model: '{yolo_model}'}}, in: {{image: cam.image}}}}
      sink: {{type: test.detection_sink, in: {{detections: det.detections}}}}
    """
    run_graph_sync(compile_recipe(text), "sim")
    assert [s[0] for s in SEEN["default"]] == [0, 1, 2, 3]
    assert SEEN["default"][0][3].metadata["image_hw"] == (240, 320)


# -- bad models are loud ------------------------------------------------------------------------------------
def diagnostics(exc: RecipeError) -> str:
    return "\n".join(str(d) for d in exc.diagnostics)


def test_a_missing_model_file_is_a_compile_error_at_the_recipe_line(tmp_path):
    missing = tmp_path / "models" / "nope.xml"
    with pytest.raises(RecipeError) as caught:
        compile_recipe(recipe(missing))
    assert re.search(rf"recipe.yaml:4:\d+: node 'det' param 'model': expected an OpenVINO IR \(.xml with its .bin\) or ONNX model file.*got '{re.escape(str(missing))}', which does not exist", diagnostics(caught.value))


def test_an_unsupported_layout_or_class_count_is_a_compile_error_naming_the_model(tiny_models, yolo_model):
    flat = tiny_models.raw("flat", (1, 3, 64, 64), [(1, 1000)])
    with pytest.raises(RecipeError, match=rf"recipe.yaml:4:\d+: node 'det' param 'model': model {re.escape(str(flat))}: unsupported output layout: found 1 output\(s\) \[1, 1000\]"):
        compile_recipe(recipe(flat))
    with pytest.raises(RecipeError, match=rf"param 'model': model {re.escape(str(yolo_model))}: class-count mismatch: class_names lists 2 names, but its output \[1, 7, 84\] has 4\+3 channels; expected 3 names"):
        compile_recipe(recipe(yolo_model, "class_names: [pcb, bracket]"))
    rank2 = tiny_models.raw("rank2", (1, 64), [(1, 7, 84)])
    with pytest.raises(RecipeError, match=rf"param 'model': model {re.escape(str(rank2))}: wrong input rank: expected an image input of rank 4 \[1, 3, H, W\] \(NCHW\), found rank 2 \[1, 64\]"):
        compile_recipe(recipe(rank2))


def test_unknown_class_names_in_classes_or_class_conf_are_compile_errors(yolo_model):
    with pytest.raises(RecipeError) as caught:
        compile_recipe(recipe(yolo_model, "classes: [screw], class_conf: {nut: 0.4}, roi: [10, 10, 5, 50]"))
    text = diagnostics(caught.value)
    assert re.search(r"node 'det' param 'classes': expected class names of the model \(pcb, bracket, scratch\), got 'screw'", text)
    assert re.search(r"node 'det' param 'class_conf': expected class names of the model \(pcb, bracket, scratch\), got 'nut'", text)
    assert re.search(r"node 'det' param 'roi': expected \[x0, y0, x1, y1\] with x0 < x1 and y0 < y1, got \[10, 10, 5, 50\]", text)


def test_a_model_that_breaks_after_validation_fails_the_start_naming_its_path(yolo_model):
    graph = compile_recipe(recipe(yolo_model))
    yolo_model.with_suffix(".bin").unlink()
    with pytest.raises(NodeFailure, match=rf"node 'det' \(detector.openvino@v1\) failed: ModelError: model {re.escape(str(yolo_model))}: expected the IR weights 'model.bin' beside"):
        run_graph_sync(graph, "sim")
    assert SEEN["default"] == []  # nothing flowed: a broken model stops the start, not frame 1000


def test_a_frame_that_is_not_a_colour_image_fails_the_node_naming_the_frame(yolo_model):
    graph = compile_recipe(recipe(yolo_model, "", "count: 3, grey_only: true"))
    with pytest.raises(NodeFailure, match=r"node 'det' \(detector.openvino@v1\) failed on frame 0: ValueError: expected a BGR uint8 image \[H, W, 3\], got uint8 \[64, 64\]"):
        run_graph_sync(graph, "sim")


def test_an_absent_device_fails_the_start(yolo_model):
    graph = compile_recipe(recipe(yolo_model, "device: NPU"))
    with pytest.raises(NodeFailure, match=r"failed: ModelError: device: expected one of CPU.*AUTO, got 'NPU'"):
        run_graph_sync(graph, "sim")


def test_the_docstring_example_names_every_param_it_uses():
    example = OpenVinoDetector.example()
    assert "type: detector.openvino" in example
    for param in re.findall(r"(\w+):", example.split("params:", 1)[1].split("in:", 1)[0]):
        assert param in OpenVinoDetector.params_schema["properties"] or param == "scratch"


def test_an_inference_that_never_finishes_fails_the_node_after_timeout_s(yolo_model, monkeypatch):
    import openvino as ov

    class HungDevice(ov.AsyncInferQueue):
        """Takes frame 2 and never calls back (a device that hangs)."""

        started = 0

        def start_async(self, inputs, userdata=None, share_inputs=False):
            HungDevice.started += 1
            if HungDevice.started == 3:
                return None
            return super().start_async(inputs, userdata, share_inputs=share_inputs)

    monkeypatch.setattr(ov, "AsyncInferQueue", HungDevice)
    graph = compile_recipe(recipe(yolo_model, "timeout_s: 0.5, requests: 1", "count: 3"))
    with pytest.raises(NodeFailure, match=r"node 'det' \(detector.openvino@v1\) failed.*frame 2.*TimeoutError: OpenVINO did not finish the inference within timeout_s=0.5 s \(CPU\)"):
        run_graph_sync(graph, "sim")
    assert [frame for frame, *_ in SEEN["default"]] == [0, 1]  # what came before is delivered, in order
