//! Labels of training samples, per task, with missing labels masked.

use super::loss::Target;
use super::spec::TaskSpec;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// The labels of a batch of samples for one head: class indices (i64) for cross-entropy, float
/// targets otherwise, and optionally which samples have a label at all.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    values: Tensor,
    mask: Option<Vec<bool>>,
}

impl Labels {
    /// Labels for every sample (axis 0 of `values` is the sample axis).
    pub fn new(values: Tensor) -> Labels {
        Labels { values, mask: None }
    }

    /// Labels where `mask[i]` false means sample `i` has none (its value is ignored).
    pub fn masked(values: Tensor, mask: Vec<bool>) -> Result<Labels> {
        if values.shape().first() != Some(&mask.len()) {
            return Err(Error::BadTensor(format!(
                "label mask has {} entries for labels of shape {:?}",
                mask.len(),
                values.shape()
            )));
        }
        Ok(Labels { values, mask: Some(mask) })
    }

    /// Number of samples.
    pub fn rows(&self) -> usize {
        self.values.shape().first().copied().unwrap_or(0)
    }

    /// The label values.
    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// Which samples have a label (`None`: all).
    pub fn mask(&self) -> Option<&[bool]> {
        self.mask.as_deref()
    }
}

#[derive(Debug, Clone)]
enum Values {
    Classes(Vec<i64>),
    Floats(Vec<f32>),
}

/// Every sample's label for one task, in sample order.
#[derive(Debug, Clone)]
pub(crate) struct LabelStore {
    values: Values,
    row_shape: Option<Vec<usize>>,
    row_len: usize,
    present: Vec<bool>,
}

impl LabelStore {
    pub fn new(task: &TaskSpec) -> LabelStore {
        let values = if task.is_classification() {
            Values::Classes(Vec::new())
        } else {
            Values::Floats(Vec::new())
        };
        LabelStore { values, row_shape: None, row_len: 0, present: Vec::new() }
    }

    /// Whether sample `i` has a label.
    pub fn has(&self, i: usize) -> bool {
        self.present.get(i).copied().unwrap_or(false)
    }

    /// Samples with a label.
    pub fn labelled(&self) -> usize {
        self.present.iter().filter(|&&p| p).count()
    }

    /// Appends `n` samples without labels.
    pub fn push_missing(&mut self, n: usize) {
        let fill = n * self.row_len;
        match &mut self.values {
            Values::Classes(v) => v.extend(std::iter::repeat_n(0, fill)),
            Values::Floats(v) => v.extend(std::iter::repeat_n(0.0, fill)),
        }
        self.present.extend(std::iter::repeat_n(false, n));
    }

    /// Appends labels, checked against the head's output shape per sample `out_row`
    /// (`[C, …]`).
    pub fn push(
        &mut self,
        head: &str,
        task: &TaskSpec,
        labels: &Labels,
        out_row: &[usize],
    ) -> Result<()> {
        let t = labels.values();
        let n = labels.rows();
        let row: Vec<usize> = t.shape().get(1..).unwrap_or(&[]).to_vec();
        let expected: Vec<usize> = if task.is_classification() {
            out_row.get(1..).unwrap_or(&[]).to_vec()
        } else {
            out_row.to_vec()
        };
        if row != expected {
            let what = if task.is_classification() { "class indices" } else { "targets" };
            return Err(Error::BadTensor(format!(
                "labels of head `{head}`: shape {:?}, expected {what} of shape [N{}] for outputs of shape [N, {}]",
                t.shape(),
                expected.iter().map(|d| format!(", {d}")).collect::<String>(),
                out_row.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(prev) = &self.row_shape {
            if *prev != row {
                return Err(Error::BadTensor(format!(
                    "labels of head `{head}`: row shape {row:?} differs from {prev:?}"
                )));
            }
        } else {
            let missing = self.present.len();
            self.row_len = row.iter().product();
            self.row_shape = Some(row);
            // Samples added before the first labels carry none.
            self.present.clear();
            match &mut self.values {
                Values::Classes(v) => v.clear(),
                Values::Floats(v) => v.clear(),
            }
            self.push_missing(missing);
        }
        match (&mut self.values, t.dtype()) {
            (Values::Classes(v), DType::I64 | DType::I32 | DType::U8 | DType::I8) => {
                let t64 = if t.dtype() == DType::I64 { t.clone() } else { to_i64(t)? };
                v.extend_from_slice(t64.as_slice::<i64>().unwrap_or(&[]));
            }
            (
                Values::Floats(v),
                DType::F32
                | DType::F64
                | DType::F16
                | DType::BF16
                | DType::U8
                | DType::I64
                | DType::I32,
            ) => {
                let f = t.to_f32();
                v.extend_from_slice(f.as_slice::<f32>().unwrap_or(&[]));
            }
            (Values::Classes(_), d) => {
                return Err(Error::BadTensor(format!(
                "labels of head `{head}`: {d} values, cross-entropy needs integer class indices"
            )))
            }
            (Values::Floats(_), d) => {
                return Err(Error::BadTensor(format!(
                    "labels of head `{head}`: {d} values, expected floats"
                )))
            }
        }
        match labels.mask() {
            Some(m) => self.present.extend_from_slice(m),
            None => self.present.extend(std::iter::repeat_n(true, n)),
        }
        Ok(())
    }

    /// The labels of samples `idx`, as a loss target.
    pub fn gather(&self, idx: &[usize]) -> Gathered {
        let len = self.row_len;
        match &self.values {
            Values::Classes(v) => Gathered::Classes(
                idx.iter().flat_map(|&i| v[i * len..(i + 1) * len].iter().copied()).collect(),
            ),
            Values::Floats(v) => Gathered::Floats(
                idx.iter().flat_map(|&i| v[i * len..(i + 1) * len].iter().copied()).collect(),
            ),
        }
    }
}

fn to_i64(t: &Tensor) -> Result<Tensor> {
    let v: Vec<i64> = match t.data() {
        crate::tensor::TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
        crate::tensor::TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
        crate::tensor::TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
        _ => {
            return Err(Error::BadTensor(format!(
                "cannot read {} labels as class indices",
                t.dtype()
            )))
        }
    };
    Tensor::new(t.shape(), v)
}

/// Labels gathered for a batch.
#[derive(Debug, Clone)]
pub(crate) enum Gathered {
    Classes(Vec<i64>),
    Floats(Vec<f32>),
}

impl Gathered {
    pub fn target(&self) -> Target<'_> {
        match self {
            Gathered::Classes(v) => Target::Classes(v),
            Gathered::Floats(v) => Target::Values(v),
        }
    }
}
