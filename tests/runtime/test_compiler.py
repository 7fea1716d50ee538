"""A wrong recipe is caught before the line runs, with every error named by file:line:col, node and
param or port, and what was expected."""

from __future__ import annotations

import re
import textwrap

import pytest
from testnodes import compile_text, test_registry

from lineguard.runtime.compiler import apply_overrides, compile_document, compile_file
from lineguard.runtime.errors import RecipeError
from lineguard.runtime.loader import load_text


def recipe(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def at(text: str, token: str, nth: int = 0) -> str:
    """``recipe.yaml:LINE:COL`` of the nth occurrence of ``token`` in the dedented recipe."""
    text = recipe(text)
    index = -1
    for _ in range(nth + 1):
        index = text.index(token, index + 1)
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"recipe.yaml:{line}:{col}"


def at(text: str, token: str) -> str:
    """``recipe.yaml:LINE:COL`` of the first occurrence of ``token`` in the dedented recipe."""
    text = recipe(text)
    index = text.index(token)
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"recipe.yaml:{line}:{col}"


def expect_error(text: str, node: str, where: str, message: str) -> None:
    """Compiling ``text`` fails with ``message`` at ``where`` (FILE:LINE:COL) for ``node``."""
    with pytest.raises(RecipeError, match=re.escape(f"{where}: node '{node}'") + ".*" + re.escape(message)):
        compile_text(recipe(text))


def errors_of(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        compile_text(recipe(text))
    return [str(d) for d in info.value.diagnostics if d.severity == "error"]


GOOD = """
version: 1
line: {belt_speed_mm_s: 300}
nodes:
  src: {type: test.counter, params: {count: 3}}
  slow: {type: test.slow, in: {in: src.out}}
  sink: {type: test.collect, in: {in: [slow.out]}}
"""


def test_a_good_recipe_compiles_to_a_frozen_graph_in_topological_order():
    graph = compile_text(recipe(GOOD))
    assert graph.order == ("src", "slow", "sink")
    assert graph.line["belt_speed_mm_s"] == 300 and graph.line["mm_per_px"] == 0.5  # default applied
    assert graph.nodes["slow"].params["delay_s"] == 0  # param default applied
    with pytest.raises(TypeError):
        graph.nodes["src"].params["count"] = 5  # type: ignore[index]
    with pytest.raises(Exception, match="Frozen graph"):
        graph.dag.add_node("x")
    assert [w.name for w in graph.wires] == ["src.out->slow.in", "slow.out->sink.in"]
    assert graph.wires[0].queue == 4 and graph.wires[0].policy == "block"  # the port's declared default


def test_unknown_key_in_a_node_names_line_and_suggests():
    text = """
    version: 1
    nodes:
      src: {type: test.counter}
      slow: {type: test.slow, inputs: {in: src.out}}
    """
    expect_error(text, "slow", at(text, "inputs"), "expected one of the keys ['description', 'in', 'params', 'restart', 'type'], got unknown key 'inputs' (did you mean 'in'?)")


def test_wrong_param_type_and_range_name_the_param():
    text = """
    version: 1
    nodes:
      src: {type: test.counter, params: {count: many, period_s: -1}}
    """
    errs = errors_of(text)
    assert f"{at(text, 'many')}: node 'src' param 'count': expected an integer, got \"many\" (text)" in errs
    assert f"{at(text, '-1')}: node 'src' param 'period_s': expected a value ≥ 0, got -1 (an integer)" in errs


def test_unknown_param_is_an_error_at_its_key():
    text = """
    version: 1
    nodes:
      src: {type: test.counter, params: {cuont: 3}}
    """
    expect_error(text, "src", at(text, "cuont"), "param 'cuont': expected one of the keys ['count', 'fail_at', 'payload_bytes', 'period_s'], got unknown key 'cuont' (did you mean 'count'?)")


def test_unknown_node_type_suggests_the_nearest():
    text = """
    version: 1
    nodes:
      cam: {type: camera.patern}
    """
    expect_error(text, "cam", at(text, "camera.patern"), "expected a known node type, got 'camera.patern'; did you mean 'camera.pattern'?")


def test_a_pinned_version_that_does_not_exist_lists_those_that_do():
    text = """
    version: 1
    nodes:
      cam: {type: camera.pattern@v7}
    """
    expect_error(text, "cam", at(text, "camera.pattern@v7"), "expected a version of 'camera.pattern' that exists (v1), got v7")


def test_unknown_input_port_lists_the_real_ones():
    text = """
    version: 1
    nodes:
      src: {type: test.counter}
      slow: {type: test.slow, in: {inn: src.out}}
    """
    expect_error(text, "slow", at(text, "inn"), "port 'inn': expected an input of test.slow@v1 (in), got 'inn' (did you mean 'in'?)")


def test_unknown_output_port_names_the_source_node():
    text = """
    version: 1
    nodes:
      src: {type: test.counter}
      slow: {type: test.slow, in: {in: src.output}}
    """
    expect_error(text, "slow", at(text, "src.output"), "port 'in': expected an output of node 'src' (test.counter@v1: out), got 'output' (did you mean 'src.out'?)")


def test_a_wire_from_a_missing_node_suggests_the_nearest():
    text = """
    version: 1
    nodes:
      src: {type: test.counter}
      slow: {type: test.slow, in: {in: sorc.out}}
    """
    expect_error(text, "slow", at(text, "sorc.out"), "port 'in': expected a wire from an existing node, got 'sorc.out': there is no node 'sorc' (did you mean 'src'?)")


def test_port_kind_mismatch_names_both_ends_and_both_kinds():
    text = """
    version: 1
    nodes:
      abc: {type: test.letters}
      slow: {type: test.slow, in: {in: abc.out}}
    """
    expect_error(text, "slow", at(text, "abc.out"), "port 'in': expected kind 'number' for input 'slow.in', got kind 'letter' from output 'abc.out'")


def test_a_missing_required_input_is_an_error_at_the_node():
    text = """
    version: 1
    nodes:
      slow: {type: test.slow}
    """
    expect_error(text, "slow", at(text, "slow"), "port 'in': expected a wire into required input 'in' (kind 'number'), got none")


def test_a_double_wired_input_is_an_error():
    text = """
    version: 1
    nodes:
      a: {type: test.counter}
      b: {type: test.counter}
      slow: {type: test.slow, in: {in: [a.out, b.out]}}
    """
    expect_error(text, "slow", at(text, "in: ["), "port 'in': expected one wire into input 'in' (it takes a single source), got 2: double-wired")


def test_a_cycle_lists_its_members_in_order():
    text = """
    version: 1
    nodes:
      src: {type: test.counter}
      one: {type: test.collect, in: {in: [src.out, three.out]}}
      two: {type: test.slow, in: {in: one.count}}
      three: {type: test.slow, in: {in: two.out}}
    """
    expect_error(text, "one", at(text, "one"), "expected an acyclic graph, got a cycle: one → two → three → one")


def test_every_error_is_reported_in_one_pass():
    text = """
    version: 2
    nodes:
      src: {type: test.counter, params: {count: -5}}
      slow: {type: test.slo, in: {in: src.out}}
      sink: {type: test.collect, in: {in: [nothere.out]}, restart: {max_restarts: many}}
    """
    errs = errors_of(text)
    assert errs == [
        f"{at(text, '2')}: expected 1, got 2 (an integer)",
        f"{at(text, '-5')}: node 'src' param 'count': expected a value ≥ 0, got -5 (an integer)",
        f"{at(text, 'test.slo')}: node 'slow': expected a known node type, got 'test.slo'; did you mean 'test.slow'?",
        f"{at(text, 'nothere.out')}: node 'sink' port 'in': expected a wire from an existing node, got 'nothere.out': there is no node 'nothere'",
        f"{at(text, 'many')}: node 'sink': expected an integer, got \"many\" (text)",
    ]


def test_a_bad_wire_shape_says_what_a_wire_looks_like():
    text = """
    version: 1
    nodes:
      src: {type: test.counter}
      slow: {type: test.slow, in: {in: src}}
    """
    expect_error(text, "slow", at(text, "src}}"), "port 'in': expected 'node.port', a list of them, or {from: 'node.port', queue: N, policy: block|drop_oldest|drop_newest}, got \"src\" (text)")


def test_a_wire_may_set_its_own_queue_and_policy():
    graph = compile_text(recipe("""
    version: 1
    nodes:
      src: {type: test.counter}
      slow: {type: test.slow, in: {in: {from: src.out, queue: 2, policy: drop_oldest}}}
      sink: {type: test.collect, in: {in: slow.out}}
    """))
    assert (graph.wires[0].queue, graph.wires[0].policy) == (2, "drop_oldest")


def test_a_bad_queue_policy_is_named():
    text = """
    version: 1
    nodes:
      src: {type: test.counter}
      slow: {type: test.slow, in: {in: {from: src.out, policy: drop_all}}}
    """
    expect_error(text, "slow", at(text, "drop_all"), "port 'in': expected one of [\"block\", \"drop_oldest\", \"drop_newest\"], got \"drop_all\" (text)")


def test_a_verdict_wire_that_could_drop_verdicts_is_refused():
    text = """
    version: 1
    line: {belt_speed_mm_s: 400, mm_per_px: 0.5, encoder_counts_per_mm: 10, reject_distance_mm: 800}
    nodes:
      cam: {type: camera.sim, params: {parts: 3}}
      det: {type: detector.truth, params: {image_size_px: [1280, 720]}, in: {truth: cam.truth}}
      trk: {type: tracker.belt, in: {detections: det.detections}}
      insp: {type: inspect.rules, in: {tracks: trk.tracks}}
      vote: {type: vote.part, in: {findings: insp.findings}}
      plc: {type: plc.modbus, params: {port: 5020}, in: {verdicts: {from: vote.verdicts, policy: drop_oldest}}}
    """
    expect_error(text, "plc", at(text, "{from: vote.verdicts"), "port 'verdicts': expected policy 'block' for input 'plc.verdicts', got 'drop_oldest': every part_verdict must arrive (a dropped one is a part without its verdict)")


def test_unused_outputs_are_warnings_not_errors():
    graph = compile_text(recipe("""
    version: 1
    nodes:
      src: {type: test.counter}
      abc: {type: test.letters}
      sink: {type: test.collect, in: {in: [src.out, abc.out]}}
    """))
    assert [str(w) for w in graph.warnings] == [
        "recipe.yaml:4:3: node 'abc' port 'spare': warning: output 'spare' (letter) is not wired to anything",
        "recipe.yaml:5:3: node 'sink' port 'count': warning: output 'count' (number) is not wired to anything",
    ]


def test_a_node_check_beyond_the_schema_names_the_param():
    text = """
    version: 1
    nodes:
      cam: {type: camera.pattern, params: {part_length_mm: 120, part_spacing_mm: 100}}
    """
    expect_error(text, "cam", at(text, "100"), "param 'part_spacing_mm': expected more than part_length_mm (120) so parts do not overlap, got 100")


def test_command_line_overrides_are_applied_and_checked():
    doc = load_text(recipe(GOOD), "recipe.yaml")
    apply_overrides(doc, ["slow.delay_s=0.25", "src.count=7"])
    graph = compile_document(doc, test_registry())
    assert graph.nodes["slow"].params["delay_s"] == 0.25 and graph.nodes["src"].params["count"] == 7

    doc = load_text(recipe(GOOD), "recipe.yaml")
    apply_overrides(doc, ["src.count=lots"])
    with pytest.raises(RecipeError, match=r"--set src.count=lots:1:11: node 'src' param 'count': expected an integer, got \"lots\""):
        compile_document(doc, test_registry())
    with pytest.raises(RecipeError, match=r"--set slw.delay_s=1:1:1: node 'slw': expected an existing node, got 'slw' \(did you mean 'slow'\?\)"):
        apply_overrides(load_text(recipe(GOOD), "recipe.yaml"), ["slw.delay_s=1"])
    with pytest.raises(RecipeError, match=r"expected NODE.PARAM=VALUE, got 'slow'"):
        apply_overrides(load_text(recipe(GOOD), "recipe.yaml"), ["slow"])


def test_shipped_recipes_compile(tmp_path):
    from importlib import resources

    shipped = [p for p in resources.files("lineguard.graphs").iterdir() if p.name.endswith(".yaml")]
    assert shipped, "no shipped recipes found as package data"
    for path in shipped:
        with resources.as_file(path) as real:
            graph = compile_file(real)
        assert not graph.warnings, [str(w) for w in graph.warnings]
