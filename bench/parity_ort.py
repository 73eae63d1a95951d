"""Checks hydrant's outputs against onnxruntime's on the benchmark models (bench/models).

For each model and batch size: a seeded random image batch, `hydrant run` (own CPU ops on, every
head), onnxruntime on the same file; prints, per output, max |hydrant - ort| / max |ort| and fails
when one exceeds the bound (1e-4).

    .venv/bin/python bench/parity_ort.py [BATCH ...]     # default: 1 8
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

BOUND = 1e-4
ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "hydrant"


def check(model: Path, batch: int) -> float:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {name: x})))
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        cmd = [str(BIN), "run", str(model), "--input", f"{tmp}/x.npy", "--out", f"{tmp}/out"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        for out, ref in want.items():
            got = np.load(f"{tmp}/out/{out}.npy")
            rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))
            worst = max(worst, rel)
            print(f"{model.stem:<22} batch {batch}  {out:<12} rel err {rel:.2e}")
    return worst


def main() -> int:
    batches = [int(b) for b in sys.argv[1:]] or [1, 8]
    worst = 0.0
    for model in sorted((ROOT / "bench" / "models").glob("*.onnx")):
        for b in batches:
            worst = max(worst, check(model, b))
    print(f"worst {worst:.2e} (bound {BOUND:.0e})")
    return 0 if worst <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
