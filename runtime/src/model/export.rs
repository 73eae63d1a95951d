//! Writing a model back to ONNX with its current heads: heads swapped in replace the file's
//! nodes for them, heads added become new graph outputs, and constants nothing reads any more
//! are dropped. The result loads in hydrant (and any ONNX runtime) and computes what the model
//! computes now.

use super::layout::HeadSource;
use super::Model;
use crate::error::{Error, Result};
use crate::graph::build;
use crate::train::spec::LayerSpec;
use prost::Message;
use std::collections::HashSet;
use std::path::Path;
use tract_onnx::pb;

impl Model {
    /// The model as ONNX bytes, with every head as it is now.
    pub fn to_onnx(&self) -> Result<Vec<u8>> {
        let layout = self.layout();
        let mut proto = self.graph.proto.clone();
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version);
        let graph = proto.graph.as_mut().ok_or_else(|| Error::InvalidModel("no graph".into()))?;
        let mut drop_nodes: HashSet<usize> = HashSet::new();
        let mut new_nodes = Vec::new();
        let mut new_inits = Vec::new();
        for slot in &layout.heads {
            let HeadSource::Layers(head) = &slot.source else { continue };
            let needed =
                if head.spec().layers.iter().any(|l| matches!(l, LayerSpec::LayerNorm { .. })) {
                    17
                } else {
                    13
                };
            if opset < needed {
                return Err(Error::InvalidArgument(format!(
                    "head `{}` needs ONNX opset {needed}; the model is opset {opset}",
                    slot.part.name
                )));
            }
            if let Some(orig) = self.base_split.heads.iter().find(|h| h.name == slot.part.name) {
                drop_nodes.extend(orig.nodes.iter().copied());
            } else {
                graph.output.push(output_info(&slot.part.outputs[0]));
            }
            let built = build::head_nodes(head, opset)?;
            new_nodes.extend(built.nodes);
            new_inits.extend(built.initializers);
        }
        let kept: Vec<pb::NodeProto> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop_nodes.contains(i))
            .map(|(_, n)| n.clone())
            .collect();
        // Names the new nodes use must not collide with what the file already has.
        let mut taken: HashSet<String> =
            kept.iter().flat_map(|n| n.output.iter().cloned()).collect();
        taken.extend(kept.iter().map(|n| n.name.clone()));
        taken.extend(graph.initializer.iter().map(|t| t.name.clone()));
        for n in &new_nodes {
            if let Some(c) = n
                .output
                .iter()
                .chain([&n.name])
                .find(|t| taken.contains(*t) && !graph.output.iter().any(|o| &o.name == *t))
            {
                return Err(Error::InvalidArgument(format!(
                    "cannot write the heads: `{c}` is already a name in the model"
                )));
            }
        }
        if let Some(c) = new_inits.iter().find(|t| taken.contains(&t.name)) {
            return Err(Error::InvalidArgument(format!(
                "cannot write the heads: `{}` is already a name in the model",
                c.name
            )));
        }
        for o in graph.output.iter_mut() {
            if layout.heads.iter().any(|h| {
                matches!(h.source, HeadSource::Layers(_)) && h.part.outputs.contains(&o.name)
            }) {
                *o = output_info(&o.name);
            }
        }
        graph.node = kept;
        graph.node.extend(new_nodes);
        graph.initializer.extend(new_inits);
        prune(graph);
        let mut bytes = Vec::with_capacity(proto.encoded_len());
        proto
            .encode(&mut bytes)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode ONNX: {e}")))?;
        Ok(bytes)
    }

    /// Writes [`Model::to_onnx`] to `path` atomically.
    pub fn save_onnx(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::fsutil::write_atomic(path.as_ref(), &self.to_onnx()?)
    }
}

fn output_info(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: None,
            })),
        }),
        ..Default::default()
    }
}

/// Drops nodes whose outputs nothing reads and that are not graph outputs (constants of removed
/// heads), then initializers nothing reads, until nothing changes.
fn prune(graph: &mut pb::GraphProto) {
    loop {
        let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let read: HashSet<String> = graph.node.iter().flat_map(crate::graph::all_inputs).collect();
        let before = graph.node.len();
        graph
            .node
            .retain(|n| n.output.iter().any(|o| read.contains(o) || outputs.contains(o.as_str())));
        if graph.node.len() == before {
            break;
        }
    }
    let read: HashSet<String> = graph.node.iter().flat_map(crate::graph::all_inputs).collect();
    graph.initializer.retain(|t| read.contains(&t.name));
}
