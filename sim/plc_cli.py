"""``lineguard sim plc``: run the virtual PLC standalone, on real time, until Ctrl-C or --duration-s.

Without a conveyor it scores a seeded periodic part stream (:func:`lineguard.sim.plc.iter_periodic_parts`):
the first part starts one pitch upstream of the camera when the PLC starts (time 0, encoder 0).
A vision side under test talks to the Modbus and/or OPC UA server (docs/plc-map.md); at the end
the PLC prints its score of every part that reached the gate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from lineguard.runtime.clock import Clock
from lineguard.sim.plc import MODES, NO_VERDICT, PlcPortInUseError, PlcReport, VirtualPlc, iter_periodic_parts
from lineguard.sim.truth import BeltGeometry, PartTruth

EXIT_OK = 0
EXIT_USAGE = 2
FEED_AHEAD_S = 1.0  # parts are handed to the PLC 1-2 s before they reach the camera

DESCRIPTION = """\
Run the virtual PLC on 127.0.0.1: a Modbus TCP server and/or an OPC UA server playing the PLC side of
the reject contract (docs/plc-map.md), in pulse or handshake mode, with the heartbeat watchdog.
It follows a seeded periodic part stream (no conveyor needed): the first part starts one pitch
upstream of the camera at start-up (time 0, encoder 0). On Ctrl-C or after --duration-s it prints
its score of every part that reached the gate: rejected?, defective?, timing error in mm.

examples:
  lineguard sim plc --modbus-port 5020 --mode pulse
  lineguard sim plc --modbus-port 5020 --opcua-port 4840 --duration-s 60 --json > report.json
"""


def register(sim_subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plc`` command to ``lineguard sim``."""
    p = sim_subparsers.add_parser(
        "plc",
        help="virtual PLC: Modbus TCP / OPC UA servers on loopback that score every reject",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--modbus-port", type=int, metavar="P", help="serve Modbus TCP on 127.0.0.1:P (0 = any free port)")
    p.add_argument("--opcua-port", type=int, metavar="Q", help="serve OPC UA on opc.tcp://127.0.0.1:Q/")
    p.add_argument("--mode", choices=MODES, default="handshake", help="reject mode (default: handshake)")
    p.add_argument("--heartbeat-timeout-ms", type=float, default=500.0, metavar="MS", help="watchdog: no heartbeat change for this long => reject every part (0 = off; default 500)")
    p.add_argument("--no-verdict", choices=NO_VERDICT, default="reject", help="handshake: a part reaching the gate without an accepted verdict is rejected (positive release, the default) or let pass")
    p.add_argument("--ack-delay-ms", type=float, default=0.0, metavar="MS", help="handshake: a command's ack shows this long after its strobe, as on a PLC's next scan (default 0)")
    p.add_argument("--gate-pulse-ms", type=float, default=50.0, metavar="MS", help="how long one firing keeps the gate active (default 50)")
    p.add_argument("--belt-speed-mm-s", type=float, default=400.0, metavar="V", help="default 400")
    p.add_argument("--reject-distance-mm", type=float, default=800.0, metavar="MM", help="camera axis to reject gate (default 800)")
    p.add_argument("--encoder-counts-per-mm", type=float, default=10.0, metavar="N", help="default 10")
    p.add_argument("--gate-window-mm", type=float, default=40.0, metavar="MM", help="belt length the gate covers (default 40)")
    p.add_argument("--part-spacing-mm", type=float, default=260.0, metavar="MM", help="pitch of the part stream (default 260)")
    p.add_argument("--defect-rate", type=float, default=0.25, metavar="R", help="share of defective parts (default 0.25)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the part stream (default 0)")
    p.add_argument("--duration-s", type=float, metavar="S", help="stop after S seconds (default: run until Ctrl-C)")
    p.add_argument("--parts-out", metavar="FILE", help="with --duration-s: write the part stream (the truth) as JSON first")
    p.add_argument("--json", action="store_true", help="print the final report as JSON instead of tables")
    p.set_defaults(func=cmd_plc)


def _option(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_plc(args: argparse.Namespace) -> int:
    if args.modbus_port is None and args.opcua_port is None:
        return _usage_error("give --modbus-port and/or --opcua-port: the PLC needs at least one server")
    for name in ("modbus_port", "opcua_port"):
        port = getattr(args, name)
        if port is not None and not (0 if name == "modbus_port" else 1) <= port <= 65535:
            return _usage_error(f"{_option(name)}: expected a port number, got {port}")
    if args.duration_s is not None and not args.duration_s > 0:
        return _usage_error(f"--duration-s: expected > 0, got {args.duration_s}")
    if args.parts_out and args.duration_s is None:
        return _usage_error("--parts-out needs --duration-s (an endless part stream cannot be written up front)")
    try:
        geometry = BeltGeometry(
            belt_speed_mm_s=args.belt_speed_mm_s,
            reject_distance_mm=args.reject_distance_mm,
            encoder_counts_per_mm=args.encoder_counts_per_mm,
            gate_window_mm=args.gate_window_mm,
        )
        stream = iter_periodic_parts(spacing_mm=args.part_spacing_mm, defect_rate=args.defect_rate, seed=args.seed)
        stream = itertools.chain([next(stream)], stream)  # the first part checks the arguments
    except ValueError as exc:
        return _usage_error(_cli_message(str(exc)))
    if args.parts_out:
        parts = _parts_until(stream, geometry, args.duration_s)
        Path(args.parts_out).write_text(json.dumps([_part_record(p, geometry) for p in parts], indent=2), encoding="utf-8")
        stream = iter(parts)
    _quiet_protocol_logs()
    try:
        report = asyncio.run(_serve(args, geometry, stream))
    except PlcPortInUseError as exc:
        return _usage_error(f"{_option(exc.parameter)} {exc.port} is already in use on {exc.host}: stop whatever listens there or choose another port")
    except ValueError as exc:
        return _usage_error(_cli_message(str(exc)))
    if args.json:
        print(report.to_json())
    else:
        Console().print(report)
    return EXIT_OK


def _cli_message(message: str) -> str:
    """'belt_speed_mm_s: expected ...' -> '--belt-speed-mm-s: expected ...' (param names as options)."""
    aliases = {"spacing_mm": "part_spacing_mm"}
    name, sep, rest = message.partition(":")
    if sep and name.isidentifier():
        return f"{_option(aliases.get(name, name))}:{rest}"
    return message


async def _serve(args: argparse.Namespace, geometry: BeltGeometry, stream: Iterator[PartTruth]) -> PlcReport:
    from lineguard.sim.plc_modbus import ModbusPlcServer
    from lineguard.sim.plc_opcua import OpcUaPlcServer

    clock = Clock()
    plc = VirtualPlc(
        geometry, [], clock,
        mode=args.mode, heartbeat_timeout_ms=args.heartbeat_timeout_ms, gate_pulse_ms=args.gate_pulse_ms, no_verdict=args.no_verdict,
        ack_delay_ms=args.ack_delay_ms,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(plc)
            where = []
            if args.modbus_port is not None:
                modbus = await stack.enter_async_context(ModbusPlcServer(plc, port=args.modbus_port))
                where.append(f"Modbus TCP 127.0.0.1:{modbus.port} (unit 1)")
            if args.opcua_port is not None:
                opcua = await stack.enter_async_context(OpcUaPlcServer(plc, port=args.opcua_port))
                where.append(f"OPC UA {opcua.endpoint} (ns {opcua.namespace_index}, object Line)")
            until = f"for {args.duration_s:g} s" if args.duration_s else "until Ctrl-C"
            print(f"virtual PLC ({args.mode} mode) on {', '.join(where)}; running {until}", file=sys.stderr, flush=True)
            feeder = asyncio.create_task(_feed(plc, clock, geometry, stream))
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.duration_s):
                        await stop.wait()
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
    return plc.report()


async def _feed(plc: VirtualPlc, clock: Clock, geometry: BeltGeometry, stream: Iterator[PartTruth]) -> None:
    """Hand parts to the PLC FEED_AHEAD_S before they reach the camera, so the stream can be endless."""
    stream = iter(stream)
    while True:
        horizon_ns = clock.now_ns() + round(2 * FEED_AHEAD_S * 1e9)
        batch = []
        for part in stream:
            batch.append(part)
            if part.t_at_position_ns(geometry, 0.0) > horizon_ns:
                break
        if not batch:
            return
        plc.add_parts(batch)
        await clock.sleep(FEED_AHEAD_S)


def _parts_until(stream: Iterator[PartTruth], geometry: BeltGeometry, duration_s: float) -> list[PartTruth]:
    """The parts that reach the camera within ``duration_s``."""
    end_ns = round(duration_s * 1e9)
    return list(itertools.takewhile(lambda p: p.t_at_position_ns(geometry, 0.0) <= end_ns, stream))


def _part_record(part: PartTruth, geometry: BeltGeometry) -> dict[str, Any]:
    return {
        "part_id": part.part_id,
        "part_type": part.part_type,
        "defective": part.defective,
        "defect_kinds": list(part.defect_kinds),
        "x0_mm": part.x0_mm,
        "t_at_camera_ns": part.t_at_position_ns(geometry, 0.0),
        "t_at_reject_ns": part.t_at_reject_ns(geometry),
        "encoder_at_camera": geometry.encoder_at(part.t_at_position_ns(geometry, 0.0)),
        "encoder_at_reject": part.encoder_at_reject(geometry),
    }


def _quiet_protocol_logs() -> None:
    """asyncua and pymodbus chat at INFO/WARNING about things that are fine here (no security policy)."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("asyncua", "pymodbus"):
            logging.getLogger(name).setLevel(logging.ERROR)
