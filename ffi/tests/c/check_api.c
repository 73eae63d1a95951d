/*
 * check_api FIXTURES_DIR: the C interface checked from C, against onnxruntime's outputs stored in
 * the fixtures. Prints one line per failed check and "N passed, N failed"; exits 1 on a failure.
 * Also run under valgrind (no errors, no leaks) by ffi/tests/c_api.rs.
 */
#include <hydrant.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
static char dir[512];

#define CHECK(cond, ...)                                                                         \
    do {                                                                                         \
        if (cond) {                                                                              \
            passed++;                                                                            \
        } else {                                                                                 \
            failed++;                                                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                          \
            printf(__VA_ARGS__);                                                                 \
            printf(" [last error: %s]\n", hydrant_last_error());                                 \
        }                                                                                        \
    } while (0)

static const char *fixture(const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static hydrant_tensor *npy(const char *name) {
    hydrant_tensor *t = NULL;
    hydrant_status s = hydrant_tensor_load_npy(fixture(name), &t);
    CHECK(s == HYDRANT_OK && t != NULL, "load %s", name);
    return t;
}

/* max |a - b| / max |b| over two f32 tensors of one shape; INFINITY on a mismatch. */
static double rel_err(const hydrant_tensor *a, const hydrant_tensor *b) {
    size_t n = hydrant_tensor_element_count(b);
    const float *x = hydrant_tensor_data_f32(a), *y = hydrant_tensor_data_f32(b);
    if (x == NULL || y == NULL || hydrant_tensor_element_count(a) != n ||
        hydrant_tensor_rank(a) != hydrant_tensor_rank(b) ||
        memcmp(hydrant_tensor_shape(a), hydrant_tensor_shape(b),
               hydrant_tensor_rank(b) * sizeof(int64_t)) != 0) {
        return INFINITY;
    }
    double scale = 1e-30, diff = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(y[i]));
        diff = fmax(diff, fabs((double)x[i] - y[i]));
        if (isnan(x[i])) {
            return INFINITY;
        }
    }
    return diff / scale;
}

static int contains(const char *haystack, const char *needle) {
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

static void check_version_and_errors(void) {
    CHECK(hydrant_abi_version() == HYDRANT_ABI_VERSION, "abi version");
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", HYDRANT_VERSION_MAJOR, HYDRANT_VERSION_MINOR,
             HYDRANT_VERSION_PATCH);
    CHECK(strcmp(hydrant_version(), expected) == 0, "version %s", hydrant_version());

    hydrant_model *m = (hydrant_model *)&passed; /* must be overwritten with NULL */
    CHECK(hydrant_model_load(fixture("no_such_model.onnx"), &m) == HYDRANT_ERR_IO, "missing file");
    CHECK(m == NULL, "out set to NULL on failure");
    CHECK(contains(hydrant_last_error(), "no_such_model.onnx"), "message names the file");
    CHECK(hydrant_model_load(NULL, &m) == HYDRANT_ERR_NULL_ARGUMENT, "NULL path");
    CHECK(contains(hydrant_last_error(), "path"), "message names the argument");
    CHECK(hydrant_model_load(fixture("hydranet.onnx"), NULL) == HYDRANT_ERR_NULL_ARGUMENT,
          "NULL out");
    const char garbage[] = "definitely not an onnx model";
    CHECK(hydrant_model_load_from_memory(garbage, sizeof garbage, hydrant_model_default_params(),
                                         &m) == HYDRANT_ERR_INVALID_MODEL,
          "garbage bytes");
    CHECK(hydrant_model_load(fixture("unknown_op.onnx"), &m) == HYDRANT_ERR_UNSUPPORTED_OP,
          "unknown op");
    CHECK(hydrant_model_load(fixture("hydranet.onnx"), &m) == HYDRANT_OK, "good load");
    CHECK(strcmp(hydrant_last_error(), "") == 0, "success clears the message");
    hydrant_model_free(m);

    hydrant_model_params p = hydrant_model_default_params();
    p.threads = 100000;
    CHECK(hydrant_model_load_with_params(fixture("hydranet.onnx"), p, &m) ==
              HYDRANT_ERR_INVALID_ARGUMENT,
          "too many threads");
    p = hydrant_model_default_params();
    p.device = 42;
    CHECK(hydrant_model_load_with_params(fixture("hydranet.onnx"), p, &m) ==
              HYDRANT_ERR_INVALID_ARGUMENT,
          "unknown device");
    const char *cuts[] = {"no_such_tensor"};
    p = hydrant_model_default_params();
    p.cut_points = cuts;
    p.n_cut_points = 1;
    CHECK(hydrant_model_load_with_params(fixture("hydranet.onnx"), p, &m) ==
              HYDRANT_ERR_UNKNOWN_TENSOR,
          "unknown cut point");

    /* NULL handles: no crash, a failure value. */
    hydrant_model_free(NULL);
    hydrant_tensor_free(NULL);
    hydrant_features_free(NULL);
    CHECK(hydrant_model_head_count(NULL) == 0, "head count of NULL");
    CHECK(hydrant_model_head_name(NULL, 0) == NULL, "head name of NULL");
    CHECK(hydrant_tensor_rank(NULL) == 0 && hydrant_tensor_shape(NULL) == NULL, "NULL tensor");
    CHECK(hydrant_tensor_dtype(NULL) == HYDRANT_DTYPE_UNDEFINED, "dtype of NULL");
    CHECK(hydrant_dtype_size(12345) == 0 && hydrant_dtype_name(12345) == NULL, "bad dtype");
}

static void check_tensors(void) {
    hydrant_tensor *t = NULL;
    const uint8_t pixels[6] = {0, 1, 2, 253, 254, 255};
    const int64_t shape[2] = {2, 3};
    CHECK(hydrant_tensor_new(HYDRANT_DTYPE_U8, pixels, shape, 2, &t) == HYDRANT_OK, "u8 tensor");
    CHECK(hydrant_tensor_dtype(t) == HYDRANT_DTYPE_U8, "u8 dtype");
    CHECK(hydrant_tensor_byte_size(t) == 6 && hydrant_tensor_element_count(t) == 6, "u8 size");
    CHECK(memcmp(hydrant_tensor_data(t), pixels, 6) == 0, "u8 data");
    CHECK(hydrant_tensor_data_f32(t) == NULL, "data_f32 of u8 is NULL");
    CHECK(hydrant_tensor_name(t) == NULL, "new tensors have no name");
    CHECK(hydrant_tensor_set_name(t, "pixels") == HYDRANT_OK &&
              strcmp(hydrant_tensor_name(t), "pixels") == 0,
          "set name");
    CHECK(hydrant_tensor_set_name(t, NULL) == HYDRANT_OK && hydrant_tensor_name(t) == NULL,
          "clear name");
    hydrant_tensor_free(t);

    const int64_t labels[3] = {-1, 7, 9000000000LL};
    const int64_t three[1] = {3};
    CHECK(hydrant_tensor_new(HYDRANT_DTYPE_I64, labels, three, 1, &t) == HYDRANT_OK, "i64");
    CHECK(memcmp(hydrant_tensor_data(t), labels, sizeof labels) == 0, "i64 data");
    CHECK(hydrant_tensor_save_npy(t, "check_api_labels.npy") == HYDRANT_OK, "save npy");
    hydrant_tensor *back = NULL;
    CHECK(hydrant_tensor_load_npy("check_api_labels.npy", &back) == HYDRANT_OK, "reload npy");
    CHECK(hydrant_tensor_dtype(back) == HYDRANT_DTYPE_I64 &&
              memcmp(hydrant_tensor_data(back), labels, sizeof labels) == 0,
          "npy round trip");
    remove("check_api_labels.npy");
    hydrant_tensor_free(back);
    hydrant_tensor_free(t);

    const uint16_t halves[2] = {0x3c00, 0xc000}; /* 1.0 and -2.0 */
    const int64_t two[1] = {2};
    CHECK(hydrant_tensor_new(HYDRANT_DTYPE_F16, halves, two, 1, &t) == HYDRANT_OK, "f16");
    CHECK(hydrant_dtype_size(hydrant_tensor_dtype(t)) == 2 &&
              memcmp(hydrant_tensor_data(t), halves, 4) == 0,
          "f16 data");
    hydrant_tensor_free(t);

    const float scalar = 2.5f;
    CHECK(hydrant_tensor_new_f32(&scalar, NULL, 0, &t) == HYDRANT_OK &&
              hydrant_tensor_rank(t) == 0 && *hydrant_tensor_data_f32(t) == 2.5f,
          "rank-0 tensor");
    hydrant_tensor_free(t);

    const uint8_t bools[2] = {1, 2};
    CHECK(hydrant_tensor_new(HYDRANT_DTYPE_BOOL, bools, two, 1, &t) == HYDRANT_ERR_BAD_TENSOR &&
              t == NULL,
          "bool byte 2 rejected");
    const int64_t negative[2] = {2, -3};
    CHECK(hydrant_tensor_new_f32(&scalar, negative, 2, &t) == HYDRANT_ERR_BAD_TENSOR,
          "negative dimension");
    CHECK(contains(hydrant_last_error(), "negative"), "message says negative");
    const int64_t huge[2] = {INT64_MAX, INT64_MAX};
    CHECK(hydrant_tensor_new_f32(&scalar, huge, 2, &t) == HYDRANT_ERR_BAD_TENSOR, "overflow");
    CHECK(hydrant_tensor_new_f32(NULL, two, 1, &t) == HYDRANT_ERR_NULL_ARGUMENT, "NULL data");
    CHECK(hydrant_tensor_new(99, pixels, two, 1, &t) == HYDRANT_ERR_INVALID_ARGUMENT, "dtype 99");
    const int64_t deep[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK(hydrant_tensor_new_f32(&scalar, deep, 9, &t) == HYDRANT_ERR_BAD_TENSOR, "rank 9");
    CHECK(hydrant_tensor_load_npy(fixture("hydranet.onnx"), &t) == HYDRANT_ERR_NPY, "not npy");
}

/* Runs `heads` and compares each output with its fixture `PREFIX_NAME.npy`. */
static void check_outputs(const hydrant_model *m, const hydrant_tensor *input, const char *prefix,
                          const char *const *heads, size_t n_heads, size_t expected) {
    hydrant_tensor *out[8] = {NULL};
    size_t n = 99;
    const hydrant_tensor *inputs[1] = {input};
    CHECK(hydrant_model_run(m, inputs, 1, heads, n_heads, out, 8, &n) == HYDRANT_OK, "run");
    CHECK(n == expected, "%zu outputs, expected %zu", n, expected);
    for (size_t i = 0; i < n; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s_%s.npy", prefix, hydrant_tensor_name(out[i]));
        hydrant_tensor *ref = npy(name);
        double err = rel_err(out[i], ref);
        CHECK(err <= 1e-4, "%s: relative error %g", name, err);
        hydrant_tensor_free(ref);
        hydrant_tensor_free(out[i]);
    }
}

static void check_hydranet(void) {
    hydrant_model_params p = hydrant_model_default_params();
    p.threads = 1;
    hydrant_model *m = NULL;
    CHECK(hydrant_model_load_with_params(fixture("hydranet.onnx"), p, &m) == HYDRANT_OK, "load");
    CHECK(hydrant_model_threads(m) == 1, "threads");
    CHECK(hydrant_model_head_count(m) == 3, "3 heads");
    const char *names[3] = {"cls", "box", "seg"};
    for (size_t i = 0; i < 3; i++) {
        CHECK(strcmp(hydrant_model_head_name(m, i), names[i]) == 0, "head %zu", i);
    }
    CHECK(hydrant_model_head_name(m, 3) == NULL && contains(hydrant_last_error(), "out of range"),
          "head index out of range");
    CHECK(hydrant_model_input_count(m) == 1 && strcmp(hydrant_model_input_name(m, 0), "image") == 0,
          "input name");
    const int64_t declared[4] = {-1, 3, 32, 32};
    CHECK(hydrant_model_input_rank(m, 0) == 4 &&
              memcmp(hydrant_model_input_shape(m, 0), declared, sizeof declared) == 0,
          "input shape");
    CHECK(hydrant_model_input_dtype(m, 0) == HYDRANT_DTYPE_F32, "input dtype");

    hydrant_tensor *b1 = npy("hydranet_input_b1.npy");
    hydrant_tensor *b3 = npy("hydranet_input_b3.npy");
    check_outputs(m, b1, "hydranet_b1", NULL, 0, 3);
    check_outputs(m, b3, "hydranet_b3", NULL, 0, 3);
    const char *seg_cls[3] = {"seg", "cls", "seg"};
    check_outputs(m, b1, "hydranet_b1", seg_cls, 3, 2);

    /* The capacity protocol. */
    const hydrant_tensor *inputs[1] = {b1};
    hydrant_tensor *out[3] = {NULL, NULL, NULL};
    size_t n = 0, count = 0;
    CHECK(hydrant_model_output_count(m, NULL, 0, &count) == HYDRANT_OK && count == 3, "count");
    CHECK(hydrant_model_run(m, inputs, 1, NULL, 0, out, 2, &n) == HYDRANT_ERR_CAPACITY && n == 3,
          "capacity too small gives the capacity needed");
    CHECK(out[0] == NULL && out[1] == NULL, "nothing written");
    CHECK(hydrant_model_run(m, inputs, 1, NULL, 0, NULL, 0, &n) == HYDRANT_ERR_CAPACITY && n == 3,
          "capacity query");
    CHECK(hydrant_model_run(m, inputs, 1, NULL, 0, out, 3, NULL) == HYDRANT_ERR_NULL_ARGUMENT,
          "NULL n_outputs");

    /* Bad requests. */
    const char *nope[1] = {"nope"};
    CHECK(hydrant_model_run(m, inputs, 1, nope, 1, out, 3, &n) == HYDRANT_ERR_UNKNOWN_HEAD && n == 0,
          "unknown head");
    CHECK(contains(hydrant_last_error(), "nope") && contains(hydrant_last_error(), "seg"),
          "message names the head and those available");
    CHECK(hydrant_model_run(NULL, inputs, 1, NULL, 0, out, 3, &n) == HYDRANT_ERR_NULL_ARGUMENT,
          "NULL model");
    CHECK(hydrant_model_run(m, NULL, 1, NULL, 0, out, 3, &n) == HYDRANT_ERR_NULL_ARGUMENT,
          "NULL inputs");
    CHECK(hydrant_model_run(m, NULL, 0, NULL, 0, out, 3, &n) == HYDRANT_ERR_BAD_INPUT &&
              contains(hydrant_last_error(), "missing"),
          "no inputs");
    const float zeros[3 * 16 * 16] = {0};
    const int64_t small[4] = {1, 3, 16, 16};
    hydrant_tensor *wrong = NULL;
    CHECK(hydrant_tensor_new_f32(zeros, small, 4, &wrong) == HYDRANT_OK, "small image");
    const hydrant_tensor *bad[1] = {wrong};
    CHECK(hydrant_model_run(m, bad, 1, NULL, 0, out, 3, &n) == HYDRANT_ERR_BAD_INPUT,
          "wrong shape");
    CHECK(contains(hydrant_last_error(), "[1, 3, 16, 16]"), "message gives the shape");
    hydrant_tensor_free(wrong);
    const uint8_t pixels[3 * 32 * 32] = {0};
    const int64_t full[4] = {1, 3, 32, 32};
    CHECK(hydrant_tensor_new(HYDRANT_DTYPE_U8, pixels, full, 4, &wrong) == HYDRANT_OK, "u8");
    bad[0] = wrong;
    CHECK(hydrant_model_run(m, bad, 1, NULL, 0, out, 3, &n) == HYDRANT_ERR_BAD_INPUT &&
              contains(hydrant_last_error(), "u8"),
          "wrong dtype");
    CHECK(hydrant_tensor_set_name(wrong, "pixels") == HYDRANT_OK, "rename");
    CHECK(hydrant_model_run(m, bad, 1, NULL, 0, out, 3, &n) == HYDRANT_ERR_BAD_INPUT &&
              contains(hydrant_last_error(), "pixels"),
          "unknown input name");
    hydrant_tensor_free(wrong);

    /* Trunk once, heads later, and features rebuilt from stored tensors. */
    hydrant_features *f = NULL;
    CHECK(hydrant_model_trunk(m, inputs, 1, &f) == HYDRANT_OK, "trunk");
    size_t nf = hydrant_features_count(f);
    CHECK(nf >= 1, "features held");
    CHECK(hydrant_features_name(f, nf) == NULL, "feature index out of range");
    hydrant_tensor *stored[8] = {NULL};
    for (size_t i = 0; i < nf && i < 8; i++) {
        CHECK(hydrant_features_get(f, hydrant_features_name(f, i), &stored[i]) == HYDRANT_OK,
              "get feature %zu", i);
    }
    hydrant_tensor *missing = NULL;
    CHECK(hydrant_features_get(f, "nope", &missing) == HYDRANT_ERR_MISSING_FEATURE, "missing");
    const char *all_heads[3] = {"cls", "box", "seg"};
    for (int pass = 0; pass < 2; pass++) {
        hydrant_features *use = f;
        if (pass == 1) {
            CHECK(hydrant_features_new((const hydrant_tensor *const *)stored, nf, &use) ==
                      HYDRANT_OK,
                  "features from tensors");
        }
        CHECK(hydrant_model_heads(m, use, all_heads, 3, out, 3, &n) == HYDRANT_OK && n == 3,
              "heads on features");
        for (size_t i = 0; i < n; i++) {
            char name[64];
            snprintf(name, sizeof name, "hydranet_b1_%s.npy", all_heads[i]);
            hydrant_tensor *ref = npy(name);
            CHECK(strcmp(hydrant_tensor_name(out[i]), all_heads[i]) == 0, "output order");
            CHECK(rel_err(out[i], ref) <= 1e-4, "%s from features", name);
            hydrant_tensor_free(ref);
            hydrant_tensor_free(out[i]);
        }
        if (pass == 1) {
            hydrant_features_free(use);
        }
    }
    hydrant_features *cls_only = NULL;
    const char *cls[1] = {"cls"};
    CHECK(hydrant_model_trunk_for(m, inputs, 1, cls, 1, &cls_only) == HYDRANT_OK, "trunk_for");
    CHECK(hydrant_model_heads(m, cls_only, cls, 1, out, 3, &n) == HYDRANT_OK && n == 1, "cls");
    hydrant_tensor_free(out[0]);
    hydrant_features_free(cls_only);
    const hydrant_tensor *unnamed[1] = {b1};
    CHECK(hydrant_features_new(unnamed, 1, &cls_only) == HYDRANT_ERR_INVALID_ARGUMENT &&
              cls_only == NULL,
          "features need named tensors");
    for (size_t i = 0; i < nf && i < 8; i++) {
        hydrant_tensor_free(stored[i]);
    }
    hydrant_features_free(f);
    hydrant_tensor_free(b1);
    hydrant_tensor_free(b3);
    hydrant_model_free(m);
}

static void check_memory_load(void) {
    FILE *file = fopen(fixture("digits.onnx"), "rb");
    CHECK(file != NULL, "open digits.onnx");
    if (file == NULL) {
        return;
    }
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *bytes = malloc((size_t)size);
    CHECK(bytes != NULL && fread(bytes, 1, (size_t)size, file) == (size_t)size, "read");
    fclose(file);
    hydrant_model *m = NULL;
    hydrant_model_params p = hydrant_model_default_params();
    p.threads = 1;
    CHECK(hydrant_model_load_from_memory(bytes, (size_t)size, p, &m) == HYDRANT_OK, "from memory");
    free(bytes); /* the model keeps nothing of the buffer */
    hydrant_tensor *input = npy("digits_ref_input.npy");
    check_outputs(m, input, "digits_ref", NULL, 0, 3);
    hydrant_tensor_free(input);
    hydrant_model_free(m);
}

/* An IEEE half (as its bits) as a double. */
static double half_to_double(uint16_t h) {
    int exponent = (h >> 10) & 0x1f;
    double mantissa = h & 0x3ff;
    double value = exponent == 0 ? ldexp(mantissa, -24) : ldexp(mantissa + 1024, exponent - 25);
    return (h & 0x8000) ? -value : value;
}

/* A u8 image in, f32 logits, i64 labels and f16 logits out (dtypes.onnx). */
static void check_dtypes(void) {
    hydrant_model *m = NULL;
    CHECK(hydrant_model_load(fixture("dtypes.onnx"), &m) == HYDRANT_OK, "load dtypes.onnx");
    CHECK(hydrant_model_input_dtype(m, 0) == HYDRANT_DTYPE_U8, "u8 input");
    hydrant_tensor *image = npy("dtypes_input_u8.npy");
    CHECK(hydrant_tensor_dtype(image) == HYDRANT_DTYPE_U8, "u8 .npy");
    const hydrant_tensor *inputs[1] = {image};
    hydrant_tensor *out[3] = {NULL, NULL, NULL};
    size_t n = 0;
    CHECK(hydrant_model_run(m, inputs, 1, NULL, 0, out, 3, &n) == HYDRANT_OK && n == 3, "run");
    hydrant_tensor *logits = npy("dtypes_ref_logits.npy");
    hydrant_tensor *labels = npy("dtypes_ref_label.npy");
    hydrant_tensor *halves = npy("dtypes_ref_logits_f16.npy");
    for (size_t i = 0; i < n; i++) {
        const char *name = hydrant_tensor_name(out[i]);
        if (strcmp(name, "logits") == 0) {
            CHECK(rel_err(out[i], logits) <= 1e-5, "f32 logits");
        } else if (strcmp(name, "label") == 0) {
            CHECK(hydrant_tensor_dtype(out[i]) == HYDRANT_DTYPE_I64 &&
                      hydrant_tensor_byte_size(out[i]) == hydrant_tensor_byte_size(labels) &&
                      memcmp(hydrant_tensor_data(out[i]), hydrant_tensor_data(labels),
                             hydrant_tensor_byte_size(labels)) == 0,
                  "i64 labels equal onnxruntime's");
        } else if (strcmp(name, "logits_f16") == 0) {
            const uint16_t *got = hydrant_tensor_data(out[i]), *want = hydrant_tensor_data(halves);
            size_t count = hydrant_tensor_element_count(halves);
            int ok = hydrant_tensor_dtype(out[i]) == HYDRANT_DTYPE_F16 &&
                     hydrant_tensor_element_count(out[i]) == count;
            for (size_t k = 0; ok && k < count; k++) {
                double a = half_to_double(got[k]), b = half_to_double(want[k]);
                ok = fabs(a - b) <= 1e-3 * fmax(1.0, fabs(b));
            }
            CHECK(ok, "f16 logits match onnxruntime's");
        } else {
            CHECK(0, "unexpected output %s", name);
        }
        hydrant_tensor_free(out[i]);
    }
    hydrant_tensor_free(logits);
    hydrant_tensor_free(labels);
    hydrant_tensor_free(halves);
    hydrant_tensor_free(image);
    hydrant_model_free(m);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    check_version_and_errors();
    check_tensors();
    check_hydranet();
    check_memory_load();
    check_dtypes();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
