//! Memory planning: device buffers shared by tensors whose lifetimes do not overlap.
//!
//! Steps run in order; a tensor lives from the step that writes it to the last step that reads
//! it (or to the end, for the segment's outputs). Each step's outputs are placed before its
//! inputs are released, so no kernel writes a buffer it reads. A released buffer goes back to a
//! pool; a new tensor takes the smallest pooled buffer that holds it, else grows the largest
//! pooled one, else a new buffer is made.

use std::collections::HashMap;

/// What the planner needs of one step: tensors read and tensors written with their sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct StepUse {
    /// Tensors read (inputs from outside the segment are not planned).
    pub reads: Vec<String>,
    /// Tensors written, with their sizes in bytes.
    pub writes: Vec<(String, u64)>,
}

/// The buffers of a segment and which tensor lives in which.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemoryPlan {
    /// Size of each buffer, in bytes.
    pub buffers: Vec<u64>,
    /// Buffer index of every tensor written by a step.
    pub assignment: HashMap<String, usize>,
}

impl MemoryPlan {
    /// Total bytes of every buffer.
    pub fn total_bytes(&self) -> u64 {
        self.buffers.iter().sum()
    }
}

/// Plans buffers for `steps`; `keep` lists tensors that must survive the last step.
pub fn plan(steps: &[StepUse], keep: &[String]) -> MemoryPlan {
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        for r in &s.reads {
            last_use.insert(r, i);
        }
        for (w, _) in &s.writes {
            last_use.entry(w).or_insert(i);
        }
    }
    for k in keep {
        last_use.insert(k, usize::MAX);
    }
    let mut plan = MemoryPlan::default();
    let mut pool: Vec<usize> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        for (name, bytes) in &s.writes {
            if plan.assignment.contains_key(name) {
                continue;
            }
            let fit = pool
                .iter()
                .enumerate()
                .filter(|(_, &b)| plan.buffers[b] >= *bytes)
                .min_by_key(|(_, &b)| plan.buffers[b])
                .map(|(k, _)| k);
            let largest =
                || pool.iter().enumerate().max_by_key(|(_, &b)| plan.buffers[b]).map(|(k, _)| k);
            let buffer = match fit.or_else(largest) {
                Some(k) => {
                    let b = pool.swap_remove(k);
                    plan.buffers[b] = plan.buffers[b].max(*bytes);
                    b
                }
                None => {
                    plan.buffers.push(*bytes);
                    plan.buffers.len() - 1
                }
            };
            plan.assignment.insert(name.clone(), buffer);
        }
        // Release what this step read (or wrote) for the last time.
        let touched = s.reads.iter().chain(s.writes.iter().map(|(n, _)| n));
        let mut released: Vec<usize> = Vec::new();
        for t in touched {
            if last_use.get(t.as_str()) == Some(&i) {
                if let Some(&b) = plan.assignment.get(t) {
                    if !released.contains(&b) {
                        released.push(b);
                    }
                }
            }
        }
        pool.extend(released);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn step(reads: &[&str], writes: &[(&str, u64)]) -> StepUse {
        StepUse {
            reads: reads.iter().map(|s| s.to_string()).collect(),
            writes: writes.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
        }
    }

    #[test]
    fn a_chain_ping_pongs_between_two_buffers() {
        let steps = [
            step(&["x"], &[("a", 100)]),
            step(&["a"], &[("b", 100)]),
            step(&["b"], &[("c", 100)]),
            step(&["c"], &[("d", 100)]),
        ];
        let p = plan(&steps, &["d".into()]);
        assert_eq!(p.buffers.len(), 2);
        assert_ne!(p.assignment["a"], p.assignment["b"]);
        assert_eq!(p.assignment["a"], p.assignment["c"]);
        assert_eq!(p.total_bytes(), 200);
    }

    #[test]
    fn a_skip_connection_stays_alive_until_its_add() {
        let steps = [
            step(&["x"], &[("a", 10)]),
            step(&["a"], &[("b", 10)]),
            step(&["b"], &[("c", 10)]),
            step(&["c", "a"], &[("y", 10)]),
        ];
        let p = plan(&steps, &["y".into()]);
        assert_ne!(p.assignment["c"], p.assignment["a"]);
        assert_ne!(p.assignment["b"], p.assignment["a"]);
        assert_eq!(p.buffers.len(), 3);
    }

    #[test]
    fn outputs_kept_are_never_reused_and_buffers_grow_to_fit() {
        let steps = [
            step(&["x"], &[("a", 10)]),
            step(&["a"], &[("keep", 10)]),
            step(&["keep"], &[("big", 50)]),
            step(&["big"], &[("z", 5)]),
        ];
        let p = plan(&steps, &["keep".into(), "z".into()]);
        let keep = p.assignment["keep"];
        for t in ["big", "z"] {
            assert_ne!(p.assignment[t], keep, "{t}");
        }
        // "big" reused a's 10-byte buffer, grown to 50.
        assert_eq!(p.assignment["big"], p.assignment["a"]);
        assert_eq!(p.buffers[p.assignment["big"]], 50);
    }

    /// Random step sequences: tensors alive at the same time never share a buffer, and every
    /// buffer holds each tensor placed in it.
    #[test]
    fn live_tensors_never_share_a_buffer() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..200 {
            let n = rng.random_range(1..20);
            let mut steps = Vec::new();
            for i in 0..n {
                let reads: Vec<String> = (0..rng.random_range(0..3))
                    .filter(|_| i > 0)
                    .map(|_| format!("t{}", rng.random_range(0..i)))
                    .collect();
                steps.push(StepUse {
                    reads,
                    writes: vec![(format!("t{i}"), rng.random_range(1..100))],
                });
            }
            let keep = vec![format!("t{}", n - 1)];
            let p = plan(&steps, &keep);
            let last = |t: &str| -> usize {
                if keep.iter().any(|k| k == t) {
                    return usize::MAX;
                }
                let w: usize = t[1..].parse().unwrap();
                steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.reads.iter().any(|r| r == t))
                    .map(|(i, _)| i)
                    .max()
                    .unwrap_or(w)
            };
            for (i, si) in steps.iter().enumerate() {
                let (ti, bi) = (&si.writes[0].0, si.writes[0].1);
                assert!(p.buffers[p.assignment[ti]] >= bi);
                for (j, sj) in steps.iter().enumerate().skip(i + 1) {
                    let tj = &sj.writes[0].0;
                    // ti alive when tj is written (j ≤ last(ti)) → distinct buffers.
                    if j <= last(ti) {
                        assert_ne!(p.assignment[ti], p.assignment[tj], "{ti} and {tj}");
                    }
                }
            }
        }
    }
}
