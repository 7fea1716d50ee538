"""``lineguard train``: sim dataset → YOLO training → OpenVINO IR → evaluation → ``models/NAME/``.

The pipeline, each step usable on its own:

1. :func:`build_sim_dataset` renders the ``nominal`` scenario (denser parts and more defects than
   the line runs, so every class is seen often; see :data:`TRAIN_SCENARIO_OVERRIDES`), applies the
   seeded training augmentations (:data:`TRAIN_AUGMENT`, the same functions as the ``image.augment``
   node) to every training image, scales it so its long side is ``imgsz`` (what the detector's
   letterbox does to a live frame) and writes a YOLO dataset. Or bring your own YOLO dataset
   (:func:`find_data_yaml`).
2. :func:`train_yolo` trains YOLOv8n (or YOLO11n) from its yaml definition with ultralytics — from
   scratch, offline, no hub download (``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0``, settings
   ``sync=False``, ``plots=False``, ``workers=0``, ``amp=False``).
3. :func:`export_openvino` exports the best weights to an OpenVINO IR (weights compressed to FP16);
   class names stay in ``rt_info['model_info']['labels']`` where ultralytics writes them.
4. :mod:`lineguard.learn.evaluate` scores the IR on ``nominal`` and ``shift`` validation sets
   rendered from seeds the training never saw (checked), and :func:`write_model_folder` writes
   ``model.xml/.bin``, ``metadata.yaml`` (ultralytics keys + data seeds, command, versions),
   ``eval.json`` and the PR-curve PNG.

ultralytics (AGPL-3.0, pulls torch) is the optional extra ``train``: it is imported inside the
functions that need it, never by the runtime; without it those raise :class:`MissingTrainExtra`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from lineguard.learn.augment import (
    AugmentConfig,
    BrightnessContrastConfig,
    GammaConfig,
    JpegConfig,
    MotionBlurConfig,
    NoiseConfig,
    PerspectiveConfig,
    augment_labelled,
)
from lineguard.sim.parts import SCRATCH_BOX_MARGIN_MM
from lineguard.sim.truth import CLASSES

INSTALL_HINT = "pip install 'lineguard[train]'"
MODEL_DEFINITIONS = ("yolov8n.yaml", "yolo11n.yaml")


class MissingTrainExtra(ImportError):
    """The optional ``train`` extra (ultralytics) is not installed."""


def require_ultralytics() -> Any:
    """Import ultralytics set up for offline training, or raise :class:`MissingTrainExtra`."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach the hub, GitHub assets or pip
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "False")  # our progress bar instead of ultralytics' logs
    try:
        import ultralytics
        from ultralytics import settings
    except ImportError as exc:
        raise MissingTrainExtra(
            f"training needs the optional 'train' extra (ultralytics, AGPL-3.0, pulls torch): {INSTALL_HINT} "
            f"(import failed: {exc})"
        ) from exc
    settings.update({"sync": False})
    return ultralytics


# ---------------------------------------------------------------------------------------------
# 1. The dataset

# Training renders the nominal line with parts closer together (closest pitch 170 mm: 150 mm part
# + rotation + 10 mm gap, the scenario's minimum) and almost 3x the defect rate, weighted towards
# the subtle kinds (scratch 4.6x, misaligned 2.8x as often as nominal): more objects and defects
# per rendered frame, so every class is seen often in a short training run. The look of parts, lighting and camera is nominal;
# evaluation uses the unchanged scenarios.
TRAIN_SCENARIO_OVERRIDES: dict[str, Any] = {
    "parts.count": 16,
    "parts.spacing_mm": 180.0,
    "parts.spacing_jitter_mm": 10.0,
    "defects.rate": 0.85,
    "defects.mix": {"scratch": 3.0, "missing_component": 1.0, "misaligned": 1.5},
}

# Stronger than the node's defaults so that nominal renders cover the shift scenario's look:
# belt blur up to 8 px (shift: 6.4 px; longer streaks wipe out a 1 px scratch across the belt and
# only teach the model to guess), tilt (shift: 3–6°), darker and noisier light.
TRAIN_AUGMENT = AugmentConfig(
    perspective=PerspectiveConfig(p=0.4, max_shift_frac=0.03),
    motion_blur=MotionBlurConfig(p=0.5, length_px=(1.0, 8.0), angle_deg=(-4.0, 4.0)),
    brightness_contrast=BrightnessContrastConfig(p=0.5, brightness=(-50.0, 25.0), contrast=(0.6, 1.25)),
    gamma=GammaConfig(p=0.3, gamma=(0.7, 1.5)),
    noise=NoiseConfig(p=0.5, sigma=(1.0, 8.0)),
    jpeg=JpegConfig(p=0.25, quality=(40, 95)),
)



def build_sim_dataset(
    out_dir: str | Path,
    frames: int,
    seed: int,
    imgsz: int,
    *,
    scenario: str = "nominal",
    overrides: Mapping[str, Any] | None = None,
    augment: AugmentConfig | None = TRAIN_AUGMENT,
    augment_seed: int | None = None,
    val_fraction: float = 0.1,
    tile: int | None = None,
    progress: bool = True,
    on_image: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Render ``frames`` labelled frames of ``scenario`` (seed ``seed``) into a YOLO dataset at
    ``out_dir`` ready for ultralytics: ``images/{train,val}``, ``labels/{train,val}``, ``data.yaml``,
    ``manifest.json`` (scenario, run seeds, per image its augmentation plan).

    Training images get ``augment`` (seeded by ``augment_seed``, default ``seed``, and the image's
    index); val images stay as rendered. Every image is scaled so its long side is ``imgsz``
    (INTER_AREA, as the letterbox does), then, with ``tile``, cut into overlapping ``tile`` x
    ``tile`` squares (see :func:`tile_positions`; boxes clipped, kept when >= 25 % visible): a
    model trained on tiles at ``imgsz=tile`` sees objects at the pixel scale it meets at ``imgsz``,
    for a quarter of the compute per sample. Labels list defect boxes first (see
    :func:`yolo_label_text`). Returns a summary with the run seeds per split.
    """
    from lineguard.sim.dataset import export_dataset
    from lineguard.sim.scenario import load_scenario

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"dataset folder {out} is not empty; choose a new --workdir or remove it")
    if imgsz < 32 or imgsz % 32:
        raise ValueError(f"imgsz: expected a multiple of 32 >= 32, got {imgsz}")
    merged = dict(TRAIN_SCENARIO_OVERRIDES if overrides is None else overrides)
    sc = load_scenario(scenario, merged, seed=seed)
    raw = out / "rendered"
    export_dataset(sc, frames, raw, fmt="yolo", val_fraction=val_fraction, image_format="png", progress=progress)
    manifest = json.loads((raw / "manifest.json").read_text(encoding="utf-8"))
    aug_seed = seed if augment_seed is None else augment_seed
    images = []
    for index, item in enumerate(manifest["images"]):
        src = raw / item["file"]
        split = item["split"]
        label_src = raw / "labels" / split / (src.stem + ".txt")
        image = cv2.imread(str(src), cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        classes, boxes = read_yolo_labels(label_src, w, h)
        plan = None
        if split == "train" and augment is not None and augment.active:
            image, boxes, keep, plan = augment_labelled(image, boxes, augment, aug_seed, index)
            classes = classes[keep]
        image = fit_long_side(image, imgsz)
        sh, sw = image.shape[:2]
        boxes = np.asarray(boxes, np.float64) * (sw / w)
        pieces = [(src.stem, image, classes, boxes, None)]
        if tile:
            pieces = []
            for k, (tx, ty) in enumerate((x, y) for y in tile_positions(sh, tile) for x in tile_positions(sw, tile)):
                t_cls, t_boxes = clip_boxes(classes, boxes, (tx, ty, tx + tile, ty + tile))
                pieces.append((f"{src.stem}_t{k}", image[ty : ty + tile, tx : tx + tile], t_cls, t_boxes, (tx, ty)))
        for stem, piece, p_cls, p_boxes, origin in pieces:
            dst = out / "images" / split / (stem + ".jpg")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(dst), piece, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise OSError(f"could not write {dst}")
            label_dst = out / "labels" / split / (stem + ".txt")
            label_dst.parent.mkdir(parents=True, exist_ok=True)
            label_dst.write_text(yolo_label_text(p_cls, p_boxes, piece.shape[1], piece.shape[0]), encoding="utf-8")
            images.append({**item, "file": f"images/{split}/{dst.name}", "tile_origin": origin, "augment": plan.to_dict() if plan else None, "boxes": int(len(p_cls))})
        if on_image:
            on_image()
    shutil.rmtree(raw)
    run_seeds = {s: [r["seed"] for r in manifest["runs"] if r["split"] == s] for s in ("train", "val")}
    data = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "nc": len(CLASSES), "names": dict(enumerate(CLASSES))}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    summary = {
        "scenario": scenario,
        "seed": seed,
        "overrides": merged,
        "augment_seed": aug_seed,
        "augment": augment.to_params() if augment is not None else None,
        "frames": frames,
        "imgsz": imgsz,
        "tile": tile,
        "images": {s: sum(1 for i in images if i["split"] == s) for s in ("train", "val")},
        "boxes_per_class": _boxes_per_class(out),
        "run_seeds": run_seeds,
    }
    (out / "manifest.json").write_text(json.dumps({**summary, "scenario_params": manifest["scenario"], "images": images}, indent=1) + "\n", encoding="utf-8")
    return summary


def tile_positions(length: int, tile: int) -> list[int]:
    """Top-left offsets of tiles covering ``length`` px with about half a tile of overlap; one
    centred tile when the side is less than a quarter tile longer than ``tile`` (a 640x360 frame
    and 320 tiles: x 0, 160, 320 and y 20 — the 20 px cut at top and bottom are belt rails)."""
    if length <= tile:
        return [0]
    n = round((length - tile) / (tile / 2)) + 1
    if n == 1:
        return [(length - tile) // 2]
    return [int(round(v)) for v in np.linspace(0, length - tile, n)]


def clip_boxes(class_ids: np.ndarray, boxes_xyxy: np.ndarray, window: tuple[float, float, float, float], min_visible: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Boxes inside ``window`` (x0, y0, x1, y1), clipped and shifted to its origin; a box is kept
    when at least ``min_visible`` of it is inside and it is >= 2 px on each side (the sim's rule)."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = window
    clipped = np.stack([b[:, 0].clip(x0, x1), b[:, 1].clip(y0, y1), b[:, 2].clip(x0, x1), b[:, 3].clip(y0, y1)], axis=1)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (w >= 2) & (h >= 2) & (w * h >= min_visible * np.maximum(area, 1e-9))
    return np.asarray(class_ids)[keep], clipped[keep] - [x0, y0, x0, y0]


def fit_long_side(image: np.ndarray, size: int) -> np.ndarray:
    """Scale ``image`` so its long side is ``size`` (only ever down; INTER_AREA)."""
    h, w = image.shape[:2]
    r = size / max(h, w)
    if r >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)


def read_yolo_labels(path: str | Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO label file as ``(class_ids int64 [N], boxes_xyxy float32 [N, 4] in pixels)``."""
    path = Path(path)
    rows = []
    if path.exists():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise ValueError(f"{path}:{n}: expected 'class cx cy w h', got {line!r}")
            rows.append([float(v) for v in parts])
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    a = np.array(rows, np.float64)
    cx, cy, bw, bh = a[:, 1] * width, a[:, 2] * height, a[:, 3] * width, a[:, 4] * height
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return a[:, 0].astype(np.int64), boxes.astype(np.float32)


def yolo_label_text(class_ids: np.ndarray, boxes_xyxy: np.ndarray, width: int, height: int) -> str:
    """YOLO label lines (``class cx cy w h``, normalised), defect classes first.

    The order matters: a misaligned component has two identical boxes (its kind and
    ``misaligned``), and ultralytics' assigner gives each anchor to one box only, breaking the tie
    by order — the box listed second never trains. Listing defects first teaches ``misaligned``
    (the one the verdict needs) at the cost of the component box on the ~2 % of misplaced ones.
    """
    from lineguard.sim.truth import DEFECT_KINDS

    defect_ids = {CLASSES.index(k) for k in DEFECT_KINDS}
    class_ids = np.asarray(class_ids).reshape(-1)
    order = sorted(range(len(class_ids)), key=lambda i: int(class_ids[i]) not in defect_ids)
    lines = []
    for c, (x0, y0, x1, y1) in zip(class_ids[order], np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)[order]):
        lines.append(f"{int(c)} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return "".join(line + "\n" for line in lines)


def _boxes_per_class(root: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split in ("train", "val"):
        counts = dict.fromkeys(CLASSES, 0)
        for f in sorted((root / "labels" / split).glob("*.txt")):
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    counts[CLASSES[int(line.split()[0])]] += 1
        out[split] = counts
    return out


def find_data_yaml(folder: str | Path) -> Path:
    """The ``data.yaml`` of a YOLO-format dataset folder you bring (``images/`` + ``labels/``).

    A folder without one but with ``images/train`` and ``images/val`` gets one written, with the
    lineguard class names. Raises ``ValueError`` saying what is missing.
    """
    root = Path(folder)
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return root
    if not root.is_dir():
        raise ValueError(f"--data {folder}: not a folder (expected a YOLO dataset: images/, labels/, data.yaml)")
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        if (root / name).is_file():
            data = yaml.safe_load((root / name).read_text(encoding="utf-8")) or {}
            missing = [k for k in ("train", "val", "names") if k not in data]
            if missing:
                raise ValueError(f"--data {root / name}: missing key(s) {', '.join(missing)} (ultralytics needs train, val and names)")
            return root / name
    splits = [s for s in ("train", "val") if (root / "images" / s).is_dir()]
    if splits != ["train", "val"]:
        raise ValueError(
            f"--data {folder}: no data.yaml and no images/train + images/val; expected a YOLO dataset "
            "(e.g. one written by 'lineguard sim dataset' or exported from Roboflow/CVAT/Label Studio as YOLO)"
        )
    data = {"path": str(root.resolve()), "train": "images/train", "val": "images/val", "nc": len(CLASSES), "names": dict(enumerate(CLASSES))}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return root / "data.yaml"


# ---------------------------------------------------------------------------------------------
# 2. Training


@dataclass(frozen=True)
class TrainSettings:
    """The ultralytics hyper-parameters lineguard uses (all recorded in the model's metadata).

    Chosen for a short from-scratch run on a 2-core CPU: 320 px tiles of frames scaled for a 640
    input (objects at their inference pixel size, a quarter of the compute per sample), AdamW with
    an optimizer step every batch (``nbs = batch``), mosaic on except the last epochs, scale jitter
    kept small (a scratch is ~1 px wide at 640 and must not shrink away), vertical flips (parts may
    lie either way up). ``tile`` applies to rendered sim data only; your own dataset (``--data``)
    trains at ``imgsz``.
    """

    epochs: int = 17
    imgsz: int = 640  # what the exported model takes (a 1280x720 frame letterboxed to 640x640)
    tile: int | None = 320  # train on tile x tile crops of imgsz-scaled frames (see build_sim_dataset)
    batch: int = 8
    model: str = "yolov8n.yaml"
    optimizer: str = "AdamW"
    lr0: float = 0.001
    nbs: int = 8
    warmup_epochs: float = 1.0
    close_mosaic: int = 2
    scale: float = 0.25
    translate: float = 0.1
    fliplr: float = 0.5
    flipud: float = 0.5
    mosaic: float = 1.0
    hsv_h: float = 0.01
    hsv_s: float = 0.5
    hsv_v: float = 0.3
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def ultralytics_args(self) -> dict[str, Any]:
        args = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("model", "extra", "tile")}
        args["imgsz"] = self.tile or self.imgsz
        return {**args, **dict(self.extra)}


def train_yolo(
    data_yaml: str | Path,
    run_dir: str | Path,
    settings: TrainSettings,
    *,
    on_batch: Callable[[int, int, int, int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
    init_weights: str | Path | None = None,
) -> Path:
    """Train ``settings.model`` from scratch on ``data_yaml``; returns the best weights (``.pt``).

    ``on_batch(epoch, epochs, batch, batches, loss)`` is called after every batch (progress bar).
    """
    if settings.model not in MODEL_DEFINITIONS and not str(settings.model).endswith((".yaml", ".yml")):
        raise ValueError(
            f"model: expected a model definition ({', '.join(MODEL_DEFINITIONS)} or a .yaml file) — training starts "
            f"from scratch and never downloads a checkpoint; got {settings.model!r}"
        )
    require_ultralytics()
    from ultralytics import YOLO

    run_dir = Path(run_dir)
    # init_weights: our own earlier weights (a local file, checked by the caller), to train on
    model = YOLO(str(init_weights)) if init_weights is not None else YOLO(settings.model)

    def batch_end(trainer: Any) -> None:
        if on_batch is not None:
            loss = _total_loss(getattr(trainer, "tloss", None))
            i = getattr(trainer, "_lg_batch", 0) + 1
            trainer._lg_batch = i
            on_batch(trainer.epoch, trainer.epochs, i, len(trainer.train_loader), loss)

    def epoch_start(trainer: Any) -> None:
        trainer._lg_batch = 0

    def train_start(trainer: Any) -> None:
        # ultralytics leaves one core to its data loader workers (torch threads = cores - 1: one
        # on a 2-core machine); with workers=0 the loading happens between batches in this thread
        import torch

        torch.set_num_threads(training_threads())
        if log is not None:
            log(f"training on {torch.get_num_threads()} torch threads")

    def epoch_end(trainer: Any) -> None:
        if log is not None:
            tloss = trainer.tloss
            items = tloss.items() if isinstance(tloss, Mapping) else enumerate(np.atleast_1d(np.asarray(tloss.cpu() if hasattr(tloss, "cpu") else tloss)))
            log(f"epoch {trainer.epoch + 1}/{trainer.epochs}: " + ", ".join(f"{k}={float(v):.4f}" for k, v in items))

    model.add_callback("on_train_start", train_start)
    model.add_callback("on_train_epoch_start", epoch_start)
    model.add_callback("on_train_batch_end", batch_end)
    model.add_callback("on_train_epoch_end", epoch_end)
    model.train(
        data=str(data_yaml),
        project=str(run_dir.parent.resolve()),
        name=run_dir.name,
        exist_ok=True,
        device="cpu",
        workers=0,
        amp=False,
        plots=False,
        val=False,  # validation happens once, on the exported IR, with held-out seeds
        cache="ram",
        pretrained=str(init_weights) if init_weights is not None else False,  # False: no weights at all, never a download
        verbose=False,
        deterministic=True,
        **settings.ultralytics_args(),
    )
    best = run_dir / "weights" / "best.pt"
    if not best.exists():
        best = run_dir / "weights" / "last.pt"
    if not best.exists():
        raise RuntimeError(f"training finished without weights in {run_dir / 'weights'}")
    return best


def training_threads() -> int:
    """Threads torch trains with: every core this process may use (the data loads in between)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _total_loss(tloss: Any) -> float:
    """The running training loss, whether ultralytics keeps it as a dict (8.4) or a tensor (8.3)."""
    if tloss is None:
        return math.nan
    if isinstance(tloss, Mapping):
        return float(sum(float(v) for v in tloss.values()))
    return float(tloss.sum())


# ---------------------------------------------------------------------------------------------
# 3. Export


def export_openvino(weights: str | Path, imgsz: int | Sequence[int], out_dir: str | Path, *, fp16: bool = True) -> Path:
    """Export ``weights`` to ``out_dir/<stem>_openvino_model/`` (the folder name ultralytics itself
    loads) with weights compressed to FP16; returns the ``.xml``. ``imgsz``: a square input side or
    ``(height, width)`` (e.g. 736 x 1280 for 1280 x 720 frames: no padding rows to compute).
    ultralytics' ``metadata.yaml`` and ``rt_info['model_info']`` (labels, pad value, scale) are kept.
    """
    require_ultralytics()
    import openvino as ov
    from ultralytics import YOLO

    weights = Path(weights)
    size = imgsz if isinstance(imgsz, int) else [int(v) for v in imgsz]
    exported = Path(YOLO(str(weights)).export(format="openvino", imgsz=size, dynamic=False, nms=False, verbose=False))
    xml = next(exported.glob("*.xml"))
    target = Path(out_dir) / f"{weights.stem}_openvino_model"
    if target.resolve() != exported.resolve():
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        shutil.copy2(exported / "metadata.yaml", target / "metadata.yaml")
    model = ov.Core().read_model(str(xml))
    ov.save_model(model, str(target / xml.name), compress_to_fp16=fp16)
    return target / xml.name


# ---------------------------------------------------------------------------------------------
# 4. The model folder


def versions() -> dict[str, str]:
    """Versions of everything that shaped the model (missing packages are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("lineguard", "ultralytics", "torch", "openvino", "opencv-python", "numpy", "supervision"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def model_metadata(
    *,
    name: str,
    imgsz: int,
    command: str,
    data: Mapping[str, Any],
    settings: TrainSettings | None,
    ultralytics_metadata: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    input_hw: Sequence[int] | None = None,
) -> dict[str, Any]:
    """``metadata.yaml`` of a model folder: ultralytics' keys (``names``, ``imgsz``, ``stride``,
    ``task``, ...) so tools that read ultralytics exports understand it, plus ``lineguard``: what
    data (scenario, seeds, augmentations), which command and which versions made it."""
    meta: dict[str, Any] = dict(ultralytics_metadata or {})
    meta.setdefault("task", "detect")
    meta.setdefault("stride", 32)
    meta.setdefault("batch", 1)
    meta["imgsz"] = [int(v) for v in input_hw] if input_hw else [imgsz, imgsz]
    meta["names"] = {i: n for i, n in enumerate(CLASSES)} if "names" not in meta else {int(k): str(v) for k, v in dict(meta["names"]).items()}
    meta["lineguard"] = {
        "name": name,
        "command": command,
        "data": dict(data),
        "train_settings": {**{k: v for k, v in dataclasses.asdict(settings).items() if k != "extra"}, **dict(settings.extra)} if settings else None,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **dict(extra or {}),
    }
    return meta


def write_model_folder(
    model_dir: str | Path,
    ir_xml: str | Path,
    metadata: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None = None,
    plots: Sequence[str | Path] = (),
) -> Path:
    """Write ``model_dir``: ``model.xml``/``model.bin`` (class names in ``rt_info`` as ultralytics
    writes them, plus ``rt_info['lineguard']``), ``metadata.yaml``, ``eval.json`` and plots."""
    import openvino as ov

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = ov.Core().read_model(str(ir_xml))
    names = [str(v) for _, v in sorted(dict(metadata["names"]).items(), key=lambda kv: int(kv[0]))]
    model.set_rt_info(names, ["model_info", "labels"])
    model.set_rt_info("YOLO", ["model_info", "model_type"])
    model.set_rt_info(json.dumps({"name": metadata.get("lineguard", {}).get("name"), "imgsz": metadata["imgsz"]}), ["lineguard", "info"])
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)  # already compressed if it was
    (out / "metadata.yaml").write_text(
        "# lineguard model metadata: ultralytics keys (names, imgsz, stride, task) + 'lineguard' (data, command, versions)\n"
        + yaml.safe_dump(_plain(dict(metadata)), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    if evaluation is not None:
        (out / "eval.json").write_text(json.dumps(_plain(dict(evaluation)), indent=1) + "\n", encoding="utf-8")
    for p in plots:
        shutil.copy2(p, out / Path(p).name)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v


# ---------------------------------------------------------------------------------------------
# The whole pipeline


@dataclass(frozen=True)
class TrainJob:
    """One ``lineguard train`` run."""

    name: str
    frames: int = 500
    seed: int = 1000
    settings: TrainSettings = TrainSettings()
    data: str | None = None  # a YOLO dataset folder you bring; None = render the sim dataset
    out: str = "models"
    workdir: str | None = None  # default out/train/NAME
    eval_frames: int = 400
    eval_seeds: Mapping[str, int] = field(default_factory=lambda: {"nominal": 2001, "shift": 3001})
    eval_stride: int = 30
    command: str = ""
    export_hw: tuple[int, int] | None = None  # input (height, width) of the exported model; None: imgsz x imgsz
    init_weights: str | None = None  # start training from these weights (an earlier run's), not from scratch
    weights: str | None = None  # skip training: export and evaluate these weights (trained by an earlier run of this job)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # scenario params over TRAIN_SCENARIO_OVERRIDES

    def scenario_overrides(self) -> dict[str, Any]:
        """What the training scenario changes from ``nominal``: the defaults, then ``overrides``."""
        return {**TRAIN_SCENARIO_OVERRIDES, **dict(self.overrides)}

    @property
    def work(self) -> Path:
        return Path(self.workdir) if self.workdir else Path("out") / "train" / self.name


def check_seeds_disjoint(train_run_seeds: Sequence[int], eval_run_seeds: Mapping[str, Sequence[int]]) -> None:
    """Raise ``ValueError`` if any evaluation run was rendered with a seed training used."""
    used = set(train_run_seeds)
    for name, seeds in eval_run_seeds.items():
        overlap = used & set(seeds)
        if overlap:
            raise ValueError(f"evaluation set {name!r} reuses training run seeds {sorted(overlap)}; choose other --eval-seed values")


def evaluate_held_out(
    ir_xml: str | Path,
    work: str | Path,
    eval_seeds: Mapping[str, int],
    frames: int,
    stride: int,
    train_run_seeds: Sequence[int],
    *,
    precisions: Sequence[str] = ("f32", "bf16"),
    bar: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Render (or reuse) one evaluation set per ``eval_seeds`` entry under ``work``, check that no
    run seed was used in training, and evaluate ``ir_xml`` on each: the full report at the first
    precision (f32), mAP summaries at the others (bf16: this CPU's default). Returns the reports."""
    from lineguard.learn.evaluate import evaluate_model, render_eval_set

    reports: dict[str, Any] = {}
    for scenario, seed in eval_seeds.items():
        task = bar.add_task(f"eval {scenario}", total=frames * (1 + len(precisions)), info=f"seed {seed}") if bar else None
        advance = (lambda: bar.advance(task)) if bar else None
        eval_dir = Path(work) / f"eval-{scenario}-{seed}"
        summary = render_eval_set(eval_dir, scenario, seed, frames, stride=stride, on_image=advance)
        check_seeds_disjoint(train_run_seeds, {scenario: summary["run_seeds"]})
        report = evaluate_model(ir_xml, eval_dir, precision=precisions[0], on_image=advance)
        report.update({"scenario": scenario, "seed": seed, "stride": stride, "run_seeds": summary["run_seeds"]})
        report["other_precisions"] = {}
        for precision in precisions[1:]:
            other = evaluate_model(ir_xml, eval_dir, precision=precision, on_image=advance)
            report["other_precisions"][precision] = {
                "map50": other["map50"],
                "map50_95": other["map50_95"],
                "ap50": {k: v["ap50"] for k, v in other["per_class"].items()},
            }
        reports[scenario] = report
        if log:
            log(f"eval {scenario}: mAP50={report['map50']:.4f} mAP50-95={report['map50_95']:.4f} ({precisions[0]})")
    return reports


TARGETS = {"nominal": 0.95, "shift": 0.90}  # mAP50 the shipped model must reach (issue #4-6)


def model_card(metadata: Mapping[str, Any], evaluation: Mapping[str, Any], model_dir: str | Path) -> str:
    """The model folder's README.md, generated from its metadata and eval.json so numbers never drift."""
    lg = metadata["lineguard"]
    data = lg["data"]
    sets = evaluation["sets"]
    folder = Path(model_dir)
    size_mb = sum(f.stat().st_size for f in (folder / "model.xml", folder / "model.bin") if f.exists()) / 1e6
    s = lg.get("train_settings") or {}
    lines = [
        f"# {lg['name']} — lineguard's default detector for the simulated line",
        "",
        f"{metadata.get('description', 'YOLO detector')}, exported to OpenVINO IR (weights FP16, "
        f"{size_mb:.1f} MB for model.xml + model.bin). Input {metadata['imgsz'][0]}x{metadata['imgsz'][1]} (height x width) letterboxed RGB /255 "
        f"(ultralytics' preprocessing; pad 114), output the ultralytics head `[1, 4 + {len(metadata['names'])}, {_anchors(metadata['imgsz'])}]` "
        "(cx, cy, w, h, class scores; no NMS in the model). Class names are in `rt_info['model_info']['labels']` and in `metadata.yaml`.",
        "",
        "| id | class | what it is |",
        "|---:|---|---|",
    ]
    meaning = {
        "pcb": "a 150 x 100 mm green board",
        "bracket": "a 140 x 70 mm brushed steel plate",
        "chip": "an IC on a pcb (QFP, SOIC, QFN), present",
        "fastener": "a hex bolt on a bracket, present",
        "scratch": f"a thin scratch on a part (defect); labelled by its region, the line plus {SCRATCH_BOX_MARGIN_MM:g} mm around it",
        "missing_component": "where a chip or fastener should be but is not (defect)",
        "misaligned": "a component offset or turned beyond tolerance (defect; it also gets its chip/fastener box)",
    }
    for i, name in sorted(metadata["names"].items()):
        lines.append(f"| {i} | `{name}` | {meaning.get(name, '')} |")
    lines += ["", "## Accuracy on held-out simulated lines", ""]
    lines.append(
        "COCO-style AP (supervision's `MeanAveragePrecision`, 101-point interpolation), OpenVINO CPU at f32, "
        "conf 0.001 / NMS IoU 0.7 (as `yolo val`). P and R: precision and recall at conf 0.25, IoU 0.5. "
        "Every evaluation run was rendered from a seed the training data never used (checked run by run)."
    )
    lines.append("")
    for name, r in sets.items():
        target = TARGETS.get(name)
        verdict = f" — target mAP50 ≥ {target:.2f}: **{'met' if r['map50'] >= target else 'not met'}**" if target else ""
        others = ", ".join(f"{p}: mAP50 {o['map50']:.3f}, mAP50-95 {o['map50_95']:.3f}" for p, o in r.get("other_precisions", {}).items())
        lines.append(f"**{name}** (scenario `{r['scenario']}`, seed {r['seed']}, {r['images']} images, {len(r['run_seeds'])} run(s)): "
                     f"mAP50 **{r['map50']:.3f}**, mAP50-95 **{r['map50_95']:.3f}**{verdict}" + (f" ({others})" if others else ""))
        lines.append("")
    names = list(metadata["names"].values())
    header = "| class | " + " | ".join(f"{n} AP50 | {n} AP50-95 | {n} P / R | {n} n" for n in sets) + " |"
    lines += [header, "|---|" + "---:|" * (4 * len(sets))]
    for c in names:
        cells = []
        for n, r in sets.items():
            row = r["per_class"][c]
            fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
            pr = f"{fmt(row.get('precision@0.25'))} / {fmt(row.get('recall@0.25'))}"
            cells += [fmt(row["ap50"]), fmt(row["ap50_95"]), pr, str(row["instances"])]
        lines.append(f"| `{c}` | " + " | ".join(cells) + " |")
    lines += ["", "![PR curves at IoU 0.5](pr_curve.png)", "", "## Data", ""]
    if "scenario" in data:
        aug = data.get("augment") or {}
        lines += [
            f"- Training: {data['frames']} frames rendered from scenario `{data['scenario']}` with seed {data['seed']} "
            f"({len(data['run_seeds']['train']) + len(data['run_seeds']['val'])} runs; {data['images']['train']} training "
            f"{'tiles' if data.get('tile') else 'images'}, {data['images']['val']} more for ultralytics' end-of-training check) "
            "and these overrides: "
            + ", ".join(f"`{k}={v}`" for k, v in data["overrides"].items())
            + " — denser parts and more defects, so every class is seen often; the look (lighting, camera, parts) is nominal.",
            f"- Boxes in training images: " + ", ".join(f"{k} {v}" for k, v in data["boxes_per_class"]["train"].items()) + ".",
            f"- Every training image got the seeded augmentations of `lineguard.learn.augment` (the `image.augment` node's "
            f"functions; augmentation seed {data['augment_seed']}): "
            + "; ".join(f"{k} " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in aug.items())
            + ". Then ultralytics' own (mosaic, flips, HSV, small scale/translate jitter; see `metadata.yaml`).",
            f"- Images are scaled so the long side is {data['imgsz']} px (what the letterbox does to a 1280x720 frame): "
            f"a scratch (0.5–0.9 mm wide, 1–1.8 px at 0.5 mm/px) is {0.5 * 2 * data['imgsz'] / 1280:.1f}–{0.9 * 2 * data['imgsz'] / 1280:.1f} px wide there."
            + (f" Training used {data['tile']} px tiles of those scaled frames ({_tiles_per_frame(data['imgsz'], data['tile'])} per frame, half "
               "overlapping; boxes clipped, kept when >= 25 % visible), so objects have their inference pixel size at less compute per sample."
               if data.get("tile") else ""),
            "- Training labels list defect boxes first: a misaligned component has two identical boxes (its kind and `misaligned`) "
            "and ultralytics' assigner trains only the first; the evaluation truth keeps both.",
        ]
    else:
        lines.append(f"- Training data: your dataset `{data.get('dataset')}`.")
    for name, e in (data.get("eval") or {}).items():
        lines.append(f"- Evaluation `{name}`: scenario `{e['scenario']}` unchanged, seed {e['seed']}, {e['frames']} frames every {e['stride']} frames "
                     f"(≈ a third of the image of belt travel, so each part is seen about 4 times), {len(e['run_seeds'])} run(s).")
    lines += ["", "## How it was made", "", "```", lg["command"], "```", ""]
    if lg.get("weights_from"):
        w = lg["weights_from"]
        lines += [f"The weights were trained by an earlier run of the same job (the command without `--weights`, `--export-hw`; "
                  f"ultralytics' arguments: " + ", ".join(f"{k}={v}" for k, v in w["train_args"].items() if k != "data")
                  + f"); this run exported them and evaluated the export. sha256 of the weights: `{w['sha256'][:16]}…`.", ""]
    t = lg.get("timings_s") or {}
    if t:
        lines.append("Wall time on 2 CPU cores (no GPU): " + ", ".join(f"{k[:-2]} {v / 60:.1f} min" for k, v in t.items())
                     + (f". {lg['note']}" if lg.get("note") else "."))
    if s:
        lines.append("")
        init = lg.get("init_weights") or {}
        if init.get("rebuilt_from_ir"):
            start = (f"Continued from the OpenVINO model `{init['path']}` (sha256 of .xml and .bin `{init['sha256'][:16]}…`), its PyTorch weights "
                     f"rebuilt from the IR (largest difference from the IR's output {init['max_rel_diff']:.1e} of its range; batch norms from "
                     f"{init['bn_images']} training images), offline")
        elif init:
            start = (f"Continued from earlier weights of this project (`{init['path']}`, sha256 `{init['sha256'][:16]}…`, "
                     "themselves trained by `lineguard train`: " + ", ".join(f"{k}={v}" for k, v in init["train_args"].items() if k != "data") + "), offline")
        else:
            start = f"From scratch (`{s.get('model')}`, no pretrained weights, offline)"
        lines.append(start + ": " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "model") + ".")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in lg["versions"].items()) + ".", ""]
    if lg.get("known_gaps"):
        lines += ["## Known gaps", ""] + [f"- {gap}" for gap in lg["known_gaps"]] + [""]
    lines += [
        "## Use and limits",
        "",
        "- Made for lineguard's simulated conveyor (`camera.sim`, 1280x720 at 0.5 mm/px): the demo's and CI's default. "
        "It has never seen a real camera; retrain on your line's images (`lineguard train --data DIR`) before trusting it there.",
        "- Evaluate it yourself: `lineguard eval-model models/" + lg["name"] + " --scenario shift --seed 3001` "
        "(any scenario or your YOLO dataset with `--data`).",
        "- OpenVINO's CPU plugin defaults to bf16 where the CPU has it; the numbers above are f32 (bf16 in brackets).",
        "- Licence: trained with ultralytics (AGPL-3.0), which states that models trained with it fall under AGPL-3.0 "
        "unless you hold an Ultralytics licence. lineguard's runtime only loads the IR with OpenVINO and never imports ultralytics.",
        "",
    ]
    return "\n".join(lines)


def _anchors(input_hw: Sequence[int]) -> int:
    """Predictions of a YOLOv8/11 head for an input of ``input_hw``: one per cell at strides 8, 16, 32."""
    h, w = int(input_hw[0]), int(input_hw[1])
    return sum((h // s) * (w // s) for s in (8, 16, 32))


def _tiles_per_frame(imgsz: int, tile: int, frame_wh: tuple[int, int] = (1280, 720)) -> int:
    """Tiles :func:`build_sim_dataset` cuts from a sim frame scaled to a long side of ``imgsz``."""
    w = imgsz
    h = round(frame_wh[1] * imgsz / frame_wh[0])
    return len(tile_positions(w, tile)) * len(tile_positions(h, tile))


def refresh_model_card(model_dir: str | Path) -> Path:
    """Rewrite ``model_dir/README.md`` from its ``metadata.yaml`` and ``eval.json``."""
    folder = Path(model_dir)
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text(encoding="utf-8"))
    evaluation = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
    (folder / "README.md").write_text(model_card(metadata, evaluation, folder), encoding="utf-8")
    return folder / "README.md"


def run_training(job: TrainJob, *, progress: bool = True, console: Any = None) -> dict[str, Any]:
    """Run the whole pipeline for ``job`` and write ``job.out/job.name``; returns a summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from lineguard.learn.evaluate import write_pr_curve

    if job.data is None:  # a wrong --set is named before anything else happens
        from lineguard.sim.scenario import load_scenario

        load_scenario("nominal", job.scenario_overrides(), seed=job.seed)
    require_ultralytics()  # fail before rendering anything
    if job.weights is not None and not Path(job.weights).is_file():
        raise ValueError(f"--weights: expected a trained .pt file, got {job.weights!r} (not found; nothing is ever downloaded)")
    init_ir = init_weights_ir(job.init_weights) if job.init_weights is not None else None
    settings = job.settings
    model_dir = Path(job.out) / job.name
    if model_dir.exists() and any(model_dir.iterdir()):
        raise ValueError(f"{model_dir} exists and is not empty; choose another --name or remove it")
    work = job.work
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "train.log"
    log_file = open(log_path, "a", encoding="utf-8")
    console = console or Console(stderr=True)

    def log(msg: str) -> None:
        log_file.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
        log_file.flush()

    t0 = time.time()
    timings: dict[str, float] = {}
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, disable=not progress) as bar:
            # 1. data
            t = time.time()
            if job.data is None:
                ds_dir = work / "dataset"
                if ds_dir.exists():
                    shutil.rmtree(ds_dir)
                task = bar.add_task("dataset", total=job.frames, info="render + augment")
                data_summary = build_sim_dataset(
                    ds_dir, job.frames, job.seed, settings.imgsz, overrides=job.scenario_overrides(), tile=settings.tile, progress=False, on_image=lambda: bar.advance(task)
                )
                data_yaml = ds_dir / "data.yaml"
                train_run_seeds = data_summary["run_seeds"]["train"] + data_summary["run_seeds"]["val"]
            else:
                settings = dataclasses.replace(settings, tile=None)  # your images as they are
                data_yaml = find_data_yaml(job.data)
                data_summary = {"dataset": str(Path(job.data).resolve()), "data_yaml": str(data_yaml)}
                train_run_seeds = []
            log(f"data: {json.dumps(data_summary, default=str)}")
            timings["dataset_s"] = time.time() - t

            # 2. train
            t = time.time()
            task = bar.add_task("train", total=None, info="")

            def on_batch(epoch: int, epochs: int, i: int, n: int, loss: float) -> None:
                bar.update(task, total=epochs * n, completed=epoch * n + i, info=f"epoch {epoch + 1}/{epochs} loss {loss:.3f}")

            init_weights: Path | None = Path(job.init_weights) if job.init_weights is not None else None
            init_record = _weights_record(init_weights) if init_weights is not None and init_ir is None else None
            if init_ir is not None and job.weights is None:
                init_weights, init_record = weights_from_ir(init_ir, data_yaml, work / "from_ir.pt", settings.tile or settings.imgsz, log=log)
            if job.weights is None:
                best = train_yolo(data_yaml, work / "run", settings, on_batch=on_batch, log=log, init_weights=init_weights)
                timings["train_s"] = time.time() - t
            else:
                best = Path(job.weights)
                log(f"weights: {best} (not trained again)")

            # 3. export
            t = time.time()
            task = bar.add_task("export", total=1, info="OpenVINO IR, FP16")
            ir_xml = export_openvino(best, job.export_hw or settings.imgsz, work)
            bar.advance(task)
            timings["export_s"] = time.time() - t

            # 4. evaluate on held-out seeds
            t = time.time()
            reports = evaluate_held_out(ir_xml, work, job.eval_seeds, job.eval_frames, job.eval_stride, train_run_seeds, bar=bar, log=log)
            eval_run_seeds = {s: r["run_seeds"] for s, r in reports.items()}
            timings["eval_s"] = time.time() - t

        pr_png = write_pr_curve(reports, work / "pr_curve.png")
        ultra_meta = yaml.safe_load((ir_xml.parent / "metadata.yaml").read_text(encoding="utf-8"))
        timings["total_s"] = time.time() - t0
        metadata = model_metadata(
            name=job.name,
            imgsz=settings.imgsz,
            command=job.command,
            data={**data_summary, "eval": {s: {"scenario": s, "seed": job.eval_seeds[s], "frames": job.eval_frames, "stride": job.eval_stride, "run_seeds": eval_run_seeds[s]} for s in reports}},
            settings=settings,
            ultralytics_metadata=ultra_meta,
            extra={"timings_s": {k: round(v, 1) for k, v in timings.items()}, **({"weights_from": _weights_record(best)} if job.weights else {}),
                   **({"init_weights": init_record} if job.weights is None and init_record else {})},
            input_hw=job.export_hw,
        )
        evaluation = {"model": job.name, "imgsz": list(job.export_hw or (settings.imgsz, settings.imgsz)), "classes": list(CLASSES), "sets": reports}
        write_model_folder(model_dir, ir_xml, metadata, evaluation, plots=[pr_png])
        (model_dir / "README.md").write_text(model_card(metadata, evaluation, model_dir), encoding="utf-8")
        log(f"wrote {model_dir} in {timings['total_s']:.0f} s")
    finally:
        log_file.close()
    return {
        "model": str(model_dir),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        **{f"{s}_map50": round(r["map50"], 4) for s, r in reports.items()},
        **{f"{s}_map50_95": round(r["map50_95"], 4) for s, r in reports.items()},
    }


def init_weights_ir(path: str | Path) -> Path | None:
    """``--init-weights``: an OpenVINO model (its .xml, or a folder holding model.xml) to rebuild
    PyTorch weights from, or None for a .pt checkpoint. Raises ValueError when it is neither."""
    p = Path(path)
    if p.is_dir() and (p / "model.xml").is_file():
        p = p / "model.xml"
    if p.is_file() and p.suffix == ".xml":
        if not p.with_suffix(".bin").is_file():
            raise ValueError(f"--init-weights: {p} has no {p.with_suffix('.bin').name} beside it (an IR is .xml + .bin)")
        return p
    if p.is_file() and p.suffix == ".pt":
        return None
    raise ValueError(
        f"--init-weights: expected a trained .pt file, an OpenVINO model.xml or its folder, got {str(path)!r} "
        f"({'not found' if not p.exists() else 'neither'}; nothing is ever downloaded)"
    )


def weights_from_ir(xml: Path, data_yaml: Path, out: Path, size: int, *, log: Callable[[str], None], bn_images: int = 32) -> tuple[Path, dict[str, Any]]:
    """Rebuild a PyTorch checkpoint from the IR ``xml`` (see :mod:`lineguard.learn.from_ir`), its
    batch norms from up to ``bn_images`` training images of ``data_yaml`` letterboxed to ``size``.
    Returns the checkpoint and the record for the metadata."""
    from lineguard.learn.evaluate import letterbox
    from lineguard.learn.from_ir import build_from_ir, check_against_ir, file_digest, save_checkpoint

    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = Path(data.get("path") or data_yaml.parent)
    train = data["train"] if isinstance(data["train"], str) else data["train"][0]
    folder = train if Path(train).is_absolute() else root / train
    files = sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not files:
        raise ValueError(f"--init-weights {xml}: no training images in {folder} to set the batch norms from")
    picked = [files[i] for i in np.linspace(0, len(files) - 1, min(bn_images, len(files))).round().astype(int)]

    def tensor(path: Path, hw: tuple[int, int]) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"--init-weights: cannot read training image {path}")
        boxed = letterbox(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), hw)[0]
        return boxed.transpose(2, 0, 1).astype(np.float32) / 255.0

    names = [str(n) for n in (data["names"].values() if isinstance(data["names"], Mapping) else data["names"])]
    model = build_from_ir(xml, names, [tensor(f, (size, size)) for f in picked])
    import openvino as ov

    in_shape = ov.Core().read_model(str(xml)).input(0).get_partial_shape()
    ir_hw = (in_shape[2].get_length(), in_shape[3].get_length())
    diff = check_against_ir(model, xml, tensor(picked[0], ir_hw))
    if diff > 1e-3:
        raise ValueError(f"--init-weights {xml}: the weights rebuilt from it differ from it by {diff:.1e} of its output's range; not training on them")
    save_checkpoint(model, out, xml)
    log(f"init weights: rebuilt from {xml} ({len(picked)} images for the batch norms; output within {diff:.1e} of the IR's)")
    return out, {"path": str(xml), "sha256": file_digest(xml), "rebuilt_from_ir": True, "max_rel_diff": float(f"{diff:.3g}"), "bn_images": len(picked), "train_args": {}}


def _weights_record(weights: Path) -> dict[str, Any]:
    """Where reused weights came from: their file, digest and the training arguments ultralytics
    saved beside them (``run/args.yaml``)."""
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    args_yaml = weights.parent.parent / "args.yaml"
    args = yaml.safe_load(args_yaml.read_text(encoding="utf-8")) if args_yaml.is_file() else {}
    keep = ("model", "epochs", "imgsz", "batch", "optimizer", "lr0", "seed", "data")
    return {"path": str(weights), "sha256": digest, "train_args": {k: args[k] for k in keep if k in args}}


def command_line() -> str:
    """The command that is running, for the metadata (``lineguard train ...``)."""
    args = [Path(sys.argv[0]).name, *sys.argv[1:]]
    return shlex.join(args)  # quoted, so the card's command can be pasted into a shell
