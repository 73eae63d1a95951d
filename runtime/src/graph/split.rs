//! Cutting a graph into a shared trunk and task heads.
//!
//! The rule, on the graph's non-constant nodes (constants and initializers belong to no segment;
//! each segment that uses one carries its own copy):
//!
//! 1. Every graph output starts as its own head. An output that other outputs are computed from
//!    *only through parameter-free ops* (logits → Softmax → probabilities) joins their head; an
//!    output that feeds layers with weights (an embedding other heads read) does not.
//! 2. A node that outputs of two or more heads depend on is trunk; a node only one head depends on
//!    belongs to that head. The **cut points** of a head are the trunk tensors (or graph inputs)
//!    its nodes read; a head may read several, at different depths.
//! 3. With explicit cut tensors, the trunk is exactly what those tensors are computed from, and
//!    heads whose nodes overlap below the cuts are merged into one.
//! 4. With a single head and no explicit cuts, the last layer with weights (Gemm, MatMul, Conv)
//!    and what follows it is the head: classic transfer learning.
//!
//! The trunk is itself cut into [`TrunkSegment`]s by the set of heads depending on each node, so a
//! request runs only the trunk layers its heads need, each once.

use super::onnx::OnnxGraph;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashSet};

/// A head: the part of the graph only one task's outputs depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadPart {
    /// Head name: its first output's name.
    pub name: String,
    /// Graph outputs the head produces.
    pub outputs: Vec<String>,
    /// Trunk tensors (or graph inputs) the head reads, in topological order.
    pub cut_points: Vec<String>,
    /// Indices of the head's nodes, in topological order.
    pub nodes: Vec<usize>,
}

/// A piece of the trunk: the nodes that exactly the same set of heads depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkSegment {
    /// Indices (into [`Split::heads`]) of the heads that need this segment.
    pub heads: Vec<usize>,
    /// Indices of the segment's nodes, in topological order.
    pub nodes: Vec<usize>,
}

/// The result of cutting a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The heads, in the order of their first output.
    pub heads: Vec<HeadPart>,
    /// Trunk segments in an order where each comes after those it reads from.
    pub trunk: Vec<TrunkSegment>,
    /// Every cut point of every head, in topological order, without repeats.
    pub cut_points: Vec<String>,
}

impl Split {
    /// All trunk node indices, in topological order.
    pub fn trunk_nodes(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self.trunk.iter().flat_map(|s| s.nodes.iter().copied()).collect();
        all.sort_unstable();
        all
    }

    /// Index of the head called `name`.
    pub fn head_index(&self, name: &str) -> Result<usize> {
        self.heads.iter().position(|h| h.name == name).ok_or_else(|| Error::UnknownHead {
            name: name.to_string(),
            available: self.heads.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// A fixed-size set of small integers.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(n: usize) -> BitSet {
        BitSet(vec![0; n.div_ceil(64)])
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn union_with(&mut self, o: &BitSet) {
        self.0.iter_mut().zip(&o.0).for_each(|(a, b)| *a |= b);
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.0.len() * 64).filter(|&i| self.0[i / 64] & (1 << (i % 64)) != 0)
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

/// Union-find over output indices.
struct Groups(Vec<usize>);

impl Groups {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        // The smaller index is the root, so a group is named after its first output.
        self.0[a.max(b)] = a.min(b);
    }
}

/// Cuts `graph` into trunk segments and heads. `cuts` are user-named cut tensors (may be empty).
pub fn split(graph: &OnnxGraph, cuts: &[String]) -> Result<Split> {
    let nodes = graph.nodes();
    let n_out = graph.outputs.len();
    let live = |n: usize| !graph.const_node[n];
    // deps[n]: the outputs that depend on node n.
    let mut deps = vec![BitSet::new(n_out); nodes.len()];
    for (j, out) in graph.outputs.iter().enumerate() {
        if let Some(&p) = graph.producer.get(out) {
            deps[p].insert(j);
        }
    }
    for n in (0..nodes.len()).rev() {
        if !live(n) || deps[n].is_empty() {
            continue;
        }
        let d = deps[n].clone();
        for t in &graph.node_inputs[n] {
            if let Some(&p) = graph.producer.get(t) {
                if live(p) {
                    deps[p].union_with(&d);
                }
            }
        }
    }

    if !cuts.is_empty() {
        return split_at(graph, &deps, cuts);
    }
    let mut groups = Groups((0..n_out).collect());
    for (i, out) in graph.outputs.iter().enumerate() {
        if let Some(&p) = graph.producer.get(out) {
            if !feeds_weighted_layer(graph, p) {
                deps[p].iter().for_each(|j| groups.union(i, j));
            }
        }
    }
    let roots: HashSet<usize> = (0..n_out).map(|i| groups.find(i)).collect();
    if roots.len() == 1 {
        let cut = default_cut(graph, &deps)?;
        return split_at(graph, &deps, &[cut]);
    }
    let is_trunk = |groups: &mut Groups, n: usize| {
        let g: HashSet<usize> = deps[n].iter().map(|j| groups.find(j)).collect();
        g.len() > 1
    };
    let trunk: Vec<bool> = (0..nodes.len())
        .map(|n| live(n) && !deps[n].is_empty() && is_trunk(&mut groups, n))
        .collect();
    assemble(graph, &deps, &trunk, &mut groups)
}

/// Split with explicit cut tensors: the trunk is what the cuts are computed from.
fn split_at(graph: &OnnxGraph, deps: &[BitSet], cuts: &[String]) -> Result<Split> {
    let nodes = graph.nodes();
    let mut trunk = vec![false; nodes.len()];
    let mut stack = Vec::new();
    for cut in cuts {
        if !graph.has_tensor(cut) {
            return Err(Error::UnknownTensor(cut.clone()));
        }
        if graph.const_tensors.contains(cut) {
            return Err(Error::InvalidArgument(format!(
                "cut point `{cut}` is a constant, not a trunk tensor"
            )));
        }
        if let Some(&p) = graph.producer.get(cut) {
            stack.push(p);
        }
    }
    while let Some(n) = stack.pop() {
        if trunk[n] || graph.const_node[n] {
            continue;
        }
        trunk[n] = true;
        stack.extend(graph.node_inputs[n].iter().filter_map(|t| graph.producer.get(t)));
    }
    let mut groups = Groups((0..graph.outputs.len()).collect());
    for n in 0..nodes.len() {
        if !trunk[n] && !graph.const_node[n] {
            let mut it = deps[n].iter();
            if let Some(first) = it.next() {
                it.for_each(|j| groups.union(first, j));
            }
        }
    }
    for out in &graph.outputs {
        let below_cut = graph.producer.get(out).is_some_and(|&p| !trunk[p]);
        if !below_cut {
            return Err(Error::InvalidArgument(format!(
                "output `{out}` does not depend on the cut point(s) {}",
                cuts.join(", ")
            )));
        }
    }
    assemble(graph, deps, &trunk, &mut groups)
}

/// True when a node with weights is downstream of node `p`.
fn feeds_weighted_layer(graph: &OnnxGraph, p: usize) -> bool {
    let nodes = graph.nodes();
    let mut reached: HashSet<&str> = nodes[p].output.iter().map(String::as_str).collect();
    for (n, node) in nodes.iter().enumerate().skip(p + 1) {
        if graph.node_inputs[n].iter().any(|t| reached.contains(t.as_str())) {
            if has_weights(graph, n) {
                return true;
            }
            reached.extend(node.output.iter().map(String::as_str));
        }
    }
    false
}

fn has_weights(graph: &OnnxGraph, n: usize) -> bool {
    graph.param_count(&[n]) > 0
}

/// The input of the last layer with weights that the single output depends on.
fn default_cut(graph: &OnnxGraph, deps: &[BitSet]) -> Result<String> {
    let nodes = graph.nodes();
    for n in (0..nodes.len()).rev() {
        let node = &nodes[n];
        if graph.const_node[n] || deps[n].is_empty() {
            continue;
        }
        if matches!(node.op_type.as_str(), "Gemm" | "MatMul" | "Conv" | "ConvTranspose")
            && has_weights(graph, n)
        {
            if let Some(x) = node.input.first().filter(|x| !graph.const_tensors.contains(*x)) {
                return Ok(x.clone());
            }
        }
    }
    Err(Error::InvalidArgument(
        "the model has one output and no layer with weights to make a head of; name cut points"
            .into(),
    ))
}

/// Builds heads and trunk segments from a trunk marking and output groups.
fn assemble(
    graph: &OnnxGraph,
    deps: &[BitSet],
    trunk: &[bool],
    groups: &mut Groups,
) -> Result<Split> {
    let nodes = graph.nodes();
    let n_out = graph.outputs.len();
    // Heads in the order of their first output.
    let mut head_of_root = BTreeMap::new();
    for j in 0..n_out {
        let r = groups.find(j);
        let next = head_of_root.len();
        head_of_root.entry(r).or_insert(next);
    }
    let mut heads: Vec<HeadPart> =
        vec![
            HeadPart { name: String::new(), outputs: vec![], cut_points: vec![], nodes: vec![] };
            head_of_root.len()
        ];
    for (j, out) in graph.outputs.iter().enumerate() {
        let h = &mut heads[head_of_root[&groups.find(j)]];
        if h.outputs.is_empty() {
            h.name = out.clone();
        }
        h.outputs.push(out.clone());
    }
    let mut segments: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    for n in 0..nodes.len() {
        if graph.const_node[n] || deps[n].is_empty() {
            continue;
        }
        let mut hs: Vec<usize> = deps[n].iter().map(|j| head_of_root[&groups.find(j)]).collect();
        hs.sort_unstable();
        hs.dedup();
        if trunk[n] {
            segments.entry(hs).or_default().push(n);
        } else {
            heads[hs[0]].nodes.push(n);
        }
    }
    let position = |t: &str| graph.producer.get(t).map_or(0, |&p| p + 1);
    let mut all_cuts: Vec<String> = Vec::new();
    for h in &mut heads {
        let own: HashSet<&str> =
            h.nodes.iter().flat_map(|&n| nodes[n].output.iter().map(String::as_str)).collect();
        let mut cuts: Vec<String> = Vec::new();
        let reads = h.nodes.iter().flat_map(|&n| graph.node_inputs[n].iter());
        // A head with no node of its own outputs trunk tensors directly.
        let direct = h.outputs.iter().filter(|o| !own.contains(o.as_str()));
        for t in reads.chain(direct) {
            if !own.contains(t.as_str()) && !graph.const_tensors.contains(t) && !cuts.contains(t) {
                cuts.push(t.clone());
            }
        }
        cuts.sort_by_key(|t| position(t));
        for c in &cuts {
            if !all_cuts.contains(c) {
                all_cuts.push(c.clone());
            }
        }
        h.cut_points = cuts;
    }
    all_cuts.sort_by_key(|t| position(t));
    let mut trunk: Vec<TrunkSegment> =
        segments.into_iter().map(|(heads, nodes)| TrunkSegment { heads, nodes }).collect();
    // A node's head set contains the head sets of everything downstream of it, so sorting by
    // decreasing size (then position) puts every segment after the segments it reads from.
    trunk.sort_by_key(|s| (std::cmp::Reverse(s.heads.len()), s.nodes[0]));
    Ok(Split { heads, trunk, cut_points: all_cuts })
}

/// The tensors a set of nodes reads from outside (graph inputs or other segments), and the tensors
/// it produces that something outside it reads or that are graph outputs.
pub(crate) fn boundary(graph: &OnnxGraph, seg: &[usize]) -> (Vec<String>, Vec<String>) {
    let nodes = graph.nodes();
    let inside: HashSet<usize> = seg.iter().copied().collect();
    let produced: HashSet<&str> =
        seg.iter().flat_map(|&n| nodes[n].output.iter().map(String::as_str)).collect();
    let mut inputs: Vec<String> = Vec::new();
    for &n in seg {
        for t in &graph.node_inputs[n] {
            if !produced.contains(t.as_str())
                && !graph.const_tensors.contains(t)
                && !inputs.contains(t)
            {
                inputs.push(t.clone());
            }
        }
    }
    let mut outputs: Vec<String> = Vec::new();
    for &n in seg {
        for t in nodes[n].output.iter().filter(|t| !t.is_empty()) {
            let read_outside = (0..nodes.len()).any(|m| {
                !inside.contains(&m) && !graph.const_node[m] && graph.node_inputs[m].contains(t)
            });
            if read_outside || graph.outputs.contains(t) {
                outputs.push(t.clone());
            }
        }
    }
    (inputs, outputs)
}
