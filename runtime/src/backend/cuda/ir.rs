//! The slice of hydrant's graph IR the GPU planner reads: a segment's non-constant nodes with
//! their op type, tensors and attributes ([`OpNode`]), detached from the ONNX protobuf so that
//! plans are easy to build and to test.

use crate::graph::OnnxGraph;
use std::collections::{HashMap, HashSet};
use tract_onnx::pb;

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f32),
    /// A string.
    Str(String),
    /// A list of integers.
    Ints(Vec<i64>),
    /// Anything else (tensors, graphs, float lists): named so the planner can refuse it.
    Other,
}

/// A node as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpNode {
    /// The node's name (or its first output when unnamed).
    pub name: String,
    /// ONNX op type, with its domain when not the default one.
    pub op: String,
    /// Input tensor names (empty strings for omitted optional inputs).
    pub inputs: Vec<String>,
    /// Output tensor names.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: Vec<(String, Attr)>,
}

impl OpNode {
    /// A node with no attributes (for plans built by hand).
    pub fn new(op: &str, inputs: &[&str], outputs: &[&str]) -> OpNode {
        OpNode {
            name: outputs.first().map_or(op, |o| o).to_string(),
            op: op.to_string(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: Vec::new(),
        }
    }

    /// The same node with attribute `name` set.
    pub fn with(mut self, name: &str, value: Attr) -> OpNode {
        self.attrs.push((name.to_string(), value));
        self
    }

    /// Attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// Integer attribute `name`, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        match self.attr(name) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }

    /// Float attribute `name`, or `default`.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        match self.attr(name) {
            Some(Attr::Float(v)) => *v,
            _ => default,
        }
    }

    /// String attribute `name`, or `default`.
    pub fn string<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        match self.attr(name) {
            Some(Attr::Str(v)) => v,
            _ => default,
        }
    }

    /// Integer-list attribute `name`.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.attr(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// The planner's view of an ONNX node.
    pub fn from_proto(node: &pb::NodeProto) -> OpNode {
        let op = if node.domain.is_empty() || node.domain == "ai.onnx" {
            node.op_type.clone()
        } else {
            format!("{}:{}", node.domain, node.op_type)
        };
        let attrs = node
            .attribute
            .iter()
            .map(|a| {
                let v = match a.r#type {
                    1 => Attr::Float(a.f),
                    2 => Attr::Int(a.i),
                    3 => Attr::Str(String::from_utf8_lossy(&a.s).into_owned()),
                    7 => Attr::Ints(a.ints.clone()),
                    _ => Attr::Other,
                };
                (a.name.clone(), v)
            })
            .collect();
        let name = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        OpNode { name, op, inputs: node.input.clone(), outputs: node.output.clone(), attrs }
    }
}

/// A segment as the planner sees it: its computing nodes in order, the constant tensors they
/// may read (initializers and constant-node outputs, uploaded or evaluated on the host), and the
/// tensors that must survive the segment (its outputs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SegmentIr {
    /// Non-constant nodes, in topological order.
    pub nodes: Vec<OpNode>,
    /// Constant tensor names.
    pub constants: HashSet<String>,
    /// Tensors other segments or the caller read.
    pub outputs: Vec<String>,
    /// Values of the single-element f32 constants (Clip bounds and the like).
    pub scalars: HashMap<String, f32>,
}

impl SegmentIr {
    /// The segment of `graph` made of `nodes` handing out `outputs`.
    pub fn from_graph(graph: &OnnxGraph, nodes: &[usize], outputs: &[String]) -> SegmentIr {
        let all = graph.nodes();
        SegmentIr {
            nodes: nodes
                .iter()
                .filter(|&&n| !graph.const_node[n])
                .map(|&n| OpNode::from_proto(&all[n]))
                .collect(),
            constants: graph.const_tensors.clone(),
            outputs: outputs.to_vec(),
            scalars: scalars(graph),
        }
    }

    /// How many nodes of the segment read `tensor`, plus one when the segment hands it out.
    pub fn uses(&self, tensor: &str) -> usize {
        let reads = self.nodes.iter().map(|n| n.inputs.iter().filter(|i| *i == tensor).count());
        reads.sum::<usize>() + usize::from(self.outputs.iter().any(|o| o == tensor))
    }
}

/// The value of a one-element f32 tensor stored inline.
fn scalar(t: &pb::TensorProto) -> Option<f32> {
    if t.data_type != 1 || t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    if let Some(&v) = t.float_data.first() {
        return Some(v);
    }
    let b = t.raw_data.get(..4)?;
    Some(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Every one-element f32 initializer and `Constant` output of `graph`.
fn scalars(graph: &OnnxGraph) -> HashMap<String, f32> {
    let mut out = HashMap::new();
    if let Some(g) = graph.proto.graph.as_ref() {
        for t in &g.initializer {
            if let Some(v) = scalar(t) {
                out.insert(t.name.clone(), v);
            }
        }
    }
    for n in graph.nodes().iter().filter(|n| n.op_type == "Constant") {
        let value = n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
        if let (Some(v), Some(name)) = (value.and_then(scalar), n.output.first()) {
            out.insert(name.clone(), v);
        }
    }
    out
}
