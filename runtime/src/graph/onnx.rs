//! Loading an ONNX model into an indexed, validated graph.
//!
//! Validation here is structural (every tensor produced once, every input produced somewhere, no
//! cycles, every op known to the engine); numerical validation happens when a segment is planned.

use super::limits;
use crate::error::{Error, Result};
use crate::tensor::{DType, MAX_RANK};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

/// One dimension of a declared input shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size, such as the batch dimension `N`.
    Symbolic(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// A declared graph input: name, element type and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, with symbolic dimensions named.
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// The shape written as `[N, 3, 32, 32]`.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// A loaded ONNX model with the indices the split and the backends need.
#[derive(Debug, Clone)]
pub struct OnnxGraph {
    /// The model as parsed, nodes in a valid topological order.
    pub(crate) proto: pb::ModelProto,
    /// Folder that external tensor data is resolved against.
    pub(crate) model_dir: Option<PathBuf>,
    /// Real inputs (graph inputs that are not initializers).
    pub(crate) inputs: Vec<TensorSpec>,
    /// Graph output tensor names, in order.
    pub(crate) outputs: Vec<String>,
    /// Per node: true when it computes a constant (no dependence on any real input).
    pub(crate) const_node: Vec<bool>,
    /// Initializer names and outputs of constant nodes.
    pub(crate) const_tensors: HashSet<String>,
    /// Which node produces each non-initializer tensor.
    pub(crate) producer: HashMap<String, usize>,
    /// Per node: every tensor it reads, including names its sub-graphs capture from outside.
    pub(crate) node_inputs: Vec<Vec<String>>,
    /// The memory limit the model was loaded under: the largest tensor any node may create
    /// ([`bounds`](super::bounds), checked at load and again per plan).
    pub(crate) max_bytes: u64,
}

impl OnnxGraph {
    /// Reads and validates an ONNX file.
    pub fn load(path: &Path) -> Result<OnnxGraph> {
        OnnxGraph::load_limited(path, limits::DEFAULT_MAX_BYTES)
    }

    /// [`OnnxGraph::load`] with a budget for the bytes the model's tensors declare.
    pub fn load_limited(path: &Path, max_bytes: u64) -> Result<OnnxGraph> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let dir = path.parent().map(Path::to_path_buf);
        OnnxGraph::from_bytes_limited(&bytes, dir, max_bytes).map_err(|e| match e {
            Error::InvalidModel(m) => Error::InvalidModel(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses and validates ONNX bytes; `model_dir` resolves external tensor data.
    pub fn from_bytes(bytes: &[u8], model_dir: Option<PathBuf>) -> Result<OnnxGraph> {
        OnnxGraph::from_bytes_limited(bytes, model_dir, limits::DEFAULT_MAX_BYTES)
    }

    /// [`OnnxGraph::from_bytes`] with a budget for the bytes the model's tensors declare.
    pub fn from_bytes_limited(
        bytes: &[u8],
        model_dir: Option<PathBuf>,
        max_bytes: u64,
    ) -> Result<OnnxGraph> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| Error::InvalidModel(format!("not an ONNX protobuf ({e})")))?;
        if let Some(g) = proto.graph.as_ref() {
            limits::check_model(g, model_dir.as_deref(), max_bytes)?;
        }
        let mut graph = OnnxGraph::from_proto(proto, model_dir)?;
        graph.max_bytes = max_bytes;
        if let Some(g) = graph.proto.graph.as_ref() {
            super::bounds::check(g, max_bytes)?;
        }
        Ok(graph)
    }

    /// Validates a parsed model and builds the indices.
    pub(crate) fn from_proto(
        mut proto: pb::ModelProto,
        model_dir: Option<PathBuf>,
    ) -> Result<OnnxGraph> {
        let graph = proto.graph.as_mut().ok_or_else(|| Error::InvalidModel("no graph".into()))?;
        let mut initializers: HashSet<String> = HashSet::new();
        for t in &graph.initializer {
            if !initializers.insert(t.name.clone()) {
                return Err(Error::InvalidModel(format!(
                    "initializer `{}` is listed twice",
                    t.name
                )));
            }
        }
        let mut input_names: HashSet<&str> = HashSet::new();
        for i in graph.input.iter().filter(|i| !initializers.contains(&i.name)) {
            if !input_names.insert(&i.name) {
                return Err(Error::InvalidModel(format!(
                    "graph input `{}` is listed twice",
                    i.name
                )));
            }
        }
        let inputs = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(&i.name))
            .map(input_spec)
            .collect::<Result<Vec<_>>>()?;
        let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        if outputs.is_empty() {
            return Err(Error::InvalidModel("the graph has no outputs".into()));
        }
        name_nodes(&mut graph.node);
        check_ops(&graph.node)?;
        let node_inputs: Vec<Vec<String>> = graph.node.iter().map(all_inputs).collect();
        let order = topological_order(graph, &node_inputs, &inputs, &initializers)?;
        let nodes = std::mem::take(&mut graph.node);
        let mut slots: Vec<Option<pb::NodeProto>> = nodes.into_iter().map(Some).collect();
        graph.node = order.iter().map(|&i| slots[i].take().expect("each index once")).collect();
        let node_inputs: Vec<Vec<String>> = order.iter().map(|&i| node_inputs[i].clone()).collect();

        let mut producer = HashMap::new();
        for (ix, node) in graph.node.iter().enumerate() {
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                producer.insert(out.clone(), ix);
            }
        }
        let mut const_tensors = initializers.clone();
        let mut const_node = vec![false; graph.node.len()];
        for (ix, node) in graph.node.iter().enumerate() {
            let is_const = node.op_type == "Constant"
                || (!node_inputs[ix].is_empty()
                    && !node.op_type.starts_with("Random")
                    && node_inputs[ix].iter().all(|i| const_tensors.contains(i)));
            if is_const {
                const_node[ix] = true;
                const_tensors.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
            }
        }
        for out in &outputs {
            if !producer.contains_key(out) && !inputs.iter().any(|i| &i.name == out) {
                return Err(Error::InvalidModel(format!("output `{out}` is produced by no node")));
            }
        }
        Ok(OnnxGraph {
            proto,
            model_dir,
            inputs,
            outputs,
            const_node,
            const_tensors,
            producer,
            node_inputs,
            max_bytes: limits::DEFAULT_MAX_BYTES,
        })
    }

    /// The graph's nodes, in topological order.
    pub(crate) fn nodes(&self) -> &[pb::NodeProto] {
        &self.proto.graph.as_ref().expect("validated at load").node
    }

    /// The real (non-initializer) inputs.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// The output tensor names.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// True when `name` is a tensor of the graph (input, initializer or node output).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.producer.contains_key(name)
            || self.const_tensors.contains(name)
            || self.inputs.iter().any(|i| i.name == name)
    }

    /// Number of parameters (elements of initializers) used by the given nodes, through constant
    /// nodes too.
    pub(crate) fn param_count(&self, nodes: &[usize]) -> u64 {
        let graph = self.proto.graph.as_ref().expect("validated at load");
        let sizes: HashMap<&str, u64> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t.dims.iter().map(|&d| d.max(0) as u64).product()))
            .collect();
        let mut seen = HashSet::new();
        let mut stack: Vec<&String> =
            nodes.iter().flat_map(|&n| self.node_inputs[n].iter()).collect();
        let mut total = 0;
        while let Some(t) = stack.pop() {
            if !seen.insert(t.as_str()) {
                continue;
            }
            if let Some(&size) = sizes.get(t.as_str()) {
                // Small integer tensors (shapes, axes) are not parameters.
                if is_float_initializer(graph, t) {
                    total += size;
                }
            } else if let Some(&p) = self.producer.get(t) {
                if self.const_node[p] {
                    stack.extend(self.node_inputs[p].iter());
                }
            }
        }
        total
    }
}

fn is_float_initializer(graph: &pb::GraphProto, name: &str) -> bool {
    use pb::tensor_proto::DataType as D;
    graph.initializer.iter().find(|t| t.name == name).is_some_and(|t| {
        [D::Float, D::Float16, D::Double, D::Bfloat16].iter().any(|d| *d as i32 == t.data_type)
    })
}

/// Gives every node a unique, non-empty name (the exporter's when it has one).
fn name_nodes(nodes: &mut [pb::NodeProto]) {
    let mut seen = HashSet::new();
    for (ix, node) in nodes.iter_mut().enumerate() {
        if node.name.is_empty() || seen.contains(&node.name) {
            let base = if node.name.is_empty() {
                format!("{}_{ix}", node.op_type)
            } else {
                format!("{}_{ix}", node.name)
            };
            node.name = base;
        }
        seen.insert(node.name.clone());
    }
}

fn check_ops(nodes: &[pb::NodeProto]) -> Result<()> {
    let onnx = tract_onnx::onnx();
    for node in nodes {
        let known = onnx.op_register.0.contains_key(&node.op_type)
            && matches!(node.domain.as_str(), "" | "ai.onnx");
        if !known {
            let op_type = if node.domain.is_empty() {
                node.op_type.clone()
            } else {
                format!("{}:{}", node.domain, node.op_type)
            };
            return Err(Error::UnsupportedOp { node: node.name.clone(), op_type });
        }
    }
    Ok(())
}

fn input_spec(vi: &pb::ValueInfoProto) -> Result<TensorSpec> {
    let bad = |why: &str| Error::InvalidModel(format!("graph input `{}`: {why}", vi.name));
    let Some(pb::type_proto::Value::TensorType(t)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad("has no tensor type"));
    };
    let dtype = dtype_from_onnx(t.elem_type)
        .ok_or_else(|| bad(&format!("unsupported element type {}", t.elem_type)))?;
    let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
    if dims.len() > MAX_RANK {
        return Err(bad(&format!("rank {} exceeds the maximum of {MAX_RANK}", dims.len())));
    }
    let shape = dims
        .iter()
        .enumerate()
        .map(|(ix, d)| {
            use pb::tensor_shape_proto::dimension::Value;
            match &d.value {
                Some(Value::DimValue(v)) if *v >= 0 => Ok(Dim::Fixed(*v as usize)),
                Some(Value::DimValue(v)) => Err(bad(&format!("negative dimension {v}"))),
                Some(Value::DimParam(p)) if !p.is_empty() => Ok(Dim::Symbolic(p.clone())),
                _ => Ok(Dim::Symbolic(format!("d{ix}"))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TensorSpec { name: vi.name.clone(), dtype, shape })
}

/// Maps an ONNX `TensorProto.DataType` code to a [`DType`].
pub(crate) fn dtype_from_onnx(code: i32) -> Option<DType> {
    use pb::tensor_proto::DataType as D;
    let d = D::try_from(code).ok()?;
    Some(match d {
        D::Float => DType::F32,
        D::Double => DType::F64,
        D::Float16 => DType::F16,
        D::Bfloat16 => DType::BF16,
        D::Uint8 => DType::U8,
        D::Int8 => DType::I8,
        D::Int32 => DType::I32,
        D::Int64 => DType::I64,
        D::Bool => DType::Bool,
        _ => return None,
    })
}

/// Maps a [`DType`] to its ONNX `TensorProto.DataType` code.
pub(crate) fn dtype_to_onnx(dtype: DType) -> i32 {
    use pb::tensor_proto::DataType as D;
    (match dtype {
        DType::F32 => D::Float,
        DType::F64 => D::Double,
        DType::F16 => D::Float16,
        DType::BF16 => D::Bfloat16,
        DType::U8 => D::Uint8,
        DType::I8 => D::Int8,
        DType::I32 => D::Int32,
        DType::I64 => D::Int64,
        DType::Bool => D::Bool,
    }) as i32
}

/// Every tensor a node reads: its inputs, and outer names that its sub-graphs (If, Loop, Scan) use.
pub(crate) fn all_inputs(node: &pb::NodeProto) -> Vec<String> {
    let mut names: Vec<String> = node.input.iter().filter(|i| !i.is_empty()).cloned().collect();
    for attr in &node.attribute {
        for g in attr.g.iter().chain(attr.graphs.iter()) {
            for outer in captured_names(g) {
                if !names.contains(&outer) {
                    names.push(outer);
                }
            }
        }
    }
    names
}

/// Names a sub-graph reads that it neither defines nor receives as inputs.
fn captured_names(g: &pb::GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let mut out = Vec::new();
    for n in &g.node {
        for i in all_inputs(n) {
            if !defined.contains(i.as_str()) && !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

/// A topological order of the nodes (stable: the file's order when it is already one).
fn topological_order(
    graph: &pb::GraphProto,
    node_inputs: &[Vec<String>],
    inputs: &[TensorSpec],
    initializers: &HashSet<String>,
) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (ix, node) in graph.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if initializers.contains(out) || inputs.iter().any(|i| &i.name == out) {
                return Err(Error::InvalidModel(format!(
                    "node `{}` writes `{out}`, which is a graph input or initializer",
                    node.name
                )));
            }
            if let Some(prev) = producer.insert(out, ix) {
                return Err(Error::InvalidModel(format!(
                    "tensor `{out}` is produced by both `{}` and `{}`",
                    graph.node[prev].name, node.name
                )));
            }
        }
    }
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(graph.node.len());
    for (ix, names) in node_inputs.iter().enumerate() {
        let mut d = Vec::new();
        for name in names {
            if let Some(&p) = producer.get(name.as_str()) {
                d.push(p);
            } else if !initializers.contains(name) && !inputs.iter().any(|i| &i.name == name) {
                return Err(Error::InvalidModel(format!(
                    "node `{}` reads `{name}`, which no node, input or initializer provides",
                    graph.node[ix].name
                )));
            }
        }
        deps.push(d);
    }
    // Depth-first post-order with an explicit stack (graphs can be deep: no recursion).
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; graph.node.len()];
    let mut order = Vec::with_capacity(graph.node.len());
    for root in 0..graph.node.len() {
        if mark[root] != Mark::New {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        mark[root] = Mark::Open;
        while let Some(&mut (n, ref mut next)) = stack.last_mut() {
            if let Some(&d) = deps[n].get(*next) {
                *next += 1;
                match mark[d] {
                    Mark::New => {
                        mark[d] = Mark::Open;
                        stack.push((d, 0));
                    }
                    Mark::Open => {
                        return Err(Error::InvalidModel(format!(
                            "the graph has a cycle through node `{}`",
                            graph.node[d].name
                        )))
                    }
                    Mark::Done => {}
                }
            } else {
                mark[n] = Mark::Done;
                order.push(n);
                stack.pop();
            }
        }
    }
    Ok(order)
}
