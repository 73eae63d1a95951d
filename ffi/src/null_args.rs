//! Every entry point given NULL for its pointers: an error status naming the argument (or the
//! documented failure value), never a crash, and out-pointers cleared.

use crate::error::hydrant_last_error;
use crate::error::hydrant_status::{self, *};
use crate::features::*;
use crate::heads::*;
use crate::inference::*;
use crate::model::*;
use crate::tensor::*;
use crate::train_params::*;
use crate::trainer::*;
use std::ffi::{c_char, CStr};
use std::ptr::{null, null_mut};

fn last_error() -> String {
    // SAFETY: never NULL, valid until the next call on this thread.
    unsafe { CStr::from_ptr(hydrant_last_error()) }.to_string_lossy().into_owned()
}

/// Asserts `status` is a NULL-argument error whose message names `what`.
fn null_error(status: hydrant_status, what: &str) {
    assert_eq!(status, HYDRANT_ERR_NULL_ARGUMENT, "{what}: {}", last_error());
    assert_eq!(last_error(), format!("{what} is NULL"));
}

/// A pointer C would have to overwrite with NULL.
fn poisoned<T>() -> *mut T {
    std::ptr::NonNull::dangling().as_ptr()
}

#[test]
fn status_calls_report_each_null_argument() {
    let params = hydrant_model_default_params();
    let mut model: *mut hydrant_model = poisoned();
    let mut tensor: *mut hydrant_tensor = poisoned();
    let mut features: *mut hydrant_features = poisoned();
    let mut n = 7usize;
    let path = c"x.onnx".as_ptr();
    // SAFETY: every pointer is NULL or valid for what the call writes.
    unsafe {
        null_error(hydrant_model_load(null(), &mut model), "path");
        assert!(model.is_null(), "out cleared before the failure");
        null_error(hydrant_model_load(path, null_mut()), "out");
        null_error(hydrant_model_load_with_params(null(), params, &mut model), "path");
        null_error(hydrant_model_load_from_memory(null(), 10, params, &mut model), "data");
        let with_cuts = hydrant_model_params { n_cut_points: 1, ..params };
        null_error(hydrant_model_load_with_params(path, with_cuts, &mut model), "cut_points");
        let cuts: [*const c_char; 1] = [null()];
        let with_null_cut = hydrant_model_params { cut_points: cuts.as_ptr(), ..with_cuts };
        null_error(
            hydrant_model_load_with_params(path, with_null_cut, &mut model),
            "cut_points[0]",
        );

        null_error(hydrant_tensor_new(HYDRANT_DTYPE_F32, null(), null(), 0, &mut tensor), "data");
        assert!(tensor.is_null());
        tensor = poisoned();
        null_error(hydrant_tensor_new_f32(null(), null(), 1, &mut tensor), "shape");
        assert!(tensor.is_null());
        null_error(hydrant_tensor_new_f32(null(), null(), 0, null_mut()), "out");
        null_error(hydrant_tensor_load_npy(null(), &mut tensor), "path");
        null_error(hydrant_tensor_save_npy(null(), path), "tensor");
        null_error(hydrant_tensor_set_name(null_mut(), path), "tensor");

        null_error(hydrant_model_output_count(null(), null(), 0, &mut n), "model");
        assert_eq!(n, 0, "count cleared");
        null_error(hydrant_model_output_count(null(), null(), 0, null_mut()), "out");

        n = 7;
        null_error(hydrant_model_run(null(), null(), 0, null(), 0, null_mut(), 0, &mut n), "model");
        assert_eq!(n, 0, "n_outputs cleared");
        let run = hydrant_model_run(null(), null(), 0, null(), 0, null_mut(), 0, null_mut());
        null_error(run, "n_outputs");
        null_error(hydrant_model_trunk(null(), null(), 0, &mut features), "model");
        assert!(features.is_null());
        null_error(hydrant_model_trunk_for(null(), null(), 0, null(), 0, null_mut()), "out");
        let heads = hydrant_model_heads(null(), null(), null(), 0, null_mut(), 0, &mut n);
        null_error(heads, "model");

        null_error(hydrant_features_new(null(), 2, &mut features), "tensors");
        null_error(hydrant_features_get(null(), path, &mut tensor), "features");
    }
}

#[test]
fn head_and_trainer_calls_report_each_null_argument() {
    let params = hydrant_model_default_params();
    let train = hydrant_train_params_default();
    let mut model: *mut hydrant_model = poisoned();
    let mut trainer: *mut hydrant_trainer = poisoned();
    let mut n = 7usize;
    let path = c"x.safetensors".as_ptr();
    // SAFETY: every pointer is NULL or valid for what the call reads or writes.
    unsafe {
        null_error(hydrant_model_load_parts(null(), path, params, &mut model), "onnx_path");
        assert!(model.is_null(), "out cleared before the failure");
        null_error(hydrant_model_load_parts(path, null(), params, &mut model), "heads_path");
        null_error(hydrant_model_load_parts(path, path, params, null_mut()), "out");
        null_error(hydrant_model_load_safetensors(null(), params, &mut model), "path");
        null_error(hydrant_model_load_safetensors(path, params, null_mut()), "out");
        null_error(hydrant_model_swap_heads(null(), path), "model");
        null_error(hydrant_model_save_heads(null(), null(), 0, path), "model");
        null_error(hydrant_model_save_onnx(null(), path), "model");
        null_error(hydrant_model_head_trainable(null(), path), "model");

        null_error(hydrant_trainer_new(null(), null(), null(), 0, &train, &mut trainer), "model");
        assert!(trainer.is_null(), "out cleared before the failure");
        let new = hydrant_trainer_new(null(), null(), null(), 0, &train, null_mut());
        null_error(new, "out");
        null_error(
            hydrant_trainer_new_from_file(null(), null(), &train, &mut trainer),
            "heads_path",
        );
        null_error(hydrant_trainer_new_from_file(path, null(), null(), &mut trainer), "params");
        null_error(hydrant_trainer_new_from_spec(null(), &train, &mut trainer), "spec_json");
        null_error(hydrant_trainer_new_from_spec(c"{}".as_ptr(), null(), &mut trainer), "params");
        null_error(hydrant_trainer_resume(null(), &train, &mut trainer), "checkpoint_path");
        null_error(hydrant_trainer_resume(path, null(), &mut trainer), "params");
        null_error(hydrant_trainer_resume(path, &train, null_mut()), "out");

        let t = null_mut();
        null_error(hydrant_trainer_add_samples(t, null(), null(), 0, null(), 0), "trainer");
        null_error(hydrant_trainer_add_features(t, null(), null(), 0), "trainer");
        null_error(hydrant_trainer_fit(t, 1, None, null_mut(), &mut n), "trainer");
        assert_eq!(n, 0, "epochs_run cleared");
        n = 7;
        null_error(hydrant_trainer_evaluate(t, null_mut(), 0, &mut n), "trainer");
        assert_eq!(n, 0, "n_metrics cleared");
        null_error(hydrant_trainer_evaluate(t, null_mut(), 0, null_mut()), "n_metrics");
        null_error(hydrant_trainer_save_heads(t, path, 1), "trainer");
        null_error(hydrant_trainer_save_checkpoint(t, path), "trainer");
        null_error(hydrant_trainer_swap_into(t, null()), "trainer");
        null_error(hydrant_trainer_set_device(t, c"cpu".as_ptr()), "trainer");
    }
}

#[test]
fn accessors_return_their_failure_value_for_null() {
    // SAFETY: NULL is accepted by every accessor.
    unsafe {
        assert_eq!(hydrant_model_head_count(null()), 0);
        assert!(hydrant_model_head_name(null(), 0).is_null());
        assert_eq!(last_error(), "model is NULL");
        assert_eq!(hydrant_model_input_count(null()), 0);
        assert!(hydrant_model_input_name(null(), 0).is_null());
        assert_eq!(hydrant_model_input_dtype(null(), 0), HYDRANT_DTYPE_UNDEFINED);
        assert_eq!(hydrant_model_input_rank(null(), 0), 0);
        assert!(hydrant_model_input_shape(null(), 0).is_null());
        assert_eq!(hydrant_model_threads(null()), 0);
        assert_eq!(hydrant_tensor_rank(null()), 0);
        assert!(hydrant_tensor_shape(null()).is_null());
        assert_eq!(hydrant_tensor_dtype(null()), HYDRANT_DTYPE_UNDEFINED);
        assert_eq!(hydrant_tensor_element_count(null()), 0);
        assert_eq!(hydrant_tensor_byte_size(null()), 0);
        assert!(hydrant_tensor_data(null()).is_null());
        assert!(hydrant_tensor_data_f32(null()).is_null());
        assert!(hydrant_tensor_name(null()).is_null());
        assert_eq!(last_error(), "tensor is NULL");
        assert_eq!(hydrant_features_count(null()), 0);
        assert!(hydrant_features_name(null(), 0).is_null());
        assert_eq!(last_error(), "features is NULL");
        assert_eq!(hydrant_trainer_head_count(null()), 0);
        assert!(hydrant_trainer_head_name(null(), 0).is_null());
        assert_eq!(hydrant_trainer_sample_count(null()), 0);
        assert_eq!(hydrant_trainer_epoch_count(null()), 0);
        assert!(hydrant_trainer_device(null()).is_null());
        assert!(hydrant_trainer_device_reason(null()).is_null());
        assert_eq!(last_error(), "trainer is NULL");
        hydrant_trainer_free(null_mut());
        hydrant_model_free(null_mut());
        hydrant_tensor_free(null_mut());
        hydrant_features_free(null_mut());
    }
}

#[test]
fn dtype_helpers_know_every_dtype() {
    let all = [
        (HYDRANT_DTYPE_F32, 4, "f32"),
        (HYDRANT_DTYPE_U8, 1, "u8"),
        (HYDRANT_DTYPE_I8, 1, "i8"),
        (HYDRANT_DTYPE_I32, 4, "i32"),
        (HYDRANT_DTYPE_I64, 8, "i64"),
        (HYDRANT_DTYPE_BOOL, 1, "bool"),
        (HYDRANT_DTYPE_F16, 2, "f16"),
        (HYDRANT_DTYPE_F64, 8, "f64"),
        (HYDRANT_DTYPE_BF16, 2, "bf16"),
    ];
    for (dtype, size, name) in all {
        assert_eq!(hydrant_dtype_size(dtype), size, "{name}");
        // SAFETY: a static string for a known dtype.
        assert_eq!(unsafe { CStr::from_ptr(hydrant_dtype_name(dtype)) }.to_str(), Ok(name));
        // A one-element tensor of each type keeps its bytes.
        let bytes = [1u8; 8];
        let shape = [1i64];
        let mut t = null_mut();
        // SAFETY: 8 readable bytes cover one element of any type.
        unsafe {
            let status =
                hydrant_tensor_new(dtype, bytes.as_ptr().cast(), shape.as_ptr(), 1, &mut t);
            assert_eq!(status, HYDRANT_OK, "{name}: {}", last_error());
            assert_eq!(hydrant_tensor_dtype(t), dtype);
            assert_eq!(hydrant_tensor_byte_size(t), size);
            let data = std::slice::from_raw_parts(hydrant_tensor_data(t).cast::<u8>(), size);
            assert_eq!(data, &bytes[..size], "{name}");
            hydrant_tensor_free(t);
        }
    }
    assert_eq!(hydrant_dtype_size(HYDRANT_DTYPE_UNDEFINED), 0);
    assert!(hydrant_dtype_name(-5).is_null());
}
