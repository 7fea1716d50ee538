"""Loading a recipe: positions of every key and value, and YAML that is refused."""

from __future__ import annotations

import pytest

from lineguard.runtime.errors import RecipeError
from lineguard.runtime.loader import load_file, load_text


def test_every_key_and_value_knows_its_line_and_column():
    doc = load_text("version: 1\nnodes:\n  cam:\n    type: camera.pattern\n    params: {fps: 30}\n", "line.yaml")
    assert doc.data["nodes"]["cam"]["params"]["fps"] == 30
    assert str(doc.source.key(("nodes", "cam"))) == "line.yaml:3:3"
    assert str(doc.source.value(("nodes", "cam", "type"))) == "line.yaml:4:11"
    assert str(doc.source.value(("nodes", "cam", "params", "fps"))) == "line.yaml:5:19"


def test_a_duplicate_key_is_an_error_naming_both_lines():
    text = "version: 1\nnodes:\n  cam: {type: camera.pattern}\n  cam: {type: image.stats}\n"
    with pytest.raises(RecipeError, match=r"line.yaml:4:3: expected each key once, got key 'cam' again \(first at line 3\)"):
        load_text(text, "line.yaml")


def test_python_object_tags_are_refused_without_being_built():
    text = "version: 1\nnodes: !!python/object/apply:os.system ['echo owned']\n"
    with pytest.raises(RecipeError, match=r"line.yaml:2:8: expected a plain YAML value, got the tag 'tag:yaml.org,2002:python/object/apply:os.system'"):
        load_text(text, "line.yaml")


def test_merge_keys_are_refused():
    text = "base: &b {fps: 30}\nnodes:\n  cam: {<<: *b, type: x}\n"
    with pytest.raises(RecipeError, match=r"line.yaml:3:9: expected a key, got a merge key '<<'"):
        load_text(text, "line.yaml")


def test_a_syntax_error_names_its_line():
    with pytest.raises(RecipeError, match=r"bad.yaml:3:\d+: expected valid YAML, got a syntax error"):
        load_text("version: 1\nnodes:\n  cam: {type: x]\n  det: {}\n", "bad.yaml")


def test_an_empty_file_is_an_error():
    with pytest.raises(RecipeError, match=r"empty.yaml:1:1: expected one YAML document, got an empty file"):
        load_text("# nothing here\n", "empty.yaml")


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(RecipeError, match=r"nowhere.yaml:1:1: expected a recipe file, got no such file"):
        load_file(tmp_path / "nowhere.yaml")
