//! `hydrant_model`: loading (from a file or memory, with parameters) and what a model declares.

use crate::error::{guard, guard_value, hydrant_status, Failure, FfiResult};
use crate::ptr;
use crate::tensor::{dtype_to_c, hydrant_dtype, HYDRANT_DTYPE_UNDEFINED};
use hydrant::{Device, Dim, LoadOptions, Model};
use std::ffi::{c_char, c_void, CString};
use std::sync::Mutex;

/// Where a model runs: one of the HYDRANT_DEVICE_* values.
pub type hydrant_device = i32;

/// A GPU when one is usable, else the CPU.
pub const HYDRANT_DEVICE_AUTO: hydrant_device = 0;
/// The CPU.
pub const HYDRANT_DEVICE_CPU: hydrant_device = 1;
/// The CUDA device numbered `device_index`.
pub const HYDRANT_DEVICE_CUDA: hydrant_device = 2;

/// How to load a model. Start from hydrant_model_default_params() and change the fields needed;
/// fields may be added at the end when HYDRANT_ABI_VERSION changes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hydrant_model_params {
    /// Intra-op threads used by one call; 0 (the default) means one per available core.
    pub threads: u32,
    /// The device: HYDRANT_DEVICE_AUTO (default), HYDRANT_DEVICE_CPU or HYDRANT_DEVICE_CUDA.
    pub device: hydrant_device,
    /// The CUDA device number when `device` is HYDRANT_DEVICE_CUDA (default 0).
    pub device_index: u32,
    /// Names of the trunk tensors where heads attach (`n_cut_points` of them), or NULL for the
    /// automatic split. Read only during the load call.
    pub cut_points: *const *const c_char,
    /// Number of names in `cut_points` (default 0).
    pub n_cut_points: usize,
    /// Whether a batch of N runs as N batch-1 rows spread over the threads (1) or as one batch-N
    /// pass (0); negative (the default) lets hydrant choose (rows for convolutional models).
    pub batch_as_rows: i32,
    /// Most bytes the model's stored tensors may declare, checked before allocating; 0 (the
    /// default) means 4 GiB.
    pub max_bytes: u64,
}

/// A loaded multi-head model, split into trunk and heads (opaque). Made by hydrant_model_load(),
/// hydrant_model_load_with_params() or hydrant_model_load_from_memory(); freed by
/// hydrant_model_free().
pub struct hydrant_model {
    model: Model,
    /// Every head name the model has had, as C strings handed out by hydrant_model_head_name().
    /// Only ever grows (swaps keep names, additions add), so the pointers live as long as the
    /// model even while other threads set heads.
    names: Mutex<Vec<CString>>,
    inputs: Vec<InputInfo>,
}

struct InputInfo {
    name: CString,
    dtype: hydrant_dtype,
    /// Dimensions, -1 where symbolic.
    shape: Vec<i64>,
}

impl hydrant_model {
    fn new(model: Model) -> hydrant_model {
        let names = Mutex::new(model.head_names().iter().map(|n| ptr::c_name(n)).collect());
        let inputs = model
            .inputs()
            .iter()
            .map(|spec| InputInfo {
                name: ptr::c_name(&spec.name),
                dtype: dtype_to_c(spec.dtype),
                shape: spec
                    .shape
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n as i64,
                        Dim::Symbolic(_) => -1,
                    })
                    .collect(),
            })
            .collect();
        hydrant_model { model, names, inputs }
    }

    /// The model held.
    pub(crate) fn model(&self) -> &Model {
        &self.model
    }

    /// Name of model input `index`, if it exists.
    pub(crate) fn input_name(&self, index: usize) -> Option<&str> {
        self.inputs.get(index).and_then(|i| i.name.to_str().ok())
    }

    /// Number of outputs that running `heads` (all when empty) produces; unknown heads are errors.
    /// Heads set while this runs keep their outputs (a swap keeps the output names), so only an
    /// added head can change the count of "all heads", which the run then reports as too little
    /// capacity.
    pub(crate) fn output_count(&self, heads: &[&str]) -> FfiResult<usize> {
        let split = self.model.split();
        if heads.is_empty() {
            return Ok(split.heads.iter().map(|h| h.outputs.len()).sum());
        }
        let mut seen = Vec::with_capacity(heads.len());
        for name in heads {
            let index = split.head_index(name)?;
            if !seen.contains(&index) {
                seen.push(index);
            }
        }
        Ok(seen.iter().map(|&i| split.heads[i].outputs.len()).sum())
    }

    /// The model's name for head `index` now, as a C string that lives as long as the model.
    fn head_name(&self, index: usize) -> FfiResult<*const c_char> {
        let heads = self.model.head_names();
        let name = heads.get(index).ok_or_else(|| {
            Failure::invalid(format!("head index {index} out of range ({})", heads.len()))
        })?;
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let c = ptr::c_name(name);
        let at = match names.iter().position(|n| *n == c) {
            Some(i) => i,
            None => {
                names.push(c);
                names.len() - 1
            }
        };
        Ok(names[at].as_ptr())
    }

    fn input(&self, index: usize) -> FfiResult<&InputInfo> {
        self.inputs.get(index).ok_or_else(|| {
            Failure::invalid(format!("input index {index} out of range ({})", self.inputs.len()))
        })
    }
}

/// The default load parameters: automatic device, split and batching, one thread per core,
/// 4 GiB budget for stored tensors.
#[no_mangle]
pub extern "C" fn hydrant_model_default_params() -> hydrant_model_params {
    guard_value(DEFAULT_PARAMS, || Ok(DEFAULT_PARAMS))
}

pub(crate) const DEFAULT_PARAMS: hydrant_model_params = hydrant_model_params {
    threads: 0,
    device: HYDRANT_DEVICE_AUTO,
    device_index: 0,
    cut_points: std::ptr::null(),
    n_cut_points: 0,
    batch_as_rows: -1,
    max_bytes: 0,
};

/// Checks C load parameters and turns them into [`LoadOptions`].
///
/// # Safety
/// `params.cut_points` is NULL or `params.n_cut_points` C strings.
pub(crate) unsafe fn options(params: &hydrant_model_params) -> FfiResult<LoadOptions> {
    let mut options = LoadOptions::new();
    if params.threads > 0 {
        options = options.threads(params.threads as usize);
    }
    options = options.device(match params.device {
        HYDRANT_DEVICE_AUTO => Device::Auto,
        HYDRANT_DEVICE_CPU => Device::Cpu,
        HYDRANT_DEVICE_CUDA => Device::Cuda(params.device_index as usize),
        other => return Err(Failure::invalid(format!("params.device = {other}: unknown device"))),
    });
    // SAFETY: forwarded caller contract.
    let cuts = unsafe { ptr::strings(params.cut_points, params.n_cut_points, "cut_points")? };
    if !cuts.is_empty() {
        options = options.cut_at(cuts);
    }
    if params.batch_as_rows >= 0 {
        options = options.batch_as_rows(params.batch_as_rows != 0);
    }
    if params.max_bytes > 0 {
        options = options.max_bytes(params.max_bytes);
    }
    Ok(options)
}

/// Loads an ONNX model file with default parameters and splits it into trunk and heads.
///
/// Returns HYDRANT_OK and sets `*out` to a new model the caller frees with hydrant_model_free().
/// On failure sets `*out` to NULL (unless `out` is NULL) and returns HYDRANT_ERR_NULL_ARGUMENT,
/// HYDRANT_ERR_IO, HYDRANT_ERR_INVALID_MODEL, HYDRANT_ERR_UNSUPPORTED_OP or
/// HYDRANT_ERR_INVALID_ARGUMENT, with the file, node or value named in the message.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_load(
    path: *const c_char,
    out: *mut *mut hydrant_model,
) -> hydrant_status {
    // SAFETY: same contract as hydrant_model_load_with_params.
    unsafe { hydrant_model_load_with_params(path, DEFAULT_PARAMS, out) }
}

/// Loads an ONNX model file with `params`; external tensor data is read from the model's folder.
///
/// Returns as hydrant_model_load(); also HYDRANT_ERR_UNKNOWN_TENSOR for a cut point the graph
/// lacks, and HYDRANT_ERR_INVALID_ARGUMENT for a parameter out of range or a device this build
/// cannot use.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_load_with_params(
    path: *const c_char,
    params: hydrant_model_params,
    out: *mut *mut hydrant_model,
) -> hydrant_status {
    guard(|| {
        // SAFETY: `out` writable, `path` a C string, `params` as documented (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let path = unsafe { ptr::string(path, "path")? };
        let model = Model::load(path, unsafe { options(&params)? })?;
        unsafe { ptr::write(out, into_raw(model), "out") }
    })
}

/// Loads an ONNX model from the `size` bytes at `data` (read only during the call) with `params`.
/// A model whose tensors are stored in external files cannot be loaded this way.
///
/// Returns as hydrant_model_load_with_params().
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_load_from_memory(
    data: *const c_void,
    size: usize,
    params: hydrant_model_params,
    out: *mut *mut hydrant_model,
) -> hydrant_status {
    guard(|| {
        // SAFETY: `out` writable, `data` `size` readable bytes (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let bytes = unsafe { ptr::slice(data.cast::<u8>(), size, "data")? };
        let model = Model::from_bytes(bytes, unsafe { options(&params)? })?;
        unsafe { ptr::write(out, into_raw(model), "out") }
    })
}

/// Moves a model to the heap and hands C its pointer.
pub(crate) fn into_raw(model: Model) -> *mut hydrant_model {
    Box::into_raw(Box::new(hydrant_model::new(model)))
}

/// Frees a model. NULL is a no-op. No other call may be using the model, and it must not be used
/// afterwards; tensors and features obtained from it stay valid.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_free(model: *mut hydrant_model) {
    guard_value((), || {
        if !model.is_null() {
            // SAFETY: a pointer from `into_raw` not freed before (header contract).
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    })
}

/// Number of heads (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_head_count(model: *const hydrant_model) -> usize {
    // SAFETY: NULL or a live model (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(model, "model")? }.model.head_names().len()))
}

/// Name of head `index` (heads in the order of their first output; a head is named after its
/// first output; heads added by hydrant_model_swap_heads() come after the file's). Owned by the
/// model, valid until it is freed, even after heads are set. NULL when `model` is NULL or
/// `index` is out of range.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_head_name(
    model: *const hydrant_model,
    index: usize,
) -> *const c_char {
    // SAFETY: NULL or a live model (header contract).
    guard_value(std::ptr::null(), || unsafe { ptr::borrow(model, "model")? }.head_name(index))
}

/// Sets `*out` to the number of output tensors hydrant_model_run() or hydrant_model_heads()
/// produce for the heads `heads[0..n_heads]` (all heads when `n_heads` is 0).
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_UNKNOWN_HEAD.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_output_count(
    model: *const hydrant_model,
    heads: *const *const c_char,
    n_heads: usize,
    out: *mut usize,
) -> hydrant_status {
    guard(|| {
        // SAFETY: NULL or valid pointers (header contract).
        unsafe { ptr::write(out, 0, "out")? };
        let m = unsafe { ptr::borrow(model, "model")? };
        let heads = unsafe { ptr::strings(heads, n_heads, "heads")? };
        let n = m.output_count(&heads)?;
        unsafe { ptr::write(out, n, "out") }
    })
}

/// Number of model inputs (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_input_count(model: *const hydrant_model) -> usize {
    // SAFETY: NULL or a live model (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(model, "model")? }.inputs.len()))
}

/// Name of model input `index`, owned by the model and valid until it is freed; NULL when `model`
/// is NULL or `index` is out of range.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_input_name(
    model: *const hydrant_model,
    index: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or a live model (header contract).
        Ok(unsafe { ptr::borrow(model, "model")? }.input(index)?.name.as_ptr())
    })
}

/// Element type model input `index` expects; HYDRANT_DTYPE_UNDEFINED when `model` is NULL or
/// `index` is out of range.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_input_dtype(
    model: *const hydrant_model,
    index: usize,
) -> hydrant_dtype {
    guard_value(HYDRANT_DTYPE_UNDEFINED, || {
        // SAFETY: NULL or a live model (header contract).
        Ok(unsafe { ptr::borrow(model, "model")? }.input(index)?.dtype)
    })
}

/// Number of dimensions of model input `index` (0 when `model` is NULL or `index` out of range).
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_input_rank(
    model: *const hydrant_model,
    index: usize,
) -> usize {
    // SAFETY: NULL or a live model (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(model, "model")? }.input(index)?.shape.len()))
}

/// Dimensions of model input `index`: hydrant_model_input_rank() values, -1 where the dimension is
/// symbolic (such as the batch size). Owned by the model, valid until it is freed; NULL when
/// `model` is NULL or `index` is out of range.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_input_shape(
    model: *const hydrant_model,
    index: usize,
) -> *const i64 {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or a live model (header contract).
        Ok(unsafe { ptr::borrow(model, "model")? }.input(index)?.shape.as_ptr())
    })
}

/// Intra-op threads one call on `model` uses (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_threads(model: *const hydrant_model) -> usize {
    // SAFETY: NULL or a live model (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(model, "model")? }.model.threads()))
}
