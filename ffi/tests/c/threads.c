/*
 * threads FIXTURES_DIR [THREADS] [RUNS] [MODEL_THREADS]: one model (loaded with MODEL_THREADS
 * intra-op threads, default 1), run by THREADS threads at once (default 8), RUNS calls each
 * (default 25), alternating batch 1 and batch 3 and the set of heads; every output is compared
 * with onnxruntime's. Prints "N passed, N failed"; exits 1 on a failure.
 */
#include <hydrant.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_THREADS = 64, HEADS = 3 };
static const char *head_names[HEADS] = {"cls", "box", "seg"};

static hydrant_model *model;
static hydrant_tensor *input[2];           /* batch 1 and batch 3 */
static hydrant_tensor *expected[2][HEADS]; /* onnxruntime outputs, by batch then head */
static int runs = 25;

struct result {
    int passed, failed;
    char first_error[512];
};

static int same(const hydrant_tensor *a, const hydrant_tensor *b) {
    size_t n = hydrant_tensor_element_count(b);
    const float *x = hydrant_tensor_data_f32(a), *y = hydrant_tensor_data_f32(b);
    if (x == NULL || y == NULL || hydrant_tensor_element_count(a) != n) {
        return 0;
    }
    double scale = 1e-30, diff = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(y[i]));
        diff = fmax(diff, fabs((double)x[i] - y[i]));
        if (isnan(x[i])) {
            return 0;
        }
    }
    return diff / scale <= 1e-4;
}

static void *worker(void *arg) {
    struct result *r = arg;
    for (int k = 0; k < runs; k++) {
        int batch = k % 2;
        /* Alternate all heads, one head, and two heads in reverse order. */
        const char *one[1] = {head_names[k % HEADS]};
        const char *two[2] = {"seg", "cls"};
        const char *const *heads = (k % 3 == 0) ? NULL : (k % 3 == 1) ? one : two;
        size_t n_heads = (k % 3 == 0) ? 0 : (k % 3 == 1) ? 1 : 2;
        hydrant_tensor *out[HEADS] = {NULL};
        size_t n = 0;
        const hydrant_tensor *inputs[1] = {input[batch]};
        hydrant_status s = hydrant_model_run(model, inputs, 1, heads, n_heads, out, HEADS, &n);
        int ok = s == HYDRANT_OK && n == (n_heads == 0 ? HEADS : n_heads);
        for (size_t i = 0; ok && i < n; i++) {
            const char *name = hydrant_tensor_name(out[i]);
            int h = 0;
            while (h < HEADS && strcmp(head_names[h], name) != 0) {
                h++;
            }
            const char *want = n_heads == 0 ? head_names[i] : heads[i];
            ok = h < HEADS && strcmp(name, want) == 0 && same(out[i], expected[batch][h]);
        }
        for (size_t i = 0; i < n; i++) {
            hydrant_tensor_free(out[i]);
        }
        if (ok) {
            r->passed++;
        } else {
            if (r->failed++ == 0) {
                snprintf(r->first_error, sizeof r->first_error, "run %d (status %d): %s", k,
                         (int)s, hydrant_last_error());
            }
        }
    }
    return NULL;
}

static hydrant_tensor *npy(const char *dir, const char *name) {
    char path[1024];
    hydrant_tensor *t = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (hydrant_tensor_load_npy(path, &t) != HYDRANT_OK) {
        fprintf(stderr, "threads: %s\n", hydrant_last_error());
        exit(1);
    }
    return t;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR [THREADS] [RUNS] [MODEL_THREADS]\n", argv[0]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    runs = argc > 3 ? atoi(argv[3]) : runs;
    if (threads < 1 || threads > MAX_THREADS || runs < 1) {
        fprintf(stderr, "threads: bad THREADS or RUNS\n");
        return 2;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/hydranet.onnx", argv[1]);
    hydrant_model_params p = hydrant_model_default_params();
    p.threads = argc > 4 ? (uint32_t)atoi(argv[4]) : 1;
    if (hydrant_model_load_with_params(path, p, &model) != HYDRANT_OK) {
        fprintf(stderr, "threads: %s\n", hydrant_last_error());
        return 1;
    }
    const char *batches[2] = {"b1", "b3"};
    for (int b = 0; b < 2; b++) {
        char name[64];
        snprintf(name, sizeof name, "hydranet_input_%s.npy", batches[b]);
        input[b] = npy(argv[1], name);
        for (int h = 0; h < HEADS; h++) {
            snprintf(name, sizeof name, "hydranet_%s_%s.npy", batches[b], head_names[h]);
            expected[b][h] = npy(argv[1], name);
        }
    }

    pthread_t ids[MAX_THREADS];
    struct result results[MAX_THREADS];
    memset(results, 0, sizeof results);
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, worker, &results[t]) != 0) {
            fprintf(stderr, "threads: pthread_create failed\n");
            return 1;
        }
    }
    int passed = 0, failed = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        passed += results[t].passed;
        failed += results[t].failed;
        if (results[t].failed > 0) {
            printf("FAIL thread %d: %s\n", t, results[t].first_error);
        }
    }
    for (int b = 0; b < 2; b++) {
        hydrant_tensor_free(input[b]);
        for (int h = 0; h < HEADS; h++) {
            hydrant_tensor_free(expected[b][h]);
        }
    }
    hydrant_model_free(model);
    printf("%d threads x %d runs: %d passed, %d failed\n", threads, runs, passed, failed);
    return failed == 0 && passed == threads * runs ? 0 : 1;
}
