"""``camera.opencv``: frames from a video file, an image folder, a USB camera or a network stream."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import Node, OutPort

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_STREAM = re.compile(r"^(rtsp|rtsps|http|https|udp|tcp|rtmp)://", re.I)

log = logging.getLogger("lineguard.nodes.camera_opencv")
_CLOSE_WAIT_S = 5.0  # close() waits this long for a read in progress before it releases the capture


def classify_source(source: Any) -> str:
    """``usb``, ``stream``, ``folder`` or ``file``."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return "usb"
    if _STREAM.match(str(source)):
        return "stream"
    return "folder" if Path(source).is_dir() else "file"


class OpenCvCamera(Node):
    """Frames from OpenCV: a video file, a folder of images (sorted by name), a USB camera index or
    a network stream (rtsp://, http://).

    Files and folders are paced at ``fps`` on the recipe's clock (a video's own rate by default;
    ``realtime: false`` delivers frames as fast as the graph takes them) and their end ends the run.
    A live source is read as fast as it delivers; wire it through a ``drop_oldest`` edge to keep
    only the newest frame when the graph is slower (the edge counts what it drops). A stream that fails is reopened with exponential
    backoff (``reconnect``); when the attempts run out the node fails loudly. A missing or
    unreadable source is an error naming it — at validate time when it is a missing file.

    Example:
        cam:
          type: camera.opencv
          params: {source: recordings/line3.mp4, fps: 30}
    """

    type_name = "camera.opencv"
    version = 1
    outputs = {"image": OutPort("image", "BGR uint8 frames, read-only")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["source"],
        "properties": {
            "source": {"type": ["string", "integer"], "description": "Video file, image folder, USB index (0) or stream URL."},
            "fps": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None, "description": "Pacing for files and folders (default: the video's rate; folders 10)."},
            "realtime": {"type": "boolean", "default": True, "description": "Pace files and folders on the clock."},
            "loop": {"type": "boolean", "default": False, "description": "Start a file or folder again at its end."},
            "max_frames": {"type": ["integer", "null"], "minimum": 1, "default": None},
            "reconnect": {
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "first_delay_s": {"type": "number", "exclusiveMinimum": 0, "default": 0.5},
                    "max_delay_s": {"type": "number", "exclusiveMinimum": 0, "default": 10.0},
                    "max_attempts": {"type": "integer", "minimum": 0, "default": 10, "description": "Consecutive failed reopenings before the node fails; 0 = never give up."},
                },
            },
        },
    }

    @classmethod
    def check_params(cls, params, line):
        source = params["source"]
        kind = classify_source(source)
        if kind == "file" and not Path(source).exists():
            return [("source", f"expected an existing video file, image folder, USB index or stream URL, got '{source}' (no such file)")]
        if kind == "folder" and not _folder_images(Path(source)):
            return [("source", f"expected a folder with images ({', '.join(IMAGE_SUFFIXES)}), got '{source}' (none found)")]
        return []

    async def open(self) -> None:
        self.kind = classify_source(self.params["source"])
        self._cap: cv2.VideoCapture | None = None
        # held by a read in its thread: the capture is released only when no read is in progress
        # (a cancelled read goes on in its thread; releasing under it can crash the driver)
        self._io = threading.Lock()
        if self.kind == "folder":
            self._files = _folder_images(Path(self.params["source"]))
            if not self._files:
                raise FileNotFoundError(f"camera source '{self.params['source']}': no images in the folder")
            self._fps = self.params["fps"] or 10.0
            return
        if self.kind == "file" and not Path(self.params["source"]).exists():
            raise FileNotFoundError(f"camera source '{self.params['source']}': no such file")
        self._cap = await self.ctx.clock.run_in_thread(self._open_capture)
        if self._cap is None:
            raise OSError(f"camera source '{self.params['source']}': OpenCV could not open it ({self._what()})")
        native = self._cap.get(cv2.CAP_PROP_FPS)
        self._fps = self.params["fps"] or (native if native and 0 < native < 1000 else 30.0)

    def _what(self) -> str:
        return {"file": "not a video OpenCV can decode", "usb": "no such camera or it is busy", "stream": "unreachable or not a video stream"}.get(self.kind, "")

    def _open_capture(self) -> cv2.VideoCapture | None:
        source = self.params["source"]
        cap = cv2.VideoCapture(int(source)) if self.kind == "usb" else cv2.VideoCapture(str(source))
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    async def run(self) -> None:
        if self.kind == "folder":
            await self._run_folder()
        elif self.kind == "file":
            await self._run_file()
        else:
            await self._run_live()

    async def _emit(self, frame_id: int, t_ns: int, image: np.ndarray) -> None:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        image = np.ascontiguousarray(image)
        image.flags.writeable = False
        await self.ctx.emit("image", Envelope(frame_id, t_ns, image))

    def _done(self, frame_id: int) -> bool:
        return self.params["max_frames"] is not None and frame_id >= self.params["max_frames"]

    async def _paced(self, frame_id: int) -> int:
        clock = self.ctx.clock
        if not self.params["realtime"]:
            return clock.now_ns()
        t_ns = round(frame_id * 1e9 / self._fps)
        await clock.sleep_until_ns(t_ns)
        return t_ns

    async def _run_folder(self) -> None:
        frame_id = 0
        while True:
            for path in self._files:
                if self._done(frame_id):
                    return
                t_ns = await self._paced(frame_id)
                image = await self.ctx.clock.run_in_thread(cv2.imread, str(path), cv2.IMREAD_COLOR)
                if image is None:
                    raise OSError(f"camera source '{self.params['source']}': cannot read image '{path.name}' (corrupt or not an image)")
                await self._emit(frame_id, t_ns, image)
                frame_id += 1
            if not self.params["loop"]:
                return

    async def _run_file(self) -> None:
        assert self._cap is not None
        frame_id = 0
        while not self._done(frame_id):
            ok, image = await self.ctx.clock.run_in_thread(self._read)
            if not ok:
                if self.params["loop"] and frame_id > 0:
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, image = await self.ctx.clock.run_in_thread(self._read)
                if not ok:
                    return  # end of the file ends the run
            t_ns = await self._paced(frame_id)
            await self._emit(frame_id, t_ns, image)
            frame_id += 1

    async def _run_live(self) -> None:
        clock = self.ctx.clock
        policy = self.params["reconnect"]
        frame_id = 0
        failures = 0
        delay = policy["first_delay_s"]
        while not self._done(frame_id):
            ok, image = (False, None)
            if self._cap is not None:
                ok, image = await clock.run_in_thread(self._read)
            if ok:
                failures, delay = 0, policy["first_delay_s"]
                await self._emit(frame_id, clock.now_ns(), image)
                frame_id += 1
                continue
            # The stream broke (or never came back): reopen with exponential backoff, loudly.
            failures += 1
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            if policy["max_attempts"] and failures > policy["max_attempts"]:
                raise ConnectionError(f"camera source '{self.params['source']}': lost, and {policy['max_attempts']} reconnection attempts failed")
            log.warning("camera source '%s' lost; reconnecting in %.1f s (attempt %d)", self.params["source"], delay, failures, extra={"node": self.ctx.node_id})
            self.ctx.count_drop("reconnect")
            await clock.sleep(delay)
            delay = min(delay * 2, policy["max_delay_s"])
            self._cap = await clock.run_in_thread(self._open_capture)

    def _read(self) -> tuple[bool, np.ndarray | None]:
        with self._io:
            cap = self._cap
            return cap.read() if cap is not None else (False, None)

    async def close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is None:
            return
        self._cap = None
        if not await self.ctx.clock.run_in_thread(self._io.acquire, True, _CLOSE_WAIT_S):
            log.warning("camera source '%s': a read still blocks after %g s; the capture is left open", self.params["source"], _CLOSE_WAIT_S, extra={"node": self.ctx.node_id})
            return
        try:
            cap.release()
        finally:
            self._io.release()


def _folder_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
