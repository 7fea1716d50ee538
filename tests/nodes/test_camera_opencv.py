"""camera.opencv: video files and image folders written in the test, read through a recipe."""

from __future__ import annotations

import asyncio
import textwrap
import threading

import cv2
import numpy as np
import pytest
import testnodes
from testnodes import COLLECTED, compile_text

from lineguard.nodes.camera_opencv import OpenCvCamera
from lineguard.runtime.clock import SimEventLoop
from lineguard.runtime.compiler import compile_document
from lineguard.runtime.errors import NodeFailure, RecipeError
from lineguard.runtime.executor import Executor, run_graph_sync
from lineguard.runtime.loader import load_text


@pytest.fixture(autouse=True)
def clean():
    testnodes.reset()
    yield
    testnodes.reset()


def frame(i: int, w: int = 160, h: int = 120) -> np.ndarray:
    """A frame whose brightness encodes its index, with a square that moves."""
    image = np.full((h, w, 3), 10 + 8 * i, np.uint8)
    image[40:80, 5 * i : 5 * i + 40] = (0, 0, 255)
    return image


def graph(params: str):
    return compile_text(textwrap.dedent(f"""\
        version: 1
        nodes:
          cam: {{type: camera.opencv, params: {params}}}
          sink: {{type: test.collect, in: {{in: cam.image}}}}
    """))


def test_reads_a_video_file_in_order_paced_at_its_fps_and_ends_with_it(tmp_path):
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (160, 120))
    for i in range(20):
        writer.write(frame(i))
    writer.release()

    report = run_graph_sync(graph(f"{{source: '{path}'}}"), "sim")
    got = COLLECTED["default"]
    assert report.status == "completed" and len(got) == 20
    assert [f for f, _, _, _ in got] == list(range(20))
    assert [t for _, t, _, _ in got][:3] == [0, 40_000_000, 80_000_000]  # 25 fps from the file
    assert got[0][2][1] == (120, 160, 3)  # shape of the BGR frames


def test_reads_an_image_folder_sorted_by_name_pixel_exact(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img_{i:03d}.png"), frame(i))
    (tmp_path / "notes.txt").write_text("not an image")

    from lineguard.runtime.compiler import compile_document
    from lineguard.runtime.loader import load_text

    class Keep(testnodes.Collect):
        type_name = "test.keep"
        inputs = {"in": testnodes.InPort("image")}

        async def process(self, port, envelope):
            COLLECTED["images"].append(envelope.payload)

    registry = testnodes.test_registry()
    registry.register(Keep)
    text = f"version: 1\nnodes:\n  cam: {{type: camera.opencv, params: {{source: '{tmp_path}', fps: 5}}}}\n  sink: {{type: test.keep, in: {{in: cam.image}}}}\n"
    run_graph_sync(compile_document(load_text(text, "r.yaml"), registry), "sim")
    images = COLLECTED["images"]
    assert len(images) == 5
    assert all(np.array_equal(img, frame(i)) for i, img in enumerate(images))


def test_a_missing_file_is_a_compile_error_naming_it(tmp_path):
    with pytest.raises(RecipeError, match=r"recipe.yaml:3:\d+: node 'cam' param 'source': expected an existing video file, image folder, USB index or stream URL, got '.*nope.mp4' \(no such file\)"):
        graph(f"{{source: '{tmp_path}/nope.mp4'}}")


def test_a_file_opencv_cannot_decode_fails_the_start_naming_it(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"this is not a video" * 100)
    with pytest.raises(NodeFailure, match=r"node 'cam' \(camera.opencv@v1\) failed: OSError: camera source '.*broken.mp4': OpenCV could not open it \(not a video OpenCV can decode\)"):
        run_graph_sync(graph(f"{{source: '{path}'}}"), "sim")


def test_a_corrupt_image_in_a_folder_is_named(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), frame(0))
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(NodeFailure, match=r"node 'cam' \(camera.opencv@v1\) failed: OSError: camera source '.*': cannot read image 'b.png' \(corrupt or not an image\)"):
        run_graph_sync(graph(f"{{source: '{tmp_path}'}}"), "sim")
    assert len(COLLECTED["default"]) == 1  # the good frame before it went through


def test_a_folder_without_images_is_a_compile_error(tmp_path):
    with pytest.raises(RecipeError, match=r"param 'source': expected a folder with images .*, got '.*' \(none found\)"):
        graph(f"{{source: '{tmp_path}'}}")


def test_an_unreachable_stream_fails_the_start_naming_it(free_port):
    g = graph(f"{{source: 'http://127.0.0.1:{free_port}/line.avi'}}")
    with pytest.raises(NodeFailure, match=r"OSError: camera source 'http://127.0.0.1:\d+/line.avi': OpenCV could not open it \(unreachable or not a video stream\)"):
        run_graph_sync(g, "sim")


@pytest.fixture
def video_server(tmp_path):
    """A real HTTP server on loopback serving a 20-frame MJPG video; each request serves it whole,
    so a client that reads to the end sees the stream break and must reconnect."""
    import functools
    import http.server
    import threading

    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (160, 120))
    for i in range(20):
        writer.write(frame(i))
    writer.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = 0
    thread = threading.Thread(target=server.serve_forever, name="video-server")
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/line.avi"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_stream_that_breaks_is_reopened_and_the_frames_go_on(video_server):
    g = graph(f"{{source: '{video_server}', max_frames: 30, reconnect: {{first_delay_s: 0.5, max_attempts: 3}}}}")
    report = run_graph_sync(g, "sim")
    cam = next(n for n in report.nodes if n["node"] == "cam")
    assert report.status == "completed"
    assert cam["out"]["image"] == 30  # 20 before the break, 10 after reconnecting
    assert cam["dropped"] == {"reconnect": 1}
    assert [f for f, _, _, _ in COLLECTED["default"]] == list(range(30))


def test_sources_are_told_apart_by_their_form(tmp_path):
    from lineguard.nodes.camera_opencv import classify_source

    assert classify_source(0) == "usb" and classify_source("2") == "usb"
    assert classify_source("rtsp://127.0.0.1:8554/line") == "stream"
    assert classify_source(str(tmp_path)) == "folder"
    assert classify_source(str(tmp_path / "line.mp4")) == "file"


class BlockingCapture:
    """A capture whose second read blocks (a stream whose driver hangs) until ``unblock`` is set;
    it records the order of what happened to it."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.unblock = threading.Event()
        self.reads = 0
        self.on_block = lambda: None  # called (in the read's thread) when the read blocks

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 30.0

    def read(self):
        self.reads += 1
        if self.reads > 1:
            self.events.append("read blocks")
            self.on_block()
            self.unblock.wait(timeout=30)
            self.events.append("read returns")
        return True, frame(0)

    def release(self) -> None:
        self.events.append("release")


class HangingStreamCamera(OpenCvCamera):
    type_name = "test.hanging_stream"
    capture = BlockingCapture()

    def _open_capture(self):
        return HangingStreamCamera.capture

    async def close(self) -> None:
        # the hung read comes back only once close() has begun: before then, nothing may release
        asyncio.get_running_loop().call_soon(HangingStreamCamera.capture.unblock.set)
        await super().close()


def test_a_capture_is_released_only_after_a_hung_read_has_returned():
    # given a stream whose driver hangs in a read, and the line stopped meanwhile
    HangingStreamCamera.capture = capture = BlockingCapture()
    registry = testnodes.test_registry()
    registry.register(HangingStreamCamera)
    g = compile_document(load_text("version: 1\nnodes:\n  cam: {type: test.hanging_stream, params: {source: 'rtsp://127.0.0.1:9/line'}}\n  sink: {type: test.collect, in: {in: cam.image}}\n", "line.yaml"), registry)
    executor = Executor(g)

    async def main():
        loop = asyncio.get_running_loop()
        capture.on_block = lambda: loop.call_soon_threadsafe(executor.stop, "the operator stopped the line")
        return await executor.run()

    with asyncio.Runner(loop_factory=SimEventLoop) as runner:
        report = runner.run(main())
    # then the capture was released after the read came back, not under it
    assert report.status == "stopped"
    assert capture.events == ["read blocks", "read returns", "release"]
