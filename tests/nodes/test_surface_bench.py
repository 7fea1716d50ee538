"""``lineguard bench surface``: the surface check's cost per part, with its components and without."""

from __future__ import annotations

import json

import pytest

from lineguard.nodes.inspect_surface import load_references, save_references
from lineguard.nodes.surface_bench import DEFAULT_REFERENCE, bench_surface
from lineguard.runtime.cli import main


def test_the_bench_judges_simulated_parts_with_and_without_components_and_prints_the_ratio(capsys):
    assert main(["bench", "surface", "--parts", "4", "--rounds", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["parts_judged"] >= 2 and set(r["part_types"]) == {"bracket", "pcb"}
    assert r["components"]["pcb"] >= 5 and r["components"]["bracket"] >= 1  # the shipped reference's windows
    assert 0 < r["judge_part_wide_ms"] and 0 < r["judge_with_components_ms"] and 0 < r["register_crop_ms_p50"]
    assert r["ratio"] == pytest.approx(r["judge_with_components_ms"] / r["judge_part_wide_ms"], abs=0.01)
    assert r["met"] == (r["judge_with_components_ms"] < r["target_ms"])


def test_the_bench_names_a_reference_it_cannot_read(tmp_path, capsys):
    missing = tmp_path / "nowhere.npz"
    assert main(["bench", "surface", str(missing), "--parts", "2"]) == 1
    assert str(missing) in capsys.readouterr().err


def test_a_reference_for_a_part_type_the_simulated_line_never_carries_is_refused_by_name(tmp_path):
    refs, meta = load_references(DEFAULT_REFERENCE)
    foreign = tmp_path / "gasket.npz"
    save_references(foreign, {"gasket": refs["pcb"]}, meta["mm_per_px"])
    with pytest.raises(ValueError, match=r"no whole part of gasket was seen in 3 simulated parts: try more --parts"):
        bench_surface(foreign, parts=3, rounds=1)
