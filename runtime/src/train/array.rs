//! [`Array`]: the dense row-major buffer layers, losses and optimizers compute on.

use super::real::Real;
use crate::error::{Error, Result};
use crate::tensor::{element_count, Tensor, TensorData};

/// A dense row-major array of [`Real`] elements with a shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Array<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Real> Array<T> {
    /// An array from a shape and its row-major elements (their count must match the shape).
    pub fn new(shape: &[usize], data: Vec<T>) -> Result<Array<T>> {
        let n = element_count(shape)?;
        if n != data.len() {
            return Err(Error::BadTensor(format!(
                "shape {shape:?} needs {n} elements, got {}",
                data.len()
            )));
        }
        Ok(Array { shape: shape.to_vec(), data })
    }

    /// An array of zeros.
    pub fn zeros(shape: &[usize]) -> Result<Array<T>> {
        Ok(Array { shape: shape.to_vec(), data: vec![T::zero(); element_count(shape)?] })
    }

    /// An array of zeros with the shape of `self`.
    pub fn zeros_like(&self) -> Array<T> {
        Array { shape: self.shape.clone(), data: vec![T::zero(); self.data.len()] }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The elements, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The elements.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Array<T>> {
        Array::new(shape, self.data)
    }

    /// Element-wise map.
    pub fn map(mut self, f: impl Fn(T) -> T) -> Array<T> {
        self.data.iter_mut().for_each(|x| *x = f(*x));
        self
    }

    /// Converts a hydrant [`Tensor`] of floats (f32, f64, f16, bf16).
    pub fn from_tensor(t: &Tensor) -> Result<Array<T>> {
        let data: Vec<T> = match t.data() {
            TensorData::F32(v) => v.iter().map(|&x| T::of_f32(x)).collect(),
            TensorData::F64(v) => v.iter().map(|&x| T::of(x)).collect(),
            TensorData::F16(v) => v.iter().map(|x| T::of_f32(x.to_f32())).collect(),
            TensorData::BF16(v) => v.iter().map(|x| T::of_f32(x.to_f32())).collect(),
            _ => {
                return Err(Error::BadTensor(format!(
                    "expected floating-point elements, got {}",
                    t.dtype()
                )))
            }
        };
        Array::new(t.shape(), data)
    }

    /// Converts to an f32 [`Tensor`].
    pub fn to_tensor(&self) -> Tensor {
        let data: Vec<f32> = self.data.iter().map(|&x| Real::to_f32(x)).collect();
        Tensor::new(&self.shape, data).expect("an array's shape matches its data")
    }

    /// Converts to another element type.
    pub fn cast<U: Real>(&self) -> Array<U> {
        Array {
            shape: self.shape.clone(),
            data: self.data.iter().map(|x| U::of(x.to_f64().unwrap_or(f64::NAN))).collect(),
        }
    }
}
