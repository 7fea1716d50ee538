"""``record.jsonl``: one JSON line per envelope, to a file or standard output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import supervision as sv

from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node


def to_jsonable(value: Any) -> Any:
    """Payloads as JSON: objects with ``to_json()`` use it; detections become one record per box;
    arrays become a shape summary."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, sv.Detections):
        names = value.data.get("class_name", [""] * len(value))
        conf = value.confidence if value.confidence is not None else np.ones(len(value))
        return [
            {"class_id": int(c), "class_name": str(n), "conf": round(float(p), 5), "xyxy": [round(float(v), 2) for v in box]}
            for c, n, p, box in zip(value.class_id, names, conf, value.xyxy)
        ]
    if isinstance(value, np.ndarray):
        return {"array": {"shape": list(value.shape), "dtype": str(value.dtype)}}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


class RecordJsonl(Node):
    """Writes every envelope it receives as one JSON line: ``{node, port, frame_id, t_capture_ns,
    encoder, payload}``. Images are summarised by shape; payloads with ``to_json()`` use it.

    ``path: "-"`` writes to standard output. The file is flushed after every line, so a crash
    loses nothing that was recorded.

    Example:
        log:
          type: record.jsonl
          params: {path: out/stats.jsonl}
          in: {items: [stats.stats]}
    """

    type_name = "record.jsonl"
    version = 1
    inputs = {"items": InPort("any", multiple=True, queue=64, policy="block")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {"path": {"type": "string", "minLength": 1, "description": "File to append to, or '-' for stdout."}},
    }

    async def open(self) -> None:
        path = self.params["path"]
        if path == "-":
            self._out: TextIO = sys.stdout
            self._owned = False
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._out = open(path, "a", encoding="utf-8")
            self._owned = True

    async def process(self, port: str, envelope: Envelope) -> None:
        record = {
            "node": self.ctx.node_id,
            "frame_id": envelope.frame_id,
            "t_capture_ns": envelope.t_capture_ns,
            "encoder": envelope.encoder,
            "payload": to_jsonable(envelope.payload),
        }
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    async def close(self) -> None:
        if getattr(self, "_owned", False):
            self._out.close()
