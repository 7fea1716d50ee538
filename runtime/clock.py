"""The one injected clock.

Everything that needs time (sources pacing frames, deadlines, heartbeats, the virtual PLC) asks a
:class:`Clock` for ``now_ns()`` and sleeps with ``sleep``/``sleep_until_ns``. The clock reads the
running event loop's time, so ordinary ``asyncio`` timers (``asyncio.sleep``, ``wait_for``,
``timeout``) inside libraries stay consistent with it.

Two kinds of clock, chosen by the loop the graph runs on:

- ``wall``: an ordinary asyncio loop; real time.
- ``sim``: a :class:`SimEventLoop`. Its time starts at 0 and never waits for real: whenever nothing
  is ready to run and no real I/O is awaited, it jumps straight to the next timer. Runs are as fast
  as the CPU allows and, for code without real I/O, deterministic.

Real I/O under the sim clock: a socket answer or a worker thread does not arrive "instantly" in real
time, and the loop would jump past it. Wrap such awaits in ``async with clock.hold():`` (or use
:meth:`Clock.run_in_thread`) so that the sim loop waits for real while the hold is open; the I/O
then takes zero simulated time.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

NS_PER_S = 1_000_000_000
# Under a hold, real I/O that has not answered after this long (real seconds) lets simulated time
# move on again, so that timeouts on a dead peer still fire.
HOLD_STALL_S = 1.0
T = TypeVar("T")


class _VirtualSelector:
    """Wraps a real selector: instead of blocking until the next timer, advance virtual time."""

    def __init__(self, real: selectors.BaseSelector, loop: "SimEventLoop") -> None:
        self._real = real
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing scheduled: only I/O or a thread can wake us.
            return self._real.select(None)
        loop = self._loop
        if loop._holds > 0:
            # Real I/O is awaited: wait for it for real, and take no simulated time for it, unless
            # it stalls (a dead peer) -- then let simulated timers (timeouts) fire.
            started = time.perf_counter()
            ready = self._real.select(min(timeout, 0.05))
            loop._stalled_real_s += time.perf_counter() - started
            if ready:
                loop._stalled_real_s = 0.0
                return ready
            if loop._stalled_real_s < HOLD_STALL_S:
                return []
        loop._stalled_real_s = 0.0
        loop._advance(timeout)
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class SimEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on simulated time: starts at 0 s and jumps to the next timer when idle."""

    def __init__(self) -> None:
        self._virtual_s = 0.0
        self._holds = 0
        self._stalled_real_s = 0.0
        super().__init__(selector=_VirtualSelector(selectors.DefaultSelector(), self))  # type: ignore[arg-type]

    def time(self) -> float:
        return self._virtual_s

    def _advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_s += seconds

    def busy(self, seconds: float) -> None:
        """Hold the loop for ``seconds`` of simulated time, as a long computation holds it in real
        time: the clock moves on and no other callback or timer runs until the caller returns."""
        self._advance(seconds)


def run_sim(coro_factory: Callable[[], Any]) -> Any:
    """Run ``coro_factory()`` to completion on a fresh :class:`SimEventLoop`."""
    with asyncio.Runner(loop_factory=SimEventLoop) as runner:
        return runner.run(coro_factory())


class Clock:
    """Time as the graph sees it: nanoseconds since the clock was started, on the running loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._origin_s = self._loop.time()

    def restart(self) -> None:
        """Make now time 0 (the executor does this when data starts to flow, after every node opened)."""
        self._origin_s = self._loop.time()

    @property
    def kind(self) -> str:
        return "sim" if isinstance(self._loop, SimEventLoop) else "wall"

    def now_ns(self) -> int:
        return round((self._loop.time() - self._origin_s) * NS_PER_S)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_until_ns(self, t_ns: int) -> None:
        delay_s = (t_ns - self.now_ns()) / NS_PER_S
        # Always yield once, so a source that is never late still lets the rest of the graph run.
        await asyncio.sleep(delay_s if delay_s > 0 else 0)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """While open, a sim loop waits for real I/O instead of jumping ahead. No-op on wall time."""
        loop = self._loop
        if not isinstance(loop, SimEventLoop):
            yield
            return
        loop._holds += 1
        try:
            yield
        finally:
            loop._holds -= 1

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn(*args)`` in the default thread pool; zero simulated time on a sim loop."""
        async with self.hold():
            return await self._loop.run_in_executor(None, fn, *args)


def wall_time_ns() -> int:
    """Wall-clock time for audit records (not for scheduling)."""
    return time.time_ns()
