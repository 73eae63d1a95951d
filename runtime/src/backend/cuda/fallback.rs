//! Which ops the GPU backend runs, and where a segment runs when one of its ops is outside
//! that set: the segment runs on the CPU, and the placement names the node and why, so that
//! `hydrant inspect` can say it.

use super::fusion::{activation, plan, Step};
use super::ir::{OpNode, SegmentIr};
use std::collections::HashSet;

/// Where a segment runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Every node has a GPU kernel.
    Cuda,
    /// On the CPU because of this node.
    Cpu {
        /// The node's name.
        node: String,
        /// Its op type.
        op: String,
        /// Why the GPU backend does not run it.
        reason: String,
    },
}

impl Placement {
    /// A one-line description (`cuda`, or `cpu: Conv node "c1" (auto_pad SAME_LOWER)`).
    pub fn describe(&self) -> String {
        match self {
            Placement::Cuda => "cuda".into(),
            Placement::Cpu { node, op, reason } => format!("cpu: {op} node `{node}` ({reason})"),
        }
    }
}

/// Whether the GPU backend runs `node` of `ir` by itself; `Err` says why not.
pub fn supported(node: &OpNode, ir: &SegmentIr) -> Result<(), String> {
    let pads_symmetric = |n: &OpNode| match n.ints("pads") {
        Some(p) if p.len() == 4 => p[0] == p[2] && p[1] == p[3],
        Some(p) => p.is_empty(),
        None => true,
    };
    let auto_pad_ok = |n: &OpNode| matches!(n.string("auto_pad", "NOTSET"), "NOTSET" | "VALID");
    let two_d = |n: &OpNode| n.ints("kernel_shape").is_none_or(|k| k.len() == 2);
    match node.op.as_str() {
        "Conv" | "MaxPool" | "AveragePool" => {
            if !two_d(node) {
                return Err("only 2-D windows".into());
            }
            if !auto_pad_ok(node) {
                return Err(format!("auto_pad {}", node.string("auto_pad", "")));
            }
            if !pads_symmetric(node) {
                return Err("asymmetric padding".into());
            }
            if node.op == "MaxPool" && (node.outputs.len() > 1 || node.int("ceil_mode", 0) != 0) {
                return Err("indices output or ceil_mode".into());
            }
            if node.op == "AveragePool" && node.int("ceil_mode", 0) != 0 {
                return Err("ceil_mode".into());
            }
            Ok(())
        }
        "BatchNormalization" => {
            if node.outputs.len() > 1 || node.int("training_mode", 0) != 0 {
                return Err("training mode".into());
            }
            Ok(())
        }
        "Gemm" => {
            if node.int("transA", 0) != 0 {
                return Err("transA".into());
            }
            Ok(())
        }
        "Softmax" => {
            if node.int("axis", -1) != -1 {
                return Err("axis other than the last".into());
            }
            Ok(())
        }
        "LayerNormalization" => {
            if node.int("axis", -1) != -1 || node.outputs.len() > 1 {
                return Err("axis other than the last, or statistics outputs".into());
            }
            Ok(())
        }
        "Resize" | "Upsample" => {
            let mode = node.string("mode", "nearest");
            if !matches!(mode, "nearest" | "linear" | "bilinear") {
                return Err(format!("mode {mode}"));
            }
            let ctm = node.string("coordinate_transformation_mode", "half_pixel");
            if mode != "nearest"
                && !matches!(ctm, "half_pixel" | "pytorch_half_pixel" | "align_corners")
            {
                return Err(format!("coordinate_transformation_mode {ctm}"));
            }
            let floor = node.string("nearest_mode", "round_prefer_floor") == "floor";
            if mode == "nearest" && !(floor && ctm == "asymmetric") {
                // PyTorch exports nearest as asymmetric + floor; other roundings differ.
                return Err("nearest rounding other than asymmetric + floor".into());
            }
            Ok(())
        }
        "ReduceMean" => match node.ints("axes") {
            // `x.mean((2, 3))` over NCHW (heads' global average pooling): a global average pool.
            Some([2, 3]) if node.inputs.len() == 1 => Ok(()),
            _ => Err("axes other than (2, 3) given as an attribute".into()),
        },
        "Clip" => match activation(node, ir) {
            Some(_) => Ok(()),
            None => Err("bounds other than 0..6 or 0..∞, or not constant".into()),
        },
        "Mul" => Err("no GPU kernel (Mul runs only as part of SiLU)".into()),
        "Relu" | "LeakyRelu" | "Sigmoid" | "Tanh" | "Gelu" | "Add" | "MatMul" | "Concat"
        | "GlobalAveragePool" | "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" | "Identity"
        | "Dropout" => Ok(()),
        _ => Err("no GPU kernel".into()),
    }
}

/// Where `segment` runs: on the GPU when every node is supported (by itself, or as part of a
/// fused step), else on the CPU, naming the first node that is not.
pub fn place(segment: &SegmentIr) -> Placement {
    let fused: HashSet<usize> = plan(segment)
        .iter()
        .filter(|s| !matches!(s, Step::Single(_)))
        .flat_map(|s| s.nodes())
        .collect();
    for (i, n) in segment.nodes.iter().enumerate() {
        let inside = fused.contains(&i) && matches!(n.op.as_str(), "Mul" | "Sigmoid" | "Clip");
        if let Err(reason) = if inside { Ok(()) } else { supported(n, segment) } {
            return Placement::Cpu { node: n.name.clone(), op: n.op.clone(), reason };
        }
    }
    Placement::Cuda
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::ir::Attr;

    fn seg(nodes: Vec<OpNode>) -> SegmentIr {
        SegmentIr { nodes, ..SegmentIr::default() }
    }

    #[test]
    fn a_resnet_style_segment_runs_on_the_gpu() {
        let s = seg(vec![
            OpNode::new("Conv", &["x", "w"], &["c"]).with("pads", Attr::Ints(vec![1, 1, 1, 1])),
            OpNode::new("BatchNormalization", &["c", "g", "b", "m", "v"], &["bn"]),
            OpNode::new("Relu", &["bn"], &["r"]),
            OpNode::new("MaxPool", &["r"], &["p"]).with("kernel_shape", Attr::Ints(vec![3, 3])),
            OpNode::new("GlobalAveragePool", &["p"], &["g"]),
            OpNode::new("Flatten", &["g"], &["f"]),
            OpNode::new("Gemm", &["f", "fw", "fb"], &["y"]).with("transB", Attr::Int(1)),
        ]);
        assert_eq!(place(&s), Placement::Cuda);
    }

    #[test]
    fn the_first_unsupported_node_sends_the_segment_to_the_cpu_and_is_named() {
        let s = seg(vec![
            OpNode::new("Relu", &["x"], &["r"]),
            OpNode::new("Conv", &["r", "w"], &["c"])
                .with("auto_pad", Attr::Str("SAME_UPPER".into())),
            OpNode::new("Einsum", &["c"], &["y"]),
        ]);
        let p = place(&s);
        assert_eq!(
            p,
            Placement::Cpu {
                node: "c".into(),
                op: "Conv".into(),
                reason: "auto_pad SAME_UPPER".into()
            }
        );
        assert_eq!(p.describe(), "cpu: Conv node `c` (auto_pad SAME_UPPER)");
        let s = seg(vec![OpNode::new("Einsum", &["x"], &["y"])]);
        assert!(place(&s).describe().contains("Einsum node `y` (no GPU kernel)"));
    }

    #[test]
    fn silu_multiplies_are_placed_only_inside_their_fused_step() {
        let silu = seg(vec![
            OpNode::new("Conv", &["x", "w"], &["c"]),
            OpNode::new("Sigmoid", &["c"], &["s"]),
            OpNode::new("Mul", &["c", "s"], &["y"]),
        ]);
        assert_eq!(place(&silu), Placement::Cuda);
        let lone = seg(vec![OpNode::new("Mul", &["a", "b"], &["y"])]);
        assert!(matches!(place(&lone), Placement::Cpu { op, .. } if op == "Mul"));
    }

    /// The committed fixtures: models of supported ops place on the GPU; `dtypes.onnx` (Cast,
    /// ArgMax) falls back naming its first Cast.
    #[test]
    fn fixture_models_place_as_expected() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let placement = |f: &str| {
            let g = crate::graph::OnnxGraph::load(&dir.join(f)).unwrap();
            let nodes: Vec<usize> = (0..g.nodes().len()).collect();
            place(&SegmentIr::from_graph(&g, &nodes, g.outputs()))
        };
        for f in ["hydranet.onnx", "single.onnx", "digits.onnx"] {
            assert_eq!(placement(f), Placement::Cuda, "{f}");
        }
        assert!(matches!(placement("dtypes.onnx"), Placement::Cpu { op, .. } if op == "Cast"));
    }

    #[test]
    fn attribute_limits_are_checked() {
        let none = SegmentIr::default();
        let asym =
            OpNode::new("Conv", &["x", "w"], &["c"]).with("pads", Attr::Ints(vec![0, 0, 1, 1]));
        assert_eq!(supported(&asym, &none), Err("asymmetric padding".into()));
        let conv3d = OpNode::new("Conv", &["x", "w"], &["c"])
            .with("kernel_shape", Attr::Ints(vec![3, 3, 3]));
        assert!(supported(&conv3d, &none).is_err());
        let soft = OpNode::new("Softmax", &["x"], &["y"]).with("axis", Attr::Int(1));
        assert!(supported(&soft, &none).is_err());
        let cubic =
            OpNode::new("Resize", &["x", "", "s"], &["y"]).with("mode", Attr::Str("cubic".into()));
        assert_eq!(supported(&cubic, &none), Err("mode cubic".into()));
        let nearest = OpNode::new("Resize", &["x", "", "s"], &["y"])
            .with("coordinate_transformation_mode", Attr::Str("asymmetric".into()))
            .with("nearest_mode", Attr::Str("floor".into()));
        assert_eq!(supported(&nearest, &none), Ok(()));
        let mean = |axes: Vec<i64>| {
            OpNode::new("ReduceMean", &["x"], &["y"]).with("axes", Attr::Ints(axes))
        };
        assert_eq!(supported(&mean(vec![2, 3]), &none), Ok(()));
        for axes in [vec![1], vec![-2, -1], vec![2], vec![1, 2, 3]] {
            assert!(supported(&mean(axes.clone()), &none).is_err(), "{axes:?}");
        }
        let axes_input = OpNode::new("ReduceMean", &["x", "axes"], &["y"]);
        assert!(supported(&axes_input, &none).is_err());
        let train_bn = OpNode::new("BatchNormalization", &["x"], &["y", "m", "v"]);
        assert!(supported(&train_bn, &none).is_err());
    }
}
