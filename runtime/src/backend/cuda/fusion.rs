//! Fusion planning over a segment's nodes: which nodes run as one kernel launch.
//!
//! - `Conv` → `BatchNormalization` (folded into the weights on the host) → `Add` of a residual →
//!   an activation (`Relu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Clip` 0..6, or SiLU written as
//!   `Sigmoid` + `Mul`) become one `conv2d_*` launch with its epilogue.
//! - `Gemm`, or `MatMul` + `Add` of a constant bias, then an activation: one GEMM and one
//!   epilogue (or one `gemm_tiled`).
//! - `Add` + activation that follows no fusable convolution: one `add_act`.
//!
//! A link is fused only when the tensor it consumes has no other reader and is not handed out
//! by the segment. The fused step takes the place of its last node, when all its inputs exist.
//! [`shared_first_layers`] finds heads whose first layers read the same trunk tensor and can run
//! as one GEMM (stacked and run by the model's routed runs, `model/fuse.rs`).

use super::ir::{OpNode, SegmentIr};

/// An activation fused into an epilogue (codes as `HY_ACT_*` in kernels/src/common.cuh).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// None.
    None,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
    /// x·sigmoid(x).
    Silu,
    /// Exact GELU.
    Gelu,
    /// 1 / (1 + e^-x).
    Sigmoid,
    /// tanh(x).
    Tanh,
    /// x when positive, else slope·x.
    LeakyRelu(f32),
}

impl Act {
    /// The kernel's activation code and its parameter.
    pub fn code(self) -> (i32, f32) {
        match self {
            Act::None => (0, 0.0),
            Act::Relu => (1, 0.0),
            Act::Relu6 => (2, 0.0),
            Act::Silu => (3, 0.0),
            Act::Gelu => (4, 0.0),
            Act::Sigmoid => (5, 0.0),
            Act::Tanh => (6, 0.0),
            Act::LeakyRelu(a) => (7, a),
        }
    }
}

/// One launch (or a short fixed sequence of launches) of the GPU plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A convolution with its fused epilogue.
    Conv {
        /// Index of the `Conv` node.
        conv: usize,
        /// Index of a `BatchNormalization` folded into it.
        batch_norm: Option<usize>,
        /// A residual tensor added before the activation.
        residual: Option<String>,
        /// The activation.
        act: Act,
        /// Every node the step replaces, in order.
        nodes: Vec<usize>,
        /// The tensor it produces.
        output: String,
    },
    /// A matrix product with bias and activation.
    Gemm {
        /// Index of the `Gemm` or `MatMul` node.
        gemm: usize,
        /// A constant bias `Add` after a `MatMul`.
        bias_add: Option<usize>,
        /// The activation.
        act: Act,
        /// Every node the step replaces.
        nodes: Vec<usize>,
        /// The tensor it produces.
        output: String,
    },
    /// A residual `Add` with an activation.
    AddAct {
        /// Index of the `Add` node.
        add: usize,
        /// The activation.
        act: Act,
        /// Every node the step replaces.
        nodes: Vec<usize>,
        /// The tensor it produces.
        output: String,
    },
    /// A node run by itself.
    Single(usize),
}

impl Step {
    /// The nodes the step stands for.
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            Step::Conv { nodes, .. } | Step::Gemm { nodes, .. } | Step::AddAct { nodes, .. } => {
                nodes.clone()
            }
            Step::Single(n) => vec![*n],
        }
    }
}

/// The activation `node` of `ir` computes, if it is one a kernel epilogue can apply.
pub fn activation(node: &OpNode, ir: &SegmentIr) -> Option<Act> {
    match node.op.as_str() {
        "Relu" => Some(Act::Relu),
        "LeakyRelu" => Some(Act::LeakyRelu(node.float("alpha", 0.01))),
        "Sigmoid" => Some(Act::Sigmoid),
        "Tanh" => Some(Act::Tanh),
        "Gelu" => Some(Act::Gelu),
        // Clip's bounds: attributes before opset 11, scalar constant inputs since.
        "Clip" => {
            let bound = |i: usize, attr: &str, none: f32| match node.inputs.get(i) {
                Some(t) if !t.is_empty() => ir.scalars.get(t).copied(),
                _ => Some(node.float(attr, none)),
            };
            match (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?) {
                (0.0, 6.0) => Some(Act::Relu6),
                (0.0, f32::MAX) => Some(Act::Relu),
                _ => None,
            }
        }
        _ => None,
    }
}

struct Planner<'a> {
    ir: &'a SegmentIr,
    taken: Vec<bool>,
}

impl Planner<'_> {
    /// The single node reading `tensor` (index, node) when exactly one reads it and the segment
    /// does not hand it out.
    fn sole_reader(&self, tensor: &str) -> Option<usize> {
        if self.ir.uses(tensor) != 1 {
            return None;
        }
        self.ir.nodes.iter().position(|n| n.inputs.iter().any(|i| i == tensor))
    }

    fn free(&self, n: usize) -> bool {
        !self.taken[n]
    }

    /// An activation after `tensor`: its kind, the nodes it takes, its output. SiLU written as
    /// `y = x * Sigmoid(x)` is recognised when x has exactly those two readers.
    fn activation_after(&self, tensor: &str) -> Option<(Act, Vec<usize>, String)> {
        if let Some(r) = self.sole_reader(tensor).filter(|&r| self.free(r)) {
            let node = &self.ir.nodes[r];
            return activation(node, self.ir).map(|a| (a, vec![r], node.outputs[0].clone()));
        }
        if self.ir.uses(tensor) != 2 {
            return None;
        }
        let sig = self.ir.nodes.iter().position(|n| n.op == "Sigmoid" && n.inputs[0] == tensor)?;
        let sig_out = &self.ir.nodes[sig].outputs[0];
        let mul = self.sole_reader(sig_out)?;
        let m = &self.ir.nodes[mul];
        let reads_both = m.op == "Mul"
            && m.inputs.len() == 2
            && m.inputs.iter().any(|i| i == tensor)
            && m.inputs.iter().any(|i| i == sig_out);
        (reads_both && self.free(sig) && self.free(mul))
            .then(|| (Act::Silu, vec![sig, mul], m.outputs[0].clone()))
    }

    fn conv(&mut self, c: usize) -> Step {
        let mut nodes = vec![c];
        let mut out = self.ir.nodes[c].outputs[0].clone();
        let mut batch_norm = None;
        if let Some(b) = self.sole_reader(&out) {
            let n = &self.ir.nodes[b];
            if n.op == "BatchNormalization" && n.inputs[0] == out && n.outputs.len() == 1 {
                batch_norm = Some(b);
                nodes.push(b);
                out = n.outputs[0].clone();
            }
        }
        let mut residual = None;
        if let Some(a) = self.sole_reader(&out) {
            let n = &self.ir.nodes[a];
            if n.op == "Add" && n.inputs.len() == 2 && n.inputs[0] != n.inputs[1] {
                let other = if n.inputs[0] == out { &n.inputs[1] } else { &n.inputs[0] };
                if !self.ir.constants.contains(other) {
                    residual = Some(other.clone());
                    nodes.push(a);
                    out = n.outputs[0].clone();
                }
            }
        }
        let mut act = Act::None;
        if let Some((a, taken, o)) = self.activation_after(&out) {
            act = a;
            nodes.extend(taken);
            out = o;
        }
        Step::Conv { conv: c, batch_norm, residual, act, nodes, output: out }
    }

    fn gemm(&mut self, g: usize) -> Step {
        let mut nodes = vec![g];
        let mut out = self.ir.nodes[g].outputs[0].clone();
        let mut bias_add = None;
        if self.ir.nodes[g].op == "MatMul" {
            if let Some(a) = self.sole_reader(&out) {
                let n = &self.ir.nodes[a];
                let other =
                    if n.inputs.first() == Some(&out) { n.inputs.get(1) } else { n.inputs.first() };
                if n.op == "Add" && other.is_some_and(|o| self.ir.constants.contains(o)) {
                    bias_add = Some(a);
                    nodes.push(a);
                    out = n.outputs[0].clone();
                }
            }
        }
        let mut act = Act::None;
        if let Some((a, taken, o)) = self.activation_after(&out) {
            act = a;
            nodes.extend(taken);
            out = o;
        }
        Step::Gemm { gemm: g, bias_add, act, nodes, output: out }
    }

    fn add(&mut self, a: usize) -> Option<Step> {
        let out = self.ir.nodes[a].outputs[0].clone();
        let (act, taken, o) = self.activation_after(&out)?;
        let mut nodes = vec![a];
        nodes.extend(taken);
        Some(Step::AddAct { add: a, act, nodes, output: o })
    }
}

/// The fused steps of a segment, in an order where every step's inputs exist when it runs.
pub fn plan(ir: &SegmentIr) -> Vec<Step> {
    let mut p = Planner { ir, taken: vec![false; ir.nodes.len()] };
    // Steps keyed by the position of their last node, where they run.
    let mut at: Vec<Option<Step>> = vec![None; ir.nodes.len()];
    for i in 0..ir.nodes.len() {
        if p.taken[i] {
            continue;
        }
        let step = match ir.nodes[i].op.as_str() {
            "Conv" => p.conv(i),
            "Gemm" | "MatMul" => p.gemm(i),
            "Add" => p.add(i).unwrap_or(Step::Single(i)),
            _ => Step::Single(i),
        };
        let nodes = step.nodes();
        for &n in &nodes {
            p.taken[n] = true;
        }
        let last = nodes.iter().copied().max().unwrap_or(i);
        at[last] = Some(step);
    }
    at.into_iter().flatten().collect()
}

/// A head's first layer as the multi-head planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstLayer {
    /// The head.
    pub head: String,
    /// The trunk tensor its first layer reads.
    pub input: String,
    /// `(in_features, out_features)` when the first layer is a matrix product with constant
    /// weights (Gemm, MatMul, Linear, or a 1×1 convolution over pooled features); `None` otherwise.
    pub linear: Option<(usize, usize)>,
}

/// Heads whose first layers run as one GEMM: same trunk tensor, same `in_features`. The weights
/// are stacked, `[sum of out_features, in_features]`; each head takes its column range.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedGemm {
    /// The trunk tensor read.
    pub input: String,
    /// `in_features`.
    pub k: usize,
    /// Each head and its output columns `start..end` of the stacked product.
    pub heads: Vec<(String, std::ops::Range<usize>)>,
}

/// Groups the heads' first layers that can share one GEMM (two heads or more per group), in
/// the order the tensors are first read.
pub fn shared_first_layers(first: &[FirstLayer]) -> Vec<SharedGemm> {
    let mut groups: Vec<SharedGemm> = Vec::new();
    for f in first {
        let Some((k, n)) = f.linear else { continue };
        match groups.iter_mut().find(|g| g.input == f.input && g.k == k) {
            Some(g) => {
                let start = g.heads.last().map_or(0, |(_, r)| r.end);
                g.heads.push((f.head.clone(), start..start + n));
            }
            None => groups.push(SharedGemm {
                input: f.input.clone(),
                k,
                heads: vec![(f.head.clone(), 0..n)],
            }),
        }
    }
    groups.retain(|g| g.heads.len() > 1);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::ir::Attr;

    fn ir(nodes: Vec<OpNode>, constants: &[&str], outputs: &[&str]) -> SegmentIr {
        SegmentIr {
            nodes,
            constants: constants.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            scalars: [("zero", 0.0), ("six", 6.0), ("one", 1.0)]
                .map(|(k, v)| (k.to_string(), v))
                .into(),
        }
    }

    #[test]
    fn clip_with_constant_bounds_fuses_as_relu6_and_other_bounds_do_not() {
        let s = ir(
            vec![
                OpNode::new("Conv", &["x", "w"], &["c"]),
                OpNode::new("Clip", &["c", "zero", "six"], &["y"]),
                OpNode::new("Conv", &["y", "w"], &["c2"]),
                OpNode::new("Clip", &["c2", "zero", "one"], &["z"]),
            ],
            &["w", "zero", "six", "one"],
            &["z"],
        );
        let steps = plan(&s);
        assert!(matches!(&steps[0], Step::Conv { act: Act::Relu6, nodes, .. } if nodes == &[0, 1]));
        assert!(matches!(&steps[1], Step::Conv { act: Act::None, .. }));
        assert_eq!(steps[2], Step::Single(3));
    }

    #[test]
    fn conv_bn_relu_is_one_step() {
        let s = ir(
            vec![
                OpNode::new("Conv", &["x", "w"], &["c"]),
                OpNode::new("BatchNormalization", &["c", "g", "b", "m", "v"], &["bn"]),
                OpNode::new("Relu", &["bn"], &["y"]),
            ],
            &["w", "g", "b", "m", "v"],
            &["y"],
        );
        let steps = plan(&s);
        assert_eq!(
            steps,
            vec![Step::Conv {
                conv: 0,
                batch_norm: Some(1),
                residual: None,
                act: Act::Relu,
                nodes: vec![0, 1, 2],
                output: "y".into()
            }]
        );
    }

    #[test]
    fn residual_block_fuses_the_add_and_relu_into_the_second_conv() {
        // x → conv1 → relu → conv2 → bn → add(x) → relu
        let s = ir(
            vec![
                OpNode::new("Conv", &["x", "w1"], &["c1"]),
                OpNode::new("Relu", &["c1"], &["r1"]),
                OpNode::new("Conv", &["r1", "w2"], &["c2"]),
                OpNode::new("BatchNormalization", &["c2", "g", "b", "m", "v"], &["bn"]),
                OpNode::new("Add", &["bn", "x"], &["sum"]),
                OpNode::new("Relu", &["sum"], &["y"]),
            ],
            &["w1", "w2", "g", "b", "m", "v"],
            &["y"],
        );
        let steps = plan(&s);
        assert_eq!(steps.len(), 2);
        assert!(matches!(&steps[0], Step::Conv { act: Act::Relu, nodes, .. } if nodes == &[0, 1]));
        match &steps[1] {
            Step::Conv { residual, act, nodes, output, batch_norm, .. } => {
                assert_eq!(residual.as_deref(), Some("x"));
                assert_eq!(*act, Act::Relu);
                assert_eq!(nodes, &[2, 3, 4, 5]);
                assert_eq!(output, "y");
                assert_eq!(*batch_norm, Some(3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_tensor_read_elsewhere_or_handed_out_stops_fusion() {
        // c is a segment output: the Relu cannot swallow it.
        let s = ir(
            vec![OpNode::new("Conv", &["x", "w"], &["c"]), OpNode::new("Relu", &["c"], &["y"])],
            &["w"],
            &["c", "y"],
        );
        let steps = plan(&s);
        assert!(matches!(&steps[0], Step::Conv { act: Act::None, output, .. } if output == "c"));
        assert_eq!(steps[1], Step::Single(1));
        // c read by two nodes (not SiLU): no fusion either.
        let s = ir(
            vec![
                OpNode::new("Conv", &["x", "w"], &["c"]),
                OpNode::new("Relu", &["c"], &["r"]),
                OpNode::new("Tanh", &["c"], &["t"]),
            ],
            &["w"],
            &["r", "t"],
        );
        assert_eq!(plan(&s).len(), 3);
    }

    #[test]
    fn silu_written_as_sigmoid_times_input_fuses() {
        let s = ir(
            vec![
                OpNode::new("Conv", &["x", "w"], &["c"]),
                OpNode::new("Sigmoid", &["c"], &["s"]),
                OpNode::new("Mul", &["c", "s"], &["y"]),
            ],
            &["w"],
            &["y"],
        );
        assert!(
            matches!(&plan(&s)[..], [Step::Conv { act: Act::Silu, nodes, .. }] if nodes == &[0, 1, 2])
        );
    }

    #[test]
    fn matmul_bias_activation_and_clip_relu6() {
        let s = ir(
            vec![
                OpNode::new("MatMul", &["x", "w"], &["m"]),
                OpNode::new("Add", &["m", "b"], &["a"]),
                OpNode::new("Clip", &["a"], &["y"])
                    .with("min", Attr::Float(0.0))
                    .with("max", Attr::Float(6.0)),
            ],
            &["w", "b"],
            &["y"],
        );
        assert_eq!(
            plan(&s),
            vec![Step::Gemm {
                gemm: 0,
                bias_add: Some(1),
                act: Act::Relu6,
                nodes: vec![0, 1, 2],
                output: "y".into()
            }]
        );
        // A MatMul plus a computed tensor is not a bias.
        let s = ir(
            vec![
                OpNode::new("MatMul", &["x", "w"], &["m"]),
                OpNode::new("Add", &["m", "z"], &["y"]),
            ],
            &["w"],
            &["y"],
        );
        assert_eq!(plan(&s).len(), 2);
    }

    #[test]
    fn a_lone_add_relu_is_one_step_and_steps_wait_for_their_inputs() {
        // The Relu after the Add comes after an unrelated node: the fused step runs at the Relu.
        let s = ir(
            vec![
                OpNode::new("Add", &["a", "b"], &["s"]),
                OpNode::new("Flatten", &["q"], &["f"]),
                OpNode::new("LeakyRelu", &["s"], &["y"]).with("alpha", Attr::Float(0.2)),
            ],
            &[],
            &["y", "f"],
        );
        let steps = plan(&s);
        assert_eq!(steps[0], Step::Single(1));
        assert!(matches!(&steps[1], Step::AddAct { act: Act::LeakyRelu(a), .. } if *a == 0.2));
    }

    #[test]
    fn heads_reading_one_tensor_share_a_gemm() {
        let f = |head: &str, input: &str, linear| FirstLayer {
            head: head.into(),
            input: input.into(),
            linear,
        };
        let groups = shared_first_layers(&[
            f("cls", "pool", Some((512, 10))),
            f("seg", "feat", None),
            f("box", "pool", Some((512, 4))),
            f("age", "pool", Some((512, 1))),
            f("odd", "pool", Some((256, 3))),
            f("solo", "other", Some((64, 2))),
        ]);
        assert_eq!(
            groups,
            vec![SharedGemm {
                input: "pool".into(),
                k: 512,
                heads: vec![("cls".into(), 0..10), ("box".into(), 10..14), ("age".into(), 14..15)],
            }]
        );
    }
}
