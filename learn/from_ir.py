"""Train on from a shipped OpenVINO model: rebuild its PyTorch weights from the IR.

lineguard ships its detectors as OpenVINO IR only. To fine-tune one (on your line's images, or on
more of the simulated line) ``lineguard train --init-weights model.xml`` rebuilds a PyTorch
checkpoint from it:

1. **Read.** ultralytics' export names every convolution after its module
   (``__module.model.2.cv1.conv/...``); the IR holds its weights (FP16 or FP32) and, the batch
   norm folded in at export, a bias added after it.
2. **Match.** The model definitions lineguard trains from (``lineguard.learn.train.MODEL_DEFINITIONS``) are built
   for the IR's class count; the one whose convolutions all have the IR's shapes is the model.
3. **Unfold the batch norm.** Each ``Conv`` block (convolution + batch norm) gets the IR's weights,
   and its batch norm is set from the statistics of the convolution's output on ``images`` (the
   training set's): mean μ and variance σ², scale √(σ² + eps) and shift bias + μ. In evaluation
   the block then computes exactly what the IR does; in training, where batch norm uses each
   batch's own statistics, it starts close to it instead of from an identity the weights never
   saw.

The checkpoint is what ultralytics saves and loads (``YOLO(path)``). :func:`check_against_ir`
compares the rebuilt model's raw output with the IR's on an image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_PREFIX = "__module."


class IrWeightsError(ValueError):
    """The IR cannot be turned back into a model lineguard trains."""


def _constant(node: Any) -> np.ndarray:
    """The value behind ``node``: a Constant, possibly through Convert (FP16 weights)."""
    seen = []
    while node.get_type_name() != "Constant":
        seen.append(node.get_type_name())
        if node.get_type_name() not in ("Convert", "Reshape", "Unsqueeze") or len(seen) > 4:
            raise IrWeightsError(f"expected a constant weight, found {' <- '.join(seen)}")
        node = node.input_value(0).get_node()
    return np.asarray(node.get_data(), dtype=np.float32)


def ir_convolutions(xml: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Module path (``model.2.cv1.conv``) → (weight, bias or None) of every convolution in the IR."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        name = op.get_friendly_name().split("/")[0]
        if not name.startswith(_PREFIX):
            raise IrWeightsError(
                f"{xml}: convolution {op.get_friendly_name()!r} is not named after its module; "
                "only IRs exported by ultralytics (as lineguard train does) can be trained on"
            )
        weight = _constant(op.input_value(1).get_node())
        bias = None
        for target in op.output(0).get_target_inputs():
            add = target.get_node()
            if add.get_type_name() == "Add":
                try:
                    bias = _constant(add.input_value(1 - target.get_index()).get_node()).reshape(-1)
                except IrWeightsError:
                    continue
        out[name[len(_PREFIX) :]] = (weight, bias)
    if not out:
        raise IrWeightsError(f"{xml}: no convolutions found")
    return out


def _class_count(xml: Path) -> int:
    import openvino as ov

    shape = ov.Core().read_model(str(xml)).output(0).get_partial_shape()
    channels = shape[1].get_length() if shape.rank.get_length() == 3 and shape[1].is_static else None
    if channels is None or channels <= 4:
        raise IrWeightsError(f"{xml}: expected the ultralytics detection head's output [1, 4 + classes, N], got {shape}")
    return channels - 4


def build_from_ir(xml: str | Path, names: Sequence[str], images: Sequence[np.ndarray]) -> Any:
    """An ultralytics ``DetectionModel`` with the IR's weights (see the module's docstring).

    ``images``: RGB float32 CHW arrays in 0–1 (letterboxed as for training), for the batch-norm
    statistics; a few dozen suffice.
    """
    import torch
    from ultralytics.nn.modules import Conv
    from ultralytics.nn.tasks import DetectionModel

    from lineguard.learn.train import MODEL_DEFINITIONS

    xml = Path(xml)
    convs = ir_convolutions(xml)
    nc = _class_count(xml)
    if len(names) != nc:
        raise IrWeightsError(f"{xml}: the head has {nc} classes, but {len(names)} class names were given")
    if not images:
        raise IrWeightsError("expected images for the batch-norm statistics, got none")
    model, tried = None, []
    for definition in MODEL_DEFINITIONS:
        candidate = DetectionModel(definition, nc=nc, verbose=False)
        modules = dict(candidate.named_modules())
        wanted = {n: m for n, m in modules.items() if isinstance(m, torch.nn.Conv2d) and not n.endswith("dfl.conv")}
        have = {n: w for n, (w, _) in convs.items() if not n.endswith("dfl.conv")}
        if set(wanted) == set(have) and all(tuple(wanted[n].weight.shape) == have[n].shape for n in wanted):
            model = candidate
            break
        missing = sorted(set(wanted) - set(have))
        tried.append(f"{definition}: {len(missing)} of its convolutions not in the IR" if missing else f"{definition}: shapes differ")
    if model is None:
        raise IrWeightsError(f"{xml}: matches none of the model definitions lineguard trains ({'; '.join(tried)})")
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (weight, bias) in convs.items():
            if name.endswith("dfl.conv"):
                continue  # fixed (0..15), never trained
            conv = modules[name]
            conv.weight.copy_(torch.from_numpy(weight))
            if conv.bias is not None:
                if bias is None:
                    raise IrWeightsError(f"{xml}: {name} has no bias in the IR")
                conv.bias.copy_(torch.from_numpy(bias))
    # batch norms: statistics of each Conv block's convolution output over the images
    blocks = {n: m for n, m in modules.items() if isinstance(m, Conv) and isinstance(getattr(m, "bn", None), torch.nn.BatchNorm2d)}
    sums: dict[str, list[torch.Tensor]] = {n: [] for n in blocks}
    hooks = []
    for n, block in blocks.items():
        bias = convs[f"{n}.conv"][1]
        if bias is None:
            raise IrWeightsError(f"{xml}: {n}.conv has no bias in the IR (its batch norm was not folded)")
        bn = block.bn
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.data.fill_(1.0)
        bn.bias.data.copy_(torch.from_numpy(bias))

        def grab(module: Any, args: Any, output: torch.Tensor, n: str = n) -> None:
            x = output.detach().double()
            sums[n].append(torch.stack([x.mean(dim=(0, 2, 3)), (x * x).mean(dim=(0, 2, 3))]))

        hooks.append(block.conv.register_forward_hook(grab))
    model.eval()
    try:
        with torch.no_grad():
            for image in images:
                model(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None])
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for n, block in blocks.items():
            mean, square = torch.stack(sums[n]).mean(dim=0)
            var = (square - mean * mean).clamp_min(1e-6)
            bn = block.bn
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.data.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.data.add_(mean.float())
    model.names = dict(enumerate(names))
    return model


def save_checkpoint(model: Any, path: str | Path, source: str | Path) -> Path:
    """Write ``model`` as an ultralytics checkpoint that ``YOLO(path)`` loads and trains on."""
    import copy
    from datetime import datetime, timezone

    import torch
    import ultralytics

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "date": datetime.now(timezone.utc).isoformat(),
            "version": ultralytics.__version__,
            "epoch": -1,
            "best_fitness": None,
            "model": copy.deepcopy(model).half(),
            "ema": None,
            "updates": None,
            "optimizer": None,
            "train_args": {"task": "detect", "model": str(source)},
            "train_metrics": {},
            "lineguard_from_ir": {"xml": str(source), "sha256": file_digest(source)},
        },
        path,
    )
    return path


def file_digest(xml: str | Path) -> str:
    """sha256 over an IR's .xml and .bin together."""
    xml = Path(xml)
    h = hashlib.sha256(xml.read_bytes())
    weights = xml.with_suffix(".bin")
    if weights.is_file():
        h.update(weights.read_bytes())
    return h.hexdigest()


def check_against_ir(model: Any, xml: str | Path, image: np.ndarray) -> float:
    """Largest difference between the rebuilt model's raw head output and the IR's on ``image``
    (RGB float32 CHW in 0–1, the IR's input size), relative to the output's range."""
    import openvino as ov
    import torch

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ir_out = np.asarray(compiled(image[None].astype(np.float32))[0])
    model.eval()
    with torch.no_grad():
        out = model.float()(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None])
    out = out[0] if isinstance(out, (list, tuple)) else out
    mine = out.numpy()
    if mine.shape != ir_out.shape:
        raise IrWeightsError(f"{xml}: the rebuilt model's output is {mine.shape}, the IR's {ir_out.shape}")
    return float(np.abs(mine - ir_out).max() / max(1e-9, float(np.abs(ir_out).max())))
