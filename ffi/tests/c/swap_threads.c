/*
 * swap_threads FIXTURES_DIR WORK_DIR [READERS] [ROUNDS]: READERS threads (default 8) run one
 * model while another thread trains its `parity` head and swaps heads into it, ROUNDS times
 * (default 17) six swaps: three hydrant_trainer_swap_into() of a head being trained and three
 * hydrant_model_swap_heads() from files saved beforehand. Every output must equal, byte for
 * byte, the output of one of the head versions (computed once beforehand, single-threaded); the
 * `digit` head must never change. Prints "... N mismatches"; exits 1 on any mismatch or error.
 */
#include <hydrant.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_READERS = 64, VERSIONS = 4, SAMPLES = 256, BATCH = 8 };

static hydrant_model *model;
static hydrant_features *features;
static hydrant_tensor *input, *labels;
static hydrant_tensor *expected[VERSIONS]; /* parity output of each head version */
static hydrant_tensor *expected_digit;
static char files[VERSIONS][1024];
static hydrant_train_params params;
static const char *PARITY = "parity";
static const char *TASK = "ce";

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int swapping = 1, errors;
static long seen[VERSIONS], mismatches, runs, swaps;
static char first_error[512];

static void error(const char *what) {
    pthread_mutex_lock(&lock);
    if (errors++ == 0) {
        snprintf(first_error, sizeof first_error, "%s: %s", what, hydrant_last_error());
    }
    pthread_mutex_unlock(&lock);
}

static int same(const hydrant_tensor *a, const hydrant_tensor *b) {
    return hydrant_tensor_byte_size(a) == hydrant_tensor_byte_size(b) &&
           memcmp(hydrant_tensor_data(a), hydrant_tensor_data(b), hydrant_tensor_byte_size(b)) == 0;
}

static hydrant_tensor *run_parity(void) {
    const hydrant_tensor *inputs[1] = {input};
    hydrant_tensor *out = NULL;
    size_t n = 0;
    if (hydrant_model_run(model, inputs, 1, &PARITY, 1, &out, 1, &n) != HYDRANT_OK) {
        error("run");
    }
    return out;
}

/* A trainer for the parity head as the model file has it (version 0), with the samples of
   `features`. */
static hydrant_trainer *new_trainer(void) {
    hydrant_trainer *t = NULL;
    const hydrant_tensor *l[1] = {labels};
    if (hydrant_trainer_new_from_file(files[0], &TASK, &params, &t) != HYDRANT_OK ||
        hydrant_trainer_add_features(t, features, l, 1) != HYDRANT_OK) {
        error("trainer");
    }
    return t;
}

static void *reader(void *arg) {
    (void)arg;
    const char *both[2] = {"digit", "parity"};
    const hydrant_tensor *inputs[1] = {input};
    for (;;) {
        pthread_mutex_lock(&lock);
        int go_on = swapping && errors == 0;
        pthread_mutex_unlock(&lock);
        if (!go_on) {
            return NULL;
        }
        hydrant_tensor *out[2] = {NULL, NULL};
        size_t n = 0;
        if (hydrant_model_run(model, inputs, 1, both, 2, out, 2, &n) != HYDRANT_OK || n != 2) {
            error("concurrent run");
            return NULL;
        }
        int version = -1;
        for (int v = 0; v < VERSIONS && version < 0; v++) {
            version = same(out[1], expected[v]) ? v : -1;
        }
        int digit_ok = same(out[0], expected_digit);
        pthread_mutex_lock(&lock);
        runs++;
        if (version >= 0 && digit_ok) {
            seen[version]++;
        } else {
            mismatches++;
        }
        pthread_mutex_unlock(&lock);
        hydrant_tensor_free(out[0]);
        hydrant_tensor_free(out[1]);
    }
}

/* Trains a fresh trainer as the versions were trained, swapping each epoch's head into the model,
   and swaps in the saved versions from their files in between. */
static int failed(void) {
    pthread_mutex_lock(&lock);
    int e = errors;
    pthread_mutex_unlock(&lock);
    return e > 0;
}

static void *swapper(void *arg) {
    int rounds = *(int *)arg;
    for (int r = 0; r < rounds && !failed(); r++) {
        hydrant_trainer *t = new_trainer();
        for (int v = 1; v < VERSIONS; v++) {
            if (hydrant_trainer_fit(t, 1, NULL, NULL, NULL) != HYDRANT_OK ||
                hydrant_trainer_swap_into(t, model) != HYDRANT_OK) {
                error("train and swap");
            }
            if (hydrant_model_swap_heads(model, files[(r + v) % VERSIONS]) != HYDRANT_OK) {
                error("swap from file");
            }
            pthread_mutex_lock(&lock);
            swaps += 2;
            pthread_mutex_unlock(&lock);
        }
        hydrant_trainer_free(t);
    }
    pthread_mutex_lock(&lock);
    swapping = 0;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static hydrant_tensor *npy(const char *dir, const char *name) {
    char path[1024];
    hydrant_tensor *t = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (hydrant_tensor_load_npy(path, &t) != HYDRANT_OK) {
        fprintf(stderr, "swap_threads: %s\n", hydrant_last_error());
        exit(1);
    }
    return t;
}

/* The first `rows` rows of `t`. */
static hydrant_tensor *head_rows(const hydrant_tensor *t, int64_t rows) {
    int64_t shape[8];
    size_t rank = hydrant_tensor_rank(t);
    memcpy(shape, hydrant_tensor_shape(t), rank * sizeof shape[0]);
    shape[0] = rows;
    hydrant_tensor *out = NULL;
    hydrant_tensor_new(hydrant_tensor_dtype(t), hydrant_tensor_data(t), shape, rank, &out);
    return out;
}

/* Runs `digit` and `parity` single-threaded; returns 0 on failure. */
static int prepare(const char *fixtures, const char *work) {
    char path[1024];
    snprintf(path, sizeof path, "%s/digits.onnx", fixtures);
    hydrant_model_params mp = hydrant_model_default_params();
    mp.threads = 1;
    if (hydrant_model_load_with_params(path, mp, &model) != HYDRANT_OK) {
        return 0;
    }
    hydrant_tensor *images = npy(fixtures, "digits_images.npy");
    hydrant_tensor *digits = npy(fixtures, "digits_labels.npy");
    hydrant_tensor *train = head_rows(images, SAMPLES);
    input = head_rows(images, BATCH);
    /* Labels of a new rule, so that training changes the head: is the digit prime? */
    int64_t prime[SAMPLES], shape[1] = {SAMPLES};
    const int64_t *d = hydrant_tensor_data(digits);
    for (int i = 0; i < SAMPLES; i++) {
        prime[i] = d[i] == 2 || d[i] == 3 || d[i] == 5 || d[i] == 7;
    }
    hydrant_tensor_new(HYDRANT_DTYPE_I64, prime, shape, 1, &labels);
    const hydrant_tensor *inputs[1] = {train};
    hydrant_status s = hydrant_model_trunk_for(model, inputs, 1, &PARITY, 1, &features);
    hydrant_tensor_free(train);
    hydrant_tensor_free(images);
    hydrant_tensor_free(digits);
    if (s != HYDRANT_OK || labels == NULL || input == NULL) {
        return 0;
    }
    params = hydrant_train_params_default();
    params.lr = 0.05f;
    params.threads = 1;

    /* Version 0: the model's head as a head file; then one more epoch of training each. */
    for (int v = 0; v < VERSIONS; v++) {
        snprintf(files[v], sizeof files[v], "%s/parity_v%d.safetensors", work, v);
    }
    if (hydrant_model_save_heads(model, &PARITY, 1, files[0]) != HYDRANT_OK) {
        return 0;
    }
    hydrant_trainer *t = new_trainer();
    for (int v = 1; v < VERSIONS; v++) {
        if (hydrant_trainer_fit(t, 1, NULL, NULL, NULL) != HYDRANT_OK ||
            hydrant_trainer_save_heads(t, files[v], 0) != HYDRANT_OK) {
            hydrant_trainer_free(t);
            return 0;
        }
    }
    hydrant_trainer_free(t);
    for (int v = 0; v < VERSIONS; v++) {
        if (hydrant_model_swap_heads(model, files[v]) != HYDRANT_OK) {
            return 0;
        }
        expected[v] = run_parity();
        for (int w = 0; expected[v] != NULL && w < v; w++) {
            if (same(expected[v], expected[w])) {
                fprintf(stderr, "swap_threads: versions %d and %d give the same output\n", w, v);
                return 0;
            }
        }
    }
    const hydrant_tensor *in[1] = {input};
    const char *digit = "digit";
    size_t n = 0;
    return hydrant_model_run(model, in, 1, &digit, 1, &expected_digit, 1, &n) == HYDRANT_OK &&
           expected[VERSIONS - 1] != NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FIXTURES_DIR WORK_DIR [READERS] [ROUNDS]\n", argv[0]);
        return 2;
    }
    int readers = argc > 3 ? atoi(argv[3]) : 8;
    int rounds = argc > 4 ? atoi(argv[4]) : 17;
    if (readers < 1 || readers > MAX_READERS || rounds < 1) {
        fprintf(stderr, "swap_threads: bad READERS or ROUNDS\n");
        return 2;
    }
    int ok = prepare(argv[1], argv[2]);
    if (!ok) {
        fprintf(stderr, "swap_threads: preparing: %s\n", hydrant_last_error());
    }
    pthread_t ids[MAX_READERS + 1];
    for (int t = 0; ok && t < readers; t++) {
        pthread_create(&ids[t], NULL, reader, NULL);
    }
    if (ok) {
        pthread_create(&ids[readers], NULL, swapper, &rounds);
        for (int t = 0; t <= readers; t++) {
            pthread_join(ids[t], NULL);
        }
        printf("%d readers, %ld swaps, %ld runs: versions seen %ld %ld %ld %ld, %ld mismatches\n",
               readers, swaps, runs, seen[0], seen[1], seen[2], seen[3], mismatches);
        if (errors > 0) {
            printf("FAIL: %d errors, first: %s\n", errors, first_error);
        }
    }
    for (int v = 0; v < VERSIONS; v++) {
        hydrant_tensor_free(expected[v]);
    }
    hydrant_tensor_free(expected_digit);
    hydrant_tensor_free(input);
    hydrant_tensor_free(labels);
    hydrant_features_free(features);
    hydrant_model_free(model);
    return ok && errors == 0 && mismatches == 0 && runs > 0 ? 0 : 1;
}
