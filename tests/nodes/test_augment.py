"""image.augment: seeded nuisances on a live stream, in a graph on the sim clock."""

from __future__ import annotations

import hashlib
import textwrap

import numpy as np
import pytest
import testnodes
from testnodes import COLLECTED

from lineguard.learn.augment import AugmentConfig, augment_image
from lineguard.nodes.augment import ImageAugment
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.errors import RecipeError
from lineguard.runtime.executor import run_graph_sync
from lineguard.runtime.loader import load_text
from lineguard.runtime.node import InPort


@pytest.fixture(autouse=True)
def clean():
    testnodes.reset()
    yield
    testnodes.reset()


class Digests(testnodes.Collect):
    """Keeps per frame a digest of the pixels, whether they are read-only, and the first frames whole."""

    type_name = "test.digests"
    inputs = {"in": InPort("image", queue=4)}

    async def process(self, port, envelope):
        image = envelope.payload
        key = self.params["key"]
        COLLECTED[key].append((envelope.frame_id, envelope.t_capture_ns, hashlib.sha1(image.tobytes()).hexdigest(), image.flags.writeable))
        if len(COLLECTED[key]) <= 3:
            COLLECTED[key + ":frames"].append(image)


def compile_recipe(aug_params: str, parts: int = 1):
    registry = testnodes.test_registry()
    registry.register(Digests)
    registry.register(ImageAugment)  # idempotent once nodes/__init__.py lists it
    text = textwrap.dedent(f"""\
        version: 1
        line: {{belt_speed_mm_s: 400, mm_per_px: 0.5, encoder_counts_per_mm: 10}}
        nodes:
          cam: {{type: camera.sim, params: {{seed: 3, parts: {parts}, skip_late_frames: false, set: {{camera.resolution: vga, camera.mm_per_px: 1.0}}}}}}
          aug: {{type: image.augment, params: {aug_params}, in: {{image: cam.image}}}}
          raw: {{type: test.digests, params: {{key: raw}}, in: {{in: cam.image}}}}
          out: {{type: test.digests, params: {{key: out}}, in: {{in: aug.image}}}}
    """)
    return compile_document(load_text(text, "recipe.yaml"), registry)


STRESS = "{seed: 7, motion_blur: {p: 1.0, length_px: [6, 10]}, noise: {p: 0.5}, jpeg: {p: 0.3}}"


def test_every_frame_comes_out_augmented_read_only_and_in_order():
    report = run_graph_sync(compile_recipe(STRESS), "sim")
    raw, out = COLLECTED["raw"], COLLECTED["out"]
    assert report.status == "completed" and len(out) == len(raw) > 10
    assert [r[:2] for r in raw] == [o[:2] for o in out]  # same frames, same capture times
    assert all(r[2] != o[2] for r, o in zip(raw, out))  # every frame was blurred (p = 1)
    assert not any(o[3] for o in out)  # read-only downstream
    # exactly what the pure function gives for that frame: the node adds nothing of its own
    config = AugmentConfig.from_params({"motion_blur": {"p": 1.0, "length_px": [6, 10]}, "noise": {"p": 0.5}, "jpeg": {"p": 0.3}})
    first_in, first_out = COLLECTED["raw:frames"][0], COLLECTED["out:frames"][0]
    assert np.array_equal(first_out, augment_image(first_in, config, 7, raw[0][0]))


def test_a_rerun_on_the_sim_clock_gives_identical_frames_and_another_seed_does_not():
    run_graph_sync(compile_recipe(STRESS), "sim")
    first = list(COLLECTED["out"])
    testnodes.reset()
    run_graph_sync(compile_recipe(STRESS), "sim")
    assert COLLECTED["out"] == first
    testnodes.reset()
    run_graph_sync(compile_recipe(STRESS.replace("seed: 7", "seed: 8")), "sim")
    assert [o[2] for o in COLLECTED["out"]] != [o[2] for o in first]


def test_with_every_augmentation_off_frames_pass_through_untouched():
    run_graph_sync(compile_recipe("{perspective: {p: 0}, motion_blur: {p: 0}, brightness_contrast: {p: 0}, gamma: {p: 0}, noise: {p: 0}, jpeg: {p: 0}}"), "sim")
    assert [o[2] for o in COLLECTED["out"]] == [r[2] for r in COLLECTED["raw"]]


def test_defaults_mimic_the_line_and_are_documented_in_the_schema():
    schema = ImageAugment.params_schema["properties"]
    assert schema["motion_blur"]["properties"]["angle_deg"]["default"] == [-3.0, 3.0]  # along the belt
    assert set(schema) == {"seed", "perspective", "motion_blur", "brightness_contrast", "gamma", "noise", "jpeg"}
    assert "type: image.augment" in ImageAugment.example()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{noise: {sigma: [8, 2]}}", r"recipe.yaml:5:\d+: node 'aug' param 'noise.sigma': expected \[low, high\] with low <= high, got \[8, 2\]"),
        ("{jpeg: {quality: [0, 50]}}", r"recipe.yaml:5:\d+: node 'aug'.*jpeg.*quality"),
        ("{blur: {p: 1}}", r"recipe.yaml:5:\d+: node 'aug'.*blur"),
    ],
)
def test_bad_params_are_compile_errors_naming_node_and_param(params, message):
    with pytest.raises(RecipeError, match=message):
        compile_recipe(params)
