"""``plc.opcua``: verdicts to a PLC over OPC UA (the node map of docs/plc-map.md)."""

from __future__ import annotations

from asyncua import Client, ua

from lineguard.nodes._plc_output import COMMON_PARAMS, PlcAck, PlcConfig, PlcLink, PlcOutput

INT32 = ua.VariantType.Int32
NAMES = ("Heartbeat", "Gate", "PartId", "EncoderAtCapture", "PositionAtCaptureCounts", "Verdict", "Strobe", "Encoder", "Ack", "AckPartId", "AckStatus", "AckArrivalCount", "Mode", "PositiveRelease", "RejectDistanceCounts", "EncoderCountsPerMm")


class OpcUaLink(PlcLink):
    def __init__(self, endpoint: str, namespace_uri: str, object_name: str, timeout_s: float) -> None:
        self.endpoint, self.namespace_uri, self.object_name = endpoint, namespace_uri, object_name
        self.client = Client(endpoint, timeout=timeout_s)
        self.node: dict = {}

    async def connect(self) -> None:
        await self.client.connect()
        ns = await self.client.get_namespace_index(self.namespace_uri)
        self.node = {name: self.client.get_node(f"ns={ns};s={self.object_name}.{name}") for name in NAMES}

    async def close(self) -> None:
        await self.client.disconnect()

    async def read_config(self) -> PlcConfig:
        mode, counts, cpm = await self.client.read_values([self.node["Mode"], self.node["RejectDistanceCounts"], self.node["EncoderCountsPerMm"]])
        try:
            positive_release = bool(await self.node["PositiveRelease"].read_value())
        except ua.UaStatusCodeError:  # a PLC without the node: it does not say, so assume it does not
            positive_release = False
        return PlcConfig(handshake_mode=mode == "handshake", reject_distance_counts=int(counts), encoder_counts_per_mm=float(cpm), positive_release=positive_release)

    async def read_encoder(self) -> int:
        return int(await self.node["Encoder"].read_value())

    async def write_heartbeat(self, value: int) -> None:
        await self.node["Heartbeat"].write_value(ua.Variant(value, INT32))

    async def fire_gate(self) -> None:
        await self.node["Gate"].write_value(ua.Variant(True, ua.VariantType.Boolean))

    async def write_command(self, *, part_id, encoder_at_capture, position_at_capture_counts, verdict, strobe) -> None:
        n = self.node
        await self.client.write_values(  # one Write service call, Strobe last
            [n["PartId"], n["EncoderAtCapture"], n["PositionAtCaptureCounts"], n["Verdict"], n["Strobe"]],
            [ua.Variant(v, INT32) for v in (part_id, encoder_at_capture, position_at_capture_counts, verdict, strobe)],
        )

    async def read_ack(self) -> PlcAck:
        n = self.node
        values = await self.client.read_values([n["Ack"], n["AckPartId"], n["AckStatus"], n["AckArrivalCount"]])
        return PlcAck(*(int(v) for v in values))


class OpcUaPlcOutput(PlcOutput):
    """Sends one verdict per part to the PLC over OPC UA and keeps the PLC's heartbeat alive.

    Same behaviour as ``plc.modbus`` (handshake or pulse mode, heartbeat, bounded outbox with
    reconnect, deadlines, audit); the PLC's variables are children of one object (``Line`` by
    default) in the namespace ``namespace_uri``, with string node ids ``<object>.<Name>``
    (docs/plc-map.md). Security policy None; no discovery.

    Example:
        plc:
          type: plc.opcua
          params: {endpoint: "opc.tcp://127.0.0.1:4840/", mode: handshake}
          in: {verdicts: vote.verdicts}
    """

    type_name = "plc.opcua"
    version = 1
    protocol = "opcua"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["endpoint"],
        "properties": {
            "endpoint": {"type": "string", "pattern": "^opc\\.tcp://", "x-expected": "an endpoint like opc.tcp://HOST:PORT/"},
            "namespace_uri": {"type": "string", "default": "urn:lineguard:vplc"},
            "object": {"type": "string", "default": "Line"},
            **COMMON_PARAMS,
        },
    }

    def make_link(self) -> OpcUaLink:
        return OpcUaLink(self.params["endpoint"], self.params["namespace_uri"], self.params["object"], self.params["request_timeout_s"])

    def address(self) -> str:
        return self.params["endpoint"]
