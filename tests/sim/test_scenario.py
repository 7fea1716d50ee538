"""Scenarios: presets load, every parameter can be overridden, and bad input names the parameter."""

from __future__ import annotations

import dataclasses
import importlib.resources
import math

import pytest
import yaml

from lineguard.sim.parts import PART_TYPES
from lineguard.sim.scenario import PART_FOOTPRINT_MM, Scenario, known_scenarios, load_scenario


def _leaves(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in ("parts.mix", "defects.mix"):
            out.extend(_leaves(value, f"{name}."))
        else:
            out.append((name, value))
    return out


def test_presets_load_and_describe_themselves() -> None:
    assert set(known_scenarios()) >= {"nominal", "shift", "harsh"}
    for name in ("nominal", "shift", "harsh"):
        scenario = load_scenario(name)
        assert isinstance(scenario, Scenario)
        assert scenario.name == name and scenario.description


def test_shift_goes_beyond_the_nominal_lighting_blur_and_tilt_ranges() -> None:
    nominal, shift = load_scenario("nominal"), load_scenario("shift")
    assert shift.camera.tilt_deg[0] > nominal.camera.tilt_deg[1]
    assert shift.motion_blur_px > 2 * nominal.motion_blur_px
    assert shift.lighting.gain_range[0] < nominal.lighting.gain_range[0]
    assert shift.lighting.gradient[0] > nominal.lighting.gradient[1]
    assert shift.lighting.flicker_depth > nominal.lighting.flicker_depth


def test_default_camera_is_1280x720_at_half_a_millimetre_per_pixel_and_vga_is_a_preset() -> None:
    nominal = load_scenario("nominal")
    assert nominal.camera.resolution == (1280, 720)
    assert nominal.camera.mm_per_px == pytest.approx(0.5)
    vga = load_scenario("nominal", {"camera.resolution": "vga"})
    assert vga.camera.resolution == (640, 480)
    assert vga.camera.mm_per_px == pytest.approx(1.0)  # "auto" keeps 640 mm of belt in view


def test_dotted_and_nested_overrides_mean_the_same_and_seed_is_replaced() -> None:
    dotted = load_scenario("shift", {"lighting.gain_range": [0.8, 1.2], "camera.fps": 30}, seed=7)
    nested = load_scenario("shift", {"lighting": {"gain_range": [0.8, 1.2]}, "camera": {"fps": 30}}, seed=7)
    assert dotted == nested
    assert dotted.lighting.gain_range == (0.8, 1.2) and dotted.camera.fps == 30 and dotted.seed == 7
    assert dotted.camera.exposure_ms == load_scenario("shift").camera.exposure_ms  # the rest is untouched


def test_a_mix_override_replaces_the_whole_mix() -> None:
    only_pcbs = load_scenario("nominal", {"parts.mix": {"pcb": 1}})
    assert dict(only_pcbs.parts.mix) == {"pcb": 1.0}


def test_every_parameter_can_be_overridden_and_a_wrong_type_names_it() -> None:
    nominal = yaml.safe_load((importlib.resources.files("lineguard.sim") / "scenarios" / "nominal.yaml").read_text())
    leaves = _leaves({k: v for k, v in nominal.items() if k != "description"})
    assert len(leaves) > 30
    for name, value in leaves:
        assert load_scenario("nominal", {name: value}).to_dict() is not None
        with pytest.raises(ValueError, match=f"parameter '{name}'"):
            load_scenario("nominal", {name: "not-a-value"})


def test_to_dict_round_trips_through_overrides() -> None:
    harsh = load_scenario("harsh", seed=3)
    again = {k: v for k, v in harsh.to_dict().items() if k != "name"}
    assert dataclasses.replace(load_scenario("nominal", again), name="harsh") == harsh


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown scenario 'nominl': known scenarios are harsh, nominal, shift"):
        load_scenario("nominl")


def test_missing_scenario_file_is_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="scenario file .*nope.yaml' does not exist"):
        load_scenario(str(tmp_path / "nope.yaml"))


def test_unknown_parameter_suggests_the_nearest() -> None:
    with pytest.raises(ValueError, match=r"unknown parameter 'camera.fpz'; did you mean camera.fps\?"):
        load_scenario("nominal", {"camera.fpz": 30})
    with pytest.raises(ValueError, match=r"unknown parameter 'parts.mix.gear': expected one of pcb, bracket"):
        load_scenario("nominal", {"parts.mix": {"gear": 1}})


def test_negative_speed_is_refused_naming_the_parameter() -> None:
    with pytest.raises(ValueError, match=r"scenario 'nominal': parameter 'belt.speed_mm_s': expected a number > 0 \(mm/s\), got -400"):
        load_scenario("nominal", {"belt.speed_mm_s": -400})


def test_overlapping_parts_are_refused_naming_the_spacing() -> None:
    with pytest.raises(ValueError, match=r"parameter 'parts.spacing_mm': parts would overlap on the belt"):
        load_scenario("nominal", {"parts.spacing_mm": 150, "parts.spacing_jitter_mm": 0})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lighting.gain_range": [1.2, 0.8]}, r"parameter 'lighting.gain_range': expected \[low, high\] with low <= high"),
        ({"camera.exposure_ms": 20, "camera.fps": 60}, r"parameter 'camera.exposure_ms': expected <= the frame period"),
        ({"defects.misaligned_offset_mm": [1.0, 3.0]}, r"parameter 'defects.misaligned_offset_mm': a misalignment must be beyond tolerance"),
        ({"parts.placement_jitter_mm": 2.0}, r"parameter 'parts.placement_jitter_mm': good parts must stay within tolerance"),
        ({"parts.lateral_jitter_mm": 120}, r"parameter 'parts.lateral_jitter_mm': parts would hang over the belt edge"),
        ({"parts.count": 0}, r"parameter 'parts.count': expected an integer >= 1, got 0"),
        ({"defects.mix": {"scratch": 0}}, r"parameter 'defects.mix': expected at least one weight > 0"),
        ({"camera.resolution": [640]}, r"parameter 'camera.resolution': expected \[width, height\]"),
        ({"belt.speed_mm_s": 4000, "camera.exposure_ms": 10}, r"parameter 'camera.exposure_ms': motion blur of 80.0 px"),
    ],
)
def test_impossible_parameters_are_refused_naming_them(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_scenario("nominal", overrides)


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ValueError, match=r"parameter 'seed': expected an integer >= 0, got -1"):
        load_scenario("nominal", seed=-1)


def test_a_scenario_file_starts_from_its_base_and_changes_only_what_it_lists(tmp_path) -> None:
    path = tmp_path / "slow_line.yaml"
    path.write_text("base: shift\ndescription: slow belt\nbelt: {speed_mm_s: 250}\n")
    scenario = load_scenario(str(path))
    shift = load_scenario("shift")
    assert scenario.name == "slow_line" and scenario.belt.speed_mm_s == 250
    assert scenario.camera == shift.camera and scenario.lighting == shift.lighting


def test_a_bad_value_in_a_file_names_the_file_and_parameter(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("camera: {fps: -5}\n")
    with pytest.raises(ValueError, match=r"scenario '.*bad.yaml': parameter 'camera.fps': expected a number > 0"):
        load_scenario(str(path))


def test_the_overlap_check_knows_the_real_part_sizes() -> None:
    for name, ptype in PART_TYPES.items():
        assert PART_FOOTPRINT_MM[name] == (ptype.length_mm, ptype.width_mm)
    nominal = load_scenario("nominal")
    longest = max(math.hypot(*size) for size in PART_FOOTPRINT_MM.values())
    assert nominal.parts.spacing_mm - nominal.parts.spacing_jitter_mm > longest
