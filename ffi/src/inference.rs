//! Running a model: the whole request, the trunk alone, heads on stored features.

use crate::error::{guard, hydrant_status, Failure, FfiResult};
use crate::features::hydrant_features;
use crate::model::hydrant_model;
use crate::ptr;
use crate::tensor::hydrant_tensor;
use hydrant::{Outputs, Tensor};
use std::ffi::c_char;

/// Pairs each input tensor with the model input it is for: its own name when it has one, else the
/// model input at the same position.
///
/// # Safety
/// `inputs` is NULL or `n_inputs` pointers, each NULL or a live tensor.
pub(crate) unsafe fn named_inputs(
    model: &hydrant_model,
    inputs: *const *const hydrant_tensor,
    n_inputs: usize,
) -> FfiResult<Vec<(&str, &Tensor)>> {
    // SAFETY: forwarded caller contract.
    let tensors = unsafe { ptr::handles(inputs, n_inputs, "inputs")? };
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = t.name().or_else(|| model.input_name(i)).ok_or_else(|| {
                Failure::new(
                    hydrant_status::HYDRANT_ERR_BAD_INPUT,
                    format!("inputs[{i}] has no name and the model has no input {i}"),
                )
            })?;
            Ok((name, t.tensor()))
        })
        .collect()
}

/// The checks before a run: `n_outputs` is writable (set to 0), the heads exist, and `capacity`
/// holds their outputs (else `*n_outputs` is set to the capacity needed).
///
/// # Safety
/// Pointers NULL or valid as in the header.
unsafe fn prepare<'a>(
    model: &hydrant_model,
    heads: *const *const c_char,
    n_heads: usize,
    outputs: *mut *mut hydrant_tensor,
    capacity: usize,
    n_outputs: *mut usize,
) -> FfiResult<Vec<&'a str>> {
    // SAFETY: forwarded caller contract.
    unsafe { ptr::write(n_outputs, 0, "n_outputs")? };
    let heads = unsafe { ptr::strings(heads, n_heads, "heads")? };
    let needed = model.output_count(&heads)?;
    if capacity < needed {
        unsafe { ptr::write(n_outputs, needed, "n_outputs")? };
        return Err(Failure::new(
            hydrant_status::HYDRANT_ERR_CAPACITY,
            format!("these heads produce {needed} outputs; capacity is {capacity}"),
        ));
    }
    if needed > 0 && outputs.is_null() {
        return Err(Failure::null("outputs"));
    }
    Ok(heads)
}

/// Hands each output to C as a new tensor named after it.
///
/// # Safety
/// `outputs` is valid for `capacity` writes and `n_outputs` for one.
unsafe fn hand_out(
    produced: Outputs,
    outputs: *mut *mut hydrant_tensor,
    capacity: usize,
    n_outputs: *mut usize,
) -> FfiResult {
    if produced.len() > capacity {
        return Err(Failure::new(
            hydrant_status::HYDRANT_ERR_CAPACITY,
            format!("{} outputs produced for a capacity of {capacity}", produced.len()),
        ));
    }
    let n = produced.len();
    for (i, (name, tensor)) in produced.into_vec().into_iter().enumerate() {
        // SAFETY: i < n <= capacity, and `outputs` holds `capacity` slots.
        unsafe { outputs.add(i).write(hydrant_tensor::new(tensor, Some(&name)).into_raw()) };
    }
    // SAFETY: checked writable in `prepare`.
    unsafe { ptr::write(n_outputs, n, "n_outputs") }
}

/// Runs the trunk once and the named heads (all heads when `n_heads` is 0) on
/// `inputs[0..n_inputs]`.
///
/// Input `i` is matched to the model input named like it (hydrant_tensor_set_name()) or, when it
/// has no name, to model input `i`; every model input must be given once, with the dtype and shape
/// the model declares (any size for symbolic dimensions, equal sizes for equal symbols). Inputs are
/// read only during the call.
///
/// Writes the outputs of those heads, in head order (as given, repeats ignored) then each head's
/// output order, into `outputs[0..*n_outputs]`: new tensors named after the model outputs, each
/// freed by the caller with hydrant_tensor_free(). When `capacity` is too small, writes nothing to
/// `outputs`, sets `*n_outputs` to the capacity needed and returns HYDRANT_ERR_CAPACITY
/// (hydrant_model_output_count() gives the number beforehand). On any other failure
/// `*n_outputs` is 0 and nothing is written.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_UNKNOWN_HEAD,
/// HYDRANT_ERR_BAD_INPUT (missing, unknown or repeated input, wrong dtype or shape),
/// HYDRANT_ERR_CAPACITY or HYDRANT_ERR_BACKEND.
/// Thread safety: any number of threads may run the same model at once.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_run(
    model: *const hydrant_model,
    inputs: *const *const hydrant_tensor,
    n_inputs: usize,
    heads: *const *const c_char,
    n_heads: usize,
    outputs: *mut *mut hydrant_tensor,
    capacity: usize,
    n_outputs: *mut usize,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        unsafe { ptr::write(n_outputs, 0, "n_outputs")? };
        let m = unsafe { ptr::borrow(model, "model")? };
        let heads = unsafe { prepare(m, heads, n_heads, outputs, capacity, n_outputs)? };
        let inputs = unsafe { named_inputs(m, inputs, n_inputs)? };
        let produced = m.model().run(&inputs, &heads)?;
        unsafe { hand_out(produced, outputs, capacity, n_outputs) }
    })
}

/// Runs the whole trunk on `inputs[0..n_inputs]` (matched as in hydrant_model_run()) and keeps
/// every tensor a head reads, to run heads on later with hydrant_model_heads().
///
/// Returns HYDRANT_OK and sets `*out` to new features the caller frees with
/// hydrant_features_free(); on failure sets `*out` to NULL (unless `out` is NULL) and returns
/// HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_BAD_INPUT or HYDRANT_ERR_BACKEND.
/// Thread safety: as hydrant_model_run().
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_trunk(
    model: *const hydrant_model,
    inputs: *const *const hydrant_tensor,
    n_inputs: usize,
    out: *mut *mut hydrant_features,
) -> hydrant_status {
    // SAFETY: same contract as hydrant_model_trunk_for with no heads.
    unsafe { hydrant_model_trunk_for(model, inputs, n_inputs, std::ptr::null(), 0, out) }
}

/// Like hydrant_model_trunk(), but runs only the part of the trunk that the heads
/// `heads[0..n_heads]` need (all of it when `n_heads` is 0), keeping only what they read.
///
/// Returns as hydrant_model_trunk(); also HYDRANT_ERR_UNKNOWN_HEAD.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_trunk_for(
    model: *const hydrant_model,
    inputs: *const *const hydrant_tensor,
    n_inputs: usize,
    heads: *const *const c_char,
    n_heads: usize,
    out: *mut *mut hydrant_features,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let m = unsafe { ptr::borrow(model, "model")? };
        let heads = unsafe { ptr::strings(heads, n_heads, "heads")? };
        let inputs = unsafe { named_inputs(m, inputs, n_inputs)? };
        let features = m.model().trunk_for(&inputs, &heads)?;
        unsafe { ptr::write(out, hydrant_features::new(features).into_raw(), "out") }
    })
}

/// Runs the named heads (all heads when `n_heads` is 0) on `features` from hydrant_model_trunk()
/// or hydrant_features_new(). Outputs, capacity and failures are as in hydrant_model_run(); also
/// HYDRANT_ERR_MISSING_FEATURE when `features` lack a tensor a head reads.
/// Thread safety: as hydrant_model_run(); the same features may be used by several threads.
#[no_mangle]
pub unsafe extern "C" fn hydrant_model_heads(
    model: *const hydrant_model,
    features: *const hydrant_features,
    heads: *const *const c_char,
    n_heads: usize,
    outputs: *mut *mut hydrant_tensor,
    capacity: usize,
    n_outputs: *mut usize,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        unsafe { ptr::write(n_outputs, 0, "n_outputs")? };
        let m = unsafe { ptr::borrow(model, "model")? };
        let f = unsafe { ptr::borrow(features, "features")? };
        let heads = unsafe { prepare(m, heads, n_heads, outputs, capacity, n_outputs)? };
        let produced = m.model().heads(f.features(), &heads)?;
        unsafe { hand_out(produced, outputs, capacity, n_outputs) }
    })
}
