//! Training through the C interface equals training through the Rust API, bit for bit: the same
//! head file, optimizer state included, and a run resumed from a C checkpoint equals an
//! uninterrupted Rust run. Real trainers given NULL for their other arguments.

use crate::error::hydrant_last_error;
use crate::error::hydrant_status::{self, *};
use crate::features::*;
use crate::tensor::*;
use crate::train_params::*;
use crate::trainer::*;
use hydrant::train::OptimizerSpec;
use hydrant::{HeadSet, Labels, TrainOptions, Trainer};
use hydrant_tests::{fixture, npy};
use std::ffi::{c_int, c_void, CStr, CString};
use std::ptr::{null, null_mut};

fn ok(status: hydrant_status) {
    // SAFETY: never NULL, valid until the next call on this thread.
    let message = unsafe { CStr::from_ptr(hydrant_last_error()) }.to_string_lossy();
    assert_eq!(status, HYDRANT_OK, "{message}");
}

fn train_fixture(name: &str) -> String {
    fixture(&format!("train/{name}")).to_string_lossy().into_owned()
}

fn c_path(p: &std::path::Path) -> CString {
    CString::new(p.to_string_lossy().as_bytes()).unwrap()
}

/// The C parameters of the runs compared here, and the same as Rust options.
fn params() -> (hydrant_train_params, TrainOptions) {
    let c = hydrant_train_params {
        epochs: 3,
        batch_size: 8,
        lr: 0.05,
        nesterov: 1,
        weight_decay: 1e-3,
        validation_fraction: 0.25,
        threads: 1,
        seed: 7,
        ..hydrant_train_params_default()
    };
    let rust = TrainOptions {
        epochs: 3,
        batch_size: 8,
        lr: 0.05,
        optimizer: OptimizerSpec::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 1e-3,
        },
        validation_fraction: 0.25,
        threads: 1,
        seed: 7,
        ..TrainOptions::default()
    };
    (c, rust)
}

/// Features named `features` and the labels of the MLP parity fixture, as C handles.
fn c_samples() -> (*mut hydrant_features, *mut hydrant_tensor) {
    let load = |name: &str| {
        let mut t = null_mut();
        let path = CString::new(train_fixture(name)).unwrap();
        // SAFETY: valid C strings and out-pointer.
        ok(unsafe { hydrant_tensor_load_npy(path.as_ptr(), &mut t) });
        t
    };
    let (x, y) = (load("parity_mlp_features.npy"), load("parity_mlp_labels.npy"));
    let mut f = null_mut();
    // SAFETY: live tensors; the features copy them.
    unsafe {
        ok(hydrant_tensor_set_name(x, c"features".as_ptr()));
        let tensors = [x.cast_const()];
        ok(hydrant_features_new(tensors.as_ptr(), 1, &mut f));
        hydrant_tensor_free(x);
    }
    (f, y)
}

/// The Rust trainer of the same run, with the same samples.
fn rust_trainer(options: TrainOptions) -> Trainer {
    let init = HeadSet::load(train_fixture("parity_mlp_init.safetensors")).unwrap();
    let mut trainer = Trainer::new(init.heads, options).unwrap();
    let x = npy("train/parity_mlp_features.npy");
    let y = npy("train/parity_mlp_labels.npy");
    trainer.add_features(&[("features", &x)], &[("mlp", Labels::new(y))]).unwrap();
    trainer
}

/// Epoch numbers and first-step losses the callback saw.
#[derive(Default)]
struct Seen {
    epochs: Vec<usize>,
    first_losses: Vec<f32>,
    validated: bool,
}

unsafe extern "C" fn record(report: *const hydrant_epoch_report, user: *mut c_void) -> c_int {
    // SAFETY: the library passes a live report, and `user` is the `Seen` given to fit.
    let (r, seen) = unsafe { (&*report, &mut *user.cast::<Seen>()) };
    seen.epochs.push(r.epoch);
    // SAFETY: n_heads × steps losses; names owned by the trainer.
    unsafe {
        assert_eq!(r.n_heads, 1);
        assert_eq!(CStr::from_ptr((*r.train).head).to_str(), Ok("mlp"));
        seen.first_losses.push(*r.step_losses);
        seen.validated = !r.validation.is_null() && (*r.validation).samples > 0;
    }
    0
}

unsafe extern "C" fn stop_at_once(_: *const hydrant_epoch_report, _: *mut c_void) -> c_int {
    1
}

#[test]
fn c_training_writes_the_rust_api_head_file_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (c_params, options) = params();
    let (features, labels) = c_samples();
    let init = CString::new(train_fixture("parity_mlp_init.safetensors")).unwrap();
    let c_file = dir.path().join("c.safetensors");
    let checkpoint = dir.path().join("checkpoint.safetensors");
    let mut seen = Seen::default();
    let mut trainer = null_mut();
    let mut epochs = 0;
    // SAFETY: live handles and C strings; `seen` outlives the fit call.
    unsafe {
        ok(hydrant_trainer_new_from_file(init.as_ptr(), null(), &c_params, &mut trainer));
        let l = [labels.cast_const()];
        ok(hydrant_trainer_add_features(trainer, features, l.as_ptr(), 1));
        assert_eq!(hydrant_trainer_sample_count(trainer), 96);
        let user = (&mut seen as *mut Seen).cast();
        ok(hydrant_trainer_fit(trainer, 2, Some(record), user, &mut epochs));
        assert_eq!(epochs, 2);
        ok(hydrant_trainer_save_checkpoint(trainer, c_path(&checkpoint).as_ptr()));
        ok(hydrant_trainer_fit(trainer, 1, Some(record), user, &mut epochs));
        ok(hydrant_trainer_save_heads(trainer, c_path(&c_file).as_ptr(), 1));
        assert_eq!(hydrant_trainer_epoch_count(trainer), 3);
        hydrant_trainer_free(trainer);
    }
    assert_eq!(seen.epochs, [1, 2, 3]);
    assert!(seen.validated, "validation metrics reported");

    let mut rust = rust_trainer(options.clone());
    let reports = rust.fit(None, |_| std::ops::ControlFlow::Continue(())).unwrap();
    let first: Vec<f32> = reports.iter().map(|r| r.step_losses[0][0]).collect();
    assert_eq!(seen.first_losses, first, "per-step losses");
    let rust_file = dir.path().join("rust.safetensors");
    rust.head_set(true).unwrap().save(&rust_file).unwrap();
    same_file(&c_file, &rust_file);

    // Resumed from the C checkpoint after 2 epochs, one more epoch equals the 3-epoch run.
    let resumed = dir.path().join("resumed.safetensors");
    // SAFETY: as above.
    unsafe {
        ok(hydrant_trainer_resume(c_path(&checkpoint).as_ptr(), &c_params, &mut trainer));
        let l = [labels.cast_const()];
        ok(hydrant_trainer_add_features(trainer, features, l.as_ptr(), 1));
        ok(hydrant_trainer_fit(trainer, 1, Some(stop_at_once), null_mut(), &mut epochs));
        assert_eq!(epochs, 1);
        ok(hydrant_trainer_save_heads(trainer, c_path(&resumed).as_ptr(), 1));
        let mut metrics = [hydrant_task_metrics {
            head: null(),
            loss: 0.0,
            accuracy: 0.0,
            macro_f1: 0.0,
            miou: 0.0,
            mae: 0.0,
            rmse: 0.0,
            samples: 0,
        }];
        let mut n = 7;
        assert_eq!(
            hydrant_trainer_evaluate(trainer, metrics.as_mut_ptr(), 0, &mut n),
            HYDRANT_ERR_CAPACITY
        );
        assert_eq!(n, 1, "capacity needed");
        ok(hydrant_trainer_evaluate(trainer, metrics.as_mut_ptr(), 1, &mut n));
        let want = rust.evaluate().unwrap().remove(0);
        assert_eq!((metrics[0].loss, metrics[0].accuracy), (want.loss, want.accuracy.unwrap()));
        assert!(metrics[0].mae.is_nan(), "regression metrics do not apply");
        hydrant_trainer_free(trainer);
        hydrant_features_free(features);
        hydrant_tensor_free(labels);
    }
    same_file(&resumed, &rust_file);
}

/// The trainer's device and reason.
///
/// # Safety
/// `trainer` is a live trainer.
unsafe fn device_of(trainer: *const hydrant_trainer) -> (String, String) {
    // SAFETY: strings owned by the live trainer.
    let text = |p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { (text(hydrant_trainer_device(trainer)), text(hydrant_trainer_device_reason(trainer))) }
}

fn last_error() -> String {
    // SAFETY: never NULL, valid until the next call on this thread.
    unsafe { CStr::from_ptr(hydrant_last_error()) }.to_string_lossy().into_owned()
}

#[test]
fn the_device_is_chosen_before_samples_and_an_unusable_one_is_refused() {
    // With a validation split the GPU trainer refuses the job, so on every machine `auto`
    // stays on the CPU and `cuda` is refused.
    let (c_params, _) = params();
    let (features, labels) = c_samples();
    let init = CString::new(train_fixture("parity_mlp_init.safetensors")).unwrap();
    let mut trainer = null_mut();
    // SAFETY: live handles and C strings.
    unsafe {
        ok(hydrant_trainer_new_from_file(init.as_ptr(), null(), &c_params, &mut trainer));
        assert_eq!(device_of(trainer).0, "cpu", "a new trainer trains on the CPU");
        ok(hydrant_trainer_set_device(trainer, c"cpu".as_ptr()));
        assert_eq!(device_of(trainer), ("cpu".into(), "requested".into()));
        ok(hydrant_trainer_set_device(trainer, c"auto".as_ptr()));
        let (device, reason) = device_of(trainer);
        assert!(device == "cpu" && reason.starts_with("auto: "), "{device}: {reason}");
        for (name, words) in [("gpu", "`gpu`"), ("cuda:99", "cuda:99"), ("cuda", "cuda:0")] {
            let c = CString::new(name).unwrap();
            let status = hydrant_trainer_set_device(trainer, c.as_ptr());
            assert_eq!(status, HYDRANT_ERR_INVALID_ARGUMENT, "{name}");
            assert!(last_error().contains(words), "{name}: {}", last_error());
            assert_eq!(device_of(trainer).0, "cpu", "unchanged by the refusal");
        }
        let l = [labels.cast_const()];
        ok(hydrant_trainer_add_features(trainer, features, l.as_ptr(), 1));
        ok(hydrant_trainer_set_device(trainer, c"cpu".as_ptr()));
        ok(hydrant_trainer_fit(trainer, 1, None, null_mut(), null_mut()));
        assert_eq!(hydrant_trainer_epoch_count(trainer), 1);
        hydrant_trainer_free(trainer);
        hydrant_features_free(features);
        hydrant_tensor_free(labels);
    }
}

/// Asserts two head files hold the same heads, optimizer state and tensors, bit for bit. (Not
/// the files' bytes: the order of the header's metadata entries is not fixed.)
fn same_file(a: &std::path::Path, b: &std::path::Path) {
    let (x, y) = (HeadSet::load(a).unwrap(), HeadSet::load(b).unwrap());
    let bits = |t: &hydrant::Tensor| -> Vec<u32> {
        t.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(x.heads.len(), y.heads.len());
    for (hx, hy) in x.heads.iter().zip(&y.heads) {
        assert_eq!(hx.spec(), hy.spec());
        for ((n, tx), (_, ty)) in hx.tensors().iter().zip(hy.tensors()) {
            assert!(
                bits(tx) == bits(ty),
                "{}: tensor {n} differs from {}",
                a.display(),
                b.display()
            );
        }
    }
    assert!(x.optimizer.is_some() && x.optimizer == y.optimizer, "optimizer state differs");
    assert!(x == y, "head files differ");
}
