"""Benchmark: what ``inspect.surface`` costs per part, with and without its component windows.

Parts are rendered on the simulated line (scenario ``nominal``, at the reference's scale) and each
part's crops are registered and stacked as the node does. Then every stack is judged, one core,
two ways: the part-wide comparison alone (the baseline: what a reference without components
costs), and with the component windows added. The figures are medians over rounds that alternate the
two, so the ratio holds on a noisy machine. Budget: a part passes the camera about once a second
at the demo's belt speed, and the node judges it once; with its components a part should take
well under a tenth of that (target: < 100 ms on one core).

Run: ``lineguard bench surface [REFERENCE] [--parts N] [--rounds R] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineguard.nodes.inspect_surface import (
    ReferenceError,
    ScratchRule,
    SurfaceInspector,
    component_windows,
    crop_at,
    edge_sigma,
    judge,
    load_references,
    register,
)

TARGET_MS = 100.0
DEFAULT_REFERENCE = Path(__file__).resolve().parents[1] / "models" / "sim-v8" / "surface.npz"
_DEFAULTS = {k: v.get("default") for k, v in SurfaceInspector.params_schema["properties"].items()}


def _stacks(refs: dict, mm_per_px: float, parts: int, seed: int) -> tuple[list[tuple[str, np.ndarray]], list[float]]:
    """Each whole part's median stack, crops taken as the node takes them (in the zone, one per
    ``step_px`` of travel, up to ``frames``), and the time each crop's registration took (ms)."""
    from lineguard.sim.conveyor import Conveyor
    from lineguard.sim.parts import PART_TYPES
    from lineguard.sim.scenario import load_scenario
    from lineguard.sim.truth import CLASSES

    scenario = load_scenario("nominal", {"camera.mm_per_px": mm_per_px, "parts.count": parts, "camera.fps": 30}, seed=seed)
    line = Conveyor(scenario)
    (x0, x1), step, frames = _DEFAULTS["zone_px"], _DEFAULTS["step_px"], _DEFAULTS["frames"]
    crops: dict[int, list[np.ndarray]] = {}
    last: dict[int, float] = {}
    reg_ms: list[float] = []
    for i in range(line.n_frames):
        truth = line.frame_truth(i)
        grey = None
        for box, k, pid, seen in zip(truth.boxes_xyxy, truth.class_ids, truth.part_ids, truth.visible):
            pid, name = int(pid), CLASSES[k]
            cx = float(box[0] + box[2]) / 2
            if name not in PART_TYPES or name not in refs or seen < 0.999 or not x0 <= cx <= x1:
                continue
            if cx - last.get(pid, -1e9) < step or len(crops.get(pid, [])) >= frames:
                continue
            last[pid] = cx
            if grey is None:
                grey = cv2.cvtColor(line.render(i), cv2.COLOR_BGR2GRAY)
            ref = refs[name]
            t0 = time.perf_counter()
            aligned = register(ref.image, ref.fit_mask, crop_at(grey, (cx, float(box[1] + box[3]) / 2), ref.size))
            reg_ms.append((time.perf_counter() - t0) * 1e3)
            if aligned is not None:
                crops.setdefault(pid, []).append(aligned)
    stacks = [(line.parts[pid].part_type, np.median(c, axis=0).astype(np.float32)) for pid, c in sorted(crops.items()) if len(c) >= frames]
    return stacks, reg_ms


def bench_surface(reference: str | Path = DEFAULT_REFERENCE, parts: int = 8, rounds: int = 3, seed: int = 0) -> dict[str, Any]:
    """Judge ``parts`` simulated parts against ``reference``, with and without component windows."""
    refs, meta = load_references(reference)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        stacks, reg_ms = _stacks(refs, float(meta["mm_per_px"]), parts, seed)
        if not stacks:
            raise ValueError(f"no whole part of {', '.join(sorted(refs))} was seen in {parts} simulated parts: try more --parts")
        edge, z_seed, z_low = _DEFAULTS["edge_px"], _DEFAULTS["z_seed"], _DEFAULTS["z_low"]
        rule = ScratchRule(_DEFAULTS["min_length_mm"], _DEFAULTS["short_line_mm"], _DEFAULTS["short_line_strength"])
        prepared = {}
        for name, ref in refs.items():
            sigma, mask = edge_sigma(ref, edge)
            prepared[name] = (ref, sigma, mask, component_windows(ref, edge, mask))
        runs: dict[str, list[float]] = {"part_wide": [], "with_components": []}
        for _ in range(rounds):
            for key in runs:
                t0 = time.perf_counter()
                for name, stack in stacks:
                    ref, sigma, mask, windows = prepared[name]
                    judge(stack, ref, sigma, mask, float(meta["mm_per_px"]), z_seed, z_low, rule, windows if key == "with_components" else ())
                runs[key].append((time.perf_counter() - t0) * 1e3 / len(stacks))
    finally:
        cv2.setNumThreads(threads)
    base, full = float(np.median(runs["part_wide"])), float(np.median(runs["with_components"]))
    return {
        "reference": str(reference),
        "parts_judged": len(stacks),
        "part_types": sorted({n for n, _ in stacks}),
        "components": {name: len(p[3]) for name, p in prepared.items()},
        "register_crop_ms_p50": round(float(np.median(reg_ms)), 2),
        "judge_part_wide_ms": round(base, 2),
        "judge_with_components_ms": round(full, 2),
        "ratio": round(full / base, 2),
        "target_ms": TARGET_MS,
        "met": full < TARGET_MS,
    }


def register_bench(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``lineguard bench surface`` to the ``lineguard bench`` parser's sub-commands."""
    p = bench_subparsers.add_parser(
        "surface",
        help="surface check: ms per part, with its component windows vs without",
        description="Render parts on the simulated line, stack their crops as inspect.surface does, and judge each "
        "stack on one core: the part-wide comparison alone (baseline) and with the component windows, in alternating "
        f"rounds. Prints ms per part, their ratio and the per-crop registration time. Target: < {TARGET_MS:g} ms per part "
        "with components.",
    )
    p.add_argument("reference", nargs="?", default=str(DEFAULT_REFERENCE), metavar="REFERENCE", help="surface reference .npz (default: the shipped models/sim-v8/surface.npz)")
    p.add_argument("--parts", type=int, default=8, help="simulated parts to render (default 8; those whole in the zone are judged)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    def run(args: argparse.Namespace) -> int:
        try:
            r = bench_surface(args.reference, parts=args.parts, rounds=args.rounds, seed=args.seed)
        except (ReferenceError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(r))
            return 0
        print(f"surface check, {r['parts_judged']} parts ({', '.join(r['part_types'])}), one core, {r['reference']}")
        print(f"  components: {', '.join(f'{k} {v}' for k, v in sorted(r['components'].items()))}")
        print(f"  registering one crop:        {r['register_crop_ms_p50']:7.2f} ms (p50)")
        print(f"  judging, part-wide only:     {r['judge_part_wide_ms']:7.2f} ms per part (baseline)")
        print(f"  judging, with components:    {r['judge_with_components_ms']:7.2f} ms per part  ({r['ratio']:.2f}x baseline)")
        print(f"  target < {r['target_ms']:g} ms per part: {'met' if r['met'] else 'NOT met'}")
        return 0

    p.set_defaults(func=run)
    return p
