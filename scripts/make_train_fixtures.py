#!/usr/bin/env python3
"""Generate the training fixtures (PyTorch references) into tests/fixtures/train/.

Run from the repository root (venv from scripts/requirements.txt):

    .venv/bin/python scripts/make_train_fixtures.py

Fixtures produced (all seeded; reruns give the same files):

  vocab.onnx, vocab_input.npy, vocab_<head>.npy
      A small trunk with six heads that together use every layer of the trainable vocabulary,
      exported by torch.onnx.export; onnxruntime outputs per head. Tests import every head as a
      trainable head and check its forward against the engine and these outputs.
  losses.safetensors
      For each loss configuration: logits, targets, mask, PyTorch's loss value and its gradient
      with respect to the logits (autograd). Metadata `cases` describes each case as a hydrant
      task spec.
  parity_<head>_<opt>.safetensors, parity_<head>_features.npy, parity_<head>_labels.npy
      Initial heads (hydrant head format, written with safetensors.torch.save_file), and after 30
      optimizer steps in file order: the weights, and the 30 per-step losses (tensor `losses`).
      Heads: `mlp` (Linear-ReLU-Linear, cross-entropy) and `seg` (Conv-BN-ReLU-Conv-Upsample,
      per-pixel weighted cross-entropy with ignored pixels); optimizers SGD (momentum, Nesterov,
      weight decay) and AdamW.
  weighting.safetensors
      Two heads trained jointly on fixed features with uncertainty weighting and with DWA (T=2):
      per-epoch task weights computed by the reference formulas below.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "train"
SEED = 4321
warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")


def seed(s: int = SEED) -> None:
    torch.manual_seed(s)
    np.random.seed(s)


def npy(name: str, a) -> None:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    np.save(OUT / name, np.ascontiguousarray(a))


# ----------------------------------------------------------------------------------------------
# layer lists <-> hydrant head specs
# ----------------------------------------------------------------------------------------------

def layer_spec(m: nn.Module) -> dict:
    """The hydrant layer description of a PyTorch module."""
    if isinstance(m, nn.Linear):
        return {"kind": "linear", "in_features": m.in_features, "out_features": m.out_features,
                "bias": m.bias is not None}
    if isinstance(m, nn.Conv2d):
        return {"kind": "conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": m.kernel_size[0], "stride": m.stride[0], "padding": m.padding[0],
                "dilation": m.dilation[0], "groups": m.groups, "bias": m.bias is not None}
    if isinstance(m, nn.BatchNorm2d):
        return {"kind": "batch_norm2d", "num_features": m.num_features, "eps": m.eps,
                "momentum": m.momentum}
    if isinstance(m, nn.ReLU):
        return {"kind": "relu"}
    if isinstance(m, nn.LayerNorm):
        return {"kind": "layer_norm", "normalized_shape": m.normalized_shape[0], "eps": m.eps}
    if isinstance(m, nn.Flatten):
        return {"kind": "flatten"}
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return {"kind": "global_avg_pool", "keep_dims": True}
    if isinstance(m, nn.MaxPool2d):
        return {"kind": "max_pool2d", "kernel_size": m.kernel_size, "stride": m.stride,
                "padding": m.padding}
    if isinstance(m, nn.Upsample):
        return {"kind": "upsample2x", "mode": m.mode}
    raise TypeError(f"no hydrant layer for {m}")


def head_spec(name: str, inp: str, seq: nn.Sequential, task: dict) -> dict:
    return {"name": name, "inputs": [inp], "outputs": [name],
            "layers": [layer_spec(m) for m in seq], "task": task}


def save_heads(path: Path, heads: list[tuple[dict, nn.Module]], extra: dict | None = None) -> None:
    """A hydrant head file: state_dict names `<head>.<i>.<param>`, specs in the metadata."""
    tensors = {}
    for spec, module in heads:
        for k, v in module.state_dict().items():
            tensors[f"{spec['name']}.{k}"] = v.detach().clone().contiguous()
    meta = {"hydrant.format": "1", "hydrant.heads": json.dumps([s for s, _ in heads])}
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().clone().contiguous()
    save_file(tensors, str(path), metadata=meta)


# ----------------------------------------------------------------------------------------------
# (a) vocabulary heads, exported to ONNX
# ----------------------------------------------------------------------------------------------

class VocabNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.a = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.1),
                               nn.Linear(16, 4))
        self.b = nn.Sequential(nn.Linear(8, 12), nn.SiLU(), nn.Linear(12, 6), nn.Tanh(),
                               nn.Linear(6, 3), nn.Sigmoid())
        self.c = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
                               nn.LeakyReLU(0.2), nn.MaxPool2d(2), nn.Conv2d(8, 4, 1),
                               nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                               nn.Softmax(dim=1))
        self.d = nn.Sequential(nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
        self.e1 = nn.Sequential(nn.Conv2d(8, 4, 3, padding=2, dilation=2),
                                nn.Upsample(scale_factor=2, mode="nearest"),
                                nn.MaxPool2d(3, stride=2, padding=1))
        self.e2 = nn.Linear(4, 2)
        self.f = nn.Linear(8 * 8 * 8, 3)

    def forward(self, image):
        feat = self.stem(image)
        vec = torch.flatten(self.pool(feat), 1)
        e = self.e2(self.e1(feat).mean((2, 3)))
        f = self.f(feat.view(feat.size(0), -1))
        return self.a(vec), self.b(vec), self.c(feat), self.d(feat), e, f


def make_vocab() -> None:
    seed(SEED)
    model = VocabNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.2)
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
    model.eval()
    names = ["a", "b", "c", "d", "e", "f"]
    x = torch.randn(2, 3, 8, 8)
    path = OUT / "vocab.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=names,
                      opset_version=17, dynamic_axes={n: {0: "N"} for n in ["image"] + names},
                      dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    xin = np.random.standard_normal((3, 3, 8, 8)).astype(np.float32)
    npy("vocab_input.npy", xin)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(names, {"image": xin})
    with torch.no_grad():
        ref = model(torch.from_numpy(xin))
    for n, o, r in zip(names, outs, ref):
        assert np.allclose(o, r.numpy(), atol=1e-5), n
        npy(f"vocab_{n}.npy", o.astype(np.float32))


class Untrainable(nn.Module):
    """Two heads on one stem: `res` has a residual Add (outside the vocabulary), `lin` is a
    plain linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.res_fc = nn.Linear(4, 2)
        self.lin = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        f = self.stem(x)
        r = (f + self.conv(f)).mean((2, 3))
        return self.res_fc(r), self.lin(torch.flatten(f, 1))


def make_untrainable() -> None:
    seed(SEED + 5)
    model = Untrainable().eval()
    path = OUT / "untrainable.onnx"
    torch.onnx.export(model, (torch.randn(2, 1, 6, 6),), str(path), input_names=["x"],
                      output_names=["res", "lin"], opset_version=17,
                      dynamic_axes={n: {0: "N"} for n in ["x", "res", "lin"]}, dynamo=False)


class Residual(nn.Module):
    """`relu(body(x) + shortcut(x))`, the residual block of hydrant's trunk format."""

    def __init__(self, body: list[nn.Module], shortcut: list[nn.Module]):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


def trunk_layer_spec(m: nn.Module) -> dict:
    if isinstance(m, Residual):
        return {"kind": "residual", "body": [layer_spec(b) for b in m.body],
                "shortcut": [layer_spec(s) for s in m.shortcut], "activation": {"kind": "relu"}}
    return layer_spec(m)


def make_whole_model() -> None:
    """whole.safetensors: a trunk (conv stem, two residual blocks) and two heads in one file,
    as a PyTorch state_dict with hydrant metadata; whole_input.npy and PyTorch's outputs."""
    seed(SEED + 6)
    trunk = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        Residual([nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                  nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)], []),
        Residual([nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                  nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)],
                 [nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)]),
    )
    cls = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    seg = nn.Sequential(nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        for m in trunk.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.2)
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.2)
    trunk.eval(); cls.eval(); seg.eval()
    trunk_spec = {"input": "image", "input_shape": [3, 12, 12],
                  "layers": [trunk_layer_spec(m) for m in trunk],
                  "names": {"stem": 2, "features": 4}}
    heads = [(head_spec("cls", "features", cls, {"loss": "cross_entropy", "classes": 5}), cls),
             (head_spec("seg", "stem", seg, {"loss": "cross_entropy", "classes": 4}), seg)]
    tensors = {f"trunk.{k}": v.detach().clone().contiguous() for k, v in trunk.state_dict().items()}
    for spec, module in heads:
        for k, v in module.state_dict().items():
            tensors[f"{spec['name']}.{k}"] = v.detach().clone().contiguous()
    meta = {"hydrant.format": "1", "hydrant.heads": json.dumps([s for s, _ in heads]),
            "hydrant.trunk": json.dumps(trunk_spec)}
    save_file(tensors, str(OUT / "whole.safetensors"), metadata=meta)
    x = torch.randn(3, 3, 12, 12)
    npy("whole_input.npy", x)
    with torch.no_grad():
        stem = trunk[:3](x)
        feats = trunk(x)
        npy("whole_cls.npy", cls(feats))
        npy("whole_seg.npy", seg(stem))


# ----------------------------------------------------------------------------------------------
# (b) losses
# ----------------------------------------------------------------------------------------------

def make_losses() -> None:
    seed(SEED + 1)
    tensors: dict[str, torch.Tensor] = {}
    cases: list[dict] = []

    def add(name: str, task: dict, logits: torch.Tensor, target: torch.Tensor, loss_fn,
            mask: torch.Tensor | None = None) -> None:
        z = logits.clone().requires_grad_(True)
        loss = loss_fn(z, target, mask)
        loss.backward()
        tensors[f"{name}.logits"] = logits.clone()
        tensors[f"{name}.target"] = target.clone()
        if mask is not None:
            tensors[f"{name}.mask"] = mask.to(torch.uint8)
        tensors[f"{name}.loss"] = loss.detach().reshape(1)
        tensors[f"{name}.grad"] = z.grad.detach()
        cases.append({"name": name, "task": task})

    def masked(fn):
        """Apply `fn` to the samples whose mask is set (missing labels do not count)."""
        def inner(z, t, m):
            return fn(z, t) if m is None else fn(z[m], t[m])
        return inner

    z = torch.randn(12, 5) * 2
    y = torch.randint(0, 5, (12,))
    y[3] = -100
    w = torch.tensor([0.5, 2.0, 1.0, 0.25, 1.5])
    ce = {"loss": "cross_entropy", "classes": 5}
    add("ce_plain", ce, z, y, masked(lambda a, b: F.cross_entropy(a, b)))
    add("ce_weighted_smooth", {**ce, "class_weights": w.tolist(), "label_smoothing": 0.15}, z, y,
        masked(lambda a, b: F.cross_entropy(a, b, weight=w, label_smoothing=0.15)))
    m = torch.tensor([True, True, False, True, True, True, False, True, True, True, True, False])
    add("ce_masked", {**ce, "label_smoothing": 0.1}, z, y,
        masked(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.1)), m)
    zs = torch.randn(3, 4, 5, 6)
    ys = torch.randint(0, 4, (3, 5, 6))
    ys[0, 1, :3] = 255
    ws = torch.tensor([1.0, 3.0, 0.5, 2.0])
    add("ce_pixels", {"loss": "cross_entropy", "classes": 4, "class_weights": ws.tolist(),
                      "label_smoothing": 0.05, "ignore_index": 255}, zs, ys,
        masked(lambda a, b: F.cross_entropy(a, b, weight=ws, label_smoothing=0.05,
                                            ignore_index=255)))
    zb = torch.randn(8, 6) * 2
    yb = (torch.rand(8, 6) > 0.6).float()
    pw = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0, 0.7])
    add("bce", {"loss": "bce", "labels": 6}, zb, yb,
        masked(lambda a, b: F.binary_cross_entropy_with_logits(a, b)))
    mb = torch.tensor([True, False, True, True, False, True, True, True])
    add("bce_pos_weight", {"loss": "bce", "labels": 6, "pos_weight": pw.tolist()}, zb, yb,
        masked(lambda a, b: F.binary_cross_entropy_with_logits(a, b, pos_weight=pw)), mb)
    zr = torch.randn(7, 3) * 2
    yr = torch.randn(7, 3) * 2
    mr = torch.tensor([True, True, False, True, True, False, True])
    add("mse", {"loss": "mse", "outputs": 3}, zr, yr, masked(F.mse_loss), mr)
    add("l1", {"loss": "l1", "outputs": 3}, zr, yr, masked(F.l1_loss))
    add("huber", {"loss": "huber", "outputs": 3, "delta": 0.8}, zr, yr,
        masked(lambda a, b: F.huber_loss(a, b, delta=0.8)), mr)
    add("smooth_l1", {"loss": "smooth_l1", "outputs": 3, "beta": 0.6}, zr, yr,
        masked(lambda a, b: F.smooth_l1_loss(a, b, beta=0.6)))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / "losses.safetensors"),
              metadata={"cases": json.dumps(cases)})


# ----------------------------------------------------------------------------------------------
# (c) optimizer parity: 30 steps in file order
# ----------------------------------------------------------------------------------------------

STEPS = 30


def mlp_head() -> tuple[nn.Sequential, dict, torch.Tensor, torch.Tensor, int, dict]:
    seed(SEED + 2)
    head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(96, 64)
    y = torch.randint(0, 10, (96,))
    task = {"loss": "cross_entropy", "classes": 10, "label_smoothing": 0.1}
    return head, task, x, y, 16, {"label_smoothing": 0.1}


def seg_head() -> tuple[nn.Sequential, dict, torch.Tensor, torch.Tensor, int, dict]:
    seed(SEED + 3)
    # No bias before BatchNorm (its gradient is exactly zero, so Adam would amplify round-off).
    head = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 3, 1), nn.Upsample(scale_factor=2, mode="nearest"))
    x = torch.randn(40, 8, 8, 8)
    y = torch.randint(0, 3, (40, 16, 16))
    y[:, :2, :] = -100
    w = [1.0, 2.0, 0.5]
    task = {"loss": "cross_entropy", "classes": 3, "class_weights": w}
    return head, task, x, y, 8, {"weight": torch.tensor(w)}


OPTIMIZERS = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                      weight_decay=1e-3),
            {"kind": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}, 0.05),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=5e-3, weight_decay=1e-2),
              {"kind": "adam_w", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
               "weight_decay": 1e-2}, 5e-3),
}


def make_parity() -> None:
    for name, make in [("mlp", mlp_head), ("seg", seg_head)]:
        for opt_name, (make_opt, opt_spec, lr) in OPTIMIZERS.items():
            head, task, x, y, batch, ce_kwargs = make()
            spec = head_spec(name, "features", head, task)
            save_heads(OUT / f"parity_{name}_init.safetensors", [(spec, head)])
            npy(f"parity_{name}_features.npy", x)
            npy(f"parity_{name}_labels.npy", y.to(torch.int64))
            opt = make_opt(head.parameters())
            head.train()
            losses = []
            n = x.shape[0]
            for step in range(STEPS):
                s = (step * batch) % n
                xb, yb = x[s:s + batch], y[s:s + batch]
                loss = F.cross_entropy(head(xb), yb, ignore_index=-100, **ce_kwargs)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            meta = {"optimizer": opt_spec, "lr": lr, "batch": batch, "steps": STEPS}
            tensors = {f"{name}.{k}": v.detach().clone().contiguous()
                       for k, v in head.state_dict().items()}
            tensors["losses"] = torch.tensor(losses, dtype=torch.float32)
            save_file(tensors, str(OUT / f"parity_{name}_{opt_name}.safetensors"),
                      metadata={"run": json.dumps(meta)})


# ----------------------------------------------------------------------------------------------
# (d) multi-task weighting references
# ----------------------------------------------------------------------------------------------

def dwa_weights(history: list[list[float]], temperature: float) -> list[float]:
    """Liu et al. 2019: λ_k(t) = K·exp(r_k/T) / Σ_i exp(r_i/T), r_k = L_k(t−1)/L_k(t−2);
    λ = 1 for the first two epochs. `history` holds the mean training loss per finished epoch."""
    k = len(history[0]) if history else 0
    if len(history) < 2:
        return [1.0] * (k or 2)
    r = [history[-1][i] / history[-2][i] for i in range(k)]
    e = [np.exp(ri / temperature) for ri in r]
    return [k * ei / sum(e) for ei in e]


def make_weighting() -> None:
    seed(SEED + 4)
    x = torch.randn(64, 16)
    ycls = torch.randint(0, 4, (64,))
    yreg = torch.randn(64, 2)
    init_cls = nn.Linear(16, 4)
    init_reg = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    specs = [head_spec("cls", "features", init_cls if isinstance(init_cls, nn.Sequential)
                       else nn.Sequential(init_cls), {"loss": "cross_entropy", "classes": 4}),
             head_spec("reg", "features", init_reg, {"loss": "mse", "outputs": 2})]
    save_heads(OUT / "weighting_init.safetensors",
               [(specs[0], nn.Sequential(init_cls)), (specs[1], init_reg)])
    npy("weighting_features.npy", x)
    npy("weighting_cls.npy", ycls.to(torch.int64))
    npy("weighting_reg.npy", yreg.to(torch.float32))
    epochs, batch, lr = 6, 16, 0.05
    out: dict[str, torch.Tensor] = {}

    def run(strategy: str) -> list[list[float]]:
        cls = nn.Sequential(nn.Linear(16, 4))
        cls.load_state_dict(nn.Sequential(init_cls).state_dict())
        reg = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        reg.load_state_dict(init_reg.state_dict())
        log_vars = torch.zeros(2, requires_grad=True)
        params = list(cls.parameters()) + list(reg.parameters())
        groups = [{"params": params}]
        if strategy == "uncertainty":
            groups.append({"params": [log_vars]})
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9)
        history: list[list[float]] = []
        per_epoch = []
        for _epoch in range(epochs):
            lam = dwa_weights(history, 2.0) if strategy == "dwa" else [1.0, 1.0]
            sums = [0.0, 0.0]
            steps = 0
            for s in range(0, 64, batch):
                l1 = F.cross_entropy(cls(x[s:s + batch]), ycls[s:s + batch])
                l2 = F.mse_loss(reg(x[s:s + batch]), yreg[s:s + batch])
                if strategy == "uncertainty":
                    total = (0.5 * torch.exp(-log_vars[0]) * l1 + 0.5 * log_vars[0]
                             + 0.5 * torch.exp(-log_vars[1]) * l2 + 0.5 * log_vars[1])
                else:
                    total = lam[0] * l1 + lam[1] * l2
                opt.zero_grad()
                total.backward()
                opt.step()
                sums[0] += l1.item()
                sums[1] += l2.item()
                steps += 1
            history.append([v / steps for v in sums])
            if strategy == "uncertainty":
                per_epoch.append((0.5 * torch.exp(-log_vars.detach())).tolist())
            else:
                per_epoch.append(lam)
        out[f"{strategy}.losses"] = torch.tensor(history, dtype=torch.float32)
        return per_epoch

    for strategy in ["uncertainty", "dwa"]:
        out[f"{strategy}.weights"] = torch.tensor(run(strategy), dtype=torch.float32)
    meta = {"epochs": epochs, "batch": batch, "lr": lr, "momentum": 0.9, "temperature": 2.0}
    save_file(out, str(OUT / "weighting.safetensors"), metadata={"run": json.dumps(meta)})


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    make_vocab()
    make_untrainable()
    make_whole_model()
    make_losses()
    make_parity()
    make_weighting()
    total = sum(p.stat().st_size for p in OUT.iterdir())
    for p in sorted(OUT.iterdir()):
        print(f"  {p.name:40s} {p.stat().st_size:9d} B")
    print(f"  {'total':40s} {total:9d} B")
    assert total < 1024 * 1024, "training fixtures exceed 1 MB"


if __name__ == "__main__":
    main()
