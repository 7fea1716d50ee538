"""The virtual PLC behind a real OPC UA server (asyncua), on opc.tcp://127.0.0.1:PORT/ only.

Namespace :data:`NAMESPACE_URI`, one object ``Line`` under Objects, one variable per point of
:data:`OPCUA_NODES` with string node ids ``ns=<ns>;s=Line.<Name>`` (docs/plc-map.md). No security
policy but ``None``, no discovery registration, loopback only.

Client writes reach the PLC in a post-write callback, before the write's response is sent, so
the ack nodes already hold the answer when the strobe write returns. ``Encoder`` is computed from
the clock at each read (poll it; it is not pushed to subscriptions). The other PLC-owned nodes are
written whenever they change, so clients may also subscribe to them.

Starting an asyncua server takes about a second, so one server can serve several runs:
:meth:`OpcUaPlcServer.attach` swaps the PLC behind it and resets every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from dataclasses import dataclass
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback

from lineguard.sim.plc import HandshakeCommand, PlcPortInUseError, VirtualPlc, port_in_use, reject_distance_counts

HOST = "127.0.0.1"
NAMESPACE_URI = "urn:lineguard:vplc"
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpcUaPoint:
    """One variable of the ``Line`` object."""

    name: str  # browse name and node id suffix: ns=<ns>;s=Line.<name>
    type: str  # ua.VariantType name
    writer: str  # "vision" or "plc"
    meaning: str


OPCUA_NODES: tuple[OpcUaPoint, ...] = (
    OpcUaPoint("Heartbeat", "Int32", "vision", "any change = vision alive"),
    OpcUaPoint("Gate", "Boolean", "vision", "pulse mode: write True = fire the gate now; the PLC sets it False when the pulse ends"),
    OpcUaPoint("PartId", "Int32", "vision", "handshake: the vision side's part id"),
    OpcUaPoint("EncoderAtCapture", "Int32", "vision", "handshake: encoder count when the part was captured"),
    OpcUaPoint("PositionAtCaptureCounts", "Int32", "vision", "handshake: part centre's belt position at capture, encoder counts from the camera axis"),
    OpcUaPoint("Verdict", "Int32", "vision", "handshake: 1 = pass, 2 = reject"),
    OpcUaPoint("Strobe", "Int32", "vision", "handshake: a new value (≠ Ack) submits the command"),
    OpcUaPoint("Encoder", "Int32", "plc", "encoder count now (computed at read)"),
    OpcUaPoint("Ack", "Int32", "plc", "the last strobe value processed"),
    OpcUaPoint("AckPartId", "Int32", "plc", "part id of the acked command"),
    OpcUaPoint("AckStatus", "Int32", "plc", "0 none, 1 accepted, 2 late, 3 invalid verdict (taken as reject), 4 shift register full (refused)"),
    OpcUaPoint("AckArrivalCount", "Int32", "plc", "arrival count the PLC computed for the acked command"),
    OpcUaPoint("ShiftRegisterDepth", "Int32", "plc", "commands waiting for their arrival count"),
    OpcUaPoint("GateActive", "Boolean", "plc", "the gate is firing"),
    OpcUaPoint("FailSafe", "Boolean", "plc", "heartbeat lost: every part reaching the gate is rejected"),
    OpcUaPoint("Mode", "String", "plc", "'pulse' or 'handshake'"),
    OpcUaPoint("PositiveRelease", "Boolean", "plc", "handshake: a part reaching the gate without an accepted verdict is rejected"),
    OpcUaPoint("RejectDistanceCounts", "Int32", "plc", "camera axis to gate, encoder counts"),
    OpcUaPoint("EncoderCountsPerMm", "Double", "plc", "encoder scale"),
    OpcUaPoint("HeartbeatTimeoutMs", "Int32", "plc", "watchdog time (0 = off)"),
    OpcUaPoint("GatePulseMs", "Int32", "plc", "how long one firing keeps the gate active"),
)
_TYPE = {p.name: ua.VariantType[p.type] for p in OPCUA_NODES}
_DEFAULT: dict[str, Any] = {"Int32": 0, "Boolean": False, "String": "", "Double": 0.0}


class OpcUaPlcServer:
    """An OPC UA server on 127.0.0.1 playing the PLC side of ``plc`` (attach one later if None).

    A port already in use raises :class:`~lineguard.sim.plc.PlcPortInUseError` naming ``opcua_port``.
    """

    def __init__(self, plc: VirtualPlc | None = None, *, port: int = 4840) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"opcua_port: expected 1..65535, got {port}")
        self.port = port
        self.endpoint = f"opc.tcp://{HOST}:{port}/"
        self.plc: VirtualPlc | None = None
        self.namespace_index = 0
        self._pending_plc = plc
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._by_nodeid: dict[ua.NodeId, str] = {}
        self._published: dict[str, Any] = {}
        self._changed = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None

    async def __aenter__(self) -> OpcUaPlcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def node_id(self, name: str) -> str:
        """The string node id of a point, e.g. ``ns=2;s=Line.Strobe``."""
        return f"ns={self.namespace_index};s=Line.{name}"

    async def start(self) -> None:
        if port_in_use(HOST, self.port):  # fail before the second-long server set-up
            raise PlcPortInUseError("opcua_port", self.port, HOST)
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("lineguard virtual PLC")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NAMESPACE_URI)
        self.namespace_index = ns
        line = await server.nodes.objects.add_object(ua.NodeId("Line", ns), ua.QualifiedName("Line", ns))
        for point in OPCUA_NODES:
            node = await line.add_variable(
                ua.NodeId(f"Line.{point.name}", ns),
                ua.QualifiedName(point.name, ns),
                ua.Variant(_DEFAULT[point.type], _TYPE[point.name]),
            )
            if point.writer == "vision":
                await node.set_writable()
            self._nodes[point.name] = node
            self._by_nodeid[node.nodeid] = point.name
        server.set_attribute_value_callback(self._nodes["Encoder"].nodeid, self._read_encoder)
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_post_write)
        try:
            await server.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PlcPortInUseError("opcua_port", self.port, HOST) from None
            raise
        self._server = server
        self._publisher = asyncio.create_task(self._publish_forever(), name="lineguard-vplc-opcua-publisher")
        if self._pending_plc is not None:
            await self.attach(self._pending_plc)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def attach(self, plc: VirtualPlc) -> None:
        """Put ``plc`` behind the server: every node back to its initial value, mode and config shown."""
        if self._server is None:
            self._pending_plc = plc
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.plc = plc
        self._unsubscribe = plc.subscribe(self._changed.set)
        self._published.clear()
        for point in OPCUA_NODES:
            if point.writer == "vision":
                await self._write(point.name, _DEFAULT[point.type])
        await self._nodes["Gate"].set_writable(plc.mode == "pulse")
        await self._nodes["Strobe"].set_writable(plc.mode == "handshake")
        await self._publish()

    # -- PLC → nodes -----------------------------------------------------------------------------
    def _read_encoder(self, nodeid: ua.NodeId, attr: ua.AttributeIds) -> ua.DataValue:
        value = self.plc.encoder() if self.plc is not None else 0
        return ua.DataValue(ua.Variant(value, ua.VariantType.Int32))

    async def _publish_forever(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self._publish()

    async def _publish(self) -> None:
        plc = self.plc
        if plc is None or self._server is None:
            return
        status = plc.status()
        ack = status.ack
        values: dict[str, Any] = {
            "GateActive": status.gate_active,
            "FailSafe": status.fail_safe,
            "ShiftRegisterDepth": status.shift_register_depth,
            "Mode": plc.mode,
            "PositiveRelease": plc.no_verdict == "reject",
            "RejectDistanceCounts": reject_distance_counts(plc.geometry),
            "EncoderCountsPerMm": float(plc.geometry.encoder_counts_per_mm),
            "HeartbeatTimeoutMs": round(plc.heartbeat_timeout_ms),
            "GatePulseMs": round(plc.gate_pulse_ms),
            "Ack": ack.strobe if ack else 0,
            "AckPartId": ack.part_id if ack else 0,
            "AckStatus": int(ack.status) if ack else 0,
            "AckArrivalCount": ack.arrival_count if ack else 0,
        }
        if not status.gate_active and plc.mode == "pulse":
            values["Gate"] = False  # the pulse is over: ready for the next rising edge
        for name, value in values.items():
            if self._published.get(name, object()) != value:
                await self._write(name, value)

    async def _write(self, name: str, value: Any) -> None:
        assert self._server is not None
        if _TYPE[name] == ua.VariantType.Int32:
            value = max(-(2**31), min(2**31 - 1, int(value)))
        await self._server.write_attribute_value(
            self._nodes[name].nodeid, ua.DataValue(ua.Variant(value, _TYPE[name]))
        )
        self._published[name] = value

    # -- client writes → PLC ---------------------------------------------------------------------
    async def _on_post_write(self, event: ServerItemCallback, dispatcher: Any) -> None:
        plc = self.plc
        if plc is None or not event.is_external:
            return
        written: dict[str, Any] = {}
        for write, result in zip(event.request_params.NodesToWrite, event.response_params):
            name = self._by_nodeid.get(write.NodeId)
            if name is not None and write.AttributeId == ua.AttributeIds.Value and result.is_good():
                written[name] = write.Value.Value.Value
        if not written:
            return
        for name in ("Heartbeat", "Gate", "Strobe", "PartId", "Verdict", "EncoderAtCapture", "PositionAtCaptureCounts"):
            if name in written:
                self._published[name] = written[name]
        if "Heartbeat" in written:
            plc.write_heartbeat(int(written["Heartbeat"]))
        if written.get("Gate") is True:
            plc.fire_gate()
        if "Strobe" in written:
            plc.strobe(
                HandshakeCommand(
                    strobe=int(written["Strobe"]),
                    part_id=int(self._value("PartId")),
                    verdict=int(self._value("Verdict")),
                    encoder_at_capture=int(self._value("EncoderAtCapture")),
                    position_at_capture_counts=int(self._value("PositionAtCaptureCounts")),
                )
            )
        await self._publish()

    def _value(self, name: str) -> Any:
        assert self._server is not None
        return self._server.read_attribute_value(self._nodes[name].nodeid).Value.Value
