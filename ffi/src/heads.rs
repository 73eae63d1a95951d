//! Heads as files: models loaded with a head file or from one whole-model safetensors file,
//! heads swapped in from a file while the model runs, heads written out, trainability, export.

use crate::error::{guard, hydrant_status, FfiResult};
use crate::model::{hydrant_model, hydrant_model_params, into_raw, options};
use crate::ptr;
use hydrant::{Head, HeadSet, Model};
use std::ffi::c_char;

/// The trainable form of heads `names` of `model` (every head when `names` is empty).
pub(crate) fn model_heads(model: &Model, names: &[&str]) -> FfiResult<Vec<Head>> {
    let all;
    let names: Vec<&str> = match names.is_empty() {
        true => {
            all = model.head_names();
            all.iter().map(String::as_str).collect()
        }
        false => names.to_vec(),
    };
    Ok(names.iter().map(|n| model.trainable_head(n)).collect::<hydrant::Result<_>>()?)
}

/// Loads an ONNX model with `params`, then sets the heads of the safetensors head file at
/// `heads_path`: each replaces the model's head of the same name, or is added when the model has
/// none (as hydrant_model_swap_heads()).
///
/// Returns HYDRANT_OK and sets `*out` to a new model the caller frees with hydrant_model_free().
/// On failure sets `*out` to NULL (unless `out` is NULL) and returns what
/// hydrant_model_load_with_params() and hydrant_model_swap_heads() return.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_load_parts(
    onnx_path: *const c_char,
    heads_path: *const c_char,
    params: hydrant_model_params,
    out: *mut *mut hydrant_model,
) -> hydrant_status {
    guard(|| {
        // SAFETY: `out` writable, paths C strings, `params` as documented (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let onnx = unsafe { ptr::string(onnx_path, "onnx_path")? };
        let heads = unsafe { ptr::string(heads_path, "heads_path")? };
        let model = Model::load_parts(onnx, heads, unsafe { options(&params)? })?;
        unsafe { ptr::write(out, into_raw(model), "out") }
    })
}

/// Loads a whole model from one safetensors file holding a trunk and its heads (as written by
/// hydrant's Python tools or the Rust API): the trunk is built in memory and cut where the heads
/// attach (or at `params.cut_points`).
///
/// Returns as hydrant_model_load_with_params(); HYDRANT_ERR_INVALID_MODEL also for a head file
/// without a trunk (load that one with hydrant_model_load_parts()).
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_load_safetensors(
    path: *const c_char,
    params: hydrant_model_params,
    out: *mut *mut hydrant_model,
) -> hydrant_status {
    guard(|| {
        // SAFETY: `out` writable, `path` a C string, `params` as documented (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let path = unsafe { ptr::string(path, "path")? };
        let model = Model::load_safetensors(path, unsafe { options(&params)? })?;
        unsafe { ptr::write(out, into_raw(model), "out") }
    })
}

/// Sets the heads of the safetensors head file at `heads_path` into `model`: each head replaces
/// the model's head of the same name (keeping that head's output names), or is added as a new
/// head (after the others, with one output named after it) when the model has none.
///
/// All or nothing: when any head does not fit (its input tensor is not in the trunk, its shapes do
/// not match), the model keeps all its heads. Atomic for concurrent callers: a
/// hydrant_model_run() on another thread sees either every head as before or every head of the
/// file, never a mix; runs already going finish with the heads they started with.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_IO, HYDRANT_ERR_INVALID_MODEL (not
/// a head file), HYDRANT_ERR_UNKNOWN_TENSOR (a head reads a tensor the model lacks) or
/// HYDRANT_ERR_INVALID_ARGUMENT / HYDRANT_ERR_BAD_INPUT (a head that does not fit).
/// Thread safety: may run while other threads run the model; calls that set heads of one model
/// take turns.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_swap_heads(
    model: *const hydrant_model,
    heads_path: *const c_char,
) -> hydrant_status {
    guard(|| {
        // SAFETY: NULL or valid pointers (header contract).
        let m = unsafe { ptr::borrow(model, "model")? };
        let path = unsafe { ptr::string(heads_path, "heads_path")? };
        Ok(m.model().set_heads(&HeadSet::load(path)?)?)
    })
}

/// Writes heads `names[0..n_names]` of `model` (all heads when `n_names` is 0) to a safetensors
/// head file at `path` (replaced atomically: a reader never sees a partial file), with tensor
/// names `<head>.<layer>.<param>` as in a PyTorch state_dict. Heads from the model file are
/// converted to hydrant's layer vocabulary first.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_UNKNOWN_HEAD,
/// HYDRANT_ERR_NOT_TRAINABLE (a head outside the layer vocabulary; the message names the node)
/// or HYDRANT_ERR_IO.
/// Thread safety: may run while other threads run the model or set its heads.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_save_heads(
    model: *const hydrant_model,
    names: *const *const c_char,
    n_names: usize,
    path: *const c_char,
) -> hydrant_status {
    guard(|| {
        // SAFETY: NULL or valid pointers (header contract).
        let m = unsafe { ptr::borrow(model, "model")? };
        let names = unsafe { ptr::strings(names, n_names, "names")? };
        let path = unsafe { ptr::string(path, "path")? };
        Ok(HeadSet::new(model_heads(m.model(), &names)?).save(path)?)
    })
}

/// Writes `model` with its current heads (swapped heads replace the file's nodes, added heads
/// become graph outputs) as an ONNX file at `path`, replaced atomically.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_INVALID_MODEL or HYDRANT_ERR_IO.
/// Thread safety: as hydrant_model_save_heads().
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_save_onnx(
    model: *const hydrant_model,
    path: *const c_char,
) -> hydrant_status {
    guard(|| {
        // SAFETY: NULL or valid pointers (header contract).
        let m = unsafe { ptr::borrow(model, "model")? };
        let path = unsafe { ptr::string(path, "path")? };
        Ok(m.model().save_onnx(path)?)
    })
}

/// Whether head `name` of `model` can be trained (and saved with hydrant_model_save_heads()): it
/// is made only of layers hydrant can train (Gemm/MatMul, Conv, normalisations, activations,
/// pooling, ...), or was set in from a head file.
///
/// Returns HYDRANT_OK when it can; HYDRANT_ERR_NOT_TRAINABLE when it cannot, with the node or
/// structure that prevents it in hydrant_last_error(); HYDRANT_ERR_NULL_ARGUMENT or
/// HYDRANT_ERR_UNKNOWN_HEAD.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_head_trainable(
    model: *const hydrant_model,
    name: *const c_char,
) -> hydrant_status {
    guard(|| {
        // SAFETY: NULL or valid pointers (header contract).
        let m = unsafe { ptr::borrow(model, "model")? };
        let name = unsafe { ptr::string(name, "name")? };
        m.model().trainable_head(name)?;
        Ok(())
    })
}
