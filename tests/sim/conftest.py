"""Fixtures for the virtual PLC tests: a scripted vision side (the oracle) and port helpers.

The oracle knows the ground truth and talks to the PLC through a *link* (Modbus or OPC UA, defined
in each protocol's test module) with the contract of docs/plc-map.md:

- heartbeat: a new value every ``heartbeat_period_ms`` (until ``heartbeat_until_ns``);
- pulse mode: fires the gate exactly when a defective part's centre reaches the gate;
- handshake mode: when a part's centre crosses the camera axis it reads the PLC's encoder and
  sends part id, verdict, that encoder count and the part's position in counts, then a new strobe.

Every protocol round trip is wrapped in ``clock.hold()`` so that on the sim loop no simulated time
passes while the bytes travel.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from lineguard.runtime.clock import Clock, SimEventLoop
from lineguard.sim.truth import BeltGeometry, PartTruth


class PlcLink(Protocol):
    async def heartbeat(self, value: int) -> None: ...
    async def fire_gate(self) -> None: ...
    async def read_encoder(self) -> int: ...
    async def send_command(
        self, *, strobe: int, part_id: int, verdict: int, encoder_at_capture: int, position_at_capture_counts: int
    ) -> Any: ...  # .ack, .part_id, .status, .arrival_count


class ScriptedVision:
    """A perfect (or silent) vision side, driven by the ground truth."""

    def __init__(
        self,
        link: PlcLink,
        geometry: BeltGeometry,
        parts: Sequence[PartTruth],
        clock: Clock,
        *,
        mode: str,
        send_commands: bool = True,
        heartbeat_period_ms: float = 100.0,
        heartbeat_until_ns: int | None = None,
    ) -> None:
        self.link = link
        self.geometry = geometry
        self.parts = sorted(parts, key=lambda p: -p.x0_mm)
        self.clock = clock
        self.mode = mode
        self.send_commands = send_commands
        self.heartbeat_period_ms = heartbeat_period_ms
        self.heartbeat_until_ns = heartbeat_until_ns
        self.acks: list[Any] = []

    async def run(self, until: Awaitable[None]) -> list[Any]:
        """Heartbeat and command until ``until`` completes (e.g. ``plc.wait_all_scored()``)."""
        heartbeat = asyncio.create_task(self._heartbeat())
        commands = asyncio.create_task(self._commands())
        try:
            await until
            await commands
        finally:
            for task in (heartbeat, commands):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return self.acks

    async def _heartbeat(self) -> None:
        value = 1
        while self.heartbeat_until_ns is None or self.clock.now_ns() < self.heartbeat_until_ns:
            async with self.clock.hold():
                await self.link.heartbeat(value)
            value = value % 30000 + 1
            await self.clock.sleep(self.heartbeat_period_ms / 1000)

    async def _commands(self) -> None:
        if not self.send_commands:
            return
        g = self.geometry
        strobe = 0
        for part in self.parts:
            if self.mode == "pulse":
                if part.defective:
                    await self.clock.sleep_until_ns(part.t_at_reject_ns(g))
                    async with self.clock.hold():
                        await self.link.fire_gate()
                continue
            await self.clock.sleep_until_ns(part.t_at_position_ns(g, 0.0))
            async with self.clock.hold():
                encoder = await self.link.read_encoder()
                position_counts = round(part.position_mm(g, self.clock.now_ns()) * g.encoder_counts_per_mm)
                strobe += 1
                self.acks.append(
                    await self.link.send_command(
                        strobe=strobe,
                        part_id=part.part_id,
                        verdict=2 if part.defective else 1,
                        encoder_at_capture=encoder,
                        position_at_capture_counts=position_counts,
                    )
                )


@pytest.fixture
def scripted_vision() -> type[ScriptedVision]:
    return ScriptedVision


@pytest.fixture(scope="session")
def doc_text() -> str:
    """docs/plc-map.md, the contract the servers implement."""
    return (Path(__file__).resolve().parents[2] / "docs" / "plc-map.md").read_text(encoding="utf-8")


@pytest.fixture
def sim_runner() -> Iterator[asyncio.Runner]:
    """An asyncio runner on simulated time: ``sim_runner.run(coro)``."""
    with asyncio.Runner(loop_factory=SimEventLoop) as runner:
        yield runner


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pick_free_port() -> Callable[[], int]:
    """A function returning a port on 127.0.0.1 that was free a moment ago (for servers that need one)."""
    return find_free_port


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])
