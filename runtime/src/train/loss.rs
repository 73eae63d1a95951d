//! Losses on a head's raw output (logits for classification), with their gradients.
//!
//! Each loss is the mean over the elements that count, as PyTorch's `reduction="mean"`: samples
//! whose label is missing (`mask` false) and cross-entropy labels equal to `ignore_index` do not
//! count. A batch with nothing to count has loss 0 and a zero gradient.

use super::array::Array;
use super::real::Real;
use super::spec::TaskSpec;
use crate::error::{Error, Result};

/// The labels of a batch, laid out like the head output without its channel axis
/// (classification, `[N, …]`) or exactly like the head output (values).
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Class indices.
    Classes(&'a [i64]),
    /// Target values (0/1 or soft labels for BCE).
    Values(&'a [f32]),
}

/// A loss value, its gradient with respect to the head output, and how much counted.
#[derive(Debug, Clone)]
pub struct LossOutput<T> {
    /// The mean loss over what counted.
    pub loss: T,
    /// ∂loss/∂output.
    pub grad: Array<T>,
    /// The mean's denominator (elements counted, or their class-weight sum).
    pub denominator: f64,
}

/// `(N, C, S)`: batch, channels, spatial elements per channel.
fn dims<T: Real>(task: &TaskSpec, out: &Array<T>) -> Result<(usize, usize, usize)> {
    let c = task.channels();
    match out.shape() {
        [n, ch, rest @ ..] if *ch == c => Ok((*n, c, rest.iter().product())),
        s => Err(Error::BadTensor(format!(
            "{} loss: head output has shape {s:?}, expected [N, {c}, …]",
            task.loss_name()
        ))),
    }
}

/// Computes the loss of `out` against `target`. `mask[n]` false marks sample `n`'s label as
/// missing.
pub fn compute<T: Real>(
    task: &TaskSpec,
    out: &Array<T>,
    target: Target,
    mask: Option<&[bool]>,
) -> Result<LossOutput<T>> {
    let (n, c, s) = dims(task, out)?;
    if mask.is_some_and(|m| m.len() != n) {
        return Err(Error::BadTensor(format!(
            "label mask has {} entries for {n} samples",
            mask.map_or(0, <[bool]>::len)
        )));
    }
    let counted = |b: usize| mask.is_none_or(|m| m[b]);
    match (task, target) {
        (
            TaskSpec::CrossEntropy { class_weights, label_smoothing, ignore_index, .. },
            Target::Classes(y),
        ) => {
            if y.len() != n * s {
                return Err(Error::BadTensor(format!(
                    "cross-entropy: {} labels for an output of shape {:?} (expected {})",
                    y.len(),
                    out.shape(),
                    n * s
                )));
            }
            cross_entropy(
                out,
                y,
                (n, c, s),
                class_weights.as_deref(),
                *label_smoothing,
                *ignore_index,
                counted,
            )
        }
        (TaskSpec::CrossEntropy { .. }, Target::Values(_)) => Err(Error::BadTensor(
            "cross-entropy needs integer class labels, got float targets".into(),
        )),
        (_, Target::Classes(_)) => Err(Error::BadTensor(format!(
            "{} loss needs float targets, got integer class labels",
            task.loss_name()
        ))),
        (_, Target::Values(y)) => {
            if y.len() != out.len() {
                return Err(Error::BadTensor(format!(
                    "{} loss: {} targets for an output of shape {:?}",
                    task.loss_name(),
                    y.len(),
                    out.shape()
                )));
            }
            elementwise(task, out, y, c * s, counted)
        }
    }
}

fn cross_entropy<T: Real>(
    out: &Array<T>,
    y: &[i64],
    (n, c, s): (usize, usize, usize),
    weights: Option<&[f32]>,
    eps: f32,
    ignore: i64,
    counted: impl Fn(usize) -> bool,
) -> Result<LossOutput<T>> {
    let bad = |l: &&i64| **l != ignore && !(0..c as i64).contains(*l);
    let samples = (0..n).filter(|&b| counted(b));
    if let Some(&label) = samples.clone().find_map(|b| y[b * s..][..s].iter().find(bad)) {
        return Err(Error::BadTensor(format!(
            "cross-entropy: label {label} is not a class in 0..{c}"
        )));
    }
    let w = |k: usize| weights.map_or(T::one(), |w| T::of_f32(w[k]));
    let w_sum: T = (0..c).map(w).sum();
    let eps = T::of_f32(eps);
    let (hard, smooth) = (T::one() - eps, eps / T::of(c as f64));
    let mut grad = out.zeros_like();
    let (z, g) = (out.data(), grad.data_mut());
    let (mut total, mut denom) = (T::zero(), T::zero());
    // Pixels in chunks, each channel's run of them contiguous: every step is a branch-free
    // loop over the chunk's pixels, which vectorises. Per pixel, with lse = log Σ_j e^{z_j}:
    // loss (1−ε)·w_y·(lse − z_y) + (ε/C)·Σ_j w_j·(lse − z_j), gradient
    // (1−ε)·w_y·(p_j − [j = y]) + (ε/C)·(Σw·p_j − w_j); ignored pixels count for nothing.
    const CHUNK: usize = 64;
    let mut e = vec![T::zero(); c * CHUNK];
    let zero = [T::zero(); CHUNK];
    for b in samples {
        for p0 in (0..s).step_by(CHUNK) {
            let len = CHUNK.min(s - p0);
            // The chunk's labels as class ids, −1 where ignored (all were checked above).
            let mut class = [-1i32; CHUNK];
            for (k, &l) in class.iter_mut().zip(&y[b * s + p0..][..len]) {
                *k = if l == ignore { -1 } else { l as i32 };
            }
            let row = |j: usize| &z[(b * c + j) * s + p0..][..len];
            let mut max = zero;
            max[..len].copy_from_slice(row(0));
            for j in 1..c {
                max.iter_mut().zip(row(j)).for_each(|(m, &v)| *m = if v > *m { v } else { *m });
            }
            let (mut sum, mut wy, mut zy, mut wz) = (zero, zero, zero, zero);
            for j in 0..c {
                let (ej, wj) = (&mut e[j * CHUNK..][..len], w(j));
                for i in 0..len {
                    let v = row(j)[i];
                    ej[i] = (v - max[i]).exp_in_loop();
                    sum[i] += ej[i];
                    let hit = class[i] == j as i32;
                    wy[i] += if hit { wj } else { T::zero() };
                    zy[i] += if hit { v } else { T::zero() };
                    wz[i] += wj * v;
                }
            }
            let (mut lse, mut term) = (zero, zero);
            for i in 0..len {
                lse[i] = sum[i].ln() + max[i];
                sum[i] = T::one() / sum[i];
            }
            for i in 0..len {
                let l = hard * wy[i] * (lse[i] - zy[i]) + smooth * (w_sum * lse[i] - wz[i]);
                term[i] = if class[i] < 0 { T::zero() } else { l };
            }
            for i in 0..len {
                total += term[i];
                denom += if class[i] < 0 { T::zero() } else { wy[i] };
            }
            for j in 0..c {
                let (ej, wj) = (&e[j * CHUNK..][..len], w(j));
                let gj = &mut g[(b * c + j) * s + p0..][..len];
                for i in 0..len {
                    let pj = ej[i] * sum[i];
                    let one_hot = if class[i] == j as i32 { pj - T::one() } else { pj };
                    let v = hard * wy[i] * one_hot + smooth * (w_sum * pj - wj);
                    gj[i] = if class[i] < 0 { T::zero() } else { v };
                }
            }
        }
    }
    finish(total, denom, grad)
}

fn elementwise<T: Real>(
    task: &TaskSpec,
    out: &Array<T>,
    y: &[f32],
    per_sample: usize,
    counted: impl Fn(usize) -> bool,
) -> Result<LossOutput<T>> {
    let mut grad = out.zeros_like();
    let (mut total, mut denom) = (T::zero(), T::zero());
    let half = T::of(0.5);
    for (i, ((&z, &t), g)) in out.data().iter().zip(y).zip(grad.data_mut()).enumerate() {
        if !counted(i / per_sample) {
            continue;
        }
        if !t.is_finite() {
            return Err(Error::BadTensor(format!(
                "{} loss: target {t} at element {i} is not finite (mark missing labels with a mask)",
                task.loss_name()
            )));
        }
        let t = T::of_f32(t);
        let d = z - t;
        let (l, dl) = match task {
            TaskSpec::Mse { .. } => (d * d, d + d),
            TaskSpec::L1 { .. } => {
                (d.abs(), d.signum() * if d == T::zero() { T::zero() } else { T::one() })
            }
            TaskSpec::Huber { delta, .. } => {
                let delta = T::of_f32(*delta);
                if d.abs() < delta {
                    (half * d * d, d)
                } else {
                    (delta * (d.abs() - half * delta), delta * d.signum())
                }
            }
            TaskSpec::SmoothL1 { beta, .. } => {
                let beta = T::of_f32(*beta);
                if d.abs() < beta {
                    (half * d * d / beta, d / beta)
                } else {
                    (d.abs() - half * beta, d.signum())
                }
            }
            TaskSpec::Bce { pos_weight, .. } => {
                let pw = pos_weight.as_ref().map_or(T::one(), |w| {
                    T::of_f32(w[(i % per_sample) / (per_sample / w.len()).max(1)])
                });
                // l = (1−t)·z + (1 + (pw−1)·t)·softplus(−z), stable form.
                let lw = T::one() + (pw - T::one()) * t;
                let softplus_neg = (-z.abs()).exp().ln_1p() + (-z).max(T::zero());
                let sig = T::one() / (T::one() + (-z).exp());
                ((T::one() - t) * z + lw * softplus_neg, (T::one() - t) - lw * (T::one() - sig))
            }
            TaskSpec::CrossEntropy { .. } => unreachable!("cross-entropy handled separately"),
        };
        total += l;
        denom += T::one();
        *g = dl;
    }
    finish(total, denom, grad)
}

fn finish<T: Real>(total: T, denom: T, mut grad: Array<T>) -> Result<LossOutput<T>> {
    if denom == T::zero() {
        return Ok(LossOutput { loss: T::zero(), grad: grad.zeros_like(), denominator: 0.0 });
    }
    grad.data_mut().iter_mut().for_each(|g| *g /= denom);
    Ok(LossOutput { loss: total / denom, grad, denominator: denom.to_f64().unwrap_or(0.0) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn ce(weights: Option<Vec<f32>>, smoothing: f32) -> TaskSpec {
        TaskSpec::CrossEntropy {
            classes: 4,
            class_weights: weights,
            label_smoothing: smoothing,
            ignore_index: -100,
        }
    }

    /// Central differences of `compute` against its analytic gradient, in f64.
    fn check(task: &TaskSpec, shape: &[usize], target: Target, mask: Option<&[bool]>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = shape.iter().product();
        let x = Array::new(shape, (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()).unwrap();
        let base = compute::<f64>(task, &x, target, mask).unwrap();
        for i in 0..n {
            let mut p = x.clone();
            p.data_mut()[i] += 1e-6;
            let up = compute(task, &p, target, mask).unwrap().loss;
            p.data_mut()[i] -= 2e-6;
            let down = compute(task, &p, target, mask).unwrap().loss;
            let numeric = (up - down) / 2e-6;
            let analytic = base.grad.data()[i];
            assert!(
                (numeric - analytic).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{task:?} [{i}]: {analytic} vs {numeric}"
            );
        }
    }

    #[test]
    fn cross_entropy_gradients_match_finite_differences() {
        let y = [0i64, 3, 1, -100, 2, 2];
        check(&ce(None, 0.0), &[6, 4], Target::Classes(&y), None);
        check(&ce(Some(vec![0.5, 2.0, 1.0, 0.1]), 0.2), &[6, 4], Target::Classes(&y), None);
        let mask = [true, false, true, true, true, false];
        check(&ce(None, 0.1), &[6, 4], Target::Classes(&y), Some(&mask));
        // Per pixel: [N=2, C=4, 2×2] with labels [2, 2, 2].
        let y = [0i64, 1, 2, 3, -100, 1, 1, 0];
        check(&ce(Some(vec![1.0, 2.0, 0.5, 1.0]), 0.1), &[2, 4, 2, 2], Target::Classes(&y), None);
        // An ignore index that is also a class id: its pixels count for nothing.
        let y = [0i64, 1, 2, 3, 3, 1, 1, 0];
        let task = TaskSpec::CrossEntropy {
            classes: 4,
            class_weights: Some(vec![1.0, 2.0, 0.5, 1.0]),
            label_smoothing: 0.1,
            ignore_index: 1,
        };
        check(&task, &[2, 4, 2, 2], Target::Classes(&y), None);
        // Long rows: several pixel chunks, the last one partial.
        let y: Vec<i64> = (0..2 * 150).map(|i| (i * 7 % 5) as i64 - 1).collect();
        let task = TaskSpec::CrossEntropy {
            classes: 4,
            class_weights: None,
            label_smoothing: 0.05,
            ignore_index: -1,
        };
        check(&task, &[2, 4, 10, 15], Target::Classes(&y), None);
    }

    #[test]
    fn value_loss_gradients_match_finite_differences() {
        let t: Vec<f32> = (0..12).map(|i| ((i * 7) % 5) as f32 * 0.4 - 0.8).collect();
        let b: Vec<f32> = (0..12).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let mask = [true, false, true];
        for task in [
            TaskSpec::Mse { outputs: 4 },
            TaskSpec::L1 { outputs: 4 },
            TaskSpec::Huber { outputs: 4, delta: 0.7 },
            TaskSpec::SmoothL1 { outputs: 4, beta: 0.5 },
        ] {
            check(&task, &[3, 4], Target::Values(&t), None);
            check(&task, &[3, 4], Target::Values(&t), Some(&mask));
        }
        check(&TaskSpec::Bce { labels: 4, pos_weight: None }, &[3, 4], Target::Values(&b), None);
        let pw = TaskSpec::Bce { labels: 4, pos_weight: Some(vec![1.0, 3.0, 0.5, 2.0]) };
        check(&pw, &[3, 4], Target::Values(&b), Some(&mask));
    }

    #[test]
    fn bad_labels_are_named() {
        let x = Array::<f32>::zeros(&[2, 4]).unwrap();
        let e = compute(&ce(None, 0.0), &x, Target::Classes(&[0, 7]), None).unwrap_err();
        assert!(e.to_string().contains("label 7"), "{e}");
        let e = compute(&TaskSpec::Mse { outputs: 4 }, &x, Target::Values(&[f32::NAN; 8]), None)
            .unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
        let e = compute(&ce(None, 0.0), &x, Target::Values(&[0.0; 8]), None).unwrap_err();
        assert!(e.to_string().contains("integer class labels"), "{e}");
    }

    #[test]
    fn everything_masked_is_zero() {
        let x = Array::<f32>::zeros(&[2, 4]).unwrap();
        let out =
            compute(&ce(None, 0.0), &x, Target::Classes(&[1, 2]), Some(&[false, false])).unwrap();
        assert_eq!((out.loss, out.denominator), (0.0, 0.0));
        assert!(out.grad.data().iter().all(|&g| g == 0.0));
    }
}
