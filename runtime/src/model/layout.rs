//! [`Layout`]: the part of a model that head swaps and new heads change — the trunk parts, the
//! heads and their compiled segments. A loaded model holds its layout behind an `Arc` that each
//! call snapshots once, so a call sees one layout from start to end, never a mix.

use super::route::Route;
use crate::backend::cpu::CpuSegment;
use crate::error::{Error, Result};
use crate::graph::{build, HeadPart, OnnxGraph, Split, TrunkSegment};
use crate::train::Head;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

/// A piece of the trunk: the nodes that exactly the same heads need.
pub(crate) struct TrunkPart {
    pub heads: Vec<usize>,
    pub nodes: Vec<usize>,
    pub segment: Arc<CpuSegment>,
    /// Its GPU segment, shared with later layouts that keep the part unchanged.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub gpu: Arc<GpuSlot>,
}

/// A part's GPU segment, built on the part's first run on the GPU (weights uploaded once) and
/// kept for as long as a layout holds the part.
#[derive(Default)]
pub(crate) struct GpuSlot {
    /// The device's segment (a `GpuSegment` on CUDA).
    pub segment: std::sync::Mutex<Option<Arc<dyn std::any::Any + Send + Sync>>>,
}

/// Where each trunk part and head of a layout runs (in `Layout::trunk` and `Layout::heads`
/// order), decided once per layout.
pub(crate) struct Routes {
    pub trunk: Vec<Route>,
    pub heads: Vec<Route>,
}

/// Where a head's computation comes from.
#[derive(Clone)]
pub(crate) enum HeadSource {
    /// The model file's own nodes (original head index `usize`).
    Graph(usize),
    /// A head set in at run time (trained, swapped in, or added).
    Layers(Box<Head>),
}

/// One head of the model.
pub(crate) struct HeadSlot {
    pub part: HeadPart,
    pub segment: Option<Arc<CpuSegment>>,
    pub source: HeadSource,
    /// Its GPU segment (a swapped or added head gets a new, empty slot).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub gpu: GpuSlot,
}

/// The trunk parts and heads of a model at one moment.
pub(crate) struct Layout {
    pub trunk: Vec<TrunkPart>,
    pub heads: Vec<Arc<HeadSlot>>,
    /// Whether every tensor between segments is batch-major (computed on first batched call).
    pub rows_valid: OnceLock<bool>,
    /// Whether segments use hydrant's own CPU kernels.
    pub own_ops: bool,
    /// Where each part runs (decided on first use).
    pub routes: OnceLock<Routes>,
    /// Heads on the device whose first layers run as one GEMM (planned on first use).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub fused: OnceLock<Vec<super::fuse::FusedGroup>>,
}

/// For each graph node, the original heads (indices into the file's split) that need it as trunk.
pub(crate) type BaseNeeds = Vec<Vec<usize>>;

/// The trunk membership the file's split gives each node.
pub(crate) fn base_needs(graph: &OnnxGraph, split: &Split) -> BaseNeeds {
    let mut needs = vec![Vec::new(); graph.nodes().len()];
    for seg in &split.trunk {
        for &n in &seg.nodes {
            needs[n] = seg.heads.clone();
        }
    }
    needs
}

fn trunk_name(layout_heads: &[Arc<HeadSlot>], hs: &[usize]) -> String {
    let names: Vec<&str> = hs.iter().map(|&h| layout_heads[h].part.name.as_str()).collect();
    format!("trunk[{}]", names.join(","))
}

impl Layout {
    /// The layout of a freshly loaded model.
    pub fn from_split(graph: &OnnxGraph, split: &Split, own_ops: bool) -> Layout {
        let heads: Vec<Arc<HeadSlot>> = split
            .heads
            .iter()
            .enumerate()
            .map(|(i, h)| {
                Arc::new(HeadSlot {
                    part: h.clone(),
                    segment: (!h.nodes.is_empty()).then(|| {
                        Arc::new(CpuSegment::new(
                            graph,
                            &h.nodes,
                            format!("head {}", h.name),
                            own_ops,
                        ))
                    }),
                    source: HeadSource::Graph(i),
                    gpu: GpuSlot::default(),
                })
            })
            .collect();
        let trunk = split
            .trunk
            .iter()
            .map(|s| TrunkPart {
                heads: s.heads.clone(),
                nodes: s.nodes.clone(),
                segment: Arc::new(CpuSegment::new(
                    graph,
                    &s.nodes,
                    trunk_name(&heads, &s.heads),
                    own_ops,
                )),
                gpu: Arc::default(),
            })
            .collect();
        Layout {
            trunk,
            heads,
            rows_valid: OnceLock::new(),
            own_ops,
            routes: OnceLock::new(),
            fused: OnceLock::new(),
        }
    }

    /// The split as the public API shows it.
    pub fn split(&self, graph: &OnnxGraph) -> Split {
        let heads: Vec<HeadPart> = self.heads.iter().map(|h| h.part.clone()).collect();
        let trunk = self
            .trunk
            .iter()
            .map(|t| TrunkSegment { heads: t.heads.clone(), nodes: t.nodes.clone() })
            .collect();
        let position = |t: &str| graph.producer.get(t).map_or(0, |&p| p + 1);
        let mut cut_points: Vec<String> = Vec::new();
        for h in &heads {
            for c in &h.cut_points {
                if !cut_points.contains(c) {
                    cut_points.push(c.clone());
                }
            }
        }
        cut_points.sort_by_key(|t| position(t));
        Split { heads, trunk, cut_points }
    }

    /// Index of the head called `name`.
    pub fn head_index(&self, name: &str) -> Result<usize> {
        self.heads.iter().position(|h| h.part.name == name).ok_or_else(|| Error::UnknownHead {
            name: name.to_string(),
            available: self
                .heads
                .iter()
                .map(|h| h.part.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// A new layout where head `index` (or a new head, when `None`) computes `head`.
    pub fn with_head(
        &self,
        graph: &OnnxGraph,
        needs: &BaseNeeds,
        index: Option<usize>,
        head: &Head,
    ) -> Result<Layout> {
        let input = head.spec().input().to_string();
        check_attachable(graph, self, &input)?;
        let (name, output) = match index {
            Some(i) => {
                let old = &self.heads[i].part;
                (old.name.clone(), old.outputs[0].clone())
            }
            None => {
                let name = head.name().to_string();
                if self.heads.iter().any(|h| h.part.name == name || h.part.outputs.contains(&name))
                {
                    return Err(Error::InvalidArgument(format!(
                        "the model already has a head or output called `{name}`"
                    )));
                }
                if graph.has_tensor(&name) {
                    return Err(Error::InvalidArgument(format!(
                        "head name `{name}` is already a tensor of the model graph; choose another"
                    )));
                }
                (name.clone(), name)
            }
        };
        let mut placed = head.clone().renamed(&name);
        if placed.spec().output() != output {
            placed = rename_output(placed, &output)?;
        }
        let proto = build::head_model(&placed)?;
        let segment = CpuSegment::from_proto(
            format!("head {name}"),
            proto,
            vec![input.clone()],
            vec![output.clone()],
            None,
            self.own_ops,
        );
        let slot = HeadSlot {
            part: HeadPart { name, outputs: vec![output], cut_points: vec![input], nodes: vec![] },
            segment: Some(Arc::new(segment)),
            source: HeadSource::Layers(Box::new(placed)),
            gpu: GpuSlot::default(),
        };
        let mut heads = self.heads.clone();
        match index {
            Some(i) => heads[i] = Arc::new(slot),
            None => heads.push(Arc::new(slot)),
        }
        Ok(Layout {
            trunk: self.regroup(graph, needs, &heads),
            heads,
            rows_valid: OnceLock::new(),
            own_ops: self.own_ops,
            routes: OnceLock::new(),
            fused: OnceLock::new(),
        })
    }

    /// Trunk parts for `heads`: each trunk node goes to the part of the heads that need it
    /// (file heads by the file's split, set-in heads by the ancestors of the tensor they read).
    /// Parts whose nodes and outputs are unchanged keep their compiled segment.
    fn regroup(
        &self,
        graph: &OnnxGraph,
        needs: &BaseNeeds,
        heads: &[Arc<HeadSlot>],
    ) -> Vec<TrunkPart> {
        let n = graph.nodes().len();
        let mut need: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut attach: Vec<String> = Vec::new();
        for (i, slot) in heads.iter().enumerate() {
            match &slot.source {
                HeadSource::Graph(orig) => {
                    for (node, hs) in needs.iter().enumerate() {
                        if hs.contains(orig) {
                            need[node].push(i);
                        }
                    }
                }
                HeadSource::Layers(_) => {
                    for t in &slot.part.cut_points {
                        attach.push(t.clone());
                        for node in ancestors(graph, t) {
                            need[node].push(i);
                        }
                    }
                }
            }
        }
        let mut groups: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
        for (node, mut hs) in need.into_iter().enumerate() {
            if hs.is_empty() {
                continue;
            }
            hs.sort_unstable();
            hs.dedup();
            groups.entry(hs).or_default().push(node);
        }
        let mut parts: Vec<TrunkPart> = groups
            .into_iter()
            .map(|(hs, nodes)| {
                let reuse = self.trunk.iter().find(|p| {
                    p.nodes == nodes
                        && attach.iter().all(|t| {
                            !nodes.iter().any(|&x| graph.nodes()[x].output.contains(t))
                                || p.segment.outputs.contains(t)
                        })
                });
                let (segment, gpu) = match reuse {
                    Some(p) => (p.segment.clone(), p.gpu.clone()),
                    None => (
                        Arc::new(CpuSegment::with_outputs(
                            graph,
                            &nodes,
                            trunk_name(heads, &hs),
                            &attach,
                            self.own_ops,
                        )),
                        Arc::default(),
                    ),
                };
                TrunkPart { heads: hs, nodes, segment, gpu }
            })
            .collect();
        parts.sort_by_key(|p| (std::cmp::Reverse(p.heads.len()), p.nodes[0]));
        parts
    }
}

/// The non-constant nodes tensor `t` is computed from (itself included), in topological order.
pub(crate) fn ancestors(graph: &OnnxGraph, t: &str) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut stack: Vec<usize> = graph.producer.get(t).copied().into_iter().collect();
    while let Some(n) = stack.pop() {
        if graph.const_node[n] || !seen.insert(n) {
            continue;
        }
        stack.extend(graph.node_inputs[n].iter().filter_map(|i| graph.producer.get(i)).copied());
    }
    let mut v: Vec<usize> = seen.into_iter().collect();
    v.sort_unstable();
    v
}

/// Checks that a head may read tensor `t`: a graph input or a trunk tensor, not a constant and
/// not a tensor inside another head.
fn check_attachable(graph: &OnnxGraph, layout: &Layout, t: &str) -> Result<()> {
    if !graph.has_tensor(t) {
        return Err(Error::UnknownTensor(t.to_string()));
    }
    if graph.const_tensors.contains(t) {
        return Err(Error::InvalidArgument(format!(
            "`{t}` is a constant, not a trunk tensor a head can read"
        )));
    }
    if let Some(&p) = graph.producer.get(t) {
        for h in &layout.heads {
            if let HeadSource::Graph(_) = h.source {
                if h.part.nodes.contains(&p) {
                    return Err(Error::InvalidArgument(format!(
                        "`{t}` is computed inside head `{}`, not by the trunk",
                        h.part.name
                    )));
                }
            }
        }
    }
    Ok(())
}

fn rename_output(head: Head, output: &str) -> Result<Head> {
    let (mut spec, tensors) = head.into_parts();
    spec.outputs = vec![output.to_string()];
    Head::new(spec, tensors)
}
