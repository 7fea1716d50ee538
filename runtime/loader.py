"""YAML loading that remembers where every key and value came from.

Only the YAML core types are built (mappings, sequences, strings, numbers, booleans, null): no
Python object tags. Duplicate keys and merge keys (``<<``) are errors, so a recipe means exactly what
it says. The result is a plain document plus a :class:`SourceMap` from JSON paths to positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lineguard.runtime.errors import Diagnostic, Mark, RecipeError

JsonPath = tuple[str | int, ...]

_STANDARD_TAGS = {
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of a loaded document stands in its file."""

    file: str
    values: dict[JsonPath, Mark] = field(default_factory=dict)
    keys: dict[JsonPath, Mark] = field(default_factory=dict)

    def value(self, path: JsonPath) -> Mark:
        """The position of the value at ``path``, or of its nearest enclosing value."""
        for i in range(len(path), -1, -1):
            mark = self.values.get(tuple(path[:i]))
            if mark is not None:
                return mark
        return Mark(self.file, 1, 1)

    def key(self, path: JsonPath) -> Mark:
        """The position of the key that names ``path`` (falls back to the value's position)."""
        return self.keys.get(tuple(path)) or self.value(path)

    def set(self, path: JsonPath, mark: Mark) -> None:
        self.values[tuple(path)] = mark
        self.keys[tuple(path)] = mark


@dataclass
class LoadedDocument:
    data: Any
    source: SourceMap


def _mark(file: str, node: yaml.Node) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.source = SourceMap(file)
        self.errors: list[Diagnostic] = []
        self._scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.source.values[path] = _mark(self.file, node)
        if node.tag not in _STANDARD_TAGS:
            self.errors.append(
                Diagnostic(
                    _mark(self.file, node),
                    f"expected a plain YAML value, got the tag {node.tag!r} (tags are not allowed in recipes)",
                )
            )
            return None
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.errors.append(
                        Diagnostic(_mark(self.file, key_node), "expected a key, got a merge key '<<' (merge keys are not allowed in recipes; write the keys out)")
                    )
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self.errors.append(Diagnostic(_mark(self.file, key_node), "expected a plain key, got a mapping or list as key"))
                    continue
                key = str(key_node.value)
                if key in out:
                    first = self.source.keys[path + (key,)]
                    self.errors.append(
                        Diagnostic(
                            _mark(self.file, key_node),
                            f"expected each key once, got key '{key}' again (first at line {first.line})",
                        )
                    )
                    continue
                self.source.keys[path + (key,)] = _mark(self.file, key_node)
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)


def load_text(text: str, file: str = "<recipe>") -> LoadedDocument:
    """Parse ``text`` as one YAML document. Raises :class:`RecipeError` on any problem."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(file, mark.line + 1, mark.column + 1) if mark else Mark(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise RecipeError([Diagnostic(where, f"expected valid YAML, got a syntax error: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([Diagnostic(Mark(file, 1, 1), f"expected valid YAML, got: {exc}")]) from None
    if len(nodes) != 1 or nodes[0] is None:
        got = "an empty file" if not nodes or nodes[0] is None else f"{len(nodes)} documents"
        raise RecipeError([Diagnostic(Mark(file, 1, 1), f"expected one YAML document, got {got}")])
    builder = _Builder(file)
    data = builder.build(nodes[0], ())
    if builder.errors:
        raise RecipeError(builder.errors)
    return LoadedDocument(data, builder.source)


def load_file(path: str | Path) -> LoadedDocument:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([Diagnostic(Mark(str(path), 1, 1), "expected a recipe file, got no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([Diagnostic(Mark(str(path), 1, 1), f"expected a readable UTF-8 recipe file, got: {exc}")]) from None
    return load_text(text, str(path))


def parse_scalar(text: str) -> Any:
    """Parse a command-line value (``--set det.conf=0.4``) the way YAML would."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
