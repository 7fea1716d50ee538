"""Benchmark: how fast the simulated conveyor renders, on one core, with blur and tilt on.

The simulation must never be what limits the pipeline: targets are >= 120 FPS at 640x480 and
>= 60 FPS at 1280x720 (scenario ``shift``: 6.4 px motion blur, 3-6 degree tilt, flicker, glare,
noise, distractors). Frames are rendered in order from frame 0, so the one-off work (part sprites,
belt chunks) is included. This machine is noisy, so each figure is also given as a ratio to a
baseline measured in the same process: a plain ``cv2.resize`` of a slightly larger frame to the
output size plus a copy (about the least any renderer has to do per frame).

Run: ``python -m lineguard.sim.render_bench [--frames N] [--scenario NAME]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import cv2
import numpy as np

from lineguard.sim.conveyor import Conveyor
from lineguard.sim.scenario import load_scenario

TARGET_FPS = {"vga": 120.0, "hd": 60.0}


def _baseline_fps(width: int, height: int, frames: int) -> float:
    src = np.random.default_rng(0).integers(0, 256, (height + 64, width + 64, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for _ in range(frames):
        out = cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR).copy()
    assert out.shape == (height, width, 3)
    return frames / (time.perf_counter() - t0)


def bench_renderer(frames: int = 300, scenario: str = "shift", seed: int = 0) -> dict[str, Any]:
    """Render ``frames`` frames at 640x480 and at 1280x720 on one core; FPS and ratio to baseline."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        results: dict[str, Any] = {"scenario": scenario, "frames": frames}
        for preset in ("vga", "hd"):
            sc = load_scenario(scenario, {"camera.resolution": preset, "camera.mm_per_px": "auto"}, seed=seed)
            t0 = time.perf_counter()
            conveyor = Conveyor(sc)
            setup_s = time.perf_counter() - t0
            n = min(frames, conveyor.n_frames)
            t0 = time.perf_counter()
            for i in range(n):
                conveyor.render(i)
            fps = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(n):
                conveyor.frame_truth(i)
            truth_fps = n / (time.perf_counter() - t0)
            w, h = sc.camera.resolution
            base = _baseline_fps(w, h, n)
            results[preset] = {
                "resolution": [w, h],
                "frames": n,
                "setup_s": round(setup_s, 3),
                "fps": round(fps, 1),
                "truth_fps": round(truth_fps, 1),
                "baseline_fps": round(base, 1),
                "ratio_to_baseline": round(fps / base, 4),
                "target_fps": TARGET_FPS[preset],
                "meets_target": fps >= TARGET_FPS[preset],
                "motion_blur_px": round(sc.motion_blur_px, 2),
                "tilt_deg": [round(v, 2) for v in conveyor.tilt_deg],
            }
        return results
    finally:
        cv2.setNumThreads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lineguard.sim.render_bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--frames", type=int, default=300, help="frames to render per resolution")
    parser.add_argument("--scenario", default="shift", help="scenario preset or YAML path")
    parser.add_argument("--seed", type=int, default=0, help="scenario seed")
    args = parser.parse_args(argv)
    r = bench_renderer(args.frames, args.scenario, args.seed)
    print(f"renderer benchmark, scenario {r['scenario']}, one core (cv2.setNumThreads(1))")
    for preset in ("vga", "hd"):
        x = r[preset]
        w, h = x["resolution"]
        verdict = "ok" if x["meets_target"] else "BELOW TARGET"
        print(
            f"  {w}x{h}: {x['fps']:7.1f} FPS (target {x['target_fps']:.0f}: {verdict}), "
            f"{x['ratio_to_baseline']:.3f} x baseline resize+copy ({x['baseline_fps']:.0f} FPS); "
            f"truth {x['truth_fps']:.0f} FPS; set-up {x['setup_s']:.2f} s; blur {x['motion_blur_px']} px, "
            f"tilt {x['tilt_deg']} deg"
        )
    return 0 if all(r[p]["meets_target"] for p in ("vga", "hd")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
