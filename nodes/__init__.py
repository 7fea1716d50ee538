"""The built-in node types. One module per node type; add new ones to ``BUILTIN_NODES``."""

from lineguard.nodes.camera_opencv import OpenCvCamera
from lineguard.nodes.camera_pattern import PatternCamera
from lineguard.nodes.augment import ImageAugment
from lineguard.nodes.camera_sim import SimCamera
from lineguard.nodes.detector_openvino import OpenVinoDetector
from lineguard.nodes.detector_truth import TruthDetector
from lineguard.nodes.image_stats import ImageStats
from lineguard.nodes.inspect_rules import RuleInspector
from lineguard.nodes.inspect_surface import SurfaceInspector
from lineguard.nodes.plc_modbus import ModbusPlcOutput
from lineguard.nodes.plc_opcua import OpcUaPlcOutput
from lineguard.nodes.record_jsonl import RecordJsonl
from lineguard.nodes.tracker_belt import BeltTracker
from lineguard.nodes.vote_part import PartVote

BUILTIN_NODES = [
    PatternCamera,
    SimCamera,
    OpenCvCamera,
    ImageStats,
    ImageAugment,
    OpenVinoDetector,
    TruthDetector,
    BeltTracker,
    RuleInspector,
    SurfaceInspector,
    PartVote,
    ModbusPlcOutput,
    OpcUaPlcOutput,
    RecordJsonl,
]

__all__ = ["BUILTIN_NODES"]
