/*
 * finetune MODEL.onnx IMAGES.npy LABELS.npy OUT.safetensors: fine-tunes a head of a multi-task
 * model for a new rule and swaps it in.
 *
 * With the digits fixtures (tests/fixtures/digits*.npy, digits.onnx): the `parity` head (is the
 * digit odd?) is retrained to tell whether the digit is prime, on the first 1297 images; the
 * accuracy on the last 500 is printed before and after. The trained head is swapped into the
 * running model, saved to OUT.safetensors, and loaded again beside the ONNX file.
 *
 *     cc -std=c11 finetune.c $(pkg-config --cflags --libs hydrant) -o finetune
 *     ./finetune digits.onnx digits_images.npy digits_labels.npy prime.safetensors
 */
#include <hydrant.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TRAIN = 1297 };
static const char *HEAD = "parity";

static int fail(const char *what) {
    fprintf(stderr, "finetune: %s: %s\n", what, hydrant_last_error());
    return 1;
}

static int is_prime(int64_t digit) { return digit == 2 || digit == 3 || digit == 5 || digit == 7; }

/* Rows [from, to) of a tensor whose axis 0 is the sample axis, as a new tensor. */
static hydrant_tensor *rows(const hydrant_tensor *t, int64_t from, int64_t to) {
    size_t rank = hydrant_tensor_rank(t);
    int64_t shape[8];
    memcpy(shape, hydrant_tensor_shape(t), rank * sizeof shape[0]);
    size_t row_bytes = hydrant_tensor_byte_size(t) / (size_t)shape[0];
    shape[0] = to - from;
    hydrant_tensor *out = NULL;
    const char *data = hydrant_tensor_data(t);
    hydrant_tensor_new(hydrant_tensor_dtype(t), data + (size_t)from * row_bytes, shape, rank, &out);
    return out;
}

/* Fraction of `images` for which `model`'s head HEAD picks the class of is_prime(label). */
static double accuracy(const hydrant_model *model, const hydrant_tensor *images,
                       const int64_t *labels) {
    const hydrant_tensor *inputs[1] = {images};
    hydrant_tensor *out = NULL;
    size_t n_out = 0;
    if (hydrant_model_run(model, inputs, 1, &HEAD, 1, &out, 1, &n_out) != HYDRANT_OK) {
        fail("run");
        return -1;
    }
    const float *scores = hydrant_tensor_data_f32(out);
    int64_t n = hydrant_tensor_shape(out)[0];
    int correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int predicted = scores[2 * i + 1] > scores[2 * i];
        correct += predicted == is_prime(labels[i]);
    }
    hydrant_tensor_free(out);
    return (double)correct / (double)n;
}

/* Prints each epoch's training loss and accuracy; returning 0 lets training go on. */
static int on_epoch(const hydrant_epoch_report *report, void *user) {
    (void)user;
    printf("epoch %zu: lr %.4f, %s loss %.4f, accuracy %.3f\n", report->epoch, report->lr,
           report->train[0].head, report->train[0].loss, report->train[0].accuracy);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.onnx IMAGES.npy LABELS.npy OUT.safetensors\n", argv[0]);
        return 2;
    }
    int status = 1;
    hydrant_model *model = NULL, *reloaded = NULL;
    hydrant_tensor *images = NULL, *labels = NULL, *train = NULL, *test = NULL, *prime = NULL;
    hydrant_trainer *trainer = NULL;
    hydrant_model_params mp = hydrant_model_default_params();
    mp.threads = 1;
    if (hydrant_model_load_with_params(argv[1], mp, &model) != HYDRANT_OK) {
        status = fail(argv[1]);
        goto done;
    }
    if (hydrant_tensor_load_npy(argv[2], &images) != HYDRANT_OK ||
        hydrant_tensor_load_npy(argv[3], &labels) != HYDRANT_OK) {
        status = fail("load data");
        goto done;
    }
    int64_t n = hydrant_tensor_shape(images)[0];
    if (hydrant_tensor_dtype(labels) != HYDRANT_DTYPE_I64 || n <= TRAIN ||
        hydrant_tensor_shape(labels)[0] != n) {
        fprintf(stderr, "finetune: expected more than %d images and as many i64 labels\n", TRAIN);
        goto done;
    }
    const int64_t *digits = hydrant_tensor_data(labels);

    /* The new labels of the training images: 1 for a prime digit. */
    int64_t *targets = malloc(TRAIN * sizeof *targets);
    for (int i = 0; i < TRAIN; i++) {
        targets[i] = is_prime(digits[i]);
    }
    int64_t shape[1] = {TRAIN};
    hydrant_tensor_new(HYDRANT_DTYPE_I64, targets, shape, 1, &prime);
    free(targets);
    train = rows(images, 0, TRAIN);
    test = rows(images, TRAIN, n);
    if (prime == NULL || train == NULL || test == NULL) {
        status = fail("tensors");
        goto done;
    }
    printf("before: %s head, prime accuracy %.3f\n", HEAD, accuracy(model, test, digits + TRAIN));

    /* A trainer for the model's head, with a two-class cross-entropy task. */
    hydrant_train_params p = hydrant_train_params_default();
    p.epochs = 8;
    p.lr = 0.05f;
    p.weight_decay = 1e-4f;
    p.threads = 1;
    const char *task = "ce";
    if (hydrant_model_head_trainable(model, HEAD) != HYDRANT_OK ||
        hydrant_trainer_new(model, &HEAD, &task, 1, &p, &trainer) != HYDRANT_OK) {
        status = fail("trainer");
        goto done;
    }
    const hydrant_tensor *inputs[1] = {train};
    const hydrant_tensor *head_labels[1] = {prime};
    if (hydrant_trainer_add_samples(trainer, model, inputs, 1, head_labels, 1) != HYDRANT_OK) {
        status = fail("add samples");
        goto done;
    }
    size_t epochs = 0;
    if (hydrant_trainer_fit(trainer, 0, on_epoch, NULL, &epochs) != HYDRANT_OK) {
        status = fail("fit");
        goto done;
    }
    hydrant_task_metrics metrics[1];
    size_t n_metrics = 0;
    if (hydrant_trainer_evaluate(trainer, metrics, 1, &n_metrics) != HYDRANT_OK) {
        status = fail("evaluate");
        goto done;
    }
    printf("trained %zu epochs on %zu samples: accuracy %.3f\n", epochs,
           hydrant_trainer_sample_count(trainer), metrics[0].accuracy);

    /* Swap the trained head into the model (other threads could be running it meanwhile). */
    if (hydrant_trainer_swap_into(trainer, model) != HYDRANT_OK) {
        status = fail("swap");
        goto done;
    }
    printf("after: %s head, prime accuracy %.3f\n", HEAD, accuracy(model, test, digits + TRAIN));

    /* Save it, and load the model again with the saved head beside the ONNX file. */
    if (hydrant_trainer_save_heads(trainer, argv[4], 0) != HYDRANT_OK ||
        hydrant_model_load_parts(argv[1], argv[4], mp, &reloaded) != HYDRANT_OK) {
        status = fail(argv[4]);
        goto done;
    }
    printf("reloaded: %s head, prime accuracy %.3f\n", HEAD,
           accuracy(reloaded, test, digits + TRAIN));
    status = 0;

done:
    hydrant_trainer_free(trainer);
    hydrant_tensor_free(prime);
    hydrant_tensor_free(train);
    hydrant_tensor_free(test);
    hydrant_tensor_free(images);
    hydrant_tensor_free(labels);
    hydrant_model_free(reloaded);
    hydrant_model_free(model);
    return status;
}
