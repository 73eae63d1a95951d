//! What crosses [`Model`](crate::Model)'s API besides inputs: named [`Outputs`] and trunk
//! [`Features`].

use crate::backend::cpu;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;
use tract_onnx::prelude::TValue;

/// Named output tensors, in the order asked for (head order, then each head's output order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs(Vec<(String, Tensor)>);

impl Outputs {
    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    /// Output names and tensors, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.0.iter().map(|(n, t)| (n.as_str(), t))
    }
    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The named tensors, in order.
    pub fn into_vec(self) -> Vec<(String, Tensor)> {
        self.0
    }

    pub(crate) fn from_values(values: Vec<(String, TValue)>) -> Result<Outputs> {
        values
            .into_iter()
            .map(|(n, v)| Ok((n, cpu::from_tvalue(&v)?)))
            .collect::<Result<_>>()
            .map(Outputs)
    }
}

/// Trunk tensors computed for one input batch: what heads read. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub(crate) values: HashMap<String, TValue>,
}

impl Features {
    /// Names of the tensors held.
    pub fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.values.keys().map(String::as_str).collect();
        n.sort_unstable();
        n
    }
    /// A copy of the tensor called `name`.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let v = self.values.get(name).ok_or_else(|| Error::MissingFeature(name.to_string()))?;
        cpu::from_tvalue(v)
    }
    /// Builds features from tensors (for example ones cached earlier).
    pub fn from_tensors<'a>(
        tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    ) -> Result<Features> {
        let values = tensors
            .into_iter()
            .map(|(n, t)| Ok((n.to_string(), cpu::to_tvalue(t)?)))
            .collect::<Result<_>>()?;
        Ok(Features { values })
    }
}
