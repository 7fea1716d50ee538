"""lineguard surface show (lineguard.nodes.surface_cli): what a surface reference holds."""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from lineguard.nodes import surface_cli
from lineguard.runtime.cli import main

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "sim-v8" / "surface.npz"


def test_surface_show_describes_the_shipped_reference_and_draws_it(tmp_path, capsys):
    assert main(["surface", "show", str(SHIPPED), "--json", "--out", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mm_per_px"] == 0.5
    assert {r["part_type"]: r["parts"] for r in shown["part_types"]} == {"bracket": 60, "pcb": 60}
    for r in shown["part_types"]:
        picture = cv2.imread(r["picture"])
        assert picture.shape[1] == 3 * r["size_px"][0]  # reference | variation | search mask
        assert 0.3 < r["searched"] < 0.9


def test_surface_show_prints_one_line_per_part_type_for_people(capsys):
    assert surface_cli.show(str(SHIPPED), None, as_json=False) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("surface.npz: taught at 0.5 mm/px")
    assert out[1].startswith("  bracket: 60 parts, ") and out[2].startswith("  pcb: 60 parts, ")
    assert all("of it searched" in line for line in out[1:])


def test_a_missing_reference_file_is_named_and_exits_1(tmp_path, capsys):
    assert main(["surface", "show", str(tmp_path / "none.npz")]) == 1
    assert "none.npz: no such reference file" in capsys.readouterr().err


def test_a_picture_that_cannot_be_written_is_an_error(tmp_path, capsys):
    (tmp_path / "bracket.png").mkdir()  # a folder where the picture should go
    assert main(["surface", "show", str(SHIPPED), "--out", str(tmp_path)]) == 1
    assert "could not write" in capsys.readouterr().err
