"""JSON Schema helpers: the recipe schema, defaults, and errors in the words a line engineer reads.

Every message has the form ``expected …, got …``. The schema of the recipe file lives in
``schemas/recipe.schema.json``; node params schemas live with their node classes.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator

from lineguard.runtime.loader import JsonPath


@cache
def recipe_schema() -> dict[str, Any]:
    text = resources.files("lineguard.schemas").joinpath("recipe.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator_for_json(schema_json: str) -> Draft202012Validator:
    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    return _validator_for_json(json.dumps(schema, sort_keys=True))


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.SchemaError`` if ``schema`` itself is malformed."""
    Draft202012Validator.check_schema(dict(schema))


def apply_defaults(schema: Mapping[str, Any], instance: Any) -> Any:
    """A copy of ``instance`` with every missing property that has a ``default`` filled in,
    recursively through objects and arrays."""
    if isinstance(instance, dict) and schema.get("type") == "object" or (isinstance(instance, dict) and "properties" in schema):
        out = dict(instance)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in out:
                if key not in schema.get("properties", {}):
                    out[key] = apply_defaults(extra, out[key])
        return out
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in instance]
    return instance


def freeze(value: Any) -> Any:
    """Deeply immutable view: dicts become read-only mappings, lists become tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`, for JSON output."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class SchemaProblem:
    """One schema violation: where (a JSON path relative to the validated instance, and whether it
    points at a key) and what (``expected …, got …``)."""

    path: JsonPath
    message: str
    at_key: bool = False


_JSON_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "text",
    bool: "true/false",
    int: "an integer",
    float: "a number",
    type(None): "nothing (null)",
}


def describe_value(value: Any) -> str:
    kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    return f"{json.dumps(value, default=str)} ({kind})"


def _expected_type(t: str | list[str]) -> str:
    names = {
        "object": "a mapping",
        "array": "a list",
        "string": "text",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "null": "null",
    }
    if isinstance(t, list):
        return " or ".join(names.get(x, x) for x in t)
    return names.get(t, t)


def _descendants(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    for sub in error.context or ():
        if sub.validator in ("anyOf", "oneOf") and sub.context:
            yield from _descendants(sub)
        else:
            yield sub


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For anyOf/oneOf: if some alternative matched the shape and failed deeper inside, report what
    failed there (the most specific error); otherwise the alternatives' own summary."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return [error]
    leaves = list(_descendants(error))
    deepest = max(len(e.absolute_path) for e in leaves)
    if deepest > len(error.absolute_path):
        return [next(e for e in leaves if len(e.absolute_path) == deepest)]
    return [error]


def problems(schema: Mapping[str, Any], instance: Any) -> Iterator[SchemaProblem]:
    """Every violation of ``schema`` by ``instance``, translated."""
    for error in sorted(validator(schema).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        for leaf in _leaf_errors(error):
            yield from _translate(leaf)


def _translate(error: jsonschema.ValidationError) -> Iterator[SchemaProblem]:
    path: JsonPath = tuple(error.absolute_path)
    v, s, got = error.validator, error.schema, error.instance
    value = describe_value(got)
    if v == "additionalProperties":
        known = sorted(s.get("properties", {}))
        for key in sorted(set(got) - set(known)):
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            yield SchemaProblem(path + (key,), f"expected one of the keys {known}, got unknown key '{key}'{hint}", at_key=True)
        return
    if v == "propertyNames":
        bad = error.instance
        yield SchemaProblem(path + (bad,) if isinstance(bad, str) else path, f"expected a name of letters, digits and _, got '{bad}'", at_key=True)
        return
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield SchemaProblem(path, f"expected the key '{missing}', got none")
        return
    if v == "type":
        yield SchemaProblem(path, f"expected {_expected_type(error.validator_value)}, got {value}")
        return
    if v == "enum":
        yield SchemaProblem(path, f"expected one of {json.dumps(error.validator_value)}, got {value}")
        return
    if v == "const":
        yield SchemaProblem(path, f"expected {json.dumps(error.validator_value)}, got {value}")
        return
    bounds = {"minimum": "≥", "maximum": "≤", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if v in bounds:
        yield SchemaProblem(path, f"expected a value {bounds[v]} {error.validator_value}, got {value}")
        return
    sizes = {
        "minItems": "at least {} items",
        "maxItems": "at most {} items",
        "minLength": "at least {} characters",
        "maxLength": "at most {} characters",
        "minProperties": "at least {} entries",
        "maxProperties": "at most {} entries",
    }
    if v in sizes:
        yield SchemaProblem(path, f"expected {sizes[v].format(error.validator_value)}, got {value}")
        return
    if v in ("anyOf", "oneOf"):
        expected = s.get("x-expected") or s.get("description") or "a value of one of the allowed shapes"
        yield SchemaProblem(path, f"expected {expected}, got {value}")
        return
    if v == "pattern":
        expected = s.get("x-expected") or f"text matching /{error.validator_value}/"
        yield SchemaProblem(path, f"expected {expected}, got {value}")
        return
    if v == "uniqueItems":
        yield SchemaProblem(path, f"expected no repeated items, got {value}")
        return
    yield SchemaProblem(path, f"expected {s.get('x-expected') or s.get('description') or 'a valid value'}, got {value} ({error.message})")
