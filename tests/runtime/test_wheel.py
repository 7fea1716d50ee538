"""A wheel installed away from the repository finds its shipped recipes and schemas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_a_wheel_installed_outside_the_repo_validates_the_shipped_recipes(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)], check=True, capture_output=True)
    [wheel] = wheels.glob("lineguard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lineguard/graphs/sim_line.yaml" in names and "lineguard/schemas/recipe.schema.json" in names
    assert not [n for n in names if n.split("/")[0] in ("runtime", "nodes", "sim", "tests")], "generic top-level packages leaked"

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import lineguard.runtime.cli as c; print(c.__file__); print(' '.join(c.shipped_recipes()))"], cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert where[0].startswith(str(site)), where[0]
    shipped = where[1].split()
    assert "sim_line" in shipped

    result = subprocess.run([sys.executable, "-m", "lineguard", "validate", "--json", *shipped], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(r["valid"] for r in report) and all(r["recipe"].startswith(str(site)) for r in report)
