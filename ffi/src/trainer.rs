//! `hydrant_trainer`: fine-tuning heads on cached trunk features, from C.

use crate::error::{guard, guard_value, hydrant_status, Failure, FfiResult};
use crate::features::hydrant_features;
use crate::heads::model_heads;
use crate::inference::named_inputs;
use crate::model::hydrant_model;
use crate::ptr;
use crate::tensor::hydrant_tensor;
use crate::train_params::{hydrant_train_params, train_options};
use hydrant::train::{
    DeviceTrainer, EpochReport, Init, LayerSpec, TaskMetrics, TrainJob, TrainerChoice,
};
use hydrant::{Head, HeadSet, HeadSpec, Labels, TaskSpec, Tensor, Trainer};
use std::ffi::{c_char, c_int, c_void, CString};
use std::ops::ControlFlow;

/// Samples whose trunk features hydrant_trainer_add_samples() computes in one model call.
const SAMPLE_CHUNK: usize = 256;

/// Heads being fine-tuned, with their samples (trunk features computed once and cached) and
/// optimizer state (opaque). Made by hydrant_trainer_new(), hydrant_trainer_new_from_file(),
/// hydrant_trainer_new_from_spec() or hydrant_trainer_resume(); freed by hydrant_trainer_free().
/// A trainer is used by one thread at a time; it holds no reference to any model.
pub struct hydrant_trainer {
    trainer: DeviceTrainer,
    /// The heads' names, in trainer order.
    heads: Vec<String>,
    /// The same as C strings.
    names: Vec<CString>,
    /// Where it trains (`cpu`, `cuda:N`) and why, as C strings.
    device: (CString, CString),
}

/// Metrics of one head over one pass through samples. Metrics that do not apply to the head's
/// task are NaN.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hydrant_task_metrics {
    /// The head's name, owned by the trainer (valid until it is freed).
    pub head: *const c_char,
    /// Mean loss.
    pub loss: f64,
    /// Fraction of correct predictions (classification; per label for multi-label).
    pub accuracy: f64,
    /// Macro-averaged F1 over the classes that occur (classification).
    pub macro_f1: f64,
    /// Mean intersection over union over the classes that occur (per-pixel classification).
    pub miou: f64,
    /// Mean absolute error (regression).
    pub mae: f64,
    /// Root mean squared error (regression).
    pub rmse: f64,
    /// Labelled samples seen.
    pub samples: usize,
}

/// What one epoch of hydrant_trainer_fit() did. The report and every array in it belong to the
/// library and are valid only during the callback it is passed to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hydrant_epoch_report {
    /// Epoch number, 1-based, counting every epoch this trainer has run (resumed runs included).
    pub epoch: usize,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
    /// Optimizer steps in the epoch.
    pub steps: usize,
    /// Number of heads: the length of `weights`, `train` and (when not NULL) `validation`.
    pub n_heads: usize,
    /// Loss weight of each head, in trainer head order.
    pub weights: *const f32,
    /// Training metrics of each head (from the training passes of the epoch).
    pub train: *const hydrant_task_metrics,
    /// Validation metrics of each head after the epoch; NULL without a validation split.
    pub validation: *const hydrant_task_metrics,
    /// Each head's loss at each step of the epoch: `n_heads` × `steps` values, head by head (NaN
    /// where a step did not train that head).
    pub step_losses: *const f32,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

/// Called by hydrant_trainer_fit() after each epoch with that epoch's report and the `user`
/// pointer given to it. Returning non-zero stops training after this epoch. It runs on the
/// thread that called hydrant_trainer_fit(), must not call into this trainer, and must return
/// normally (a C++ callback catches its exceptions).
pub type hydrant_epoch_callback =
    Option<unsafe extern "C" fn(report: *const hydrant_epoch_report, user: *mut c_void) -> c_int>;

impl hydrant_trainer {
    fn new(trainer: Trainer) -> *mut hydrant_trainer {
        let heads: Vec<String> = trainer.head_names().into_iter().map(String::from).collect();
        let names = heads.iter().map(|n| ptr::c_name(n)).collect();
        let device = (ptr::c_name("cpu"), ptr::c_name("the default of a new trainer"));
        let trainer = DeviceTrainer::Cpu(Box::new(trainer));
        Box::into_raw(Box::new(hydrant_trainer { trainer, heads, names, device }))
    }
}

/// The labels `labels[0..n_labels]`, one per head of `heads` in order, NULL for none.
///
/// # Safety
/// `labels` is NULL or `n_labels` pointers, each NULL or a live tensor.
unsafe fn c_labels(
    heads: &[String],
    labels: *const *const hydrant_tensor,
    n_labels: usize,
) -> FfiResult<Vec<(&str, Labels)>> {
    if n_labels != heads.len() {
        return Err(Failure::invalid(format!(
            "n_labels = {n_labels}: give one label tensor (or NULL) per trainer head ({})",
            heads.len()
        )));
    }
    // SAFETY: forwarded caller contract.
    let ptrs = unsafe { ptr::slice(labels, n_labels, "labels")? };
    Ok(ptrs
        .iter()
        .zip(heads)
        // SAFETY: each pointer is NULL or a live tensor (caller contract).
        .filter_map(|(&t, name)| unsafe { t.as_ref() }.map(|t| (name.as_str(), t)))
        .map(|(name, t)| (name, Labels::new(t.tensor().clone())))
        .collect())
}

/// The C metrics of `m`, naming the trainer head (of `names`) it is about.
fn c_metrics(names: &[CString], m: &TaskMetrics) -> hydrant_task_metrics {
    let head = names
        .iter()
        .find(|n| n.to_bytes() == m.head.as_bytes())
        .map_or(std::ptr::null(), |n| n.as_ptr());
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    hydrant_task_metrics {
        head,
        loss: m.loss,
        accuracy: nan(m.accuracy),
        macro_f1: nan(m.macro_f1),
        miou: nan(m.miou),
        mae: nan(m.mae),
        rmse: nan(m.rmse),
        samples: m.samples,
    }
}

/// The size of a head's output channel axis, from its last layer that sets one.
fn out_channels(spec: &HeadSpec) -> Option<usize> {
    spec.layers.iter().rev().find_map(|l| match l {
        LayerSpec::Linear { out_features, .. } => Some(*out_features),
        LayerSpec::Conv2d { out_channels, .. } => Some(*out_channels),
        _ => None,
    })
}

/// Gives `head` the task `task`: NULL keeps the head's own; a loss name (`ce`, `bce`, `mse`,
/// `l1`, `huber`, `smooth_l1`) sized by the head's last Linear or Conv layer; or a JSON task.
///
/// # Safety
/// `task` is NULL or a C string.
unsafe fn with_task(head: Head, task: *const c_char, what: &str) -> FfiResult<Head> {
    if task.is_null() {
        return Ok(head);
    }
    // SAFETY: a C string (caller contract).
    let text = unsafe { ptr::string(task, what)? }.trim();
    let task: TaskSpec = if text.starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| Failure::invalid(format!("{what}: not a task description ({e})")))?
    } else {
        let channels = out_channels(head.spec()).ok_or_else(|| {
            Failure::invalid(format!(
                "{what}: head `{}` has no Linear or Conv layer to size the task by; give the task \
                 as JSON, such as {{\"loss\": \"cross_entropy\", \"classes\": 10}}",
                head.name()
            ))
        })?;
        TaskSpec::from_loss_name(text, channels)?
    };
    task.validate()?;
    let mut spec = head.spec().clone();
    spec.task = Some(task);
    Ok(Head::new(spec, head.tensors().to_vec())?)
}

/// Gives heads their tasks (`tasks` NULL: keep every head's own) and makes the trainer.
///
/// # Safety
/// `tasks` is NULL or `heads.len()` pointers, each NULL or a C string; `params` as documented.
unsafe fn make(
    heads: Vec<Head>,
    tasks: *const *const c_char,
    params: *const hydrant_train_params,
    out: *mut *mut hydrant_trainer,
) -> FfiResult {
    // SAFETY: forwarded caller contract.
    let p = unsafe { ptr::borrow(params, "params")? };
    let options = unsafe { train_options(p)? };
    let tasks = match tasks.is_null() {
        true => vec![std::ptr::null(); heads.len()],
        false => unsafe { ptr::slice(tasks, heads.len(), "tasks")? }.to_vec(),
    };
    let heads = heads
        .into_iter()
        .zip(tasks)
        .enumerate()
        // SAFETY: each task is NULL or a C string (caller contract).
        .map(|(i, (h, t))| unsafe { with_task(h, t, &format!("tasks[{i}]")) })
        .collect::<FfiResult<Vec<Head>>>()?;
    let trainer = Trainer::new(heads, options)?;
    // SAFETY: checked writable by the caller of `make`.
    unsafe { ptr::write(out, hydrant_trainer::new(trainer), "out") }
}

/// Creates a trainer for heads `heads[0..n_heads]` of `model` (their current weights as the
/// starting point: heads from the model file are imported into hydrant's layer vocabulary).
///
/// `tasks` is NULL (every head keeps its own task; heads from an ONNX file have none) or
/// `n_heads` entries, each NULL (keep) or a task: a loss name, `"ce"` (cross-entropy, labels are
/// class indices), `"bce"` (multi-label, 0/1 floats), `"mse"`, `"l1"`, `"huber"` or
/// `"smooth_l1"` (regression, float targets), sized by the head's last Linear or Conv layer; or a
/// JSON task such as `{"loss": "cross_entropy", "classes": 10, "label_smoothing": 0.1}`.
/// `params` is read only during the call. The model may be freed before the trainer.
///
/// Returns HYDRANT_OK and sets `*out` to a new trainer the caller frees with
/// hydrant_trainer_free(). On failure sets `*out` to NULL (unless `out` is NULL) and returns
/// HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_UNKNOWN_HEAD, HYDRANT_ERR_NOT_TRAINABLE (the message
/// names the node that prevents it) or HYDRANT_ERR_INVALID_ARGUMENT (no heads, a head given
/// twice or without a task, a parameter out of range).
/// Thread safety: may run while other threads run the model.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_new(
    model: *const hydrant_model,
    heads: *const *const c_char,
    tasks: *const *const c_char,
    n_heads: usize,
    params: *const hydrant_train_params,
    out: *mut *mut hydrant_trainer,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let m = unsafe { ptr::borrow(model, "model")? };
        let names = unsafe { ptr::strings(heads, n_heads, "heads")? };
        if names.is_empty() {
            return Err(Failure::invalid("n_heads = 0: name the heads to train"));
        }
        let heads = model_heads(m.model(), &names)?;
        unsafe { make(heads, tasks, params, out) }
    })
}

/// Creates a trainer for the heads of the safetensors head file at `heads_path` (as written by
/// hydrant_trainer_save_heads() or hydrant_model_save_heads()), in file order. `tasks` is NULL or
/// one entry per head in the file, as in hydrant_trainer_new(); heads saved by a trainer keep
/// their task. Optimizer state in the file is not used (continue a run with
/// hydrant_trainer_resume()).
///
/// Returns as hydrant_trainer_new(); also HYDRANT_ERR_IO and HYDRANT_ERR_INVALID_MODEL.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_new_from_file(
    heads_path: *const c_char,
    tasks: *const *const c_char,
    params: *const hydrant_train_params,
    out: *mut *mut hydrant_trainer,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let path = unsafe { ptr::string(heads_path, "heads_path")? };
        unsafe { ptr::borrow(params, "params")? };
        let set = HeadSet::load(path)?;
        unsafe { make(set.heads, tasks, params, out) }
    })
}

/// Creates a trainer for new heads described in JSON (`spec_json`: one head description or a
/// list of them, the `hydrant.heads` format of head files, see docs/FORMAT.md), each with a task,
/// initialised as PyTorch initialises its layers from `params->seed`. For example:
/// `{"name": "prime", "inputs": ["features"], "layers": [{"kind": "linear", "in_features": 64,
/// "out_features": 2}], "task": {"loss": "cross_entropy", "classes": 2}}`.
///
/// Returns as hydrant_trainer_new(); HYDRANT_ERR_INVALID_ARGUMENT also for JSON that does not
/// describe heads.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_new_from_spec(
    spec_json: *const c_char,
    params: *const hydrant_train_params,
    out: *mut *mut hydrant_trainer,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let text = unsafe { ptr::string(spec_json, "spec_json")? }.trim();
        let p = unsafe { ptr::borrow(params, "params")? };
        let bad = |e: serde_json::Error| {
            Failure::invalid(format!("spec_json: not a head description ({e})"))
        };
        let specs: Vec<HeadSpec> = match text.starts_with('[') {
            true => serde_json::from_str(text).map_err(bad)?,
            false => vec![serde_json::from_str(text).map_err(bad)?],
        };
        let heads = specs
            .into_iter()
            .enumerate()
            .map(|(i, s)| Head::init(s, Init::PyTorch, p.seed.wrapping_add(i as u64)))
            .collect::<hydrant::Result<Vec<Head>>>()?;
        unsafe { make(heads, std::ptr::null(), params, out) }
    })
}

/// Creates a trainer that continues the run saved by hydrant_trainer_save_checkpoint() at
/// `checkpoint_path`: heads, optimizer state, epoch, random stream, early-stopping state and
/// history. Give it the same `params` as the run that wrote it, and add the same samples again
/// before hydrant_trainer_fit(); the resumed run then equals an uninterrupted one.
///
/// Returns as hydrant_trainer_new_from_file(); HYDRANT_ERR_INVALID_MODEL also for a file that is
/// not a checkpoint or was written with other weighting.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_resume(
    checkpoint_path: *const c_char,
    params: *const hydrant_train_params,
    out: *mut *mut hydrant_trainer,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        unsafe { ptr::write(out, std::ptr::null_mut(), "out")? };
        let path = unsafe { ptr::string(checkpoint_path, "checkpoint_path")? };
        let p = unsafe { ptr::borrow(params, "params")? };
        let trainer = Trainer::resume(path, unsafe { train_options(p)? })?;
        unsafe { ptr::write(out, hydrant_trainer::new(trainer), "out") }
    })
}

/// Frees a trainer and its feature cache (a cache file, if any, is removed). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_free(trainer: *mut hydrant_trainer) {
    guard_value((), || {
        if !trainer.is_null() {
            // SAFETY: a pointer from `hydrant_trainer::new` not freed before (header contract).
            drop(unsafe { Box::from_raw(trainer) });
        }
        Ok(())
    })
}

/// Number of heads the trainer trains (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_head_count(trainer: *const hydrant_trainer) -> usize {
    // SAFETY: NULL or a live trainer (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(trainer, "trainer")? }.names.len()))
}

/// Name of trainer head `index` (the order labels are given in), owned by the trainer and valid
/// until it is freed; NULL when `trainer` is NULL or `index` is out of range.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_head_name(
    trainer: *const hydrant_trainer,
    index: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: NULL or a live trainer (header contract).
        let t = unsafe { ptr::borrow(trainer, "trainer")? };
        let name = t.names.get(index).ok_or_else(|| {
            Failure::invalid(format!("head index {index} out of range ({})", t.names.len()))
        })?;
        Ok(name.as_ptr())
    })
}

/// Number of samples added so far (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_sample_count(trainer: *const hydrant_trainer) -> usize {
    // SAFETY: NULL or a live trainer (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(trainer, "trainer")? }.trainer.samples()))
}

/// Number of epochs run so far, resumed ones included (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_epoch_count(trainer: *const hydrant_trainer) -> usize {
    // SAFETY: NULL or a live trainer (header contract).
    guard_value(0, || Ok(unsafe { ptr::borrow(trainer, "trainer")? }.trainer.history().len()))
}

/// Chooses where the trainer trains, before any sample is added: `device` is `"auto"`, `"cpu"`,
/// `"cuda"` or `"cuda:N"`, or NULL for `$HYDRANT_DEVICE` (else auto), as for models. A new
/// trainer trains on the CPU. With a usable CUDA device (hydrant built with the `cuda` feature,
/// a driver that sees it) and a job the GPU trainer runs (one head, static weighting, no
/// validation split or early stopping), training runs on the GPU; `auto` otherwise stays on the
/// CPU, and hydrant_trainer_device_reason() says why. On the GPU, hydrant_trainer_evaluate(),
/// hydrant_trainer_save_checkpoint() and hydrant_trainer_save_heads() with the optimizer state
/// return HYDRANT_ERR_INVALID_ARGUMENT (they run on the CPU trainer).
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, or HYDRANT_ERR_INVALID_ARGUMENT (a device name
/// not understood, an explicit CUDA device that is not usable or a job the GPU trainer refuses,
/// the message naming why; samples already added or epochs run). On failure the trainer stays
/// where it was.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_set_device(
    trainer: *mut hydrant_trainer,
    device: *const c_char,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| Failure::null("trainer"))?;
        let explicit = match device.is_null() {
            true => None,
            // SAFETY: a C string (header contract).
            false => Some(unsafe { ptr::string(device, "device")? }.parse()?),
        };
        let job =
            TrainJob { options: t.trainer.options(), heads: t.heads.len(), optimizer_state: false };
        let env = std::env::var("HYDRANT_DEVICE").ok();
        let choice = hydrant::train::device::choose_trainer_here(explicit, env.as_deref(), &job)?;
        move_trainer(t, &choice)
    })
}

/// Moves `t` to the trainer `choice` names (it stays where it was on failure).
fn move_trainer(t: &mut hydrant_trainer, choice: &TrainerChoice) -> FfiResult {
    t.trainer.move_to(choice)?;
    t.device = (ptr::c_name(&choice.kind.to_string()), ptr::c_name(&choice.reason));
    Ok(())
}

/// Where the trainer trains: `"cpu"` or `"cuda:N"`, owned by the trainer and valid until its
/// device is set again or it is freed; NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_device(trainer: *const hydrant_trainer) -> *const c_char {
    // SAFETY: NULL or a live trainer (header contract).
    guard_value(std::ptr::null(), || {
        Ok(unsafe { ptr::borrow(trainer, "trainer")? }.device.0.as_ptr())
    })
}

/// Why the trainer trains where hydrant_trainer_device() says, in words (such as `auto: no CUDA
/// driver (libcuda) found`), owned and valid as hydrant_trainer_device()'s result; NULL for
/// NULL.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_device_reason(
    trainer: *const hydrant_trainer,
) -> *const c_char {
    // SAFETY: NULL or a live trainer (header contract).
    guard_value(std::ptr::null(), || {
        Ok(unsafe { ptr::borrow(trainer, "trainer")? }.device.1.as_ptr())
    })
}

/// Adds samples from model inputs: `model` computes the trunk tensors the heads read (once per
/// sample, a few hundred samples per call) and the trainer caches them with the labels.
///
/// `inputs[0..n_inputs]` are matched to model inputs as in hydrant_model_run(); axis 0 of every
/// input is the sample axis. `labels` holds one entry per trainer head, in trainer head order
/// (`n_labels` must equal hydrant_trainer_head_count()): a tensor of labels for those samples
/// (axis 0 the samples: class indices of an integer type for cross-entropy, floats otherwise,
/// shaped like the head's output per sample without the class axis for cross-entropy), or NULL
/// when those samples have no label for that head. Everything is read only during the call.
/// Samples cannot be added once hydrant_trainer_fit() or hydrant_trainer_evaluate() has run.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_BAD_INPUT, HYDRANT_ERR_BAD_TENSOR
/// (labels of the wrong shape, type or count), HYDRANT_ERR_MISSING_FEATURE (the model lacks a
/// tensor a head reads), HYDRANT_ERR_INVALID_ARGUMENT or HYDRANT_ERR_BACKEND. On failure the
/// samples of the chunks already cached stay added.
/// Thread safety: the model may be run by other threads meanwhile.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_add_samples(
    trainer: *mut hydrant_trainer,
    model: *const hydrant_model,
    inputs: *const *const hydrant_tensor,
    n_inputs: usize,
    labels: *const *const hydrant_tensor,
    n_labels: usize,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| Failure::null("trainer"))?;
        let m = unsafe { ptr::borrow(model, "model")? };
        let inputs = unsafe { named_inputs(m, inputs, n_inputs)? };
        let labels = unsafe { c_labels(&t.heads, labels, n_labels)? };
        Ok(t.trainer.add_samples(m.model(), &inputs, &labels, SAMPLE_CHUNK)?)
    })
}

/// Adds samples from trunk features (from hydrant_model_trunk(), or hydrant_features_new() with
/// tensors stored earlier): every tensor the heads read, axis 0 the samples. `labels` as in
/// hydrant_trainer_add_samples().
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_MISSING_FEATURE,
/// HYDRANT_ERR_BAD_TENSOR or HYDRANT_ERR_INVALID_ARGUMENT; on failure nothing is added.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_add_features(
    trainer: *mut hydrant_trainer,
    features: *const hydrant_features,
    labels: *const *const hydrant_tensor,
    n_labels: usize,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| Failure::null("trainer"))?;
        let f = unsafe { ptr::borrow(features, "features")? }.features();
        let labels = unsafe { c_labels(&t.heads, labels, n_labels)? };
        let owned: Vec<(&str, Tensor)> =
            f.names().into_iter().map(|n| Ok((n, f.get(n)?))).collect::<hydrant::Result<_>>()?;
        let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (*n, t)).collect();
        Ok(t.trainer.add_features(&refs, &labels)?)
    })
}

/// Passes one epoch's report to the C callback; its return value decides whether to go on.
///
/// # Safety
/// `callback` is a function as documented on [`hydrant_epoch_callback`].
unsafe fn report_epoch(
    names: &[CString],
    report: &EpochReport,
    callback: unsafe extern "C" fn(*const hydrant_epoch_report, *mut c_void) -> c_int,
    user: *mut c_void,
) -> ControlFlow<()> {
    let train: Vec<hydrant_task_metrics> =
        report.train.iter().map(|m| c_metrics(names, m)).collect();
    let val: Vec<hydrant_task_metrics> =
        report.validation.iter().map(|m| c_metrics(names, m)).collect();
    let losses: Vec<f32> = report
        .step_losses
        .iter()
        .flat_map(|l| (0..report.steps).map(|i| l.get(i).copied().unwrap_or(f32::NAN)))
        .collect();
    let c = hydrant_epoch_report {
        epoch: report.epoch,
        lr: report.lr,
        steps: report.steps,
        n_heads: train.len(),
        weights: report.weights.as_ptr(),
        train: train.as_ptr(),
        validation: if val.is_empty() { std::ptr::null() } else { val.as_ptr() },
        step_losses: losses.as_ptr(),
        seconds: report.seconds,
    };
    // SAFETY: the report and its arrays outlive the call (caller contract for the function).
    match unsafe { callback(&c, user) } {
        0 => ControlFlow::Continue(()),
        _ => ControlFlow::Break(()),
    }
}

/// Trains for `epochs` epochs (0: `params.epochs`), calling `callback` (unless NULL) with each
/// epoch's report and `user`; a non-zero return from it stops after that epoch, as does early
/// stopping. A later call continues where this one stopped (epochs, optimizer state and the
/// learning-rate schedule carry on). Writes the number of epochs run to `*epochs_run` unless it
/// is NULL (0 on failure).
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, or HYDRANT_ERR_INVALID_ARGUMENT (no samples,
/// a head without labelled samples, a loss that became infinite or NaN: lower the learning rate
/// or clip gradients). After a failure the heads hold the weights of the last finished step.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_fit(
    trainer: *mut hydrant_trainer,
    epochs: usize,
    callback: hydrant_epoch_callback,
    user: *mut c_void,
    epochs_run: *mut usize,
) -> hydrant_status {
    guard(|| {
        if !epochs_run.is_null() {
            // SAFETY: writable when not NULL (header contract).
            unsafe { epochs_run.write(0) };
        }
        // SAFETY: NULL or a live trainer used by no other thread (header contract).
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| Failure::null("trainer"))?;
        let names = &t.names;
        let reports = t.trainer.fit((epochs > 0).then_some(epochs), |report| match callback {
            // SAFETY: a callback as documented (header contract).
            Some(f) => unsafe { report_epoch(names, report, f, user) },
            None => ControlFlow::Continue(()),
        })?;
        if !epochs_run.is_null() {
            // SAFETY: as above.
            unsafe { epochs_run.write(reports.len()) };
        }
        Ok(())
    })
}

/// Measures every head in inference mode on the validation samples (all samples without a
/// validation split) and writes one entry per head, in trainer head order, to
/// `metrics[0..*n_metrics]`. When `capacity` is below the head count, writes nothing, sets
/// `*n_metrics` to the head count and returns HYDRANT_ERR_CAPACITY.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_CAPACITY or
/// HYDRANT_ERR_INVALID_ARGUMENT (a head ending in Softmax: evaluate its logits).
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_evaluate(
    trainer: *mut hydrant_trainer,
    metrics: *mut hydrant_task_metrics,
    capacity: usize,
    n_metrics: *mut usize,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        unsafe { ptr::write(n_metrics, 0, "n_metrics")? };
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| Failure::null("trainer"))?;
        let n = t.names.len();
        if capacity < n {
            unsafe { ptr::write(n_metrics, n, "n_metrics")? };
            return Err(Failure::new(
                hydrant_status::HYDRANT_ERR_CAPACITY,
                format!("the trainer has {n} heads; capacity is {capacity}"),
            ));
        }
        if metrics.is_null() {
            return Err(Failure::null("metrics"));
        }
        let measured = t.trainer.evaluate()?;
        for (i, m) in measured.iter().enumerate().take(capacity) {
            // SAFETY: i < capacity slots (header contract).
            unsafe { metrics.add(i).write(c_metrics(&t.names, m)) };
        }
        unsafe { ptr::write(n_metrics, measured.len().min(capacity), "n_metrics") }
    })
}

/// Writes the trainer's heads with their current weights to a safetensors head file at `path`
/// (replaced atomically), with their optimizer state when `with_optimizer` is non-zero. The file
/// loads with hydrant_model_swap_heads(), hydrant_model_load_parts(),
/// hydrant_trainer_new_from_file() and PyTorch's `safetensors.torch.load_file`.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_IO.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_save_heads(
    trainer: *mut hydrant_trainer,
    path: *const c_char,
    with_optimizer: c_int,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| Failure::null("trainer"))?;
        let path = unsafe { ptr::string(path, "path")? };
        Ok(t.trainer.head_set(with_optimizer != 0)?.save(path)?)
    })
}

/// Writes the trainer's whole state (heads, optimizer state, epoch, random stream, weighting and
/// early-stopping state, history) to `path` (replaced atomically), to continue later with
/// hydrant_trainer_resume(). The file is also a head file.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_IO.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_save_checkpoint(
    trainer: *mut hydrant_trainer,
    path: *const c_char,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| Failure::null("trainer"))?;
        let path = unsafe { ptr::string(path, "path")? };
        Ok(t.trainer.save_checkpoint(path)?)
    })
}

/// Sets the trainer's heads, with their current weights, into `model`: each replaces the model's
/// head of the same name or is added, all at once, as hydrant_model_swap_heads() does from a
/// file (and with the same guarantees for threads running the model meanwhile). The trainer
/// keeps training its own copy.
///
/// Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, or what hydrant_model_swap_heads() returns for
/// a head that does not fit the model.
#[no_mangle]
pub unsafe extern "C" fn hydrant_trainer_swap_into(
    trainer: *mut hydrant_trainer,
    model: *const hydrant_model,
) -> hydrant_status {
    guard(|| {
        // SAFETY: every pointer is NULL or valid as documented (header contract).
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| Failure::null("trainer"))?;
        let m = unsafe { ptr::borrow(model, "model")? };
        Ok(m.model().set_heads(&HeadSet::new(t.trainer.heads()?))?)
    })
}
