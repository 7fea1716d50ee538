"""``lineguard sim dataset`` and ``lineguard sim preview``: the renderer's command line.

``register(sim_subparsers)`` adds both sub-commands to the ``lineguard sim`` parser; each sets
``func(args) -> exit code``. Exit codes follow the ``lineguard`` CLI: 0 success, 1 invalid
scenario or parameter (the message names it), 3 the files could not be written.
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from lineguard.runtime.cli import EXIT_OK, DefaultsHelp, error_exit
from lineguard.sim.dataset import FORMATS, IMAGE_FORMATS, export_dataset
from lineguard.sim.preview import write_preview
from lineguard.sim.scenario import known_scenarios, load_scenario

_SET_HELP = (
    "override one scenario parameter, dotted name = YAML value, e.g. --set belt.speed_mm_s=600 "
    "--set 'lighting.gain_range=[0.6, 1.2]' (repeatable)"
)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected NAME=VALUE, e.g. belt.speed_mm_s=600")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {pair!r}: the value is not valid YAML: {exc}") from exc
    return out


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario",
        default="nominal",
        help=f"scenario preset ({', '.join(known_scenarios())}) or path to a scenario YAML",
    )
    p.add_argument("--seed", type=int, default=None, help="replace the scenario's seed (default: the scenario's own)")
    p.add_argument("--set", dest="overrides", action="append", metavar="NAME=VALUE", help=_SET_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(fn, args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario, parse_overrides(args.overrides), seed=args.seed)
        result = fn(scenario)
    except (ValueError, OSError) as exc:
        return error_exit(exc)
    for key, value in result.items():
        print(f"{key}: {value}")
    return EXIT_OK


def cmd_dataset(args: argparse.Namespace) -> int:
    return _run(
        lambda sc: export_dataset(
            sc,
            args.frames,
            args.out,
            fmt=args.format,
            val_fraction=args.val_fraction,
            stride=args.stride,
            min_visible=args.min_visible,
            image_format=args.image_format,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        ),
        args,
    )


def cmd_preview(args: argparse.Namespace) -> int:
    return _run(
        lambda sc: write_preview(
            sc,
            args.out,
            frames=args.frames,
            sheet_path=args.sheet,
            sheet_tiles=args.sheet_tiles,
            with_truth=args.truth,
            progress=not args.no_progress,
        ),
        args,
    )


def register(sim_subparsers: argparse._SubParsersAction) -> None:
    """Add ``dataset`` and ``preview`` to the ``lineguard sim`` sub-commands."""
    fmt = DefaultsHelp
    p = sim_subparsers.add_parser(
        "dataset",
        help="export rendered frames + labels as a YOLO or COCO training set",
        description=(
            "Render N labelled frames of a scenario into DIR: images/{train,val}, YOLO labels + data.yaml "
            "or COCO annotations, manifest.json and parts.json. Whole runs go to train or val. "
            "Deterministic: the same scenario, seed and options give byte-identical files."
        ),
        formatter_class=fmt,
    )
    _scenario_args(p)
    p.add_argument("--frames", type=int, default=500, help="number of images to export")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new or empty, see --overwrite)")
    p.add_argument("--format", choices=FORMATS, default="yolo", help="label format")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of runs (and so of images) kept for validation")
    p.add_argument("--stride", type=int, default=None, help="frames between exported frames of a run (default: about 1/5 image width of travel)")
    p.add_argument("--min-visible", type=float, default=0.25, help="leave out boxes less visible than this (cut by the image edge or hidden)")
    p.add_argument("--image-format", choices=IMAGE_FORMATS, default="jpg", help="image file type")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in DIR")
    p.set_defaults(func=cmd_dataset)

    p = sim_subparsers.add_parser(
        "preview",
        help="render a run to an mp4 and a PNG contact sheet, to look at what the camera sees",
        description="Render one run of a scenario to FILE.mp4 (mp4v, at the camera's fps) and a contact sheet of evenly spaced frames.",
        formatter_class=fmt,
    )
    _scenario_args(p)
    p.add_argument("--out", required=True, metavar="FILE.mp4", help="video to write")
    p.add_argument("--frames", type=int, default=None, help="render only the first N frames (default: the whole run)")
    p.add_argument("--sheet", default=None, metavar="FILE.png", help="contact sheet to write (default: FILE.png next to the video)")
    p.add_argument("--sheet-tiles", type=int, default=16, help="frames on the contact sheet")
    p.add_argument("--truth", action="store_true", help="draw the ground-truth boxes on video and sheet")
    p.set_defaults(func=cmd_preview)
