"""``lineguard bench detector``: what the ``detector.openvino`` node costs over raw OpenVINO.

Both run the same compiled model (same file, same properties: throughput hint, the same number of
requests, preprocessing folded into the model) on the same image, one after the other in this
process:

- raw: the letterboxed input tensor, prepared once, through an ``AsyncInferQueue`` kept full;
- node: the frame through a graph ``source → detector.openvino → sink`` on the wall clock, so the
  figure includes letterboxing, decoding, NMS, building the detections and the executor;
- for reference, a plain loop with the node's letterbox and decoding but no graph, which tells
  what pre/post-processing costs apart from the runtime.

Throughput is frames per second with every request busy; latency p50/p99 is one frame at a time
(raw: one synchronous inference; node: the source waits for the sink before sending the next).
Absolute figures on a shared 2-core machine are noisy; the ratio is the number to watch
(target: node ≥ 0.9 × raw).

Without a model file a synthetic YOLO-shaped network is built (a conv backbone at strides 8, 16
and 32, an ultralytics-layout head ``[1, 84, N]``, random weights, a dozen confident anchors so
NMS has work), sized like yolov8n (≈1 GMAC at 320×320, yolov8n's decoupled head widths).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineguard.nodes.detection import Detector, ModelError
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.executor import Executor
from lineguard.runtime.loader import load_text
from lineguard.runtime.node import InPort, Node, OutPort
from lineguard.runtime.registry import Registry

TARGET_RATIO = 0.9


# -- a synthetic model and frame --------------------------------------------------------------------------
def build_synthetic_yolo(folder: Path, imgsz: int = 320, nc: int = 80, seed: int = 0) -> Path:
    """Write ``folder/model.xml``: a YOLO-shaped detector with random weights, output [1, 4+nc, N]."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 3, imgsz, imgsz], np.float32, name="images")

    def conv(inp: Any, cin: int, cout: int, stride: int = 1, k: int = 3) -> Any:
        weights = (rng.standard_normal((cout, cin, k, k)) * math.sqrt(2 / (k * k * cin))).astype(np.float32)
        pad = k // 2
        y = ops.convolution(inp, ops.constant(weights), [stride, stride], [pad, pad], [pad, pad], [1, 1])
        y = ops.add(y, ops.constant((rng.standard_normal((1, cout, 1, 1)) * 0.1).astype(np.float32)))
        return ops.multiply(y, ops.sigmoid(y))  # SiLU, as in YOLO

    c = [16, 32, 64, 128, 256]
    y = conv(x, 3, c[0], 2)
    y = conv(conv(y, c[0], c[1], 2), c[1], c[1])
    p3 = conv(conv(conv(y, c[1], c[2], 2), c[2], c[2]), c[2], c[2])
    p4 = conv(conv(conv(p3, c[2], c[3], 2), c[3], c[3]), c[3], c[3])
    p5 = conv(conv(conv(p4, c[3], c[4], 2), c[4], c[4]), c[4], c[4])
    heads, grid = [], []
    def project(inp: Any, cin: int, cout: int) -> Any:  # 1×1 convolution, no activation
        return ops.convolution(inp, ops.constant((rng.standard_normal((cout, cin, 1, 1)) * 0.05).astype(np.float32)), [1, 1], [0, 0], [0, 0], [1, 1])

    box_ch, cls_ch = 64, max(16, nc)  # yolov8n's decoupled head widths
    for p, ch, stride in ((p3, c[2], 8), (p4, c[3], 16), (p5, c[4], 32)):
        box = project(conv(conv(p, ch, box_ch), box_ch, box_ch), box_ch, 4)
        cls = project(conv(conv(p, ch, cls_ch), cls_ch, cls_ch), cls_ch, nc)
        heads.append(ops.reshape(ops.concat([box, cls], 1), ops.constant(np.array([1, 4 + nc, -1], np.int64)), False))
        side = imgsz // stride
        ys, xs = np.mgrid[0:side, 0:side]
        grid.append(np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride, np.full(side * side, 3.0 * stride), np.full(side * side, 3.0 * stride)]))
    raw = ops.concat(heads, 2)
    n = sum(g.shape[1] for g in grid)
    box_raw, cls_raw = ops.variadic_split(raw, ops.constant(np.int64(1)), ops.constant(np.array([4, nc], np.int64))).outputs()
    boxes = ops.add(ops.constant(np.concatenate(grid, axis=1)[None].astype(np.float32)), ops.multiply(box_raw, ops.constant(np.float32(2.0))))
    bias = np.full((1, nc, n), -7.0, np.float32)
    hot = rng.choice(grid[0].shape[1] - 1, size=12, replace=False)
    for j in hot:  # a confident anchor and its neighbour (same class): one survives NMS
        bias[0, rng.integers(nc), [j, j + 1]] = 4.0
    scores = ops.sigmoid(ops.add(ops.multiply(cls_raw, ops.constant(np.float32(0.05))), ops.constant(bias)))
    model = ov.Model([ops.concat([boxes, scores], 1)], [x], "synthetic_yolo")
    model.set_rt_info("YOLO", ["model_info", "model_type"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.xml"
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def synthetic_frame(height: int = 720, width: int = 1280, seed: int = 0) -> np.ndarray:
    """A belt-like BGR frame: dark belt, a few bright parts, sensor noise."""
    rng = np.random.default_rng(seed)
    frame = np.full((height, width, 3), 45, np.uint8)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, width - 200)), int(rng.integers(height // 4, height // 2))
        cv2.rectangle(frame, (x0, y0), (x0 + 180, y0 + 120), tuple(int(v) for v in rng.integers(120, 230, 3)), -1)
    noise = rng.integers(-8, 9, frame.shape, dtype=np.int16)
    frame = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    frame.flags.writeable = False
    return frame


# -- raw OpenVINO -------------------------------------------------------------------------------------------
def _raw_throughput(compiled: Any, tensor: np.ndarray, frames: int, requests: int) -> tuple[float, float]:
    """Frames per second and CPU milliseconds per frame (all threads of this process)."""
    import openvino as ov

    queue = ov.AsyncInferQueue(compiled, requests)
    queue.set_callback(lambda request, userdata: None)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(frames):
        queue.start_async({0: tensor}, None, share_inputs=True)
    queue.wait_all()
    return frames / (time.perf_counter() - started), (time.process_time() - cpu) / frames * 1e3


def _plain_pipeline_throughput(detector: Detector, frame: np.ndarray, frames: int, requests: int) -> tuple[float, float]:
    """A hand-written loop with the node's own pre- and post-processing (letterbox on this thread,
    decode in the callback), no graph: what any code calling OpenVINO would pay besides inference."""
    import openvino as ov

    queue = ov.AsyncInferQueue(detector.compiled, requests)
    queue.set_callback(lambda request, lb: detector.postprocess_request(request, lb))
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(frames):
        tensor, lb = detector.prepare(frame)
        queue.start_async({0: tensor}, lb, share_inputs=True)
    queue.wait_all()
    return frames / (time.perf_counter() - started), (time.process_time() - cpu) / frames * 1e3


def _raw_latency_ms(compiled: Any, tensor: np.ndarray, frames: int) -> np.ndarray:
    request = compiled.create_infer_request()
    out = []
    for _ in range(frames):
        t0 = time.perf_counter_ns()
        request.infer({0: tensor}, share_inputs=True)
        out.append(time.perf_counter_ns() - t0)
    return np.array(out) / 1e6


# -- the node in a graph ------------------------------------------------------------------------------------
class _BenchImages(Node):
    """Emits the same frame ``count`` times; with ``ping`` waits for each result first."""

    type_name = "bench.images"
    outputs = {"image": OutPort("image")}
    params_schema = {"type": "object", "additionalProperties": False, "properties": {"count": {"type": "integer"}, "ping": {"type": "boolean"}}}
    frame: np.ndarray | None = None
    arrivals: asyncio.Queue[int] | None = None
    sent_ns: list[int] = []

    cpu_s: list[float] = []

    async def run(self) -> None:
        assert _BenchImages.frame is not None
        _BenchImages.cpu_s.append(time.process_time())
        for i in range(self.params["count"]):
            _BenchImages.sent_ns.append(time.perf_counter_ns())
            await self.ctx.emit("image", Envelope(i, self.ctx.clock.now_ns(), _BenchImages.frame))
            if self.params["ping"]:
                assert _BenchImages.arrivals is not None
                await _BenchImages.arrivals.get()


class _BenchSink(Node):
    type_name = "bench.detections"
    inputs = {"detections": InPort("detections", queue=64)}
    received_ns: list[int] = []
    detections: list[int] = []
    cpu_s = 0.0
    last_frame = -1

    async def process(self, port: str, envelope: Envelope) -> None:
        _BenchSink.received_ns.append(time.perf_counter_ns())
        if envelope.frame_id == _BenchSink.last_frame:
            _BenchSink.cpu_s = time.process_time()
        _BenchSink.detections.append(len(envelope.payload))
        if _BenchImages.arrivals is not None:
            _BenchImages.arrivals.put_nowait(envelope.frame_id)


def _node_run(model: Path, frame: np.ndarray, count: int, ping: bool, requests: int, device: str, precision: str) -> tuple[float, float, np.ndarray, list[int]]:
    """Frames per second, CPU ms per frame (first frame sent to last received), latencies (ms)
    and detections per frame, through source → detector.openvino → sink on the wall clock."""
    from lineguard.nodes.detector_openvino import OpenVinoDetector

    registry = Registry()
    for cls in (_BenchImages, _BenchSink, OpenVinoDetector):
        registry.register(cls)
    text = (
        "version: 1\nnodes:\n"
        f"  src: {{type: bench.images, params: {{count: {count}, ping: {str(ping).lower()}}}}}\n"
        f"  det: {{type: detector.openvino, params: {{model: '{model}', requests: {requests}, device: {device}, precision: {precision}}}, in: {{image: src.image}}}}\n"
        "  sink: {type: bench.detections, in: {detections: det.detections}}\n"
    )
    graph = compile_document(load_text(text, "<bench>"), registry)

    async def main() -> None:
        _BenchImages.frame, _BenchImages.sent_ns, _BenchImages.cpu_s = frame, [], []
        _BenchSink.received_ns, _BenchSink.detections, _BenchSink.last_frame = [], [], count - 1
        _BenchImages.arrivals = asyncio.Queue() if ping else None
        await Executor(graph).run()

    try:
        asyncio.run(main())
    finally:
        _BenchImages.arrivals = None
    sent, received = np.array(_BenchImages.sent_ns, np.int64), np.array(_BenchSink.received_ns, np.int64)
    elapsed_s = (received[-1] - sent[0]) / 1e9
    cpu_ms = (_BenchSink.cpu_s - _BenchImages.cpu_s[0]) / count * 1e3
    return float(count / elapsed_s), float(cpu_ms), (received - sent) / 1e6, list(_BenchSink.detections)


# -- the benchmark ------------------------------------------------------------------------------------------
def bench_detector(
    model: str | Path | None = None,
    *,
    image: str | Path | None = None,
    frames: int = 300,
    latency_frames: int = 100,
    rounds: int = 3,
    requests: int | None = None,
    device: str = "CPU",
    precision: str = "auto",
    imgsz: int = 320,
) -> dict[str, Any]:
    """Measure raw OpenVINO and the node ``rounds`` times, alternating, and report medians."""
    node_log = logging.getLogger("lineguard.node")
    level = node_log.level
    node_log.setLevel(logging.WARNING)  # the node says "loaded …" at every start; once is enough here
    try:
        return _bench_detector(model, image=image, frames=frames, latency_frames=latency_frames, rounds=rounds, requests=requests, device=device, precision=precision, imgsz=imgsz)
    finally:
        node_log.setLevel(level)


def _bench_detector(model: str | Path | None, *, image: str | Path | None, frames: int, latency_frames: int, rounds: int, requests: int | None, device: str, precision: str, imgsz: int) -> dict[str, Any]:
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="lineguard-bench-") as tmp:
        synthetic = model is None
        model_path = build_synthetic_yolo(Path(tmp) / "synthetic", imgsz) if synthetic else Path(model)  # type: ignore[arg-type]
        if image is not None:
            frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if frame is None:
                raise ModelError(f"--image '{image}': expected an image OpenCV can read, got none")
            frame.flags.writeable = False
        else:
            frame = synthetic_frame()
        detector = Detector(model_path, device=device, precision=precision, requests=requests or 2)
        if requests is None:  # what OpenVINO finds optimal for this model on this machine
            optimal = ov.Core().compile_model(str(detector.info.path), device, {"PERFORMANCE_HINT": "THROUGHPUT"}).get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            requests = int(optimal)
            if requests != 2:
                detector = Detector(model_path, device=device, precision=precision, requests=requests)
        tensor, _ = detector.prepare(frame)
        path = detector.info.path
        _raw_throughput(detector.compiled, tensor, 20, requests)  # warm-up
        _node_run(path, frame, 20, False, requests, device, precision)
        raw_runs, plain_runs, node_runs, found = [], [], [], []
        for _ in range(rounds):  # alternate, so all see the same machine load
            raw_runs.append(_raw_throughput(detector.compiled, tensor, frames, requests))
            plain_runs.append(_plain_pipeline_throughput(detector, frame, frames, requests))
            fps, cpu_ms, _, found = _node_run(path, frame, frames, False, requests, device, precision)
            node_runs.append((fps, cpu_ms))
        raw_lat = _raw_latency_ms(detector.compiled, tensor, latency_frames)
        _, _, node_lat, _ = _node_run(path, frame, latency_frames, True, requests, device, precision)
        info = detector.info
        del detector

    def median(runs: list[tuple[float, float]], k: int) -> float:
        return float(np.median([r[k] for r in runs]))

    raw_fps, node_fps = median(raw_runs, 0), median(node_runs, 0)
    ratio = float(np.median([n[0] / r[0] for r, n in zip(raw_runs, node_runs)]))
    result: dict[str, Any] = {
        "model": "synthetic yolov8n-sized (random weights)" if synthetic else str(model_path),
        "layout": info.layout,
        "input_hw": list(info.input_hw),
        "image_hw": list(frame.shape[:2]),
        "device": device,
        "precision": precision,
        "requests": requests,
        "frames": frames,
        "rounds": rounds,
        "detections_per_frame": float(np.mean(found)) if found else 0.0,
        "raw": {"fps": raw_fps, "cpu_ms_per_frame": median(raw_runs, 1), "p50_ms": float(np.percentile(raw_lat, 50)), "p99_ms": float(np.percentile(raw_lat, 99))},
        "plain_loop": {"fps": median(plain_runs, 0), "cpu_ms_per_frame": median(plain_runs, 1)},
        "node": {"fps": node_fps, "cpu_ms_per_frame": median(node_runs, 1), "p50_ms": float(np.percentile(node_lat, 50)), "p99_ms": float(np.percentile(node_lat, 99))},
        "runs_fps": [[round(r[0], 1), round(n[0], 1)] for r, n in zip(raw_runs, node_runs)],
        "ratio_fps": ratio,
        "ratio_fps_node_vs_plain_loop": float(np.median([n[0] / q[0] for q, n in zip(plain_runs, node_runs)])),
        "load_average_1min": os.getloadavg()[0],
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
    }
    raw, node, plain = result["raw"], result["node"], result["plain_loop"]
    lines = [
        f"detector benchmark: {result['model']} (layout {info.layout}, input {info.input_hw[0]}x{info.input_hw[1]}), "
        f"{frame.shape[1]}x{frame.shape[0]} frame, {device}, precision {precision}, {requests} requests, {result['detections_per_frame']:.1f} detections/frame",
        f"medians of {rounds} alternating runs of {frames} frames; latency: one frame at a time, {latency_frames} frames",
        f"{'':26}{'raw OpenVINO':>14}{'detector.openvino':>20}{'ratio':>8}",
        f"{'throughput (FPS)':<26}{raw['fps']:>14.1f}{node['fps']:>20.1f}{ratio:>8.2f}",
        f"{'CPU per frame (ms)':<26}{raw['cpu_ms_per_frame']:>14.2f}{node['cpu_ms_per_frame']:>20.2f}{node['cpu_ms_per_frame'] / raw['cpu_ms_per_frame']:>8.2f}",
        f"{'latency p50 (ms)':<26}{raw['p50_ms']:>14.2f}{node['p50_ms']:>20.2f}{node['p50_ms'] / raw['p50_ms']:>8.2f}",
        f"{'latency p99 (ms)':<26}{raw['p99_ms']:>14.2f}{node['p99_ms']:>20.2f}{node['p99_ms'] / raw['p99_ms']:>8.2f}",
        f"node throughput {ratio:.2f}x raw {'meets' if result['meets_target'] else 'MISSES'} the target of >= {TARGET_RATIO:g}x "
        f"(FPS per round, raw/node: {', '.join(f'{r}/{n}' for r, n in result['runs_fps'])})",
        f"for reference, a plain loop with the same letterbox and decoding (no graph): {plain['fps']:.1f} FPS, "
        f"{plain['cpu_ms_per_frame']:.2f} CPU ms/frame; node/plain {result['ratio_fps_node_vs_plain_loop']:.2f}x",
        f"machine load average (1 min) {result['load_average_1min']:.2f} on {os.cpu_count()} CPUs: figures from a loaded machine understate both, the node more",
    ]
    result["text"] = "\n".join(lines)
    return result


if __name__ == "__main__":
    print(bench_detector()["text"])
