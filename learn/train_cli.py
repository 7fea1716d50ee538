"""``lineguard train`` and ``lineguard eval-model``: the training pipeline's command line.

``register(subparsers)`` adds both commands to the top-level ``lineguard`` parser; each sets
``func(args) -> exit code``. Exit codes follow the ``lineguard`` CLI: 0 success, 1 invalid input
(the message names it), 2 the optional ``train`` extra is missing, 3 the files could not be written.
"""

from __future__ import annotations

import argparse
import json
import sys

from lineguard.runtime.cli import EXIT_OK, DefaultsHelp, error_exit

EXIT_MISSING_EXTRA = 2


def _eval_seeds(pairs: list[str] | None) -> dict[str, int]:
    seeds = {"nominal": 2001, "shift": 3001}
    if pairs:
        seeds = {}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep or not value.strip().isdigit():
                raise ValueError(f"--eval {pair!r}: expected SCENARIO=SEED, e.g. --eval shift=3001")
            seeds[name.strip()] = int(value)
    return seeds


def _export_hw(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 32 and int(p) % 32 == 0 for p in parts):
        raise ValueError(f"--export-hw {text!r}: expected HEIGHT,WIDTH, multiples of 32, e.g. 736,1280")
    return int(parts[0]), int(parts[1])


def cmd_train(args: argparse.Namespace) -> int:
    from lineguard.learn.train import MissingTrainExtra, TrainJob, TrainSettings, command_line, run_training
    from lineguard.sim.render_cli import parse_overrides

    try:
        settings = TrainSettings(epochs=args.epochs, imgsz=args.imgsz, tile=args.tile or None, batch=args.batch, model=args.model, seed=args.train_seed)
        job = TrainJob(
            name=args.name,
            frames=args.frames,
            seed=args.seed,
            settings=settings,
            data=args.data,
            out=args.out,
            workdir=args.workdir,
            eval_frames=args.eval_frames,
            eval_seeds=_eval_seeds(args.eval),
            command=command_line(),
            export_hw=_export_hw(args.export_hw),
            weights=args.weights,
            init_weights=args.init_weights,
            overrides=parse_overrides(args.overrides),
        )
        summary = run_training(job, progress=not args.no_progress)
    except MissingTrainExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except (ValueError, OSError) as exc:
        return error_exit(exc)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return EXIT_OK


def cmd_eval_model(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from lineguard.learn.evaluate import evaluate_model, render_eval_set

    try:
        dataset = args.data
        with Progress(disable=args.no_progress, transient=True) as bar:
            if dataset is None:
                task = bar.add_task(f"render {args.scenario}", total=args.frames)
                dataset = f"{args.workdir}/eval-{args.scenario}-{args.seed}"
                render_eval_set(dataset, args.scenario, args.seed, args.frames, stride=args.stride, on_image=lambda: bar.advance(task))
            task = bar.add_task("evaluate", total=None)
            report = evaluate_model(args.model, dataset, split=args.split, precision=args.precision, on_image=lambda: bar.advance(task))
    except (ValueError, OSError) as exc:
        return error_exit(exc)
    if args.json:
        report = {k: v for k, v in report.items() if k != "pr_curves"}
        print(json.dumps(report, indent=1))
        return EXIT_OK
    print(f"{report['images']} images, precision {report['precision']}: mAP50 {report['map50']:.4f}  mAP50-95 {report['map50_95']:.4f}")
    print(f"{'class':<20}{'instances':>10}{'AP50':>8}{'AP50-95':>9}")
    for name, row in report["per_class"].items():
        ap50 = "-" if row["ap50"] is None else f"{row['ap50']:.3f}"
        ap = "-" if row["ap50_95"] is None else f"{row['ap50_95']:.3f}"
        print(f"{name:<20}{row['instances']:>10}{ap50:>8}{ap:>9}")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``eval-model`` to the ``lineguard`` sub-commands."""
    p = subparsers.add_parser(
        "train",
        help="train a detector on the simulated line (or your YOLO dataset) and write models/NAME",
        description=(
            "Render a sim dataset (nominal scenario + seeded augmentations) or take your YOLO dataset (--data), "
            "train YOLOv8n/YOLO11n from scratch with ultralytics (offline), export an OpenVINO IR (FP16), evaluate it on "
            "nominal and shift sets rendered from seeds training never saw, and write OUT/NAME: model.xml/.bin, "
            "metadata.yaml, eval.json, pr_curve.png. Needs the optional extra: pip install 'lineguard[train]'."
        ),
        formatter_class=DefaultsHelp,
    )
    p.add_argument("--name", required=True, help="model name: writes OUT/NAME (must not exist yet)")
    p.add_argument("--frames", type=int, default=500, help="sim frames to render (10%% of the runs go to a val split)")
    p.add_argument("--epochs", type=int, default=17, help="training epochs")
    p.add_argument("--imgsz", type=int, default=640, help="network input size (a scratch is ~1 px wide at 640 on a 1280x720 frame)")
    p.add_argument("--tile", type=int, default=320, help="train on TILE px crops of the imgsz-scaled sim frames (objects at inference size, less compute); 0 = whole frames")
    p.add_argument("--batch", type=int, default=8, help="images per batch")
    p.add_argument("--seed", type=int, default=1000, help="seed of the sim training data (render and augmentations)")
    p.add_argument("--train-seed", type=int, default=0, help="ultralytics' training seed (init, shuffling)")
    p.add_argument("--model", default="yolov8n.yaml", help="model definition to start from (yolov8n.yaml, yolo11n.yaml or a .yaml); never a downloaded checkpoint")
    p.add_argument("--data", default=None, metavar="DIR", help="train on your YOLO-format dataset (images/, labels/, data.yaml) instead of rendering one")
    p.add_argument("--out", default="models", metavar="DIR", help="folder the model folder is written into")
    p.add_argument("--workdir", default=None, metavar="DIR", help="dataset, training run and eval sets (default: out/train/NAME)")
    p.add_argument("--eval-frames", type=int, default=400, help="images per evaluation set")
    p.add_argument("--eval", action="append", metavar="SCENARIO=SEED", help="evaluation sets (default: nominal=2001 shift=3001; repeatable)")
    p.add_argument("--export-hw", default=None, metavar="H,W", help="input of the exported model, e.g. 736,1280 for 1280x720 frames (no padding rows to compute: ~1.7x faster than 1280x1280); default IMGSZ,IMGSZ")
    p.add_argument("--weights", default=None, metavar="PT", help="skip training: export and evaluate these weights, trained by an earlier run of the same command (e.g. to export at another --export-hw)")
    p.add_argument("--init-weights", default=None, metavar="PT|XML", help="train on from these weights instead of from scratch: an earlier run's best.pt, or a model lineguard trained and exported (model.xml or its folder, e.g. models/sim-v8), whose PyTorch weights are rebuilt from the IR; a local file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="NAME=VALUE",
        help="change the rendered training line: a scenario parameter, dotted name = YAML value, over the training defaults "
        "(denser parts, more defects), e.g. --set 'defects.mix={scratch: 6, missing_component: 1, misaligned: 2}' (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "eval-model",
        help="mAP50 / mAP50-95 per class of an OpenVINO IR on a sim scenario or a YOLO dataset",
        description="Evaluate a YOLO OpenVINO IR (model.xml or its folder) on a rendered sim scenario or on --data DIR (YOLO format). No ultralytics needed.",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("model", help="model.xml or a folder holding one")
    p.add_argument("--scenario", default="shift", help="sim scenario preset or YAML to render")
    p.add_argument("--seed", type=int, default=3001, help="scenario seed (pick one training never used)")
    p.add_argument("--frames", type=int, default=400, help="images to render")
    p.add_argument("--stride", type=int, default=30, help="frames between rendered images")
    p.add_argument("--data", default=None, metavar="DIR", help="evaluate on this YOLO dataset instead of rendering")
    p.add_argument("--split", default=None, help="only this split of --data (train/val)")
    p.add_argument("--precision", choices=("f32", "bf16", "f16"), default="f32", help="OpenVINO inference precision")
    p.add_argument("--workdir", default="out/eval", metavar="DIR", help="where rendered sets are kept (reused when identical)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval_model)
