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
 * first output). Owned by the model, valid until it is freed. NULL when `model` is NULL or
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

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* HYDRANT_H */
