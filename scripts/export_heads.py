#!/usr/bin/env python3
"""Write PyTorch heads as a hydrant head file (docs/FORMAT.md).

A head is an `nn.Sequential` of layers from hydrant's trainable vocabulary. Its weights are the
module's own `state_dict`, saved with `safetensors.torch.save_file`; the architecture goes into the
file's metadata (`hydrant.format`, `hydrant.heads`). hydrant loads the file as is:
`HeadSet::load`, `Model::load_parts(onnx, heads)`, `hydrant train-head --head FILE`.

Use it as a library:

    from export_heads import head_spec, save_heads
    heads = MyHeads()                 # an nn.Module whose children are nn.Sequential heads
    specs = [head_spec("cls", "features", heads.cls, {"loss": "cross_entropy", "classes": 5})]
    save_heads("heads.safetensors", heads, specs)

or from the command line, for an `nn.Sequential` saved whole with `torch.save(head, "head.pt")`:

    .venv/bin/python scripts/export_heads.py --sequential head.pt --name cls --input features \
        --task '{"loss": "cross_entropy", "classes": 5}' --out heads.safetensors

or run the demo, which writes a multi-head module with every layer kind and, with
`--reference DIR`, PyTorch's outputs on a fixed input (the fixture of tests/format.rs):

    .venv/bin/python scripts/export_heads.py --demo --out tests/fixtures/train/python_heads.safetensors \
        --reference tests/fixtures/train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

FORMAT_VERSION = "1"

_ACTIVATIONS = {nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
                nn.Tanh: "tanh", nn.Flatten: "flatten"}


def _single(v) -> int:
    """A square kernel / stride / padding: PyTorch stores ints or pairs."""
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ValueError(f"hydrant layers are square, got {v}")
        return int(v[0])
    return int(v)


def layer_spec(m: nn.Module) -> dict:
    """The `hydrant.heads` description of one PyTorch layer (raises for layers outside the
    trainable vocabulary)."""
    for cls, kind in _ACTIVATIONS.items():
        if type(m) is cls:
            if isinstance(m, nn.GELU) and m.approximate != "none":
                raise ValueError("hydrant's GELU is the exact (erf) form")
            if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
                raise ValueError("hydrant's flatten keeps axis 0 and flattens the rest")
            return {"kind": kind}
    if isinstance(m, nn.Linear):
        return {"kind": "linear", "in_features": m.in_features, "out_features": m.out_features,
                "bias": m.bias is not None}
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError("hydrant convolutions take numeric zero padding")
        return {"kind": "conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": _single(m.kernel_size), "stride": _single(m.stride),
                "padding": _single(m.padding), "dilation": _single(m.dilation),
                "groups": m.groups, "bias": m.bias is not None}
    if isinstance(m, nn.BatchNorm2d):
        if not (m.affine and m.track_running_stats) or m.momentum is None:
            raise ValueError("hydrant's batch_norm2d is affine with running statistics")
        return {"kind": "batch_norm2d", "num_features": m.num_features, "eps": m.eps,
                "momentum": m.momentum}
    if isinstance(m, nn.LayerNorm):
        if len(m.normalized_shape) != 1 or not m.elementwise_affine:
            raise ValueError("hydrant's layer_norm is affine over the last dimension")
        return {"kind": "layer_norm", "normalized_shape": m.normalized_shape[0], "eps": m.eps}
    if isinstance(m, nn.LeakyReLU):
        return {"kind": "leaky_relu", "negative_slope": m.negative_slope}
    if isinstance(m, nn.Dropout):
        return {"kind": "dropout", "p": m.p}
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if _single(m.output_size) != 1:
            raise ValueError("only global average pooling (output size 1)")
        return {"kind": "global_avg_pool", "keep_dims": True}
    if isinstance(m, nn.MaxPool2d):
        if _single(m.dilation) != 1 or m.ceil_mode:
            raise ValueError("hydrant's max_pool2d has no dilation and floors")
        return {"kind": "max_pool2d", "kernel_size": _single(m.kernel_size),
                "stride": _single(m.stride), "padding": _single(m.padding)}
    if isinstance(m, nn.Upsample):
        if m.scale_factor not in (2, 2.0) or m.mode not in ("nearest", "bilinear") or m.align_corners:
            raise ValueError("hydrant upsamples ×2, nearest or bilinear without align_corners")
        return {"kind": "upsample2x", "mode": m.mode}
    if isinstance(m, nn.Softmax):
        return {"kind": "softmax", "dim": m.dim}
    raise TypeError(f"{type(m).__name__} is not in hydrant's trainable vocabulary")


def head_spec(name: str, input_tensor: str, head: nn.Sequential, task: dict | None = None) -> dict:
    """One entry of `hydrant.heads`: the head `name` reading trunk tensor `input_tensor`."""
    spec = {"name": name, "inputs": [input_tensor], "outputs": [name],
            "layers": [layer_spec(m) for m in head]}
    if task is not None:
        spec["task"] = task
    return spec


def metadata(specs: list[dict]) -> dict[str, str]:
    """The `__metadata__` of a head file (every value a string, as safetensors requires)."""
    return {"hydrant.format": FORMAT_VERSION, "hydrant.heads": json.dumps(specs)}


def save_heads(path: str | Path, module: nn.Module, specs: list[dict]) -> None:
    """Writes `module.state_dict()` (a module whose children named after the heads are the
    `nn.Sequential` heads) with the metadata for `specs`."""
    state = module.state_dict()
    names = {s["name"] for s in specs}
    stray = sorted(k for k in state if k.split(".", 1)[0] not in names)
    if stray:
        raise ValueError(f"tensors of no described head: {stray[:5]}")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path),
              metadata=metadata(specs))


# ----------------------------------------------------------------------------------------------
# the demo: three heads covering the vocabulary, on two trunk tensors
# ----------------------------------------------------------------------------------------------

class DemoHeads(nn.Module):
    """`cls` and `emb` read a pooled vector `[N, 32]`; `seg` and `reg` read a feature map
    `[N, 8, 6, 6]`."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Sequential(nn.Linear(32, 24), nn.LayerNorm(24), nn.GELU(), nn.Dropout(0.2),
                                 nn.Linear(24, 16), nn.SiLU(), nn.Linear(16, 5))
        self.emb = nn.Sequential(nn.Linear(32, 12, bias=False), nn.Tanh(), nn.Linear(12, 3),
                                 nn.Sigmoid())
        self.seg = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                                 nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
                                 nn.Conv2d(8, 12, 3, padding=2, dilation=2), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Upsample(scale_factor=2, mode="bilinear"),
                                 nn.Conv2d(12, 3, 1), nn.Upsample(scale_factor=2, mode="nearest"),
                                 nn.Softmax(dim=1))
        self.reg = nn.Sequential(nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.MaxPool2d(3, stride=1, padding=1), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(6, 2))

    SPECS = [("cls", "pooled", {"loss": "cross_entropy", "classes": 5, "label_smoothing": 0.1}),
             ("emb", "pooled", {"loss": "bce", "labels": 3}),
             ("seg", "features", {"loss": "cross_entropy", "classes": 3, "ignore_index": 255}),
             ("reg", "features", {"loss": "huber", "outputs": 2, "delta": 0.5})]


def demo(path: Path, reference: Path | None) -> None:
    torch.manual_seed(2468)
    heads = DemoHeads()
    with torch.no_grad():
        for m in heads.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.2)
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                m.num_batches_tracked.fill_(7)
    specs = [head_spec(n, i, getattr(heads, n), t) for n, i, t in DemoHeads.SPECS]
    save_heads(path, heads, specs)
    if reference is None:
        return
    heads.eval()
    inputs = {"pooled": torch.randn(4, 32), "features": torch.randn(3, 8, 6, 6)}
    stem = path.name.removesuffix(".safetensors")
    for name, x in inputs.items():
        np.save(reference / f"{stem}_{name}.npy", x.numpy())
    with torch.no_grad():
        for name, inp, _ in DemoHeads.SPECS:
            y = getattr(heads, name)(inputs[inp])
            np.save(reference / f"{stem}_out_{name}.npy", np.ascontiguousarray(y.numpy()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="head file to write")
    ap.add_argument("--demo", action="store_true", help="write the demo heads")
    ap.add_argument("--reference", type=Path,
                    help="with --demo: folder for the inputs and PyTorch's outputs (eval mode)")
    ap.add_argument("--sequential", type=Path, help="an nn.Sequential saved with torch.save")
    ap.add_argument("--name", help="the head's name")
    ap.add_argument("--input", help="the trunk tensor the head reads")
    ap.add_argument("--task", help="the head's task as JSON (docs/FORMAT.md)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.demo:
        demo(args.out, args.reference)
        return
    if not (args.sequential and args.name and args.input):
        ap.error("give --demo, or --sequential with --name and --input")
    head = torch.load(args.sequential, weights_only=False)
    if not isinstance(head, nn.Sequential):
        ap.error(f"{args.sequential} holds a {type(head).__name__}, not an nn.Sequential")
    task = json.loads(args.task) if args.task else None
    save_heads(args.out, nn.ModuleDict({args.name: head}),
               [head_spec(args.name, args.input, head, task)])

if __name__ == "__main__":
    main()
