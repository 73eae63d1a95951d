//! Importing trainable heads from ONNX head segments: the segment's nodes are matched against the
//! trainable vocabulary (Gemm / MatMul+Add, Conv, BatchNormalization, LayerNormalization,
//! activations including PyTorch's exported GELU and SiLU patterns, Flatten / Reshape to 2-D,
//! GlobalAveragePool / ReduceMean, MaxPool, Resize ×2, Softmax, Dropout / Identity), with the
//! initializers as starting weights. A head that does not match says which node prevents it.

use super::spec::{HeadSpec, LayerSpec, UpsampleMode};
use super::Head;
use crate::graph::{HeadPart, OnnxGraph};
use crate::tensor::Tensor;
use std::collections::HashSet;
use tract_onnx::pb;
use tract_onnx::prelude::Tensor as TractTensor;

/// Why a head cannot be trained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotTrainable {
    /// The node that prevents it, when one does.
    pub node: Option<String>,
    /// Its op type (with the detail that does not fit).
    pub reason: String,
}

impl std::fmt::Display for NotTrainable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(n) => write!(f, "node `{n}`: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

type Import<T> = std::result::Result<T, NotTrainable>;

fn refuse<T>(node: &pb::NodeProto, reason: impl Into<String>) -> Import<T> {
    Err(NotTrainable {
        node: Some(node.name.clone()),
        reason: format!("{} {}", node.op_type, reason.into()),
    })
}

/// The matcher's view of one head segment.
struct Segment<'a> {
    graph: &'a OnnxGraph,
    nodes: Vec<usize>,
    used: HashSet<usize>,
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}
fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}
fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}
fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}
fn attr_s(node: &pb::NodeProto, name: &str) -> String {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_default()
}

impl<'a> Segment<'a> {
    fn node(&self, n: usize) -> &'a pb::NodeProto {
        &self.graph.nodes()[n]
    }

    /// The value of a constant tensor (initializer, `Constant` output, or a transposed constant).
    fn constant(&self, name: &str) -> Option<TractTensor> {
        let g = self.graph.proto.graph.as_ref()?;
        let onnx = tract_onnx::onnx();
        let dir = self.graph.model_dir.as_ref().and_then(|d| d.to_str());
        if let Some(t) = g.initializer.iter().find(|t| t.name == name) {
            return tract_onnx::tensor::load_tensor(&*onnx.provider, t, dir).ok();
        }
        let &p = self.graph.producer.get(name)?;
        let node = self.node(p);
        if node.op_type == "Transpose" {
            // A constant transposed (hydrant's own Linear writes `MatMul(x, Transpose(W))`).
            let t = self.constant(node.input.first()?)?;
            let perm: Vec<usize> = match attr_ints(node, "perm") {
                Some(p) => p.iter().map(|&i| usize::try_from(i).ok()).collect::<Option<_>>()?,
                None => (0..t.rank()).rev().collect(),
            };
            return t.permute_axes(&perm).ok();
        }
        if node.op_type != "Constant" {
            return None;
        }
        let a = node.attribute.first()?;
        match a.name.as_str() {
            "value" => tract_onnx::tensor::load_tensor(&*onnx.provider, a.t.as_ref()?, dir).ok(),
            "value_float" => Some(TractTensor::from(a.f)),
            "value_floats" => {
                Some(TractTensor::from(tract_onnx::prelude::tract_ndarray::arr1(&a.floats)))
            }
            "value_int" => Some(TractTensor::from(a.i)),
            "value_ints" => {
                Some(TractTensor::from(tract_onnx::prelude::tract_ndarray::arr1(&a.ints)))
            }
            _ => None,
        }
    }

    fn floats(&self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        let t = self.constant(name)?.cast_to::<f32>().ok()?.into_owned();
        let v = t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
        Some((t.shape().to_vec(), v))
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        let t = self.constant(name)?.cast_to::<i64>().ok()?.into_owned();
        t.try_as_plain_ram().ok()?.as_slice::<i64>().ok().map(<[i64]>::to_vec)
    }

    fn scalar(&self, name: &str) -> Option<f32> {
        self.floats(name).filter(|(_, v)| v.len() == 1).map(|(_, v)| v[0])
    }

    fn is_const(&self, name: &str) -> bool {
        name.is_empty() || self.graph.const_tensors.contains(name)
    }

    /// Head nodes not yet matched that read tensor `t`.
    fn readers(&self, t: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| !self.used.contains(n) && self.graph.node_inputs[*n].iter().any(|i| i == t))
            .collect()
    }

    /// The single unmatched node reading `t` with op `op`, if exactly one node reads it.
    fn only_reader(&self, t: &str, op: &str) -> Option<usize> {
        match self.readers(t).as_slice() {
            [n] if self.node(*n).op_type == op => Some(*n),
            _ => None,
        }
    }
}

fn tensor(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::new(shape, v).expect("shape from the same constant")
}

/// Imports the head `part` of `graph` as a trainable head.
pub fn import_head(graph: &OnnxGraph, part: &HeadPart) -> Import<Head> {
    let whole = |reason: String| Err(NotTrainable { node: None, reason });
    if part.cut_points.len() != 1 {
        return whole(format!(
            "the head reads {} trunk tensors; a trainable head reads one",
            part.cut_points.len()
        ));
    }
    if part.outputs.len() != 1 {
        return whole(format!(
            "the head has {} outputs; a trainable head has one",
            part.outputs.len()
        ));
    }
    if part.nodes.is_empty() {
        return whole("the head has no layers (its output is a trunk tensor)".into());
    }
    let mut seg = Segment { graph, nodes: part.nodes.clone(), used: HashSet::new() };
    let mut cur = part.cut_points[0].clone();
    let mut layers: Vec<LayerSpec> = Vec::new();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    while seg.used.len() < seg.nodes.len() {
        let readers = seg.readers(&cur);
        let n = match readers.as_slice() {
            [] => {
                let stray =
                    seg.nodes.iter().copied().find(|n| !seg.used.contains(n)).map(|n| seg.node(n));
                return match stray {
                    Some(node) => refuse(node, "does not continue the head's chain of layers"),
                    None => whole("internal: no node left".into()),
                };
            }
            // Several readers: SiLU / GELU patterns start with the consumer chain below.
            rs => pick_start(&seg, rs),
        };
        let node = seg.node(n);
        seg.used.insert(n);
        let i = layers.len();
        let data: Vec<&String> = node.input.iter().filter(|t| !seg.is_const(t)).collect();
        if data.len() != 1 && !matches!(node.op_type.as_str(), "Mul" | "Reshape") {
            return refuse(node, "reads more than one non-constant tensor");
        }
        let out = node.output.first().cloned().unwrap_or_default();
        let (layer, out) = match node.op_type.as_str() {
            "Gemm" => {
                let (alpha, beta) = (attr_f(node, "alpha", 1.0), attr_f(node, "beta", 1.0));
                if alpha != 1.0
                    || beta != 1.0
                    || attr_i(node, "transA", 0) != 0
                    || node.input[0] != cur
                {
                    return refuse(node, "with alpha/beta ≠ 1 or transA is not a linear layer");
                }
                let Some((ws, w)) = node.input.get(1).and_then(|t| seg.floats(t)) else {
                    return refuse(node, "without constant weights");
                };
                if ws.len() != 2 {
                    return refuse(node, "with a weight that is not 2-D");
                }
                let (w, out_f, in_f) = if attr_i(node, "transB", 0) == 1 {
                    (w, ws[0], ws[1])
                } else {
                    (transpose(&w, ws[0], ws[1]), ws[1], ws[0])
                };
                tensors.push((format!("{i}.weight"), tensor(&[out_f, in_f], w)));
                let bias = match node.input.get(2).filter(|t| !t.is_empty()) {
                    Some(b) => match seg.floats(b) {
                        Some((_, v)) if v.len() == out_f => Some(v),
                        Some((_, v)) if v.len() == 1 => Some(vec![v[0]; out_f]),
                        _ => {
                            return refuse(node, "with a bias that is not a constant [out] vector")
                        }
                    },
                    None => None,
                };
                let has_bias = bias.is_some();
                if let Some(b) = bias {
                    tensors.push((format!("{i}.bias"), tensor(&[out_f], b)));
                }
                (LayerSpec::Linear { in_features: in_f, out_features: out_f, bias: has_bias }, out)
            }
            "MatMul" => {
                let Some((ws, w)) =
                    node.input.get(1).filter(|_| node.input[0] == cur).and_then(|t| seg.floats(t))
                else {
                    return refuse(node, "without a constant right-hand weight");
                };
                if ws.len() != 2 {
                    return refuse(node, "with a weight that is not 2-D");
                }
                let (in_f, out_f) = (ws[0], ws[1]);
                tensors.push((
                    format!("{i}.weight"),
                    tensor(&[out_f, in_f], transpose(&w, in_f, out_f)),
                ));
                // A following Add of a constant [out] vector is the bias.
                let mut out = out;
                let mut has_bias = false;
                if let Some(a) = seg.only_reader(&out, "Add") {
                    let add = seg.node(a);
                    let other = add.input.iter().find(|t| **t != out);
                    if let Some((_, b)) =
                        other.and_then(|t| seg.floats(t)).filter(|(_, b)| b.len() == out_f)
                    {
                        seg.used.insert(a);
                        tensors.push((format!("{i}.bias"), tensor(&[out_f], b)));
                        has_bias = true;
                        out = add.output[0].clone();
                    }
                }
                (LayerSpec::Linear { in_features: in_f, out_features: out_f, bias: has_bias }, out)
            }
            "Conv" => conv(&seg, node, i, &mut tensors)?,
            "BatchNormalization" => {
                let get = |k: usize| node.input.get(k).and_then(|t| seg.floats(t)).map(|(_, v)| v);
                let (Some(g), Some(b), Some(m), Some(v)) = (get(1), get(2), get(3), get(4)) else {
                    return refuse(node, "without constant parameters and statistics");
                };
                let c = g.len();
                if [b.len(), m.len(), v.len()] != [c; 3]
                    || node.output.len() > 1 && node.output[1..].iter().any(|o| !o.is_empty())
                {
                    return refuse(node, "in training form or with mismatched parameter sizes");
                }
                for (name, t) in
                    [("weight", g), ("bias", b), ("running_mean", m), ("running_var", v)]
                {
                    tensors.push((format!("{i}.{name}"), tensor(&[c], t)));
                }
                tensors.push((
                    format!("{i}.num_batches_tracked"),
                    Tensor::new::<i64>(&[], vec![0]).expect("scalar"),
                ));
                let eps = attr_f(node, "epsilon", 1e-5);
                // ONNX keeps 1 − momentum; undo it to the decimal it came from (f32 rounding).
                let momentum =
                    ((1.0 - attr_f(node, "momentum", 0.9) as f64) * 1e6).round() as f32 / 1e6;
                (LayerSpec::BatchNorm2d { num_features: c, eps, momentum }, out)
            }
            "LayerNormalization" => {
                if attr_i(node, "axis", -1) != -1 {
                    return refuse(node, "over more than the last axis");
                }
                let Some((_, g)) = node.input.get(1).and_then(|t| seg.floats(t)) else {
                    return refuse(node, "without a constant scale");
                };
                let b = match node.input.get(2).filter(|t| !t.is_empty()) {
                    Some(t) => match seg.floats(t) {
                        Some((_, b)) if b.len() == g.len() => b,
                        _ => return refuse(node, "without a constant shift"),
                    },
                    None => vec![0.0; g.len()],
                };
                let d = g.len();
                tensors.push((format!("{i}.weight"), tensor(&[d], g)));
                tensors.push((format!("{i}.bias"), tensor(&[d], b)));
                (
                    LayerSpec::LayerNorm {
                        normalized_shape: d,
                        eps: attr_f(node, "epsilon", 1e-5),
                    },
                    out,
                )
            }
            "Relu" => (LayerSpec::Relu, out),
            "LeakyRelu" => {
                (LayerSpec::LeakyRelu { negative_slope: attr_f(node, "alpha", 0.01) }, out)
            }
            "Tanh" => (LayerSpec::Tanh, out),
            "Gelu"
                if attr_s(node, "approximate").is_empty()
                    || attr_s(node, "approximate") == "none" =>
            {
                (LayerSpec::Gelu, out)
            }
            "Sigmoid" => {
                // x·σ(x) is SiLU.
                let silu = seg.readers(&cur).into_iter().find(|&m| {
                    let mul = seg.node(m);
                    mul.op_type == "Mul" && mul.input.contains(&cur) && mul.input.contains(&out)
                });
                match silu {
                    Some(m) => {
                        seg.used.insert(m);
                        (LayerSpec::Silu, seg.node(m).output[0].clone())
                    }
                    None => (LayerSpec::Sigmoid, out),
                }
            }
            "Div" | "Mul" if node.input[0] == cur => match gelu(&mut seg, node, &cur) {
                Some(end) => (LayerSpec::Gelu, end),
                None => return refuse(node, "outside the GELU pattern is not a trainable layer"),
            },
            "Dropout" | "Identity" => {
                seg.used.insert(n);
                cur = out;
                continue;
            }
            "Flatten" if attr_i(node, "axis", 1) == 1 => (LayerSpec::Flatten, out),
            "Reshape" if node.input[0] == cur && flattens(&mut seg, node) => {
                (LayerSpec::Flatten, out)
            }
            "GlobalAveragePool" => (LayerSpec::GlobalAvgPool { keep_dims: true }, out),
            "ReduceMean" => {
                let axes =
                    attr_ints(node, "axes").or_else(|| node.input.get(1).and_then(|t| seg.ints(t)));
                match axes.as_deref() {
                    Some([2, 3] | [-2, -1] | [3, 2] | [-1, -2]) => (
                        LayerSpec::GlobalAvgPool { keep_dims: attr_i(node, "keepdims", 1) == 1 },
                        out,
                    ),
                    _ => return refuse(node, "over axes other than H and W"),
                }
            }
            "MaxPool" => {
                let k = attr_ints(node, "kernel_shape").unwrap_or_default();
                let s = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
                let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                let d = attr_ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
                let square = k.len() == 2 && k[0] == k[1] && s.len() == 2 && s[0] == s[1];
                let even_pads = p.len() == 4 && p.iter().all(|&x| x == p[0]);
                if !square
                    || !even_pads
                    || d != [1, 1]
                    || attr_i(node, "ceil_mode", 0) != 0
                    || node.output.len() > 1
                    || !attr_s(node, "auto_pad").trim_matches('\0').is_empty()
                        && attr_s(node, "auto_pad") != "NOTSET"
                {
                    return refuse(
                        node,
                        "with a non-square window, uneven padding, dilation or ceil mode",
                    );
                }
                (
                    LayerSpec::MaxPool2d {
                        kernel_size: k[0] as usize,
                        stride: Some(s[0] as usize),
                        padding: p[0] as usize,
                    },
                    out,
                )
            }
            "Resize" | "Upsample" => match upsample_mode(&seg, node) {
                Some(mode) => (LayerSpec::Upsample2x { mode }, out),
                None => {
                    return refuse(
                        node,
                        "other than ×2 nearest (floor, asymmetric) or bilinear (half-pixel)",
                    )
                }
            },
            "Softmax" => (LayerSpec::Softmax { dim: attr_i(node, "axis", -1) }, out),
            _ => return refuse(node, "is outside the trainable vocabulary"),
        };
        layers.push(layer);
        cur = out;
    }
    if cur != part.outputs[0] {
        return whole(format!(
            "the chain of layers ends at `{cur}`, not at the head output `{}`",
            part.outputs[0]
        ));
    }
    let spec = HeadSpec {
        name: part.name.clone(),
        inputs: part.cut_points.clone(),
        outputs: part.outputs.clone(),
        layers,
        task: None,
    };
    Head::new(spec, tensors).map_err(|e| NotTrainable { node: None, reason: e.to_string() })
}

/// Among several unmatched readers of the current tensor, the one that starts a layer (SiLU's
/// Sigmoid, or GELU's Div / Mul).
fn pick_start(seg: &Segment, readers: &[usize]) -> usize {
    let by_op = |op: &str| readers.iter().copied().find(|&n| seg.node(n).op_type == op);
    // Shape computations feed a Reshape's shape input; the Reshape is the layer.
    let layer =
        readers.iter().copied().find(|&n| seg.node(n).op_type != "Shape").unwrap_or(readers[0]);
    by_op("Sigmoid").or_else(|| by_op("Div")).or_else(|| by_op("Reshape")).unwrap_or(layer)
}

/// Matches `0.5·x·(1 + erf(x/√2))` starting at `node` (Div by √2 or Mul by 1/√2); returns the
/// pattern's output tensor.
fn gelu(seg: &mut Segment, node: &pb::NodeProto, x: &str) -> Option<String> {
    let c = seg.scalar(node.input.get(1)?)?;
    let scaled = match node.op_type.as_str() {
        "Div" => (c - std::f32::consts::SQRT_2).abs() < 1e-4,
        _ => (c - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-4,
    };
    if !scaled {
        return None;
    }
    let e = seg.only_reader(&node.output[0], "Erf")?;
    let erf_out = seg.node(e).output[0].clone();
    let a = seg.only_reader(&erf_out, "Add")?;
    let add = seg.node(a);
    let one = add.input.iter().find(|t| **t != erf_out)?;
    if seg.scalar(one)? != 1.0 {
        return None;
    }
    let add_out = add.output[0].clone();
    let mut used = vec![e, a];
    // The remaining two factors, x and 0.5, multiply in either order.
    let m1 = seg.only_reader(&add_out, "Mul")?;
    used.push(m1);
    let mul1 = seg.node(m1);
    let other = mul1.input.iter().find(|t| **t != add_out)?.clone();
    let out1 = mul1.output[0].clone();
    let end = if other == x {
        let m2 = seg.only_reader(&out1, "Mul")?;
        let mul2 = seg.node(m2);
        if seg.scalar(mul2.input.iter().find(|t| **t != out1)?)? != 0.5 {
            return None;
        }
        used.push(m2);
        mul2.output[0].clone()
    } else {
        // (x·0.5) computed first by another reader of x.
        let half = seg.graph.producer.get(&other).copied()?;
        let hn = seg.node(half);
        if hn.op_type != "Mul"
            || !hn.input.iter().any(|t| t == x)
            || seg.scalar(hn.input.iter().find(|t| *t != x)?)? != 0.5
        {
            return None;
        }
        used.push(half);
        out1
    };
    seg.used.extend(used);
    Some(end)
}

/// True when a Reshape makes `[N, …]` into `[N, rest]`: a constant shape `[0, -1]` / `[N, -1]`,
/// or PyTorch's `x.view(x.size(0), -1)` pattern (Shape → Gather(0) → Unsqueeze → Concat with
/// `-1`), whose shape-computing nodes are then consumed.
fn flattens(seg: &mut Segment, node: &pb::NodeProto) -> bool {
    let Some(shape) = node.input.get(1) else { return false };
    if let Some(s) = seg.ints(shape) {
        return s.len() == 2 && s[1] == -1 && s[0] >= 0;
    }
    // Walk the shape computation back to the data tensor; allow only shape arithmetic.
    let allowed = ["Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Squeeze", "Cast"];
    let mut stack = vec![shape.clone()];
    let mut side = Vec::new();
    let mut concat_ok = false;
    while let Some(t) = stack.pop() {
        if seg.is_const(&t) || t == node.input[0] {
            continue;
        }
        let Some(&p) = seg.graph.producer.get(&t) else { return false };
        if !seg.nodes.contains(&p) || side.contains(&p) {
            return false;
        }
        let pn = seg.node(p);
        if !allowed.contains(&pn.op_type.as_str()) {
            return false;
        }
        if pn.op_type == "Concat" {
            let consts: Vec<Vec<i64>> = pn.input.iter().filter_map(|i| seg.ints(i)).collect();
            concat_ok = pn.input.len() == 2 && consts.len() == 1 && consts[0] == [-1];
        }
        if pn.op_type == "Gather"
            && pn.input.get(1).and_then(|i| seg.ints(i)).is_some_and(|v| v != [0])
        {
            return false;
        }
        side.push(p);
        if pn.op_type != "Shape" {
            stack.extend(pn.input.iter().cloned());
        }
    }
    if concat_ok {
        seg.used.extend(side);
    }
    concat_ok
}

fn upsample_mode(seg: &Segment, node: &pb::NodeProto) -> Option<UpsampleMode> {
    let scales = node
        .input
        .iter()
        .skip(1)
        .filter(|t| !t.is_empty())
        .find_map(|t| seg.floats(t))
        .map(|(_, v)| v)?;
    if scales != [1.0, 1.0, 2.0, 2.0] {
        return None;
    }
    let mode = attr_s(node, "mode");
    let ctm = attr_s(node, "coordinate_transformation_mode");
    match mode.as_str() {
        "nearest"
            if node.op_type == "Upsample"
                || (matches!(ctm.as_str(), "asymmetric" | "")
                    && matches!(attr_s(node, "nearest_mode").as_str(), "floor" | "")) =>
        {
            Some(UpsampleMode::Nearest)
        }
        "linear" | "bilinear" if matches!(ctm.as_str(), "half_pixel" | "pytorch_half_pixel") => {
            Some(UpsampleMode::Bilinear)
        }
        _ => None,
    }
}

fn conv(
    seg: &Segment,
    node: &pb::NodeProto,
    i: usize,
    tensors: &mut Vec<(String, Tensor)>,
) -> Import<(LayerSpec, String)> {
    let Some((ws, w)) = node.input.get(1).and_then(|t| seg.floats(t)) else {
        return refuse(node, "without constant weights");
    };
    if ws.len() != 4 || ws[2] != ws[3] {
        return refuse(node, "with a kernel that is not square 2-D");
    }
    let k = ws[2];
    let get = |name: &str, default: Vec<i64>| attr_ints(node, name).unwrap_or(default);
    let (s, p, d) =
        (get("strides", vec![1, 1]), get("pads", vec![0; 4]), get("dilations", vec![1, 1]));
    if s.len() != 2
        || s[0] != s[1]
        || d.len() != 2
        || d[0] != d[1]
        || p.len() != 4
        || p.iter().any(|&x| x != p[0])
    {
        return refuse(node, "with unequal strides, dilations or pads");
    }
    let auto_pad = attr_s(node, "auto_pad");
    if !(auto_pad.is_empty() || auto_pad == "NOTSET") {
        return refuse(node, format!("with auto_pad {auto_pad}"));
    }
    let groups = attr_i(node, "group", 1).max(1) as usize;
    let (out_c, in_c) = (ws[0], ws[1] * groups);
    tensors.push((format!("{i}.weight"), tensor(&ws, w)));
    let bias = match node.input.get(2).filter(|t| !t.is_empty()) {
        Some(b) => match seg.floats(b) {
            Some((_, v)) if v.len() == out_c => {
                tensors.push((format!("{i}.bias"), tensor(&[out_c], v)));
                true
            }
            _ => return refuse(node, "with a non-constant bias"),
        },
        None => false,
    };
    let layer = LayerSpec::Conv2d {
        in_channels: in_c,
        out_channels: out_c,
        kernel_size: k,
        stride: s[0] as usize,
        padding: p[0] as usize,
        dilation: d[0] as usize,
        groups,
        bias,
    };
    Ok((layer, node.output[0].clone()))
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// Imports every head of a split, each as a head or the reason it cannot be trained.
pub fn import_heads(graph: &OnnxGraph, heads: &[HeadPart]) -> Vec<Import<Head>> {
    heads.iter().map(|h| import_head(graph, h)).collect()
}
