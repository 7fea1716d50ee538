"""``lineguard detect MODEL INPUT...``: run a detection model on images, folders and videos.

``register(subparsers)`` adds ``detect`` to the top-level ``lineguard`` parser and
``register_bench(bench_subparsers)`` adds ``detector`` under ``lineguard bench``; each sets
``func(args) -> exit code``. Decoding is :class:`lineguard.nodes.detection.Detector`, the code the
``detector.openvino`` node runs, so the CLI shows what a recipe would see.

Exit codes: 0 success, 1 a bad model or input (the message names it), 3 annotated images could
not be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineguard.nodes.detection import LAYOUTS, PRECISIONS, ModelError
from lineguard.runtime.cli import EXIT_OK, error_exit

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")

EXIT_CODES_HELP = """exit codes:
  0  success
  1  bad model or input (the message names the file, what was found and what was expected)
  3  annotated images could not be written"""


@dataclass(frozen=True)
class Source:
    """One input: an image, or a video (many frames)."""

    path: Path
    kind: str  # image, video

    def frame_count(self) -> int:
        if self.kind == "image":
            return 1
        cap = cv2.VideoCapture(str(self.path))
        try:
            return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        finally:
            cap.release()

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.kind == "image":
            image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
            if image is None:
                raise InputError(f"input '{self.path}': expected an image OpenCV can read, got an unreadable file")
            yield 0, image
            return
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InputError(f"input '{self.path}': expected a video OpenCV can open, got a file it cannot")
        try:
            index = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield index, frame
                index += 1
        finally:
            cap.release()


class InputError(ValueError):
    """An input that is not an image, a folder of images or a video."""


def expand_inputs(inputs: list[str]) -> list[Source]:
    """Images, folders (their images, by name) and videos, in the order given."""
    sources: list[Source] = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise InputError(f"input '{arg}': expected a folder with images ({', '.join(IMAGE_SUFFIXES)}), found none")
            sources.extend(Source(p, "image") for p in images)
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                sources.append(Source(path, "image"))
            elif suffix in VIDEO_SUFFIXES:
                sources.append(Source(path, "video"))
            else:
                raise InputError(f"input '{arg}': expected an image ({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(VIDEO_SUFFIXES)}) or a folder, got '{suffix or 'no extension'}'")
        else:
            raise InputError(f"input '{arg}': expected an image, a folder or a video, found no such file or folder")
    return sources


def detection_records(detections: Any, source: str, frame: int) -> list[dict[str, Any]]:
    """One JSON-ready dict per detection: source, frame, class_id, class_name, conf, xyxy (original pixels)."""
    names = detections.data.get("class_name", [""] * len(detections))
    return [
        {
            "source": source,
            "frame": frame,
            "class_id": int(detections.class_id[i]),
            "class_name": str(names[i]),
            "conf": round(float(detections.confidence[i]), 5),
            "xyxy": [round(float(v), 2) for v in detections.xyxy[i]],
        }
        for i in range(len(detections))
    ]


class _Annotator:
    def __init__(self, out_dir: Path) -> None:
        import supervision as sv

        self.out_dir = out_dir
        self.boxes = sv.BoxAnnotator(thickness=2)
        self.labels = sv.LabelAnnotator(text_scale=0.5, text_padding=3)
        self.used: set[Path] = set()

    def target(self, source: Source, frame: int) -> Path:
        if source.kind == "video":
            path = self.out_dir / source.path.stem / f"{frame:06d}.jpg"
        else:
            path = self.out_dir / source.path.name
        base, n = path, 1
        while path in self.used:  # two inputs with the same name: keep both
            path = base.with_name(f"{base.stem}_{n}{base.suffix}")
            n += 1
        self.used.add(path)
        return path

    def save(self, image: np.ndarray, detections: Any, source: Source, frame: int) -> None:
        labels = [f"{n} {c:.2f}" for n, c in zip(detections.data.get("class_name", []), detections.confidence)]
        canvas = self.boxes.annotate(image.copy(), detections)
        canvas = self.labels.annotate(canvas, detections, labels=labels)
        path = self.target(source, frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), canvas):
            raise OSError(f"could not write '{path}'")


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled, transient=True)


def cmd_detect(args: argparse.Namespace) -> int:
    from lineguard.nodes.detection import Detector

    try:
        sources = expand_inputs(args.inputs)
        imgsz = None if not args.imgsz else (args.imgsz[0] if len(args.imgsz) == 1 else args.imgsz[:2])
        detector = Detector(
            args.model,
            device=args.device,
            precision=args.precision,
            layout=args.layout,
            class_names=[n.strip() for n in args.class_names.split(",")] if args.class_names else None,
            imgsz=imgsz,
            conf=args.conf,
            iou=args.iou,
            classes=args.classes,
            max_detections=args.max_det,
        )
    except (ModelError, InputError) as exc:
        return error_exit(exc)
    if not args.json:
        print(detector.info.describe(), file=sys.stderr)
    annotator = _Annotator(Path(args.save)) if args.save else None
    many = len(sources) > 1 or any(s.kind == "video" for s in sources)
    totals: Counter[str] = Counter()
    frames_seen = 0
    out = sys.stdout
    with _progress(many and not args.json and not args.no_progress and sys.stderr.isatty()) as progress:
        task = progress.add_task("detecting", total=sum(s.frame_count() for s in sources) or None)
        for source in sources:
            counts: Counter[str] = Counter()
            frames = 0
            try:
                for frame, image in source.frames():
                    detections = detector.detect(image)
                    frames += 1
                    counts.update(str(n) for n in detections.data.get("class_name", []))
                    if args.json:
                        for record in detection_records(detections, str(source.path), frame):
                            out.write(json.dumps(record) + "\n")
                    if annotator is not None:
                        annotator.save(image, detections, source, frame)
                    progress.advance(task)
            except InputError as exc:
                return error_exit(exc)
            except OSError as exc:
                return error_exit(exc, "--save: ")
            frames_seen += frames
            totals.update(counts)
            if not args.json:
                what = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing"
                where = f" ({frames} frames)" if source.kind == "video" else ""
                print(f"{source.path}{where}: {sum(counts.values())} detections: {what}")  # rich keeps the bar below it
    if not args.json:
        summary = ", ".join(f"{n} {name}" for name, n in sorted(totals.items())) or "nothing"
        print(f"{frames_seen} frames from {len(sources)} inputs: {sum(totals.values())} detections: {summary}")
        if annotator is not None:
            print(f"annotated images in {args.save}", file=sys.stderr)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``lineguard detect`` to the top-level parser's sub-commands."""
    p = subparsers.add_parser(
        "detect",
        help="run a detection model on images, folders or videos",
        description="Run an OpenVINO IR or ONNX detection model (the decoding of the detector.openvino node) on "
        "images, folders of images and videos. Prints a summary per input, or with --json one JSON line per "
        'detection: {"source", "frame", "class_id", "class_name", "conf", "xyxy"} with xyxy in original pixels.',
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="model .xml (IR, .bin beside it) or .onnx, or an export folder holding one")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder of images, or video")
    p.add_argument("--json", action="store_true", help="one JSON line per detection on stdout")
    p.add_argument("--save", metavar="DIR", help="write annotated images to DIR (videos: DIR/<video>/<frame>.jpg)")
    p.add_argument("--conf", type=float, default=0.25, metavar="C", help="keep detections scoring above C (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, metavar="I", help="NMS IoU threshold (default 0.45)")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU; AUTO uses a GPU/NPU when there is one)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="inference precision (auto = device default, bf16 on CPUs that have it)")
    p.add_argument("--layout", choices=["auto", *LAYOUTS], default="auto", help="output layout (default: detect it)")
    p.add_argument("--imgsz", type=int, nargs="+", metavar="N", help="input size for a model with a dynamic input: N, or H W")
    p.add_argument("--max-det", type=int, default=300, metavar="N", help="at most N detections per frame (default 300)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="keep only these class names")
    p.add_argument("--class-names", metavar="A,B,...", help="class names by id, when the model does not name them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_detect)
    return p


def register_bench(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``lineguard bench detector`` to the ``lineguard bench`` parser's sub-commands."""
    p = bench_subparsers.add_parser(
        "detector",
        help="detector node throughput vs raw OpenVINO",
        description="Run the same model on the same image with raw OpenVINO (compiled model, throughput hint, "
        "AsyncInferQueue) and through the detector.openvino node in a graph, one after the other in this process. "
        "Prints FPS of both, their ratio (target: node >= 0.9x raw) and latency p50/p99 of one frame at a time. "
        "Without MODEL a synthetic YOLO-shaped model (about yolov8n's cost) is built in a temporary folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="model .xml/.onnx (default: a synthetic yolov8n-sized model)")
    p.add_argument("--image", metavar="FILE", help="input image (default: a synthetic 1280x720 frame)")
    p.add_argument("--frames", type=int, default=300, help="frames per throughput run (default 300)")
    p.add_argument("--latency-frames", type=int, default=100, help="frames sent one at a time for latency (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="alternating raw/node runs; medians are reported (default 3)")
    p.add_argument("--requests", type=int, help="requests in flight for both (default: OpenVINO's optimal number)")
    p.add_argument("--imgsz", type=int, default=320, help="synthetic model input size (default 320)")
    p.add_argument("--device", default="CPU")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    def run(args: argparse.Namespace) -> int:
        from lineguard.nodes.detector_bench import bench_detector

        try:
            result = bench_detector(args.model, image=args.image, frames=args.frames, latency_frames=args.latency_frames, rounds=args.rounds, requests=args.requests, device=args.device, precision=args.precision, imgsz=args.imgsz)
        except (ModelError, InputError) as exc:
            return error_exit(exc)
        print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2) if args.json else result["text"])
        return EXIT_OK

    p.set_defaults(func=run)
    return p
