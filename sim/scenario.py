"""Scenarios of the simulated line: named, seeded, fully overridable parameter sets.

A scenario says everything the renderer needs: camera (resolution, fps, scale, exposure, tilt,
noise), belt (speed, encoder, reject gate), parts (how many, which types, pitch, harmless variation),
defects (how often, which kinds, how strong), lighting nuisances and distractors.

Presets live next to this module in ``scenarios/*.yaml``: ``nominal`` (the reference, lists every
parameter), ``shift`` (lighting, blur and tilt beyond the nominal ranges) and ``harsh``. A scenario
file names a ``base`` preset (default ``nominal``) and only lists what it changes, so your own file
can be as short as::

    base: shift
    belt: {speed_mm_s: 250}

Overrides are applied on top, either nested or dotted (both may be mixed)::

    load_scenario("shift", {"lighting.gain_range": [0.8, 1.2], "camera": {"fps": 30}}, seed=7)

Every problem is a ``ValueError`` naming the parameter and what was expected: unknown scenario
(lists the known ones), unknown parameter (suggests the nearest), wrong type or range (jsonschema),
and impossible combinations (parts overlapping on the belt, exposure longer than a frame, ...).
Same scenario + same seed ⇒ the same run, byte for byte.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lineguard.sim.truth import DEFECT_KINDS, PART_KINDS, BeltGeometry

RESOLUTION_PRESETS = {"hd": (1280, 720), "vga": (640, 480)}
AUTO_FIELD_OF_VIEW_MM = 640.0  # mm_per_px "auto": this much belt across the image width


def known_scenarios() -> tuple[str, ...]:
    """Names of the shipped presets."""
    folder = importlib.resources.files("lineguard.sim") / "scenarios"
    return tuple(sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")))


# ---------------------------------------------------------------------------------------------
# Parameter records (frozen; ranges are (low, high) tuples, mixes are ((name, weight), ...))


@dataclass(frozen=True)
class CameraParams:
    resolution: tuple[int, int]
    fps: float
    mm_per_px: float
    exposure_ms: float
    hfov_deg: float
    tilt_deg: tuple[float, float]
    noise_sigma: float


@dataclass(frozen=True)
class BeltParams:
    speed_mm_s: float
    width_mm: float
    encoder_counts_per_mm: float
    reject_distance_mm: float
    gate_window_mm: float
    texture_contrast: float


@dataclass(frozen=True)
class PartsParams:
    count: int
    mix: tuple[tuple[str, float], ...]
    spacing_mm: float
    spacing_jitter_mm: float
    lateral_jitter_mm: float
    rotation_jitter_deg: float
    placement_jitter_mm: float
    placement_jitter_deg: float
    placement_tolerance_mm: float
    placement_tolerance_deg: float
    dust_per_part: tuple[int, int]


@dataclass(frozen=True)
class DefectParams:
    rate: float
    mix: tuple[tuple[str, float], ...]
    scratch_length_mm: tuple[float, float]
    scratch_contrast: tuple[float, float]
    misaligned_offset_mm: tuple[float, float]
    misaligned_rotation_deg: tuple[float, float]
    # fraction of scratches drawn through a component (chip, fastener) rather than anywhere on the
    # part: the hardest place to see one. For training sets; the scenarios keep 0 (anywhere).
    scratch_over_component: float = 0.0


@dataclass(frozen=True)
class LightingParams:
    gain_range: tuple[float, float]
    gradient: tuple[float, float]
    vignetting: float
    mains_hz: float
    flicker_depth: float
    specular_count: tuple[int, int]
    specular_intensity: tuple[float, float]


@dataclass(frozen=True)
class DistractorParams:
    gloves_per_min: float
    labels_per_m: float
    fixture_prob: float
    neighbours_per_min: float


@dataclass(frozen=True)
class Scenario:
    """A validated, resolved scenario. Build it with :func:`load_scenario`."""

    name: str
    description: str
    seed: int
    camera: CameraParams
    belt: BeltParams
    parts: PartsParams
    defects: DefectParams
    lighting: LightingParams
    distractors: DistractorParams

    @property
    def geometry(self) -> BeltGeometry:
        return BeltGeometry(
            belt_speed_mm_s=self.belt.speed_mm_s,
            reject_distance_mm=self.belt.reject_distance_mm,
            encoder_counts_per_mm=self.belt.encoder_counts_per_mm,
            gate_window_mm=self.belt.gate_window_mm,
        )

    @property
    def motion_blur_px(self) -> float:
        """Length of the motion-blur streak in image pixels: belt speed × exposure / scale."""
        return self.belt.speed_mm_s * self.camera.exposure_ms / 1000.0 / self.camera.mm_per_px

    def to_dict(self) -> dict[str, Any]:
        """The resolved parameters as plain data (YAML/JSON ready), e.g. for a dataset's metadata."""
        out = asdict(self)
        out["parts"]["mix"] = dict(self.parts.mix)
        out["defects"]["mix"] = dict(self.defects.mix)

        def plain(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return v

        return plain(out)


# ---------------------------------------------------------------------------------------------
# Schema: types and single-value ranges. Cross-parameter rules are in _check_consistency.


def _num(expected: str, **bounds: float) -> dict[str, Any]:
    return {"type": "number", "description": expected, **bounds}


def _range(expected: str, item_type: str = "number", **bounds: float) -> dict[str, Any]:
    return {
        "type": "array",
        "description": f"[low, high] with low <= high, each {expected}",
        "items": {"type": item_type, **bounds},
        "minItems": 2,
        "maxItems": 2,
    }


def _mix(names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"weights >= 0 for some of {', '.join(names)}, not all 0",
        "properties": {n: {"type": "number", "minimum": 0} for n in names},
        "additionalProperties": False,
        "minProperties": 1,
    }


def _section(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["description", "seed", "camera", "belt", "parts", "defects", "lighting", "distractors"],
    "properties": {
        "base": {"type": "string", "description": "name of the preset this file starts from"},
        "description": {"type": "string", "description": "a string"},
        "seed": {"type": "integer", "minimum": 0, "description": "an integer >= 0"},
        "camera": _section(
            {
                "resolution": {
                    "description": '[width, height] in px (each 64..4096) or "hd" / "vga"',
                    "oneOf": [
                        {"enum": list(RESOLUTION_PRESETS)},
                        {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 64, "maximum": 4096},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    ],
                },
                "fps": _num("a number > 0 and <= 1000 (frames/s)", exclusiveMinimum=0, maximum=1000),
                "mm_per_px": {
                    "description": 'a number > 0 (mm per pixel) or "auto"',
                    "oneOf": [{"const": "auto"}, {"type": "number", "exclusiveMinimum": 0}],
                },
                "exposure_ms": _num("a number >= 0 (ms)", minimum=0),
                "hfov_deg": _num("a number in (0, 120) (degrees)", exclusiveMinimum=0, exclusiveMaximum=120),
                "tilt_deg": _range("a number in [0, 20] (degrees)", minimum=0, maximum=20),
                "noise_sigma": _num("a number in [0, 50] (grey levels)", minimum=0, maximum=50),
            }
        ),
        "belt": _section(
            {
                "speed_mm_s": _num("a number > 0 (mm/s)", exclusiveMinimum=0),
                "width_mm": _num("a number > 0 (mm)", exclusiveMinimum=0),
                "encoder_counts_per_mm": _num("a number > 0", exclusiveMinimum=0),
                "reject_distance_mm": _num("a number > 0 (mm)", exclusiveMinimum=0),
                "gate_window_mm": _num("a number > 0 (mm)", exclusiveMinimum=0),
                "texture_contrast": _num("a number in [0, 1]", minimum=0, maximum=1),
            }
        ),
        "parts": _section(
            {
                "count": {"type": "integer", "minimum": 1, "maximum": 100000, "description": "an integer >= 1"},
                "mix": _mix(PART_KINDS),
                "spacing_mm": _num("a number > 0 (mm)", exclusiveMinimum=0),
                "spacing_jitter_mm": _num("a number >= 0 (mm)", minimum=0),
                "lateral_jitter_mm": _num("a number >= 0 (mm)", minimum=0),
                "rotation_jitter_deg": _num("a number in [0, 45] (degrees)", minimum=0, maximum=45),
                "placement_jitter_mm": _num("a number >= 0 (mm)", minimum=0),
                "placement_jitter_deg": _num("a number >= 0 (degrees)", minimum=0),
                "placement_tolerance_mm": _num("a number > 0 (mm)", exclusiveMinimum=0),
                "placement_tolerance_deg": _num("a number > 0 (degrees)", exclusiveMinimum=0),
                "dust_per_part": _range("an integer in [0, 200]", "integer", minimum=0, maximum=200),
            }
        ),
        "defects": _section(
            {
                "rate": _num("a number in [0, 1]", minimum=0, maximum=1),
                "mix": _mix(DEFECT_KINDS),
                "scratch_length_mm": _range("a number > 0 (mm)", exclusiveMinimum=0),
                "scratch_contrast": _range("a number in (0, 1]", exclusiveMinimum=0, maximum=1),
                "scratch_over_component": _num("a number in [0, 1]", minimum=0, maximum=1),
                "misaligned_offset_mm": _range("a number >= 0 (mm)", minimum=0),
                "misaligned_rotation_deg": _range("a number in [0, 90] (degrees)", minimum=0, maximum=90),
            }
        ),
        "lighting": _section(
            {
                "gain_range": _range("a number in (0, 4]", exclusiveMinimum=0, maximum=4),
                "gradient": _range("a number in [0, 0.9]", minimum=0, maximum=0.9),
                "vignetting": _num("a number in [0, 0.9]", minimum=0, maximum=0.9),
                "mains_hz": _num("a number > 0 (Hz)", exclusiveMinimum=0),
                "flicker_depth": _num("a number in [0, 1]", minimum=0, maximum=1),
                "specular_count": _range("an integer in [0, 8]", "integer", minimum=0, maximum=8),
                "specular_intensity": _range("a number in [0, 255] (grey levels)", minimum=0, maximum=255),
            }
        ),
        "distractors": _section(
            {
                "gloves_per_min": _num("a number >= 0 (events per minute)", minimum=0),
                "labels_per_m": _num("a number >= 0 (labels per metre of belt)", minimum=0),
                "fixture_prob": _num("a number in [0, 1]", minimum=0, maximum=1),
                "neighbours_per_min": _num("a number >= 0 (events per minute)", minimum=0),
            }
        ),
    },
}

# Part length x width (mm); keep in step with sim/parts.py (checked by a test).
PART_FOOTPRINT_MM = {"pcb": (150.0, 100.0), "bracket": (140.0, 70.0)}
MIN_GAP_MM = 10.0  # free belt between two neighbouring parts, at the closest


# ---------------------------------------------------------------------------------------------
# Loading


def load_scenario(
    name_or_path: str, overrides: Mapping[str, Any] | None = None, seed: int | None = None
) -> Scenario:
    """Load a preset by name (``nominal``, ``shift``, ``harsh``) or a YAML file by path.

    ``overrides`` maps parameter names to values, nested (``{"camera": {"fps": 30}}``) or dotted
    (``{"camera.fps": 30}``); ``seed`` replaces the scenario's seed. Raises ``ValueError`` naming
    the scenario, the parameter and what was expected.
    """
    label, raw = _read_with_bases(name_or_path, seen=())
    merged = raw
    if overrides:
        merged = _merge(merged, _expand_dotted(overrides, label), label, prefix="")
    if seed is not None:
        merged["seed"] = seed
    merged.pop("base", None)
    _validate_schema(merged, label)
    _check_ranges(merged, label)
    scenario = _build(label, merged)
    _check_consistency(scenario, label)
    return scenario


def _read_yaml(path: Path | Any, label: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"scenario {label!r}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"scenario {label!r}: expected a mapping of parameters at the top level")
    return data


def _read_with_bases(name_or_path: str, seen: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    path = Path(name_or_path)
    is_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or "\\" in name_or_path
    if is_path:
        if not path.is_file():
            raise ValueError(f"scenario file {name_or_path!r} does not exist")
        label = str(path)
        data = _read_yaml(path, label)
        default_base: str | None = "nominal"
    else:
        known = known_scenarios()
        if name_or_path not in known:
            raise ValueError(
                f"unknown scenario {name_or_path!r}: known scenarios are {', '.join(known)} "
                "(or give the path of a .yaml file)"
            )
        label = name_or_path
        data = _read_yaml(importlib.resources.files("lineguard.sim") / "scenarios" / f"{label}.yaml", label)
        default_base = None if label == "nominal" else "nominal"
    if label in seen:
        raise ValueError(f"scenario {label!r}: parameter 'base': bases form a cycle: {' -> '.join(seen + (label,))}")
    base = data.get("base", default_base)
    if base is None:
        return label, data
    if not isinstance(base, str):
        raise ValueError(f"scenario {label!r}: parameter 'base': expected a preset name or path, got {base!r}")
    _, base_data = _read_with_bases(base, seen + (label,))
    return label, _merge(base_data, data, label, prefix="")


def _expand_dotted(overrides: Mapping[str, Any], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"scenario {label!r}: override keys must be parameter names, got {key!r}")
        if isinstance(value, Mapping):
            value = _expand_dotted(value, label)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"scenario {label!r}: override {key!r} conflicts with another override")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = value
    return out


# Mappings whose keys are names chosen by the user (a new key replaces nothing and is allowed
# as long as the schema knows it); every other mapping must only use keys the base has.
_OPEN_MAPPINGS = {"parts.mix", "defects.mix"}


def _merge(base: dict[str, Any], update: Mapping[str, Any], label: str, prefix: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in out and key != "base" and prefix.rstrip(".") not in _OPEN_MAPPINGS:
            options = list(out)
            near = difflib.get_close_matches(str(key), options, n=1)
            hint = f"; did you mean {prefix}{near[0]!s}?" if near else f"; known here: {', '.join(map(str, options))}"
            raise ValueError(f"scenario {label!r}: unknown parameter {name!r}{hint}")
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and name not in _OPEN_MAPPINGS:
            out[key] = _merge(out[key], value, label, prefix=f"{name}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validate_schema(data: dict[str, Any], label: str) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    messages = []
    for err in errors:
        path = [str(p) for p in err.absolute_path]
        # an item of a range or a key of a mix: name the parameter, describe the whole value
        schema_node = SCHEMA
        described = None
        for p in path:
            props = schema_node.get("properties", {})
            if p in props:
                schema_node = props[p]
                described = schema_node.get("description", described)
            else:
                break
        param = ".".join(p for p in path if not p.isdigit()) or "(top level)"
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else err.message
            param = ".".join(path + [missing])
            messages.append(f"parameter {param!r} is missing")
            continue
        if err.validator == "additionalProperties":
            known = list(err.schema.get("properties", {}))
            extra = [k for k in err.instance if k not in known]
            messages.append(f"unknown parameter {param + '.' + str(extra[0])!r}: expected one of {', '.join(known)}")
            continue
        value = data
        for p in path:
            value = value[int(p)] if isinstance(value, list) else value[p]
        expected = described or err.message
        messages.append(f"parameter {param!r}: expected {expected}, got {value!r}")
    raise ValueError(f"scenario {label!r}: " + "; ".join(dict.fromkeys(messages)))


def _check_ranges(data: dict[str, Any], label: str) -> None:
    for section, props in SCHEMA["properties"].items():
        for key, spec in props.get("properties", {}).items() if isinstance(props, dict) else ():
            if spec.get("type") == "array" and spec.get("minItems") == 2 and spec.get("maxItems") == 2:
                low, high = data[section][key]
                if low > high:
                    raise ValueError(
                        f"scenario {label!r}: parameter '{section}.{key}': expected [low, high] with "
                        f"low <= high, got {[low, high]}"
                    )
    for mix in ("parts.mix", "defects.mix"):
        section, key = mix.split(".")
        if not any(w > 0 for w in data[section][key].values()):
            raise ValueError(f"scenario {label!r}: parameter {mix!r}: expected at least one weight > 0")


def _build(label: str, d: dict[str, Any]) -> Scenario:
    cam = dict(d["camera"])
    res = cam["resolution"]
    cam["resolution"] = RESOLUTION_PRESETS[res] if isinstance(res, str) else (int(res[0]), int(res[1]))
    if cam["mm_per_px"] == "auto":
        cam["mm_per_px"] = AUTO_FIELD_OF_VIEW_MM / cam["resolution"][0]
    cam["tilt_deg"] = tuple(float(v) for v in cam["tilt_deg"])
    floats = lambda sec, keys: {k: float(sec[k]) for k in keys}  # noqa: E731
    camera = CameraParams(
        resolution=cam["resolution"],
        tilt_deg=cam["tilt_deg"],
        **floats(cam, ("fps", "mm_per_px", "exposure_ms", "hfov_deg", "noise_sigma")),
    )
    belt = BeltParams(**floats(d["belt"], BeltParams.__dataclass_fields__))
    p = d["parts"]
    parts = PartsParams(
        count=int(p["count"]),
        mix=tuple((k, float(v)) for k, v in sorted(p["mix"].items())),
        dust_per_part=(int(p["dust_per_part"][0]), int(p["dust_per_part"][1])),
        **floats(p, [k for k in PartsParams.__dataclass_fields__ if k not in ("count", "mix", "dust_per_part")]),
    )
    df = d["defects"]
    rng2 = lambda v: (float(v[0]), float(v[1]))  # noqa: E731
    defects = DefectParams(
        rate=float(df["rate"]),
        mix=tuple((k, float(v)) for k, v in sorted(df["mix"].items())),
        scratch_length_mm=rng2(df["scratch_length_mm"]),
        scratch_contrast=rng2(df["scratch_contrast"]),
        scratch_over_component=float(df["scratch_over_component"]),
        misaligned_offset_mm=rng2(df["misaligned_offset_mm"]),
        misaligned_rotation_deg=rng2(df["misaligned_rotation_deg"]),
    )
    li = d["lighting"]
    lighting = LightingParams(
        gain_range=rng2(li["gain_range"]),
        gradient=rng2(li["gradient"]),
        vignetting=float(li["vignetting"]),
        mains_hz=float(li["mains_hz"]),
        flicker_depth=float(li["flicker_depth"]),
        specular_count=(int(li["specular_count"][0]), int(li["specular_count"][1])),
        specular_intensity=rng2(li["specular_intensity"]),
    )
    distractors = DistractorParams(**floats(d["distractors"], DistractorParams.__dataclass_fields__))
    name = Path(label).stem if label.endswith((".yaml", ".yml")) else label
    return Scenario(name, str(d["description"]), int(d["seed"]), camera, belt, parts, defects, lighting, distractors)


def _check_consistency(s: Scenario, label: str) -> None:
    def fail(param: str, why: str) -> None:
        raise ValueError(f"scenario {label!r}: parameter {param!r}: {why}")

    frame_ms = 1000.0 / s.camera.fps
    if s.camera.exposure_ms > frame_ms:
        fail("camera.exposure_ms", f"expected <= the frame period 1000/fps = {frame_ms:.2f} ms, got {s.camera.exposure_ms}")
    if s.motion_blur_px > 64:
        fail(
            "camera.exposure_ms",
            f"motion blur of {s.motion_blur_px:.1f} px (belt.speed_mm_s x exposure_ms / mm_per_px) is more than "
            "the 64 px the renderer supports; shorten the exposure or slow the belt",
        )
    w, h = s.camera.resolution
    if h * s.camera.mm_per_px < 40 or w * s.camera.mm_per_px < 40:
        fail("camera.mm_per_px", f"the image covers only {w * s.camera.mm_per_px:.0f} x {h * s.camera.mm_per_px:.0f} mm of belt; expected >= 40 mm each way")
    if s.camera.mm_per_px < 0.05:
        fail("camera.mm_per_px", f"expected >= 0.05 mm/px (at most 20 px per mm), got {s.camera.mm_per_px}")

    # footprint of the largest part turned by the largest rotation jitter
    turn = math.radians(s.parts.rotation_jitter_deg)
    footprints = [PART_FOOTPRINT_MM[t] for t, weight in s.parts.mix if weight > 0]
    longest = max(L * math.cos(turn) + W * math.sin(turn) for L, W in footprints)
    widest = max(L * math.sin(turn) + W * math.cos(turn) for L, W in footprints)
    closest = s.parts.spacing_mm - s.parts.spacing_jitter_mm
    if closest < longest + MIN_GAP_MM:
        fail(
            "parts.spacing_mm",
            f"parts would overlap on the belt: the closest pitch, spacing_mm - spacing_jitter_mm = {closest:.1f} mm, "
            f"must be >= the longest part ({longest:.1f} mm incl. rotation) + {MIN_GAP_MM:.0f} mm gap",
        )
    if widest / 2 + s.parts.lateral_jitter_mm > s.belt.width_mm / 2:
        fail(
            "parts.lateral_jitter_mm",
            f"parts would hang over the belt edge: half the widest part ({widest / 2:.1f} mm) + lateral_jitter_mm "
            f"({s.parts.lateral_jitter_mm}) must be <= half of belt.width_mm ({s.belt.width_mm / 2:.1f} mm)",
        )
    if s.parts.placement_jitter_mm > s.parts.placement_tolerance_mm:
        fail("parts.placement_jitter_mm", f"good parts must stay within tolerance: expected <= parts.placement_tolerance_mm ({s.parts.placement_tolerance_mm}), got {s.parts.placement_jitter_mm}")
    if s.parts.placement_jitter_deg > s.parts.placement_tolerance_deg:
        fail("parts.placement_jitter_deg", f"good parts must stay within tolerance: expected <= parts.placement_tolerance_deg ({s.parts.placement_tolerance_deg}), got {s.parts.placement_jitter_deg}")
    if s.defects.misaligned_offset_mm[0] <= s.parts.placement_tolerance_mm:
        fail("defects.misaligned_offset_mm", f"a misalignment must be beyond tolerance: expected low > parts.placement_tolerance_mm ({s.parts.placement_tolerance_mm}), got {list(s.defects.misaligned_offset_mm)}")
    if s.defects.misaligned_rotation_deg[0] <= s.parts.placement_tolerance_deg:
        fail("defects.misaligned_rotation_deg", f"a misalignment must be beyond tolerance: expected low > parts.placement_tolerance_deg ({s.parts.placement_tolerance_deg}), got {list(s.defects.misaligned_rotation_deg)}")
    if s.defects.misaligned_offset_mm[1] > 12:
        fail("defects.misaligned_offset_mm", f"expected high <= 12 mm (a component must stay on its part), got {list(s.defects.misaligned_offset_mm)}")
    if s.defects.scratch_length_mm[1] > 90:
        fail("defects.scratch_length_mm", f"expected high <= 90 mm (a scratch must fit on a part), got {list(s.defects.scratch_length_mm)}")
