"""Writes tests/fixtures/dtypes*: a small model whose input and outputs are not f32.

dtypes.onnx: a u8 image [N, 1, 8, 8] -> Cast -> /255 -> Flatten -> Gemm (digit logits, f32)
-> ArgMax (label, i64) and Cast (logits_f16, f16). The Gemm is a ridge-regression fit on the
scikit-learn digits, so labels are meaningful. Reference outputs come from onnxruntime.

    .venv/bin/python scripts/make_dtype_fixture.py
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def model(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT, name="cast_in"),
        helper.make_node("Mul", ["x", "scale"], ["xs"], name="scale"),
        helper.make_node("Flatten", ["xs"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1, name="fc"),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0, name="argmax"),
        helper.make_node("Cast", ["logits"], ["logits_f16"], to=TensorProto.FLOAT16, name="cast_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "dtypes",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 1, 8, 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("logits_f16", TensorProto.FLOAT16, ["N", 10]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main() -> None:
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    x = images.reshape(len(images), -1).astype(np.float64) / 255
    onehot = np.eye(10)[digits.target]
    xb = np.hstack([x, np.ones((len(x), 1))])
    coef = np.linalg.solve(xb.T @ xb + 1e-2 * np.eye(xb.shape[1]), xb.T @ onehot)
    weight, bias = coef[:-1].T, coef[-1]

    m = model(weight, bias)
    onnx.save(m, OUT / "dtypes.onnx")
    batch = images[:8].reshape(8, 1, 8, 8)
    session = ort.InferenceSession(str(OUT / "dtypes.onnx"), providers=["CPUExecutionProvider"])
    logits, label, logits_f16 = session.run(None, {"image": batch})
    np.save(OUT / "dtypes_input_u8.npy", batch)
    np.save(OUT / "dtypes_ref_logits.npy", logits)
    np.save(OUT / "dtypes_ref_label.npy", label)
    np.save(OUT / "dtypes_ref_logits_f16.npy", logits_f16)
    accuracy = (label == digits.target[:8]).mean()
    print(f"dtypes.onnx: labels {label.tolist()}, accuracy on the 8 fixture images {accuracy:.2f}")


if __name__ == "__main__":
    main()
