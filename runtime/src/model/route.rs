//! Where each part of a model runs. With a CUDA device, every trunk part and head whose segment
//! the GPU planner places on the GPU runs there; the others run on the CPU (the fallback is per
//! segment), and values cross between host and device only at part boundaries. [`decide`] is the
//! decision, plain data in and out, the same in every build; `Model::routes` feeds it a layout's
//! parts (placements and boundary element types) and keeps its answer with the layout.

use super::layout::{HeadSource, Layout, Routes};
use super::Model;
use crate::backend::cpu::{CpuSegment, Fact};
use crate::backend::cuda::fallback::{place, Placement};
use crate::backend::cuda::ir::SegmentIr;
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

/// Where the GPU planner places nodes `nodes` of `graph` handing out `outputs`: `None` when
/// they compute nothing; on the CPU when an output is a constant (the GPU executor computes
/// no constants).
fn placement(graph: &OnnxGraph, nodes: &[usize], outputs: &[String]) -> Option<Placement> {
    let ir = SegmentIr::from_graph(graph, nodes, outputs);
    if ir.nodes.is_empty() {
        return None;
    }
    if let Some(c) = outputs.iter().find(|o| graph.const_tensors.contains(*o)) {
        let made_by = graph.producer.get(c).map(|&p| &graph.nodes()[p]);
        return Some(Placement::Cpu {
            node: made_by.map_or(c.clone(), |n| n.name.clone()),
            op: made_by.map_or("initializer".into(), |n| n.op_type.clone()),
            reason: format!("hands out the constant `{c}`"),
        });
    }
    Some(place(&ir))
}

impl Model {
    /// Where each part of `layout` runs (decided on the layout's first use).
    pub(super) fn routes<'a>(&self, layout: &'a Layout) -> &'a Routes {
        layout.routes.get_or_init(|| {
            let cuda = matches!(self.device.device, Device::Cuda(_));
            let mut trunk = decide(self.device.device, &self.part_facts(layout, cuda));
            let heads = trunk.split_off(layout.trunk.len());
            Routes { trunk, heads }
        })
    }

    /// What the routing decision reads about each trunk part and head of `layout`: placements
    /// and boundary element types when `cuda`, names only otherwise.
    fn part_facts(&self, layout: &Layout, cuda: bool) -> Vec<PartFacts> {
        let mut env = self.input_facts(1).unwrap_or_default();
        let mut boundary = |seg: &CpuSegment| -> Vec<(String, Option<DType>)> {
            let facts: Option<Vec<Fact>> = seg.inputs.iter().map(|n| env.get(n).cloned()).collect();
            if let Some(Ok((_, outs))) = facts.map(|f| seg.cost(&f)) {
                env.extend(seg.outputs.iter().cloned().zip(outs));
            }
            let names = seg.inputs.iter().chain(&seg.outputs);
            names.map(|n| (n.clone(), env.get(n).map(|f| f.0))).collect()
        };
        let mut out = Vec::new();
        for t in &layout.trunk {
            let (placement, bound) = if cuda {
                (placement(&self.graph, &t.nodes, &t.segment.outputs), boundary(&t.segment))
            } else {
                (None, Vec::new())
            };
            out.push(PartFacts { name: t.segment.name.clone(), placement, boundary: bound });
        }
        for h in &layout.heads {
            let name = format!("head {}", h.part.name);
            let (placement, bound) = match &h.segment {
                Some(seg) if cuda => {
                    let placed = match &h.source {
                        HeadSource::Graph(_) => {
                            Ok(placement(&self.graph, &h.part.nodes, &seg.outputs))
                        }
                        HeadSource::Layers(_) => standalone_graph(seg).map(|g| {
                            let nodes: Vec<usize> = (0..g.nodes().len()).collect();
                            placement(&g, &nodes, &seg.outputs)
                        }),
                    };
                    let placed = placed.unwrap_or_else(|e| {
                        Some(Placement::Cpu {
                            node: seg.name.clone(),
                            op: "graph".into(),
                            reason: e.to_string(),
                        })
                    });
                    (placed, boundary(seg))
                }
                _ => (None, Vec::new()),
            };
            out.push(PartFacts { name, placement, boundary: bound });
        }
        out
    }

    /// Where each trunk part and head runs now, in [`Model::split`] order: the part's name
    /// (`trunk[cls,box]`, `head lbl`) and `cuda`, `cpu`, or on a CUDA model the reason a part
    /// stays on the CPU (`cpu (Cast node `to_float`: no GPU kernel)`).
    pub fn part_devices(&self) -> Vec<(String, String)> {
        let layout = self.layout();
        let routes = self.routes(&layout);
        routes.trunk.iter().chain(&routes.heads).map(|r| (r.name.clone(), r.describe())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LoadOptions;
    use crate::train::Head;
    use std::path::Path;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
    }

    fn cpu_model(name: &str) -> Model {
        Model::load(fixture(name), LoadOptions::new().device(Device::Cpu)).unwrap()
    }

    /// The routes a CUDA device would give each part of the fixture `name`.
    fn cuda_routes(model: &Model) -> Vec<Route> {
        let layout = model.layout();
        decide(Device::Cuda(0), &model.part_facts(&layout, true))
    }

    #[test]
    fn fixture_parts_route_to_the_gpu_unless_an_op_or_a_type_keeps_them_on_the_cpu() {
        let hydranet = cpu_model("hydranet.onnx");
        let routes = cuda_routes(&hydranet);
        assert_eq!(routes.len(), hydranet.split().trunk.len() + hydranet.head_names().len());
        for r in &routes {
            assert_eq!(r.backend, Backend::Cuda, "{}: {:?}", r.name, r.why);
        }
        let dtypes = cpu_model("dtypes.onnx");
        let routes = cuda_routes(&dtypes);
        let cpu: Vec<String> = routes
            .iter()
            .filter(|r| r.backend == Backend::Cpu)
            .map(|r| format!("{}: {}", r.name, r.describe()))
            .collect();
        assert!(!cpu.is_empty(), "dtypes.onnx reads u8 and casts");
        assert!(cpu.iter().any(|c| c.contains("Cast node") || c.contains("is u8")), "{cpu:?}");
    }

    /// Heads set in at run time are planned from their own graph; these (a swapped file head
    /// and an added pooled linear head) place on the GPU, as `gpu_routing` expects.
    #[test]
    fn swapped_and_added_heads_route_to_the_gpu() {
        use crate::train::{HeadSpec, Init, LayerSpec, TaskSpec};
        let m = cpu_model("hydranet.onnx");
        let old = m.trainable_head("box").unwrap();
        m.swap_head("box", &Head::init(old.spec().clone(), Init::XavierUniform, 7).unwrap())
            .unwrap();
        let layers = vec![
            LayerSpec::GlobalAvgPool { keep_dims: false },
            LayerSpec::Linear { in_features: 16, out_features: 4, bias: true },
        ];
        let task = TaskSpec::from_loss_name("ce", 4).unwrap();
        let spec = HeadSpec::new("texture", "/trunk/block1/Relu_1_output_0", layers, Some(task));
        m.add_head(&Head::init(spec, Init::KaimingUniform, 8).unwrap()).unwrap();
        let routes = cuda_routes(&m);
        for name in ["head box", "head texture"] {
            let r = routes.iter().find(|r| r.name == name).expect(name);
            assert_eq!(r.backend, Backend::Cuda, "{name}: {:?}", r.why);
        }
        assert!(routes.iter().all(|r| r.backend == Backend::Cuda), "{routes:?}");
    }

    #[test]
    fn parts_computing_nothing_or_handing_out_constants_stay_on_the_cpu() {
        let g = OnnxGraph::load(&fixture("hydranet.onnx")).unwrap();
        let all: Vec<usize> = (0..g.nodes().len()).collect();
        assert_eq!(placement(&g, &all, g.outputs()), Some(Placement::Cuda));
        let consts: Vec<usize> = all.iter().copied().filter(|&n| g.const_node[n]).collect();
        assert_eq!(placement(&g, &consts, &[]), None, "only constant nodes");
        assert_eq!(placement(&g, &[], &[]), None);
        let c = g.const_tensors.iter().next().expect("hydranet has initializers").clone();
        let mut outputs = g.outputs().to_vec();
        outputs.push(c.clone());
        match placement(&g, &all, &outputs) {
            Some(Placement::Cpu { reason, .. }) => {
                assert_eq!(reason, format!("hands out the constant `{c}`"))
            }
            p => panic!("{p:?}"),
        }
    }

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
