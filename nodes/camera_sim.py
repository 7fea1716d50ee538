"""``camera.sim``: the camera over the simulated conveyor."""

from __future__ import annotations

from typing import Any

from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import Node, OutPort


def line_overrides(line: dict[str, Any] | Any) -> dict[str, Any]:
    """The recipe's ``line`` settings as scenario overrides: the recipe is the one truth about the
    line's geometry, so the tracker, the vote and the PLC see the same belt as the camera."""
    return {
        "belt.speed_mm_s": float(line["belt_speed_mm_s"]),
        "belt.encoder_counts_per_mm": float(line["encoder_counts_per_mm"]),
        "camera.mm_per_px": float(line["mm_per_px"]),
        "belt.reject_distance_mm": float(line["reject_distance_mm"]),
    }


def scenario_for(params: Any, line: Any):
    """The scenario a ``camera.sim`` node with these params renders (also used by ``sim eval``)."""
    from lineguard.runtime.schema import thaw
    from lineguard.sim.scenario import load_scenario

    # recipe params are frozen (tuples, read-only maps); the scenario checks plain YAML values
    overrides: dict[str, Any] = {**line_overrides(line), **thaw(dict(params.get("set") or {}))}
    if params.get("parts") is not None:
        overrides["parts.count"] = params["parts"]
    return load_scenario(params["scenario"], overrides, params.get("seed"))


class SimCamera(Node):
    """Camera over the simulated conveyor: renders a scenario (``nominal``, ``shift``, ``harsh`` or a
    scenario YAML) frame by frame on the recipe's clock, with capture time and encoder count.

    The belt speed, encoder scale, mm per pixel and reject distance come from the recipe's ``line``
    section. Like a
    real camera it does not wait for a slow pipeline: a frame whose time has passed by more than
    one frame period is skipped and counted (``dropped: downstream_slow``), unless
    ``skip_late_frames: false``. The stream ends when the last part has left the image. The
    optional ``truth`` output carries each frame's ground truth (boxes, classes, part ids), for
    scoring and for a perfect-detector stand-in.

    Example:
        cam:
          type: camera.sim
          params: {scenario: shift, seed: 7, parts: 50, set: {camera.fps: 30}}
    """

    type_name = "camera.sim"
    version = 1
    outputs = {
        "image": OutPort("image", "BGR uint8 frames, read-only"),
        "truth": OutPort("frame_truth", "what each frame really shows (lineguard.sim.truth.FrameTruth)", optional=True),
    }
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "scenario": {"type": "string", "minLength": 1, "default": "nominal", "description": "Preset name or path to a scenario YAML."},
            "seed": {"type": ["integer", "null"], "default": None, "description": "Replaces the scenario's seed."},
            "parts": {"type": ["integer", "null"], "minimum": 1, "default": None, "description": "Parts in the run (the scenario's parts.count)."},
            "set": {"type": "object", "default": {}, "description": "Scenario overrides by dotted name, e.g. {camera.fps: 30}."},
            "skip_late_frames": {"type": "boolean", "default": True},
        },
    }

    @classmethod
    def check_params(cls, params, line):
        try:
            scenario_for(params, line)
        except ValueError as exc:
            return [("scenario", f"expected a valid scenario, got: {exc}")]
        return []

    async def open(self) -> None:
        from lineguard.sim.conveyor import Conveyor

        self.scenario = scenario_for(self.params, self.ctx.line)
        self.conveyor = Conveyor(self.scenario)
        # Warm up (belt tiles, the first sprites) before the clock starts, as a camera settles
        # before a line starts; otherwise the first frames of a wall-clock run come late.
        await self.ctx.clock.run_in_thread(self.conveyor.render, 0)

    async def run(self) -> None:
        conveyor, clock = self.conveyor, self.ctx.clock
        period_ns = round(1e9 / conveyor.fps)
        skip = self.params["skip_late_frames"]
        i = 0
        while i < conveyor.n_frames:
            if skip:
                late_by = clock.now_ns() - conveyor.frame_time_ns(i)
                if late_by > period_ns:
                    missed = min(late_by // period_ns, conveyor.n_frames - i)
                    self.ctx.count_drop("downstream_slow", int(missed))
                    i += int(missed)
                    if i >= conveyor.n_frames:
                        break
            t_ns = conveyor.frame_time_ns(i)
            await clock.sleep_until_ns(t_ns)
            image = await clock.run_in_thread(conveyor.render, i)
            image.flags.writeable = False
            envelope = Envelope(i, t_ns, image, conveyor.encoder_at_frame(i))
            await self.ctx.emit("image", envelope)
            if self.ctx.is_wired("truth"):
                await self.ctx.emit("truth", envelope.derive(conveyor.frame_truth(i)))
            i += 1
