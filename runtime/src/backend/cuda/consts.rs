//! Constant tensors of a graph read on the host, for the GPU plan (weights, biases, shapes).

use crate::error::{Error, Result};
use crate::graph::OnnxGraph;
use std::collections::HashMap;

/// A constant tensor on the host; `f64` holds every f32 and every integer a shape needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConst {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values.
    pub values: Vec<f64>,
}

impl HostConst {
    /// Its values as f32.
    pub fn f32s(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }
}

/// The values of the constant tensors `names` of `graph` (initializers and `Constant` nodes).
pub fn constants(graph: &OnnxGraph, names: &[&str]) -> Result<HashMap<String, HostConst>> {
    let g = graph.proto.graph.as_ref().ok_or_else(|| Error::InvalidModel("no graph".into()))?;
    let onnx = tract_onnx::onnx();
    let dir = graph.model_dir.as_ref().and_then(|d| d.to_str());
    let mut out = HashMap::new();
    for &name in names {
        let proto = g.initializer.iter().find(|t| t.name == name).or_else(|| {
            let &p = graph.producer.get(name)?;
            let node = &graph.nodes()[p];
            (node.op_type == "Constant")
                .then(|| node.attribute.iter().find(|a| a.name == "value")?.t.as_ref())?
        });
        let Some(proto) = proto else { continue };
        let t = tract_onnx::tensor::load_tensor(&*onnx.provider, proto, dir)
            .and_then(|t| t.cast_to::<f64>().map(|c| c.into_owned()))
            .map_err(|e| Error::InvalidModel(format!("constant `{name}`: {e}")))?;
        let values =
            t.try_as_plain_ram().ok().and_then(|r| r.as_slice::<f64>().ok()).map(<[f64]>::to_vec);
        let values =
            values.ok_or_else(|| Error::InvalidModel(format!("constant `{name}` unreadable")))?;
        out.insert(name.to_string(), HostConst { shape: t.shape().to_vec(), values });
    }
    Ok(out)
}
