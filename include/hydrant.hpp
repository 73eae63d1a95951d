/*
 * hydrant.hpp: a header-only C++17 wrapper over hydrant.h.
 *
 * Handles own their C objects (move-only, freed on destruction, like std::unique_ptr); every
 * failed call throws hydrant::error carrying the status and hydrant_last_error()'s message.
 * Thread safety is the C interface's: a model may be run by many threads at once.
 *
 *     hydrant::model model("hydranet.onnx");
 *     hydrant::tensor image = hydrant::tensor::load_npy("image.npy");
 *     std::vector<hydrant::tensor> out = model.run({&image}, {"cls"});
 *     const float *scores = out[0].data<float>();
 */
#ifndef HYDRANT_HPP
#define HYDRANT_HPP

#include "hydrant.h"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace hydrant {

/** A failed hydrant call: the status and the library's message. */
class error : public std::runtime_error {
  public:
    error(hydrant_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    /** The status the C call returned. */
    hydrant_status status() const noexcept { return status_; }

  private:
    hydrant_status status_;
};

/** Throws hydrant::error unless `status` is HYDRANT_OK. */
inline void check(hydrant_status status) {
    if (status != HYDRANT_OK) {
        throw error(status, hydrant_last_error());
    }
}

/** The library's version string. */
inline std::string version() { return hydrant_version(); }

namespace detail {
struct tensor_free {
    void operator()(hydrant_tensor *t) const noexcept { hydrant_tensor_free(t); }
};
struct features_free {
    void operator()(hydrant_features *f) const noexcept { hydrant_features_free(f); }
};
struct model_free {
    void operator()(hydrant_model *m) const noexcept { hydrant_model_free(m); }
};

/** C string pointers for names (valid while `names` lives). */
inline std::vector<const char *> c_strings(const std::vector<std::string> &names) {
    std::vector<const char *> out;
    out.reserve(names.size());
    for (const auto &n : names) {
        out.push_back(n.c_str());
    }
    return out;
}

template <class T> struct dtype_of;
template <> struct dtype_of<float> {
    static constexpr hydrant_dtype value = HYDRANT_DTYPE_F32;
};
template <> struct dtype_of<double> {
    static constexpr hydrant_dtype value = HYDRANT_DTYPE_F64;
};
template <> struct dtype_of<std::uint8_t> {
    static constexpr hydrant_dtype value = HYDRANT_DTYPE_U8;
};
template <> struct dtype_of<std::int8_t> {
    static constexpr hydrant_dtype value = HYDRANT_DTYPE_I8;
};
template <> struct dtype_of<std::int32_t> {
    static constexpr hydrant_dtype value = HYDRANT_DTYPE_I32;
};
template <> struct dtype_of<std::int64_t> {
    static constexpr hydrant_dtype value = HYDRANT_DTYPE_I64;
};
} // namespace detail

/** An owned tensor (the C hydrant_tensor). */
class tensor {
  public:
    /** Takes ownership of a C tensor (NULL makes an empty handle). */
    explicit tensor(hydrant_tensor *t = nullptr) noexcept : p_(t) {}

    /** Copies `data` (row-major, `dtype`'s element size each) into a new tensor. */
    static tensor from_bytes(hydrant_dtype dtype, const void *data,
                             const std::vector<std::int64_t> &shape) {
        hydrant_tensor *t = nullptr;
        check(hydrant_tensor_new(dtype, data, shape.data(), shape.size(), &t));
        return tensor(t);
    }

    /** Copies typed elements (float, double, uint8_t, int8_t, int32_t, int64_t). */
    template <class T>
    static tensor from(const std::vector<T> &data, const std::vector<std::int64_t> &shape) {
        return from_bytes(detail::dtype_of<T>::value, data.data(), shape);
    }

    /** Reads a .npy file. */
    static tensor load_npy(const std::string &path) {
        hydrant_tensor *t = nullptr;
        check(hydrant_tensor_load_npy(path.c_str(), &t));
        return tensor(t);
    }

    /** Writes a .npy file. */
    void save_npy(const std::string &path) const {
        check(hydrant_tensor_save_npy(p_.get(), path.c_str()));
    }

    /** The dimensions. */
    std::vector<std::int64_t> shape() const {
        const std::int64_t *s = hydrant_tensor_shape(p_.get());
        return s ? std::vector<std::int64_t>(s, s + hydrant_tensor_rank(p_.get()))
                 : std::vector<std::int64_t>();
    }

    /** The element type. */
    hydrant_dtype dtype() const noexcept { return hydrant_tensor_dtype(p_.get()); }

    /** Number of elements. */
    std::size_t size() const noexcept { return hydrant_tensor_element_count(p_.get()); }

    /** The elements as `T`; throws when the tensor holds another type. */
    template <class T> const T *data() const {
        if (dtype() != detail::dtype_of<T>::value) {
            throw error(HYDRANT_ERR_BAD_TENSOR,
                        std::string("tensor holds ") + hydrant_dtype_name(dtype()) + " elements");
        }
        return static_cast<const T *>(hydrant_tensor_data(p_.get()));
    }

    /** The elements copied into a vector of `T`. */
    template <class T> std::vector<T> to_vector() const {
        const T *d = data<T>();
        return std::vector<T>(d, d + size());
    }

    /** The name (an output's name, or what set_name() set); empty when it has none. */
    std::string name() const {
        const char *n = hydrant_tensor_name(p_.get());
        return n ? n : "";
    }

    /** Names the tensor; an input with a name is matched to the model input of that name. */
    void set_name(const std::string &name) {
        check(hydrant_tensor_set_name(p_.get(), name.c_str()));
    }

    /** The C handle, still owned by this object. */
    hydrant_tensor *get() const noexcept { return p_.get(); }
    /** Gives up ownership of the C handle. */
    hydrant_tensor *release() noexcept { return p_.release(); }
    /** Whether this object holds a tensor. */
    explicit operator bool() const noexcept { return static_cast<bool>(p_); }

  private:
    std::unique_ptr<hydrant_tensor, detail::tensor_free> p_;
};

/** Trunk features kept to run heads on later (the C hydrant_features). */
class features {
  public:
    /** Takes ownership of C features. */
    explicit features(hydrant_features *f = nullptr) noexcept : p_(f) {}

    /** Builds features from named tensors (copied). */
    static features from(const std::vector<const tensor *> &tensors) {
        std::vector<const hydrant_tensor *> raw;
        for (const tensor *t : tensors) {
            raw.push_back(t->get());
        }
        hydrant_features *f = nullptr;
        check(hydrant_features_new(raw.data(), raw.size(), &f));
        return features(f);
    }

    /** Names of the tensors held, sorted. */
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (std::size_t i = 0; i < hydrant_features_count(p_.get()); i++) {
            out.emplace_back(hydrant_features_name(p_.get(), i));
        }
        return out;
    }

    /** A copy of the tensor called `name`. */
    tensor get(const std::string &name) const {
        hydrant_tensor *t = nullptr;
        check(hydrant_features_get(p_.get(), name.c_str(), &t));
        return tensor(t);
    }

    /** The C handle, still owned by this object. */
    hydrant_features *get() const noexcept { return p_.get(); }

  private:
    std::unique_ptr<hydrant_features, detail::features_free> p_;
};

/** Load parameters: the C struct plus storage for the cut point names. */
struct params {
    /** Intra-op threads (0: one per core). */
    std::uint32_t threads = 0;
    /** HYDRANT_DEVICE_AUTO, HYDRANT_DEVICE_CPU or HYDRANT_DEVICE_CUDA. */
    hydrant_device device = HYDRANT_DEVICE_AUTO;
    /** CUDA device number. */
    std::uint32_t device_index = 0;
    /** Trunk tensors where heads attach (empty: automatic split). */
    std::vector<std::string> cut_points;
    /** 1: batches as rows, 0: one pass, negative: automatic. */
    std::int32_t batch_as_rows = -1;
    /** Budget for stored tensors in bytes (0: 4 GiB). */
    std::uint64_t max_bytes = 0;
};

/** A loaded multi-head model (the C hydrant_model); const methods may run on many threads. */
class model {
  public:
    /** Loads an ONNX file. */
    explicit model(const std::string &path, const params &p = params()) {
        auto cuts = detail::c_strings(p.cut_points);
        hydrant_model *m = nullptr;
        check(hydrant_model_load_with_params(path.c_str(), to_c(p, cuts), &m));
        p_.reset(m);
    }

    /** Loads an ONNX model from memory (the bytes are not kept). */
    static model from_memory(const void *data, std::size_t size, const params &p = params()) {
        auto cuts = detail::c_strings(p.cut_points);
        hydrant_model *m = nullptr;
        check(hydrant_model_load_from_memory(data, size, to_c(p, cuts), &m));
        return model(m);
    }

    /** Head names, in the model's order. */
    std::vector<std::string> head_names() const {
        std::vector<std::string> out;
        for (std::size_t i = 0; i < hydrant_model_head_count(p_.get()); i++) {
            out.emplace_back(hydrant_model_head_name(p_.get(), i));
        }
        return out;
    }

    /** Input names, in the model's order. */
    std::vector<std::string> input_names() const {
        std::vector<std::string> out;
        for (std::size_t i = 0; i < hydrant_model_input_count(p_.get()); i++) {
            out.emplace_back(hydrant_model_input_name(p_.get(), i));
        }
        return out;
    }

    /** Runs the trunk once and the named heads (all when empty); outputs in head order. */
    std::vector<tensor> run(const std::vector<const tensor *> &inputs,
                            const std::vector<std::string> &heads = {}) const {
        auto raw = raw_inputs(inputs);
        auto names = detail::c_strings(heads);
        return collect(heads, [&](hydrant_tensor **out, std::size_t cap, std::size_t *n) {
            return hydrant_model_run(p_.get(), raw.data(), raw.size(), names.data(),
                                     names.size(), out, cap, n);
        });
    }

    /** Runs the trunk (only what `heads` need, all when empty) and keeps its features. */
    hydrant::features trunk(const std::vector<const tensor *> &inputs,
                            const std::vector<std::string> &heads = {}) const {
        auto raw = raw_inputs(inputs);
        auto names = detail::c_strings(heads);
        hydrant_features *f = nullptr;
        check(hydrant_model_trunk_for(p_.get(), raw.data(), raw.size(), names.data(),
                                      names.size(), &f));
        return hydrant::features(f);
    }

    /** Runs the named heads (all when empty) on stored features. */
    std::vector<tensor> heads(const hydrant::features &f,
                              const std::vector<std::string> &heads = {}) const {
        auto names = detail::c_strings(heads);
        return collect(heads, [&](hydrant_tensor **out, std::size_t cap, std::size_t *n) {
            return hydrant_model_heads(p_.get(), f.get(), names.data(), names.size(), out, cap,
                                       n);
        });
    }

    /** Sets the heads of a safetensors head file, all at once (safe while other threads run). */
    void swap_heads(const std::string &heads_path) const {
        check(hydrant_model_swap_heads(p_.get(), heads_path.c_str()));
    }

    /** Writes heads (all when empty) to a safetensors head file. */
    void save_heads(const std::string &path, const std::vector<std::string> &heads = {}) const {
        auto names = detail::c_strings(heads);
        check(hydrant_model_save_heads(p_.get(), names.data(), names.size(), path.c_str()));
    }

    /** "" when head `name` can be trained, else why not (the node that prevents it). */
    std::string why_not_trainable(const std::string &name) const {
        hydrant_status s = hydrant_model_head_trainable(p_.get(), name.c_str());
        if (s == HYDRANT_ERR_NOT_TRAINABLE) {
            return hydrant_last_error();
        }
        check(s);
        return std::string();
    }

    /** Loads an ONNX trunk with the heads of a head file. */
    static model load_parts(const std::string &onnx, const std::string &heads,
                            const params &p = params()) {
        auto cuts = detail::c_strings(p.cut_points);
        hydrant_model *m = nullptr;
        check(hydrant_model_load_parts(onnx.c_str(), heads.c_str(), to_c(p, cuts), &m));
        return model(m);
    }

    /** Loads a whole model (trunk and heads) from one safetensors file. */
    static model load_safetensors(const std::string &path, const params &p = params()) {
        auto cuts = detail::c_strings(p.cut_points);
        hydrant_model *m = nullptr;
        check(hydrant_model_load_safetensors(path.c_str(), to_c(p, cuts), &m));
        return model(m);
    }

    /** The C handle, still owned by this object. */
    const hydrant_model *get() const noexcept { return p_.get(); }

  private:
    explicit model(hydrant_model *m) noexcept : p_(m) {}

    static hydrant_model_params to_c(const params &p, const std::vector<const char *> &cuts) {
        hydrant_model_params c = hydrant_model_default_params();
        c.threads = p.threads;
        c.device = p.device;
        c.device_index = p.device_index;
        c.cut_points = cuts.empty() ? nullptr : cuts.data();
        c.n_cut_points = cuts.size();
        c.batch_as_rows = p.batch_as_rows;
        c.max_bytes = p.max_bytes;
        return c;
    }

    static std::vector<const hydrant_tensor *>
    raw_inputs(const std::vector<const tensor *> &inputs) {
        std::vector<const hydrant_tensor *> raw;
        for (const tensor *t : inputs) {
            raw.push_back(t ? t->get() : nullptr);
        }
        return raw;
    }

    /** Sizes the output array with hydrant_model_output_count(), calls `call`, wraps results. */
    template <class Call>
    std::vector<tensor> collect(const std::vector<std::string> &heads, Call call) const {
        auto names = detail::c_strings(heads);
        std::size_t count = 0;
        check(hydrant_model_output_count(p_.get(), names.data(), names.size(), &count));
        std::vector<hydrant_tensor *> raw(count, nullptr);
        std::size_t n = 0;
        check(call(raw.data(), raw.size(), &n));
        std::vector<tensor> out;
        out.reserve(n);
        for (std::size_t i = 0; i < n; i++) {
            out.emplace_back(raw[i]);
        }
        return out;
    }

    std::unique_ptr<hydrant_model, detail::model_free> p_;
};

/** Training parameters: hydrant_train_params_default() with chainable setters; `c` is the C
    struct for the fields without a setter. */
struct train_params {
    hydrant_train_params c = hydrant_train_params_default();
    train_params &epochs(std::uint32_t n) { c.epochs = n; return *this; }
    train_params &batch_size(std::uint32_t n) { c.batch_size = n; return *this; }
    train_params &lr(float v) { c.lr = v; return *this; }
    train_params &seed(std::uint64_t v) { c.seed = v; return *this; }
    train_params &shuffle(bool v) { c.shuffle = v; return *this; }
    train_params &sgd(float momentum, float weight_decay = 0, bool nesterov = false) {
        c.optimizer = HYDRANT_OPTIMIZER_SGD;
        c.momentum = momentum;
        c.weight_decay = weight_decay;
        c.nesterov = nesterov;
        return *this;
    }
    train_params &adamw(float weight_decay = 0.01f) {
        c.optimizer = HYDRANT_OPTIMIZER_ADAMW;
        c.weight_decay = weight_decay;
        return *this;
    }
    train_params &validation_fraction(float v) { c.validation_fraction = v; return *this; }
    train_params &threads(std::uint32_t n) { c.threads = n; return *this; }
};

/** Heads being fine-tuned (the C hydrant_trainer); used by one thread at a time. */
class trainer {
  public:
    /** Per-epoch callback: return false to stop training. */
    using callback = std::function<bool(const hydrant_epoch_report &)>;

    /** A trainer for heads of `m`; each task is a loss name, JSON, or "" for the head's own. */
    trainer(const model &m, const std::vector<std::string> &heads,
            const std::vector<std::string> &tasks = {}, const train_params &p = train_params()) {
        auto names = detail::c_strings(heads);
        std::vector<const char *> t;
        for (const auto &task : tasks) {
            t.push_back(task.empty() ? nullptr : task.c_str());
        }
        if (!tasks.empty() && tasks.size() != heads.size()) {
            throw error(HYDRANT_ERR_INVALID_ARGUMENT, "give one task per head, or none");
        }
        hydrant_trainer *raw = nullptr;
        check(hydrant_trainer_new(m.get(), names.data(), tasks.empty() ? nullptr : t.data(),
                                  names.size(), &p.c, &raw));
        p_.reset(raw);
    }

    /** A trainer for the heads of a head file (they keep their tasks). */
    static trainer from_file(const std::string &heads_path, const train_params &p = train_params()) {
        hydrant_trainer *raw = nullptr;
        check(hydrant_trainer_new_from_file(heads_path.c_str(), nullptr, &p.c, &raw));
        return trainer(raw);
    }

    /** Continues a run saved by save_checkpoint() (same parameters and samples again). */
    static trainer resume(const std::string &path, const train_params &p = train_params()) {
        hydrant_trainer *raw = nullptr;
        check(hydrant_trainer_resume(path.c_str(), &p.c, &raw));
        return trainer(raw);
    }

    /** Head names, in the order labels are given in. */
    std::vector<std::string> head_names() const {
        std::vector<std::string> out;
        for (std::size_t i = 0; i < hydrant_trainer_head_count(p_.get()); i++) {
            out.emplace_back(hydrant_trainer_head_name(p_.get(), i));
        }
        return out;
    }

    /** Samples added so far. */
    std::size_t samples() const { return hydrant_trainer_sample_count(p_.get()); }

    /** Adds samples from model inputs; one label tensor (or nullptr) per head. */
    void add_samples(const model &m, const std::vector<const tensor *> &inputs,
                     const std::vector<const tensor *> &labels) {
        auto in = raw(inputs);
        auto l = raw(labels);
        check(hydrant_trainer_add_samples(p_.get(), m.get(), in.data(), in.size(), l.data(),
                                          l.size()));
    }

    /** Adds samples from trunk features; one label tensor (or nullptr) per head. */
    void add_features(const features &f, const std::vector<const tensor *> &labels) {
        auto l = raw(labels);
        check(hydrant_trainer_add_features(p_.get(), f.get(), l.data(), l.size()));
    }

    /** Trains `epochs` epochs (0: the parameters' count); returns the epochs run. An exception
        thrown by `on_epoch` stops training and is rethrown here. */
    std::size_t fit(std::size_t epochs = 0, const callback &on_epoch = callback()) {
        struct state {
            const callback *f;
            std::exception_ptr thrown;
        } s{&on_epoch, nullptr};
        auto trampoline = [](const hydrant_epoch_report *r, void *user) -> int {
            auto *st = static_cast<state *>(user);
            try {
                return (*st->f)(*r) ? 0 : 1;
            } catch (...) {
                st->thrown = std::current_exception();
                return 1;
            }
        };
        std::size_t run = 0;
        hydrant_status status =
            hydrant_trainer_fit(p_.get(), epochs, on_epoch ? +trampoline : nullptr, &s, &run);
        if (s.thrown) {
            std::rethrow_exception(s.thrown);
        }
        check(status);
        return run;
    }

    /** Metrics of every head (validation samples, or all without a split). */
    std::vector<hydrant_task_metrics> evaluate() {
        std::vector<hydrant_task_metrics> out(hydrant_trainer_head_count(p_.get()));
        std::size_t n = 0;
        check(hydrant_trainer_evaluate(p_.get(), out.data(), out.size(), &n));
        out.resize(n);
        return out;
    }

    /** Writes the heads (with optimizer state if asked) to a head file. */
    void save_heads(const std::string &path, bool with_optimizer = false) {
        check(hydrant_trainer_save_heads(p_.get(), path.c_str(), with_optimizer ? 1 : 0));
    }

    /** Writes the whole training state, to continue with resume(). */
    void save_checkpoint(const std::string &path) {
        check(hydrant_trainer_save_checkpoint(p_.get(), path.c_str()));
    }

    /** Sets the heads, as trained so far, into `m` (safe while other threads run it). */
    void swap_into(const model &m) { check(hydrant_trainer_swap_into(p_.get(), m.get())); }

    /** The C handle, still owned by this object. */
    hydrant_trainer *get() const noexcept { return p_.get(); }

  private:
    struct trainer_free {
        void operator()(hydrant_trainer *t) const noexcept { hydrant_trainer_free(t); }
    };
    explicit trainer(hydrant_trainer *t) noexcept : p_(t) {}

    static std::vector<const hydrant_tensor *> raw(const std::vector<const tensor *> &ts) {
        std::vector<const hydrant_tensor *> out;
        for (const tensor *t : ts) {
            out.push_back(t ? t->get() : nullptr);
        }
        return out;
    }

    std::unique_ptr<hydrant_trainer, trainer_free> p_;
};

} // namespace hydrant

#endif /* HYDRANT_HPP */
