"""Node descriptions for ``lineguard nodes`` and the combined JSON Schema for editors."""

from __future__ import annotations

import copy
from typing import Any

from lineguard.runtime.registry import Registry
from lineguard.runtime.schema import recipe_schema


def _param_rows(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    required = set(schema.get("required", []))
    rows = {}
    for name, sub in schema.get("properties", {}).items():
        t = sub.get("type") or ("enum" if "enum" in sub else "any")
        if "enum" in sub:
            t = "|".join(map(str, sub["enum"]))
        row = {"type": t if isinstance(t, str) else "|".join(t), "required": name in required}
        if "default" in sub:
            row["default"] = sub["default"]
        if "description" in sub:
            row["description"] = sub["description"]
        rows[name] = row
    return rows


def describe_nodes(registry: Registry, only: str | None = None) -> list[dict[str, Any]]:
    out = []
    for cls in registry:
        if only and only not in (cls.type_name, cls.type_id()):
            continue
        out.append(
            {
                "type": cls.type_id(),
                "source": registry.source_of(cls),
                "summary": cls.summary(),
                "inputs": {n: {"kind": p.kind, "required": p.required, "multiple": p.multiple, "queue": p.queue, "policy": p.policy} for n, p in cls.inputs.items()},
                "outputs": {n: {"kind": p.kind} for n, p in cls.outputs.items()},
                "params": _param_rows(cls.params_schema),
                "params_schema": cls.params_schema,
                "example": cls.example(),
            }
        )
    return out


def combined_schema(registry: Registry) -> dict[str, Any]:
    """The recipe schema with, per node type, its params schema (selected by ``type``)."""
    schema = copy.deepcopy(recipe_schema())
    schema["$id"] = "urn:lineguard:schema:recipe-with-nodes:v1"
    node = schema["$defs"]["node"]
    refs: list[str] = []
    rules = []
    for cls in registry:
        names = sorted({cls.type_id(), cls.type_name})
        refs.extend(names)
        key = cls.type_id().replace(".", "_").replace("@", "_")
        schema["$defs"][f"params_{key}"] = {"description": cls.summary(), **copy.deepcopy(cls.params_schema)}
        rules.append(
            {
                "if": {"properties": {"type": {"enum": names}}, "required": ["type"]},
                "then": {"properties": {"params": {"$ref": f"#/$defs/params_{key}"}, "in": {"propertyNames": {"enum": sorted(cls.inputs)}}}},
            }
        )
    node["properties"]["type"] = {**node["properties"]["type"], "enum": sorted(set(refs))}
    node["allOf"] = rules
    return schema
