//! Per-node timing of a segment's optimized plan: where a forward pass spends its time.

use super::cpu::CpuSegment;
use super::cpu_ops::probe::thread_cpu_ms;
use crate::error::Result;
use std::collections::HashMap;
use std::time::Instant;
use tract_onnx::prelude::{tvec, TValue};
use tract_onnx::tract_core::plan::{eval, SimpleState};

/// Named values: a segment's outputs.
type Named = Vec<(String, TValue)>;

/// Median time of one node of an optimized plan over the profiled runs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// The segment the node belongs to (`trunk[cls,box]`, `head seg`).
    pub segment: String,
    /// The node's name in the optimized plan.
    pub node: String,
    /// The op's name (`OptMatMul`, `MaxPool`, `WinogradConv`, …).
    pub op: String,
    /// Median milliseconds of the node's evaluation (on-CPU when single-threaded).
    pub ms: f64,
}

impl CpuSegment {
    /// Runs the segment `iters` times (at least once) on `env`, timing every node; returns the
    /// outputs of the last run and each node's median time, in plan order. Single-threaded,
    /// times are the thread's on-CPU time (robust when other processes share the cores); with
    /// more threads, wall time.
    pub(crate) fn profile(
        &self,
        env: &HashMap<String, TValue>,
        iters: usize,
    ) -> Result<(Named, Vec<NodeTime>)> {
        let (values, facts) = self.gather(env)?;
        let plan = self.plan(&facts)?;
        let mut state = SimpleState::new(&plan).map_err(|e| self.err(e))?;
        let mut samples: HashMap<usize, Vec<f64>> = HashMap::new();
        let mut outputs = tvec![];
        let start = Instant::now();
        let cpu = super::cpu_ops::parallel::threads() == 1 && thread_cpu_ms().is_some();
        let now = || match cpu {
            true => thread_cpu_ms().unwrap_or(0.0),
            false => start.elapsed().as_secs_f64() * 1e3,
        };
        for _ in 0..iters.max(1) {
            outputs = state
                .run_plan_with_eval(values.clone(), |ctx, op_state, node, inputs| {
                    let t = now();
                    let r = eval(ctx, op_state, node, inputs);
                    samples.entry(node.id).or_default().push(now() - t);
                    r
                })
                .map_err(|e| self.err(e))?;
        }
        let model = plan.model();
        let mut times = Vec::new();
        for &id in plan.order_without_consts() {
            let Some(mut s) = samples.remove(&id) else { continue };
            s.sort_by(f64::total_cmp);
            let node = model.node(id);
            times.push(NodeTime {
                segment: self.name.clone(),
                node: node.name.clone(),
                op: node.op.name().to_string(),
                ms: s[s.len() / 2],
            });
        }
        Ok((self.outputs.iter().cloned().zip(outputs).collect(), times))
    }
}
