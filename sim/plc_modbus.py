"""The virtual PLC behind a real Modbus TCP server (pymodbus), on 127.0.0.1 only.

The register map (:data:`MODBUS_MAP`, documented in docs/plc-map.md) is the contract the vision
side's ``plc.modbus`` output implements. Addresses are PDU (wire) addresses, 0-based. 32-bit
values take two registers, high word first (pymodbus ``convert_to_registers(v, DataType.INT32)``).
The server answers any unit id (use 1).

Built on pymodbus' non-deprecated server API: a :class:`~pymodbus.simulator.SimDevice` with four
separate tables and an action coroutine that runs on every request. Reads of PLC-owned points are
filled in from the PLC at the moment of the read (the encoder follows the clock); writes reach
the PLC before the response is sent, so an ack can be read right after the strobe write returns.

    async with ModbusPlcServer(plc, port=5020) as server:
        ...  # clients talk to 127.0.0.1:server.port
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from lineguard.sim.plc import HandshakeCommand, PlcPortInUseError, VirtualPlc, port_in_use, reject_distance_counts

HOST = "127.0.0.1"
UNIT_ID = 1  # what clients should send; the server answers every unit id


@dataclass(frozen=True)
class ModbusPoint:
    """One point of the register map."""

    name: str
    table: str  # "coil", "discrete_input", "holding_register", "input_register"
    address: int  # PDU address, 0-based
    type: str  # "bool", "u16", "i32", "u32" (32-bit: 2 registers, high word first)
    writer: str  # "vision" or "plc"
    meaning: str


MODBUS_MAP: tuple[ModbusPoint, ...] = (
    ModbusPoint("gate_fire", "coil", 0, "bool", "vision", "pulse mode: write 1 = fire the gate now; reads 1 while the gate is active"),
    ModbusPoint("gate_active", "discrete_input", 0, "bool", "plc", "the gate is firing"),
    ModbusPoint("fail_safe", "discrete_input", 1, "bool", "plc", "heartbeat lost: every part reaching the gate is rejected"),
    ModbusPoint("handshake_mode", "discrete_input", 2, "bool", "plc", "1 = handshake mode, 0 = pulse mode"),
    ModbusPoint("positive_release", "discrete_input", 3, "bool", "plc", "handshake: a part reaching the gate without an accepted verdict is rejected"),
    ModbusPoint("heartbeat", "holding_register", 0, "u16", "vision", "any change = vision alive"),
    ModbusPoint("part_id", "holding_register", 1, "u32", "vision", "handshake: the vision side's part id"),
    ModbusPoint("encoder_at_capture", "holding_register", 3, "i32", "vision", "handshake: encoder count when the part was captured"),
    ModbusPoint("position_at_capture_counts", "holding_register", 5, "i32", "vision", "handshake: part centre's belt position at capture, encoder counts from the camera axis"),
    ModbusPoint("verdict", "holding_register", 7, "u16", "vision", "handshake: 1 = pass, 2 = reject"),
    ModbusPoint("strobe", "holding_register", 8, "u16", "vision", "handshake: a new value (≠ ack) submits the command in HR1..HR7"),
    ModbusPoint("encoder", "input_register", 0, "i32", "plc", "encoder count now"),
    ModbusPoint("ack", "input_register", 2, "u16", "plc", "the last strobe value processed"),
    ModbusPoint("ack_part_id", "input_register", 3, "u32", "plc", "part id of the acked command"),
    ModbusPoint("ack_status", "input_register", 5, "u16", "plc", "0 none, 1 accepted, 2 late, 3 invalid verdict (taken as reject), 4 shift register full (refused)"),
    ModbusPoint("shift_register_depth", "input_register", 6, "u16", "plc", "commands waiting for their arrival count"),
    ModbusPoint("status", "input_register", 7, "u16", "plc", "bit 0 gate_active, bit 1 fail_safe, bit 2 handshake_mode, bit 3 positive_release"),
    ModbusPoint("reject_distance_counts", "input_register", 8, "i32", "plc", "camera axis to gate, encoder counts"),
    ModbusPoint("encoder_counts_per_metre", "input_register", 10, "u32", "plc", "encoder scale"),
    ModbusPoint("heartbeat_timeout_ms", "input_register", 12, "u16", "plc", "watchdog time (0 = off)"),
    ModbusPoint("gate_pulse_ms", "input_register", 13, "u16", "plc", "how long one firing keeps the gate active"),
    ModbusPoint("ack_arrival_count", "input_register", 14, "i32", "plc", "arrival count the PLC computed for the acked command"),
)
POINT = {p.name: p for p in MODBUS_MAP}
_HOLDING_SIZE = 16
_INPUT_SIZE = 16


def _i32_registers(value: int) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">i", max(-(2**31), min(2**31 - 1, value)))))


def _u32_registers(value: int) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">I", max(0, min(2**32 - 1, value)))))


def _status_word(plc: VirtualPlc) -> int:
    """The status bits, as the discrete inputs 0–3 and input register ``status`` show them."""
    status = plc.status()
    return (
        int(status.gate_active)
        | int(status.fail_safe) << 1
        | int(plc.mode == "handshake") << 2
        | int(plc.no_verdict == "reject") << 3
    )


def _i32(registers: list[int], address: int) -> int:
    return int(struct.unpack(">i", struct.pack(">HH", registers[address], registers[address + 1]))[0])


def _u32(registers: list[int], address: int) -> int:
    return (registers[address] << 16) | registers[address + 1]


class ModbusPlcServer:
    """A Modbus TCP server on 127.0.0.1 playing the PLC side of ``plc``.

    ``port=0`` picks a free port; :attr:`port` is the one bound. A port already in use raises
    :class:`~lineguard.sim.plc.PlcPortInUseError` naming ``modbus_port``.
    """

    def __init__(self, plc: VirtualPlc, *, port: int = 5020) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"modbus_port: expected 0..65535, got {port}")
        self.plc = plc
        self._requested_port = port
        self._server: ModbusTcpServer | None = None
        self.port: int = port

    async def __aenter__(self) -> ModbusPlcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        device = SimDevice(
            id=0,  # every unit id
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, count=_HOLDING_SIZE, datatype=DataType.REGISTERS)],
                [SimData(0, count=_INPUT_SIZE, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=self._action,
        )
        server = ModbusTcpServer(device, address=(HOST, self._requested_port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            await server.shutdown()
            if port_in_use(HOST, self._requested_port):
                raise PlcPortInUseError("modbus_port", self._requested_port, HOST) from None
            raise RuntimeError(f"modbus_port {self._requested_port}: could not listen on {HOST}: {exc}") from exc
        self._server = server
        self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    # -- every request passes here before the table is read or written ------------------------------
    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        del count
        plc = self.plc
        if function_code in (1, 5, 15):  # coils: bit 0 of register 0 is coil 0
            if values is not None and function_code != 1:
                first = address - start_address
                gate = POINT["gate_fire"].address
                if first <= gate < first + len(values) and values[gate - first]:
                    if plc.mode != "pulse":
                        return ExcCodes.ILLEGAL_ADDRESS
                    plc.fire_gate()
            registers[0] = (registers[0] & ~1) | int(plc.gate_active)
        elif function_code == 2:
            registers[0] = _status_word(plc)
        elif function_code == 4:
            registers[:_INPUT_SIZE] = self._input_registers()
        elif function_code in (6, 16) and values is not None:
            return self._write_holding(start_address, address, registers, [int(v) for v in values])
        return None

    def _write_holding(self, start_address: int, address: int, registers: list[int], values: list[int]) -> ExcCodes | None:
        first = address - start_address
        image = list(registers[:_HOLDING_SIZE])
        image[first : first + len(values)] = values
        written = range(first, first + len(values))
        strobe = POINT["strobe"].address
        if strobe in written and self.plc.mode != "handshake":
            return ExcCodes.ILLEGAL_ADDRESS
        if POINT["heartbeat"].address in written:
            self.plc.write_heartbeat(image[POINT["heartbeat"].address])
        if strobe in written:
            self.plc.strobe(
                HandshakeCommand(
                    strobe=image[strobe],
                    part_id=_u32(image, POINT["part_id"].address),
                    verdict=image[POINT["verdict"].address],
                    encoder_at_capture=_i32(image, POINT["encoder_at_capture"].address),
                    position_at_capture_counts=_i32(image, POINT["position_at_capture_counts"].address),
                )
            )
        return None

    def _input_registers(self) -> list[int]:
        plc = self.plc
        status = plc.status()
        ack = status.ack
        regs = [0] * _INPUT_SIZE

        def put(name: str, words: list[int]) -> None:
            a = POINT[name].address
            regs[a : a + len(words)] = words

        put("encoder", _i32_registers(status.encoder))
        if ack is not None:
            put("ack", [ack.strobe & 0xFFFF])
            put("ack_part_id", _u32_registers(ack.part_id))
            put("ack_status", [int(ack.status)])
            put("ack_arrival_count", _i32_registers(ack.arrival_count))
        put("shift_register_depth", [status.shift_register_depth])
        put("status", [_status_word(plc)])
        put("reject_distance_counts", _i32_registers(reject_distance_counts(plc.geometry)))
        put("encoder_counts_per_metre", _u32_registers(round(plc.geometry.encoder_counts_per_mm * 1000)))
        put("heartbeat_timeout_ms", [min(0xFFFF, round(plc.heartbeat_timeout_ms))])
        put("gate_pulse_ms", [min(0xFFFF, round(plc.gate_pulse_ms))])
        return regs
