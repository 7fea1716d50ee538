"""Let a person see what the simulated camera sees: an mp4 of a run and a PNG contact sheet.

``write_preview`` renders a run (or its first ``frames`` frames) to an mp4 (``mp4v``: OpenCV's
wheels cannot write H.264) at the camera's frame rate, and a contact sheet of evenly spaced frames
with their index, time and encoder count. ``draw_truth=True`` overlays the ground-truth boxes with
class names (parts blue, components green, defects red), which is the quickest way to check labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lineguard.sim.conveyor import Conveyor
from lineguard.sim.scenario import Scenario
from lineguard.sim.truth import CLASSES, COMPONENT_KINDS, DEFECT_KINDS, FrameTruth

_COLOURS = {
    **{name: (255, 160, 40) for name in CLASSES if name not in COMPONENT_KINDS + DEFECT_KINDS},
    **{name: (80, 220, 80) for name in COMPONENT_KINDS},
    **{name: (40, 40, 255) for name in DEFECT_KINDS},
}


def draw_truth(image: np.ndarray, truth: FrameTruth, *, labels: bool = True) -> np.ndarray:
    """A copy of ``image`` with the truth boxes drawn on it."""
    out = image.copy()
    for (x0, y0, x1, y1), c, pid in zip(truth.boxes_xyxy, truth.class_ids, truth.part_ids):
        name = CLASSES[int(c)]
        colour = _COLOURS[name]
        cv2.rectangle(out, (int(x0), int(y0)), (int(np.ceil(x1)) - 1, int(np.ceil(y1)) - 1), colour, 1, cv2.LINE_AA)
        if labels and (name in DEFECT_KINDS or name not in COMPONENT_KINDS):
            text = f"{name} #{int(pid)}"
            cv2.putText(out, text, (int(x0) + 2, max(10, int(y0) - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return out


def _caption(image: np.ndarray, text: str) -> None:
    cv2.rectangle(image, (0, 0), (min(image.shape[1], 9 * len(text) + 8), 20), (0, 0, 0), -1)
    cv2.putText(image, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def contact_sheet(conveyor: Conveyor, indices: list[int], *, cols: int = 4, tile_width: int = 400, with_truth: bool = False) -> np.ndarray:
    """A grid of the given frames, each scaled to ``tile_width`` px wide and captioned."""
    w, h = conveyor.resolution
    tile_h = round(tile_width * h / w)
    rows = max(1, -(-len(indices) // cols))
    sheet = np.full((rows * (tile_h + 4) + 4, cols * (tile_width + 4) + 4, 3), 32, np.uint8)
    for n, i in enumerate(indices):
        image = conveyor.render(i)
        truth = conveyor.frame_truth(i)
        if with_truth:
            image = draw_truth(image, truth, labels=False)
        tile = cv2.resize(image, (tile_width, tile_h), interpolation=cv2.INTER_AREA)
        _caption(tile, f"#{i}  t={truth.t_ns / 1e9:.3f}s  enc={truth.encoder}")
        r, c = divmod(n, cols)
        y, x = 4 + r * (tile_h + 4), 4 + c * (tile_width + 4)
        sheet[y : y + tile_h, x : x + tile_width] = tile
    return sheet


def write_preview(
    scenario: Scenario,
    out_path: str | Path,
    *,
    frames: int | None = None,
    sheet_path: str | Path | None = None,
    sheet_tiles: int = 16,
    with_truth: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the run as ``out_path`` (.mp4) and a contact sheet (default: same name, .png)."""
    out = Path(out_path)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"out: expected a file name ending in .mp4, got {str(out)!r}")
    if frames is not None and frames < 1:
        raise ValueError(f"frames: expected an integer >= 1, got {frames}")
    if sheet_tiles < 1:
        raise ValueError(f"sheet tiles: expected an integer >= 1, got {sheet_tiles}")
    sheet = Path(sheet_path) if sheet_path is not None else out.with_suffix(".png")
    if sheet.suffix.lower() != ".png":
        raise ValueError(f"sheet: expected a file name ending in .png, got {str(sheet)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.parent.mkdir(parents=True, exist_ok=True)
    conveyor = Conveyor(scenario)
    n = conveyor.n_frames if frames is None else min(frames, conveyor.n_frames)
    w, h = conveyor.resolution
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), conveyor.fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"could not open {out} for writing (OpenCV's FFMPEG backend with mp4v)")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(f"preview {scenario.name}", total=n)
            for i in range(n):
                image = conveyor.render(i)
                if with_truth:
                    image = draw_truth(image, conveyor.frame_truth(i))
                writer.write(image)
                bar.advance(task)
    finally:
        writer.release()
    tiles = min(sheet_tiles, n)
    indices = [round(j * (n - 1) / max(1, tiles - 1)) for j in range(tiles)]
    cols = min(4, tiles)
    if not cv2.imwrite(str(sheet), contact_sheet(conveyor, indices, cols=cols, with_truth=with_truth)):
        raise OSError(f"could not write {sheet}")
    return {
        "video": str(out),
        "sheet": str(sheet),
        "frames": n,
        "fps": conveyor.fps,
        "resolution": [w, h],
        "parts": len(conveyor.parts),
        "defective_parts": sum(p.defective for p in conveyor.parts),
    }
