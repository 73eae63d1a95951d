"""Writes hand-made hostile files to tests/fixtures/hostile/ (each a few hundred bytes): ONNX
models, head files and whole models (safetensors), and .npy arrays.

Each file is a small valid-looking file with one defect a crafted or corrupted file could carry;
tests/hostile.rs and tests/hostile_files.rs check that hydrant refuses every one with a clear
reason, without panicking and without allocating more than its limit. The expected reason of
each file is written beside the corpus in expected.json.

    .venv/bin/python scripts/make_hostile.py
"""

import json
import struct
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


def ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def bomb(op, args, inits, inputs=None, attrs=None):
    """`op` creating a huge tensor from a few bytes of shape arguments, as the model's output."""
    node = helper.make_node(op, args, ["bomb"], name="bomb", **(attrs or {}))
    out = [helper.make_tensor_value_info("bomb", TensorProto.FLOAT, None)]
    return model([node], inits, inputs=inputs, outputs=out)


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


def safetensors(tensors, metadata, header_len=None, tail=b""):
    """Raw safetensors bytes: `tensors` is a list of (name, dtype, shape, offsets, ...) entries
    written exactly as given (so offsets may lie), followed by `data`."""
    header = {}
    data = b""
    for name, dtype, shape, offsets, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        data += payload
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    n = len(text) if header_len is None else header_len
    return struct.pack("<Q", n) + text + data + tail


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


LINEAR = {"kind": "linear", "in_features": 4, "out_features": 2, "bias": True}


def head_meta(layers=None, name="h", inputs=("features",)):
    spec = {"name": name, "inputs": list(inputs), "outputs": [name], "layers": layers or [LINEAR]}
    return {"hydrant.format": "1", "hydrant.heads": json.dumps([spec])}


def linear_tensors(weight=None, name="h"):
    w = weight if weight is not None else f32(*[0.5] * 8)
    return [
        (f"{name}.0.bias", "F32", [2], [0, 8], f32(0.0, 0.0)),
        (f"{name}.0.weight", "F32", [2, len(w) // 8], [8, 8 + len(w)], w),
    ]


def head_file(**changes):
    return safetensors(changes.get("tensors", linear_tensors()), changes.get("meta", head_meta()))


def whole(layers, input_shape, heads=None, trunk_tensors=(), names=None):
    trunk = {"input": "image", "input_shape": input_shape, "layers": layers,
             "names": names or {}}
    heads = heads or [{"name": "cls", "inputs": ["image"], "outputs": ["cls"],
                       "layers": [{"kind": "flatten"}]}]
    meta = {"hydrant.format": "1", "hydrant.heads": json.dumps(heads),
            "hydrant.trunk": json.dumps(trunk)}
    return safetensors(list(trunk_tensors), meta)


def npy(header, data=b"", version=1, header_len=None):
    text = header.encode()
    n = len(text) if header_len is None else header_len
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", n) + text + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", n) + text + data


def npy_header(descr="<f4", shape="(2,)", fortran="False"):
    return "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }\n" % (descr, fortran, shape)


RELU = {"kind": "relu"}
UPSAMPLE = {"kind": "upsample2x"}


def other_files():
    """Safetensors and .npy files: name -> (bytes, expected words in the error)."""
    good = linear_tensors()
    bias, weight = good
    return {
        # Head files.
        "st_header_length_huge.safetensors": (head_file()[:0] + struct.pack("<Q", 1 << 63)
                                              + head_file()[8:], "exceeds the limit"),
        "st_header_past_end.safetensors": (safetensors(good, head_meta(), header_len=1 << 20),
                                           "runs past the end"),
        "st_too_short.safetensors": (b"\x10\x00\x00", "too short"),
        "st_overlap.safetensors": (safetensors(
            [bias, ("h.0.weight", "F32", [2, 4], [4, 36], weight[4])], head_meta(), tail=b"\0" * 4
        )[:-4], "overlap"),
        "st_gap.safetensors": (safetensors(
            [bias, ("h.0.weight", "F32", [2, 4], [12, 44], weight[4])], head_meta(), tail=b"\0" * 4
        ), "belong to no tensor"),
        "st_trailing_bytes.safetensors": (safetensors(good, head_meta(), tail=b"\xff" * 9),
                                          "after the last tensor"),
        "st_offsets_outside.safetensors": (safetensors(
            [bias, ("h.0.weight", "F32", [2, 4], [8, 1 << 40], weight[4])], head_meta()
        ), "outside the data"),
        "st_shape_lies.safetensors": (safetensors(
            [bias, ("h.0.weight", "F32", [3, 4], [8, 40], weight[4])], head_meta()
        ), "needs 48 bytes"),
        "st_shape_overflow.safetensors": (safetensors(
            [bias, ("h.0.weight", "F32", [1 << 32, 1 << 32, 1 << 32], [8, 40], weight[4])],
            head_meta()), "more elements than addressable"),
        "st_huge_declared.safetensors": (safetensors(
            [bias, ("h.0.weight", "F32", [1 << 20, 1 << 20], [8, 4 << 40], weight[4])],
            head_meta()), "outside the data"),
        "st_unknown_dtype.safetensors": (safetensors(
            [bias, ("h.0.weight", "Q4", [2, 4], [8, 40], weight[4])], head_meta()
        ), "unknown dtype `Q4`"),
        "st_absurd_rank.safetensors": (safetensors(
            [bias, ("h.0.weight", "F32", [1] * 40, [8, 12], f32(1.0))], head_meta()
        ), "rank 40"),
        "st_not_utf8.safetensors": (struct.pack("<Q", 4) + b"{\xff\xfe}", "not UTF-8"),
        "st_not_an_object.safetensors": (safetensors([], None)[:8 * 0] + struct.pack("<Q", 2)
                                         + b"[]", "not a JSON object"),
        "st_no_heads_metadata.safetensors": (safetensors(good, {"hydrant.format": "1"}),
                                             "hydrant.heads"),
        "st_future_format.safetensors": (safetensors(good, {**head_meta(), "hydrant.format": "9"}),
                                         "format version 9"),
        "st_unknown_layer_kind.safetensors": (safetensors(good, head_meta(
            [{"kind": "conv3d", "in_channels": 4}])), "unknown variant `conv3d`"),
        "st_layer_shape_mismatch.safetensors": (head_file(tensors=linear_tensors(f32(*[0.5] * 10))),
                                                "the linear layer needs [2, 4]"),
        "st_missing_tensor.safetensors": (safetensors([bias], head_meta()),
                                          "`h.0.weight` is missing"),
        "st_extra_tensor.safetensors": (safetensors(
            good + [("ghost.weight", "F32", [1], [40, 44], f32(1.0))], head_meta()
        ), "`ghost.weight` belongs to no head"),
        "st_nan_weight.safetensors": (head_file(tensors=linear_tensors(
            f32(0.5, float("nan"), 0.5, 0.5, 0.5, 0.5, 0.5, 0.5))), "non-finite value at element 1"),
        "st_wrong_dtype.safetensors": (safetensors(
            [bias, ("h.0.weight", "I32", [2, 4], [8, 40], weight[4])], head_meta()
        ), "is i32, expected f32"),
        "st_absurd_layer_size.safetensors": (safetensors(good, head_meta(
            [{"kind": "linear", "in_features": 1 << 40, "out_features": 2}])), "out of range"),
        "st_reserved_head_name.safetensors": (safetensors(
            linear_tensors(name="hydrant.x"), head_meta(name="hydrant.x")), "reserved"),
        "st_bad_heads_json.safetensors": (safetensors(good, {"hydrant.heads": "[{\"name\": 3"}),
                                          "`hydrant.heads` metadata"),
        "st_duplicate_tensor.safetensors": (safetensors([bias], head_meta())[:8 * 0] + (lambda t: (
            struct.pack("<Q", len(t)) + t + f32(0.0, 0.0)))(
            b'{"h.0.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"h.0.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'), "listed twice"),
        "st_two_inputs.safetensors": (safetensors(good, head_meta(inputs=("a", "b"))),
                                      "exactly one trunk tensor"),
        # Whole models (trunk + heads in one file).
        "whole_upsample_bomb.safetensors": (whole([UPSAMPLE] * 40, [1, 1, 1]),
                                            "elements per sample"),
        "whole_input_overflow.safetensors": (whole([RELU], [1 << 40, 1 << 40, 1 << 40]),
                                             "elements per sample"),
        "whole_over_budget.safetensors": (whole([RELU], [3, 2048, 2048]), "memory limit"),
        "whole_cut_missing.safetensors": (whole([RELU], [4], heads=[
            {"name": "cls", "inputs": ["ghost"], "outputs": ["cls"], "layers": [RELU]}]), "ghost"),
        "whole_residual_mismatch.safetensors": (whole([{"kind": "residual", "body": [
            {"kind": "linear", "in_features": 4, "out_features": 3, "bias": False}]}], [4],
            trunk_tensors=[("trunk.0.body.0.weight", "F32", [3, 4], [0, 48], f32(*[0.1] * 12))]),
            "body gives"),
        "whole_missing_trunk_weight.safetensors": (whole(
            [{"kind": "linear", "in_features": 4, "out_features": 3}], [4]),
            "`trunk.0.weight` is missing"),
        "whole_unknown_trunk_layer.safetensors": (whole([{"kind": "attention"}], [4]),
                                                  "hydrant.trunk"),
        "whole_bad_layer_name.safetensors": (whole([RELU], [4], names={"x": 7}),
                                             "name `x` for layer 7"),
        # .npy arrays.
        "npy_huge_shape.npy": (npy(npy_header(shape="(1152921504606846976,)")), "needs"),
        "npy_shape_overflow.npy": (npy(npy_header(shape="(1099511627776, 1099511627776)")),
                                   "overflow"),
        "npy_header_huge.npy": (npy(npy_header(), version=2, header_len=1 << 31), "limit"),
        "npy_truncated_data.npy": (npy(npy_header(shape="(4,)"), f32(1.0, 2.0)), "needs 16"),
        "npy_bad_descr.npy": (npy(npy_header(descr="<c32"), f32(1.0, 2.0)), "dtype"),
        "npy_fortran.npy": (npy(npy_header(fortran="True"), f32(1.0, 2.0)), "Fortran"),
        "npy_big_endian.npy": (npy(npy_header(descr=">f4"), f32(1.0, 2.0)), "big-endian"),
        "npy_absurd_rank.npy": (npy(npy_header(shape="(" + "1, " * 40 + ")"), f32(1.0)), "rank"),
        "npy_negative_dim.npy": (npy(npy_header(shape="(-2,)")), "shape"),
    }


# Words each ONNX file's error must contain (loaded with a 48 KiB tensor budget).
ONNX_REASONS = {
    "huge_initializer": "overflows",
    "lying_shape": "needs",
    "traversal_external": "relative path",
    "absolute_external": "relative path",
    "cycle": "cycle",
    "dangling_input": "no node, input or initializer",
    "duplicate_output": "produced by both",
    "absurd_rank": "rank",
    "over_budget": "memory limit",
    "duplicate_initializer": "initializer `w` is listed twice",
    "duplicate_input": "graph input `x` is listed twice",
    "writes_its_input": "which is a graph input",
    "bomb_constant_of_shape": "node `bomb` (ConstantOfShape) creates a tensor",
    "bomb_expand": "node `bomb` (Expand) creates a tensor",
    "bomb_tile": "node `bomb` (Tile) creates a tensor",
    "bomb_range": "node `bomb` (Range) creates a tensor",
    "bomb_resize": "node `bomb` (Resize) creates a tensor",
    "bomb_from_batch_size": "node `bomb` (ConstantOfShape) creates a tensor",
    "bomb_from_input_values": "shape input is variable",
}


# Inputs found by fuzzing (fuzz/README.md), committed as found; their expected reasons.
FUZZ_FOUND = {
    # A multi-byte first character in 'descr' once split a character and panicked.
    "npy_fuzz_multibyte_descr.npy": "unsupported dtype",
    # A Gather index of 10^19 into a two-element shape once panicked inside the engine's analysis.
    "onnx_fuzz_gather_index.onnx": "out of range for an axis of size 2",
}


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
        "duplicate_initializer": model(
            [helper.make_node("Add", ["x", "w"], ["y"], name="add")],
            [numpy_helper.from_array(np.ones(4, np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "w")]),
        "duplicate_input": model(
            [helper.make_node("Add", ["x", "x"], ["y"], name="add")],
            inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])] * 2),
        "writes_its_input": model([
            helper.make_node("Relu", ["x"], ["x"], name="loop"),
            helper.make_node("Relu", ["x"], ["y"], name="out"),
        ]),
        # Expansion bombs: a few bytes that ask for terabytes once evaluated.
        "bomb_constant_of_shape": bomb("ConstantOfShape", ["shape"],
                                       [ints("shape", [1 << 20, 1 << 20])]),
        "bomb_expand": bomb("Expand", ["x", "shape"], [ints("shape", [1 << 20, 1 << 20, 4])]),
        "bomb_tile": bomb("Tile", ["x", "reps"], [ints("reps", [1 << 20, 1 << 20])],
                          inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])]),
        "bomb_range": bomb("Range", ["start", "limit", "delta"],
                           [ints("start", 0), ints("limit", 1 << 50), ints("delta", 1)]),
        "bomb_resize": bomb("Resize", ["x", "", "scales"],
                            [numpy_helper.from_array(np.array([1, 1, 1e6, 1e6], np.float32),
                                                     "scales")],
                            inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                  [1, 1, 4, 4])]),
        # The size is the batch dimension times 10^6, squared: unknown at load (symbolic batch),
        # refused when the first run plans for a concrete batch.
        "bomb_from_batch_size": model([
            helper.make_node("Shape", ["x"], ["shape"], name="shape"),
            helper.make_node("Gather", ["shape", "zero"], ["n"], name="n", axis=0),
            helper.make_node("Mul", ["n", "million"], ["side"], name="side"),
            helper.make_node("Concat", ["side", "side"], ["dims"], name="dims", axis=0),
            helper.make_node("ConstantOfShape", ["dims"], ["bomb"], name="bomb"),
            helper.make_node("Relu", ["x"], ["y"], name="y"),
        ], [ints("zero", [0]), ints("million", [1_000_000])],
            outputs=[helper.make_tensor_value_info("bomb", TensorProto.FLOAT, None),
                     helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]),
        # The size comes from the input's values (10^6 + x): no static bound can see it; the
        # engine refuses a shape that depends on values when it plans the segment.
        "bomb_from_input_values": model([
            helper.make_node("Cast", ["x"], ["xi"], name="cast", to=TensorProto.INT64),
            helper.make_node("Add", ["xi", "million"], ["dims"], name="dims"),
            helper.make_node("ConstantOfShape", ["dims"], ["bomb"], name="bomb"),
            helper.make_node("Relu", ["x"], ["y"], name="y"),
        ], [ints("million", [1_000_000])],
            inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            outputs=[helper.make_tensor_value_info("bomb", TensorProto.FLOAT, None),
                     helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        # Consistent, but 64 KiB of weights: over the 32 KiB budget the test loads with.
        "over_budget": add_w(numpy_helper.from_array(np.zeros((16, 1024), np.float32), "w")),
    }
    for name, m in files.items():
        path = OUT / f"{name}.onnx"
        path.write_bytes(m.SerializeToString())
        print(path, path.stat().st_size)
    expected = {f"{name}.onnx": why for name, why in ONNX_REASONS.items()}
    for name, (data, why) in other_files().items():
        path = OUT / name
        path.write_bytes(data)
        expected[name] = why
        print(path, path.stat().st_size)
    expected.update(FUZZ_FOUND)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
