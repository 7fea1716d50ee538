"""image.stats: the brightness and contrast a camera health check looks at."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from testnodes import compile_text

from lineguard.nodes.image_stats import ImageStats
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.errors import RecipeError
from lineguard.runtime.schema import apply_defaults, freeze


class _Ctx:
    node_id = "stats"

    def __init__(self):
        self.out = []

    async def emit(self, port, envelope):
        self.out.append((port, envelope))


def stats_of(image: np.ndarray, **params) -> dict:
    ctx = _Ctx()
    node = ImageStats(ctx, freeze(apply_defaults(ImageStats.params_schema, params)))  # type: ignore[arg-type]
    asyncio.run(node.process("image", Envelope(7, 0, image, 70)))
    [(port, env)] = ctx.out
    assert port == "stats" and env.frame_id == 7 and env.encoder == 70
    return env.payload


def test_a_half_dark_half_bright_frame_has_the_mean_and_spread_it_shows():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 200
    s = stats_of(image)
    assert s["mean"] == pytest.approx(100.0) and s["std"] == pytest.approx(100.0)


def test_a_region_of_interest_sees_only_the_belt():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 200
    assert stats_of(image, roi=[120, 0, 200, 100]) == {"mean": pytest.approx(200.0), "std": pytest.approx(0.0)}


def test_an_empty_region_is_a_compile_error_naming_it():
    with pytest.raises(RecipeError, match=r"recipe.yaml:4:\d+: node 'stats' param 'roi': expected x0 < x1 and y0 < y1, got \[50, 0, 50, 10\]"):
        compile_text("version: 1\nnodes:\n  cam: {type: camera.pattern}\n  stats: {type: image.stats, params: {roi: [50, 0, 50, 10]}, in: {image: cam.image}}\n")
