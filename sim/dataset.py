"""Export simulated frames and their ground truth as a detector training set (YOLO or COCO).

A dataset of ``frames`` images is drawn from several runs of the scenario (run k uses a seed
derived from the scenario's seed and k). Whole runs go to either train or val, so no part is seen
in both splits; every ``round(1 / val_fraction)``-th run is a val run (with fewer runs than that,
the last one). Within a run, frames are
taken every ``stride`` frames (default: about a fifth of the image width of belt travel apart).

Layout (both formats)::

    OUT/images/{train,val}/<run>_<frame>.jpg
    OUT/manifest.json              scenario, seeds, and per image: split, run, frame, t_ns, encoder
    OUT/parts.json                 per run: every part's truth (type, defects, reject time/encoder)

YOLO adds ``OUT/labels/{train,val}/*.txt`` (``class cx cy w h``, normalised) and ``OUT/data.yaml``
(``path``, ``train``, ``val``, ``names``); COCO adds ``OUT/annotations/instances_{train,val}.json``
(category id = class id + 1; each annotation also carries ``part_id`` and ``visible``).

The same scenario, seed and arguments give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lineguard.sim.conveyor import Conveyor
from lineguard.sim.scenario import Scenario
from lineguard.sim.truth import CLASSES, FrameTruth

FORMATS = ("yolo", "coco")
IMAGE_FORMATS = ("jpg", "png")
_OUTPUTS = ("images", "labels", "annotations", "data.yaml", "manifest.json", "parts.json")


def run_seed(seed: int, run: int) -> int:
    """The seed of run ``run`` of a dataset made with ``seed`` (31-bit, stable across versions)."""
    return int(np.random.SeedSequence([seed, 0xDA7A, run]).generate_state(1)[0] & 0x7FFFFFFF)


def auto_stride(scenario: Scenario) -> int:
    """Frames between two exported frames: about a fifth of the image width of belt travel."""
    mm_per_frame = scenario.belt.speed_mm_s / scenario.camera.fps
    view_mm = scenario.camera.resolution[0] * scenario.camera.mm_per_px
    return max(1, round(0.2 * view_mm / mm_per_frame))


def export_dataset(
    scenario: Scenario,
    frames: int,
    out_dir: str | Path,
    *,
    fmt: str = "yolo",
    val_fraction: float = 0.2,
    stride: int | None = None,
    min_visible: float = 0.25,
    image_format: str = "jpg",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Render ``frames`` labelled frames of ``scenario`` into ``out_dir``; returns a summary.

    Boxes less than ``min_visible`` visible (outside the image or hidden by a distractor) or under
    2 px on a side are left out. Raises ``ValueError`` naming the argument on bad input.
    """
    if frames < 1:
        raise ValueError(f"frames: expected an integer >= 1, got {frames}")
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format: expected one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction}")
    if stride is not None and stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, got {stride}")
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible: expected a number in [0, 1], got {min_visible}")
    out = Path(out_dir)
    _prepare(out, overwrite)

    stride = stride or auto_stride(scenario)
    period = round(1 / val_fraction) if val_fraction > 0 else 0
    # enough runs for the val share to exist, and no run asked for more frames than it has
    first = Conveyor(dataclasses.replace(scenario, seed=run_seed(scenario.seed, 0)))
    per_run_cap = max(1, first.n_frames // stride)
    n_runs = min(frames, max(math.ceil(frames / per_run_cap), period))
    quotas = [frames // n_runs + (1 if k < frames % n_runs else 0) for k in range(n_runs)]

    splits = ("train", "val")
    for split in splits:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        if fmt == "yolo":
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    coco: dict[str, dict[str, Any]] = {s: _coco_skeleton(scenario) for s in splits}
    manifest: dict[str, Any] = {
        "scenario": scenario.to_dict(),
        "format": fmt,
        "classes": list(CLASSES),
        "stride": stride,
        "min_visible": min_visible,
        "val_fraction": val_fraction,
        "runs": [],
        "images": [],
    }
    parts_out: list[dict[str, Any]] = []
    counts = {s: 0 for s in splits}
    per_class = {name: 0 for name in CLASSES}

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"rendering {scenario.name}", total=frames)
        for k, quota in enumerate(quotas):
            seed_k = run_seed(scenario.seed, k)
            conveyor = first if k == 0 else Conveyor(dataclasses.replace(scenario, seed=seed_k))
            # every period-th run is val; a short export with fewer runs still gets its last run as val
            is_val = bool(period) and (k % period == period - 1 or (n_runs < period and n_runs > 1 and k == n_runs - 1))
            split = "val" if is_val else "train"
            step = max(1, min(stride, conveyor.n_frames // quota))
            start = (conveyor.n_frames - step * (quota - 1)) // 2
            manifest["runs"].append({"run": k, "seed": seed_k, "split": split, "n_frames": conveyor.n_frames, "first_frame": start, "step": step, "images": quota})
            parts_out.append({"run": k, "seed": seed_k, "parts": [p.record(conveyor.geometry) for p in conveyor.parts]})
            for i in range(start, start + step * quota, step):
                truth = conveyor.frame_truth(i)
                keep = _keep(truth, min_visible)
                name = f"{k:04d}_{i:06d}"
                image_path = out / "images" / split / f"{name}.{image_format}"
                params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
                if not cv2.imwrite(str(image_path), conveyor.render(i), params):
                    raise OSError(f"could not write {image_path}")
                w, h = conveyor.resolution
                if fmt == "yolo":
                    (out / "labels" / split / f"{name}.txt").write_text(_yolo_lines(keep, w, h), encoding="utf-8")
                else:
                    _coco_add(coco[split], keep, f"{split}/{name}.{image_format}", w, h)
                for c in keep.class_ids:
                    per_class[CLASSES[int(c)]] += 1
                manifest["images"].append(
                    {"file": f"images/{split}/{name}.{image_format}", "split": split, "run": k, "frame": i, "t_ns": truth.t_ns, "encoder": truth.encoder, "boxes": len(keep)}
                )
                counts[split] += 1
                bar.advance(task)

    if fmt == "yolo":
        data = {
            "path": str(out.resolve()),
            "train": "images/train",
            "val": "images/val",
            "nc": len(CLASSES),
            "names": {i: name for i, name in enumerate(CLASSES)},
        }
        (out / "data.yaml").write_text(
            f"# lineguard sim dataset: scenario {scenario.name}, seed {scenario.seed}, {frames} images\n"
            + yaml.safe_dump(data, sort_keys=False),
            encoding="utf-8",
        )
    else:
        (out / "annotations").mkdir(exist_ok=True)
        for split in splits:
            _write_json(out / "annotations" / f"instances_{split}.json", coco[split])
    _write_json(out / "manifest.json", manifest)
    _write_json(out / "parts.json", {"runs": parts_out})
    return {"out": str(out), "format": fmt, "images": frames, "train": counts["train"], "val": counts["val"], "runs": n_runs, "boxes_per_class": per_class}


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"out: directory {out} is not empty; choose a new one or pass --overwrite")
        for name in _OUTPUTS:  # remove only what an export writes
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _keep(truth: FrameTruth, min_visible: float) -> FrameTruth:
    b = truth.boxes_xyxy
    big = ((b[:, 2] - b[:, 0]) >= 2) & ((b[:, 3] - b[:, 1]) >= 2)
    return truth.select(big & (truth.visible >= min_visible))


def _yolo_lines(truth: FrameTruth, w: int, h: int) -> str:
    lines = []
    for (x0, y0, x1, y1), c in zip(truth.boxes_xyxy.astype(np.float64), truth.class_ids):
        lines.append(f"{int(c)} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    return "".join(line + "\n" for line in lines)


def _coco_skeleton(scenario: Scenario) -> dict[str, Any]:
    return {
        "info": {"description": f"lineguard sim, scenario {scenario.name}, seed {scenario.seed}", "version": "1"},
        "categories": [{"id": i + 1, "name": name, "supercategory": "lineguard"} for i, name in enumerate(CLASSES)],
        "images": [],
        "annotations": [],
    }


def _coco_add(coco: dict[str, Any], truth: FrameTruth, file_name: str, w: int, h: int) -> None:
    image_id = len(coco["images"]) + 1
    coco["images"].append({"id": image_id, "file_name": file_name, "width": w, "height": h, "frame_index": truth.frame_index, "t_ns": truth.t_ns})
    for (x0, y0, x1, y1), c, pid, vis in zip(truth.boxes_xyxy.astype(np.float64), truth.class_ids, truth.part_ids, truth.visible):
        bw, bh = x1 - x0, y1 - y0
        coco["annotations"].append(
            {
                "id": len(coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": int(c) + 1,
                "bbox": [round(x0, 2), round(y0, 2), round(bw, 2), round(bh, 2)],
                "area": round(bw * bh, 2),
                "iscrowd": 0,
                "part_id": int(pid),
                "visible": round(float(vis), 3),
            }
        )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
