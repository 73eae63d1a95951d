//! Static bounds on the tensors a graph creates, checked before tract sees the graph.
//!
//! A small file can ask for a huge tensor without storing one: `ConstantOfShape` of
//! `[65536, 65536]`, an `Expand` or `Tile` to a crafted shape, a `Range` of 2⁴⁰ steps, a `Resize`
//! by a scale of 10⁶. tract evaluates constant parts of a graph while it plans them, so such a
//! tensor would be allocated while a plan is built, before any inference. This pass propagates
//! shapes, element sizes and the values of small tensors (shape arithmetic: `Shape`, `Gather`,
//! `Concat`, `Mul`…) through the graph in node order, and refuses a graph in which any node
//! creates a tensor larger than the memory limit, naming the node.
//!
//! The pass runs twice: at load time on the declared input shapes (symbolic dimensions unknown),
//! and again per plan on the concrete input shapes, where sizes derived from input shapes become
//! known. Every bound is a lower bound on what the node allocates, so a graph is refused only
//! when it certainly needs more than the limit. Sizes that depend on input *values* stay unknown
//! here.

use crate::error::{Error, Result};
use std::collections::HashMap;
use tract_onnx::pb;

/// Tensors with at most this many elements have their values tracked.
const MAX_TRACKED: u64 = 4096;

/// What the pass knows of one tensor.
#[derive(Debug, Clone, Default)]
struct Info {
    /// Per dimension, its size where known; `None` when even the rank is unknown.
    shape: Option<Vec<Option<u64>>>,
    /// Bytes per element (a lower bound: 1 where the type is unknown).
    elem: u64,
    /// The values, when the tensor is small and its values are known.
    values: Option<Vec<f64>>,
}

impl Info {
    fn unknown() -> Info {
        Info { shape: None, elem: 1, values: None }
    }

    fn of_shape(shape: Vec<Option<u64>>, elem: u64) -> Info {
        Info { shape: Some(shape), elem, values: None }
    }

    /// A 1-D tensor of known values.
    fn vector(values: Vec<f64>, elem: u64) -> Info {
        Info { shape: Some(vec![Some(values.len() as u64)]), elem, values: Some(values) }
    }

    /// The element count where every dimension is known.
    fn count(&self) -> Option<u64> {
        self.shape.as_ref()?.iter().try_fold(1u64, |n, d| d.map(|d| n.saturating_mul(d)))
    }

    fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    fn ints(&self) -> Option<Vec<i64>> {
        self.values.as_ref().map(|v| v.iter().map(|&x| x as i64).collect())
    }
}

/// Refuses `graph` when a node certainly creates a tensor of more than `max_bytes` bytes.
pub(crate) fn check(graph: &pb::GraphProto, max_bytes: u64) -> Result<()> {
    propagate(graph, |node, out| {
        let Some(elements) = out.count() else { return Ok(()) };
        let bytes = elements.saturating_mul(out.elem);
        if bytes > max_bytes {
            return Err(Error::InvalidModel(format!(
                "node `{}` ({}) creates a tensor of {elements} elements ({bytes} bytes), over \
                 the memory limit of {max_bytes} bytes",
                node.name, node.op_type
            )));
        }
        Ok(())
    })
    .map(drop)
}

/// Walks the nodes in order, calling `visit` with each node and what is known of its first
/// output; returns what is known of every tensor.
fn propagate(
    graph: &pb::GraphProto,
    mut visit: impl FnMut(&pb::NodeProto, &Info) -> Result<()>,
) -> Result<HashMap<&str, Info>> {
    let mut known: HashMap<&str, Info> = HashMap::new();
    for t in &graph.initializer {
        known.insert(&t.name, tensor_info(t));
    }
    for vi in &graph.input {
        if !known.contains_key(vi.name.as_str()) {
            known.insert(&vi.name, value_info(vi));
        }
    }
    for node in &graph.node {
        let inputs: Vec<Info> = node
            .input
            .iter()
            .map(|i| known.get(i.as_str()).cloned().unwrap_or_else(Info::unknown))
            .collect();
        check_indices(node, &inputs)?;
        let outputs = infer(node, &inputs);
        if let Some(first) = outputs.first() {
            visit(node, first)?;
        }
        for (name, info) in node.output.iter().zip(outputs) {
            known.insert(name, info);
        }
    }
    Ok(known)
}

/// What is known of each output of `node`, given what is known of its inputs.
fn infer(node: &pb::NodeProto, x: &[Info]) -> Vec<Info> {
    let first = || x.first().cloned().unwrap_or_else(Info::unknown);
    let elem0 = x.first().map_or(1, |i| i.elem);
    let out = match node.op_type.as_str() {
        "Constant" => constant(node),
        "Identity"
        | "Relu"
        | "Sigmoid"
        | "Tanh"
        | "LeakyRelu"
        | "Clip"
        | "Softmax"
        | "LogSoftmax"
        | "BatchNormalization"
        | "Dropout"
        | "Neg"
        | "Abs"
        | "Sqrt"
        | "Exp"
        | "Log"
        | "Erf"
        | "HardSigmoid"
        | "HardSwish"
        | "Elu"
        | "Selu"
        | "Gelu"
        | "LayerNormalization"
        | "InstanceNormalization"
        | "LRN"
        | "Floor"
        | "Ceil"
        | "Round" => {
            let mut o = first();
            if node.op_type != "Identity" {
                o.values = None;
            }
            o
        }
        "Cast" => {
            let mut o = first();
            o.elem = elem_bytes(int_attr(node, "to").unwrap_or(1) as i32);
            o
        }
        "Shape" => match x.first().and_then(|i| i.shape.clone()) {
            Some(shape) => {
                let rank = shape.len() as i64;
                let clamp = |v: i64| if v < 0 { (v + rank).max(0) } else { v.min(rank) } as usize;
                let start = clamp(int_attr(node, "start").unwrap_or(0));
                let end = clamp(int_attr(node, "end").unwrap_or(rank));
                let dims = shape.get(start..end.max(start)).unwrap_or(&[]);
                match dims.iter().map(|d| d.map(|d| d as f64)).collect::<Option<Vec<f64>>>() {
                    Some(v) => Info::vector(v, 8),
                    None => Info::of_shape(vec![Some(dims.len() as u64)], 8),
                }
            }
            None => Info { elem: 8, ..Info::unknown() },
        },
        "Size" => match first().count() {
            Some(n) => Info { shape: Some(vec![]), elem: 8, values: Some(vec![n as f64]) },
            None => Info::of_shape(vec![], 8),
        },
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Pow" | "Mod" | "Equal" | "Less"
        | "Greater" | "And" | "Or" | "Where" | "PRelu" => elementwise(node, x),
        "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => reshape(node, x),
        "Concat" => concat(node, x),
        "Gather" => gather(node, x),
        "Slice" => slice(node, x),
        "Transpose" => {
            let o = first();
            let perm = ints_attr(node, "perm");
            let shape = o.shape.map(|s| match perm {
                Some(p) => p.iter().map(|&i| s.get(i as usize).copied().flatten()).collect(),
                None => s.into_iter().rev().collect(),
            });
            Info { shape, elem: o.elem, values: None }
        }
        "ConstantOfShape" => {
            let elem = node
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref())
                .map_or(4, |t| elem_bytes(t.data_type));
            match x.first().and_then(Info::ints) {
                Some(dims) => {
                    Info::of_shape(dims.iter().map(|&d| Some(d.max(0) as u64)).collect(), elem)
                }
                None => Info { elem, ..Info::unknown() },
            }
        }
        "Expand" => match x.get(1).and_then(Info::ints) {
            Some(target) => expand(&first(), &target),
            None => Info { elem: elem0, ..Info::unknown() },
        },
        "Tile" => {
            let (input, reps) = (first(), x.get(1).and_then(Info::ints));
            let shape =
                input.shape.as_ref().zip(reps).filter(|(s, r)| s.len() == r.len()).map(|(s, r)| {
                    s.iter().zip(&r).map(|(d, &k)| d.map(|d| d.saturating_mul(dim(k)))).collect()
                });
            Info { shape, elem: elem0, values: None }
        }
        "Range" => {
            let v = |i: usize| x.get(i).and_then(|t| t.values.as_ref()?.first().copied());
            match (v(0), v(1), v(2)) {
                (Some(start), Some(limit), Some(delta)) if delta != 0.0 => {
                    Info::of_shape(vec![Some(count_of(((limit - start) / delta).ceil()))], elem0)
                }
                _ => Info { elem: elem0, ..Info::unknown() },
            }
        }
        "OneHot" => {
            let (indices, depth) =
                (first(), x.get(1).and_then(|t| t.values.as_ref()?.first().copied()));
            let shape = indices.shape.zip(depth).map(|(mut s, d)| {
                let rank = s.len() as i64 + 1;
                let axis = int_attr(node, "axis").unwrap_or(-1);
                let axis = if axis < 0 { axis + rank } else { axis }.clamp(0, rank - 1) as usize;
                s.insert(axis, Some(count_of(d)));
                s
            });
            Info { shape, elem: x.get(2).map_or(1, |v| v.elem), values: None }
        }
        "Resize" | "Upsample" => resize(node, x),
        "Pad" => {
            let input = first();
            let pads = x.get(1).and_then(Info::ints).or_else(|| ints_attr(node, "pads"));
            let shape = input.shape.as_ref().zip(pads).filter(|(s, p)| p.len() == 2 * s.len()).map(
                |(s, p)| {
                    let rank = s.len();
                    (0..rank)
                        .map(|i| s[i].map(|d| wide(d as i128 + p[i] as i128 + p[i + rank] as i128)))
                        .collect()
                },
            );
            Info { shape, elem: input.elem, values: None }
        }
        "RandomNormal" | "RandomUniform" => {
            let dims = ints_attr(node, "shape").unwrap_or_default();
            let elem = elem_bytes(int_attr(node, "dtype").unwrap_or(1) as i32);
            Info::of_shape(dims.iter().map(|&d| Some(d.max(0) as u64)).collect(), elem)
        }
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" => window(node, x),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let o = first();
            let shape = o.shape.map(|s| {
                s.iter().enumerate().map(|(i, &d)| if i < 2 { d } else { Some(1) }).collect()
            });
            Info { shape, elem: o.elem, values: None }
        }
        "MatMul" | "Gemm" => matmul(node, x),
        _ => Info::unknown(),
    };
    let mut outputs = vec![out];
    outputs.resize(node.output.len().max(1), Info::unknown());
    outputs
}

/// Broadcasting element-wise ops, with values for small known operands.
fn elementwise(node: &pb::NodeProto, x: &[Info]) -> Info {
    let elem = match node.op_type.as_str() {
        "Equal" | "Less" | "Greater" | "And" | "Or" => 1,
        "Where" => x.get(1).map_or(1, |i| i.elem),
        _ => x.first().map_or(1, |i| i.elem),
    };
    let shapes: Option<Vec<&Vec<Option<u64>>>> = x.iter().map(|i| i.shape.as_ref()).collect();
    let shape = shapes.map(|s| {
        let rank = s.iter().map(|v| v.len()).max().unwrap_or(0);
        (0..rank)
            .map(|k| {
                let mut dim = Some(1u64);
                for v in &s {
                    let d = if k + v.len() >= rank { v[k + v.len() - rank] } else { Some(1) };
                    dim = match (dim, d) {
                        (Some(1), d) | (d, Some(1)) => d,
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                dim
            })
            .collect::<Vec<_>>()
    });
    let values = match (node.op_type.as_str(), x) {
        (op, [a, b]) => a.values.as_ref().zip(b.values.as_ref()).and_then(|(a, b)| {
            let n = a.len().max(b.len());
            if !(a.len() == n || a.len() == 1) || !(b.len() == n || b.len() == 1) {
                return None;
            }
            let get = |v: &Vec<f64>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let integer = elem == 8 || elem == 4 && node.op_type != "Div";
            (0..n)
                .map(|i| {
                    let (p, q) = (get(a, i), get(b, i));
                    Some(match op {
                        "Add" => p + q,
                        "Sub" => p - q,
                        "Mul" => p * q,
                        "Div" if q == 0.0 => return None,
                        "Div" if integer => (p / q).trunc(),
                        "Div" => p / q,
                        "Max" => p.max(q),
                        "Min" => p.min(q),
                        _ => return None,
                    })
                })
                .collect::<Option<Vec<f64>>>()
        }),
        _ => None,
    };
    Info { shape, elem, values }
}

/// `Unsqueeze`, `Squeeze`, `Reshape`, `Flatten`: the same values in a new shape.
fn reshape(node: &pb::NodeProto, x: &[Info]) -> Info {
    let input = x.first().cloned().unwrap_or_else(Info::unknown);
    let axes = || x.get(1).and_then(Info::ints).or_else(|| ints_attr(node, "axes"));
    let shape: Option<Vec<Option<u64>>> = match node.op_type.as_str() {
        "Reshape" => x.get(1).and_then(Info::ints).map(|target| {
            let from = input.shape.as_ref();
            let allow_zero = int_attr(node, "allowzero").unwrap_or(0) != 0;
            let mut dims: Vec<Option<u64>> = target
                .iter()
                .enumerate()
                .map(|(i, &d)| match d {
                    0 if allow_zero => Some(0),
                    0 => from.and_then(|s| s.get(i).copied().flatten()),
                    d if d < 0 => None,
                    d => Some(d as u64),
                })
                .collect();
            if let Some(infer) = target.iter().position(|&d| d < 0) {
                let known: Option<u64> = dims
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != infer)
                    .try_fold(1u64, |n, (_, d)| d.map(|d| n.saturating_mul(d)));
                dims[infer] = input.count().zip(known).and_then(|(c, k)| c.checked_div(k));
            }
            dims
        }),
        "Flatten" => input.shape.as_ref().map(|s| {
            let rank = s.len() as i64;
            let axis = int_attr(node, "axis").unwrap_or(1);
            let axis = if axis < 0 { axis + rank } else { axis }.clamp(0, rank) as usize;
            let prod =
                |d: &[Option<u64>]| d.iter().try_fold(1u64, |n, d| d.map(|d| n.saturating_mul(d)));
            vec![prod(&s[..axis]), prod(&s[axis..])]
        }),
        "Unsqueeze" => input.shape.as_ref().zip(axes()).map(|(s, axes)| {
            let rank = (s.len() + axes.len()) as i64;
            let mut axes: Vec<i64> =
                axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
            axes.sort_unstable();
            let mut dims = s.clone();
            for a in axes {
                let a = (a.max(0) as usize).min(dims.len());
                dims.insert(a, Some(1));
            }
            dims
        }),
        _ => input.shape.as_ref().map(|s| {
            let rank = s.len() as i64;
            match axes() {
                Some(axes) => {
                    let axes: Vec<usize> =
                        axes.iter().map(|&a| if a < 0 { a + rank } else { a } as usize).collect();
                    s.iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, &d)| d)
                        .collect()
                }
                None => s.iter().copied().filter(|d| *d != Some(1)).collect(),
            }
        }),
    };
    Info { shape, elem: input.elem, values: input.values }
}

fn concat(node: &pb::NodeProto, x: &[Info]) -> Info {
    let elem = x.first().map_or(1, |i| i.elem);
    let values = x
        .iter()
        .map(|i| i.values.clone().filter(|_| i.rank() == Some(1)))
        .collect::<Option<Vec<Vec<f64>>>>()
        .map(|v| v.concat())
        .filter(|v| v.len() as u64 <= MAX_TRACKED);
    let shape = x.iter().map(|i| i.shape.clone()).collect::<Option<Vec<_>>>().and_then(|s| {
        let rank = s.first()?.len() as i64;
        let axis = int_attr(node, "axis").unwrap_or(0);
        let axis = if axis < 0 { axis + rank } else { axis } as usize;
        let mut dims = s.first()?.clone();
        let total = s
            .iter()
            .try_fold(0u64, |n, d| d.get(axis).copied().flatten().map(|d| n.saturating_add(d)));
        *dims.get_mut(axis)? = total;
        Some(dims)
    });
    Info { shape, elem, values }
}

fn gather(node: &pb::NodeProto, x: &[Info]) -> Info {
    let (data, idx) = match x {
        [d, i, ..] => (d, i),
        _ => return Info::unknown(),
    };
    let axis = int_attr(node, "axis").unwrap_or(0);
    let values = (axis == 0 && data.rank() == Some(1))
        .then_some(())
        .and(data.values.as_ref().zip(idx.ints()))
        .and_then(|(v, idx)| {
            idx.iter()
                .map(|&i| {
                    let i = if i < 0 { i + v.len() as i64 } else { i };
                    v.get(usize::try_from(i).ok()?).copied()
                })
                .collect::<Option<Vec<f64>>>()
        });
    let shape = data.shape.as_ref().zip(idx.shape.as_ref()).and_then(|(d, i)| {
        let rank = d.len() as i64;
        let axis = if axis < 0 { axis + rank } else { axis } as usize;
        if axis >= d.len() {
            return None;
        }
        let mut s = d[..axis].to_vec();
        s.extend(i.iter().copied());
        s.extend(d[axis + 1..].iter().copied());
        Some(s)
    });
    Info { shape, elem: data.elem, values }
}

/// Refuses a `Gather` whose known indices fall outside the known size of its axis (the engine
/// would index out of bounds while it evaluates the graph's shape arithmetic).
fn check_indices(node: &pb::NodeProto, x: &[Info]) -> Result<()> {
    let (Some(data), Some(idx)) = (x.first(), x.get(1)) else { return Ok(()) };
    if node.op_type != "Gather" {
        return Ok(());
    }
    let (Some(shape), Some(indices)) = (data.shape.as_ref(), idx.ints()) else { return Ok(()) };
    let rank = shape.len() as i64;
    let axis = int_attr(node, "axis").unwrap_or(0);
    let bad =
        |why: String| Err(Error::InvalidModel(format!("node `{}` (Gather): {why}", node.name)));
    let a = if axis < 0 { axis.saturating_add(rank) } else { axis };
    if a < 0 || a >= rank {
        return bad(format!("axis {axis} is out of range for rank {rank}"));
    }
    if let Some(n) = shape[a as usize] {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        if let Some(i) = indices.iter().find(|&&i| i < -n || i >= n) {
            return bad(format!("index {i} is out of range for an axis of size {n}"));
        }
    }
    Ok(())
}

/// `Slice` of a known 1-D tensor along axis 0 (the shape arithmetic of exported graphs).
fn slice(node: &pb::NodeProto, x: &[Info]) -> Info {
    let data = x.first().cloned().unwrap_or_else(Info::unknown);
    let arg = |i: usize| x.get(i).and_then(Info::ints).and_then(|v| v.first().copied());
    let absent = |i: usize| node.input.get(i).is_none_or(String::is_empty);
    let axes_ok = absent(3) || x.get(3).is_some_and(|a| a.ints().is_some_and(|v| v == [0]));
    let values = data.values.as_ref().filter(|_| data.rank() == Some(1) && axes_ok).and_then(|v| {
        let n = v.len() as i64;
        let (start, end, step) = (arg(1)?, arg(2)?, arg(4).unwrap_or(1));
        if step <= 0 {
            return None;
        }
        let clamp = |p: i64| if p < 0 { (p + n).max(0) } else { p.min(n) };
        let (s, e) = (clamp(start), clamp(end));
        Some((s..e).step_by(step as usize).map(|i| v[i as usize]).collect::<Vec<f64>>())
    });
    match values {
        Some(v) => Info::vector(v, data.elem),
        None => Info { elem: data.elem, ..Info::unknown() },
    }
}

/// `Resize` by sizes or by scales, `Upsample` by scales.
fn resize(node: &pb::NodeProto, x: &[Info]) -> Info {
    let input = x.first().cloned().unwrap_or_else(Info::unknown);
    let (scales, sizes) = if node.op_type == "Upsample" {
        (x.get(1).and_then(|s| s.values.clone()).or_else(|| floats_attr(node, "scales")), None)
    } else {
        (x.get(2).and_then(|s| s.values.clone()), x.get(3).and_then(Info::ints))
    };
    let shape = match (sizes.filter(|s| !s.is_empty()), scales.filter(|s| !s.is_empty())) {
        (Some(sizes), _) => Some(sizes.iter().map(|&d| Some(dim(d))).collect()),
        (None, Some(scales)) => input.shape.as_ref().filter(|s| s.len() == scales.len()).map(|s| {
            s.iter()
                .zip(&scales)
                .map(|(d, &k)| d.map(|d| count_of((d as f64 * k).floor())))
                .collect()
        }),
        _ => None,
    };
    Info { shape, elem: input.elem, values: None }
}

/// `target` broadcast with the shape of `input` (ONNX `Expand`).
fn expand(input: &Info, target: &[i64]) -> Info {
    let rank = target.len().max(input.rank().unwrap_or(0));
    let pad = |v: Vec<Option<u64>>| {
        let mut p = vec![Some(1); rank - v.len().min(rank)];
        p.extend(v);
        p
    };
    let target = pad(target.iter().map(|&d| Some(dim(d))).collect());
    let from = input.shape.clone().map(pad);
    let shape = (0..rank)
        .map(|i| match target[i] {
            Some(1) => from.as_ref().and_then(|f| f[i]),
            d => d,
        })
        .collect();
    Info::of_shape(shape, input.elem)
}

/// A dimension from a wide signed size (negative: empty; saturating).
fn wide(d: i128) -> u64 {
    u64::try_from(d.max(0)).unwrap_or(u64::MAX)
}

/// A dimension from a signed size (negative sizes count as empty).
fn dim(d: i64) -> u64 {
    d.max(0) as u64
}

/// An element count from a float (non-finite or negative: empty; saturating).
fn count_of(n: f64) -> u64 {
    if n.is_nan() || n <= 0.0 {
        0
    } else if n >= u64::MAX as f64 {
        u64::MAX
    } else {
        n as u64
    }
}

/// Convolutions and pooling windows over NC… tensors.
fn window(node: &pb::NodeProto, x: &[Info]) -> Info {
    let input = x.first().cloned().unwrap_or_else(Info::unknown);
    let Some(s) = input.shape.clone() else { return Info { elem: input.elem, ..Info::unknown() } };
    if s.len() < 3 {
        return Info { elem: input.elem, ..Info::unknown() };
    }
    let spatial = s.len() - 2;
    let weight = x.get(1).and_then(|w| w.shape.clone());
    let kernel: Vec<Option<u64>> = match ints_attr(node, "kernel_shape") {
        Some(k) => k.iter().map(|&k| Some(k.max(0) as u64)).collect(),
        None => match &weight {
            Some(w) if w.len() == s.len() => w[2..].to_vec(),
            _ => vec![None; spatial],
        },
    };
    let attr = |name: &str, default: i64, n: usize| -> Vec<i64> {
        ints_attr(node, name).filter(|v| v.len() == n).unwrap_or_else(|| vec![default; n])
    };
    let (strides, dilations) = (attr("strides", 1, spatial), attr("dilations", 1, spatial));
    let pads = attr("pads", 0, 2 * spatial);
    let transpose = node.op_type == "ConvTranspose";
    let same = ints_or_string(node, "auto_pad").is_some_and(|p| p.starts_with("SAME"));
    let ceil = int_attr(node, "ceil_mode").unwrap_or(0) != 0;
    let mut dims = vec![s[0]];
    dims.push(match (&weight, node.op_type.as_str()) {
        (Some(w), "Conv") => w.first().copied().flatten(),
        (Some(w), "ConvTranspose") => w
            .get(1)
            .copied()
            .flatten()
            .map(|c| c.saturating_mul(int_attr(node, "group").unwrap_or(1).max(1) as u64)),
        _ => s[1],
    });
    for i in 0..spatial {
        let d = s[2 + i].zip(kernel.get(i).copied().flatten()).and_then(|(d, k)| {
            // Wide arithmetic: attributes are untrusted and may be absurd.
            let (st, dl) = (strides[i].max(1) as i128, dilations[i].max(1) as i128);
            let (d, k) = (d as i128, k as i128);
            let (p0, p1) = (pads[i] as i128, pads[i + spatial] as i128);
            let eff = dl * (k - 1) + 1;
            let out = if transpose {
                st * (d - 1) + eff - p0 - p1
            } else if same {
                (d + st - 1) / st
            } else {
                let span = d + p0 + p1 - eff;
                if span < 0 {
                    return None;
                }
                if ceil {
                    (span + st - 1) / st + 1
                } else {
                    span / st + 1
                }
            };
            (out >= 0).then(|| wide(out))
        });
        dims.push(d);
    }
    Info::of_shape(dims, input.elem)
}

fn matmul(node: &pb::NodeProto, x: &[Info]) -> Info {
    let (a, b) = match x {
        [a, b, ..] => (a, b),
        _ => return Info::unknown(),
    };
    let elem = a.elem;
    let (Some(sa), Some(sb)) = (a.shape.as_ref(), b.shape.as_ref()) else {
        return Info { elem, ..Info::unknown() };
    };
    let shape = if node.op_type == "Gemm" {
        let ta = int_attr(node, "transA").unwrap_or(0) != 0;
        let tb = int_attr(node, "transB").unwrap_or(0) != 0;
        if sa.len() != 2 || sb.len() != 2 {
            return Info { elem, ..Info::unknown() };
        }
        vec![if ta { sa[1] } else { sa[0] }, if tb { sb[0] } else { sb[1] }]
    } else {
        if sa.is_empty() || sb.is_empty() {
            return Info { elem, ..Info::unknown() };
        }
        let m = if sa.len() >= 2 { Some(sa[sa.len() - 2]) } else { None };
        let n = if sb.len() >= 2 { Some(sb[sb.len() - 1]) } else { None };
        let batch_a = &sa[..sa.len().saturating_sub(2)];
        let batch_b = &sb[..sb.len().saturating_sub(2)];
        let rank = batch_a.len().max(batch_b.len());
        let mut dims: Vec<Option<u64>> = (0..rank)
            .map(|k| {
                let get = |v: &[Option<u64>]| {
                    if k + v.len() >= rank {
                        v[k + v.len() - rank]
                    } else {
                        Some(1)
                    }
                };
                match (get(batch_a), get(batch_b)) {
                    (Some(1), d) | (d, Some(1)) => d,
                    (Some(p), Some(q)) => Some(p.max(q)),
                    _ => None,
                }
            })
            .collect();
        dims.extend(m);
        dims.extend(n);
        dims
    };
    Info::of_shape(shape, elem)
}

fn constant(node: &pb::NodeProto) -> Info {
    for a in &node.attribute {
        match a.name.as_str() {
            "value" => return a.t.as_ref().map_or_else(Info::unknown, tensor_info),
            "value_int" => {
                return Info { shape: Some(vec![]), elem: 8, values: Some(vec![a.i as f64]) }
            }
            "value_ints" => return Info::vector(a.ints.iter().map(|&v| v as f64).collect(), 8),
            "value_float" => {
                return Info { shape: Some(vec![]), elem: 4, values: Some(vec![a.f as f64]) }
            }
            "value_floats" => return Info::vector(a.floats.iter().map(|&v| v as f64).collect(), 4),
            _ => {}
        }
    }
    Info::unknown()
}

/// Shape, element size and (for small numeric tensors) values of a stored tensor.
fn tensor_info(t: &pb::TensorProto) -> Info {
    let shape: Vec<Option<u64>> = t.dims.iter().map(|&d| u64::try_from(d).ok()).collect();
    let elem = elem_bytes(t.data_type);
    let count = shape.iter().try_fold(1u64, |n, d| d.map(|d| n.saturating_mul(d)));
    let values = count.filter(|&n| n <= MAX_TRACKED).and_then(|n| stored_values(t, n as usize));
    Info { shape: Some(shape), elem, values }
}

fn stored_values(t: &pb::TensorProto, n: usize) -> Option<Vec<f64>> {
    fn le<const N: usize>(raw: &[u8], n: usize, f: fn([u8; N]) -> f64) -> Option<Vec<f64>> {
        (raw.len() == n * N)
            .then(|| raw.chunks_exact(N).filter_map(|c| c.try_into().ok().map(f)).collect())
    }
    let raw = &t.raw_data;
    let values = match t.data_type {
        1 if raw.is_empty() => t.float_data.iter().map(|&v| v as f64).collect(),
        1 => le(raw, n, |b| f32::from_le_bytes(b) as f64)?,
        7 if raw.is_empty() => t.int64_data.iter().map(|&v| v as f64).collect(),
        7 => le(raw, n, |b| i64::from_le_bytes(b) as f64)?,
        6 if raw.is_empty() => t.int32_data.iter().map(|&v| v as f64).collect(),
        6 => le(raw, n, |b| i32::from_le_bytes(b) as f64)?,
        11 if raw.is_empty() => t.double_data.clone(),
        11 => le(raw, n, f64::from_le_bytes)?,
        _ => return None,
    };
    (values.len() == n).then_some(values)
}

/// Shape and element size of a declared graph input.
fn value_info(vi: &pb::ValueInfoProto) -> Info {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Info::unknown();
    };
    let shape = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(v)) => u64::try_from(v).ok(),
                _ => None,
            })
            .collect()
    });
    Info { shape, elem: elem_bytes(t.elem_type), values: None }
}

/// Bytes per element of an ONNX element type (1 for unknown, string or sub-byte types: a
/// lower bound), from the element table of [`limits`](super::limits).
fn elem_bytes(data_type: i32) -> u64 {
    super::limits::element(data_type).map_or(1, |(bits, _, _)| (bits / 8).max(1))
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn int_attr(node: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn ints_attr(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn floats_attr(node: &pb::NodeProto, name: &str) -> Option<Vec<f64>> {
    attr(node, name).map(|a| a.floats.iter().map(|&v| v as f64).collect())
}

fn ints_or_string(node: &pb::NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    use tract_onnx::prelude::{Framework, InferenceModelExt};

    fn node(
        op: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<pb::AttributeProto>,
    ) -> pb::NodeProto {
        pb::NodeProto {
            name: output.to_string(),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attrs,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto { name: name.into(), ints: v.to_vec(), ..Default::default() }
    }

    fn int(name: &str, v: i64) -> pb::AttributeProto {
        pb::AttributeProto { name: name.into(), i: v, ..Default::default() }
    }

    fn i64s(name: &str, v: &[i64]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![v.len() as i64],
            data_type: 7,
            int64_data: v.to_vec(),
            ..Default::default()
        }
    }

    fn f32s(name: &str, dims: &[i64], v: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    /// An f32 input `x` of the given shape (`None`: a symbolic dimension).
    fn input(shape: &[Option<i64>]) -> pb::ValueInfoProto {
        let dim = shape
            .iter()
            .map(|d| Dimension {
                denotation: String::new(),
                value: Some(match d {
                    Some(v) => Value::DimValue(*v),
                    None => Value::DimParam("N".into()),
                }),
            })
            .collect();
        pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
            }),
            ..Default::default()
        }
    }

    fn graph(
        nodes: Vec<pb::NodeProto>,
        inits: Vec<pb::TensorProto>,
        x: &[Option<i64>],
    ) -> pb::GraphProto {
        pb::GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![input(x)],
            ..Default::default()
        }
    }

    const LIMIT: u64 = 1 << 30;

    fn refused(g: &pb::GraphProto, op: &str) {
        let e =
            check(g, LIMIT).err().unwrap_or_else(|| panic!("{op}: must be refused")).to_string();
        assert!(e.contains(op) && e.contains("memory limit of 1073741824"), "{e}");
    }

    #[test]
    fn constant_shapes_that_ask_for_too_much_are_refused_naming_the_node() {
        let cos = graph(
            vec![node("ConstantOfShape", &["s"], "big", vec![])],
            vec![i64s("s", &[65536, 65536])],
            &[Some(1)],
        );
        refused(&cos, "node `big` (ConstantOfShape) creates a tensor of 4294967296 elements");
        // Just under the limit: 2^28 f32 elements are exactly 1 GiB.
        let ok = graph(
            vec![node("ConstantOfShape", &["s"], "ok", vec![])],
            vec![i64s("s", &[1 << 14, 1 << 14])],
            &[Some(1)],
        );
        check(&ok, LIMIT).unwrap();
        let expand = graph(
            vec![node("Expand", &["x", "s"], "e", vec![])],
            vec![i64s("s", &[1 << 20, 1 << 20, 4])],
            &[None, Some(4)],
        );
        refused(&expand, "(Expand)");
        let tile = graph(
            vec![node("Tile", &["x", "r"], "t", vec![])],
            vec![i64s("r", &[1 << 16, 1 << 16])],
            &[Some(2), Some(4)],
        );
        refused(&tile, "(Tile)");
        let range = graph(
            vec![node("Range", &["a", "b", "c"], "r", vec![])],
            vec![i64s("a", &[0]), i64s("b", &[1 << 40]), i64s("c", &[1])],
            &[Some(1)],
        );
        refused(&range, "(Range) creates a tensor of 1099511627776 elements");
        let resize = graph(
            vec![node("Resize", &["x", "", "k"], "u", vec![])],
            vec![f32s("k", &[4], &[1.0, 1.0, 1e5, 1e5])],
            &[Some(1), Some(3), Some(8), Some(8)],
        );
        refused(&resize, "(Resize)");
        let pad = graph(
            vec![node("Pad", &["x", "p"], "p2", vec![])],
            vec![i64s("p", &[0, 1 << 30, 0, 1 << 30])],
            &[Some(1), Some(1 << 10)],
        );
        refused(&pad, "(Pad)");
    }

    #[test]
    fn sizes_computed_from_input_shapes_are_bounded_once_the_shapes_are_known() {
        // size = Shape(x)[1] * 10^6, then ConstantOfShape([size, size]): unknown while the input
        // dimension is symbolic, refused once it is concrete.
        let nodes = vec![
            node("Shape", &["x"], "shape", vec![]),
            node("Gather", &["shape", "one"], "d", vec![int("axis", 0)]),
            node("Mul", &["d", "million"], "big", vec![]),
            node("Concat", &["big", "big"], "dims", vec![int("axis", 0)]),
            node("ConstantOfShape", &["dims"], "bomb", vec![]),
        ];
        let inits = vec![i64s("one", &[1]), i64s("million", &[1_000_000])];
        check(&graph(nodes.clone(), inits.clone(), &[Some(1), None]), LIMIT).unwrap();
        refused(&graph(nodes, inits, &[Some(1), Some(4)]), "node `bomb` (ConstantOfShape)");
    }

    #[test]
    fn gather_indices_outside_their_axis_are_refused() {
        let nodes = vec![
            node("Shape", &["x"], "shape", vec![]),
            node("Gather", &["shape", "i"], "n", vec![int("axis", 0)]),
        ];
        let g = |i: i64| graph(nodes.clone(), vec![i64s("i", &[i])], &[None, Some(4)]);
        check(&g(1), LIMIT).unwrap();
        check(&g(-2), LIMIT).unwrap();
        for i in [2, -3, i64::MAX, i64::MIN] {
            let e = check(&g(i), LIMIT).unwrap_err().to_string();
            assert!(e.contains("node `n` (Gather): index") && e.contains("axis of size 2"), "{e}");
        }
    }

    #[test]
    fn shapes_flow_through_convolutions_pools_and_products() {
        let w = f32s("w", &[8, 3, 3, 3], &[0.0; 8 * 27]);
        let fc = f32s("fc", &[8 * 16 * 16, 10], &vec![0.0; 8 * 256 * 10]);
        let nodes = vec![
            node("Conv", &["x", "w"], "c", vec![ints("pads", &[1, 1, 1, 1])]),
            node("Relu", &["c"], "r", vec![]),
            node(
                "MaxPool",
                &["r"],
                "p",
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ),
            node("Flatten", &["p"], "f", vec![int("axis", 1)]),
            node("MatMul", &["f", "fc"], "y", vec![]),
            node("Shape", &["y"], "s", vec![]),
        ];
        let g = graph(nodes, vec![w, fc], &[Some(2), Some(3), Some(32), Some(32)]);
        let known = propagate(&g, |_, _| Ok(())).unwrap();
        let shape = |t: &str| known[t].shape.clone().unwrap();
        assert_eq!(shape("c"), [Some(2), Some(8), Some(32), Some(32)]);
        assert_eq!(shape("p"), [Some(2), Some(8), Some(16), Some(16)]);
        assert_eq!(shape("f"), [Some(2), Some(2048)]);
        assert_eq!(shape("y"), [Some(2), Some(10)]);
        assert_eq!(known["s"].values, Some(vec![2.0, 10.0]));
    }

    /// Every shape the pass claims to know on the committed fixture models (and on the
    /// torchvision benchmark models of bench/make_perf_models.py, where they have been made),
    /// with a concrete batch, equals tract's own shape inference.
    #[test]
    fn known_shapes_agree_with_tract_on_every_fixture_model() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files: Vec<std::path::PathBuf> =
            ["hydranet.onnx", "digits.onnx", "single.onnx", "dtypes.onnx", "train/vocab.onnx"]
                .iter()
                .map(|f| root.join("tests/fixtures").join(f))
                .collect();
        if let Ok(dir) = std::fs::read_dir(root.join("bench/models")) {
            files.extend(
                dir.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "onnx")),
            );
        }
        let mut compared = 0;
        for path in &files {
            let name = path.display();
            let bytes = std::fs::read(path).unwrap();
            let mut proto = tract_onnx::onnx().proto_model_for_read(&mut &bytes[..]).unwrap();
            let g = proto.graph.as_mut().unwrap();
            for vi in &mut g.input {
                if let Some(pb::type_proto::Value::TensorType(t)) =
                    vi.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    for d in t.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
                        if !matches!(d.value, Some(Value::DimValue(_))) {
                            d.value = Some(Value::DimValue(3));
                        }
                    }
                }
            }
            let known = propagate(proto.graph.as_ref().unwrap(), |_, _| Ok(())).unwrap();
            let typed =
                tract_onnx::onnx().model_for_proto_model(&proto).unwrap().into_typed().unwrap();
            for n in typed.nodes() {
                for (ix, o) in n.outputs.iter().enumerate() {
                    let outlet = tract_onnx::prelude::OutletId::new(n.id, ix);
                    let label = typed.outlet_label(outlet).unwrap_or(&n.name);
                    let Some(mine) = known.get(label).and_then(|i| i.shape.clone()) else {
                        continue;
                    };
                    let theirs = o.fact.shape.as_concrete().unwrap().to_vec();
                    for (d, (a, b)) in mine.iter().zip(&theirs).enumerate() {
                        if let Some(a) = a {
                            assert_eq!(
                                *a, *b as u64,
                                "{name}: `{label}` dim {d}: {mine:?} vs {theirs:?}"
                            );
                        }
                    }
                    assert_eq!(mine.len(), theirs.len(), "{name}: `{label}` rank");
                    compared += 1;
                }
            }
        }
        eprintln!("{compared} tensor shapes compared with tract in {} models", files.len());
        assert!(compared > 50, "only {compared} tensors compared");
    }
    /// Random graphs of the ops the pass knows, with extreme shape arguments and attributes:
    /// the pass never panics (also with overflow checks, in a debug build) and always answers.
    #[test]
    fn random_graphs_with_absurd_arguments_never_panic() {
        const OPS: [&str; 30] = [
            "Shape",
            "Gather",
            "Mul",
            "Add",
            "Div",
            "Concat",
            "ConstantOfShape",
            "Expand",
            "Tile",
            "Range",
            "Resize",
            "Pad",
            "Reshape",
            "Unsqueeze",
            "Squeeze",
            "Flatten",
            "Slice",
            "Transpose",
            "Conv",
            "ConvTranspose",
            "MaxPool",
            "AveragePool",
            "MatMul",
            "Gemm",
            "OneHot",
            "Size",
            "Cast",
            "GlobalAveragePool",
            "Upsample",
            "Relu",
        ];
        const EXTREME: [i64; 9] = [i64::MIN, -(1 << 40), -2, -1, 0, 1, 3, 1 << 40, i64::MAX];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for _ in 0..3000 {
            let mut names = vec!["x".to_string()];
            let mut inits = Vec::new();
            for k in 0..3 {
                let n = next(5);
                let v: Vec<i64> = (0..n).map(|_| EXTREME[next(EXTREME.len())]).collect();
                inits.push(i64s(&format!("c{k}"), &v));
                names.push(format!("c{k}"));
            }
            inits.push(f32s("k", &[4], &[1.0, f32::INFINITY, 1e30, -3.0]));
            names.push("k".into());
            let mut nodes = Vec::new();
            for i in 0..1 + next(6) {
                let op = OPS[next(OPS.len())];
                let inputs: Vec<String> =
                    (0..1 + next(4)).map(|_| names[next(names.len())].clone()).collect();
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let pick = |next: &mut dyn FnMut(usize) -> usize| {
                    (0..next(5)).map(|_| EXTREME[next(EXTREME.len())]).collect::<Vec<i64>>()
                };
                let mut attrs = Vec::new();
                for a in ["axis", "start", "end", "group", "ceil_mode", "to", "transB"] {
                    if next(3) == 0 {
                        attrs.push(int(a, EXTREME[next(EXTREME.len())]));
                    }
                }
                for a in ["perm", "pads", "strides", "kernel_shape", "dilations", "axes", "shape"] {
                    if next(3) == 0 {
                        attrs.push(ints(a, &pick(&mut next)));
                    }
                }
                let out = format!("t{i}");
                nodes.push(node(op, &refs, &out, attrs));
                names.push(out);
            }
            let dims: Vec<Option<i64>> = (0..next(5))
                .map(|_| [None, Some(0), Some(1), Some(7), Some(1 << 40)][next(5)])
                .collect();
            let g = graph(nodes, inits, &dims);
            for limit in [0, 1 << 20, u64::MAX] {
                let _ = check(&g, limit);
            }
        }
    }
}
