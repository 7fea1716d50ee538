"""The built-in node types. One module per node type; add new ones to ``BUILTIN_NODES``."""

from lineguard.nodes.camera_opencv import OpenCvCamera
from lineguard.nodes.camera_pattern import PatternCamera
from lineguard.nodes.camera_sim import SimCamera
from lineguard.nodes.image_stats import ImageStats
from lineguard.nodes.plc_modbus import ModbusPlcOutput
from lineguard.nodes.plc_opcua import OpcUaPlcOutput
from lineguard.nodes.record_jsonl import RecordJsonl

BUILTIN_NODES = [PatternCamera, SimCamera, OpenCvCamera, ImageStats, RecordJsonl, ModbusPlcOutput, OpcUaPlcOutput]

__all__ = ["BUILTIN_NODES"]
