"""Exports the CPU benchmark models: torchvision ResNet-18 and MobileNet-V2 trunks with three heads.

Each model takes `image` [N, 3, 224, 224] (symbolic N) and has a classification head on the pooled
features, a box-regression MLP head, and a segmentation conv head reading a mid-level trunk tensor.
Weights are seeded random (no download); BatchNorm statistics are perturbed so no layer is trivial.

    .venv/bin/python bench/make_perf_models.py [OUT_DIR]     # default: bench/models (not committed)
"""

import sys
from pathlib import Path

import torch
import torch.nn as nn
import torchvision


class MultiTask(nn.Module):
    def __init__(self, early: nn.Module, late: nn.Module, mid_ch: int, feat_ch: int):
        super().__init__()
        self.early, self.late = early, late
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.cls = nn.Linear(feat_ch, 10)
        self.box = nn.Sequential(nn.Linear(feat_ch, 128), nn.ReLU(), nn.Linear(128, 4))
        self.seg = nn.Sequential(
            nn.Conv2d(mid_ch, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 5, 1),
            nn.Upsample(scale_factor=2, mode="nearest"),
        )

    def forward(self, image):
        mid = self.early(image)
        feat = torch.flatten(self.pool(self.late(mid)), 1)
        return self.cls(feat), self.box(feat), self.seg(mid)


def resnet18() -> nn.Module:
    r = torchvision.models.resnet18(weights=None)
    early = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2)
    return MultiTask(early, nn.Sequential(r.layer3, r.layer4), 128, 512)


def mobilenet_v2() -> nn.Module:
    f = torchvision.models.mobilenet_v2(weights=None).features
    return MultiTask(f[:7], f[7:], 32, 1280)


def perturb_bn(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "models")
    out.mkdir(parents=True, exist_ok=True)
    for name, build in [("resnet18", resnet18), ("mobilenet_v2", mobilenet_v2)]:
        torch.manual_seed(0)
        model = build().eval()
        perturb_bn(model, torch.Generator().manual_seed(1))
        x = torch.randn(1, 3, 224, 224)
        path = out / f"{name}_3heads.onnx"
        torch.onnx.export(
            model, (x,), str(path), input_names=["image"], output_names=["cls", "box", "seg"],
            dynamic_axes={"image": {0: "N"}, "cls": {0: "N"}, "box": {0: "N"}, "seg": {0: "N"}},
            opset_version=17, dynamo=False,
        )
        print(path)


if __name__ == "__main__":
    main()
