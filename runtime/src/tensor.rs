//! [`Tensor`]: an owned, dense, row-major n-dimensional array with a runtime data type.
//!
//! This is the type that crosses hydrant's public API (inputs, outputs, features, training data).
//! It is deliberately small: a shape and a typed vector. Conversions to and from the engines'
//! own tensor types live in the backends.

use crate::error::{Error, Result};
use half::{bf16, f16};

/// Largest number of dimensions hydrant accepts anywhere (inputs, files, head definitions).
pub const MAX_RANK: usize = 8;

/// Element data type of a [`Tensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// Unsigned byte (images).
    U8,
    /// Signed byte.
    I8,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer (labels, ONNX shapes).
    I64,
    /// Boolean, one byte per element.
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::I8 | DType::Bool => 1,
        }
    }

    /// Lower-case name, as used in messages and on the command line (`f32`, `u8`…).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The typed storage behind a [`Tensor`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// u8 elements.
    U8(Vec<u8>),
    /// i8 elements.
    I8(Vec<i8>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// bool elements.
    Bool(Vec<bool>),
}

/// Element types a [`Tensor`] can hold. Sealed: implemented for the [`DType`] element types.
pub trait Element: Copy + Send + Sync + 'static + private::Sealed {
    /// The matching runtime data type.
    const DTYPE: DType;
    #[doc(hidden)]
    fn wrap(v: Vec<Self>) -> TensorData;
    #[doc(hidden)]
    fn slice(d: &TensorData) -> Option<&[Self]>;
    #[doc(hidden)]
    fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]>;
    #[doc(hidden)]
    fn unwrap(d: TensorData) -> Option<Vec<Self>>;
}

mod private {
    pub trait Sealed {}
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl private::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
            fn slice(d: &TensorData) -> Option<&[Self]> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn unwrap(d: TensorData) -> Option<Vec<Self>> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(f16, F16);
element!(bf16, BF16);
element!(u8, U8);
element!(i8, I8);
element!(i32, I32);
element!(i64, I64);
element!(bool, Bool);

/// Applies `$body` to the vector inside any [`TensorData`] variant, bound as `$v`.
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::BF16($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::Bool($v) => $body,
        }
    };
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
        }
    }
}

/// Number of elements of `shape`, or an error when the product overflows `usize`.
pub fn element_count(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
        Error::BadTensor(format!("shape {shape:?} has more elements than addressable"))
    })
}

/// An owned dense row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor from a shape and its elements in row-major order.
    ///
    /// Fails when the element count does not match the shape or the rank exceeds [`MAX_RANK`].
    pub fn new<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor> {
        Tensor::from_data(shape, T::wrap(data))
    }

    /// Builds a tensor from a shape and typed storage (checked like [`Tensor::new`]).
    pub fn from_data(shape: &[usize], data: TensorData) -> Result<Tensor> {
        if shape.len() > MAX_RANK {
            return Err(Error::BadTensor(format!(
                "rank {} exceeds the maximum of {MAX_RANK}",
                shape.len()
            )));
        }
        let n = element_count(shape)?;
        if n != data.len() {
            return Err(Error::BadTensor(format!(
                "shape {shape:?} needs {n} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    /// A tensor of zeros.
    pub fn zeros<T: Element + Default>(shape: &[usize]) -> Result<Tensor> {
        let n = element_count(shape)?;
        Tensor::new(shape, vec![T::default(); n])
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The typed storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Consumes the tensor, returning shape and storage.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// The elements as a slice of `T`, or `None` when the tensor holds another type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }

    /// The elements as a mutable slice of `T`, or `None` when the tensor holds another type.
    pub fn as_slice_mut<T: Element>(&mut self) -> Option<&mut [T]> {
        T::slice_mut(&mut self.data)
    }

    /// The elements as a vector of `T`, or an error naming both types when they differ.
    pub fn into_vec<T: Element>(self) -> Result<Vec<T>> {
        let dtype = self.dtype();
        T::unwrap(self.data).ok_or_else(|| {
            Error::BadTensor(format!("expected {} elements, tensor holds {dtype}", T::DTYPE))
        })
    }

    /// The same shape with a different element count is an error; otherwise a re-shaped tensor.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_data(shape, self.data)
    }

    /// Converts every element to f32 (floats are rounded, integers and bools converted exactly
    /// where representable).
    pub fn to_f32(&self) -> Tensor {
        let v: Vec<f32> = match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        };
        Tensor { shape: self.shape.clone(), data: TensorData::F32(v) }
    }

    /// Rows `start..end` along the first axis, as a new tensor.
    pub fn slice_rows(&self, start: usize, end: usize) -> Result<Tensor> {
        let rows = self.shape.first().copied().unwrap_or(0);
        if start > end || end > rows {
            return Err(Error::BadTensor(format!(
                "row range {start}..{end} out of bounds for shape {:?}",
                self.shape
            )));
        }
        let row_len = element_count(&self.shape[1..])?;
        let (a, b) = (start * row_len, end * row_len);
        let data = with_data!(&self.data, v => Element::wrap(v[a..b].to_vec()));
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        Ok(Tensor { shape, data })
    }

    /// Concatenates tensors of equal type and trailing shape along the first axis.
    pub fn concat_rows(parts: &[Tensor]) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| Error::BadTensor("cannot concatenate zero tensors".into()))?;
        let tail = first.shape.get(1..).unwrap_or(&[]).to_vec();
        let mut rows = 0usize;
        for p in parts {
            if p.rank() == 0 || p.shape[1..] != tail[..] || p.dtype() != first.dtype() {
                return Err(Error::BadTensor(format!(
                    "cannot concatenate {} {:?} with {} {:?}",
                    first.dtype(),
                    first.shape,
                    p.dtype(),
                    p.shape
                )));
            }
            rows += p.shape[0];
        }
        let mut data = first.data.clone();
        for p in &parts[1..] {
            append(&mut data, &p.data);
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Ok(Tensor { shape, data })
    }
}

fn append(dst: &mut TensorData, src: &TensorData) {
    macro_rules! ext {
        ($($variant:ident),*) => {
            match (dst, src) {
                $((TensorData::$variant(d), TensorData::$variant(s)) => d.extend_from_slice(s),)*
                _ => {}
            }
        };
    }
    ext!(F32, F64, F16, BF16, U8, I8, I32, I64, Bool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_data() {
        assert!(Tensor::new(&[2, 3], vec![0f32; 6]).is_ok());
        let err = Tensor::new(&[2, 3], vec![0f32; 5]).unwrap_err();
        assert!(err.to_string().contains("needs 6 elements, got 5"), "{err}");
        assert!(Tensor::new(&[usize::MAX, 3], vec![0f32; 1]).is_err());
        assert!(Tensor::new(&[1; MAX_RANK + 1], vec![0f32; 1]).is_err());
    }

    #[test]
    fn typed_access_checks_dtype() {
        let t = Tensor::new(&[2], vec![1i64, 2]).unwrap();
        assert_eq!(t.as_slice::<i64>(), Some(&[1i64, 2][..]));
        assert!(t.as_slice::<f32>().is_none());
        assert_eq!(t.to_f32().as_slice::<f32>(), Some(&[1f32, 2.0][..]));
        assert!(t.into_vec::<f32>().is_err());
    }

    #[test]
    fn rows_slice_and_concat_round_trip() {
        let t = Tensor::new(&[3, 2], (0..6).map(|x| x as f32).collect()).unwrap();
        let a = t.slice_rows(0, 1).unwrap();
        let b = t.slice_rows(1, 3).unwrap();
        assert_eq!(b.shape(), &[2, 2]);
        assert_eq!(Tensor::concat_rows(&[a, b]).unwrap(), t);
        assert!(t.slice_rows(2, 4).is_err());
    }
}
