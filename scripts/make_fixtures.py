#!/usr/bin/env python3
"""Generate the small test fixtures used by hydrant's tests into tests/fixtures/.

Run from the repository root:

    .venv/bin/python scripts/make_fixtures.py

(the venv is created from scripts/requirements.txt).

Fixtures produced:

  (a) hydranet.onnx            small multi-head network: shared `trunk`,
                               heads `heads.cls`, `heads.box`, `heads.seg`
      hydranet_expected_split.json
                               per-node part assignment ("trunk"/"cls"/"box"/"seg")
                               derived from the PyTorch module scopes (node-name
                               prefixes), plus each head's cut-point tensors
      hydranet_input_b{1,3}.npy, hydranet_b{1,3}_{cls,box,seg}.npy
  (b) single.onnx              single-output conv net, single_meta.json (name of
                               the penultimate ReLU tensor), single_input_b2.npy,
                               single_b2_{logits,penultimate}.npy
  (c) digits.onnx              multi-task model trained on scikit-learn's digits
                               (heads: digit / parity / ge5), digits_images.npy,
                               digits_labels.npy, digits_meta.json (split and
                               test accuracies), digits_ref_input.npy,
                               digits_ref_{digit,parity,ge5}.npy

All reference outputs are computed by onnxruntime (CPUExecutionProvider) on the
exported files; torch outputs are only used as a sanity check (atol 1e-4).
Everything is seeded, so reruns produce the same files.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures"
OPSET = 17
SEED = 1234

# The classic exporter is deprecated (but still present) in torch >= 2.9; silence the notice.
warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")

# Which exporter path was used for each file (reported in the summary).
EXPORTER_USED: dict[str, str] = {}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def seed_all(seed: int = SEED) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def save_npy(name: str, arr: np.ndarray) -> None:
    np.save(OUT / name, np.ascontiguousarray(arr))


def save_json(name: str, obj) -> None:
    with open(OUT / name, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def export_onnx(model: nn.Module, dummy: torch.Tensor, path: Path,
                input_names: list[str], output_names: list[str]) -> None:
    """Export with the classic (TorchScript) exporter if available, else dynamo.

    Batch axis 0 of the input and of every output is dynamic, named "N".
    """
    model.eval()
    dynamic_axes = {n: {0: "N"} for n in input_names + output_names}
    try:
        torch.onnx.export(
            model, (dummy,), str(path),
            input_names=input_names, output_names=output_names,
            opset_version=OPSET, do_constant_folding=True,
            dynamic_axes=dynamic_axes, dynamo=False,
        )
        EXPORTER_USED[path.name] = "classic (dynamo=False)"
    except Exception as e:  # pragma: no cover - depends on torch version
        print(f"classic exporter failed for {path.name}: {e!r}; trying dynamo", file=sys.stderr)
        batch = torch.export.Dim("N")
        torch.onnx.export(
            model, (dummy,), str(path),
            input_names=input_names, output_names=output_names,
            opset_version=OPSET, do_constant_folding=True,
            dynamic_shapes=({0: batch},), dynamo=True, external_data=False,
        )
        EXPORTER_USED[path.name] = "dynamo"


def ensure_node_names(model: onnx.ModelProto) -> bool:
    """Give every node a non-empty unique name. Returns True if anything changed."""
    seen: set[str] = set()
    changed = False
    for i, node in enumerate(model.graph.node):
        name = node.name
        if not name or name in seen:
            base = name or f"/{node.op_type}"
            k = i
            name = f"{base}_{k}"
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            node.name = name
            changed = True
        seen.add(name)
    return changed


def finalize_onnx(path: Path) -> onnx.ModelProto:
    """Load, make node names unique/non-empty, check, and re-save if needed."""
    model = onnx.load(str(path))
    if ensure_node_names(model):
        onnx.save(model, str(path))
    onnx.checker.check_model(model, full_check=True)
    return model


def ort_session(model_or_path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def run_ort(model_or_path, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    sess = ort_session(model_or_path)
    outs = sess.run(names, feeds)
    return dict(zip(names, outs))


def assert_close(name: str, torch_out: torch.Tensor, ort_out: np.ndarray, atol: float = 1e-4) -> None:
    t = torch_out.detach().numpy()
    assert t.shape == ort_out.shape, (name, t.shape, ort_out.shape)
    diff = float(np.max(np.abs(t - ort_out))) if t.size else 0.0
    assert np.allclose(t, ort_out, atol=atol, rtol=1e-4), f"{name}: torch vs ORT max diff {diff}"


def randomize_bn(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial running stats and affine params."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c) * 0.2)
                m.running_var.copy_(torch.rand(c) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c) + 0.5)
                m.bias.copy_(torch.randn(c) * 0.2)


# --------------------------------------------------------------------------
# (a) HydraNet
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block; 1x1 strided projection on the skip when shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.proj is None else self.proj(x)
        return F.relu(y + skip)


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = BasicBlock(16, 16)          # 32x32
        self.block2 = BasicBlock(16, 32, stride=2)  # 16x16 -> "mid"
        self.block3 = BasicBlock(32, 64, stride=2)  # 8x8
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.stem(x)
        x = self.block1(x)
        mid = self.block2(x)
        x = self.block3(mid)
        features = torch.flatten(self.pool(x), 1)
        return features, mid


class HydraHeads(nn.Module):
    # A real module with a forward (rather than a bare ModuleDict) so that the
    # classic exporter's scope names are "/heads/<head>/..." and not "/<head>/...".
    def __init__(self):
        super().__init__()
        self.cls = nn.Linear(64, 10)
        self.box = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
        self.seg = nn.Sequential(
            nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 3, 1),
            nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, features, mid):
        return self.cls(features), self.box(features), self.seg(mid)


class HydraNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = Trunk()
        self.heads = HydraHeads()

    def forward(self, image):
        features, mid = self.trunk(image)
        return self.heads(features, mid)


def constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Initializers, Constant outputs, and outputs of nodes fed only by those."""
    const = {t.name for t in model.graph.initializer}
    const.add("")  # omitted optional inputs
    for node in model.graph.node:  # graph is topologically sorted
        if node.op_type == "Constant" or all(i in const for i in node.input):
            const.update(node.output)
    return const


def part_of(node_name: str) -> str:
    """Map an ONNX node name (module scope prefix) to its part."""
    for head in ("cls", "box", "seg"):
        if node_name.startswith(f"/heads/{head}/"):
            return head
    if node_name.startswith("/trunk/"):
        return "trunk"
    raise ValueError(f"cannot assign node {node_name!r} to a part")


def expected_split(model: onnx.ModelProto) -> dict:
    const = constant_tensors(model)
    nodes: dict[str, str] = {}
    producer_part: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "Constant" or all(i in const for i in node.input):
            continue
        part = part_of(node.name)
        nodes[node.name] = part
        for o in node.output:
            producer_part[o] = part
    graph_inputs = {i.name for i in model.graph.input} - const
    cut_points: dict[str, list[str]] = {"cls": [], "box": [], "seg": []}
    for node in model.graph.node:
        part = nodes.get(node.name)
        if part is None or part == "trunk":
            continue
        for i in node.input:
            if i in const:
                continue
            if (producer_part.get(i) == "trunk" or i in graph_inputs) and i not in cut_points[part]:
                cut_points[part].append(i)
    return {"nodes": nodes, "cut_points": cut_points}


def make_hydranet() -> None:
    seed_all(SEED)
    model = HydraNet()
    randomize_bn(model)
    model.eval()

    path = OUT / "hydranet.onnx"
    export_onnx(model, torch.randn(2, 3, 32, 32), path, ["image"], ["cls", "box", "seg"])
    onx = finalize_onnx(path)

    print("hydranet.onnx nodes:")
    for n in onx.graph.node:
        print(f"  {n.name:40s} {n.op_type:20s} {list(n.input)} -> {list(n.output)}")

    split = expected_split(onx)
    save_json("hydranet_expected_split.json", split)

    for b in (1, 3):
        x = np.random.standard_normal((b, 3, 32, 32)).astype(np.float32)
        save_npy(f"hydranet_input_b{b}.npy", x)
        outs = run_ort(path, {"image": x}, ["cls", "box", "seg"])
        with torch.no_grad():
            t_outs = model(torch.from_numpy(x))
        for name, t in zip(["cls", "box", "seg"], t_outs):
            assert_close(f"hydranet b{b} {name}", t, outs[name])
            save_npy(f"hydranet_b{b}_{name}.npy", outs[name].astype(np.float32))


# --------------------------------------------------------------------------
# (b) single-output network
# --------------------------------------------------------------------------


class Single(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 32), nn.ReLU(),  # <- penultimate tensor
        )
        self.classifier = nn.Linear(32, 5)

    def forward(self, x):
        return self.classifier(self.features(x))


def make_single() -> None:
    seed_all(SEED + 1)
    model = Single().eval()
    path = OUT / "single.onnx"
    export_onnx(model, torch.randn(2, 1, 8, 8), path, ["x"], ["logits"])
    onx = finalize_onnx(path)

    # The penultimate tensor is the (non-constant) input of the node producing "logits",
    # which must itself come from a Relu.
    producers = {o: n for n in onx.graph.node for o in n.output}
    const = constant_tensors(onx)
    last = producers["logits"]
    data_inputs = [i for i in last.input if i not in const]
    assert len(data_inputs) == 1, (last.name, list(last.input))
    penultimate = data_inputs[0]
    assert producers[penultimate].op_type == "Relu", producers[penultimate].op_type
    save_json("single_meta.json", {"penultimate": penultimate, "input": "x", "output": "logits"})

    x = np.random.standard_normal((2, 1, 8, 8)).astype(np.float32)
    save_npy("single_input_b2.npy", x)

    # Temporary copy exposing the intermediate as an extra graph output.
    tmp = copy.deepcopy(onx)
    tmp.graph.output.append(onnx.helper.make_tensor_value_info(penultimate, onnx.TensorProto.FLOAT, None))
    outs = run_ort(tmp, {"x": x}, ["logits", penultimate])
    # The plain model must agree with the augmented one.
    plain = run_ort(path, {"x": x}, ["logits"])
    assert np.array_equal(plain["logits"], outs["logits"])

    with torch.no_grad():
        t_pen = model.features(torch.from_numpy(x))
        t_logits = model.classifier(t_pen)
    assert_close("single logits", t_logits, outs["logits"])
    assert_close("single penultimate", t_pen, outs[penultimate])
    save_npy("single_b2_logits.npy", outs["logits"].astype(np.float32))
    save_npy("single_b2_penultimate.npy", outs[penultimate].astype(np.float32))
    print(f"single.onnx penultimate tensor: {penultimate}")


# --------------------------------------------------------------------------
# (c) digits demo
# --------------------------------------------------------------------------

DIGITS_TASKS = {
    # name: (num classes, label rule as text, label function)
    "digit": (10, "y", lambda y: y),
    "parity": (2, "y % 2", lambda y: y % 2),
    "ge5": (2, "y >= 5", lambda y: (y >= 5).astype(np.int64)),
}


class DigitsHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.digit = nn.Linear(64, 10)
        self.parity = nn.Linear(64, 2)
        self.ge5 = nn.Linear(64, 2)

    def forward(self, f):
        return self.digit(f), self.parity(f), self.ge5(f)


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),  # [N,32,4,4]
            nn.Flatten(),
            nn.Linear(512, 64), nn.ReLU(),
        )
        self.heads = DigitsHeads()

    def forward(self, image):
        return self.heads(self.trunk(image))


def make_digits() -> dict[str, float]:
    from sklearn.datasets import load_digits

    seed_all(SEED + 2)
    ds = load_digits()
    images = (ds.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = ds.target.astype(np.int64)
    assert images.shape == (1797, 1, 8, 8)
    save_npy("digits_images.npy", images)
    save_npy("digits_labels.npy", labels)
    n_train, n_test = 1297, 500
    assert n_train + n_test == len(labels)
    xtr, ytr = torch.from_numpy(images[:n_train]), torch.from_numpy(labels[:n_train])
    xte, yte = images[n_train:], labels[n_train:]

    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _epoch in range(30):
        perm = torch.randperm(n_train, generator=gen)
        for s in range(0, n_train, 64):
            idx = perm[s:s + 64]
            xb, yb = xtr[idx], ytr[idx]
            d, p, g = model(xb)
            loss = (F.cross_entropy(d, yb) + F.cross_entropy(p, yb % 2)
                    + F.cross_entropy(g, (yb >= 5).long()))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()

    names = list(DIGITS_TASKS)
    path = OUT / "digits.onnx"
    export_onnx(model, torch.from_numpy(xte[:2]), path, ["image"], names)
    finalize_onnx(path)

    outs = run_ort(path, {"image": xte}, names)
    with torch.no_grad():
        t_outs = model(torch.from_numpy(xte))
    tasks = {}
    accs = {}
    for name, t in zip(names, t_outs):
        assert_close(f"digits {name}", t, outs[name])
        ncls, rule, fn = DIGITS_TASKS[name]
        acc = float(np.mean(outs[name].argmax(1) == fn(yte)))
        accs[name] = acc
        tasks[name] = {"classes": ncls, "label_rule": rule, "test_accuracy": round(acc, 4)}
    save_json("digits_meta.json", {"train": n_train, "test": n_test, "input": "image", "tasks": tasks})

    ref_in = np.ascontiguousarray(xte[:8])
    save_npy("digits_ref_input.npy", ref_in)
    ref = run_ort(path, {"image": ref_in}, names)
    for name in names:
        save_npy(f"digits_ref_{name}.npy", ref[name].astype(np.float32))
    return accs


def make_unknown_op() -> None:
    """unknown_op.onnx: a valid protobuf whose second node uses an operator no runtime knows."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
        helper.make_node("FancyOp", ["r"], ["y"], name="the_fancy_node"),
    ]
    graph = helper.make_graph(nodes, "unknown_op", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, OUT / "unknown_op.onnx")


# --------------------------------------------------------------------------


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    make_hydranet()
    make_single()
    accs = make_digits()
    make_unknown_op()

    print("\nexporter used:")
    for f, how in EXPORTER_USED.items():
        print(f"  {f}: {how}")
    print("\nfixtures:")
    total = 0
    for p in sorted(q for q in OUT.iterdir() if q.is_file()):
        size = p.stat().st_size
        total += size
        print(f"  {p.name:36s} {size:9d} B")
    print(f"  {'total':36s} {total:9d} B")
    print("\ndigits test accuracy (ORT):")
    for k, v in accs.items():
        print(f"  {k:8s} {v:.4f}")
    assert total < 3 * 1024 * 1024, "fixtures exceed ~3 MB"


if __name__ == "__main__":
    main()
