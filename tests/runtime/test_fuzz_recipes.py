"""Whatever a recipe file holds, the compiler answers with compile errors, never a crash."""

from __future__ import annotations

import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testnodes import test_registry

from lineguard.runtime.compiler import CompiledGraph, compile_document
from lineguard.runtime.errors import RecipeError
from lineguard.runtime.loader import load_text

GOOD = """version: 1
line: {name: fuzz, belt_speed_mm_s: 400}
nodes:
  src: {type: test.counter, params: {count: 3, period_s: 0.01}}
  slow: {type: test.slow, params: {delay_s: 0.1}, in: {in: {from: src.out, queue: 2, policy: drop_oldest}}}
  both: {type: test.merge, in: {a: src.out, b: slow.out}}
  sink: {type: test.collect, in: {in: [both.out, src.out]}, restart: {max_restarts: 2}}
"""

REGISTRY = test_registry()
# Seeded by default, so a run is repeatable; LINEGUARD_FUZZ_EXAMPLES=20000 explores new ground.
FUZZ_EXAMPLES = int(os.environ.get("LINEGUARD_FUZZ_EXAMPLES", "300"))
DERANDOMIZE = "LINEGUARD_FUZZ_EXAMPLES" not in os.environ


def compiles_or_reports(text: str) -> None:
    try:
        graph = compile_document(load_text(text, "fuzz.yaml"), REGISTRY)
    except RecipeError as exc:
        assert exc.diagnostics, "a RecipeError must carry at least one diagnostic"
        for d in exc.diagnostics:
            assert str(d).startswith("fuzz.yaml:") or str(d).startswith("--set")
    else:
        assert isinstance(graph, CompiledGraph)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.sampled_from(["del", "ins", "rep"]), st.sampled_from(list(" :{}[],-.'\"#&*!|>\n\tabcxyz0123_@<"))), min_size=1, max_size=6))
def test_mutated_recipe_text_only_gives_compile_errors(edits):
    text = list(GOOD)
    for pos, op, ch in edits:
        pos = min(pos, len(text) - 1)
        if op == "del":
            del text[pos]
        elif op == "ins":
            text.insert(pos, ch)
        else:
            text[pos] = ch
    compiles_or_reports("".join(text))


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=12))
names = st.sampled_from(["src", "slow", "both", "sink", "x", "in", "out", "a", "b", "count", "type", "params", "from", "queue", "policy"])
refs = st.builds(lambda n, p: f"{n}.{p}", names, names)
values = st.recursive(st.one_of(scalars, refs), lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)), max_leaves=12)
node_types = st.sampled_from(["test.counter", "test.slow", "test.merge", "test.collect", "test.letters", "test.slow@v1", "test.slow@v9", "nope.node", "camera.pattern", "image.stats", "record.jsonl"])
nodes = st.dictionaries(
    names,
    st.fixed_dictionaries(
        {"type": node_types},
        optional={"params": st.dictionaries(names, values, max_size=3), "in": st.dictionaries(names, st.one_of(refs, st.lists(refs, max_size=3), values), max_size=3), "restart": values, "extra": values},
    ),
    min_size=1,
    max_size=6,
)
recipes = st.fixed_dictionaries({"version": st.one_of(st.just(1), scalars), "nodes": st.one_of(nodes, values)}, optional={"line": values, "clock": st.one_of(st.sampled_from(["sim", "wall"]), scalars)})


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(recipes)
def test_random_recipe_structures_only_give_compile_errors(recipe):
    compiles_or_reports(yaml.safe_dump(recipe, allow_unicode=True))
