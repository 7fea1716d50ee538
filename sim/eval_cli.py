"""``lineguard sim eval``: the command line of :mod:`lineguard.sim.eval`, with tables, JSON and plots."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

from lineguard.runtime.cli import EXIT_INVALID, EXIT_OK
from lineguard.runtime.cli import EXIT_RUN_FAILED as EXIT_FAILED


def register(sim_subparsers: argparse._SubParsersAction) -> None:
    p = sim_subparsers.add_parser(
        "eval",
        help="run a recipe on the simulated line and score every part",
        description="Run RECIPE on the simulated line on the sim clock (its camera.sim node pointed at the scenario; its PLC output, if any, at a virtual PLC on loopback) and score every part: precision, recall, escapes, false rejects, insufficient evidence, ID switches, per defect kind and part type, and the same for single-frame decisions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("recipe", metavar="RECIPE", help="recipe file or shipped recipe name")
    p.add_argument("--scenario", default="nominal", help="scenario preset or YAML path")
    p.add_argument("--parts", type=int, default=100, help="parts on the belt")
    p.add_argument("--seed", type=int, default=1000, help="scenario seed (use seeds the model was not trained on)")
    p.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help="override a node param (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary and every part as JSON")
    p.add_argument("--report", metavar="DIR", help="write eval.json and PNG plots (confusion matrix, threshold sweep, decision margins, verdict latency) to DIR")
    p.add_argument("--clock", choices=["sim", "wall"], default="sim", help="sim: as fast as the CPU allows; wall: real time, as on a line")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_eval(args: argparse.Namespace) -> int:
    from lineguard.runtime.cli import recipe_path
    from lineguard.runtime.compiler import apply_overrides, compile_document
    from lineguard.runtime.errors import NodeFailure, RecipeError
    from lineguard.runtime.loader import load_file
    from lineguard.runtime.registry import default_registry
    from lineguard.sim.eval import EvalSetupError, camera_node, evaluate, plc_node

    registry = default_registry()
    with recipe_path(args.recipe) as path:
        try:
            first = compile_document(apply_overrides(load_file(path), args.set or []), registry)
            cam = camera_node(first)
            plc = plc_node(first)
            overrides = [f"{cam}.scenario={args.scenario}", f"{cam}.parts={args.parts}", f"{cam}.seed={args.seed}", *(args.set or [])]
            port = None
            if plc is not None:
                port = _free_port()
                node_id, protocol = plc
                overrides += [f"{node_id}.host=127.0.0.1", f"{node_id}.port={port}"] if protocol == "modbus" else [f"{node_id}.endpoint=opc.tcp://127.0.0.1:{port}/"]
            graph = compile_document(apply_overrides(load_file(path), overrides), registry)
        except RecipeError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_INVALID
        except EvalSetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INVALID
    try:
        result = evaluate(graph, scenario_label=args.scenario, progress=not args.no_progress and not args.json, plc_port=port, clock=args.clock)
    except NodeFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.report:
        written = write_report(result, Path(args.report))
        print(f"report: {', '.join(str(p) for p in written)}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        if getattr(args, "show_run", False):
            from lineguard.runtime.report import print_report

            print_report(result.run)
        print_summary(result.summary())
    return EXIT_OK


def print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 120)
    t = Table(title=f"{s['recipe']} on '{s['scenario']}' (seed {s['seed']}): {s['parts']} parts, {s['defective']} defective")
    for col in ("", "precision", "recall", "F1", "escapes", "false rejects"):
        t.add_column(col, justify="left" if not col else "right")
    sf = s["single_frame"]
    t.add_row("vote (per part)", f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", str(s["escapes"]), str(s["false_rejects"]))
    t.add_row("single frame", f"{sf['precision']:.4f}", f"{sf['recall']:.4f}", f"{sf['f1']:.4f}", str(sf["fn"]), str(sf["fp"]))
    console.print(t)
    kinds = Table(title="per defect kind")
    for col in ("kind", "parts", "rejected", "recall", "right reason", "also another reason"):
        kinds.add_column(col, justify="left" if col == "kind" else "right")
    for kind, k in s["by_defect_kind"].items():
        kinds.add_row(kind, str(k["parts"]), str(k["rejected"]), f"{k['recall']:.4f}", str(k["right_reason"]), str(k["other_reasons"]))
    console.print(kinds)
    types = Table(title="per part type")
    for col in ("type", "parts", "precision", "recall", "escapes", "false rejects"):
        types.add_column(col, justify="left" if col == "type" else "right")
    for name, k in s["by_part_type"].items():
        types.add_row(name, str(k["parts"]), f"{k['precision']:.4f}", f"{k['recall']:.4f}", str(k["fn"]), str(k["fp"]))
    console.print(types)
    margin = s["decision_margin_ms"] or {}
    latency = s["verdict_latency_ms"] or {}
    console.print(
        f"insufficient evidence: {s['insufficient_evidence']}   unseen parts: {s['unseen_parts']}   "
        f"ID switches: {s['id_switches']} ({s['id_switch_rate']:.2%})   ghost verdicts: {s['ghost_verdicts']}   "
        f"camera frames dropped: {s['run']['camera_dropped']}   decision margin before the gate: min {margin.get('min')} ms, p50 {margin.get('p50')} ms   "
        f"verdict latency after the last sighting: p50 {latency.get('p50')} ms, max {latency.get('max')} ms"
    )
    if s["plc"]:
        p = s["plc"]
        console.print(f"virtual PLC: {p.get('rejected')} rejected, {p.get('escapes')} escapes, {p.get('false_rejects')} false rejects, timing error max {p.get('timing_error_max_abs_mm')} mm, late commands {p.get('late_commands')}, fail-safe rejects {p.get('fail_safe_rejects')}, rejected for want of a verdict {p.get('no_verdict_rejects')}, its own timers late by up to {p.get('timer_lag_max_ms')} ms")


def write_report(result, out: Path) -> list[Path]:
    """eval.json and four plots: the confusion matrix, a threshold sweep over the vote's scores,
    the decision margins before the gate and the verdict latency after a part's last sighting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "eval.json", out / "confusion.png", out / "threshold_sweep.png", out / "decision_margin.png", out / "latency.png"]
    paths[0].write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")

    c = result.counts()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    matrix = np.array([[c.tp, c.fn], [c.fp, c.tn]])
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=14, color="black")
    ax.set_xticks([0, 1], ["rejected", "passed"])
    ax.set_yticks([0, 1], ["defective", "good"])
    ax.set_title(f"parts: precision {c.precision:.3f}, recall {c.recall:.3f}")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)

    # Threshold sweep: reject a part when its strongest defect score reaches the threshold
    # (parts with insufficient evidence stay rejected, as the vote's fail-safe policy says).
    rows = []
    for o in result.parts:
        score = max((max(v.scores.values(), default=0.0) for v in o.verdicts), default=0.0)
        forced = any("insufficient_evidence" in v.reasons for v in o.verdicts)
        rows.append((o.part.defective, score, forced))
    top = max([s for _, s, _ in rows] + [1.0])
    thresholds = np.linspace(0, top, 50)
    precision, recall = [], []
    for th in thresholds:
        pairs = [(d, forced or (s >= th and s > 0)) for d, s, forced in rows]
        from lineguard.sim.eval import count

        k = count(pairs)
        precision.append(k.precision)
        recall.append(k.recall)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(thresholds, precision, label="precision")
    ax.plot(thresholds, recall, label="recall")
    ax.set_xlabel("defect score threshold (k-of-n window sum)")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("per-part precision / recall vs threshold")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    if result.margins_ms:
        ax.hist(result.margins_ms, bins=30, color="tab:green")
    ax.set_xlabel("decision → part at the gate (ms)")
    ax.set_ylabel("parts")
    ax.set_title("time left before the reject gate")
    fig.tight_layout()
    fig.savefig(paths[3], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    if result.latencies_ms:
        ax.hist(result.latencies_ms, bins=30, color="tab:blue")
    ax.set_xlabel("part's last sighting → its verdict (ms)")
    ax.set_ylabel("parts")
    ax.set_title(f"verdict latency ({result.run.clock} clock)")
    fig.tight_layout()
    fig.savefig(paths[4], dpi=120)
    plt.close(fig)
    return paths
