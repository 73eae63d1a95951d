//! Batches run as parallel batch-1 rows.
//!
//! tract gathers convolution inputs lazily (no materialised im2col) only at batch 1; a batch-N
//! plan builds the whole im2col buffer on one thread. For convolutional models a batch of N is
//! therefore faster as N batch-1 runs spread over the model's threads, each worker running its
//! rows single-threaded, with the results stacked on axis 0 afterwards.
//!
//! This is only valid when every tensor that crosses a segment boundary carries the batch on
//! axis 0. [`Model`](crate::Model) checks that once per model by typing its segments at batch 1 and
//! batch 2 (see `Model::rows_apply`).

use crate::error::{Error, Result};
use std::collections::HashMap;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::{IntoTValue, TValue, Tensor as TractTensor};

/// A set of named engine values (segment inputs, features).
pub(crate) type Env = HashMap<String, TValue>;

/// The batch size shared by every value of `env` on axis 0, if there is one.
pub(crate) fn common_rows(env: &Env) -> Option<usize> {
    let mut rows = env.values().map(|v| v.shape().first().copied());
    let first = rows.next()??;
    rows.all(|r| r == Some(first)).then_some(first)
}

/// Row `i` of every value (a batch-1 slice; one copy per value).
pub(crate) fn row(env: &Env, i: usize) -> Result<Env> {
    env.iter()
        .map(|(name, v)| {
            let r = v.slice(0, i, i + 1).map_err(|e| Error::BadTensor(format!("`{name}`: {e}")))?;
            Ok((name.clone(), r.into_tvalue()))
        })
        .collect()
}

/// Stacks the per-row values of each name back into one batch, in row order.
pub(crate) fn stack(names: &[String], rows: &[Vec<TValue>]) -> Result<Vec<TValue>> {
    (0..names.len())
        .map(|k| {
            let parts: Vec<&TractTensor> = rows.iter().map(|r| &*r[k]).collect();
            TractTensor::stack_tensors(0, &parts)
                .map(|t| t.into_tvalue())
                .map_err(|e| Error::BadTensor(format!("stacking `{}`: {e}", names[k])))
        })
        .collect()
}

/// Computes `f(i)` for every row `i < n` on up to `workers` threads (contiguous chunks of rows,
/// each worker single-threaded inside tract) and returns the results in row order.
pub(crate) fn map_rows<R: Send>(
    n: usize,
    workers: usize,
    f: impl Fn(usize) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let workers = workers.clamp(1, n.max(1));
    let single = |range: std::ops::Range<usize>| -> Result<Vec<R>> {
        multithread_tract_scope(Executor::SingleThread, || range.map(&f).collect())
    };
    if workers == 1 {
        return single(0..n);
    }
    let chunks: Vec<std::ops::Range<usize>> =
        (0..workers).map(|w| (w * n / workers)..((w + 1) * n / workers)).collect();
    let results: Vec<Result<Vec<R>>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks.into_iter().map(|range| s.spawn(|| single(range))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::backend("batch worker", "panicked"))))
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tensor2;

    #[test]
    fn rows_round_trip_through_stack() {
        let a = tensor2(&[[1f32, 2.], [3., 4.], [5., 6.]]).into_tvalue();
        let b = tensor2(&[[7i64], [8], [9]]).into_tvalue();
        let env: Env = [("a".to_string(), a.clone()), ("b".to_string(), b.clone())].into();
        assert_eq!(common_rows(&env), Some(3));
        let names = vec!["a".to_string(), "b".to_string()];
        let rows = map_rows(3, 2, |i| {
            let r = row(&env, i)?;
            Ok(vec![r["a"].clone(), r["b"].clone()])
        })
        .unwrap();
        let back = stack(&names, &rows).unwrap();
        assert_eq!(back[0], a);
        assert_eq!(back[1], b);
    }

    #[test]
    fn mismatched_batches_have_no_common_rows() {
        let env: Env = [
            ("a".to_string(), tensor2(&[[1f32], [2.]]).into_tvalue()),
            ("b".to_string(), tensor2(&[[1f32], [2.], [3.]]).into_tvalue()),
        ]
        .into();
        assert_eq!(common_rows(&env), None);
    }

    #[test]
    fn worker_errors_surface_in_order() {
        let r =
            map_rows(
                5,
                3,
                |i| if i == 3 { Err(Error::backend("row", "row 3 failed")) } else { Ok(i) },
            );
        assert!(r.unwrap_err().to_string().contains("row 3"));
        assert_eq!(map_rows(5, 3, Ok).unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(map_rows(0, 3, Ok).unwrap(), Vec::<usize>::new());
    }
}
