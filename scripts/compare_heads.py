"""Compares two head files tensor by tensor: python3 scripts/compare_heads.py A B TOLERANCE.

Prints the largest relative error (max |a - b| over max |b|) of each tensor and exits 1 when one
exceeds TOLERANCE or the files hold different tensors. Reads safetensors with numpy alone.
"""

import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    body = raw[8 + size :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        values = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]])
        out[name] = values.reshape(info["shape"]).astype(np.float64)
    return out


def main():
    a, b, tolerance = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
    if sorted(a) != sorted(b):
        print(f"different tensors: {sorted(a)} and {sorted(b)}")
        return 1
    worst = 0.0
    for name in sorted(a):
        scale = max(float(np.abs(b[name]).max(initial=0.0)), 1e-12)
        err = float(np.abs(a[name] - b[name]).max(initial=0.0)) / scale
        worst = max(worst, err)
        print(f"{name}: relative error {err:.3e}")
    print(f"largest relative error {worst:.3e} (tolerance {tolerance:.1e})")
    return 0 if worst <= tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
