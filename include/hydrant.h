/*
 * hydrant.h: the C interface of hydrant, an embeddable runtime for multi-task neural networks
 * (one shared trunk, several task heads). Link with libhydrant (pkg-config: hydrant; CMake:
 * find_package(hydrant) and target hydrant::hydrant). C11 and C++ compatible. See docs/C-API.md.
 *
 * Conventions (they hold for every function below):
 *
 * - Handles. hydrant_model, hydrant_tensor and hydrant_features are opaque. Every function that
 *   creates one has a matching *_free(), which accepts NULL.
 * - Errors. A call that can fail returns a hydrant_status and writes its results through
 *   out-pointers; on failure it sets those to NULL (or 0), and hydrant_last_error() returns a
 *   message naming what was wrong (the file, node, tensor, head or shape involved).
 * - Pointers. Every pointer argument is NULL or valid for what the function reads or writes.
 *   A NULL where something is needed is reported as HYDRANT_ERR_NULL_ARGUMENT, never a crash.
 *   Arrays and strings passed in are read only during the call; what is kept is copied.
 * - Ownership. Tensors and features a call creates belong to the caller until freed. Strings
 *   and shapes returned by accessors belong to the handle they come from and live as long as it.
 * - Threads. A model may be run by any number of threads at once. Tensors and features may be
 *   read by several threads at once; freeing or renaming one must not race with other uses.
 *   The error message is per thread. The library keeps no other global state.
 * - Panics. No Rust panic crosses this interface: an internal error is caught and returned as
 *   HYDRANT_ERR_PANIC, and the library stays usable.
 * - Versions. HYDRANT_ABI_VERSION changes with any incompatible change to this interface and is
 *   the major number of the shared library's soname; compare it with hydrant_abi_version().
 */

#ifndef HYDRANT_H
#define HYDRANT_H

/* Generated from ffi/ by cbindgen and ffi/tests/header.rs: edit the Rust sources, not this file. */

#include <stddef.h>
#include <stdint.h>

/* ================================================================================================
 * Constants and types
 * ================================================================================================ */

/**
 * Version of the C ABI described by `hydrant.h`. It changes whenever a function signature, a
 * struct layout or the meaning of a value changes incompatibly, and is the major number of the
 * shared library's soname (`libhydrant.so.1`). Compare it with `hydrant_abi_version()` at run
 * time to check that the header and the library agree.
 */
#define HYDRANT_ABI_VERSION 1

/**
 * Major version of the library this header comes from.
 */
#define HYDRANT_VERSION_MAJOR 0

/**
 * Minor version of the library this header comes from.
 */
#define HYDRANT_VERSION_MINOR 1

/**
 * Patch version of the library this header comes from.
 */
#define HYDRANT_VERSION_PATCH 0

/**
 * Outcome of a call: `HYDRANT_OK`, or the kind of error, whose message `hydrant_last_error()`
 * then returns. Codes 1 to 99 are the runtime's error kinds; 100 and up are the C interface's own.
 */
typedef enum hydrant_status {
    /**
     * Success.
     */
    HYDRANT_OK = 0,
    /**
     * A file could not be opened, read or written.
     */
    HYDRANT_ERR_IO = 1,
    /**
     * A model file is not a well-formed model.
     */
    HYDRANT_ERR_INVALID_MODEL = 2,
    /**
     * The model uses an operator hydrant cannot run (the message names the node).
     */
    HYDRANT_ERR_UNSUPPORTED_OP = 3,
    /**
     * A head name the model does not have (the message lists those it has).
     */
    HYDRANT_ERR_UNKNOWN_HEAD = 4,
    /**
     * A tensor name the model graph does not have, such as a cut point.
     */
    HYDRANT_ERR_UNKNOWN_TENSOR = 5,
    /**
     * An input is missing, unknown, or has the wrong shape or element type.
     */
    HYDRANT_ERR_BAD_INPUT = 6,
    /**
     * A tensor's shape, element type or data is not acceptable.
     */
    HYDRANT_ERR_BAD_TENSOR = 7,
    /**
     * A `.npy` file is malformed or unsupported.
     */
    HYDRANT_ERR_NPY = 8,
    /**
     * Features lack a tensor that a requested head reads.
     */
    HYDRANT_ERR_MISSING_FEATURE = 9,
    /**
     * A value outside what a parameter accepts.
     */
    HYDRANT_ERR_INVALID_ARGUMENT = 10,
    /**
     * The inference engine failed while preparing or running part of the model.
     */
    HYDRANT_ERR_BACKEND = 11,
    /**
     * A head cannot be trained (the message names the op or structure that prevents it).
     */
    HYDRANT_ERR_NOT_TRAINABLE = 12,
    /**
     * A required pointer argument was NULL.
     */
    HYDRANT_ERR_NULL_ARGUMENT = 100,
    /**
     * An output array is too small; the call wrote the capacity it needs and nothing else.
     */
    HYDRANT_ERR_CAPACITY = 101,
    /**
     * An internal error (a Rust panic) was caught at the boundary; the library stays usable.
     */
    HYDRANT_ERR_PANIC = 102,
} hydrant_status;

/**
 * Trunk tensors computed for one input batch, kept to run heads on later (opaque). Made by
 * hydrant_model_trunk(), hydrant_model_trunk_for() or hydrant_features_new(); freed by
 * hydrant_features_free().
 */
typedef struct hydrant_features hydrant_features;

/**
 * A loaded multi-head model, split into trunk and heads (opaque). Made by hydrant_model_load(),
 * hydrant_model_load_with_params() or hydrant_model_load_from_memory(); freed by
 * hydrant_model_free().
 */
typedef struct hydrant_model hydrant_model;

/**
 * A dense row-major tensor (opaque): shape, element type, data and an optional name. Made by
 * hydrant_tensor_new(), hydrant_tensor_load_npy() and the model calls; freed by
 * hydrant_tensor_free().
 */
typedef struct hydrant_tensor hydrant_tensor;

/**
 * Heads being fine-tuned, with their samples (trunk features computed once and cached) and
 * optimizer state (opaque). Made by hydrant_trainer_new(), hydrant_trainer_new_from_file(),
 * hydrant_trainer_new_from_spec() or hydrant_trainer_resume(); freed by hydrant_trainer_free().
 * A trainer is used by one thread at a time; it holds no reference to any model.
 */
typedef struct hydrant_trainer hydrant_trainer;

/**
 * Element type of a tensor. The values are ONNX's `TensorProto.DataType` numbers.
 */
typedef int32_t hydrant_dtype;

/**
 * Where a model runs: one of the HYDRANT_DEVICE_* values.
 */
typedef int32_t hydrant_device;

/**
 * How to load a model. Start from hydrant_model_default_params() and change the fields needed;
 * fields may be added at the end when HYDRANT_ABI_VERSION changes.
 */
typedef struct hydrant_model_params {
    /**
     * Intra-op threads used by one call; 0 (the default) means one per available core.
     */
    uint32_t threads;
    /**
     * The device: HYDRANT_DEVICE_AUTO (default), HYDRANT_DEVICE_CPU or HYDRANT_DEVICE_CUDA.
     */
    hydrant_device device;
    /**
     * The CUDA device number when `device` is HYDRANT_DEVICE_CUDA (default 0).
     */
    uint32_t device_index;
    /**
     * Names of the trunk tensors where heads attach (`n_cut_points` of them), or NULL for the
     * automatic split. Read only during the load call.
     */
    const char *const *cut_points;
    /**
     * Number of names in `cut_points` (default 0).
     */
    size_t n_cut_points;
    /**
     * Whether a batch of N runs as N batch-1 rows spread over the threads (1) or as one batch-N
     * pass (0); negative (the default) lets hydrant choose (rows for convolutional models).
     */
    int32_t batch_as_rows;
    /**
     * Most bytes the model's stored tensors may declare, checked before allocating; 0 (the
     * default) means 4 GiB.
     */
    uint64_t max_bytes;
} hydrant_model_params;

/**
 * An optimizer: one of the HYDRANT_OPTIMIZER_* values.
 */
typedef int32_t hydrant_optimizer;

/**
 * A learning-rate schedule: one of the HYDRANT_SCHEDULE_* values.
 */
typedef int32_t hydrant_schedule;

/**
 * How the losses of several heads trained together combine: one of the HYDRANT_WEIGHTING_*
 * values.
 */
typedef int32_t hydrant_weighting;

/**
 * How a trainer trains. Start from hydrant_train_params_default() and change the fields needed;
 * fields may be added at the end when HYDRANT_ABI_VERSION changes. Pointers in it are read only
 * while the call that takes the parameters runs.
 */
typedef struct hydrant_train_params {
    /**
     * Epochs that hydrant_trainer_fit() runs when asked for 0 (default 10); the learning-rate
     * schedule spans this many epochs.
     */
    uint32_t epochs;
    /**
     * Samples per optimizer step (default 32).
     */
    uint32_t batch_size;
    /**
     * Non-zero (default 1): shuffle the samples every epoch; 0: batches follow sample order.
     */
    int32_t shuffle;
    /**
     * Seed of the shuffling, the validation split and dropout (default 0).
     */
    uint64_t seed;
    /**
     * Base learning rate (default 0.01).
     */
    float lr;
    /**
     * HYDRANT_OPTIMIZER_SGD (default) or HYDRANT_OPTIMIZER_ADAMW.
     */
    hydrant_optimizer optimizer;
    /**
     * SGD momentum in [0, 1) (default 0.9).
     */
    float momentum;
    /**
     * SGD dampening in [0, 1] (default 0).
     */
    float dampening;
    /**
     * Non-zero: Nesterov momentum (SGD; needs momentum > 0 and no dampening). Default 0.
     */
    int32_t nesterov;
    /**
     * Weight decay (SGD: L2 added to the gradient; AdamW: decoupled). Negative (the default)
     * means the optimizer's own default: 0 for SGD, 0.01 for AdamW.
     */
    float weight_decay;
    /**
     * AdamW first-moment decay in [0, 1) (default 0.9).
     */
    float beta1;
    /**
     * AdamW second-moment decay in [0, 1) (default 0.999).
     */
    float beta2;
    /**
     * AdamW denominator term, > 0 (default 1e-8).
     */
    float eps;
    /**
     * HYDRANT_SCHEDULE_CONSTANT (default), HYDRANT_SCHEDULE_STEP or HYDRANT_SCHEDULE_COSINE.
     */
    hydrant_schedule schedule;
    /**
     * Step schedule: epochs between decays, ≥ 1 (default 10).
     */
    uint32_t step_every_epochs;
    /**
     * Step schedule: factor per decay (default 0.1).
     */
    float step_gamma;
    /**
     * Cosine schedule: final learning rate (default 0).
     */
    float min_lr;
    /**
     * Linear warm-up steps before the schedule (default 0).
     */
    uint32_t warmup_steps;
    /**
     * Clip the joint gradient norm of all heads to this; 0 (the default) does not clip.
     */
    float clip_grad_norm;
    /**
     * One of the HYDRANT_WEIGHTING_* values (default HYDRANT_WEIGHTING_STATIC).
     */
    hydrant_weighting weighting;
    /**
     * Static weighting: one weight (finite, ≥ 0) per trainer head, in head order; NULL (the
     * default) weighs every head 1.
     */
    const float *static_weights;
    /**
     * Number of values at `static_weights` (default 0).
     */
    size_t n_static_weights;
    /**
     * DWA temperature, > 0 (default 2).
     */
    float dwa_temperature;
    /**
     * GradNorm restoring-force exponent (default 1.5).
     */
    float gradnorm_alpha;
    /**
     * GradNorm learning rate of the weights, > 0 (default 0.025).
     */
    float gradnorm_lr;
    /**
     * Fraction of the samples held out for validation, in [0, 1) (default 0: none).
     */
    float validation_fraction;
    /**
     * Early stopping: stop after this many epochs without a lower validation loss; 0 (the
     * default) never stops early. Needs a validation fraction.
     */
    uint32_t early_stopping_patience;
    /**
     * Early stopping: the smallest decrease that counts as lower (default 0).
     */
    double early_stopping_min_delta;
    /**
     * Early stopping: non-zero (default 1) puts back the weights of the best epoch at the end.
     */
    int32_t early_stopping_restore_best;
    /**
     * Non-zero: BatchNorm layers keep their running statistics (and normalise with them) while
     * training. Default 0.
     */
    int32_t frozen_batchnorm;
    /**
     * Training threads; 0 (the default) means one per available core.
     */
    uint32_t threads;
    /**
     * Bytes of cached trunk features held in memory before the cache moves to a memory-mapped
     * file; 0 (the default) means 1 GiB.
     */
    uint64_t memory_budget;
    /**
     * Folder for that file (NULL, the default: the system's temporary folder).
     */
    const char *cache_dir;
} hydrant_train_params;

/**
 * Metrics of one head over one pass through samples. Metrics that do not apply to the head's
 * task are NaN.
 */
typedef struct hydrant_task_metrics {
    /**
     * The head's name, owned by the trainer (valid until it is freed).
     */
    const char *head;
    /**
     * Mean loss.
     */
    double loss;
    /**
     * Fraction of correct predictions (classification; per label for multi-label).
     */
    double accuracy;
    /**
     * Macro-averaged F1 over the classes that occur (classification).
     */
    double macro_f1;
    /**
     * Mean intersection over union over the classes that occur (per-pixel classification).
     */
    double miou;
    /**
     * Mean absolute error (regression).
     */
    double mae;
    /**
     * Root mean squared error (regression).
     */
    double rmse;
    /**
     * Labelled samples seen.
     */
    size_t samples;
} hydrant_task_metrics;

/**
 * What one epoch of hydrant_trainer_fit() did. The report and every array in it belong to the
 * library and are valid only during the callback it is passed to.
 */
typedef struct hydrant_epoch_report {
    /**
     * Epoch number, 1-based, counting every epoch this trainer has run (resumed runs included).
     */
    size_t epoch;
    /**
     * Learning rate of the epoch's last step.
     */
    float lr;
    /**
     * Optimizer steps in the epoch.
     */
    size_t steps;
    /**
     * Number of heads: the length of `weights`, `train` and (when not NULL) `validation`.
     */
    size_t n_heads;
    /**
     * Loss weight of each head, in trainer head order.
     */
    const float *weights;
    /**
     * Training metrics of each head (from the training passes of the epoch).
     */
    const hydrant_task_metrics *train;
    /**
     * Validation metrics of each head after the epoch; NULL without a validation split.
     */
    const hydrant_task_metrics *validation;
    /**
     * Each head's loss at each step of the epoch: `n_heads` × `steps` values, head by head (NaN
     * where a step did not train that head).
     */
    const float *step_losses;
    /**
     * Wall time of the epoch in seconds.
     */
    double seconds;
} hydrant_epoch_report;

/**
 * Called by hydrant_trainer_fit() after each epoch with that epoch's report and the `user`
 * pointer given to it. Returning non-zero stops training after this epoch. It runs on the
 * thread that called hydrant_trainer_fit(), must not call into this trainer, and must return
 * normally (a C++ callback catches its exceptions).
 */
typedef int (*hydrant_epoch_callback)(const struct hydrant_epoch_report *report, void *user);

/**
 * No element type: what hydrant_tensor_dtype() returns for a NULL tensor.
 */
#define HYDRANT_DTYPE_UNDEFINED 0

/**
 * 32-bit IEEE float (`float`).
 */
#define HYDRANT_DTYPE_F32 1

/**
 * Unsigned byte (`uint8_t`), as in 8-bit images.
 */
#define HYDRANT_DTYPE_U8 2

/**
 * Signed byte (`int8_t`).
 */
#define HYDRANT_DTYPE_I8 3

/**
 * 32-bit signed integer (`int32_t`).
 */
#define HYDRANT_DTYPE_I32 6

/**
 * 64-bit signed integer (`int64_t`), as in class labels.
 */
#define HYDRANT_DTYPE_I64 7

/**
 * Boolean, one byte per element holding 0 or 1.
 */
#define HYDRANT_DTYPE_BOOL 9

/**
 * 16-bit IEEE float, stored as its bits in a `uint16_t`.
 */
#define HYDRANT_DTYPE_F16 10

/**
 * 64-bit IEEE float (`double`).
 */
#define HYDRANT_DTYPE_F64 11

/**
 * bfloat16, stored as its bits in a `uint16_t`.
 */
#define HYDRANT_DTYPE_BF16 16

/**
 * A GPU when one is usable, else the CPU.
 */
#define HYDRANT_DEVICE_AUTO 0

/**
 * The CPU.
 */
#define HYDRANT_DEVICE_CPU 1

/**
 * The CUDA device numbered `device_index`.
 */
#define HYDRANT_DEVICE_CUDA 2

/**
 * SGD (PyTorch `torch.optim.SGD`): `momentum`, `dampening`, `nesterov`, `weight_decay`.
 */
#define HYDRANT_OPTIMIZER_SGD 0

/**
 * AdamW (PyTorch `torch.optim.AdamW`): `beta1`, `beta2`, `eps`, `weight_decay`.
 */
#define HYDRANT_OPTIMIZER_ADAMW 1

/**
 * The base rate throughout.
 */
#define HYDRANT_SCHEDULE_CONSTANT 0

/**
 * The rate times `step_gamma` every `step_every_epochs` epochs (PyTorch `StepLR`).
 */
#define HYDRANT_SCHEDULE_STEP 1

/**
 * Cosine annealing from the base rate to `min_lr` over the steps after warm-up.
 */
#define HYDRANT_SCHEDULE_COSINE 2

/**
 * Fixed weights: `static_weights` (or 1 for every head).
 */
#define HYDRANT_WEIGHTING_STATIC 0

/**
 * Homoscedastic-uncertainty weighting (a learned log-variance per head).
 */
#define HYDRANT_WEIGHTING_UNCERTAINTY 1

/**
 * Dynamic weight averaging with temperature `dwa_temperature`.
 */
#define HYDRANT_WEIGHTING_DWA 2

/**
 * GradNorm with `gradnorm_alpha` and weight learning rate `gradnorm_lr`.
 */
#define HYDRANT_WEIGHTING_GRADNORM 3

/**
 * One head per step, heads in turn.
 */
#define HYDRANT_WEIGHTING_ROUND_ROBIN 4

/**
 * One head per step, drawn in proportion to its remaining batches.
 */
#define HYDRANT_WEIGHTING_PROPORTIONAL 5

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/* ================================================================================================
 * Version and errors
 * ================================================================================================ */

/**
 * The library's version, such as "0.1.0": a static string, never NULL.
 */
const char *hydrant_version(void);

/**
 * The C ABI version the library implements; equal to HYDRANT_ABI_VERSION when the header and
 * the library match.
 */
uint32_t hydrant_abi_version(void);

/**
 * The message of the last failed call on this thread, or "" when the last call that returns a
 * hydrant_status succeeded. Never NULL. Calls returning a hydrant_status set it (to "" on
 * success); accessors returning a value set it only when they return their failure value (NULL,
 * 0 or HYDRANT_DTYPE_UNDEFINED). The string belongs to the library and stays valid until the
 * next call into the library on this thread; copy it to keep it.
 */
const char *hydrant_last_error(void);

/* ================================================================================================
 * Tensors
 * ================================================================================================ */

/**
 * Creates a tensor of `dtype` with `shape[0..rank]`, copying its elements from `data`.
 *
 * `data` holds the elements in row-major (C) order, native byte order: the product of the
 * dimensions times hydrant_dtype_size(dtype) bytes, with no alignment requirement. `data` and
 * `shape` may be NULL when the tensor has no elements or rank 0 respectively. Both are only read
 * during the call.
 *
 * Returns HYDRANT_OK and sets `*out` to a new tensor the caller frees with hydrant_tensor_free().
 * On failure sets `*out` to NULL (unless `out` is NULL) and returns HYDRANT_ERR_NULL_ARGUMENT,
 * HYDRANT_ERR_INVALID_ARGUMENT (unknown dtype) or HYDRANT_ERR_BAD_TENSOR (negative dimension,
 * rank above 8, element count overflow, bool byte other than 0 or 1).
 */
hydrant_status hydrant_tensor_new(hydrant_dtype dtype,
                                  const void *data,
                                  const int64_t *shape,
                                  size_t rank,
                                  hydrant_tensor **out);

/**
 * Creates an f32 tensor with `shape[0..rank]`, copying the product of the dimensions floats from
 * `data`. The same as hydrant_tensor_new() with HYDRANT_DTYPE_F32.
 */
hydrant_status hydrant_tensor_new_f32(const float *data,
                                      const int64_t *shape,
                                      size_t rank,
                                      hydrant_tensor **out);

/**
 * Reads a tensor from a NumPy `.npy` file (any supported dtype, C order, little-endian).
 *
 * Returns HYDRANT_OK and sets `*out` to a new unnamed tensor the caller frees with
 * hydrant_tensor_free(); on failure sets `*out` to NULL (unless `out` is NULL) and returns
 * HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_IO or HYDRANT_ERR_NPY.
 */
hydrant_status hydrant_tensor_load_npy(const char *path, hydrant_tensor **out);

/**
 * Writes a tensor to a NumPy `.npy` file, replacing any file at `path`.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_IO.
 */
hydrant_status hydrant_tensor_save_npy(const hydrant_tensor *tensor, const char *path);

/**
 * Frees a tensor. NULL is a no-op. The tensor must not be used afterwards, nor be freed twice.
 */
void hydrant_tensor_free(hydrant_tensor *tensor);

/**
 * Number of dimensions of `tensor` (0 for a scalar, and for NULL).
 */
size_t hydrant_tensor_rank(const hydrant_tensor *tensor);

/**
 * The dimensions of `tensor`: hydrant_tensor_rank() values, owned by the tensor and valid until
 * it is freed. NULL for a NULL tensor.
 */
const int64_t *hydrant_tensor_shape(const hydrant_tensor *tensor);

/**
 * Element type of `tensor` (HYDRANT_DTYPE_UNDEFINED for NULL).
 */
hydrant_dtype hydrant_tensor_dtype(const hydrant_tensor *tensor);

/**
 * Number of elements of `tensor`: the product of its dimensions (0 for NULL).
 */
size_t hydrant_tensor_element_count(const hydrant_tensor *tensor);

/**
 * Size of the data of `tensor` in bytes (0 for NULL).
 */
size_t hydrant_tensor_byte_size(const hydrant_tensor *tensor);

/**
 * The elements of `tensor` in row-major order, typed by hydrant_tensor_dtype() (f16 and bf16 as
 * `uint16_t` bits, bool as bytes 0 or 1). Owned by the tensor, valid until it is freed, suitably
 * aligned for its type. NULL for a NULL tensor.
 */
const void *hydrant_tensor_data(const hydrant_tensor *tensor);

/**
 * The elements of an f32 tensor, as hydrant_tensor_data(); NULL if `tensor` is NULL or its
 * element type is not HYDRANT_DTYPE_F32.
 */
const float *hydrant_tensor_data_f32(const hydrant_tensor *tensor);

/**
 * The tensor's name: for an output, the model output it holds; for a tensor made by the caller,
 * what hydrant_tensor_set_name() set. NULL when it has none. Owned by the tensor, valid until it
 * is freed or renamed.
 */
const char *hydrant_tensor_name(const hydrant_tensor *tensor);

/**
 * Names a tensor (copies `name`); NULL `name` removes the name. An input tensor with a name is
 * matched to the model input of that name, see hydrant_model_run().
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_INVALID_ARGUMENT (not UTF-8).
 * Thread safety: must not race with any other use of the same tensor.
 */
hydrant_status hydrant_tensor_set_name(hydrant_tensor *tensor, const char *name);

/**
 * Size in bytes of one element of `dtype`, or 0 for a value that is not a hydrant_dtype.
 */
size_t hydrant_dtype_size(hydrant_dtype dtype);

/**
 * Lower-case name of `dtype` ("f32", "u8", ...), a static string; NULL for a value that is not
 * a hydrant_dtype.
 */
const char *hydrant_dtype_name(hydrant_dtype dtype);

/* ================================================================================================
 * Models: loading and description
 * ================================================================================================ */

/**
 * The default load parameters: automatic device, split and batching, one thread per core,
 * 4 GiB budget for stored tensors.
 */
hydrant_model_params hydrant_model_default_params(void);

/**
 * Loads an ONNX model file with default parameters and splits it into trunk and heads.
 *
 * Returns HYDRANT_OK and sets `*out` to a new model the caller frees with hydrant_model_free().
 * On failure sets `*out` to NULL (unless `out` is NULL) and returns HYDRANT_ERR_NULL_ARGUMENT,
 * HYDRANT_ERR_IO, HYDRANT_ERR_INVALID_MODEL, HYDRANT_ERR_UNSUPPORTED_OP or
 * HYDRANT_ERR_INVALID_ARGUMENT, with the file, node or value named in the message.
 */
hydrant_status hydrant_model_load(const char *path, hydrant_model **out);

/**
 * Loads an ONNX model file with `params`; external tensor data is read from the model's folder.
 *
 * Returns as hydrant_model_load(); also HYDRANT_ERR_UNKNOWN_TENSOR for a cut point the graph
 * lacks, and HYDRANT_ERR_INVALID_ARGUMENT for a parameter out of range or a device this build
 * cannot use.
 */
hydrant_status hydrant_model_load_with_params(const char *path,
                                              hydrant_model_params params,
                                              hydrant_model **out);

/**
 * Loads an ONNX model from the `size` bytes at `data` (read only during the call) with `params`.
 * A model whose tensors are stored in external files cannot be loaded this way.
 *
 * Returns as hydrant_model_load_with_params().
 */
hydrant_status hydrant_model_load_from_memory(const void *data,
                                              size_t size,
                                              hydrant_model_params params,
                                              hydrant_model **out);

/**
 * Frees a model. NULL is a no-op. No other call may be using the model, and it must not be used
 * afterwards; tensors and features obtained from it stay valid.
 */
void hydrant_model_free(hydrant_model *model);

/**
 * Number of heads (0 for NULL).
 */
size_t hydrant_model_head_count(const hydrant_model *model);

/**
 * Name of head `index` (heads in the order of their first output; a head is named after its
 * first output; heads added by hydrant_model_swap_heads() come after the file's). Owned by the
 * model, valid until it is freed, even after heads are set. NULL when `model` is NULL or
 * `index` is out of range.
 */
const char *hydrant_model_head_name(const hydrant_model *model, size_t index);

/**
 * Sets `*out` to the number of output tensors hydrant_model_run() or hydrant_model_heads()
 * produce for the heads `heads[0..n_heads]` (all heads when `n_heads` is 0).
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_UNKNOWN_HEAD.
 */
hydrant_status hydrant_model_output_count(const hydrant_model *model,
                                          const char *const *heads,
                                          size_t n_heads,
                                          size_t *out);

/**
 * Number of model inputs (0 for NULL).
 */
size_t hydrant_model_input_count(const hydrant_model *model);

/**
 * Name of model input `index`, owned by the model and valid until it is freed; NULL when `model`
 * is NULL or `index` is out of range.
 */
const char *hydrant_model_input_name(const hydrant_model *model, size_t index);

/**
 * Element type model input `index` expects; HYDRANT_DTYPE_UNDEFINED when `model` is NULL or
 * `index` is out of range.
 */
hydrant_dtype hydrant_model_input_dtype(const hydrant_model *model, size_t index);

/**
 * Number of dimensions of model input `index` (0 when `model` is NULL or `index` out of range).
 */
size_t hydrant_model_input_rank(const hydrant_model *model, size_t index);

/**
 * Dimensions of model input `index`: hydrant_model_input_rank() values, -1 where the dimension is
 * symbolic (such as the batch size). Owned by the model, valid until it is freed; NULL when
 * `model` is NULL or `index` is out of range.
 */
const int64_t *hydrant_model_input_shape(const hydrant_model *model, size_t index);

/**
 * Intra-op threads one call on `model` uses (0 for NULL).
 */
size_t hydrant_model_threads(const hydrant_model *model);

/* ================================================================================================
 * Inference
 * ================================================================================================ */

/**
 * Runs the trunk once and the named heads (all heads when `n_heads` is 0) on
 * `inputs[0..n_inputs]`.
 *
 * Input `i` is matched to the model input named like it (hydrant_tensor_set_name()) or, when it
 * has no name, to model input `i`; every model input must be given once, with the dtype and shape
 * the model declares (any size for symbolic dimensions, equal sizes for equal symbols). Inputs are
 * read only during the call.
 *
 * Writes the outputs of those heads, in head order (as given, repeats ignored) then each head's
 * output order, into `outputs[0..*n_outputs]`: new tensors named after the model outputs, each
 * freed by the caller with hydrant_tensor_free(). When `capacity` is too small, writes nothing to
 * `outputs`, sets `*n_outputs` to the capacity needed and returns HYDRANT_ERR_CAPACITY
 * (hydrant_model_output_count() gives the number beforehand). On any other failure
 * `*n_outputs` is 0 and nothing is written.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_UNKNOWN_HEAD,
 * HYDRANT_ERR_BAD_INPUT (missing, unknown or repeated input, wrong dtype or shape),
 * HYDRANT_ERR_CAPACITY or HYDRANT_ERR_BACKEND.
 * Thread safety: any number of threads may run the same model at once.
 */
hydrant_status hydrant_model_run(const hydrant_model *model,
                                 const hydrant_tensor *const *inputs,
                                 size_t n_inputs,
                                 const char *const *heads,
                                 size_t n_heads,
                                 hydrant_tensor **outputs,
                                 size_t capacity,
                                 size_t *n_outputs);

/**
 * Runs the whole trunk on `inputs[0..n_inputs]` (matched as in hydrant_model_run()) and keeps
 * every tensor a head reads, to run heads on later with hydrant_model_heads().
 *
 * Returns HYDRANT_OK and sets `*out` to new features the caller frees with
 * hydrant_features_free(); on failure sets `*out` to NULL (unless `out` is NULL) and returns
 * HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_BAD_INPUT or HYDRANT_ERR_BACKEND.
 * Thread safety: as hydrant_model_run().
 */
hydrant_status hydrant_model_trunk(const hydrant_model *model,
                                   const hydrant_tensor *const *inputs,
                                   size_t n_inputs,
                                   hydrant_features **out);

/**
 * Like hydrant_model_trunk(), but runs only the part of the trunk that the heads
 * `heads[0..n_heads]` need (all of it when `n_heads` is 0), keeping only what they read.
 *
 * Returns as hydrant_model_trunk(); also HYDRANT_ERR_UNKNOWN_HEAD.
 */
hydrant_status hydrant_model_trunk_for(const hydrant_model *model,
                                       const hydrant_tensor *const *inputs,
                                       size_t n_inputs,
                                       const char *const *heads,
                                       size_t n_heads,
                                       hydrant_features **out);

/**
 * Runs the named heads (all heads when `n_heads` is 0) on `features` from hydrant_model_trunk()
 * or hydrant_features_new(). Outputs, capacity and failures are as in hydrant_model_run(); also
 * HYDRANT_ERR_MISSING_FEATURE when `features` lack a tensor a head reads.
 * Thread safety: as hydrant_model_run(); the same features may be used by several threads.
 */
hydrant_status hydrant_model_heads(const hydrant_model *model,
                                   const hydrant_features *features,
                                   const char *const *heads,
                                   size_t n_heads,
                                   hydrant_tensor **outputs,
                                   size_t capacity,
                                   size_t *n_outputs);

/* ================================================================================================
 * Features
 * ================================================================================================ */

/**
 * Builds features from named tensors, for example ones computed earlier by hydrant_model_trunk()
 * and stored by the application. Every tensor must have a name (hydrant_tensor_set_name()), the
 * trunk tensor it stands for. The tensors are copied; the caller keeps ownership of them.
 *
 * Returns HYDRANT_OK and sets `*out` to new features the caller frees with
 * hydrant_features_free(); on failure sets `*out` to NULL (unless `out` is NULL) and returns
 * HYDRANT_ERR_NULL_ARGUMENT, or HYDRANT_ERR_INVALID_ARGUMENT for an unnamed or repeated name.
 */
hydrant_status hydrant_features_new(const hydrant_tensor *const *tensors,
                                    size_t n_tensors,
                                    hydrant_features **out);

/**
 * Frees features. NULL is a no-op. The features must not be used afterwards, nor freed twice.
 */
void hydrant_features_free(hydrant_features *features);

/**
 * Number of tensors held (0 for NULL).
 */
size_t hydrant_features_count(const hydrant_features *features);

/**
 * Name of tensor `index` (names sorted), owned by the features and valid until they are freed;
 * NULL when `features` is NULL or `index` is out of range.
 */
const char *hydrant_features_name(const hydrant_features *features, size_t index);

/**
 * Copies the tensor called `name` out of the features.
 *
 * Returns HYDRANT_OK and sets `*out` to a new tensor named `name` that the caller frees with
 * hydrant_tensor_free(); on failure sets `*out` to NULL (unless `out` is NULL) and returns
 * HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_INVALID_ARGUMENT or HYDRANT_ERR_MISSING_FEATURE.
 */
hydrant_status hydrant_features_get(const hydrant_features *features,
                                    const char *name,
                                    hydrant_tensor **out);

/* ================================================================================================
 * Heads: head files, swaps, trainability, export
 * ================================================================================================ */

/**
 * Loads an ONNX model with `params`, then sets the heads of the safetensors head file at
 * `heads_path`: each replaces the model's head of the same name, or is added when the model has
 * none (as hydrant_model_swap_heads()).
 *
 * Returns HYDRANT_OK and sets `*out` to a new model the caller frees with hydrant_model_free().
 * On failure sets `*out` to NULL (unless `out` is NULL) and returns what
 * hydrant_model_load_with_params() and hydrant_model_swap_heads() return.
 */
hydrant_status hydrant_model_load_parts(const char *onnx_path,
                                        const char *heads_path,
                                        hydrant_model_params params,
                                        hydrant_model **out);

/**
 * Loads a whole model from one safetensors file holding a trunk and its heads (as written by
 * hydrant's Python tools or the Rust API): the trunk is built in memory and cut where the heads
 * attach (or at `params.cut_points`).
 *
 * Returns as hydrant_model_load_with_params(); HYDRANT_ERR_INVALID_MODEL also for a head file
 * without a trunk (load that one with hydrant_model_load_parts()).
 */
hydrant_status hydrant_model_load_safetensors(const char *path,
                                              hydrant_model_params params,
                                              hydrant_model **out);

/**
 * Sets the heads of the safetensors head file at `heads_path` into `model`: each head replaces
 * the model's head of the same name (keeping that head's output names), or is added as a new
 * head (after the others, with one output named after it) when the model has none.
 *
 * All or nothing: when any head does not fit (its input tensor is not in the trunk, its shapes do
 * not match), the model keeps all its heads. Atomic for concurrent callers: a
 * hydrant_model_run() on another thread sees either every head as before or every head of the
 * file, never a mix; runs already going finish with the heads they started with.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_IO, HYDRANT_ERR_INVALID_MODEL (not
 * a head file), HYDRANT_ERR_UNKNOWN_TENSOR (a head reads a tensor the model lacks) or
 * HYDRANT_ERR_INVALID_ARGUMENT / HYDRANT_ERR_BAD_INPUT (a head that does not fit).
 * Thread safety: may run while other threads run the model; calls that set heads of one model
 * take turns.
 */
hydrant_status hydrant_model_swap_heads(const hydrant_model *model,
                                        const char *heads_path);

/**
 * Writes heads `names[0..n_names]` of `model` (all heads when `n_names` is 0) to a safetensors
 * head file at `path` (replaced atomically: a reader never sees a partial file), with tensor
 * names `<head>.<layer>.<param>` as in a PyTorch state_dict. Heads from the model file are
 * converted to hydrant's layer vocabulary first.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_UNKNOWN_HEAD,
 * HYDRANT_ERR_NOT_TRAINABLE (a head outside the layer vocabulary; the message names the node)
 * or HYDRANT_ERR_IO.
 * Thread safety: may run while other threads run the model or set its heads.
 */
hydrant_status hydrant_model_save_heads(const hydrant_model *model,
                                        const char *const *names,
                                        size_t n_names,
                                        const char *path);

/**
 * Writes `model` with its current heads (swapped heads replace the file's nodes, added heads
 * become graph outputs) as an ONNX file at `path`, replaced atomically.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_INVALID_MODEL or HYDRANT_ERR_IO.
 * Thread safety: as hydrant_model_save_heads().
 */
hydrant_status hydrant_model_save_onnx(const hydrant_model *model, const char *path);

/**
 * Whether head `name` of `model` can be trained (and saved with hydrant_model_save_heads()): it
 * is made only of layers hydrant can train (Gemm/MatMul, Conv, normalisations, activations,
 * pooling, ...), or was set in from a head file.
 *
 * Returns HYDRANT_OK when it can; HYDRANT_ERR_NOT_TRAINABLE when it cannot, with the node or
 * structure that prevents it in hydrant_last_error(); HYDRANT_ERR_NULL_ARGUMENT or
 * HYDRANT_ERR_UNKNOWN_HEAD.
 */
hydrant_status hydrant_model_head_trainable(const hydrant_model *model,
                                            const char *name);

/* ================================================================================================
 * Training parameters
 * ================================================================================================ */

/**
 * The default training parameters: SGD with momentum 0.9, learning rate 0.01, batches of 32,
 * 10 epochs, shuffled with seed 0, constant rate, static weights of 1, no validation split.
 */
hydrant_train_params hydrant_train_params_default(void);

/* ================================================================================================
 * Fine-tuning heads
 * ================================================================================================ */

/**
 * Creates a trainer for heads `heads[0..n_heads]` of `model` (their current weights as the
 * starting point: heads from the model file are imported into hydrant's layer vocabulary).
 *
 * `tasks` is NULL (every head keeps its own task; heads from an ONNX file have none) or
 * `n_heads` entries, each NULL (keep) or a task: a loss name, `"ce"` (cross-entropy, labels are
 * class indices), `"bce"` (multi-label, 0/1 floats), `"mse"`, `"l1"`, `"huber"` or
 * `"smooth_l1"` (regression, float targets), sized by the head's last Linear or Conv layer; or a
 * JSON task such as `{"loss": "cross_entropy", "classes": 10, "label_smoothing": 0.1}`.
 * `params` is read only during the call. The model may be freed before the trainer.
 *
 * Returns HYDRANT_OK and sets `*out` to a new trainer the caller frees with
 * hydrant_trainer_free(). On failure sets `*out` to NULL (unless `out` is NULL) and returns
 * HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_UNKNOWN_HEAD, HYDRANT_ERR_NOT_TRAINABLE (the message
 * names the node that prevents it) or HYDRANT_ERR_INVALID_ARGUMENT (no heads, a head given
 * twice or without a task, a parameter out of range).
 * Thread safety: may run while other threads run the model.
 */
hydrant_status hydrant_trainer_new(const hydrant_model *model,
                                   const char *const *heads,
                                   const char *const *tasks,
                                   size_t n_heads,
                                   const hydrant_train_params *params,
                                   hydrant_trainer **out);

/**
 * Creates a trainer for the heads of the safetensors head file at `heads_path` (as written by
 * hydrant_trainer_save_heads() or hydrant_model_save_heads()), in file order. `tasks` is NULL or
 * one entry per head in the file, as in hydrant_trainer_new(); heads saved by a trainer keep
 * their task. Optimizer state in the file is not used (continue a run with
 * hydrant_trainer_resume()).
 *
 * Returns as hydrant_trainer_new(); also HYDRANT_ERR_IO and HYDRANT_ERR_INVALID_MODEL.
 */
hydrant_status hydrant_trainer_new_from_file(const char *heads_path,
                                             const char *const *tasks,
                                             const hydrant_train_params *params,
                                             hydrant_trainer **out);

/**
 * Creates a trainer for new heads described in JSON (`spec_json`: one head description or a
 * list of them, the `hydrant.heads` format of head files, see docs/FORMAT.md), each with a task,
 * initialised as PyTorch initialises its layers from `params->seed`. For example:
 * `{"name": "prime", "inputs": ["features"], "layers": [{"kind": "linear", "in_features": 64,
 * "out_features": 2}], "task": {"loss": "cross_entropy", "classes": 2}}`.
 *
 * Returns as hydrant_trainer_new(); HYDRANT_ERR_INVALID_ARGUMENT also for JSON that does not
 * describe heads.
 */
hydrant_status hydrant_trainer_new_from_spec(const char *spec_json,
                                             const hydrant_train_params *params,
                                             hydrant_trainer **out);

/**
 * Creates a trainer that continues the run saved by hydrant_trainer_save_checkpoint() at
 * `checkpoint_path`: heads, optimizer state, epoch, random stream, early-stopping state and
 * history. Give it the same `params` as the run that wrote it, and add the same samples again
 * before hydrant_trainer_fit(); the resumed run then equals an uninterrupted one.
 *
 * Returns as hydrant_trainer_new_from_file(); HYDRANT_ERR_INVALID_MODEL also for a file that is
 * not a checkpoint or was written with other weighting.
 */
hydrant_status hydrant_trainer_resume(const char *checkpoint_path,
                                      const hydrant_train_params *params,
                                      hydrant_trainer **out);

/**
 * Frees a trainer and its feature cache (a cache file, if any, is removed). NULL is a no-op.
 */
void hydrant_trainer_free(hydrant_trainer *trainer);

/**
 * Number of heads the trainer trains (0 for NULL).
 */
size_t hydrant_trainer_head_count(const hydrant_trainer *trainer);

/**
 * Name of trainer head `index` (the order labels are given in), owned by the trainer and valid
 * until it is freed; NULL when `trainer` is NULL or `index` is out of range.
 */
const char *hydrant_trainer_head_name(const hydrant_trainer *trainer, size_t index);

/**
 * Number of samples added so far (0 for NULL).
 */
size_t hydrant_trainer_sample_count(const hydrant_trainer *trainer);

/**
 * Number of epochs run so far, resumed ones included (0 for NULL).
 */
size_t hydrant_trainer_epoch_count(const hydrant_trainer *trainer);

/**
 * Chooses where the trainer trains, before any sample is added: `device` is `"auto"`, `"cpu"`,
 * `"cuda"` or `"cuda:N"`, or NULL for `$HYDRANT_DEVICE` (else auto), as for models. A new
 * trainer trains on the CPU. With a usable CUDA device (hydrant built with the `cuda` feature,
 * a driver that sees it) and a job the GPU trainer runs (one head, static weighting, no
 * validation split or early stopping), training runs on the GPU; `auto` otherwise stays on the
 * CPU, and hydrant_trainer_device_reason() says why. On the GPU, hydrant_trainer_evaluate(),
 * hydrant_trainer_save_checkpoint() and hydrant_trainer_save_heads() with the optimizer state
 * return HYDRANT_ERR_INVALID_ARGUMENT (they run on the CPU trainer).
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, or HYDRANT_ERR_INVALID_ARGUMENT (a device name
 * not understood, an explicit CUDA device that is not usable or a job the GPU trainer refuses,
 * the message naming why; samples already added or epochs run). On failure the trainer stays
 * where it was.
 */
hydrant_status hydrant_trainer_set_device(hydrant_trainer *trainer, const char *device);

/**
 * Where the trainer trains: `"cpu"` or `"cuda:N"`, owned by the trainer and valid until its
 * device is set again or it is freed; NULL for NULL.
 */
const char *hydrant_trainer_device(const hydrant_trainer *trainer);

/**
 * Why the trainer trains where hydrant_trainer_device() says, in words (such as `auto: no CUDA
 * driver (libcuda) found`), owned and valid as hydrant_trainer_device()'s result; NULL for
 * NULL.
 */
const char *hydrant_trainer_device_reason(const hydrant_trainer *trainer);

/**
 * Adds samples from model inputs: `model` computes the trunk tensors the heads read (once per
 * sample, a few hundred samples per call) and the trainer caches them with the labels.
 *
 * `inputs[0..n_inputs]` are matched to model inputs as in hydrant_model_run(); axis 0 of every
 * input is the sample axis. `labels` holds one entry per trainer head, in trainer head order
 * (`n_labels` must equal hydrant_trainer_head_count()): a tensor of labels for those samples
 * (axis 0 the samples: class indices of an integer type for cross-entropy, floats otherwise,
 * shaped like the head's output per sample without the class axis for cross-entropy), or NULL
 * when those samples have no label for that head. Everything is read only during the call.
 * Samples cannot be added once hydrant_trainer_fit() or hydrant_trainer_evaluate() has run.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_BAD_INPUT, HYDRANT_ERR_BAD_TENSOR
 * (labels of the wrong shape, type or count), HYDRANT_ERR_MISSING_FEATURE (the model lacks a
 * tensor a head reads), HYDRANT_ERR_INVALID_ARGUMENT or HYDRANT_ERR_BACKEND. On failure the
 * samples of the chunks already cached stay added.
 * Thread safety: the model may be run by other threads meanwhile.
 */
hydrant_status hydrant_trainer_add_samples(hydrant_trainer *trainer,
                                           const hydrant_model *model,
                                           const hydrant_tensor *const *inputs,
                                           size_t n_inputs,
                                           const hydrant_tensor *const *labels,
                                           size_t n_labels);

/**
 * Adds samples from trunk features (from hydrant_model_trunk(), or hydrant_features_new() with
 * tensors stored earlier): every tensor the heads read, axis 0 the samples. `labels` as in
 * hydrant_trainer_add_samples().
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_MISSING_FEATURE,
 * HYDRANT_ERR_BAD_TENSOR or HYDRANT_ERR_INVALID_ARGUMENT; on failure nothing is added.
 */
hydrant_status hydrant_trainer_add_features(hydrant_trainer *trainer,
                                            const hydrant_features *features,
                                            const hydrant_tensor *const *labels,
                                            size_t n_labels);

/**
 * Trains for `epochs` epochs (0: `params.epochs`), calling `callback` (unless NULL) with each
 * epoch's report and `user`; a non-zero return from it stops after that epoch, as does early
 * stopping. A later call continues where this one stopped (epochs, optimizer state and the
 * learning-rate schedule carry on). Writes the number of epochs run to `*epochs_run` unless it
 * is NULL (0 on failure).
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, or HYDRANT_ERR_INVALID_ARGUMENT (no samples,
 * a head without labelled samples, a loss that became infinite or NaN: lower the learning rate
 * or clip gradients). After a failure the heads hold the weights of the last finished step.
 */
hydrant_status hydrant_trainer_fit(hydrant_trainer *trainer,
                                   size_t epochs,
                                   hydrant_epoch_callback callback,
                                   void *user,
                                   size_t *epochs_run);

/**
 * Measures every head in inference mode on the validation samples (all samples without a
 * validation split) and writes one entry per head, in trainer head order, to
 * `metrics[0..*n_metrics]`. When `capacity` is below the head count, writes nothing, sets
 * `*n_metrics` to the head count and returns HYDRANT_ERR_CAPACITY.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, HYDRANT_ERR_CAPACITY or
 * HYDRANT_ERR_INVALID_ARGUMENT (a head ending in Softmax: evaluate its logits).
 */
hydrant_status hydrant_trainer_evaluate(hydrant_trainer *trainer,
                                        hydrant_task_metrics *metrics,
                                        size_t capacity,
                                        size_t *n_metrics);

/**
 * Writes the trainer's heads with their current weights to a safetensors head file at `path`
 * (replaced atomically), with their optimizer state when `with_optimizer` is non-zero. The file
 * loads with hydrant_model_swap_heads(), hydrant_model_load_parts(),
 * hydrant_trainer_new_from_file() and PyTorch's `safetensors.torch.load_file`.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_IO.
 */
hydrant_status hydrant_trainer_save_heads(hydrant_trainer *trainer,
                                          const char *path,
                                          int with_optimizer);

/**
 * Writes the trainer's whole state (heads, optimizer state, epoch, random stream, weighting and
 * early-stopping state, history) to `path` (replaced atomically), to continue later with
 * hydrant_trainer_resume(). The file is also a head file.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT or HYDRANT_ERR_IO.
 */
hydrant_status hydrant_trainer_save_checkpoint(hydrant_trainer *trainer,
                                               const char *path);

/**
 * Sets the trainer's heads, with their current weights, into `model`: each replaces the model's
 * head of the same name or is added, all at once, as hydrant_model_swap_heads() does from a
 * file (and with the same guarantees for threads running the model meanwhile). The trainer
 * keeps training its own copy.
 *
 * Returns HYDRANT_OK, HYDRANT_ERR_NULL_ARGUMENT, or what hydrant_model_swap_heads() returns for
 * a head that does not fit the model.
 */
hydrant_status hydrant_trainer_swap_into(hydrant_trainer *trainer,
                                         const hydrant_model *model);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* HYDRANT_H */
