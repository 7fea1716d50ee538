"""The vision side of the PLC contract (docs/plc-map.md), shared by ``plc.modbus`` and ``plc.opcua``.

What every PLC output does, whatever the protocol:

- **heartbeat**: a new heartbeat value every ``heartbeat_period_ms``; the PLC goes fail-safe (rejects
  everything) when it stops, so a dead vision side can never let parts through. It beats only while
  inspection is alive: when the nodes feeding the verdicts have handled no frame captured within
  ``vision_timeout_ms`` (a camera that stopped delivering, a detector stuck in a call), it is
  withheld, loudly, until frames flow again. Once the verdicts' stream has ended it beats on until
  the last part has passed the gate.
- **outbox**: verdicts wait in a bounded queue, in order, until the PLC has acknowledged them; a lost
  connection is reopened with backoff and the same command is sent again (the PLC ignores a repeated
  strobe, so nothing is doubled). When the outbox is full the graph is held back, never emptied.
- **deadline**: a command must reach the PLC ``deadline_margin_ms`` before its part reaches the gate.
  A missed deadline is an alarm (log error, event counter, audit record). In pulse mode a reject
  is still fired while the part is within the gate window.
- **audit**: one record per verdict (capture → verdict → sent → PLC ack), on the optional ``audit``
  output and in the log when something went wrong.

Verdict payloads are read by attribute: ``part_id``, ``verdict`` (``"pass"``/``"reject"``),
``arrival_t_ns`` and ``arrival_encoder`` (when the part's centre reaches the gate), and
``first_t_ns``/``last_t_ns`` (its first and last capture) when present.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort

log = logging.getLogger("lineguard.nodes.plc")

VERDICT_CODE = {"pass": 1, "reject": 2}
# What a lost or stuck connection raises; links turn their library's errors into these.
LINK_ERRORS = (OSError, asyncio.TimeoutError, ConnectionError)
_ACK_POLL_S = 0.005  # how often a handshake ack is read while the PLC has not answered yet
ACK_STATUS = {0: "none", 1: "accepted", 2: "late", 3: "invalid_verdict", 4: "shift_register_full"}


@dataclass(frozen=True)
class PlcConfig:
    """What the PLC says about itself."""

    handshake_mode: bool
    reject_distance_counts: int
    encoder_counts_per_mm: float
    # handshake: the PLC rejects a part that reaches the gate without an accepted verdict
    positive_release: bool = False


@dataclass(frozen=True)
class PlcAck:
    ack: int
    part_id: int
    status: int
    arrival_count: int


class PlcLink:
    """One protocol's calls. Every method raises on a lost connection."""

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def read_config(self) -> PlcConfig: ...
    async def read_encoder(self) -> int: ...
    async def write_heartbeat(self, value: int) -> None: ...
    async def fire_gate(self) -> None: ...
    async def write_command(self, *, part_id: int, encoder_at_capture: int, position_at_capture_counts: int, verdict: int, strobe: int) -> None: ...
    async def read_ack(self) -> PlcAck: ...


@dataclass
class AuditRecord:
    part_id: int
    verdict: str
    first_t_ns: int | None
    last_t_ns: int | None
    arrival_t_ns: int
    arrival_encoder: int | None
    received_t_ns: int
    sent_t_ns: int | None = None
    acked_t_ns: int | None = None
    ack_status: str | None = None
    outcome: str = "pending"  # acked, late, deadline_missed, fired, fired_late, missed, refused
    attempts: int = 0
    alarms: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


COMMON_PARAMS: dict[str, Any] = {
    "mode": {"enum": ["handshake", "pulse"], "default": "handshake", "description": "handshake: the PLC's shift register times the gate; pulse: vision fires the gate at the part's arrival."},
    "heartbeat_period_ms": {"type": "number", "minimum": 10, "maximum": 10000, "default": 100},
    "vision_timeout_ms": {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "default": 2000,
        "description": "The heartbeat is withheld (the PLC goes fail-safe) while the nodes feeding the verdicts have handled no frame captured within this long: a dead camera or a stuck detector. null: off.",
    },
    "connect_timeout_s": {"type": "number", "exclusiveMinimum": 0, "default": 5},
    "request_timeout_s": {"type": "number", "exclusiveMinimum": 0, "default": 1},
    "outbox_size": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 256},
    "ack_timeout_ms": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 250,
        "description": "Handshake: how long the PLC may take to ack a command (it does so on its next scan; the ack is read every 5 ms). Longer is a lost link: reconnect, send again.",
    },
    "deadline_margin_ms": {"type": "number", "minimum": 0, "default": 20, "description": "A command must be acknowledged this long before the part reaches the gate."},
    "late_fire_mm": {"type": "number", "minimum": 0, "default": 15, "description": "Pulse mode: a reject whose part is past the gate by less than this still fires."},
    "reconnect": {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "first_delay_s": {"type": "number", "exclusiveMinimum": 0, "default": 0.2},
            "max_delay_s": {"type": "number", "exclusiveMinimum": 0, "default": 5},
        },
    },
}


class PlcOutput(Node):
    """Base of the PLC output nodes; subclasses give ``make_link()`` and their address params."""

    inputs = {"verdicts": InPort("part_verdict", queue=64, policy="block", doc="one verdict per part", lossless="a dropped one is a part without its verdict")}
    outputs = {"audit": OutPort("plc_audit", "one record per verdict: capture → verdict → PLC ack", optional=True)}
    protocol: ClassVar[str] = "plc"

    def make_link(self) -> PlcLink:
        raise NotImplementedError

    def address(self) -> str:
        raise NotImplementedError

    # -- life cycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        self.link = self.make_link()
        self._clock = self.ctx.clock
        try:
            async with self._clock.hold():
                async with asyncio.timeout(self.params["connect_timeout_s"]):
                    await self.link.connect()
                async with asyncio.timeout(self.params["request_timeout_s"]):
                    config = await self.link.read_config()
        except LINK_ERRORS as exc:
            await self._close_link()
            raise ConnectionError(f"PLC at {self.address()} is unreachable ({type(exc).__name__}: {exc}); the line must not run uninspected") from exc
        self.config = config
        want_handshake = self.params["mode"] == "handshake"
        if config.handshake_mode != want_handshake:
            await self._close_link()
            raise ValueError(f"PLC at {self.address()} is in {'handshake' if config.handshake_mode else 'pulse'} mode, the recipe asks for {self.params['mode']} mode")
        line = self.ctx.line
        ours = round(line["reject_distance_mm"] * line["encoder_counts_per_mm"])
        if abs(config.reject_distance_counts - ours) > 1 or abs(config.encoder_counts_per_mm - line["encoder_counts_per_mm"]) > 1e-6:
            await self._close_link()
            raise ValueError(
                f"PLC at {self.address()} has the gate {config.reject_distance_counts} counts downstream at {config.encoder_counts_per_mm:g} counts/mm; "
                f"the recipe's line says {line['reject_distance_mm']:g} mm × {line['encoder_counts_per_mm']:g} counts/mm = {ours} counts"
            )
        self._warn_without_positive_release()
        # verdicts not yet with the PLC, and the strobe sequence, outlive a restart of this node
        # (a restart policy): what a restarted node dropped would reach the gate without a verdict
        self._outbox: deque[tuple[Envelope, AuditRecord]] = self.ctx.carry.setdefault("outbox", deque())
        self._outbox_changed = asyncio.Event()
        self._heartbeat = 0
        self._strobe = self.ctx.carry.get("strobe", 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pulses: set[asyncio.Task[None]] = set()
        self._waiting_pulses: dict[asyncio.Task[None], tuple[Envelope, AuditRecord]] = {}  # not fired yet
        self._lock = asyncio.Lock()  # one request at a time on the link
        self._last_arrival_ns: int | None = None
        self._failure: BaseException | None = None
        self._reconnect_lock = asyncio.Lock()
        # set by close(): the background loops end on their own too. A cancellation can be lost
        # inside a client library (pymodbus waits with asyncio.wait_for, which on Python 3.11
        # drops a cancel that arrives as its request completes), and a heartbeat that goes on
        # after close() would keep the run from ending.
        self._closing = False
        self._draining = False  # flush(): the stream ended on purpose, no more frames to expect
        self._withheld_since_ns: int | None = None

    def _warn_without_positive_release(self) -> None:
        if self.params["mode"] == "handshake" and not self.config.positive_release:
            log.warning(
                "PLC at %s releases a part that reaches the gate without a verdict: a verdict that comes too late, "
                "or none, lets its part go on without it. Switch on positive release in the PLC.",
                self.address(), extra={"node": self.ctx.node_id},
            )
        elif self.params["mode"] == "pulse":
            # In pulse mode the gate fires only when vision fires it: a part whose reject comes too
            # late, or never (a part the tracker lost while frames still flow), goes on. Only
            # handshake with positive release rejects it. (A vision side that stops altogether
            # stops the heartbeat: see vision_timeout_ms.)
            log.warning(
                "PLC at %s is in pulse mode: a part whose reject comes too late, or never, goes on uninspected. "
                "Handshake mode with positive release rejects it instead.",
                self.address(), extra={"node": self.ctx.node_id},
            )

    async def start(self) -> None:
        self._started_ns = self._clock.now_ns()
        for work, name in ((self._heartbeat_loop, "heartbeat"), (self._sender_loop, "sender")):
            task = asyncio.create_task(work(), name=f"lineguard-{self.ctx.node_id}-{name}")
            task.add_done_callback(self._background_ended)
            self._tasks.add(task)

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        """The heartbeat, the sender or a pulse stopped by an error: fail the node loudly, never go on mute."""
        if task.cancelled() or task.exception() is None:
            return
        self._failure = task.exception()
        log.error("PLC output to %s stopped: %s: %s", self.address(), type(self._failure).__name__, self._failure, extra={"node": self.ctx.node_id})
        self._outbox_changed.set()  # wake process()/flush() so they raise it

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"PLC output to {self.address()} stopped: {type(self._failure).__name__}: {self._failure}") from self._failure

    async def process(self, port: str, envelope: Envelope) -> None:
        self._raise_if_failed()
        v = envelope.payload
        record = AuditRecord(
            part_id=int(v.part_id),
            verdict=str(v.verdict),
            first_t_ns=getattr(v, "first_t_ns", None),
            last_t_ns=getattr(v, "last_t_ns", None),
            arrival_t_ns=int(v.arrival_t_ns),
            arrival_encoder=getattr(v, "arrival_encoder", None),
            received_t_ns=self._clock.now_ns(),
        )
        if record.verdict not in VERDICT_CODE:
            record.alarms.append(f"unknown verdict {record.verdict!r}: sent as reject")
            record.verdict = "reject"
        while len(self._outbox) >= self.params["outbox_size"]:
            self.ctx.count("outbox_full")
            self._outbox_changed.clear()
            await self._outbox_changed.wait()  # hold the graph back; never drop a verdict
            self._raise_if_failed()
        self._outbox.append((envelope, record))
        self._last_arrival_ns = max(self._last_arrival_ns or record.arrival_t_ns, record.arrival_t_ns)
        self._outbox_changed.set()

    async def flush(self) -> None:
        """End of stream: send what waits, then keep the heartbeat alive until the last part this
        node was told about has passed the gate (else the PLC would go fail-safe under it).

        Verdicts still waiting one reconnect cycle after that part has passed (the PLC unreachable)
        are of no use any more: the node fails, naming their parts, instead of waiting for the PLC
        forever. A late verdict a reachable PLC still takes (and acks as late) is sent."""
        self._draining = True
        end_ns = None if self._last_arrival_ns is None else self._last_arrival_ns + round(self.params["late_fire_mm"] / self.ctx.line["belt_speed_mm_s"] * 1e9)
        drained = asyncio.ensure_future(self._outbox_drained())
        if end_ns is not None and self._outbox:
            cycle_s = self.params["reconnect"]["max_delay_s"] + self.params["connect_timeout_s"] + self.params["request_timeout_s"]
            passed = asyncio.ensure_future(self._clock.sleep_until_ns(max(end_ns, self._clock.now_ns()) + round(cycle_s * 1e9)))
            try:
                await asyncio.wait({drained, passed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                passed.cancel()
            if not drained.done():
                drained.cancel()
                self._raise_if_failed()
                parts = ", ".join(str(record.part_id) for _, record in list(self._outbox)[:10]) + (", ..." if len(self._outbox) > 10 else "")
                raise ConnectionError(
                    f"PLC at {self.address()} did not take {len(self._outbox)} verdicts before their parts passed the gate "
                    f"(parts {parts}); {'the PLC rejected them for want of a verdict' if self.config.positive_release else 'they went on without a verdict'}"
                )
        await drained
        self._raise_if_failed()
        if self._pulses:
            await asyncio.gather(*list(self._pulses))
        if end_ns is not None:
            await self._clock.sleep_until_ns(end_ns)

    async def _outbox_drained(self) -> None:
        while self._outbox:
            self._raise_if_failed()
            self._outbox_changed.clear()
            await self._outbox_changed.wait()

    async def close(self) -> None:
        self._closing = True
        # rejects not fired yet go back to the outbox, in order, for a restarted node to fire
        waiting = sorted(getattr(self, "_waiting_pulses", {}).values(), key=lambda item: item[1].arrival_t_ns, reverse=True)
        for envelope, record in waiting:
            self._outbox.appendleft((envelope, record))
        tasks = list(getattr(self, "_tasks", ())) + list(getattr(self, "_pulses", ()))
        for task in tasks:
            task.cancel()
        if tasks:
            # asyncio.wait, not await-and-ignore: a cancellation of close() itself goes on to its
            # caller; the tasks' own errors were reported by _background_ended
            await asyncio.wait(tasks)
        await self._close_link()

    async def _close_link(self) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            try:
                async with self.ctx.clock.hold():
                    await link.close()
            except Exception as exc:  # closing a dead link: say so, nothing else to do
                log.warning("closing the PLC link to %s: %s", self.address(), exc, extra={"node": self.ctx.node_id})

    # -- talking to the PLC ------------------------------------------------------------------------
    async def _call(self, make_call):
        """One request under the lock, with a timeout, taking no simulated time.

        ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` drops a cancellation that
        arrives as the request completes, and the heartbeat loop would then run on after ``close``."""
        async with self._lock:
            async with self._clock.hold():
                async with asyncio.timeout(self.params["request_timeout_s"]):
                    return await make_call()

    async def _reconnect(self, why: BaseException, link: PlcLink) -> None:
        """Reopen ``link`` (the one that failed) unless someone already replaced it."""
        async with self._reconnect_lock:
            if self.link is not link:
                return  # another task reconnected while we waited
            self.ctx.count("connection_lost")
            log.error("PLC at %s lost (%s: %s); reconnecting, %d verdicts wait in the outbox; the PLC rejects every part while the heartbeat is missing",
                      self.address(), type(why).__name__, why, len(self._outbox), extra={"node": self.ctx.node_id})
            delay = self.params["reconnect"]["first_delay_s"]
            while not self._closing:
                await self._clock.sleep(delay)
                try:
                    await self._close_link()
                    self.link = self.make_link()
                    async with self._clock.hold():
                        async with asyncio.timeout(self.params["connect_timeout_s"]):
                            await self.link.connect()
                        async with asyncio.timeout(self.params["request_timeout_s"]):
                            config = await self.link.read_config()
                except LINK_ERRORS as exc:
                    self.ctx.count("reconnect_failed")
                    log.warning("PLC at %s still unreachable (%s); next try in %.1f s", self.address(), exc, min(delay * 2, self.params["reconnect"]["max_delay_s"]), extra={"node": self.ctx.node_id})
                    delay = min(delay * 2, self.params["reconnect"]["max_delay_s"])
                    continue
                self.ctx.count("reconnected")
                if config.positive_release != self.config.positive_release:  # the PLC restarted with another setting
                    self.config = replace(self.config, positive_release=config.positive_release)
                    self._warn_without_positive_release()
                log.warning("PLC at %s reconnected; sending %d waiting verdicts", self.address(), len(self._outbox), extra={"node": self.ctx.node_id})
                return

    def _vision_stalled(self) -> bool:
        """Whether inspection has stopped: no frame captured within ``vision_timeout_ms`` has been
        handled by the nodes feeding the verdicts (counted from start() before the first frame).
        Says so once when it stops and once when it resumes."""
        timeout_ms = self.params["vision_timeout_ms"]
        if timeout_ms is None or self._draining:
            stalled = False
        else:
            newest = self.ctx.inputs_newest_ns()
            since = self._started_ns if newest is None else max(newest, self._started_ns)
            stalled = self._clock.now_ns() - since > timeout_ms * 1e6
        if stalled and self._withheld_since_ns is None:
            self._withheld_since_ns = self._clock.now_ns()
            self.ctx.count("vision_stalled")
            log.error(
                "no frame has been inspected for %.1f s (a dead camera, a stuck detector or a stalled graph upstream): "
                "heartbeat withheld, the PLC at %s rejects every part until inspection resumes",
                timeout_ms / 1000, self.address(), extra={"node": self.ctx.node_id},
            )
        elif not stalled and self._withheld_since_ns is not None:
            why = "the stream ended" if self._draining else "inspection resumed"
            log.warning("%s after %.1f s without frames; heartbeat to the PLC at %s again", why, (self._clock.now_ns() - self._withheld_since_ns) / 1e9, self.address(), extra={"node": self.ctx.node_id})
            self._withheld_since_ns = None
        return stalled

    async def _heartbeat_loop(self) -> None:
        period_s = self.params["heartbeat_period_ms"] / 1000
        while not self._closing:
            if self._vision_stalled():
                await self._clock.sleep(period_s)
                continue
            self._heartbeat = self._heartbeat % 30000 + 1
            link = self.link
            try:
                await self._call(lambda: link.write_heartbeat(self._heartbeat))
            except LINK_ERRORS as exc:
                await self._reconnect(exc, link)
                continue
            await self._clock.sleep(period_s)

    async def _sender_loop(self) -> None:
        while not self._closing:
            while not self._outbox:
                self._outbox_changed.clear()
                await self._outbox_changed.wait()
            envelope, record = self._outbox[0]
            link = self.link
            try:
                if self.params["mode"] == "handshake":
                    await self._send_handshake(link, record)
                else:
                    self._schedule_pulse(envelope, record)
            except LINK_ERRORS as exc:
                record.attempts += 1
                await self._reconnect(exc, link)
                continue  # the same command again: the PLC ignores a strobe it already acked
            self._outbox.popleft()
            self._outbox_changed.set()
            if self.params["mode"] == "handshake":
                await self._finish(envelope, record)

    def _deadline_ns(self, record: AuditRecord) -> int:
        return record.arrival_t_ns - round(self.params["deadline_margin_ms"] * 1e6)

    async def _send_handshake(self, link: PlcLink, record: AuditRecord) -> None:
        if record.attempts == 0:
            self._strobe = self.ctx.carry["strobe"] = self._strobe % 60000 + 1
            record.sent_t_ns = self._clock.now_ns()
        if self._clock.now_ns() > self._deadline_ns(record) and "deadline_missed" not in record.alarms:
            record.alarms.append("deadline_missed")
        cpm = self.config.encoder_counts_per_mm
        # The command says where the part was: at the gate's arrival count, minus the gate distance.
        arrival_count = record.arrival_encoder if record.arrival_encoder is not None else round(record.arrival_t_ns / 1e9 * self.ctx.line["belt_speed_mm_s"] * cpm)
        encoder_at_capture = arrival_count - self.config.reject_distance_counts
        strobe = self._strobe
        await self._call(lambda: link.write_command(part_id=record.part_id, encoder_at_capture=encoder_at_capture, position_at_capture_counts=0, verdict=VERDICT_CODE[record.verdict], strobe=strobe))
        # a PLC takes the command on its next scan: read its ack until it answers this strobe
        give_up_ns = self._clock.now_ns() + round(self.params["ack_timeout_ms"] * 1e6)
        while (ack := await self._call(link.read_ack)).ack != strobe:
            if self._clock.now_ns() >= give_up_ns:
                raise ConnectionError(f"PLC did not ack strobe {strobe} within {self.params['ack_timeout_ms']:g} ms (its ack shows strobe {ack.ack})")
            await self._clock.sleep(_ACK_POLL_S)
        record.acked_t_ns = self._clock.now_ns()
        if ack.part_id != record.part_id:  # not a link error: resending under the same strobe would be ignored
            raise RuntimeError(f"PLC acked strobe {strobe} for part {ack.part_id}, but it was sent for part {record.part_id}: does another client write the command?")
        record.ack_status = ACK_STATUS.get(ack.status, str(ack.status))
        if ack.status == 2:
            record.outcome = "late"
        elif ack.status == 4:
            record.outcome = "refused"
        else:
            record.outcome = "deadline_missed" if "deadline_missed" in record.alarms else "acked"

    def _schedule_pulse(self, envelope: Envelope, record: AuditRecord) -> None:
        record.sent_t_ns = self._clock.now_ns()
        if record.verdict != "reject":
            record.outcome = "passed"
            self._pulses.add(task := asyncio.create_task(self._finish(envelope, record)))
            task.add_done_callback(self._pulses.discard)
            task.add_done_callback(self._background_ended)
            return
        task = asyncio.create_task(self._pulse(envelope, record), name=f"lineguard-{self.ctx.node_id}-pulse-{record.part_id}")
        self._pulses.add(task)
        self._waiting_pulses[task] = (envelope, record)
        task.add_done_callback(self._pulses.discard)
        task.add_done_callback(lambda t: self._waiting_pulses.pop(t, None))
        task.add_done_callback(self._background_ended)  # a pulse that failed fails the node

    async def _pulse(self, envelope: Envelope, record: AuditRecord) -> None:
        window_ns = round(self.params["late_fire_mm"] / self.ctx.line["belt_speed_mm_s"] * 1e9)
        if self._clock.now_ns() > self._deadline_ns(record):
            record.alarms.append("deadline_missed")
        await self._clock.sleep_until_ns(record.arrival_t_ns)
        for _attempt in range(3):
            # past the window (the verdict came too late, or a reconnect took the time), a gate
            # fired now would reject whatever is there then
            if self._clock.now_ns() > record.arrival_t_ns + window_ns:
                record.outcome = "missed"
                if "deadline_missed" not in record.alarms:
                    record.alarms.append("deadline_missed")
                break
            link = self.link
            try:
                await self._call(link.fire_gate)
                break
            except LINK_ERRORS as exc:
                record.attempts += 1
                await self._reconnect(exc, link)
            except Exception:  # not a link error: the gate was not fired; say so, then fail the node
                record.outcome = "missed"
                record.alarms.append("gate_error")
                await self._finish(envelope, record)
                raise
        else:
            record.outcome = "missed"
        self._waiting_pulses.pop(asyncio.current_task(), None)  # fired or given up: a restart must not fire it again
        if record.outcome != "missed":
            record.acked_t_ns = self._clock.now_ns()
            record.outcome = "fired_late" if "deadline_missed" in record.alarms else "fired"
        await self._finish(envelope, record)

    async def _finish(self, envelope: Envelope, record: AuditRecord) -> None:
        for alarm in record.alarms:
            self.ctx.count(alarm)
        if record.outcome in ("late", "refused", "missed"):
            self.ctx.count(record.outcome)
        if record.alarms or record.outcome in ("late", "refused", "missed"):
            what = list(dict.fromkeys(record.alarms + [record.outcome]))
            if record.outcome in ("late", "refused"):
                what.append("the PLC rejects the part for want of a verdict" if self.config.positive_release else "the part goes on without its verdict")
            log.error("part %d (%s): %s; PLC at %s", record.part_id, record.verdict, ", ".join(what), self.address(), extra={"node": self.ctx.node_id, "audit": record.to_json()})
        if self.ctx.is_wired("audit"):
            await self.ctx.emit("audit", envelope.derive(record))
