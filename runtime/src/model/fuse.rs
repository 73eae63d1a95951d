//! Multi-head fusion: heads run on the device whose first layers are matrix products (`Gemm`,
//! or `MatMul` + a constant bias, with an activation) reading the same trunk tensor run those
//! layers as one GEMM over their stacked weights; each head takes its column range, applies
//! its own activation, then runs the rest of its nodes.
//!
//! Planned once per layout over all its heads (a swapped or added head makes a new layout, so
//! the weights are stacked anew and a run sees the old heads or the new ones, never a mix);
//! which groups fuse for one run is [`fused_groups`]: those all of whose heads the run asks for
//! and routes to the device.

#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use super::layout::GpuSlot;
use crate::backend::cuda::consts::constants;
use crate::backend::cuda::fusion::{plan, shared_first_layers, Act, FirstLayer, Step};
use crate::backend::cuda::ir::SegmentIr;
use crate::graph::split::boundary;
use crate::graph::OnnxGraph;
use std::ops::Range;
use std::sync::Arc;

/// A head's first layer as one matrix product `act(x · wᵀ + bias)`, its weights normalised.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FirstGemm {
    /// The trunk tensor it reads.
    pub input: String,
    /// `in_features`.
    pub k: usize,
    /// `out_features`.
    pub n: usize,
    /// `[n, k]` row-major, Gemm's `alpha` applied.
    pub weight: Vec<f32>,
    /// `n` values, Gemm's `beta` applied (zeros when the layer has none).
    pub bias: Vec<f32>,
    /// The activation fused after it.
    pub act: Act,
    /// The tensor it produces (after the activation).
    pub output: String,
    /// The head's graph nodes left to run after it.
    pub rest: Vec<usize>,
}

/// The first layer of the head made of `nodes` of `graph` (handing out `outputs`) when it is a
/// matrix product with constant weights reading `input`; `None` otherwise.
pub(crate) fn first_gemm(
    graph: &OnnxGraph,
    nodes: &[usize],
    outputs: &[String],
    input: &str,
) -> Option<FirstGemm> {
    let ir = SegmentIr::from_graph(graph, nodes, outputs);
    // `SegmentIr::from_graph` leaves out constant nodes: its node i is graph node `live[i]`.
    let live: Vec<usize> = nodes.iter().copied().filter(|&n| !graph.const_node[n]).collect();
    let steps = plan(&ir);
    let (gemm, bias_add, act, taken, output) = steps.iter().find_map(|s| match s {
        Step::Gemm { gemm, bias_add, act, nodes, output }
            if ir.nodes[*gemm].inputs.first().map(String::as_str) == Some(input) =>
        {
            Some((*gemm, *bias_add, *act, nodes, output))
        }
        _ => None,
    })?;
    let node = &ir.nodes[gemm];
    let is_gemm = node.op == "Gemm";
    if is_gemm && node.int("transA", 0) != 0 {
        return None;
    }
    let w_name = node.inputs.get(1)?;
    let b_name = match bias_add {
        Some(a) => {
            let made = &node.outputs[0];
            ir.nodes[a].inputs.iter().find(|i| *i != made && ir.constants.contains(*i)).cloned()
        }
        None => node.inputs.get(2).filter(|b| !b.is_empty()).cloned(),
    };
    // A weight written as `Transpose` of a constant (as set-in heads write `x·Wᵀ`) is read
    // from that constant, transposed.
    let all = graph.nodes();
    let transposed = graph.producer.get(w_name).map(|&p| &all[p]).filter(|t| {
        let perm = t.attribute.iter().find(|a| a.name == "perm").map(|a| a.ints.as_slice());
        t.op_type == "Transpose" && t.input.len() == 1 && matches!(perm, None | Some(&[1, 0]))
    });
    let w_name = transposed.map_or(w_name, |t| &t.input[0]);
    let mut names = vec![w_name.as_str()];
    names.extend(b_name.as_deref());
    let consts = constants(graph, &names).ok()?;
    let w = consts.get(w_name)?;
    // Stored `[n, k]` (Gemm's transB, or a transposed `[n, k]` constant) or `[k, n]`.
    let trans_b = (is_gemm && node.int("transB", 0) != 0) != transposed.is_some();
    let (n, k) = match (w.shape.as_slice(), trans_b) {
        (&[n, k], true) | (&[k, n], false) => (n, k),
        _ => return None,
    };
    let alpha = if is_gemm { node.float("alpha", 1.0) } else { 1.0 };
    let beta = if is_gemm { node.float("beta", 1.0) } else { 1.0 };
    let values = w.f32s();
    let mut weight = vec![0f32; n * k];
    for j in 0..n {
        for i in 0..k {
            let v = if trans_b { values[j * k + i] } else { values[i * n + j] };
            weight[j * k + i] = alpha * v;
        }
    }
    let bias = match &b_name {
        None => vec![0.0; n],
        Some(b) => {
            let b = consts.get(b)?.f32s();
            match b.len() {
                l if l == n => b.iter().map(|v| beta * v).collect(),
                1 => vec![beta * b[0]; n],
                _ => return None,
            }
        }
    };
    let taken: Vec<usize> = taken.iter().map(|&i| live[i]).collect();
    let left: Vec<usize> = nodes.iter().copied().filter(|n| !taken.contains(n)).collect();
    // Constant nodes stay only when a node left reads them.
    let read_by_left = |c: usize| {
        all[c].output.iter().any(|o| {
            left.iter().any(|&n| !graph.const_node[n] && all[n].input.iter().any(|i| i == o))
        })
    };
    let rest: Vec<usize> =
        left.iter().copied().filter(|&n| !graph.const_node[n] || read_by_left(n)).collect();
    let computes = rest.iter().any(|&n| !graph.const_node[n]);
    if !computes && outputs != std::slice::from_ref(output) {
        return None;
    }
    let rest = if computes { rest } else { Vec::new() };
    Some(FirstGemm {
        input: input.to_string(),
        k,
        n,
        weight,
        bias,
        act,
        output: output.clone(),
        rest,
    })
}

/// One head of a stacked GEMM.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FusedHead {
    /// The head (index into the layout's heads).
    pub head: usize,
    /// Its columns of the stacked product.
    pub cols: Range<usize>,
    /// Its first layer's activation, applied to its columns.
    pub act: Act,
    /// The tensor its first layer produces.
    pub output: String,
    /// Its graph nodes left to run (none when the first layer is the whole head).
    pub rest: Vec<usize>,
}

/// First layers of several heads stacked into one GEMM `x · wᵀ + bias`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StackedGemm {
    /// The trunk tensor they read.
    pub input: String,
    /// `in_features`.
    pub k: usize,
    /// `[sum of out_features, k]` row-major.
    pub weight: Vec<f32>,
    /// Sum of out_features values.
    pub bias: Vec<f32>,
    /// The heads, in column order.
    pub heads: Vec<FusedHead>,
}

impl StackedGemm {
    /// Columns of the stacked product.
    pub fn n(&self) -> usize {
        self.bias.len()
    }
}

/// Stacks the first layers `firsts` (head index, layer) that can share one GEMM (same tensor,
/// same `in_features`, two heads or more), grouped by [`shared_first_layers`].
pub(crate) fn stack(firsts: &[(usize, FirstGemm)]) -> Vec<StackedGemm> {
    let planned: Vec<FirstLayer> = firsts
        .iter()
        .map(|(h, f)| FirstLayer {
            head: h.to_string(),
            input: f.input.clone(),
            linear: Some((f.k, f.n)),
        })
        .collect();
    shared_first_layers(&planned)
        .into_iter()
        .map(|g| {
            let mut s = StackedGemm {
                input: g.input,
                k: g.k,
                weight: Vec::new(),
                bias: Vec::new(),
                heads: Vec::new(),
            };
            for (name, cols) in g.heads {
                let Some((h, f)) = firsts.iter().find(|(h, _)| h.to_string() == name) else {
                    continue;
                };
                s.weight.extend_from_slice(&f.weight);
                s.bias.extend_from_slice(&f.bias);
                s.heads.push(FusedHead {
                    head: *h,
                    cols,
                    act: f.act,
                    output: f.output.clone(),
                    rest: f.rest.clone(),
                });
            }
            s
        })
        .collect()
}

/// The groups (indices into `groups`) that run fused in a run of heads `requested`: those all
/// of whose heads are asked for and run on the device. The others' heads run separately.
pub(crate) fn fused_groups<'a>(
    groups: impl IntoIterator<Item = &'a StackedGemm>,
    requested: &[usize],
    on_device: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let fuses =
        |g: &StackedGemm| g.heads.iter().all(|h| requested.contains(&h.head) && on_device(h.head));
    groups.into_iter().enumerate().filter(|(_, g)| fuses(g)).map(|(i, _)| i).collect()
}

/// A stacked GEMM of a layout with its device state: the uploaded weights, and per head the
/// graph its remaining nodes belong to and their segment.
pub(crate) struct FusedGroup {
    /// The plan.
    pub gemm: StackedGemm,
    /// The device's stacked weights.
    pub gpu: GpuSlot,
    /// Per head (in `gemm.heads` order): the graph of its nodes (`None`: the model's) and the
    /// segment of the rest.
    pub rest: Vec<(Option<Arc<OnnxGraph>>, GpuSlot)>,
}

impl FusedGroup {
    /// The graph of head `i`'s nodes, `model` when they are the model's own.
    pub fn graph<'a>(&'a self, i: usize, model: &'a OnnxGraph) -> &'a OnnxGraph {
        self.rest[i].0.as_deref().unwrap_or(model)
    }

    /// The inputs of head `i`'s remaining nodes.
    pub fn rest_inputs(&self, i: usize, model: &OnnxGraph) -> Vec<String> {
        boundary(self.graph(i, model), &self.gemm.heads[i].rest).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build::tensor_proto;
    use crate::Tensor;
    use tract_onnx::pb;
    use tract_onnx::pb::attribute_proto::AttributeType;

    fn node(
        op: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<pb::AttributeProto>,
    ) -> pb::NodeProto {
        pb::NodeProto {
            name: format!("{op}_{output}"),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attrs,
            ..Default::default()
        }
    }

    fn attr_i(name: &str, i: i64) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i,
            ..Default::default()
        }
    }

    fn attr_f(name: &str, f: f32) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Float as i32,
            f,
            ..Default::default()
        }
    }

    /// A graph reading `x` `[2, 3]` through `nodes`, with initializers `w` and `b`.
    fn graph(nodes: Vec<pb::NodeProto>, w: Tensor, b: Tensor, output: &str) -> OnnxGraph {
        let f32_input = |n: &str| pb::ValueInfoProto {
            name: n.into(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: None,
                })),
            }),
            ..Default::default()
        };
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: nodes,
                initializer: vec![tensor_proto("w", &w).unwrap(), tensor_proto("b", &b).unwrap()],
                input: vec![f32_input("x")],
                output: vec![pb::ValueInfoProto { name: output.into(), ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        };
        OnnxGraph::from_proto(proto, None).unwrap()
    }

    fn all(g: &OnnxGraph) -> Vec<usize> {
        (0..g.nodes().len()).collect()
    }

    #[test]
    fn matmul_weights_k_by_n_are_read_transposed_with_the_bias_and_activation() {
        // w [k=3, n=2]: row-major [[1, 2], [3, 4], [5, 6]].
        let w = Tensor::new::<f32>(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = Tensor::new::<f32>(&[2], vec![0.5, -0.5]).unwrap();
        let g = graph(
            vec![
                node("MatMul", &["x", "w"], "m", vec![]),
                node("Add", &["m", "b"], "y", vec![]),
                node("Relu", &["y"], "r", vec![]),
                node("Neg", &["r"], "out", vec![]),
            ],
            w,
            b,
            "out",
        );
        let f = first_gemm(&g, &all(&g), &["out".to_string()], "x").unwrap();
        assert_eq!((f.k, f.n, f.act, f.output.as_str()), (3, 2, Act::Relu, "r"));
        assert_eq!(f.weight, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0], "[n, k]");
        assert_eq!(f.bias, vec![0.5, -0.5]);
        assert_eq!(f.rest, vec![3], "the Neg is left");
        assert!(first_gemm(&g, &all(&g), &["out".to_string()], "m").is_none(), "reads x, not m");
    }

    #[test]
    fn gemm_alpha_beta_and_trans_b_are_folded_and_trans_a_is_refused() {
        // w [k=2, n=2] without transB; alpha 2, beta 0.5; the Gemm is the whole head.
        let w = Tensor::new::<f32>(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::new::<f32>(&[2], vec![4.0, 8.0]).unwrap();
        let gemm = |attrs| {
            graph(vec![node("Gemm", &["x", "w", "b"], "y", attrs)], w.clone(), b.clone(), "y")
        };
        let g = gemm(vec![attr_f("alpha", 2.0), attr_f("beta", 0.5)]);
        let f = first_gemm(&g, &all(&g), &["y".to_string()], "x").unwrap();
        assert_eq!(f.weight, vec![2.0, 6.0, 4.0, 8.0]);
        assert_eq!(f.bias, vec![2.0, 4.0]);
        assert!(f.rest.is_empty());
        let g = gemm(vec![attr_i("transB", 1)]);
        let f = first_gemm(&g, &all(&g), &["y".to_string()], "x").unwrap();
        assert_eq!(f.weight, vec![1.0, 2.0, 3.0, 4.0], "stored [n, k] already");
        let g = gemm(vec![attr_i("transA", 1)]);
        assert!(first_gemm(&g, &all(&g), &["y".to_string()], "x").is_none());
    }

    fn first(input: &str, k: usize, n: usize, seed: f32, act: Act) -> FirstGemm {
        FirstGemm {
            input: input.into(),
            k,
            n,
            weight: (0..n * k).map(|i| seed + i as f32).collect(),
            bias: (0..n).map(|i| -seed - i as f32).collect(),
            act,
            output: format!("out{seed}"),
            rest: vec![seed as usize],
        }
    }

    #[test]
    fn weights_stack_in_head_order_with_column_ranges() {
        let a = first("f", 2, 3, 1.0, Act::None);
        let b = first("f", 2, 2, 100.0, Act::Relu);
        let c = first("mid", 2, 1, 7.0, Act::None);
        let d = first("f", 5, 1, 9.0, Act::None);
        let groups = stack(&[(0, a.clone()), (2, c), (1, b.clone()), (3, d)]);
        assert_eq!(groups.len(), 1, "mid has one head and k=5 another group of one");
        let g = &groups[0];
        assert_eq!((g.input.as_str(), g.k, g.n()), ("f", 2, 5));
        assert_eq!(g.weight, [a.weight.clone(), b.weight.clone()].concat());
        assert_eq!(g.bias, [a.bias.clone(), b.bias.clone()].concat());
        let heads: Vec<(usize, Range<usize>, Act)> =
            g.heads.iter().map(|h| (h.head, h.cols.clone(), h.act)).collect();
        assert_eq!(heads, vec![(0, 0..3, Act::None), (1, 3..5, Act::Relu)]);
        assert_eq!(g.heads[1].output, b.output);
        assert_eq!(g.heads[1].rest, b.rest);
    }

    #[test]
    fn a_group_fuses_only_when_the_run_asks_for_all_its_heads() {
        let f = |s| first("f", 2, 2, s, Act::None);
        let m = |s| first("m", 2, 2, s, Act::None);
        let groups = stack(&[(0, f(1.0)), (1, f(2.0)), (2, m(3.0)), (3, m(4.0)), (4, f(5.0))]);
        assert_eq!(groups.len(), 2);
        let device = |_| true;
        assert_eq!(fused_groups(&groups, &[0, 1, 2, 3, 4], device), vec![0, 1]);
        assert_eq!(fused_groups(&groups, &[4, 1, 0, 3], device), vec![0]);
        assert_eq!(fused_groups(&groups, &[2, 3], device), vec![1]);
        assert!(fused_groups(&groups, &[0, 1, 2], device).is_empty());
        assert!(fused_groups(&groups, &[], device).is_empty());
        // A head of the group on the CPU: that group's heads run separately.
        assert_eq!(fused_groups(&groups, &[0, 1, 2, 3, 4], |h| h != 4), vec![1]);
        assert!(fused_groups(&groups, &[0, 1, 2, 3, 4], |h| h == 0).is_empty());
    }
}
