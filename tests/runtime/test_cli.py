"""The command line as a line engineer uses it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from lineguard.runtime.cli import main

BROKEN = textwrap.dedent("""\
    version: 1
    nodes:
      cam: {type: camera.pattern, params: {fps: fast}}
      stats: {type: image.stats, in: {image: cam.img}}
""")


PATTERN = textwrap.dedent("""\
    version: 1
    nodes:
      cam: {type: camera.pattern, params: {fps: 30, frames: 60}}
      stats: {type: image.stats, in: {image: cam.image}}
      log: {type: record.jsonl, params: {path: out/stats.jsonl}, in: {items: [stats.stats]}}
""")


@pytest.fixture
def pattern_recipe(tmp_path) -> Path:
    path = tmp_path / "pattern_line.yaml"
    path.write_text(PATTERN)
    return path


@pytest.fixture
def broken_recipe(tmp_path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    return path


def test_validate_ok_and_exit_0(capsys):
    assert main(["validate", "sim_line"]) == 0
    assert "ok: " in capsys.readouterr().out


def test_validate_prints_every_error_and_exits_1(broken_recipe, capsys):
    assert main(["validate", str(broken_recipe)]) == 1
    err = capsys.readouterr().err
    assert f"{broken_recipe}:3:45: node 'cam' param 'fps': expected a number, got \"fast\" (text)" in err
    assert f"{broken_recipe}:4:42: node 'stats' port 'image': expected an output of node 'cam' (camera.pattern@v1: image), got 'img' (did you mean 'cam.image'?)" in err


def test_validate_json_is_for_scripts(broken_recipe, capsys):
    assert main(["validate", "--json", str(broken_recipe), "sim_line"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert [r["valid"] for r in result] == [False, True]
    first = result[0]["errors"][0]
    assert (first["line"], first["col"], first["node"], first["param"]) == (3, 45, "cam", "fps")


def test_validate_set_overrides_a_param(pattern_recipe, capsys):
    assert main(["validate", str(pattern_recipe), "--set", "cam.fps=-3"]) == 1
    assert "--set cam.fps=-3:1:9: node 'cam' param 'fps': expected a value > 0, got -3" in capsys.readouterr().err


def test_graph_prints_dot(pattern_recipe, capsys):
    assert main(["graph", str(pattern_recipe), "--dot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "pattern_line"') and '"cam" -> "stats"' in out


def test_nodes_lists_ports_params_and_examples(capsys):
    assert main(["nodes", "camera.pattern"]) == 0
    out = capsys.readouterr().out
    assert "camera.pattern@v1" in out and "out image: image" in out and "param fps: number = 30" in out
    assert "type: camera.pattern" in out  # the docstring example


def test_nodes_schema_lets_an_editor_check_params(tmp_path, capsys):
    out_file = tmp_path / "lineguard.schema.json"
    assert main(["nodes", "--schema", "--out", str(out_file)]) == 0
    schema = json.loads(out_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    shipped = Path(__file__).parents[2] / "graphs"
    for recipe in shipped.glob("*.yaml"):
        assert not list(validator.iter_errors(yaml.safe_load(recipe.read_text()))), recipe
    bad = yaml.safe_load(BROKEN)
    messages = [e.message for e in validator.iter_errors(bad)]
    assert "'fast' is not of type 'number'" in messages


def test_run_on_the_sim_clock_prints_a_summary(pattern_recipe, tmp_path, capsys):
    assert main(["run", str(pattern_recipe), "--clock", "sim", "--max-frames", "20", "--set", f"log.path={tmp_path}/s.jsonl", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "completed" and report["clock"] == "sim"
    assert next(n for n in report["nodes"] if n["node"] == "cam")["out"] == {"image": 20}
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 20


def test_a_node_failure_exits_3_naming_the_node(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nnodes:\n  cam: {type: camera.pattern, params: {frames: 3}}\n  log: {type: record.jsonl, params: {path: /proc/forbidden/x.jsonl}, in: {items: [cam.image]}}\n")
    assert main(["run", str(recipe), "--clock", "sim"]) == 3
    assert "error: node 'log' (record.jsonl@v1) failed:" in capsys.readouterr().err


def test_help_documents_exit_codes():
    out = subprocess.run([sys.executable, "-m", "lineguard", "validate", "--help"], capture_output=True, text=True, check=True).stdout
    assert "exit codes:" in out and "1  invalid recipe" in out


def test_sigint_stops_a_live_run_cleanly_with_metrics_served(tmp_path):
    recipe = tmp_path / "endless.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        version: 1
        nodes:
          cam: {{type: camera.pattern, params: {{frames: 0, fps: 50}}}}
          stats: {{type: image.stats, in: {{image: cam.image}}}}
          log: {{type: record.jsonl, params: {{path: {tmp_path}/stats.jsonl}}, in: {{items: [stats.stats]}}}}
    """))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineguard", "--log-format", "json", "run", str(recipe), "--clock", "wall", "--metrics-port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url_line = proc.stderr.readline()
        assert url_line.startswith("metrics: http://127.0.0.1:"), url_line
        assert proc.stderr.readline().startswith("running ")  # signal handling is in place
        with urllib.request.urlopen(url_line.split()[1], timeout=10) as response:
            metrics = response.read().decode()
        assert "lineguard_node_envelopes_in_total" in metrics and "lineguard_edge_queue_depth" in metrics
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["status"] == "stopped"
    assert {n["node"]: n["state"] for n in report["nodes"]} == {"cam": "closed", "stats": "closed", "log": "closed"}
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    stopping = next(r for r in logs if "SIGINT received" in r["message"])
    assert stopping["level"] == "info" and stopping["logger"] == "lineguard.executor"
