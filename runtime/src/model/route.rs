//! Where each part of a model runs. With a CUDA device, every trunk part and head whose segment
//! the GPU planner places on the GPU runs there; the others run on the CPU (the fallback is per
//! segment), and values cross between host and device only at part boundaries. [`decide`] is the
//! decision, plain data in and out, the same in every build.

use crate::backend::cpu::CpuSegment;
use crate::backend::cuda::fallback::Placement;
use crate::error::Result;
use crate::graph::OnnxGraph;
use crate::model::Device;
use crate::tensor::DType;
use tract_onnx::pb;

/// The backend that runs one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// tract, on the CPU.
    Cpu,
    /// hydrant's CUDA executor.
    Cuda,
}

/// What the decision needs to know about one part.
#[derive(Debug, Clone)]
pub(crate) struct PartFacts {
    /// `trunk[cls,box]`, `head seg`.
    pub name: String,
    /// Where the GPU planner places the part's segment; `None` when it computes nothing.
    pub placement: Option<Placement>,
    /// The tensors the part reads and hands out, with their element type where typing the model
    /// at batch 1 found it.
    pub boundary: Vec<(String, Option<DType>)>,
}

/// Where one part runs and, for a part of a CUDA model left on the CPU, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The part's name.
    pub name: String,
    /// Its backend.
    pub backend: Backend,
    /// Why the GPU does not run it (`None` on the GPU, and for every part of a CPU model).
    pub why: Option<String>,
}

impl Route {
    /// `cuda`, `cpu`, or `cpu (Cast node `c`: no GPU kernel)`.
    pub fn describe(&self) -> String {
        match (self.backend, &self.why) {
            (Backend::Cuda, _) => "cuda".into(),
            (Backend::Cpu, None) => "cpu".into(),
            (Backend::Cpu, Some(why)) => format!("cpu ({why})"),
        }
    }
}

/// The route of each of `parts` for a model on `device` (never [`Device::Auto`]): on a CUDA
/// device a part runs on the GPU when its segment is placed there and every tensor crossing its
/// boundary is f32 (or of unknown type); everything else runs on the CPU.
pub(crate) fn decide(device: Device, parts: &[PartFacts]) -> Vec<Route> {
    parts
        .iter()
        .map(|p| {
            let why = match device {
                Device::Cuda(_) => why_cpu(p),
                Device::Cpu | Device::Auto => {
                    return Route { name: p.name.clone(), backend: Backend::Cpu, why: None }
                }
            };
            let backend = if why.is_none() { Backend::Cuda } else { Backend::Cpu };
            Route { name: p.name.clone(), backend, why }
        })
        .collect()
}

/// Why a part of a CUDA model cannot run on the GPU, or `None` when it can.
fn why_cpu(p: &PartFacts) -> Option<String> {
    match &p.placement {
        None => return Some("nothing to compute".into()),
        Some(Placement::Cpu { node, op, reason }) => {
            return Some(format!("{op} node `{node}`: {reason}"))
        }
        Some(Placement::Cuda) => {}
    }
    p.boundary.iter().find_map(|(name, dt)| match dt {
        Some(dt) if *dt != DType::F32 => {
            Some(format!("tensor `{name}` is {dt}; the GPU runs f32 tensors"))
        }
        _ => None,
    })
}

/// Every route as one line: `trunk[cls,box]: cuda; head lbl: cpu (Cast node `c`: no GPU kernel)`.
pub(crate) fn describe(routes: &[Route]) -> String {
    let parts: Vec<String> =
        routes.iter().map(|r| format!("{}: {}", r.name, r.describe())).collect();
    parts.join("; ")
}

/// The graph of a segment built outside the model graph (a head set in at run time), for the GPU
/// planner: its stand-alone model, untyped inputs typed f32 (what heads read).
pub(crate) fn standalone_graph(seg: &CpuSegment) -> Result<OnnxGraph> {
    let mut proto = seg.proto().clone();
    if let Some(g) = proto.graph.as_mut() {
        for i in g.input.iter_mut().filter(|i| i.r#type.is_none()) {
            let tensor = pb::type_proto::Tensor { elem_type: 1, shape: None };
            i.r#type = Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(tensor)),
            });
        }
    }
    OnnxGraph::from_proto(proto, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(
        name: &str,
        placement: Option<Placement>,
        boundary: &[(&str, Option<DType>)],
    ) -> PartFacts {
        PartFacts {
            name: name.into(),
            placement,
            boundary: boundary.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
        }
    }

    fn cast() -> Placement {
        Placement::Cpu {
            node: "to_float".into(),
            op: "Cast".into(),
            reason: "no GPU kernel".into(),
        }
    }

    fn parts() -> Vec<PartFacts> {
        vec![
            part("trunk[cls,lbl]", Some(Placement::Cuda), &[("x", Some(DType::F32))]),
            part("head cls", Some(Placement::Cuda), &[("f", Some(DType::F32)), ("cls", None)]),
            part("head lbl", Some(cast()), &[("f", Some(DType::F32))]),
            part(
                "head ids",
                Some(Placement::Cuda),
                &[("f", Some(DType::F32)), ("ids", Some(DType::I64))],
            ),
            part("head same", None, &[]),
        ]
    }

    #[test]
    fn a_cuda_model_runs_each_placed_part_on_the_gpu_and_the_rest_on_the_cpu() {
        let routes = decide(Device::Cuda(1), &parts());
        let backends: Vec<Backend> = routes.iter().map(|r| r.backend).collect();
        use Backend::{Cpu, Cuda};
        assert_eq!(backends, [Cuda, Cuda, Cpu, Cpu, Cpu]);
        assert_eq!(routes[0].why, None);
        assert_eq!(routes[2].describe(), "cpu (Cast node `to_float`: no GPU kernel)");
        assert_eq!(routes[3].describe(), "cpu (tensor `ids` is i64; the GPU runs f32 tensors)");
        assert_eq!(routes[4].describe(), "cpu (nothing to compute)");
        assert_eq!(
            describe(&routes[..3]),
            "trunk[cls,lbl]: cuda; head cls: cuda; head lbl: cpu (Cast node `to_float`: no GPU kernel)"
        );
    }

    #[test]
    fn a_cpu_model_runs_everything_on_the_cpu_without_reasons() {
        for device in [Device::Cpu, Device::Auto] {
            let routes = decide(device, &parts());
            assert!(routes.iter().all(|r| r.backend == Backend::Cpu && r.why.is_none()));
            assert_eq!(routes.len(), 5);
            assert_eq!(routes[1].name, "head cls");
        }
    }

    #[test]
    fn an_input_of_another_type_keeps_a_placed_part_on_the_cpu() {
        let p = part("trunk[a]", Some(Placement::Cuda), &[("img", Some(DType::U8)), ("y", None)]);
        let r = &decide(Device::Cuda(0), &[p])[0];
        assert_eq!(r.backend, Backend::Cpu);
        assert_eq!(r.why.as_deref(), Some("tensor `img` is u8; the GPU runs f32 tensors"));
        let unknown = part("trunk[a]", Some(Placement::Cuda), &[("img", None)]);
        assert_eq!(decide(Device::Cuda(0), &[unknown])[0].backend, Backend::Cuda);
    }
}
