/*
 * classify: load a model, run one head on an image, print the top class of each batch row.
 *
 *   classify MODEL IMAGE [HEAD]
 *
 * IMAGE is a .npy file holding the model input (any batch size), or a raw file holding one
 * input of the model's first input type and shape in C order (symbolic dimensions taken as 1).
 * HEAD defaults to the model's first head. For each row of the head's first output prints
 *
 *   HEAD row R: class C (score S)
 *
 * Exit status: 0 on success, 1 on a usage or hydrant error (the message goes to stderr).
 */
#include <hydrant.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints the failed call and hydrant's message, returns 1. */
static int fail(const char *what) {
    fprintf(stderr, "classify: %s: %s\n", what, hydrant_last_error());
    return 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Reads a raw input file shaped like the model's first input (batch 1). */
static hydrant_status read_raw(const hydrant_model *model, const char *path,
                               hydrant_tensor **out) {
    size_t rank = hydrant_model_input_rank(model, 0);
    const int64_t *declared = hydrant_model_input_shape(model, 0);
    hydrant_dtype dtype = hydrant_model_input_dtype(model, 0);
    int64_t shape[8];
    size_t bytes = hydrant_dtype_size(dtype);
    if (declared == NULL || rank > 8) {
        return HYDRANT_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < rank; i++) {
        shape[i] = declared[i] < 0 ? 1 : declared[i];
        bytes *= (size_t)shape[i];
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "classify: cannot open %s\n", path);
        return HYDRANT_ERR_IO;
    }
    void *data = malloc(bytes > 0 ? bytes : 1);
    size_t got = data != NULL ? fread(data, 1, bytes, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    hydrant_status status = HYDRANT_ERR_IO;
    if (got == bytes && !extra) {
        status = hydrant_tensor_new(dtype, data, shape, rank, out);
    } else {
        fprintf(stderr, "classify: %s: expected exactly %zu bytes of %s\n", path, bytes,
                hydrant_dtype_name(dtype));
    }
    free(data);
    return status;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL IMAGE [HEAD]\n", argv[0]);
        return 1;
    }
    hydrant_model_params params = hydrant_model_default_params();
    const char *threads = getenv("HYDRANT_THREADS");
    if (threads != NULL) {
        params.threads = (uint32_t)strtoul(threads, NULL, 10);
    }
    hydrant_model *model = NULL;
    if (hydrant_model_load_with_params(argv[1], params, &model) != HYDRANT_OK) {
        return fail("load");
    }
    int rc = 1;
    hydrant_tensor *image = NULL;
    hydrant_tensor *outputs[16] = {NULL};
    size_t n_outputs = 0;
    const char *head = argc == 4 ? argv[3] : hydrant_model_head_name(model, 0);

    hydrant_status status = ends_with(argv[2], ".npy") ? hydrant_tensor_load_npy(argv[2], &image)
                                                       : read_raw(model, argv[2], &image);
    if (status != HYDRANT_OK) {
        fail("input");
        goto done;
    }
    const hydrant_tensor *inputs[1] = {image};
    if (hydrant_model_run(model, inputs, 1, &head, 1, outputs, 16, &n_outputs) != HYDRANT_OK) {
        fail("run");
        goto done;
    }
    const hydrant_tensor *scores = outputs[0];
    const float *data = hydrant_tensor_data_f32(scores);
    size_t rank = hydrant_tensor_rank(scores);
    if (data == NULL || rank != 2) {
        fprintf(stderr, "classify: head %s: expected f32 scores [N, classes]\n", head);
        goto done;
    }
    const int64_t *shape = hydrant_tensor_shape(scores);
    for (int64_t row = 0; row < shape[0]; row++) {
        const float *s = data + row * shape[1];
        int64_t best = 0;
        for (int64_t c = 1; c < shape[1]; c++) {
            if (s[c] > s[best]) {
                best = c;
            }
        }
        printf("%s row %lld: class %lld (score %.6f)\n", head, (long long)row, (long long)best,
               (double)s[best]);
    }
    rc = 0;

done:
    for (size_t i = 0; i < n_outputs; i++) {
        hydrant_tensor_free(outputs[i]);
    }
    hydrant_tensor_free(image);
    hydrant_model_free(model);
    return rc;
}
