"""Writes hand-made hostile ONNX files to tests/fixtures/hostile/ (each a few hundred bytes).

Each file is a small valid-looking model with one defect a crafted or corrupted file could carry;
tests/hostile.rs checks that hydrant refuses every one with a clear reason.

    .venv/bin/python scripts/make_hostile.py
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hostile"


def model(nodes, inits=(), inputs=None, outputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def add_w(w):
    return model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [w])


def raw(name, dims, nbytes):
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    t.raw_data = b"\0" * nbytes
    return t


def external(location):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", location), ("offset", "0"), ("length", "16")]:
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    files = {
        # 2^62 floats declared, 16 bytes present: nothing may be allocated from the shape.
        "huge_initializer": add_w(raw("w", [1 << 31, 1 << 31], 16)),
        # The shape says 4 floats, the data holds 3.
        "lying_shape": add_w(raw("w", [4], 12)),
        "traversal_external": add_w(external("../../../../etc/passwd")),
        "absolute_external": add_w(external("/etc/passwd")),
        "cycle": model([
            helper.make_node("Add", ["x", "b"], ["a"], name="first"),
            helper.make_node("Relu", ["a"], ["b"], name="second"),
            helper.make_node("Identity", ["b"], ["y"], name="out"),
        ]),
        "dangling_input": model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]),
        "duplicate_output": model([
            helper.make_node("Relu", ["x"], ["y"], name="one"),
            helper.make_node("Sigmoid", ["x"], ["y"], name="two"),
        ]),
        "absurd_rank": add_w(raw("w", [1] * 40, 4)),
        # Consistent, but 64 KiB of weights: over the 32 KiB budget the test loads with.
        "over_budget": add_w(numpy_helper.from_array(np.zeros((16, 1024), np.float32), "w")),
    }
    for name, m in files.items():
        path = OUT / f"{name}.onnx"
        path.write_bytes(m.SerializeToString())
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
