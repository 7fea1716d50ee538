"""Node types come from the built-ins and from installed plugins; clashes are loud."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from lineguard.runtime.errors import RegistryError
from lineguard.runtime.node import Node, OutPort
from lineguard.runtime.registry import Registry, default_registry


class Impostor(Node):
    """Claims the id of the built-in pattern camera."""

    type_name = "camera.pattern"
    version = 1
    outputs = {"image": OutPort("image")}


def test_a_duplicate_type_id_fails_naming_both_sources():
    registry = default_registry(include_entry_points=False)
    with pytest.raises(RegistryError, match=r"node type 'camera.pattern@v1' is defined twice: by lineguard.nodes.camera_pattern:PatternCamera and by .*test_registry.*:Impostor"):
        registry.register(Impostor)


def test_a_new_version_lives_beside_the_old_and_is_the_default():
    class PatternV2(Impostor):
        version = 2

    registry = default_registry(include_entry_points=False)
    registry.register(PatternV2)
    assert registry.resolve("camera.pattern") is PatternV2
    assert registry.resolve("camera.pattern@v1").__name__ == "PatternCamera"


def test_a_badly_named_type_is_refused():
    class Bad(Node):
        type_name = "Camera"

    with pytest.raises(RegistryError, match=r"type_name must look like 'family.name' \(lowercase, dotted\), got 'Camera'"):
        Registry().register(Bad)


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed third-party distribution (a real dist-info on sys.path) with entry points."""

    def make(module_source: str, entry_points: str) -> None:
        (tmp_path / "acme_nodes.py").write_text(textwrap.dedent(module_source))
        info = tmp_path / "acme_nodes-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-nodes\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()

    yield make
    sys.modules.pop("acme_nodes", None)


def test_third_party_nodes_are_found_through_the_entry_point_group(plugin_dist):
    plugin_dist(
        """
        from lineguard.runtime.node import InPort, Node

        class Blink(Node):
            \"\"\"Counts frames.\"\"\"
            type_name = "acme.blink"
            inputs = {"image": InPort("image")}

            async def process(self, port, envelope):
                pass
        """,
        "[lineguard.nodes]\nblink = acme_nodes:Blink\n",
    )
    registry = default_registry()
    assert registry.resolve("acme.blink").__module__ == "acme_nodes"
    assert "entry point 'blink' (acme_nodes:Blink) of acme-nodes" in registry.source_of(registry.resolve("acme.blink"))


def test_a_plugin_that_clashes_with_a_built_in_is_loud(plugin_dist):
    plugin_dist(
        """
        from lineguard.runtime.node import Node, OutPort

        class Cam(Node):
            type_name = "camera.pattern"
            outputs = {"image": OutPort("image")}
        """,
        "[lineguard.nodes]\ncam = acme_nodes:Cam\n",
    )
    with pytest.raises(RegistryError, match=r"'camera.pattern@v1' is defined twice: by lineguard.nodes.camera_pattern:PatternCamera and by entry point 'cam' \(acme_nodes:Cam\) of acme-nodes"):
        default_registry()


def test_a_plugin_that_cannot_be_imported_is_loud(plugin_dist):
    plugin_dist("raise ImportError('needs libfoo.so')\n", "[lineguard.nodes]\nbroken = acme_nodes:Nothing\n")
    with pytest.raises(RegistryError, match=r"entry point 'broken' \(acme_nodes:Nothing\) of acme-nodes: could not be loaded: ImportError: needs libfoo.so"):
        default_registry()
