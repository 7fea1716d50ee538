"""The node type registry: built-ins plus third-party nodes from the entry-point group
``lineguard.nodes``.

An entry point names a :class:`~lineguard.runtime.node.Node` subclass, or a list of them::

    [project.entry-points."lineguard.nodes"]
    my_filter = "mypkg.nodes:MyFilter"

Two classes that claim the same ``type@vN`` id are an error naming both sources; nothing is
silently shadowed.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable
from importlib.metadata import entry_points

from lineguard.runtime.errors import RegistryError
from lineguard.runtime.node import QUEUE_POLICIES, Node

ENTRY_POINT_GROUP = "lineguard.nodes"
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_TYPE_REF = re.compile(r"^(?P<name>[^@\s]+)(@v(?P<version>\d+))?$")


def _origin(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Registry:
    def __init__(self) -> None:
        self._types: dict[str, type[Node]] = {}  # "name@vN" -> class
        self._sources: dict[str, str] = {}

    def register(self, cls: type[Node], source: str | None = None) -> None:
        source = source or _origin(cls)
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise RegistryError(f"{source}: expected a lineguard Node subclass, got {cls!r}")
        name = getattr(cls, "type_name", None)
        if not isinstance(name, str) or not _TYPE_NAME.match(name):
            raise RegistryError(f"{source}: type_name must look like 'family.name' (lowercase, dotted), got {name!r}")
        if not isinstance(cls.version, int) or cls.version < 1:
            raise RegistryError(f"{source}: version must be an integer ≥ 1, got {cls.version!r}")
        for port_name, port in cls.inputs.items():
            if port.policy not in QUEUE_POLICIES or port.queue < 1:
                raise RegistryError(f"{source}: input '{port_name}' needs queue ≥ 1 and a policy in {QUEUE_POLICIES}")
        type_id = cls.type_id()
        if type_id in self._types and self._types[type_id] is not cls:
            raise RegistryError(
                f"node type '{type_id}' is defined twice: by {self._sources[type_id]} and by {source}; "
                "rename one or bump its version"
            )
        self._types[type_id] = cls
        self._sources[type_id] = source

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            source = f"entry point '{ep.name}' ({ep.value}) of {ep.dist.name if ep.dist else 'unknown distribution'}"
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must be loud, and say which one
                raise RegistryError(f"{source}: could not be loaded: {type(exc).__name__}: {exc}") from exc
            for cls in obj if isinstance(obj, (list, tuple)) else [obj]:
                self.register(cls, source)

    # -- look-ups -------------------------------------------------------------------------------
    def __iter__(self) -> Iterable[type[Node]]:
        return iter(self._types[k] for k in sorted(self._types))

    def __len__(self) -> int:
        return len(self._types)

    def source_of(self, cls: type[Node]) -> str:
        return self._sources[cls.type_id()]

    def names(self) -> list[str]:
        return sorted({cls.type_name for cls in self._types.values()})

    def resolve(self, ref: str) -> type[Node]:
        """``camera.sim`` (newest version) or ``camera.sim@v1`` (pinned). Raises KeyError with a
        message that says what exists."""
        m = _TYPE_REF.match(ref)
        if not m:
            raise KeyError(f"expected a node type like 'family.name' or 'family.name@v1', got '{ref}'")
        name, version = m.group("name"), m.group("version")
        versions = sorted(cls.version for cls in self._types.values() if cls.type_name == name)
        if not versions:
            near = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known types: {', '.join(self.names())}"
            raise KeyError(f"expected a known node type, got '{name}'{hint}")
        if version is None:
            return self._types[f"{name}@v{versions[-1]}"]
        if int(version) not in versions:
            have = ", ".join(f"v{v}" for v in versions)
            raise KeyError(f"expected a version of '{name}' that exists ({have}), got v{version}")
        return self._types[f"{name}@v{version}"]


def default_registry(include_entry_points: bool = True) -> Registry:
    """Built-in node types, then third-party ones from installed packages."""
    registry = Registry()
    builtins = importlib.import_module("lineguard.nodes")
    for cls in builtins.BUILTIN_NODES:
        registry.register(cls)
    if include_entry_points:
        registry.load_entry_points()
    return registry
