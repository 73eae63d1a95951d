#!/usr/bin/env python3
"""PyTorch's side of `hydrant bench-train --vs-torch`.

    python bench/peer_torch.py PLAN.json

The plan (written by hydrant) names head files (docs/FORMAT.md), features and labels as .npy,
batch sizes, optimizers and learning rates. Heads and the fine-tune model are built from the
files' own metadata and loaded from their state_dict, so both sides train the same weights on
the same data, in file order. Prints one JSON line: per case the median milliseconds per step
(an epoch's time over its steps) and the first epoch's mean loss; for the fine-tune the median
time of the frozen-trunk recipe (trunk re-run under no_grad each epoch) and, for reference, of
training on features computed once.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

WARMUP_EPOCHS = 2
# Wall time, or with the plan's `cpu_time` the process's on-CPU time (all threads).
clock = time.perf_counter


def layer(spec: dict) -> nn.Module:
    """The PyTorch module for a hydrant layer description."""
    k = spec["kind"]
    if k == "linear":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec.get("bias", True))
    if k == "conv2d":
        return nn.Conv2d(spec["in_channels"], spec["out_channels"], spec["kernel_size"],
                         stride=spec.get("stride", 1), padding=spec.get("padding", 0),
                         dilation=spec.get("dilation", 1), groups=spec.get("groups", 1),
                         bias=spec.get("bias", True))
    if k == "batch_norm2d":
        return nn.BatchNorm2d(spec["num_features"], eps=spec.get("eps", 1e-5),
                              momentum=spec.get("momentum", 0.1))
    if k == "layer_norm":
        return nn.LayerNorm(spec["normalized_shape"], eps=spec.get("eps", 1e-5))
    if k == "global_avg_pool":
        return nn.AdaptiveAvgPool2d(1) if spec.get("keep_dims") else nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if k == "upsample2x":
        return nn.Upsample(scale_factor=2, mode=spec.get("mode", "nearest"))
    if k == "max_pool2d":
        return nn.MaxPool2d(spec["kernel_size"], stride=spec.get("stride"),
                            padding=spec.get("padding", 0))
    simple = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
              "tanh": nn.Tanh, "flatten": nn.Flatten}
    if k in simple:
        return simple[k]()
    if k == "leaky_relu":
        return nn.LeakyReLU(spec.get("negative_slope", 0.01))
    if k == "dropout":
        return nn.Dropout(spec["p"])
    raise ValueError(f"layer kind {k} not handled by the benchmark")


class Residual(nn.Module):
    """`activation(body(x) + shortcut(x))` (docs/FORMAT.md, hydrant.trunk)."""

    def __init__(self, spec: dict):
        super().__init__()
        self.body = nn.Sequential(*[layer(s) for s in spec["body"]])
        self.shortcut = nn.Sequential(*[layer(s) for s in spec.get("shortcut", [])])
        act = spec.get("activation")
        self.activation = layer(act) if act else nn.Identity()

    def forward(self, x):
        return self.activation(self.body(x) + self.shortcut(x))


def load_file(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(path, "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def build_head(spec: dict, tensors: dict[str, torch.Tensor]) -> nn.Sequential:
    head = nn.Sequential(*[layer(s) for s in spec["layers"]])
    head.load_state_dict(prefixed(tensors, spec["name"] + "."), strict=True)
    return head


def load_head(path: str, name: str | None = None) -> tuple[nn.Sequential, dict]:
    meta, tensors = load_file(path)
    specs = json.loads(meta["hydrant.heads"])
    spec = specs[0] if name is None else next(s for s in specs if s["name"] == name)
    return build_head(spec, tensors), spec


def optimizer(params, spec: dict, lr: float) -> torch.optim.Optimizer:
    if spec["kind"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.get("momentum", 0.0),
                               dampening=spec.get("dampening", 0.0),
                               nesterov=spec.get("nesterov", False),
                               weight_decay=spec.get("weight_decay", 0.0))
    return torch.optim.AdamW(params, lr=lr, betas=(spec.get("beta1", 0.9), spec.get("beta2", 0.999)),
                             eps=spec.get("eps", 1e-8), weight_decay=spec.get("weight_decay", 0.01))


def train_epoch(head, opt, x, y, batch, trunk=None) -> float:
    """One epoch in file order; returns the mean step loss."""
    total, steps = 0.0, 0
    for s in range(0, x.shape[0], batch):
        xb, yb = x[s:s + batch], y[s:s + batch]
        if trunk is not None:
            with torch.no_grad():
                xb = trunk(xb)
        loss = F.cross_entropy(head(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
        steps += 1
    return total / steps


def step_case(case: dict, iters: int) -> dict:
    head, _ = load_head(case["head"])
    head.train()
    x = torch.from_numpy(np.load(case["x"]))
    y = torch.from_numpy(np.load(case["y"]))
    opt = optimizer(head.parameters(), case["optimizer"], case["lr"])
    batch = case["batch"]
    steps = -(-x.shape[0] // batch)
    first = train_epoch(head, opt, x, y, batch)
    for _ in range(WARMUP_EPOCHS - 1):
        train_epoch(head, opt, x, y, batch)
    times = []
    for _ in range(iters):
        t = clock()
        train_epoch(head, opt, x, y, batch)
        times.append((clock() - t) * 1e3 / steps)
    return {"step_ms": float(np.median(times)), "first_epoch_loss": first}


def build_trunk(meta: dict, tensors: dict[str, torch.Tensor]) -> tuple[nn.Sequential, dict]:
    spec = json.loads(meta["hydrant.trunk"])
    layers = [Residual(l) if l.get("kind") == "residual" else layer(l) for l in spec["layers"]]
    trunk = nn.Sequential(*layers)
    trunk.load_state_dict(prefixed(tensors, "trunk."), strict=True)
    names = spec.get("names", {})
    return trunk, names


def finetune(ft: dict) -> dict:
    meta, tensors = load_file(ft["model"])
    trunk, names = build_trunk(meta, tensors)
    specs = {s["name"]: s for s in json.loads(meta["hydrant.heads"])}
    spec = specs[ft["head"]]
    source = spec["inputs"][0]
    if source in names:
        depth = names[source] + 1
    elif source.startswith("trunk."):
        depth = int(source.split(".")[1]) + 1
    else:
        raise ValueError(f"head reads {source}: not a trunk layer output")
    trunk = trunk[:depth].eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(np.load(ft["x"]))
    y = torch.from_numpy(np.load(ft["y"]))

    def run(cached: bool) -> tuple[float, float]:
        t = clock()
        head = build_head(spec, tensors).train()
        opt = optimizer(head.parameters(), ft["optimizer"], ft["lr"])
        if cached:
            with torch.no_grad():
                feats = torch.cat([trunk(x[s:s + 64]) for s in range(0, x.shape[0], 64)])
        loss = 0.0
        for _ in range(ft["epochs"]):
            if cached:
                loss = train_epoch(head, opt, feats, y, ft["batch"])
            else:
                loss = train_epoch(head, opt, x, y, ft["batch"], trunk=trunk)
        return (clock() - t) * 1e3, loss

    out = {}
    for cached, key in [(False, "rerun_trunk_ms"), (True, "cached_features_ms")]:
        run(cached)
        runs = [run(cached) for _ in range(max(1, ft["iters"]))]
        out[key] = float(np.median([r[0] for r in runs]))
        if not cached:
            out["final_loss"] = runs[-1][1]
    return out


def main() -> None:
    global clock
    plan = json.load(open(sys.argv[1]))
    if plan.get("cpu_time"):
        clock = time.process_time
    torch.set_num_threads(plan["threads"])
    result = {"version": torch.__version__, "threads": torch.get_num_threads(), "cases": {}}
    for case in plan["cases"]:
        result["cases"][case["name"]] = step_case(case, plan["iters"])
    if plan["finetune"] is not None:
        result["finetune"] = finetune(plan["finetune"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
