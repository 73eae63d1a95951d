//! Writing layer lists as ONNX: a trainable head (and a layer-stack trunk) becomes ONNX nodes
//! and initializers, so that tract runs it exactly as it runs exported heads.

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorData};
use crate::train::spec::{LayerSpec, UpsampleMode};
use crate::train::trunk::{Trunk, TrunkLayer};
use crate::train::Head;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;

/// The opset the nodes are written for.
pub const OPSET: i64 = 17;

/// ONNX nodes and initializers under construction, for a given opset.
#[derive(Debug)]
pub(crate) struct Nodes {
    pub nodes: Vec<pb::NodeProto>,
    pub initializers: Vec<pb::TensorProto>,
    pub opset: i64,
}

fn attr(name: &str, t: AttributeType) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: t as i32, ..Default::default() }
}
fn int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto { i, ..attr(name, AttributeType::Int) }
}
fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { ints: v.to_vec(), ..attr(name, AttributeType::Ints) }
}
fn float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto { f, ..attr(name, AttributeType::Float) }
}
fn string(name: &str, s: &str) -> pb::AttributeProto {
    pb::AttributeProto { s: s.as_bytes().to_vec(), ..attr(name, AttributeType::String) }
}

/// An ONNX initializer holding `t` (f32 or i64).
pub(crate) fn tensor_proto(name: &str, t: &Tensor) -> Result<pb::TensorProto> {
    use pb::tensor_proto::DataType as D;
    let (data_type, raw_data): (D, Vec<u8>) = match t.data() {
        TensorData::F32(v) => (D::Float, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::I64(v) => (D::Int64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "initializer `{name}`: {} is not written to ONNX",
                t.dtype()
            )))
        }
    };
    Ok(pb::TensorProto {
        name: name.into(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    })
}

impl Nodes {
    fn node(
        &mut self,
        op: &str,
        name: String,
        inputs: &[&str],
        output: &str,
        attribute: Vec<pb::AttributeProto>,
    ) {
        self.nodes.push(pb::NodeProto {
            name,
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute,
            ..Default::default()
        });
    }

    fn constant(&mut self, name: &str, t: &Tensor) -> Result<String> {
        self.initializers.push(tensor_proto(name, t)?);
        Ok(name.to_string())
    }

    fn scalar(&mut self, name: &str, v: f32) -> Result<String> {
        self.constant(name, &Tensor::new::<f32>(&[], vec![v])?)
    }

    /// Appends `layer` reading `x` and writing `y`. `param(name)` gives the layer's tensors;
    /// `tag` prefixes node names and `pname(name)` names initializers.
    pub fn layer(
        &mut self,
        layer: &LayerSpec,
        x: &str,
        y: &str,
        tag: &str,
        param: &dyn Fn(&str) -> Result<Tensor>,
        pname: &dyn Fn(&str) -> String,
    ) -> Result<()> {
        let n = |op: &str| format!("{tag}/{op}");
        match *layer {
            LayerSpec::Linear { bias, .. } => {
                // x·Wᵀ (+ b) on the last axis, for inputs of any rank (Gemm takes only 2-D).
                let w = self.constant(&pname("weight"), &param("weight")?)?;
                let wt = format!("{tag}/weight_t");
                self.node("Transpose", n("Transpose"), &[&w], &wt, vec![ints("perm", &[1, 0])]);
                if bias {
                    let b = self.constant(&pname("bias"), &param("bias")?)?;
                    let xw = format!("{tag}/matmul");
                    self.node("MatMul", n("MatMul"), &[x, &wt], &xw, vec![]);
                    self.node("Add", n("Add"), &[&xw, &b], y, vec![]);
                } else {
                    self.node("MatMul", n("MatMul"), &[x, &wt], y, vec![]);
                }
            }
            LayerSpec::Conv2d {
                kernel_size: k,
                stride,
                padding: p,
                dilation,
                groups,
                bias,
                ..
            } => {
                let w = self.constant(&pname("weight"), &param("weight")?)?;
                let b =
                    if bias { Some(self.constant(&pname("bias"), &param("bias")?)?) } else { None };
                let mut inputs = vec![x, w.as_str()];
                if let Some(b) = &b {
                    inputs.push(b);
                }
                let (k, s, p, d) = (k as i64, stride as i64, p as i64, dilation as i64);
                let attrs = vec![
                    ints("kernel_shape", &[k, k]),
                    ints("strides", &[s, s]),
                    ints("pads", &[p, p, p, p]),
                    ints("dilations", &[d, d]),
                    int("group", groups as i64),
                ];
                self.node("Conv", n("Conv"), &inputs, y, attrs);
            }
            LayerSpec::BatchNorm2d { eps, momentum, .. } => {
                let names = ["weight", "bias", "running_mean", "running_var"];
                let c: Vec<String> = names
                    .iter()
                    .map(|p| self.constant(&pname(p), &param(p)?))
                    .collect::<Result<_>>()?;
                let inputs = [x, &c[0], &c[1], &c[2], &c[3]];
                let attrs = vec![float("epsilon", eps), float("momentum", 1.0 - momentum)];
                self.node("BatchNormalization", n("BatchNormalization"), &inputs, y, attrs);
            }
            LayerSpec::LayerNorm { eps, .. } => {
                let g = self.constant(&pname("weight"), &param("weight")?)?;
                let b = self.constant(&pname("bias"), &param("bias")?)?;
                let attrs = vec![int("axis", -1), float("epsilon", eps)];
                self.node("LayerNormalization", n("LayerNormalization"), &[x, &g, &b], y, attrs);
            }
            LayerSpec::Relu => self.node("Relu", n("Relu"), &[x], y, vec![]),
            LayerSpec::LeakyRelu { negative_slope } => self.node(
                "LeakyRelu",
                n("LeakyRelu"),
                &[x],
                y,
                vec![float("alpha", negative_slope)],
            ),
            LayerSpec::Sigmoid => self.node("Sigmoid", n("Sigmoid"), &[x], y, vec![]),
            LayerSpec::Tanh => self.node("Tanh", n("Tanh"), &[x], y, vec![]),
            LayerSpec::Silu => {
                let s = format!("{tag}/sigmoid");
                self.node("Sigmoid", n("Sigmoid"), &[x], &s, vec![]);
                self.node("Mul", n("Mul"), &[x, &s], y, vec![]);
            }
            LayerSpec::Gelu => {
                // 0.5·x·(1 + erf(x/√2)), as PyTorch exports it below opset 20.
                let (d, e, a, m) = (
                    format!("{tag}/div"),
                    format!("{tag}/erf"),
                    format!("{tag}/add"),
                    format!("{tag}/mul"),
                );
                let sqrt2 = self.scalar(&format!("{tag}/sqrt2"), std::f32::consts::SQRT_2)?;
                let one = self.scalar(&format!("{tag}/one"), 1.0)?;
                let half = self.scalar(&format!("{tag}/half"), 0.5)?;
                self.node("Div", n("Div"), &[x, &sqrt2], &d, vec![]);
                self.node("Erf", n("Erf"), &[&d], &e, vec![]);
                self.node("Add", n("Add"), &[&e, &one], &a, vec![]);
                self.node("Mul", n("Mul"), &[x, &a], &m, vec![]);
                self.node("Mul", n("Mul_1"), &[&m, &half], y, vec![]);
            }
            LayerSpec::Dropout { .. } => self.node("Identity", n("Identity"), &[x], y, vec![]),
            LayerSpec::Flatten => self.node("Flatten", n("Flatten"), &[x], y, vec![int("axis", 1)]),
            LayerSpec::GlobalAvgPool { keep_dims: true } => {
                self.node("GlobalAveragePool", n("GlobalAveragePool"), &[x], y, vec![]);
            }
            LayerSpec::GlobalAvgPool { keep_dims: false } => {
                // `x.mean((2, 3))`, as PyTorch writes it (axes became an input in opset 18).
                let keep = int("keepdims", 0);
                if self.opset >= 18 {
                    let axes = self
                        .constant(&format!("{tag}/axes"), &Tensor::new::<i64>(&[2], vec![2, 3])?)?;
                    self.node("ReduceMean", n("ReduceMean"), &[x, &axes], y, vec![keep]);
                } else {
                    self.node(
                        "ReduceMean",
                        n("ReduceMean"),
                        &[x],
                        y,
                        vec![ints("axes", &[2, 3]), keep],
                    );
                }
            }
            LayerSpec::MaxPool2d { kernel_size: k, stride, padding: p } => {
                let (k, s, p) = (k as i64, stride.unwrap_or(k) as i64, p as i64);
                let attrs = vec![
                    ints("kernel_shape", &[k, k]),
                    ints("strides", &[s, s]),
                    ints("pads", &[p, p, p, p]),
                ];
                self.node("MaxPool", n("MaxPool"), &[x], y, attrs);
            }
            LayerSpec::Upsample2x { mode } => {
                let scales = self.constant(
                    &format!("{tag}/scales"),
                    &Tensor::new::<f32>(&[4], vec![1.0, 1.0, 2.0, 2.0])?,
                )?;
                let attrs = match mode {
                    UpsampleMode::Nearest => vec![
                        string("mode", "nearest"),
                        string("coordinate_transformation_mode", "asymmetric"),
                        string("nearest_mode", "floor"),
                    ],
                    UpsampleMode::Bilinear => vec![
                        string("mode", "linear"),
                        string("coordinate_transformation_mode", "pytorch_half_pixel"),
                    ],
                };
                self.node("Resize", n("Resize"), &[x, "", &scales], y, attrs);
            }
            LayerSpec::Softmax { dim } => {
                self.node("Softmax", n("Softmax"), &[x], y, vec![int("axis", dim)])
            }
        }
        Ok(())
    }
}

/// The nodes and initializers of `head`, for `opset`: it reads its input tensor and writes its output tensor;
/// initializers carry the head's `state_dict` names (`<head>.<layer>.<param>`).
pub(crate) fn head_nodes(head: &Head, opset: i64) -> Result<Nodes> {
    let spec = head.spec();
    let mut out = Nodes { nodes: Vec::new(), initializers: Vec::new(), opset };
    let mut x = spec.input().to_string();
    let last = spec.layers.len() - 1;
    for (i, layer) in spec.layers.iter().enumerate() {
        let y =
            if i == last { spec.output().to_string() } else { format!("{}/{i}/out", spec.name) };
        let param = |p: &str| {
            head.tensor(&format!("{i}.{p}")).cloned().ok_or_else(|| {
                Error::InvalidModel(format!("head `{}`: no tensor `{i}.{p}`", spec.name))
            })
        };
        let pname = |p: &str| format!("{}.{i}.{p}", spec.name);
        out.layer(layer, &x, &y, &format!("{}/{i}", spec.name), &param, &pname)?;
        x = y;
    }
    Ok(out)
}

/// A stand-alone ONNX model computing `head` from its input.
pub(crate) fn head_model(head: &Head) -> Result<pb::ModelProto> {
    let Nodes { nodes, initializers, .. } = head_nodes(head, OPSET)?;
    let spec = head.spec();
    let vi = |n: &str| pb::ValueInfoProto { name: n.to_string(), ..Default::default() };
    Ok(pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        graph: Some(pb::GraphProto {
            name: spec.name.clone(),
            node: nodes,
            initializer: initializers,
            input: vec![vi(spec.input())],
            output: vec![vi(spec.output())],
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Appends `list` reading `x`; the last layer writes `y`. Intermediate tensors are named
/// `{tag}/{j}`; layer `j`'s tensors are `trunk.{key(j)}{param}`.
fn chain(
    out: &mut Nodes,
    list: &[LayerSpec],
    x: &str,
    y: &str,
    tag: &str,
    key: &dyn Fn(usize) -> String,
    trunk: &Trunk,
) -> Result<()> {
    let mut cur = x.to_string();
    for (j, layer) in list.iter().enumerate() {
        let next = if j + 1 == list.len() { y.to_string() } else { format!("{tag}/{j}") };
        let k = key(j);
        let param = |p: &str| {
            trunk
                .tensor(&format!("{k}{p}"))
                .cloned()
                .ok_or_else(|| Error::InvalidModel(format!("trunk: no tensor `trunk.{k}{p}`")))
        };
        let pname = |p: &str| format!("trunk.{k}{p}");
        out.layer(layer, &cur, &next, &format!("{tag}/{j}"), &param, &pname)?;
        cur = next;
    }
    Ok(())
}

/// A whole model as ONNX: the trunk (input `[N, …]`, f32) and every head reading one of its
/// tensors, the heads' outputs being the graph's outputs.
pub(crate) fn model_from_parts(trunk: &Trunk, heads: &[Head]) -> Result<pb::ModelProto> {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let spec = trunk.spec();
    let mut out = Nodes { nodes: Vec::new(), initializers: Vec::new(), opset: OPSET };
    let mut x = spec.input.clone();
    for (i, layer) in spec.layers.iter().enumerate() {
        let y = spec.tensor_name(i);
        let tag = format!("trunk/{i}");
        match layer {
            TrunkLayer::Layer(l) => {
                chain(&mut out, std::slice::from_ref(l), &x, &y, &tag, &|_| format!("{i}."), trunk)?
            }
            TrunkLayer::Residual(r) => {
                let body = format!("{tag}/body");
                chain(&mut out, &r.body, &x, &body, &body, &|j| format!("{i}.body.{j}."), trunk)?;
                let skip = if r.shortcut.is_empty() {
                    x.clone()
                } else {
                    let s = format!("{tag}/shortcut");
                    chain(
                        &mut out,
                        &r.shortcut,
                        &x,
                        &s,
                        &s,
                        &|j| format!("{i}.shortcut.{j}."),
                        trunk,
                    )?;
                    s
                };
                match &r.activation {
                    Some(a) => {
                        let sum = format!("{tag}/sum");
                        out.node("Add", format!("{tag}/Add"), &[&body, &skip], &sum, vec![]);
                        chain(
                            &mut out,
                            std::slice::from_ref(a),
                            &sum,
                            &y,
                            &format!("{tag}/act"),
                            &|_| format!("{i}.act."),
                            trunk,
                        )?;
                    }
                    None => out.node("Add", format!("{tag}/Add"), &[&body, &skip], &y, vec![]),
                }
            }
        }
        x = y;
    }
    let readable = spec.tensor_names();
    for h in heads {
        if !readable.iter().any(|t| t == h.spec().input()) {
            return Err(Error::InvalidModel(format!(
                "head `{}` reads `{}`, which the trunk does not have (it has: {})",
                h.name(),
                h.spec().input(),
                readable.join(", ")
            )));
        }
        let built = head_nodes(h, OPSET)?;
        out.nodes.extend(built.nodes);
        out.initializers.extend(built.initializers);
    }
    let float = |dims: Option<Vec<Dimension>>| pb::TypeProto {
        denotation: String::new(),
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: pb::tensor_proto::DataType::Float as i32,
            shape: dims.map(|dim| pb::TensorShapeProto { dim }),
        })),
    };
    let dim = |v: Value| Dimension { denotation: String::new(), value: Some(v) };
    let input_dims = std::iter::once(dim(Value::DimParam("N".into())))
        .chain(spec.input_shape.iter().map(|&d| dim(Value::DimValue(d as i64))))
        .collect();
    let vi = |name: &str, t| pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(t),
        ..Default::default()
    };
    Ok(pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "hydrant".into(),
        graph: Some(pb::GraphProto {
            name: "hydrant".into(),
            node: out.nodes,
            initializer: out.initializers,
            input: vec![vi(&spec.input, float(Some(input_dims)))],
            output: heads.iter().map(|h| vi(h.spec().output(), float(None))).collect(),
            ..Default::default()
        }),
        ..Default::default()
    })
}
