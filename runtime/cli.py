"""The ``lineguard`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from lineguard import __version__
from lineguard.runtime.errors import NodeFailure, RecipeError, RegistryError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_RUN_FAILED = 3

EXIT_CODES_HELP = """exit codes:
  0  success (valid recipe; run completed or was stopped cleanly)
  1  invalid recipe (every error is printed as FILE:LINE:COL: node 'ID' ...)
  2  wrong command-line usage
  3  the run failed (a node raised, or a plugin could not be loaded)"""

DEFAULT_RECIPE = "sim_line"


def error_exit(exc: Exception, prefix: str = "") -> int:
    """Print ``error: PREFIX EXC`` for a command that could not finish and return its exit code:
    1 (invalid input, the message names it) for a ``ValueError``, 3 (failed) for anything else,
    such as a file that could not be read or written."""
    print(f"error: {prefix}{exc}", file=sys.stderr)
    return EXIT_INVALID if isinstance(exc, ValueError) else EXIT_RUN_FAILED


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with defaults, except where there is none to show (None, or a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def shipped_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("lineguard.graphs").iterdir() if p.name.endswith(".yaml"))


@contextlib.contextmanager
def recipe_path(arg: str) -> Iterator[Path]:
    """A recipe file: a path, or the name of a shipped recipe (``sim_line``)."""
    path = Path(arg)
    name = arg[:-5] if arg.endswith(".yaml") else arg
    if path.exists() or name not in shipped_recipes():
        yield path  # a missing file is reported by the loader, with the shipped names in --help
        return
    with resources.as_file(resources.files("lineguard.graphs").joinpath(f"{name}.yaml")) as shipped:
        yield shipped


def _registry():
    from lineguard.runtime.registry import default_registry

    return default_registry()


def compile_recipe_arg(recipe: str, overrides: Sequence[str] | None):
    """Compile a recipe named on the command line; print every error and return None if invalid."""
    from lineguard.runtime.compiler import compile_file

    with recipe_path(recipe) as path:
        try:
            return compile_file(path, _registry(), overrides or ())
        except RecipeError as exc:
            print(str(exc), file=sys.stderr)
            return None


# -- validate ---------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from lineguard.runtime.compiler import compile_file

    registry = _registry()
    results: list[dict[str, Any]] = []
    for arg in args.recipes:
        with recipe_path(arg) as path:
            try:
                graph = compile_file(path, registry, args.set or ())
            except RecipeError as exc:
                errors = [d for d in exc.diagnostics if d.severity == "error"]
                warnings = [d for d in exc.diagnostics if d.severity == "warning"]
                results.append({"recipe": str(path), "valid": False, "errors": errors, "warnings": warnings})
            else:
                results.append({"recipe": str(path), "valid": True, "errors": [], "warnings": list(graph.warnings), "nodes": len(graph.nodes), "edges": len(graph.wires)})
    if args.json:
        print(json.dumps([{**r, "errors": [d.to_json() for d in r["errors"]], "warnings": [d.to_json() for d in r["warnings"]]} for r in results], indent=2))
    else:
        for r in results:
            for d in r["errors"] + r["warnings"]:
                print(str(d), file=sys.stderr if d.severity == "error" else sys.stdout)
            if r["valid"]:
                print(f"ok: {r['recipe']} ({r['nodes']} nodes, {r['edges']} edges, {len(r['warnings'])} warnings)")
            else:
                print(f"invalid: {r['recipe']} ({len(r['errors'])} errors)", file=sys.stderr)
    return EXIT_OK if all(r["valid"] for r in results) else EXIT_INVALID


# -- run ------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from lineguard.runtime.executor import run_graph_sync
    from lineguard.runtime.metrics import GraphMetrics
    from lineguard.runtime.report import print_report

    graph = compile_recipe_arg(args.recipe, args.set)
    if graph is None:
        return EXIT_INVALID
    for warning in graph.warnings:
        print(str(warning), file=sys.stderr)
    clock = args.clock or graph.clock
    metrics = GraphMetrics()
    server = None
    if args.metrics_port is not None:
        server, _thread = metrics.serve(args.metrics_port)
        print(f"metrics: http://127.0.0.1:{server.server_port}/metrics", file=sys.stderr)

    def on_start(executor) -> None:
        # Printed once Ctrl-C is handled by the graph (stop sources, drain, close every node).
        print(f"running {graph.file} on the {clock} clock ({len(graph.nodes)} nodes); Ctrl-C stops and drains", file=sys.stderr, flush=True)

    try:
        report = run_graph_sync(graph, clock, handle_signals=True, on_start=on_start, max_frames=args.max_frames, metrics=metrics)
    except NodeFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("the graph was stopped and every node closed", file=sys.stderr)
        return EXIT_RUN_FAILED
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report)
    return EXIT_OK


# -- graph ----------------------------------------------------------------------------------------
def cmd_graph(args: argparse.Namespace) -> int:
    graph = compile_recipe_arg(args.recipe, args.set)
    if graph is None:
        return EXIT_INVALID
    if args.dot:
        print(graph.to_dot())
    elif args.json:
        print(json.dumps(graph.to_json(), indent=2))
    else:
        for nid in graph.order:
            node = graph.nodes[nid]
            ins = ", ".join(f"{w.dst_port} ← {w.src_node}.{w.src_port} [{w.queue}, {w.policy}]" for w in graph.inputs_of(nid))
            print(f"{nid:<12} {node.type_id:<24} {ins}")
    return EXIT_OK


# -- nodes ----------------------------------------------------------------------------------------
def cmd_nodes(args: argparse.Namespace) -> int:
    from lineguard.runtime.editor_schema import combined_schema, describe_nodes

    registry = _registry()
    if args.schema:
        text = json.dumps(combined_schema(registry), indent=2)
        if args.out:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print(text)
        return EXIT_OK
    described = describe_nodes(registry, args.type)
    if args.type and not described:
        print(f"error: no node type '{args.type}'; known: {', '.join(registry.names())}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(described, indent=2))
        return EXIT_OK
    for d in described:
        print(f"{d['type']}  ({d['source']})")
        print(f"  {d['summary']}")
        for name, port in d["inputs"].items():
            extra = ", optional" if not port["required"] else ""
            extra += ", many" if port["multiple"] else ""
            print(f"  in  {name}: {port['kind']} [queue {port['queue']}, {port['policy']}{extra}]")
        for name, port in d["outputs"].items():
            print(f"  out {name}: {port['kind']}")
        for name, p in d["params"].items():
            default = f" = {json.dumps(p['default'])}" if "default" in p else (" (required)" if p.get("required") else "")
            print(f"  param {name}: {p['type']}{default}  {p.get('description', '')}".rstrip())
        if d["example"]:
            print("  example:")
            for line in d["example"].splitlines():
                print(f"    {line}")
        print()
    return EXIT_OK


# -- bench ------------------------------------------------------------------------------------------
def cmd_bench_runtime(args: argparse.Namespace) -> int:
    from lineguard.runtime.bench import bench_runtime

    result = bench_runtime(envelopes=args.envelopes, chain_nodes=args.nodes)
    print(json.dumps(result, indent=2) if args.json else result["text"])
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """The default recipe on the simulated line, with its virtual PLC, scored part by part."""
    from lineguard.sim.eval_cli import cmd_eval

    demo = argparse.Namespace(
        recipe=DEFAULT_RECIPE,
        scenario=args.scenario,
        parts=args.parts,
        seed=args.seed,
        set=args.set or [],
        json=False,
        report=None,
        clock=args.clock,
        no_progress=False,
        show_run=True,
    )
    return cmd_eval(demo)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="lineguard",
        description="Real-time visual inspection for moving assembly lines. A line recipe (YAML) wires "
        "nodes — camera, detector, tracker, vote, PLC — into a validated graph that runs on a real or "
        "simulated line.",
        epilog=EXIT_CODES_HELP + "\n\nshipped recipes (use the name instead of a path): " + ", ".join(shipped_recipes()),
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"lineguard {__version__}")
    parser.add_argument("--log-format", choices=["human", "json"], default="human", help="log lines for people (default) or JSON objects for machines")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    set_help = "override a node param: NODE.PARAM=VALUE (VALUE is read as YAML; repeatable)"

    p = sub.add_parser("validate", help="check recipes and print every error", description="Compile recipes without running them. Prints every error as FILE:LINE:COL: node 'ID' [param 'P' | port 'Q']: expected …, got …", epilog=EXIT_CODES_HELP, formatter_class=fmt)
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe file, or the name of a shipped recipe")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help=set_help)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a recipe", description="Compile and run a recipe until its sources end (or Ctrl-C: sources stop, everything in flight drains, every node is closed). Prints a summary per node and edge.", epilog=EXIT_CODES_HELP, formatter_class=fmt)
    p.add_argument("recipe", metavar="RECIPE", help="recipe file, or the name of a shipped recipe")
    p.add_argument("--clock", choices=["sim", "wall"], help="'wall': real time; 'sim': simulated time, as fast as the CPU allows (default: the recipe's 'clock', else wall)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop each source after N frames")
    p.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help=set_help)
    p.add_argument("--metrics-port", type=int, metavar="P", help="serve Prometheus metrics on http://127.0.0.1:P/metrics (0 = any free port)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        help="run the default recipe on the simulated line and score every part",
        description=f"Run the shipped default recipe ({DEFAULT_RECIPE}: simulated camera, detector, tracker, inspection rules, vote, PLC output) "
        "against the simulated conveyor and a virtual PLC on loopback, in real time, then print the run and a part-by-part score. Ends by itself.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--clock", choices=["sim", "wall"], default="wall", help="wall: real time; sim: as fast as the CPU allows")
    p.add_argument("--scenario", default="nominal", help="scenario preset: nominal, shift or harsh")
    p.add_argument("--parts", type=int, default=12, help="parts on the belt")
    p.add_argument("--seed", type=int, default=2026, help="scenario seed")
    p.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help=set_help)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("graph", help="show the compiled graph", description="Show the compiled graph in topological order, as JSON, or as Graphviz dot.", epilog=EXIT_CODES_HELP, formatter_class=fmt)
    p.add_argument("recipe", metavar="RECIPE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dot", action="store_true", help="Graphviz dot (pipe into `dot -Tpng`)")
    g.add_argument("--json", action="store_true")
    p.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help=set_help)
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("nodes", help="list node types, or write the editor schema", description="List node types with their ports, params and an example. --schema writes one JSON Schema of the recipe format with every node type's params, for a YAML language server (add '# yaml-language-server: $schema=lineguard.schema.json' to a recipe).", formatter_class=fmt)
    p.add_argument("type", nargs="?", help="only this node type")
    p.add_argument("--schema", action="store_true", help="print the combined JSON Schema for editors")
    p.add_argument("--out", metavar="FILE", help="with --schema: write it to FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("bench", help="benchmarks (not tests): print figures and ratios", formatter_class=fmt)
    bench = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    b = bench.add_parser("runtime", help="per-edge overhead of the executor", description="Push envelopes through a chain of no-op nodes and print mean and p99 overhead per edge, next to a plain asyncio.Queue chain measured in the same process.")
    b.add_argument("--envelopes", type=int, default=10_000)
    b.add_argument("--nodes", type=int, default=6, help="nodes in the chain (edges = nodes - 1)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_runtime)

    b = bench.add_parser("renderer", help="simulated conveyor FPS on one core", description="Render the simulated conveyor at 640×480 and 1280×720 with blur and tilt on, on one core; FPS and ratio to a plain resize+copy in the same process. Targets: ≥ 120 and ≥ 60 FPS.")
    b.add_argument("--frames", type=int, default=300)
    b.add_argument("--scenario", default="shift")
    b.set_defaults(func=lambda a: __import__("lineguard.sim.render_bench", fromlist=["main"]).main(["--frames", str(a.frames), "--scenario", a.scenario]))

    _add_plugin_commands(sub, bench)
    _add_sim_commands(sub, fmt)
    return parser


def _add_plugin_commands(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Commands that live with what they drive: ``detect`` and ``bench detector`` with the detector,
    ``train`` with the learning loop (present only when their modules are)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("lineguard.nodes.detect_cli"):
        detect = importlib.import_module("lineguard.nodes.detect_cli")
        detect.register(sub)
        detect.register_bench(bench)
    if importlib.util.find_spec("lineguard.nodes.surface_cli"):
        importlib.import_module("lineguard.nodes.surface_cli").register(sub)
        importlib.import_module("lineguard.nodes.surface_bench").register_bench(bench)
    if importlib.util.find_spec("lineguard.learn.train_cli"):
        importlib.import_module("lineguard.learn.train_cli").register(sub)


def _add_sim_commands(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``lineguard sim …``: the simulated line's tools, each registered by its own module."""
    import importlib
    import importlib.util

    modules = [m for m in ("lineguard.sim.render_cli", "lineguard.sim.plc_cli", "lineguard.sim.eval_cli") if importlib.util.find_spec(m)]
    if not modules:
        return
    p = sub.add_parser("sim", help="simulated line: score a recipe (eval), datasets, previews, virtual PLC", formatter_class=fmt)
    sim_sub = p.add_subparsers(dest="sim_command", metavar="WHAT", required=True)
    for name in modules:
        importlib.import_module(name).register(sim_sub)


def main(argv: Sequence[str] | None = None) -> int:
    from lineguard.runtime.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    try:
        return int(args.func(args) or 0)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
