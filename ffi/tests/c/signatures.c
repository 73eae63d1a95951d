/*
 * The inference calls applications are written against, with exactly these types: each is
 * assigned to a pointer of its required type, so a changed signature stops this file compiling
 * under -Werror (ffi/tests/c_api.rs builds it as C11 and runs it).
 */
#include <hydrant.h>

#include <stdio.h>

int main(void) {
    const char *(*version)(void) = hydrant_version;
    const char *(*last_error)(void) = hydrant_last_error;
    hydrant_status (*load)(const char *, hydrant_model **) = hydrant_model_load;
    void (*model_free)(hydrant_model *) = hydrant_model_free;
    size_t (*head_count)(const hydrant_model *) = hydrant_model_head_count;
    const char *(*head_name)(const hydrant_model *, size_t) = hydrant_model_head_name;
    hydrant_status (*new_f32)(const float *, const int64_t *, size_t, hydrant_tensor **) =
        hydrant_tensor_new_f32;
    size_t (*rank)(const hydrant_tensor *) = hydrant_tensor_rank;
    const int64_t *(*shape)(const hydrant_tensor *) = hydrant_tensor_shape;
    const float *(*data_f32)(const hydrant_tensor *) = hydrant_tensor_data_f32;
    const char *(*name)(const hydrant_tensor *) = hydrant_tensor_name;
    void (*tensor_free)(hydrant_tensor *) = hydrant_tensor_free;
    hydrant_status (*run)(const hydrant_model *, const hydrant_tensor *const *, size_t,
                          const char *const *, size_t, hydrant_tensor **, size_t, size_t *) =
        hydrant_model_run;
    hydrant_status (*trunk)(const hydrant_model *, const hydrant_tensor *const *, size_t,
                            hydrant_features **) = hydrant_model_trunk;
    hydrant_status (*heads)(const hydrant_model *, const hydrant_features *, const char *const *,
                            size_t, hydrant_tensor **, size_t, size_t *) = hydrant_model_heads;
    void (*features_free)(hydrant_features *) = hydrant_features_free;
    hydrant_status ok = HYDRANT_OK;

    const void *all[] = {(const void *)&version,  (const void *)&last_error,
                         (const void *)&load,     (const void *)&model_free,
                         (const void *)&head_count, (const void *)&head_name,
                         (const void *)&new_f32,  (const void *)&rank,
                         (const void *)&shape,    (const void *)&data_f32,
                         (const void *)&name,     (const void *)&tensor_free,
                         (const void *)&run,      (const void *)&trunk,
                         (const void *)&heads,    (const void *)&features_free};
    printf("%zu signatures, HYDRANT_OK = %d, version %s\n", sizeof all / sizeof all[0], (int)ok,
           version());
    return ok == 0 && head_count(NULL) == 0 ? 0 : 1;
}
