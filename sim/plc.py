"""The virtual PLC of the simulated line: reject gate, shift register, heartbeat watchdog, scoring.

This module is the PLC's logic, independent of any protocol. :mod:`lineguard.sim.plc_modbus` and
:mod:`lineguard.sim.plc_opcua` put it behind real Modbus TCP and OPC UA servers; the register and
node maps, and both reject modes step by step, are in ``docs/plc-map.md``.

The PLC follows the injected clock (:class:`lineguard.runtime.clock.Clock`): time 0 is encoder
count 0, and every part's centre is at ``x0_mm + travel`` (see :mod:`lineguard.sim.truth`). All
its timers are asyncio timers on the running loop, so it runs in real time on an ordinary loop and
deterministically, as fast as the CPU allows, on a :class:`~lineguard.runtime.clock.SimEventLoop`.

The gate stands at ``geometry.reject_distance_mm`` and covers ``geometry.gate_window_mm`` of belt
centred on it. A firing keeps the gate active for ``gate_pulse_ms``; every part whose centre is
inside the window at some moment while the gate is active is rejected. What triggers a firing:

- ``pulse`` mode: the vision side fires the gate itself (:meth:`VirtualPlc.fire_gate`).
- ``handshake`` mode: the vision side sends a verdict with the encoder count at capture
  (:meth:`VirtualPlc.strobe`); the PLC acks it, keeps it in its shift register and fires the gate
  when the encoder reaches the part's arrival count (:func:`arrival_count`).
- ``handshake`` mode, positive release (``no_verdict="reject"``, the default): a part whose centre
  reaches the gate without an accepted verdict for it is rejected. A verdict that came too late, a
  refused one, or none at all (the part was never tracked) can never let a part through unseen.
- Either mode: the heartbeat watchdog. No heartbeat change for ``heartbeat_timeout_ms`` ⇒
  fail-safe: every part whose centre reaches the gate is rejected until the heartbeat changes again.

Scoring is physical: what happened to each real part, whatever ids the vision side used. The
timing error of a firing is ``part centre − gate`` (mm, + = the part was already past the gate) at
the moment the gate fired, for the part nearest to the gate then (its *target*).

Example (on the sim loop)::

    async def main():
        clock = Clock()
        geometry = BeltGeometry(belt_speed_mm_s=400, reject_distance_mm=800)
        parts = periodic_parts(count=10, defect_rate=0.3, seed=1)
        async with VirtualPlc(geometry, parts, clock, heartbeat_timeout_ms=0) as plc:
            for part in parts:
                if part.defective:
                    await clock.sleep_until_ns(part.t_at_reject_ns(geometry))
                    plc.fire_gate()
            await plc.wait_all_scored()
        return plc.report()

    report = run_sim(main)
    assert report.summary.escapes == 0
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import errno
import heapq
import itertools
import json
import math
import random
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rich.console import Group
from rich.table import Table

from lineguard.runtime.clock import Clock
from lineguard.sim.truth import DEFECT_KINDS, NS_PER_S, BeltGeometry, DefectTruth, PartTruth

Mode = Literal["pulse", "handshake"]
MODES: tuple[str, ...] = ("pulse", "handshake")
NoVerdict = Literal["reject", "pass"]
NO_VERDICT: tuple[str, ...] = ("reject", "pass")
NS_PER_MS = 1_000_000


class Verdict(enum.IntEnum):
    """The verdict word of a handshake command."""

    PASS = 1
    REJECT = 2


class AckStatus(enum.IntEnum):
    """What the PLC did with a handshake command (the ack status word)."""

    NONE = 0  # nothing acked yet
    ACCEPTED = 1  # in the shift register; the gate fires (reject) or not (pass) at the arrival count
    LATE = 2  # the arrival count had already passed: the part is rejected (positive release) or goes as it goes
    INVALID_VERDICT = 3  # verdict was neither 1 nor 2: taken as REJECT (fail safe), in the shift register
    SHIFT_REGISTER_FULL = 4  # refused: the shift register holds shift_register_size entries


@dataclass(frozen=True)
class HandshakeCommand:
    """One handshake command as the vision side wrote it (see docs/plc-map.md)."""

    strobe: int
    part_id: int
    verdict: int
    encoder_at_capture: int
    position_at_capture_counts: int


@dataclass(frozen=True)
class HandshakeAck:
    """The PLC's answer to a handshake command: ack = the strobe it answers."""

    strobe: int
    part_id: int
    status: AckStatus
    arrival_count: int


@dataclass(frozen=True)
class PlcStatus:
    """What the PLC shows the vision side, at one moment."""

    mode: str
    encoder: int
    gate_active: bool
    fail_safe: bool
    shift_register_depth: int
    ack: HandshakeAck | None


class PlcPortInUseError(OSError):
    """A PLC server could not listen because its port is taken. ``parameter`` names the setting."""

    def __init__(self, parameter: str, port: int, host: str) -> None:
        super().__init__(
            f"{parameter} {port} is already in use on {host}: stop whatever listens there or choose another port"
        )
        self.parameter = parameter
        self.port = port
        self.host = host


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (checked by binding it for a moment)."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def reject_distance_counts(geometry: BeltGeometry) -> int:
    """The reject distance in encoder counts, as the PLC holds it."""
    return round(geometry.reject_distance_mm * geometry.encoder_counts_per_mm)


def arrival_count(geometry: BeltGeometry, encoder_at_capture: int, position_at_capture_counts: int) -> int:
    """Encoder count at which a part's centre reaches the gate.

    ``position_at_capture_counts`` is the part centre's belt position (from the camera axis,
    + downstream) when the encoder read ``encoder_at_capture``, in encoder counts::

        arrival = encoder_at_capture + reject_distance_counts - position_at_capture_counts
    """
    return encoder_at_capture + reject_distance_counts(geometry) - position_at_capture_counts


# ---------------------------------------------------------------------------------------------
# Report


Outcome = Literal["correct_reject", "correct_pass", "escape", "false_reject"]


@dataclass(frozen=True)
class PartScore:
    """What happened to one real part at the gate."""

    part_id: int
    part_type: str
    defective: bool
    defect_kinds: tuple[str, ...]
    rejected: bool
    outcome: Outcome
    reject_source: str | None  # "command" (pulse or shift register), "fail_safe", "no_verdict", or None
    timing_error_mm: float | None  # centre − gate when the gate fired for it; None if never targeted
    commands: int  # reject firings and handshake commands that targeted this part
    late_commands: int  # of which came after the part had passed the gate
    fail_safe: bool  # rejected by the heartbeat fail-safe
    t_at_reject_ns: int  # when the centre passed the gate


@dataclass(frozen=True)
class CommandRecord:
    """One command the PLC received (pulse or handshake), or one firing of its own (fail-safe, no verdict)."""

    t_ns: int
    kind: str  # "pulse", "handshake", "fail_safe", "no_verdict"
    status: str  # "fired", "late", "accepted", "invalid_verdict", "shift_register_full"
    part_id: int | None  # the vision side's id (handshake), else None
    verdict: int | None
    target_part_id: int | None  # the real part nearest to the gate when this fired / would fire
    error_mm: float | None  # target centre − gate at that moment


@dataclass(frozen=True)
class PlcSummary:
    parts: int  # scored: past the gate or rejected
    pending: int  # not yet past the gate
    defective: int
    good: int
    rejected: int
    passed: int
    correct_rejects: int
    correct_passes: int
    escapes: int
    false_rejects: int
    fail_safe_rejects: int
    fail_safe_episodes: int
    no_verdict_rejects: int  # handshake, positive release: reached the gate without an accepted verdict
    late_commands: int
    misfires: int  # firings that rejected no part
    refused_commands: int  # shift register full
    timing_error_mean_mm: float | None  # signed: + = the gate fires late on average
    timing_error_mean_abs_mm: float | None
    timing_error_max_abs_mm: float | None
    # how late the PLC's own timers ran (real time: they share the loop with the vision side); the
    # gate still fires at the encoder count it was given, as a PLC's would
    timer_lag_max_ms: float = 0.0


@dataclass(frozen=True)
class PlcReport:
    """The virtual PLC's score of a run: one :class:`PartScore` per part, a summary, the command log."""

    mode: str
    geometry: BeltGeometry
    gate_pulse_ms: float
    heartbeat_timeout_ms: float
    parts: tuple[PartScore, ...]
    summary: PlcSummary
    commands: tuple[CommandRecord, ...]
    no_verdict: str = "pass"  # "reject": positive release (handshake), a part without a verdict is rejected

    def part(self, part_id: int) -> PartScore:
        for score in self.parts:
            if score.part_id == part_id:
                return score
        raise KeyError(f"part {part_id} is not scored (pending or unknown)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "geometry": asdict(self.geometry),
            "gate_pulse_ms": self.gate_pulse_ms,
            "heartbeat_timeout_ms": self.heartbeat_timeout_ms,
            "no_verdict": self.no_verdict,
            "summary": asdict(self.summary),
            "parts": [asdict(p) for p in self.parts],
            "commands": [asdict(c) for c in self.commands],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary_table(self) -> Table:
        s = self.summary
        table = Table(title=f"virtual PLC ({self._setup()}) — summary", show_header=False)
        table.add_column("what")
        table.add_column("value", justify="right")
        rows: list[tuple[str, Any]] = [
            ("parts scored", s.parts),
            ("pending", s.pending),
            ("defective / good", f"{s.defective} / {s.good}"),
            ("rejected / passed", f"{s.rejected} / {s.passed}"),
            ("escapes (defective passed)", s.escapes),
            ("false rejects", s.false_rejects),
            ("fail-safe rejects", s.fail_safe_rejects),
            ("fail-safe episodes", s.fail_safe_episodes),
            ("rejected for want of a verdict", s.no_verdict_rejects),
            ("late commands", s.late_commands),
            ("misfires", s.misfires),
            ("refused commands", s.refused_commands),
            ("timing error mean (mm)", _fmt_mm(s.timing_error_mean_mm)),
            ("timing error mean |.| (mm)", _fmt_mm(s.timing_error_mean_abs_mm)),
            ("timing error max |.| (mm)", _fmt_mm(s.timing_error_max_abs_mm)),
            ("own timers late by, max (ms)", f"{s.timer_lag_max_ms:.1f}"),
        ]
        for name, value in rows:
            style = "bold red" if name.startswith("escapes") and s.escapes else None
            table.add_row(name, str(value), style=style)
        return table

    def parts_table(self) -> Table:
        table = Table(title=f"virtual PLC ({self._setup()}) — parts")
        for name, justify in (
            ("part", "right"),
            ("type", "left"),
            ("defect", "left"),
            ("rejected", "left"),
            ("outcome", "left"),
            ("error mm", "right"),
            ("late", "right"),
            ("rejected by", "left"),
        ):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        styles = {"escape": "bold red", "false_reject": "yellow"}
        for p in self.parts:
            table.add_row(
                str(p.part_id),
                p.part_type,
                ", ".join(p.defect_kinds) if p.defective else "no",
                "yes" if p.rejected else "no",
                p.outcome,
                _fmt_mm(p.timing_error_mm),
                str(p.late_commands),
                _REJECT_SOURCE.get(p.reject_source or "", ""),
                style=styles.get(p.outcome),
            )
        return table

    def _setup(self) -> str:
        return f"{self.mode}, positive release" if self.no_verdict == "reject" else self.mode

    def __rich__(self) -> Group:
        return Group(self.parts_table(), self.summary_table())


_REJECT_SOURCE = {"command": "verdict", "fail_safe": "fail-safe", "no_verdict": "no verdict"}


def _fmt_mm(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


# ---------------------------------------------------------------------------------------------
# The PLC


@dataclass
class _PartState:
    part: PartTruth
    t_arrive_ns: int  # centre at the gate
    t_depart_ns: int  # centre at the window's downstream edge: nothing can reject it any more
    rejected_by: str | None = None
    t_rejected_ns: int | None = None
    error_mm: float | None = None  # of the firing that rejected it, else of the first command that targeted it
    commands: int = 0
    late_commands: int = 0
    arrived: bool = False  # its centre has reached the gate (and positive release has judged it)
    scored: bool = False


@dataclass
class _ShiftEntry:
    strobe: int
    part_id: int
    verdict: Verdict
    arrival_count: int
    t_due_ns: int  # when the encoder reaches arrival_count
    handle: asyncio.TimerHandle | None = None
    target_index: int | None = None


@dataclass(order=True)
class _LineEvent:
    t_ns: int
    seq: int
    kind: int = field(compare=False)  # _ARRIVE or _DEPART
    index: int = field(compare=False)


_ARRIVE, _DEPART = 0, 1


class VirtualPlc:
    """The PLC side of the simulated line (see the module docstring and docs/plc-map.md).

    Use it as an async context manager (or call :meth:`start`/:meth:`stop`) inside the running
    loop of ``clock``. Protocol servers call :meth:`write_heartbeat`, :meth:`fire_gate` and
    :meth:`strobe`, and read :meth:`encoder` and :meth:`status`; they may :meth:`subscribe` to be
    told when the status changes by itself (gate on/off, fail-safe on/off, shift register).
    """

    def __init__(
        self,
        geometry: BeltGeometry,
        parts: Sequence[PartTruth],
        clock: Clock,
        *,
        mode: Mode = "pulse",
        heartbeat_timeout_ms: float = 500.0,
        gate_pulse_ms: float = 50.0,
        shift_register_size: int = 64,
        no_verdict: NoVerdict = "reject",
        ack_delay_ms: float = 0.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if no_verdict not in NO_VERDICT:
            raise ValueError(f"no_verdict: expected one of {NO_VERDICT}, got {no_verdict!r}")
        if not heartbeat_timeout_ms >= 0:
            raise ValueError(f"heartbeat_timeout_ms: expected >= 0 (0 = watchdog off), got {heartbeat_timeout_ms}")
        if not gate_pulse_ms > 0:
            raise ValueError(f"gate_pulse_ms: expected > 0, got {gate_pulse_ms}")
        if shift_register_size < 1:
            raise ValueError(f"shift_register_size: expected >= 1, got {shift_register_size}")
        if not ack_delay_ms >= 0:
            raise ValueError(f"ack_delay_ms: expected >= 0, got {ack_delay_ms}")
        self.geometry = geometry
        # a real PLC takes a command on its next scan: its ack shows this long after the strobe
        self.ack_delay_ms = float(ack_delay_ms)
        self.clock = clock
        self.mode: str = mode
        self.heartbeat_timeout_ms = float(heartbeat_timeout_ms)
        self.gate_pulse_ms = float(gate_pulse_ms)
        self.shift_register_size = shift_register_size
        # positive release: handshake mode only (pulse mode has no verdicts to wait for)
        self.no_verdict: str = no_verdict if mode == "handshake" else "pass"

        self._parts: list[_PartState] = []
        self._part_ids: set[int] = set()
        self._unscored = 0
        self._by_x0: list[tuple[float, int]] = []  # (x0_mm, index), ascending x0
        self._events: list[_LineEvent] = []
        self._seq = itertools.count()
        self._line_handle: asyncio.TimerHandle | None = None
        self._line_handle_t_ns: int | None = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._all_scored: asyncio.Event | None = None
        self._listeners: list[Callable[[], None]] = []

        self._gate_until_ns = -1
        self._gate_handle: asyncio.TimerHandle | None = None
        self._heartbeat_value: int = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._fail_safe = False
        self._fail_safe_episodes = 0
        self._shift_register: list[_ShiftEntry] = []
        # entries already shifted out, for positive release: a verdict due a hair before its part's
        # centre reaches the gate still releases it
        self._shifted_out: deque[_ShiftEntry] = deque(maxlen=shift_register_size)
        self._last_ack: HandshakeAck | None = None
        self._shown_ack: HandshakeAck | None = None  # what the ack registers show (ack_delay_ms after)
        self._ack_handles: deque[asyncio.TimerHandle] = deque()  # acks not shown yet, oldest first
        self._commands: list[CommandRecord] = []
        self._misfires = 0
        self._refused = 0
        self._timer_lag_max_ns = 0
        self.add_parts(parts)

    # -- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> VirtualPlc:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the watchdog and the part timers on the running loop (the clock's loop)."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._all_scored = asyncio.Event()
        self._update_all_scored()
        self._arm_watchdog()
        self._schedule_line()

    def stop(self) -> None:
        """Cancel every timer. Parts not yet past the gate stay pending in :meth:`report`."""
        self._running = False
        for handle in (self._line_handle, self._gate_handle, self._watchdog):
            if handle is not None:
                handle.cancel()
        self._line_handle = self._gate_handle = self._watchdog = None
        for entry in self._shift_register:
            if entry.handle is not None:
                entry.handle.cancel()
        self._shift_register.clear()
        while self._ack_handles:
            self._ack_handles.popleft().cancel()

    def add_parts(self, parts: Iterable[PartTruth]) -> None:
        """Add parts to the line (e.g. as a conveyor spawns them). Part ids must be unique."""
        for part in parts:
            if part.part_id in self._part_ids:
                raise ValueError(f"parts: part_id {part.part_id} appears twice")
            self._part_ids.add(part.part_id)
            self._unscored += 1
            index = len(self._parts)
            state = _PartState(
                part,
                t_arrive_ns=part.t_at_reject_ns(self.geometry),
                t_depart_ns=part.t_at_position_ns(
                    self.geometry, self.geometry.reject_distance_mm + self.geometry.gate_window_mm / 2
                ),
            )
            self._parts.append(state)
            bisect.insort(self._by_x0, (part.x0_mm, index))
            heapq.heappush(self._events, _LineEvent(state.t_arrive_ns, next(self._seq), _ARRIVE, index))
            heapq.heappush(self._events, _LineEvent(state.t_depart_ns, next(self._seq), _DEPART, index))
        if self._running:
            self._update_all_scored()
            self._schedule_line()

    async def wait_all_scored(self) -> None:
        """Return once every part is past the gate (or rejected) and scored."""
        if self._all_scored is None:
            raise RuntimeError("VirtualPlc.wait_all_scored: start the PLC first")
        await self._all_scored.wait()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` whenever the status changes by itself; returns an unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- what the vision side reads ----------------------------------------------------------------
    def encoder(self) -> int:
        return self.geometry.encoder_at(self.clock.now_ns())

    @property
    def gate_active(self) -> bool:
        return self.clock.now_ns() < self._gate_until_ns

    @property
    def fail_safe(self) -> bool:
        return self._fail_safe

    def status(self) -> PlcStatus:
        return PlcStatus(
            mode=self.mode,
            encoder=self.encoder(),
            gate_active=self.gate_active,
            fail_safe=self._fail_safe,
            shift_register_depth=len(self._shift_register),
            ack=self._shown_ack,
        )

    # -- what the vision side writes ---------------------------------------------------------------
    def write_heartbeat(self, value: int) -> None:
        """The heartbeat word was written. Any change counts as a beat and ends a fail-safe."""
        if value == self._heartbeat_value:
            return
        # parts that reached the gate while the fail-safe held were rejected, however late the timer runs
        self._catch_up()
        self._heartbeat_value = value
        if self._fail_safe:
            self._fail_safe = False
            self._notify()
        self._arm_watchdog()

    def fire_gate(self) -> None:
        """Pulse mode: the vision side fires the gate now."""
        self._require_mode("pulse", "fire_gate")
        self._catch_up()
        now = self.clock.now_ns()
        target, error = self._target_at(now)
        swept = self._fire(now, "command")
        status = "fired"
        if target is not None:
            state = self._parts[target]
            state.commands += 1
            if state.error_mm is None:
                state.error_mm = error
            if target not in swept and error is not None and error > 0:
                state.late_commands += 1
                status = "late"
        self._commands.append(
            CommandRecord(now, "pulse", status, None, None, self._part_id(target), _round_mm(error))
        )

    def strobe(self, command: HandshakeCommand) -> HandshakeAck | None:
        """Handshake mode: the strobe word was written. Returns the ack (in :meth:`status` from
        ``ack_delay_ms`` later, as a PLC's ack registers show it after its next scan).

        Only a strobe value different from the last one acked (0 before the first) is a new
        command; writing the same value again is ignored and returns the previous ack (None
        before the first), so a vision side that retries after a reconnect cannot double a command.
        """
        self._require_mode("handshake", "strobe")
        if command.strobe == (self._last_ack.strobe if self._last_ack else 0):
            return self._last_ack
        # parts whose centres reached the gate by now have been judged, however late the timer runs
        self._catch_up()
        now = self.clock.now_ns()
        geometry = self.geometry
        arrival = arrival_count(geometry, command.encoder_at_capture, command.position_at_capture_counts)
        t_arrive = geometry.time_at_travel_ns(arrival / geometry.encoder_counts_per_mm)
        target, error = self._target_at_travel(arrival / geometry.encoder_counts_per_mm)
        try:
            verdict = Verdict(command.verdict)
            status = AckStatus.ACCEPTED
        except ValueError:
            verdict, status = Verdict.REJECT, AckStatus.INVALID_VERDICT
        released_already = (
            self.no_verdict == "reject"
            and target is not None
            and error is not None
            and abs(error) <= geometry.gate_window_mm / 2
            and self._parts[target].arrived
        )
        if t_arrive < now or released_already:
            # by its count, or its part reached the gate already and positive release rejected it
            status = AckStatus.LATE
        elif len(self._shift_register) >= self.shift_register_size:
            status = AckStatus.SHIFT_REGISTER_FULL
            self._refused += 1
        if target is not None and (verdict is Verdict.REJECT or status is AckStatus.LATE):
            state = self._parts[target]
            if verdict is Verdict.REJECT:
                state.commands += 1
            if status is AckStatus.LATE:
                state.late_commands += 1
        if status in (AckStatus.ACCEPTED, AckStatus.INVALID_VERDICT):
            entry = _ShiftEntry(command.strobe, command.part_id, verdict, arrival, t_arrive, target_index=target)
            assert self._loop is not None
            entry.handle = self._loop.call_later(max(0.0, (t_arrive - now) / NS_PER_S), self._shift_out, entry)
            self._shift_register.append(entry)
        ack = HandshakeAck(command.strobe, command.part_id, status, arrival)
        self._last_ack = ack
        if self.ack_delay_ms > 0:
            assert self._loop is not None
            self._ack_handles.append(self._loop.call_later(self.ack_delay_ms / 1000, self._show_ack, ack))
        else:
            self._shown_ack = ack
        self._commands.append(
            CommandRecord(
                now, "handshake", status.name.lower(), command.part_id, command.verdict,
                self._part_id(target), _round_mm(error),
            )
        )
        return ack

    # -- report ------------------------------------------------------------------------------------
    def report(self) -> PlcReport:
        scores = [self._score(s) for s in sorted(self._parts, key=lambda s: s.t_arrive_ns) if s.scored]
        errors = [p.timing_error_mm for p in scores if p.timing_error_mm is not None]
        outcomes = [p.outcome for p in scores]
        summary = PlcSummary(
            parts=len(scores),
            pending=len(self._parts) - len(scores),
            defective=sum(p.defective for p in scores),
            good=sum(not p.defective for p in scores),
            rejected=sum(p.rejected for p in scores),
            passed=sum(not p.rejected for p in scores),
            correct_rejects=outcomes.count("correct_reject"),
            correct_passes=outcomes.count("correct_pass"),
            escapes=outcomes.count("escape"),
            false_rejects=outcomes.count("false_reject"),
            fail_safe_rejects=sum(p.fail_safe for p in scores),
            fail_safe_episodes=self._fail_safe_episodes,
            no_verdict_rejects=sum(p.reject_source == "no_verdict" for p in scores),
            late_commands=sum(c.status == "late" for c in self._commands),
            misfires=self._misfires,
            refused_commands=self._refused,
            timing_error_mean_mm=_round_mm(sum(errors) / len(errors)) if errors else None,
            timing_error_mean_abs_mm=_round_mm(sum(abs(e) for e in errors) / len(errors)) if errors else None,
            timing_error_max_abs_mm=_round_mm(max(abs(e) for e in errors)) if errors else None,
            timer_lag_max_ms=round(self._timer_lag_max_ns / NS_PER_MS, 1),
        )
        return PlcReport(
            mode=self.mode,
            geometry=self.geometry,
            gate_pulse_ms=self.gate_pulse_ms,
            heartbeat_timeout_ms=self.heartbeat_timeout_ms,
            parts=tuple(scores),
            summary=summary,
            commands=tuple(self._commands),
            no_verdict=self.no_verdict,
        )

    def _score(self, state: _PartState) -> PartScore:
        part = state.part
        rejected = state.rejected_by is not None
        if part.defective:
            outcome: Outcome = "correct_reject" if rejected else "escape"
        else:
            outcome = "false_reject" if rejected else "correct_pass"
        return PartScore(
            part_id=part.part_id,
            part_type=part.part_type,
            defective=part.defective,
            defect_kinds=part.defect_kinds,
            rejected=rejected,
            outcome=outcome,
            reject_source=state.rejected_by,
            timing_error_mm=_round_mm(state.error_mm),
            commands=state.commands,
            late_commands=state.late_commands,
            fail_safe=state.rejected_by == "fail_safe",
            t_at_reject_ns=state.t_arrive_ns,
        )

    # -- internals: gate -----------------------------------------------------------------------
    def _require_mode(self, mode: str, what: str) -> None:
        if self._loop is None:
            raise RuntimeError(f"VirtualPlc.{what}: start the PLC first (async with VirtualPlc(...) as plc)")
        if self.mode != mode:
            raise PermissionError(f"{what} is a {mode}-mode command; this PLC runs in {self.mode} mode")

    def _fire(self, t_ns: int, source: str) -> list[int]:
        """The gate fires at ``t_ns`` for one pulse: reject every part whose centre meets the window."""
        geometry = self.geometry
        t_end = t_ns + round(self.gate_pulse_ms * NS_PER_MS)
        gate = geometry.reject_distance_mm
        half = geometry.gate_window_mm / 2
        # centre(t) = x0 + travel(t) is inside [gate - half, gate + half] for some t in [t_ns, t_end]
        lo = gate - half - geometry.travel_mm(t_end)
        hi = gate + half - geometry.travel_mm(t_ns)
        swept: list[int] = []
        for i in range(bisect.bisect_left(self._by_x0, (lo, -1)), len(self._by_x0)):
            x0, index = self._by_x0[i]
            if x0 > hi:
                break
            state = self._parts[index]
            if state.rejected_by is not None:
                continue
            state.rejected_by = source
            state.t_rejected_ns = t_ns
            if source == "command":
                state.error_mm = state.part.position_mm(geometry, t_ns) - gate
            swept.append(index)
        if not swept and source == "command":
            self._misfires += 1
        was_active = self.gate_active
        if t_end > self._gate_until_ns:
            self._gate_until_ns = t_end
            if self._gate_handle is not None:
                self._gate_handle.cancel()
            assert self._loop is not None
            self._gate_handle = self._loop.call_later((t_end - self.clock.now_ns()) / NS_PER_S, self._gate_off)
        if not was_active:
            self._notify()
        return swept

    def _gate_off(self) -> None:
        self._gate_handle = None
        self._gate_until_ns = min(self._gate_until_ns, self.clock.now_ns())
        self._notify()

    def _shift_out(self, entry: _ShiftEntry) -> None:
        """The encoder reached an entry's arrival count.

        A PLC's shift register is clocked by the encoder, whatever else the vision computer is
        doing, so the gate fires at the count's instant, not when this timer got to run: in real
        time the timer shares the loop (and the interpreter) with the vision side and can run late.
        How late is kept as :attr:`PlcSummary.timer_lag_max_ms`.
        """
        if entry in self._shift_register:
            self._shift_register.remove(entry)
            self._shifted_out.append(entry)
        self._note_lag(entry.t_due_ns)
        if entry.verdict is Verdict.REJECT:
            target, error = self._target_at(entry.t_due_ns)
            if target is not None and self._parts[target].error_mm is None:
                self._parts[target].error_mm = error
            self._fire(entry.t_due_ns, "command")
        self._notify()

    def _note_lag(self, t_due_ns: int) -> None:
        self._timer_lag_max_ns = max(self._timer_lag_max_ns, self.clock.now_ns() - t_due_ns)

    def _target_at(self, t_ns: int) -> tuple[int | None, float | None]:
        return self._target_at_travel(self.geometry.travel_mm(t_ns))

    def _target_at_travel(self, travel_mm: float) -> tuple[int | None, float | None]:
        """The part whose centre is nearest to the gate when the belt has travelled ``travel_mm``."""
        if not self._by_x0:
            return None, None
        want = self.geometry.reject_distance_mm - travel_mm  # the x0 of a part exactly at the gate
        i = bisect.bisect_left(self._by_x0, (want, -1))
        x0, index = min(self._by_x0[max(0, i - 1) : i + 1], key=lambda c: abs(c[0] - want))
        return index, x0 - want

    def _part_id(self, index: int | None) -> int | None:
        return None if index is None else self._parts[index].part.part_id

    # -- internals: heartbeat ------------------------------------------------------------------
    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._running and self.heartbeat_timeout_ms > 0:
            assert self._loop is not None
            self._watchdog = self._loop.call_later(self.heartbeat_timeout_ms / 1000, self._heartbeat_lost)

    def _heartbeat_lost(self) -> None:
        self._watchdog = None
        if not self._fail_safe:
            self._fail_safe = True
            self._fail_safe_episodes += 1
            self._notify()

    # -- internals: parts arriving and leaving ---------------------------------------------------
    def _schedule_line(self) -> None:
        if not self._running or not self._events:
            return
        t_next = self._events[0].t_ns
        if self._line_handle is not None:
            if self._line_handle_t_ns is not None and self._line_handle_t_ns <= t_next:
                return
            self._line_handle.cancel()
        assert self._loop is not None
        delay_s = max(0.0, (t_next - self.clock.now_ns()) / NS_PER_S)
        self._line_handle = self._loop.call_later(delay_s, self._on_line_event, t_next)
        self._line_handle_t_ns = t_next

    def _on_line_event(self, t_due_ns: int) -> None:
        self._line_handle = self._line_handle_t_ns = None
        # The timer fired for t_due_ns; the loop's float time may read a hair earlier.
        self._advance_line(max(self.clock.now_ns(), t_due_ns))

    def _catch_up(self) -> None:
        """Handle every line event due by now before the vision side's write: the line does not wait for a late timer."""
        if self._events and self._events[0].t_ns <= self.clock.now_ns():
            self._advance_line(self.clock.now_ns())

    def _advance_line(self, horizon: int) -> None:
        while self._events and self._events[0].t_ns <= horizon:
            event = heapq.heappop(self._events)
            state = self._parts[event.index]
            self._note_lag(event.t_ns)
            if event.kind == _ARRIVE:
                state.arrived = True
                # at the part's arrival, as a PLC would, however late this timer ran
                if state.rejected_by is not None:
                    continue
                if self._fail_safe:
                    source = "fail_safe"
                elif self.no_verdict == "reject" and not self._verdict_waiting(state):
                    # positive release: the part-present sensor at the gate sees a part that no
                    # shift-register entry is due for
                    source = "no_verdict"
                else:
                    continue
                self._fire(event.t_ns, source)
                self._commands.append(CommandRecord(event.t_ns, source, "fired", None, None, state.part.part_id, 0.0))
            elif not state.scored:
                state.scored = True
                self._unscored -= 1
        self._update_all_scored()
        self._schedule_line()

    def _verdict_waiting(self, state: _PartState) -> bool:
        """Whether an accepted command is due while the part's centre is within the gate window."""
        geometry = self.geometry
        travel = geometry.reject_distance_mm - state.part.x0_mm  # belt travel when its centre is at the gate
        half = geometry.gate_window_mm / 2
        return any(
            abs(entry.arrival_count / geometry.encoder_counts_per_mm - travel) <= half
            for entry in itertools.chain(self._shift_register, self._shifted_out)
        )

    def _update_all_scored(self) -> None:
        if self._all_scored is None:
            return
        if self._unscored == 0:
            self._all_scored.set()
        else:
            self._all_scored.clear()

    def _show_ack(self, ack: HandshakeAck) -> None:
        self._ack_handles.popleft()  # delays are equal, so acks show in the order they were made
        self._shown_ack = ack
        self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()


def _round_mm(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# ---------------------------------------------------------------------------------------------
# A part stream for running the PLC without a conveyor


def iter_periodic_parts(
    *,
    spacing_mm: float = 260.0,
    defect_rate: float = 0.25,
    seed: int = 0,
    first_x0_mm: float | None = None,
    part_types: Sequence[str] = ("pcb", "bracket"),
    length_mm: float = 120.0,
    width_mm: float = 80.0,
) -> Iterator[PartTruth]:
    """An endless stream of parts at a fixed pitch, each defective with probability ``defect_rate``.

    Part ``i`` (ids from 1) starts at ``x0 = first_x0_mm - (i - 1) * spacing_mm``; by default the
    first part starts one pitch upstream of the camera, so it reaches the camera at
    ``spacing / speed``. Seeded: the same arguments give the same stream. Only the fields the PLC
    scores are meaningful (no components): use the conveyor for images.
    """
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm: expected > 0, got {spacing_mm}")
    if not 0 <= defect_rate <= 1:
        raise ValueError(f"defect_rate: expected 0..1, got {defect_rate}")
    rng = random.Random(seed)
    first = -spacing_mm if first_x0_mm is None else first_x0_mm
    for i in itertools.count():
        defects: tuple[DefectTruth, ...] = ()
        if rng.random() < defect_rate:
            kind = rng.choice(DEFECT_KINDS)
            x, y = rng.uniform(-length_mm / 3, length_mm / 3), rng.uniform(-width_mm / 3, width_mm / 3)
            defects = (DefectTruth(kind, (x - 4, y - 4, x + 4, y + 4), detail="periodic_parts"),)
        yield PartTruth(
            part_id=i + 1,
            part_type=part_types[i % len(part_types)],
            x0_mm=first - i * spacing_mm,
            y_mm=0.0,
            length_mm=length_mm,
            width_mm=width_mm,
            defects=defects,
        )


def periodic_parts(*, count: int, **kwargs: Any) -> list[PartTruth]:
    """The first ``count`` parts of :func:`iter_periodic_parts` (same keyword arguments)."""
    if count < 0:
        raise ValueError(f"count: expected >= 0, got {count}")
    return list(itertools.islice(iter_periodic_parts(**kwargs), count))


def parts_for_duration(geometry: BeltGeometry, duration_s: float, *, spacing_mm: float, **kwargs: Any) -> list[PartTruth]:
    """Enough :func:`periodic_parts` for every part to reach the gate within ``duration_s``."""
    travel = geometry.belt_speed_mm_s * duration_s
    count = max(0, math.floor((travel - geometry.reject_distance_mm) / spacing_mm))
    return periodic_parts(count=count, spacing_mm=spacing_mm, **kwargs)
