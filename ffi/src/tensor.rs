//! `hydrant_tensor`: an owned, dense, row-major tensor handle, and its element types.

use crate::error::{guard, guard_value, hydrant_status, Failure, FfiResult};
use crate::ptr;
use hydrant::tensor::{element_count, Element};
use hydrant::{DType, Tensor, TensorData};
use std::ffi::{c_char, c_void, CString};

/// Element type of a tensor. The values are ONNX's `TensorProto.DataType` numbers.
pub type hydrant_dtype = i32;

/// No element type: what hydrant_tensor_dtype() returns for a NULL tensor.
pub const HYDRANT_DTYPE_UNDEFINED: hydrant_dtype = 0;
/// 32-bit IEEE float (`float`).
pub const HYDRANT_DTYPE_F32: hydrant_dtype = 1;
/// Unsigned byte (`uint8_t`), as in 8-bit images.
pub const HYDRANT_DTYPE_U8: hydrant_dtype = 2;
/// Signed byte (`int8_t`).
pub const HYDRANT_DTYPE_I8: hydrant_dtype = 3;
/// 32-bit signed integer (`int32_t`).
pub const HYDRANT_DTYPE_I32: hydrant_dtype = 6;
/// 64-bit signed integer (`int64_t`), as in class labels.
pub const HYDRANT_DTYPE_I64: hydrant_dtype = 7;
/// Boolean, one byte per element holding 0 or 1.
pub const HYDRANT_DTYPE_BOOL: hydrant_dtype = 9;
/// 16-bit IEEE float, stored as its bits in a `uint16_t`.
pub const HYDRANT_DTYPE_F16: hydrant_dtype = 10;
/// 64-bit IEEE float (`double`).
pub const HYDRANT_DTYPE_F64: hydrant_dtype = 11;
/// bfloat16, stored as its bits in a `uint16_t`.
pub const HYDRANT_DTYPE_BF16: hydrant_dtype = 16;

const DTYPES: [(hydrant_dtype, DType); 9] = [
    (HYDRANT_DTYPE_F32, DType::F32),
    (HYDRANT_DTYPE_U8, DType::U8),
    (HYDRANT_DTYPE_I8, DType::I8),
    (HYDRANT_DTYPE_I32, DType::I32),
    (HYDRANT_DTYPE_I64, DType::I64),
    (HYDRANT_DTYPE_BOOL, DType::Bool),
    (HYDRANT_DTYPE_F16, DType::F16),
    (HYDRANT_DTYPE_F64, DType::F64),
    (HYDRANT_DTYPE_BF16, DType::BF16),
];

pub(crate) fn dtype_from_c(dtype: hydrant_dtype) -> Option<DType> {
    DTYPES.iter().find(|(c, _)| *c == dtype).map(|(_, d)| *d)
}

pub(crate) fn dtype_to_c(dtype: DType) -> hydrant_dtype {
    DTYPES.iter().find(|(_, d)| *d == dtype).map_or(HYDRANT_DTYPE_UNDEFINED, |(c, _)| *c)
}

/// A dense row-major tensor (opaque): shape, element type, data and an optional name. Made by
/// hydrant_tensor_new(), hydrant_tensor_load_npy() and the model calls; freed by
/// hydrant_tensor_free().
pub struct hydrant_tensor {
    tensor: Tensor,
    shape: Vec<i64>,
    name: Option<CString>,
}

impl hydrant_tensor {
    /// Wraps a tensor (with the name of the input or output it stands for, if any).
    pub(crate) fn new(tensor: Tensor, name: Option<&str>) -> hydrant_tensor {
        let shape = tensor.shape().iter().map(|&d| d as i64).collect();
        hydrant_tensor { tensor, shape, name: name.map(ptr::c_name) }
    }

    /// The tensor held.
    pub(crate) fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The name, if set (always UTF-8: names come from `&str`).
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_ref().and_then(|n| n.to_str().ok())
    }

    /// Moves the tensor to the heap and hands C its pointer.
    pub(crate) fn into_raw(self) -> *mut hydrant_tensor {
        Box::into_raw(Box::new(self))
    }

    fn data_ptr(&self) -> *const c_void {
        let d = self.tensor.data();
        match d {
            TensorData::F32(v) => v.as_ptr().cast(),
            TensorData::F64(v) => v.as_ptr().cast(),
            TensorData::F16(v) => v.as_ptr().cast(),
            TensorData::BF16(v) => v.as_ptr().cast(),
            TensorData::U8(v) => v.as_ptr().cast(),
            TensorData::I8(v) => v.as_ptr().cast(),
            TensorData::I32(v) => v.as_ptr().cast(),
            TensorData::I64(v) => v.as_ptr().cast(),
            TensorData::Bool(v) => v.as_ptr().cast(),
        }
    }
}

/// Copies `bytes` (native-endian elements) into a vector of `T`.
fn typed<T: Element + bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
    v
}

/// Builds a tensor of `dtype` and `shape` from its raw bytes (checked against the shape).
fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> FfiResult<Tensor> {
    let data = match dtype {
        DType::F32 => TensorData::F32(typed(bytes)),
        DType::F64 => TensorData::F64(typed(bytes)),
        DType::F16 => TensorData::F16(typed(bytes)),
        DType::BF16 => TensorData::BF16(typed(bytes)),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        DType::I8 => TensorData::I8(typed(bytes)),
        DType::I32 => TensorData::I32(typed(bytes)),
        DType::I64 => TensorData::I64(typed(bytes)),
        DType::Bool => {
            if let Some(i) = bytes.iter().position(|&b| b > 1) {
                return Err(Failure::new(
                    hydrant_status::HYDRANT_ERR_BAD_TENSOR,
                    format!("bool element {i} is {}, expected 0 or 1", bytes[i]),
                ));
            }
            TensorData::Bool(bytes.iter().map(|&b| b == 1).collect())
        }
    };
    Ok(Tensor::from_data(shape, data)?)
}

/// Checks a C shape (no negative dimension) and converts it.
///
/// # Safety
/// As [`ptr::slice`] for `rank` elements at `shape`.
unsafe fn c_shape(shape: *const i64, rank: usize) -> FfiResult<Vec<usize>> {
    // SAFETY: forwarded caller contract.
    let dims = unsafe { ptr::slice(shape, rank, "shape")? };
    dims.iter()
        .enumerate()
        .map(|(i, &d)| {
            usize::try_from(d).map_err(|_| {
                Failure::new(
                    hydrant_status::HYDRANT_ERR_BAD_TENSOR,
                    format!("shape {dims:?}: dimension {i} is negative"),
                )
            })
        })
        .collect()
}

/// Creates a tensor of `dtype` with `shape[0..rank]`, copying its elements from `data`.
///
/// `data` holds the elements in row-major (C) order, native byte order: the product of the
/// dimensions times hydrant_dtype_size(dtype) bytes, with no alignment requirement. `data` and
/// `shape` may be NULL when the tensor has no elements or rank 0 respectively. Both are only read
/// during the call.
///
/// Returns HYDRANT_OK and sets `*out` to a new tensor the caller frees with hydrant_tensor_free().
/// On failure sets `*out` to NULL (unless `out` is NULL) and returns HYDRANT_ERR_NULL_ARGUMENT,
/// HYDRANT_ERR_INVALID_ARGUMENT (unknown dtype) or HYDRANT_ERR_BAD_TENSOR (negative dimension,
/// rank above 8, element count overflow, bool byte other than 0 or 1).
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_new(
    dtype: hydrant_dtype,
    data: *const c_void,
    shape: *const i64,
    rank: usize,
    out: *mut *mut hydrant_tensor,
) -> hydrant_status {
    guard(|| {
        // SAFETY: `out` is NULL or writable (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let dt = dtype_from_c(dtype)
            .ok_or_else(|| Failure::invalid(format!("unknown dtype {dtype}")))?;
        // SAFETY: `shape` is NULL or `rank` elements (header contract).
        let dims = unsafe { c_shape(shape, rank)? };
        let bytes = element_count(&dims)?.checked_mul(dt.size()).ok_or_else(|| {
            Failure::new(
                hydrant_status::HYDRANT_ERR_BAD_TENSOR,
                format!("shape {dims:?} of {dt} has more bytes than addressable"),
            )
        })?;
        // SAFETY: `data` is NULL or `bytes` readable bytes (header contract); u8 has no alignment.
        let bytes = unsafe { ptr::slice(data.cast::<u8>(), bytes, "data")? };
        let tensor = from_bytes(dt, &dims, bytes)?;
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write(out, hydrant_tensor::new(tensor, None).into_raw(), "out") }
    })
}

/// Creates an f32 tensor with `shape[0..rank]`, copying the product of the dimensions floats from
/// `data`. The same as hydrant_tensor_new() with HYDRANT_DTYPE_F32.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_new_f32(
    data: *const f32,
    shape: *const i64,
    rank: usize,
    out: *mut *mut hydrant_tensor,
) -> hydrant_status {
    // SAFETY: same contract as hydrant_tensor_new.
    unsafe { hydrant_tensor_new(HYDRANT_DTYPE_F32, data.cast(), shape, rank, out) }
}

/// Reads a tensor from a NumPy `.npy` file (any supported dtype, C order, little-endian).
///
/// Returns HYDRANT_OK and sets `*out` to a new unnamed tensor the caller frees with
/// hydrant_tensor_free(); on failure sets `*out` to NULL (unless `out` is NULL) and returns
/// HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_IO or HYDRANT_ERR_NPY.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_load_npy(
    path: *const c_char,
    out: *mut *mut hydrant_tensor,
) -> hydrant_status {
    guard(|| {
        // SAFETY: `out` is NULL or writable; `path` NULL or a C string (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let path = unsafe { ptr::string(path, "path")? };
        let tensor = hydrant::read_npy(path)?;
        unsafe { ptr::write(out, hydrant_tensor::new(tensor, None).into_raw(), "out") }
    })
}

/// Writes a tensor to a NumPy `.npy` file, replacing any file at `path`.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_IO.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_save_npy(
    tensor: *const hydrant_tensor,
    path: *const c_char,
) -> hydrant_status {
    guard(|| {
        // SAFETY: NULL or valid pointers (header contract).
        let t = unsafe { ptr::borrow(tensor, "tensor")? };
        let path = unsafe { ptr::string(path, "path")? };
        Ok(hydrant::write_npy(path, &t.tensor)?)
    })
}

/// Frees a tensor. NULL is a no-op. The tensor must not be used afterwards, nor be freed twice.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_free(tensor: *mut hydrant_tensor) {
    guard_value((), || {
        if !tensor.is_null() {
            // SAFETY: a pointer from `into_raw` not freed before (header contract).
            drop(unsafe { Box::from_raw(tensor) });
        }
        Ok(())
    })
}

/// Number of dimensions of `tensor` (0 for a scalar, and for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_rank(tensor: *const hydrant_tensor) -> usize {
    // SAFETY: NULL or a live tensor (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(tensor, "tensor")? }.shape.len()))
}

/// The dimensions of `tensor`: hydrant_tensor_rank() values, owned by the tensor and valid until
/// it is freed. NULL for a NULL tensor.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_shape(tensor: *const hydrant_tensor) -> *const i64 {
    // SAFETY: NULL or a live tensor (header contract).
    guard_value(std::ptr::null(), || Ok(unsafe { ptr::borrow(tensor, "tensor")? }.shape.as_ptr()))
}

/// Element type of `tensor` (HYDRANT_DTYPE_UNDEFINED for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_dtype(tensor: *const hydrant_tensor) -> hydrant_dtype {
    guard_value(HYDRANT_DTYPE_UNDEFINED, || {
        // SAFETY: NULL or a live tensor (header contract).
        Ok(dtype_to_c(unsafe { ptr::borrow(tensor, "tensor")? }.tensor.dtype()))
    })
}

/// Number of elements of `tensor`: the product of its dimensions (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_element_count(tensor: *const hydrant_tensor) -> usize {
    // SAFETY: NULL or a live tensor (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(tensor, "tensor")? }.tensor.len()))
}

/// Size of the data of `tensor` in bytes (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_byte_size(tensor: *const hydrant_tensor) -> usize {
    guard_value(0, || {
        // SAFETY: NULL or a live tensor (header contract).
        let t = unsafe { ptr::borrow(tensor, "tensor")? };
        Ok(t.tensor.len() * t.tensor.dtype().size())
    })
}

/// The elements of `tensor` in row-major order, typed by hydrant_tensor_dtype() (f16 and bf16 as
/// `uint16_t` bits, bool as bytes 0 or 1). Owned by the tensor, valid until it is freed, suitably
/// aligned for its type. NULL for a NULL tensor.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_data(tensor: *const hydrant_tensor) -> *const c_void {
    // SAFETY: NULL or a live tensor (header contract).
    guard_value(std::ptr::null(), || Ok(unsafe { ptr::borrow(tensor, "tensor")? }.data_ptr()))
}

/// The elements of an f32 tensor, as hydrant_tensor_data(); NULL if `tensor` is NULL or its
/// element type is not HYDRANT_DTYPE_F32.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_data_f32(tensor: *const hydrant_tensor) -> *const f32 {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or a live tensor (header contract).
        let t = unsafe { ptr::borrow(tensor, "tensor")? };
        t.tensor.as_slice::<f32>().map(<[f32]>::as_ptr).ok_or_else(|| {
            Failure::new(
                hydrant_status::HYDRANT_ERR_BAD_TENSOR,
                format!("tensor holds {} elements, not f32", t.tensor.dtype()),
            )
        })
    })
}

/// The tensor's name: for an output, the model output it holds; for a tensor made by the caller,
/// what hydrant_tensor_set_name() set. NULL when it has none. Owned by the tensor, valid until it
/// is freed or renamed.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_name(tensor: *const hydrant_tensor) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or a live tensor (header contract).
        let t = unsafe { ptr::borrow(tensor, "tensor")? };
        Ok(t.name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()))
    })
}

/// Names a tensor (copies `name`); NULL `name` removes the name. An input tensor with a name is
/// matched to the model input of that name, see hydrant_model_run().
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_INVALID_ARGUMENT (not UTF-8).
/// Thread safety: must not race with any other use of the same tensor.
#[no_mangle]
pub unsafe extern "C" fn hydrant_tensor_set_name(
    tensor: *mut hydrant_tensor,
    name: *const c_char,
) -> hydrant_status {
    guard(|| {
        // SAFETY: NULL or a live tensor used by no other thread (header contract).
        let t = unsafe { tensor.as_mut() }.ok_or_else(|| Failure::null("tensor"))?;
        t.name = match name.is_null() {
            true => None,
            // SAFETY: a C string (header contract).
            false => Some(ptr::c_name(unsafe { ptr::string(name, "name")? })),
        };
        Ok(())
    })
}

/// Size in bytes of one element of `dtype`, or 0 for a value that is not a hydrant_dtype.
#[no_mangle]
pub extern "C" fn hydrant_dtype_size(dtype: hydrant_dtype) -> usize {
    guard_value(0, || Ok(dtype_from_c(dtype).map_or(0, DType::size)))
}

/// Lower-case name of `dtype` ("f32", "u8", ...), a static string; NULL for a value that is not
/// a hydrant_dtype.
#[no_mangle]
pub extern "C" fn hydrant_dtype_name(dtype: hydrant_dtype) -> *const c_char {
    guard_value(std::ptr::null(), || {
        Ok(match dtype_from_c(dtype) {
            Some(DType::F32) => c"f32".as_ptr(),
            Some(DType::F64) => c"f64".as_ptr(),
            Some(DType::F16) => c"f16".as_ptr(),
            Some(DType::BF16) => c"bf16".as_ptr(),
            Some(DType::U8) => c"u8".as_ptr(),
            Some(DType::I8) => c"i8".as_ptr(),
            Some(DType::I32) => c"i32".as_ptr(),
            Some(DType::I64) => c"i64".as_ptr(),
            Some(DType::Bool) => c"bool".as_ptr(),
            None => std::ptr::null(),
        })
    })
}
