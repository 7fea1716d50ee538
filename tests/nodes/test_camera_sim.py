"""camera.sim: the simulated conveyor as a recipe source, on the recipe's clock."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import testnodes
from testnodes import COLLECTED, compile_text

from lineguard.runtime.errors import RecipeError
from lineguard.runtime.executor import run_graph_sync
from lineguard.sim.conveyor import Conveyor
from lineguard.sim.scenario import load_scenario


@pytest.fixture(autouse=True)
def clean():
    testnodes.reset()
    yield
    testnodes.reset()


class Frames(testnodes.Collect):
    """Keeps whole frames."""

    type_name = "test.frames"
    inputs = {"in": testnodes.InPort("image", queue=4)}

    async def process(self, port, envelope):
        COLLECTED["frames"].append(envelope)


def graph(params: str, line: str = "{belt_speed_mm_s: 400, mm_per_px: 0.5, encoder_counts_per_mm: 10}", sink_delay: float = 0.0):
    text = textwrap.dedent(f"""\
        version: 1
        line: {line}
        nodes:
          cam: {{type: camera.sim, params: {params}}}
          sink: {{type: test.collect, params: {{delay_s: {sink_delay}}}, in: {{in: cam.image}}}}
    """)
    return compile_text(text)


def test_frames_carry_the_conveyors_time_encoder_and_pixels():
    from lineguard.runtime.compiler import compile_document
    from lineguard.runtime.loader import load_text

    registry = testnodes.test_registry()
    registry.register(Frames)
    text = "version: 1\nnodes:\n  cam: {type: camera.sim, params: {scenario: nominal, seed: 3, parts: 2}}\n  sink: {type: test.frames, in: {in: cam.image}}\n"
    report = run_graph_sync(compile_document(load_text(text, "r.yaml"), registry), "sim")
    frames = COLLECTED["frames"]
    conveyor = Conveyor(load_scenario("nominal", {"parts.count": 2}, seed=3))
    assert len(frames) == conveyor.n_frames and report.status == "completed"
    for env in (frames[0], frames[len(frames) // 2], frames[-1]):
        assert env.t_capture_ns == conveyor.frame_time_ns(env.frame_id)
        assert env.encoder == conveyor.encoder_at_frame(env.frame_id)
        assert np.array_equal(env.payload, conveyor.render(env.frame_id))
        assert not env.payload.flags.writeable


def test_the_recipes_line_settings_drive_the_belt():
    run_graph_sync(graph("{parts: 1, seed: 1}", line="{belt_speed_mm_s: 250, mm_per_px: 0.5, encoder_counts_per_mm: 4}"), "sim")
    frame_id, t_ns, _, _ = COLLECTED["default"][30]
    # encoder counts = speed × time × counts/mm
    conveyor = Conveyor(load_scenario("nominal", {"parts.count": 1, "belt.speed_mm_s": 250, "belt.encoder_counts_per_mm": 4, "camera.mm_per_px": 0.5}, seed=1))
    assert conveyor.encoder_at_frame(frame_id) == round(250 * t_ns / 1e9 * 4)


def test_a_camera_does_not_wait_for_a_slow_pipeline_and_counts_what_it_skipped():
    # 60 fps camera, a consumer that needs 50 ms a frame behind a blocking edge.
    report = run_graph_sync(graph("{parts: 2, seed: 1}", sink_delay=0.05), "sim")
    cam = next(n for n in report.nodes if n["node"] == "cam")
    n_frames = Conveyor(load_scenario("nominal", {"parts.count": 2}, seed=1)).n_frames
    skipped = cam["dropped"]["downstream_slow"]
    assert skipped > n_frames / 2
    assert cam["out"]["image"] + skipped == n_frames  # every frame is either delivered or counted


def test_an_unknown_scenario_is_a_compile_error_naming_the_param():
    with pytest.raises(RecipeError, match=r"recipe.yaml:4:\d+: node 'cam' param 'scenario': expected a valid scenario, got: .*unknown scenario 'sunny'"):
        graph("{scenario: sunny}")


def test_record_jsonl_writes_detections_box_by_box(tmp_path):
    import json

    text = textwrap.dedent(f"""\
        version: 1
        line: {{mm_per_px: 1.0}}
        nodes:
          cam: {{type: camera.sim, params: {{parts: 1, seed: 2, set: {{camera.resolution: vga}}}}}}
          stats: {{type: image.stats, in: {{image: cam.image}}}}
          det: {{type: detector.truth, params: {{image_size_px: [640, 480]}}, in: {{truth: cam.truth}}}}
          log: {{type: record.jsonl, params: {{path: '{tmp_path}/d.jsonl'}}, in: {{items: [det.detections, stats.stats]}}}}
    """)
    run_graph_sync(compile_text(text), "sim")
    records = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    boxes = [b for r in records if isinstance(r["payload"], list) for b in r["payload"]]
    assert boxes and {"class_name", "conf", "xyxy"} <= set(boxes[0])
    assert {b["class_name"] for b in boxes} & {"pcb", "bracket"}
