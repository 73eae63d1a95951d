"""PyTorch eager on the GPU, the peer of hydrant's CUDA backend, on the same weights.

    python3 bench/peer_torch_gpu.py --export DIR
        Builds the benchmark models of bench/make_perf_models.py (ResNet-18 and MobileNet-V2
        trunks with three heads, the same seeds, so the same weights) and writes them to
        DIR/<name>_3heads.onnx for hydrant's `gpu_bench`.
    python3 bench/peer_torch_gpu.py --compare HYDRANT_TIMES [--iters N]
        Times the same models in PyTorch eager (CUDA events, medians after warm-up) at each batch
        and precision hydrant reported, and prints the side-by-side table, with the fraction of
        the H200's ceilings (dense FLOP/s and memory bandwidth) that each run achieved.

HYDRANT_TIMES holds `gpu_bench` lines: `hydrant <model> batch <N> <f32|f16|bf16> <ms>`.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

# H200 SXM: dense FLOP/s by precision (f32 on CUDA cores; f16/bf16 on tensor cores) and HBM3e.
PEAK_FLOPS = {"f32": 67e12, "f16": 989e12, "bf16": 989e12}
PEAK_BYTES = 4.8e12
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def models():
    import make_perf_models as m  # torchvision inside

    out = {}
    for name, build in [("resnet18", m.resnet18), ("mobilenet_v2", m.mobilenet_v2)]:
        torch.manual_seed(0)
        model = build().eval()
        m.perturb_bn(model, torch.Generator().manual_seed(1))
        out[f"{name}_3heads"] = model
    return out


def export(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in models().items():
        path = folder / f"{name}.onnx"
        torch.onnx.export(
            model, (torch.randn(1, 3, 224, 224),), str(path), input_names=["image"],
            output_names=["cls", "box", "seg"],
            dynamic_axes={k: {0: "N"} for k in ["image", "cls", "box", "seg"]},
            opset_version=17, dynamo=False,
        )
        print(path)


def flops(model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def time_ms(model, x, iters: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    with torch.no_grad():
        for i in range(iters + 5):
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            if i >= 5:
                times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def compare(path: Path, iters: int) -> None:
    ours = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) == 6 and f[0] == "hydrant" and f[2] == "batch":
            ours[(f[1], int(f[3]), f[4])] = float(f[5])
        elif f[:1] == ["hydrant"]:
            print(line)
    built = models()
    print(f"{'model':<20} {'batch':>5} {'prec':>5} {'hydrant ms':>11} {'torch ms':>9} {'ratio':>6} "
          f"{'FLOP/s of peak':>15} {'weights B/s of peak':>20}")
    for (name, batch, prec), ms in sorted(ours.items()):
        model = built[name].to("cuda", DTYPES[prec])
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=DTYPES[prec])
        theirs = time_ms(model, x, iters)
        work = flops(model, x)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        print(f"{name:<20} {batch:>5} {prec:>5} {ms:>11.3f} {theirs:>9.3f} {theirs / ms:>5.2f}x "
              f"{work / (ms * 1e-3) / PEAK_FLOPS[prec]:>14.1%} "
              f"{weight_bytes / (ms * 1e-3) / PEAK_BYTES:>19.1%}")
    print("ratio: PyTorch time / hydrant time (above 1: hydrant faster)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--export", type=Path)
    p.add_argument("--compare", type=Path)
    p.add_argument("--iters", type=int, default=30)
    a = p.parse_args()
    if a.export:
        export(a.export)
    if a.compare:
        compare(a.compare, a.iters)


if __name__ == "__main__":
    main()
