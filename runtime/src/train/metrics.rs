//! Per-task metrics accumulated over an epoch: loss; accuracy and macro-F1 (classification and
//! multi-label); mIoU (per-pixel classification); MAE and RMSE (regression).

use super::array::Array;
use super::loss::Target;
use super::spec::TaskSpec;
use serde::{Deserialize, Serialize};

/// Metrics of one task over one pass through the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskMetrics {
    /// Head name.
    pub head: String,
    /// Mean loss (over every counted element, as one big batch would give).
    pub loss: f64,
    /// Fraction of correct predictions (classification, multi-label per label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Macro-averaged F1 over classes (or labels) that occur.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// Mean intersection-over-union over classes that occur (per-pixel classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miou: Option<f64>,
    /// Mean absolute error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Root mean squared error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Labelled samples seen.
    pub samples: usize,
}

/// Accumulates one task's metrics batch by batch.
#[derive(Debug, Clone)]
pub struct MetricAccumulator {
    task: TaskSpec,
    head: String,
    loss_sum: f64,
    loss_den: f64,
    samples: usize,
    /// Classification: confusion[truth·C + predicted]; multi-label: per label (tp, fp, fn, tn).
    confusion: Vec<u64>,
    spatial: bool,
    abs_sum: f64,
    sq_sum: f64,
    count: u64,
}

impl MetricAccumulator {
    /// An empty accumulator for a head with this task.
    pub fn new(head: &str, task: &TaskSpec) -> MetricAccumulator {
        let c = task.channels();
        let confusion = match task {
            TaskSpec::CrossEntropy { .. } => vec![0; c * c],
            TaskSpec::Bce { .. } => vec![0; 4 * c],
            _ => vec![],
        };
        MetricAccumulator {
            task: task.clone(),
            head: head.to_string(),
            loss_sum: 0.0,
            loss_den: 0.0,
            samples: 0,
            confusion,
            spatial: false,
            abs_sum: 0.0,
            sq_sum: 0.0,
            count: 0,
        }
    }

    /// Adds a batch: the head output, its targets, the sample mask, and the batch's mean loss
    /// with its denominator.
    pub fn add(
        &mut self,
        out: &Array<f32>,
        target: Target,
        mask: Option<&[bool]>,
        loss: f64,
        denominator: f64,
    ) {
        self.loss_sum += loss * denominator;
        self.loss_den += denominator;
        let shape = out.shape();
        let (n, c) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        self.spatial |= s > 1 && self.task.is_classification();
        let counted = |b: usize| mask.is_none_or(|m| m[b]);
        self.samples += (0..n).filter(|&b| counted(b)).count();
        let z = out.data();
        match (&self.task, target) {
            (TaskSpec::CrossEntropy { ignore_index, .. }, Target::Classes(y)) => {
                // The arg-max over channels, for a chunk of pixels at a time: a loop over each
                // channel's contiguous run of them (the first maximum wins, as `>` keeps it).
                const CHUNK: usize = 64;
                for b in (0..n).filter(|&b| counted(b)) {
                    for p0 in (0..s).step_by(CHUNK) {
                        let len = CHUNK.min(s - p0);
                        let row = |j: usize| &z[(b * c + j) * s + p0..][..len];
                        let (mut top, mut best) = ([0f32; CHUNK], [0usize; CHUNK]);
                        top[..len].copy_from_slice(row(0));
                        for j in 1..c {
                            for ((t, k), &v) in top.iter_mut().zip(&mut best).zip(row(j)) {
                                if v > *t {
                                    (*t, *k) = (v, j);
                                }
                            }
                        }
                        for (&label, &pred) in y[b * s + p0..][..len].iter().zip(&best) {
                            if label != *ignore_index && label >= 0 && (label as usize) < c {
                                self.confusion[label as usize * c + pred] += 1;
                            }
                        }
                    }
                }
            }
            (TaskSpec::Bce { .. }, Target::Values(y)) => {
                for b in (0..n).filter(|&b| counted(b)) {
                    for j in 0..c {
                        for p in 0..s {
                            let i = (b * c + j) * s + p;
                            let (pred, truth) = (z[i] > 0.0, y[i] >= 0.5);
                            let k = match (truth, pred) {
                                (true, true) => 0,
                                (false, true) => 1,
                                (true, false) => 2,
                                (false, false) => 3,
                            };
                            self.confusion[4 * j + k] += 1;
                        }
                    }
                }
            }
            (_, Target::Values(y)) => {
                let per = c * s;
                for b in (0..n).filter(|&b| counted(b)) {
                    for i in b * per..(b + 1) * per {
                        let d = (z[i] - y[i]) as f64;
                        self.abs_sum += d.abs();
                        self.sq_sum += d * d;
                        self.count += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// The metrics so far.
    pub fn finish(&self) -> TaskMetrics {
        let mut m = TaskMetrics {
            head: self.head.clone(),
            loss: if self.loss_den > 0.0 { self.loss_sum / self.loss_den } else { 0.0 },
            samples: self.samples,
            ..TaskMetrics::default()
        };
        let c = self.task.channels();
        match self.task {
            TaskSpec::CrossEntropy { .. } => {
                let cm = &self.confusion;
                let total: u64 = cm.iter().sum();
                if total > 0 {
                    let correct: u64 = (0..c).map(|k| cm[k * c + k]).sum();
                    m.accuracy = Some(correct as f64 / total as f64);
                    let mut f1s = Vec::new();
                    for k in 0..c {
                        let tp = cm[k * c + k] as f64;
                        let actual: u64 = (0..c).map(|p| cm[k * c + p]).sum();
                        let predicted: u64 = (0..c).map(|t| cm[t * c + k]).sum();
                        if actual == 0 && predicted == 0 {
                            continue;
                        }
                        f1s.push(2.0 * tp / (actual + predicted) as f64);
                    }
                    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
                    m.macro_f1 = Some(mean(&f1s));
                    if self.spatial {
                        let ious: Vec<f64> = (0..c)
                            .filter_map(|k| {
                                let tp = cm[k * c + k] as f64;
                                let actual: u64 = (0..c).map(|p| cm[k * c + p]).sum();
                                let predicted: u64 = (0..c).map(|t| cm[t * c + k]).sum();
                                let union = (actual + predicted) as f64 - tp;
                                (union > 0.0).then(|| tp / union)
                            })
                            .collect();
                        m.miou = Some(mean(&ious));
                    }
                }
            }
            TaskSpec::Bce { .. } => {
                let cm = &self.confusion;
                let total: u64 = cm.iter().sum();
                if total > 0 {
                    let correct: u64 = (0..c).map(|j| cm[4 * j] + cm[4 * j + 3]).sum();
                    m.accuracy = Some(correct as f64 / total as f64);
                    let f1s: Vec<f64> = (0..c)
                        .filter_map(|j| {
                            let (tp, fp, fne) = (cm[4 * j], cm[4 * j + 1], cm[4 * j + 2]);
                            let d = 2 * tp + fp + fne;
                            (d > 0).then(|| 2.0 * tp as f64 / d as f64)
                        })
                        .collect();
                    m.macro_f1 = Some(f1s.iter().sum::<f64>() / f1s.len().max(1) as f64);
                }
            }
            _ if self.count > 0 => {
                m.mae = Some(self.abs_sum / self.count as f64);
                m.rmse = Some((self.sq_sum / self.count as f64).sqrt());
            }
            _ => {}
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics_match_hand_counts() {
        let task = TaskSpec::from_loss_name("ce", 3).unwrap();
        let mut acc = MetricAccumulator::new("h", &task);
        // Predictions (argmax): 0, 1, 1, 2; truth: 0, 1, 2, 2.
        let z = Array::new(&[4, 3], vec![5., 0., 0., 0., 5., 0., 0., 5., 0., 0., 0., 5.]).unwrap();
        acc.add(&z, Target::Classes(&[0, 1, 2, 2]), None, 0.5, 4.0);
        let m = acc.finish();
        assert_eq!(m.accuracy, Some(0.75));
        // F1: class0 1, class1 2·1/(1+2)=2/3, class2 2·1/(2+1)=2/3.
        assert!((m.macro_f1.unwrap() - (1.0 + 4.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!((m.loss, m.samples, m.miou), (0.5, 4, None));
    }

    #[test]
    fn segmentation_miou_and_regression_errors() {
        let task = TaskSpec::from_loss_name("ce", 2).unwrap();
        let mut acc = MetricAccumulator::new("seg", &task);
        // One sample, 2 classes, 2 pixels: predictions [1, 1], truth [0, 1].
        let z = Array::new(&[1, 2, 2], vec![0., 0., 1., 1.]).unwrap();
        acc.add(&z, Target::Classes(&[0, 1]), None, 1.0, 2.0);
        // IoU: class0 0/1, class1 1/2.
        assert_eq!(acc.finish().miou, Some(0.25));
        let mut reg = MetricAccumulator::new("r", &TaskSpec::Mse { outputs: 2 });
        let z = Array::new(&[2, 2], vec![1., 2., 3., 4.]).unwrap();
        reg.add(&z, Target::Values(&[0., 2., 3., 0.]), Some(&[true, false]), 0.5, 2.0);
        let m = reg.finish();
        assert_eq!((m.mae, m.rmse, m.samples), (Some(0.5), Some((0.5f64).sqrt()), 1));
    }
}
