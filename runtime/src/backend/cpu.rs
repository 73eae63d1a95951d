//! The CPU backend: one tract plan per segment and concrete input shape.
//!
//! A segment is compiled from its own small ONNX graph (cut at ONNX tensor names, *before* tract's
//! declutter and optimize passes), then optimized on its own. Plans are specialised to concrete
//! input shapes and cached: a plan with a symbolic batch dimension runs about 2× slower in tract.

use super::cpu_ops;
use crate::error::{Error, Result};
use crate::graph::{split, OnnxGraph};
use crate::tensor::{DType, Tensor, TensorData};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tract_onnx::pb;
use tract_onnx::prelude::{
    tvec, Datum, InferenceModelExt, IntoRunnable, IntoTValue, TValue, TVec, Tensor as TractTensor,
    TypedFact, TypedModel, TypedRunnableModel,
};

/// Element type and concrete shape of one segment input.
pub(crate) type Fact = (DType, Vec<usize>);

/// What a plan is cached by: its input facts.
type PlanKey = Vec<Fact>;

/// A segment compiled for the CPU.
pub(crate) struct CpuSegment {
    /// Name used in messages (`trunk[cls,box]`, `head seg`).
    pub name: String,
    /// Tensors the segment reads from outside.
    pub inputs: Vec<String>,
    /// Tensors the segment hands to other segments or to the caller.
    pub outputs: Vec<String>,
    proto: pb::ModelProto,
    model_dir: Option<PathBuf>,
    /// Whether hydrant's own ops replace tract's where they apply (see [`cpu_ops`]).
    own_ops: bool,
    /// The largest tensor a node may create, checked per plan before tract sees the graph.
    max_bytes: u64,
    /// Optimized plans by input facts.
    plans: Mutex<HashMap<PlanKey, Arc<TypedRunnableModel>>>,
}

impl std::fmt::Debug for CpuSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuSegment").field("name", &self.name).finish_non_exhaustive()
    }
}

impl CpuSegment {
    /// Extracts `nodes` (and the constants they use) from `graph` as a stand-alone ONNX graph.
    /// `own_ops`: hydrant's own CPU kernels replace tract's where they apply.
    pub fn new(graph: &OnnxGraph, nodes: &[usize], name: String, own_ops: bool) -> CpuSegment {
        CpuSegment::with_outputs(graph, nodes, name, &[], own_ops)
    }

    /// [`CpuSegment::new`], also handing out the tensors `extra` that the nodes produce (for
    /// heads attached outside the graph).
    pub fn with_outputs(
        graph: &OnnxGraph,
        nodes: &[usize],
        name: String,
        extra: &[String],
        own_ops: bool,
    ) -> CpuSegment {
        let (inputs, mut outputs) = split::boundary(graph, nodes);
        let all = graph.nodes();
        for t in extra {
            let made_here = nodes.iter().any(|&n| all[n].output.contains(t));
            if made_here && !outputs.contains(t) {
                outputs.push(t.clone());
            }
        }
        // The segment's nodes plus every constant node they depend on, in topological order.
        let mut keep: HashSet<usize> = nodes.iter().copied().collect();
        let mut stack: Vec<usize> = nodes.to_vec();
        while let Some(n) = stack.pop() {
            for t in &graph.node_inputs[n] {
                if let Some(&p) = graph.producer.get(t) {
                    if graph.const_node[p] && keep.insert(p) {
                        stack.push(p);
                    }
                }
            }
        }
        let mut order: Vec<usize> = keep.into_iter().collect();
        order.sort_unstable();
        let used: HashSet<&str> =
            order.iter().flat_map(|&n| graph.node_inputs[n].iter().map(String::as_str)).collect();
        let full = graph.proto.graph.as_ref().expect("validated at load");
        let sub = pb::GraphProto {
            name: name.clone(),
            node: order.iter().map(|&n| all[n].clone()).collect(),
            initializer: full
                .initializer
                .iter()
                .filter(|t| used.contains(t.name.as_str()))
                .cloned()
                .collect(),
            input: inputs.iter().map(|n| value_info(n, None)).collect(),
            output: outputs.iter().map(|n| value_info(n, None)).collect(),
            ..Default::default()
        };
        let proto = pb::ModelProto {
            ir_version: graph.proto.ir_version,
            opset_import: graph.proto.opset_import.clone(),
            graph: Some(sub),
            ..Default::default()
        };
        let mut segment =
            CpuSegment::from_proto(name, proto, inputs, outputs, graph.model_dir.clone(), own_ops);
        segment.max_bytes = graph.max_bytes;
        segment
    }

    /// A segment from a stand-alone ONNX model reading `inputs` and handing out `outputs`.
    pub fn from_proto(
        name: String,
        proto: pb::ModelProto,
        inputs: Vec<String>,
        outputs: Vec<String>,
        model_dir: Option<PathBuf>,
        own_ops: bool,
    ) -> CpuSegment {
        CpuSegment {
            name,
            inputs,
            outputs,
            proto,
            model_dir,
            own_ops,
            max_bytes: crate::graph::DEFAULT_MAX_BYTES,
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// The stand-alone ONNX model of the segment.
    pub(crate) fn proto(&self) -> &pb::ModelProto {
        &self.proto
    }

    /// The segment as a decluttered typed model for the given input facts.
    pub fn typed_model(&self, facts: &[Fact]) -> Result<TypedModel> {
        self.guarded(|| self.typed(facts, false))
    }

    /// [`CpuSegment::typed_model`], with hydrant's 1×1 convolutions substituted before
    /// declutter when `pointwise` is set ([`cpu_ops::patch_pointwise`]).
    fn typed(&self, facts: &[Fact], pointwise: bool) -> Result<TypedModel> {
        let mut proto = self.proto.clone();
        let graph = proto.graph.as_mut().expect("built with a graph");
        for (vi, fact) in graph.input.iter_mut().zip(facts) {
            *vi = value_info(&vi.name, Some(fact));
        }
        // With concrete input shapes, sizes computed from shapes are known: refuse a graph that
        // would make tract allocate beyond the limit while it plans or runs.
        crate::graph::bounds::check(graph, self.max_bytes).map_err(|e| self.err(e))?;
        let dir = self.model_dir.as_ref().and_then(|d| d.to_str());
        let parsed = tract_onnx::onnx().parse(&proto, dir).map_err(|e| self.err(e))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(Error::backend(
                &self.name,
                format!("unresolved inputs {:?}", parsed.unresolved_inputs),
            ));
        }
        let mut typed = parsed.model.into_typed().map_err(|e| self.err(e))?;
        if pointwise {
            cpu_ops::patch_pointwise(&mut typed, cpu_ops::Isa::best()).map_err(|e| self.err(e))?;
        }
        typed.into_decluttered().map_err(|e| self.err(e))
    }

    /// The cached optimized plan for these input facts, built on first use.
    pub fn plan(&self, facts: &[Fact]) -> Result<Arc<TypedRunnableModel>> {
        let key = facts.to_vec();
        if let Some(p) = self.plans.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let own_ops = self.own_ops;
        let plan = self.guarded(|| {
            let mut model = self.typed(facts, own_ops)?;
            if own_ops {
                cpu_ops::patch(&mut model, cpu_ops::Isa::best()).map_err(|e| self.err(e))?;
            }
            model.into_optimized().and_then(|m| m.into_runnable()).map_err(|e| self.err(e))
        })?;
        let mut cache = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cache.entry(key).or_insert(plan).clone())
    }

    /// Runs the segment on values named by its inputs; returns values named by its outputs.
    pub fn run(&self, env: &HashMap<String, TValue>) -> Result<Vec<(String, TValue)>> {
        let (values, facts) = self.gather(env)?;
        let plan = self.plan(&facts)?;
        let outs = self.guarded(|| plan.run(values).map_err(|e| self.err(e)))?;
        Ok(self.outputs.iter().cloned().zip(outs).collect())
    }

    /// The segment's input values, in order, and their facts.
    pub(crate) fn gather(
        &self,
        env: &HashMap<String, TValue>,
    ) -> Result<(TVec<TValue>, Vec<Fact>)> {
        let mut values = tvec![];
        let mut facts = Vec::with_capacity(self.inputs.len());
        for name in &self.inputs {
            let v = env.get(name).ok_or_else(|| Error::MissingFeature(name.clone()))?;
            facts.push((
                dtype_of(v).ok_or_else(|| self.err("unsupported tensor type"))?,
                v.shape().to_vec(),
            ));
            values.push(v.clone());
        }
        Ok((values, facts))
    }

    /// Multiply-accumulate count (×2 = FLOPs) and output facts for the given input facts.
    pub fn cost(&self, facts: &[Fact]) -> Result<(u64, Vec<Fact>)> {
        let model = self.typed_model(facts)?;
        let mut fma = 0u64;
        for node in model.nodes() {
            let inputs = model.node_input_facts(node.id).map_err(|e| self.err(e))?;
            for (cost, count) in node.op.cost(&inputs).map_err(|e| self.err(e))? {
                if let tract_onnx::tract_core::internal::Cost::FMA(_) = cost {
                    fma += count.to_i64().map_err(|e| self.err(e))?.max(0) as u64;
                }
            }
        }
        let outs = (0..model.outputs.len())
            .map(|i| {
                let f = model.output_fact(i).map_err(|e| self.err(e))?;
                fact_of(f).ok_or_else(|| self.err("output shape is not concrete"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((fma, outs))
    }

    /// Runs `work` (planning or running this segment in the engine), turning a panic inside
    /// the engine into this segment's error. Planning works on a copy of the segment's graph and
    /// a plan is immutable (each run builds its own state), so a panic leaves nothing
    /// half-updated. The engine's analysis of a crafted graph can panic where hydrant's own checks
    /// found nothing wrong; this keeps such a file from taking down the caller.
    fn guarded<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
            Err(self.err(format!("the engine failed: {}", panic_message(&panic))))
        })
    }

    pub(crate) fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::backend(&self.name, e)
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("panic")
}

fn value_info(name: &str, fact: Option<&Fact>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let r#type = fact.map(|(dt, shape)| pb::TypeProto {
        denotation: String::new(),
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: crate::graph::onnx_dtype(*dt),
            shape: Some(pb::TensorShapeProto {
                dim: shape
                    .iter()
                    .map(|&d| Dimension {
                        denotation: String::new(),
                        value: Some(Value::DimValue(d as i64)),
                    })
                    .collect(),
            }),
        })),
    });
    pb::ValueInfoProto { name: name.to_string(), r#type, ..Default::default() }
}

fn fact_of(f: &TypedFact) -> Option<Fact> {
    let dt = dtype_from_tract(f.datum_type)?;
    let shape = f.shape.as_concrete()?.to_vec();
    Some((dt, shape))
}

fn dtype_from_tract(dt: tract_onnx::prelude::DatumType) -> Option<DType> {
    use tract_onnx::prelude::DatumType as D;
    Some(match dt {
        D::F32 => DType::F32,
        D::F64 => DType::F64,
        D::F16 => DType::F16,
        D::U8 => DType::U8,
        D::I8 => DType::I8,
        D::I32 => DType::I32,
        D::I64 => DType::I64,
        D::Bool => DType::Bool,
        _ => return None,
    })
}

/// The element type of an engine value, if hydrant has a matching [`DType`].
pub(crate) fn dtype_of(v: &TractTensor) -> Option<DType> {
    dtype_from_tract(v.datum_type())
}

/// Converts a hydrant tensor to an engine value (one copy).
pub(crate) fn to_tvalue(t: &Tensor) -> Result<TValue> {
    fn mk<T: Datum + Copy>(shape: &[usize], v: &[T]) -> Result<TValue> {
        TractTensor::from_shape(shape, v)
            .map(|t| t.into_tvalue())
            .map_err(|e| Error::BadTensor(e.to_string()))
    }
    let s = t.shape();
    match t.data() {
        TensorData::F32(v) => mk(s, v),
        TensorData::F64(v) => mk(s, v),
        TensorData::F16(v) => mk(s, v),
        TensorData::BF16(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            mk(s, &f)
        }
        TensorData::U8(v) => mk(s, v),
        TensorData::I8(v) => mk(s, v),
        TensorData::I32(v) => mk(s, v),
        TensorData::I64(v) => mk(s, v),
        TensorData::Bool(v) => mk(s, v),
    }
}

/// Converts an engine value to a hydrant tensor (one copy).
pub(crate) fn from_tvalue(v: &TractTensor) -> Result<Tensor> {
    fn get<T: Datum + Copy>(v: &TractTensor) -> Result<Vec<T>> {
        v.try_as_plain_ram()
            .and_then(|p| p.as_slice::<T>().map(|s| s.to_vec()))
            .map_err(|e| Error::BadTensor(e.to_string()))
    }
    let data = match dtype_of(v) {
        Some(DType::F32) => TensorData::F32(get(v)?),
        Some(DType::F64) => TensorData::F64(get(v)?),
        Some(DType::F16) => TensorData::F16(get(v)?),
        Some(DType::U8) => TensorData::U8(get(v)?),
        Some(DType::I8) => TensorData::I8(get(v)?),
        Some(DType::I32) => TensorData::I32(get(v)?),
        Some(DType::I64) => TensorData::I64(get(v)?),
        Some(DType::Bool) => TensorData::Bool(get(v)?),
        Some(DType::BF16) | None => {
            return Err(Error::BadTensor(format!("unsupported output type {:?}", v.datum_type())))
        }
    };
    Tensor::from_data(v.shape(), data)
}
