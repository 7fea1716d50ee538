"""``detector.openvino``: object detection with an OpenVINO IR or ONNX model."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from lineguard.nodes.detection import (
    LAYOUTS,
    PRECISIONS,
    ROI_KEEP,
    Detector,
    ModelError,
    load_model,
    model_file_problem,
    roi_problem,
    thresholds_for,
)
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort

_NUMBER = {"type": "number"}


class OpenVinoDetector(Node):
    """Detects parts and defects in every frame with an OpenVINO model (IR ``.xml``/``.bin`` or ONNX).

    Three output layouts are decoded, detected from the output shape, ``metadata.yaml`` and the
    model's ``rt_info`` (or forced with ``layout``): ``yolo`` — the ultralytics YOLOv8/YOLO11 head
    ``[1, 4+nc, N]``, with class-aware NMS; ``yolo_e2e`` — NMS-free YOLOv10/YOLO26 exports
    ``[1, K, 6]``; ``detection_output`` — OpenVINO DetectionOutput ``[1, 1, N, 7]`` (SSD and
    EfficientDet from the Open Model Zoo). Class names come from ``class_names``, else the
    export's ``metadata.yaml``, else ``rt_info`` labels. Ultralytics models are letterboxed exactly
    as ultralytics does, so boxes match its own predictions; DetectionOutput models get a plain
    resize, BGR, unscaled (the Open Model Zoo convention), unless their ``rt_info`` says otherwise.
    Colour order, scaling and layout run inside OpenVINO (``PrePostProcessor``).

    ``requests`` inferences run at once (``AsyncInferQueue``, throughput hint); detections are
    still emitted in frame order. Per-class thresholds (``class_conf``, by class name, else
    ``conf``), a class filter (``classes``) and a region of interest (``roi``: a detection is
    kept when its box centre is inside, or with ``roi_keep: box`` its whole box) apply before
    emitting.

    Emits on ``detections`` one ``supervision.Detections`` per frame: ``xyxy`` float32 in original
    image pixels, ``confidence`` float32, ``class_id`` int64, ``data['class_name']`` (str), and
    ``metadata`` ``{model: resolved path, image_hw: (h, w)}``. The image is not forwarded.

    A model that cannot work fails the start (missing file, unsupported output layout, input not
    [1, 3, H, W], class names that disagree with the model's class count), naming the path, what
    was found and what was expected; ``lineguard validate`` reports it at the recipe line.

    Example:
        det:
          type: detector.openvino
          params: {model: models/sim-v8/model.xml, conf: 0.3, class_conf: {scratch: 0.5}, roi: [0, 160, 1280, 560]}
          in: {image: cam.image}
    """

    type_name = "detector.openvino"
    version = 1
    inputs = {"image": InPort("image", queue=2, policy="block", doc="BGR uint8 frames; a slow detector holds the camera back (cameras skip and count late frames)")}
    outputs = {"detections": OutPort("detections", "supervision.Detections in original image pixels, with data['class_name']")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model"],
        "properties": {
            "model": {
                "type": "string",
                "minLength": 1,
                "description": "OpenVINO IR (.xml, .bin beside it), ONNX file, or a folder holding one. Relative: the current directory, then the lineguard installation (models/...).",
            },
            "device": {"type": "string", "minLength": 1, "default": "CPU", "description": "OpenVINO device: CPU, or AUTO to use a GPU/NPU when there is one."},
            "conf": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.25, "description": "Keep detections scoring above this."},
            "iou": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.45, "description": "NMS: suppress a box overlapping a better one of its class by more than this IoU."},
            "class_conf": {
                "type": "object",
                "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                "default": {},
                "description": "Per-class thresholds by class name, instead of conf.",
            },
            "classes": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True, "description": "Keep only these class names (all when absent)."},
            "roi": {
                "description": "Region of interest in pixels, [x0, y0, x1, y1] or a polygon [[x, y], ...]: detections whose box centre lies outside are dropped.",
                "oneOf": [
                    {"type": "array", "items": {**_NUMBER, "minimum": 0}, "minItems": 4, "maxItems": 4},
                    {"type": "array", "items": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}, "minItems": 3},
                ],
            },
            "roi_keep": {
                "enum": list(ROI_KEEP),
                "default": ROI_KEEP[0],
                "description": "centre: keep a detection whose box centre lies inside roi; box: only one whose whole box does (parts lie on the belt, so a box reaching over the belt's edge, such as an operator's hand, is dropped).",
            },
            "layout": {"enum": ["auto", *LAYOUTS], "default": "auto", "description": "Output layout; auto detects it from the output shape and model metadata."},
            "class_names": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "description": "Class names by id; must match the model's class count when the model states one."},
            "requests": {"type": "integer", "minimum": 1, "maximum": 32, "default": 2, "description": "Inferences in flight (AsyncInferQueue size)."},
            "max_detections": {"type": "integer", "minimum": 1, "default": 300},
            "timeout_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 10.0,
                "description": "An inference not finished after this long fails the node, naming the frame (a hung device is loud, not a silent stall of the line).",
            },
            "imgsz": {
                "description": "Input size for a model with a dynamic input: 640 or [height, width].",
                "oneOf": [
                    {"type": "integer", "minimum": 32},
                    {"type": "array", "items": {"type": "integer", "minimum": 32}, "minItems": 2, "maxItems": 2},
                ],
            },
            "precision": {"enum": list(PRECISIONS), "default": "auto", "description": "INFERENCE_PRECISION_HINT: auto = device default (bf16 on CPUs that have it); bf16 and f32 results differ slightly."},
        },
    }

    # -- compile time -------------------------------------------------------------------------------
    @classmethod
    def check_params(cls, params: Mapping[str, Any], line: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        roi = params.get("roi")
        if roi is not None and (problem := roi_problem(roi)):
            problems.append(("roi", problem))
        names = params.get("class_names")
        if names is not None and len(set(names)) != len(names):
            problems.append(("class_names", f"expected distinct names, got {list(names)}"))
        path, problem = model_file_problem(params["model"])
        if problem is not None:
            return [*problems, ("model", problem)]
        try:
            _, info = load_model(path, layout=params.get("layout", "auto"), class_names=names, imgsz=params.get("imgsz"))
        except ModelError as exc:
            return [*problems, ("model", str(exc))]
        for param in ("class_conf", "classes"):
            try:
                thresholds_for(info, params.get("conf", 0.25), params.get("class_conf") if param == "class_conf" else None, params.get("classes") if param == "classes" else None)
            except ModelError as exc:
                problems.append((param, str(exc).split(f"{param}: ", 1)[-1]))
        return problems

    # -- run time -----------------------------------------------------------------------------------
    async def open(self) -> None:
        import openvino as ov

        p = self.params
        self._detector: Detector | None = None
        self._queue: Any = None
        self._emitter: asyncio.Task[None] | None = None
        self._failure: tuple[int, BaseException] | None = None
        self._detector = await self.ctx.clock.run_in_thread(self._build)
        self.ctx.log.info("loaded %s on %s, %d requests", self._detector.info.describe(), p["device"], p["requests"])
        if p["device"] == "CPU" and self._detector.other_devices:
            self.ctx.log.info("OpenVINO also sees %s here; device: AUTO would use them", ", ".join(self._detector.other_devices))
        self._loop = asyncio.get_running_loop()
        # One spare request: OpenVINO recycles a request only after our callback returns, so with
        # exactly `requests` of them the next start_async would wait for that on the event loop.
        self._queue = ov.AsyncInferQueue(self._detector.compiled, p["requests"] + 1)
        self._queue.set_callback(self._on_done)
        # In flight: at most `requests` (a free request when we submit: start_async never blocks
        # the loop). Between arrival and emitted: at most 2 × requests (bounded when downstream is slow).
        self._in_flight = asyncio.Semaphore(p["requests"])
        self._room = asyncio.Semaphore(2 * p["requests"])
        self._pending: asyncio.Queue[tuple[Envelope, asyncio.Future[Any]] | None] = asyncio.Queue()
        # Model inputs are letterboxed into a ring of buffers that OpenVINO reads without a copy.
        # A buffer comes round again after 2 × requests + 2 frames; by then its frame has been
        # emitted (at most 2 × requests frames are between acquiring room and emitted).
        self._inputs = [self._detector.new_input() for _ in range(2 * p["requests"] + 2)]
        self._next_input = 0
        self._emitter = asyncio.create_task(self._emit_in_order(), name=f"lineguard-detector-emit-{self.ctx.node_id}")

    def _build(self) -> Detector:
        p = self.params
        return Detector(
            p["model"],
            device=p["device"],
            precision=p["precision"],
            layout=p["layout"],
            class_names=p.get("class_names"),
            imgsz=p.get("imgsz"),
            conf=p["conf"],
            iou=p["iou"],
            class_conf=p["class_conf"],
            classes=p.get("classes"),
            roi=p.get("roi"),
            roi_keep=p["roi_keep"],
            max_detections=p["max_detections"],
            requests=p["requests"],
        )

    async def process(self, port: str, envelope: Envelope) -> None:
        self._raise_failure()
        assert self._detector is not None
        buffer = self._inputs[self._next_input]
        self._next_input = (self._next_input + 1) % len(self._inputs)
        tensor, lb = self._detector.prepare(envelope.payload, buffer)
        await self._room.acquire()
        if self._in_flight.locked():  # every request busy: wait for OpenVINO, with the sim clock held
            async with self.ctx.clock.hold():
                await self._in_flight.acquire()
        else:
            await self._in_flight.acquire()
        self._raise_failure()
        future = self._loop.create_future()
        self._queue.start_async({0: tensor}, (future, tensor, lb), share_inputs=True)
        self._pending.put_nowait((envelope, future))

    def _on_done(self, request: Any, userdata: tuple[asyncio.Future[Any], Any, Any]) -> None:
        """OpenVINO's callback thread: decode here, off the event loop, then hand the result over."""
        future, _tensor, lb = userdata
        try:
            assert self._detector is not None
            result, error = self._detector.postprocess_request(request, lb), None
        except BaseException as exc:  # handed to the event loop, which fails the node with it
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: close() is waiting for us
            self._loop.call_soon_threadsafe(self._settle, future, result, error)

    def _settle(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self._in_flight.release()
        if future.done():  # cancelled by close()
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    async def _emit_in_order(self) -> None:
        """Emit results in the order frames arrived; hold the sim clock while inference runs."""
        clock = self.ctx.clock
        while (item := await self._pending.get()) is not None:
            envelope, future = item
            try:
                if not future.done():
                    async with clock.hold():
                        try:
                            async with asyncio.timeout(self.params["timeout_s"]):
                                await asyncio.shield(future)
                        except TimeoutError:
                            raise TimeoutError(f"OpenVINO did not finish the inference within timeout_s={self.params['timeout_s']:g} s ({self.params['device']})") from None
                detections = future.result()
                if self._failure is None:
                    await self.ctx.emit("detections", envelope.derive(detections))
            except Exception as exc:  # reported by the next process() or by flush()
                if self._failure is None:
                    self._failure = (envelope.frame_id, exc)
                if isinstance(exc, TimeoutError):  # a request that never comes back: let process() see the failure
                    self._in_flight.release()
            finally:
                self._room.release()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            frame_id, exc = self._failure
            raise RuntimeError(f"detection of frame {frame_id} failed: {type(exc).__name__}: {exc}") from exc

    async def flush(self) -> None:
        if self._emitter is not None:
            self._pending.put_nowait(None)
            await self._emitter
            self._emitter = None
        self._raise_failure()

    async def close(self) -> None:
        emitter, self._emitter = getattr(self, "_emitter", None), None
        if emitter is not None and not emitter.done():
            emitter.cancel()
            # asyncio.wait, not await-and-suppress: a cancellation of close() itself goes on
            await asyncio.wait({emitter})
        queue, self._queue = getattr(self, "_queue", None), None
        if queue is not None:
            await self.ctx.clock.run_in_thread(queue.wait_all)  # no callback may outlive the node
        self._detector = None

