"""Project-wide fixtures: no leaked tasks or threads after any test; free loopback ports."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading

import pytest

# `import openvino` starts a non-daemon telemetry thread once per process: import it at collection
# so the first test that happens to load a model is not blamed for a leaked thread.
import openvino  # noqa: F401


def _pending_lineguard_tasks() -> list[asyncio.Task]:
    gc.collect()
    leaked = []
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance also reads obj.__class__, which some libraries'
        # deprecated module attributes answer with a warning (hundreds of them under torch)
        if issubclass(type(obj), asyncio.Task) and not obj.done():
            name = obj.get_name()
            code = getattr(obj.get_coro(), "cr_code", None)
            origin = code.co_filename if code else ""
            if name.startswith("lineguard") or "/lineguard" in origin or "/runtime/" in origin or "/nodes/" in origin or "/sim/" in origin:
                leaked.append(obj)
    return leaked


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Every test ends with the threads it started stopped and no lineguard task left pending."""
    threads_before = {t.ident for t in threading.enumerate()}
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    for t in threading.enumerate():
        if t.ident not in threads_before and t.is_alive() and not t.daemon:
            t.join(timeout=5)  # a worker finishing its last item
    new_threads = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive() and not t.daemon]
    assert not new_threads, f"threads left running: {[t.name for t in new_threads]}"
    leaked = [t for t in _pending_lineguard_tasks() if t.get_loop().is_closed()]
    assert not leaked, f"tasks left pending on a closed loop: {[t.get_name() for t in leaked]}"


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return free_tcp_port()
