"""``lineguard bench surface``: the surface check's cost per part, with its components and without."""

from __future__ import annotations

import json

import pytest

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
