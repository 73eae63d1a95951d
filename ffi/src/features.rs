//! `hydrant_features`: trunk tensors kept to run heads on later.

use crate::error::{guard, guard_value, hydrant_status, Failure};
use crate::ptr;
use crate::tensor::hydrant_tensor;
use hydrant::Features;
use std::ffi::{c_char, CString};

/// Trunk tensors computed for one input batch, kept to run heads on later (opaque). Made by
/// hydrant_model_trunk(), hydrant_model_trunk_for() or hydrant_features_new(); freed by
/// hydrant_features_free().
pub struct hydrant_features {
    features: Features,
    names: Vec<CString>,
}

impl hydrant_features {
    /// Wraps features, keeping their names as C strings.
    pub(crate) fn new(features: Features) -> hydrant_features {
        let names = features.names().into_iter().map(ptr::c_name).collect();
        hydrant_features { features, names }
    }

    /// The features held.
    pub(crate) fn features(&self) -> &Features {
        &self.features
    }

    /// Moves the features to the heap and hands C its pointer.
    pub(crate) fn into_raw(self) -> *mut hydrant_features {
        Box::into_raw(Box::new(self))
    }
}

/// Builds features from named tensors, for example ones computed earlier by hydrant_model_trunk()
/// and stored by the application. Every tensor must have a name (hydrant_tensor_set_name()), the
/// trunk tensor it stands for. The tensors are copied; the caller keeps ownership of them.
///
/// Returns HYDRANT_OK and sets `*out` to new features the caller frees with
/// hydrant_features_free(); on failure sets `*out` to NULL (unless `out` is NULL) and returns
/// HYDRANT_ERR_NULL_ARGUMENT, or HYDRANT_ERR_INVALID_ARGUMENT for an unnamed or repeated name.
#[no_mangle]
pub unsafe extern "C" fn hydrant_features_new(
    tensors: *const *const hydrant_tensor,
    n_tensors: usize,
    out: *mut *mut hydrant_features,
) -> hydrant_status {
    guard(|| {
        // SAFETY: `out` is NULL or writable; `tensors` NULL or `n_tensors` handles (header).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let tensors = unsafe { ptr::handles(tensors, n_tensors, "tensors")? };
        let mut named = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let name = t.name().ok_or_else(|| {
                Failure::invalid(format!("tensors[{i}] has no name (hydrant_tensor_set_name)"))
            })?;
            if named.iter().any(|(n, _)| *n == name) {
                return Err(Failure::invalid(format!("tensor name `{name}` given twice")));
            }
            named.push((name, t.tensor()));
        }
        let features = Features::from_tensors(named)?;
        unsafe { ptr::write(out, hydrant_features::new(features).into_raw(), "out") }
    })
}

/// Frees features. NULL is a no-op. The features must not be used afterwards, nor freed twice.
#[no_mangle]
pub unsafe extern "C" fn hydrant_features_free(features: *mut hydrant_features) {
    guard_value((), || {
        if !features.is_null() {
            // SAFETY: a pointer from `into_raw` not freed before (header contract).
            drop(unsafe { Box::from_raw(features) });
        }
        Ok(())
    })
}

/// Number of tensors held (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_features_count(features: *const hydrant_features) -> usize {
    // SAFETY: NULL or live features (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(features, "features")? }.names.len()))
}

/// Name of tensor `index` (names sorted), owned by the features and valid until they are freed;
/// NULL when `features` is NULL or `index` is out of range.
#[no_mangle]
pub unsafe extern "C" fn hydrant_features_name(
    features: *const hydrant_features,
    index: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or live features (header contract).
        let f = unsafe { ptr::borrow(features, "features")? };
        let name = f.names.get(index).ok_or_else(|| {
            Failure::invalid(format!("feature index {index} out of range ({})", f.names.len()))
        })?;
        Ok(name.as_ptr())
    })
}

/// Copies the tensor called `name` out of the features.
///
/// Returns HYDRANT_OK and sets `*out` to a new tensor named `name` that the caller frees with
/// hydrant_tensor_free(); on failure sets `*out` to NULL (unless `out` is NULL) and returns
/// HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_INVALID_ARGUMENT or HYDRANT_ERR_MISSING_FEATURE.
#[no_mangle]
pub unsafe extern "C" fn hydrant_features_get(
    features: *const hydrant_features,
    name: *const c_char,
    out: *mut *mut hydrant_tensor,
) -> hydrant_status {
    guard(|| {
        // SAFETY: NULL or valid pointers (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let f = unsafe { ptr::borrow(features, "features")? };
        let name = unsafe { ptr::string(name, "name")? };
        let tensor = f.features.get(name)?;
        unsafe { ptr::write(out, hydrant_tensor::new(tensor, Some(name)).into_raw(), "out") }
    })
}
