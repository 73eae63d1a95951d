// finetune MODEL.onnx IMAGES.npy LABELS.npy OUT.safetensors: the C++ wrapper's fine-tuning
// workflow. Retrains the digits model's `digit` head on the images and their labels, printing each
// epoch, swaps the trained head into the model and saves it.
//
//     g++ -std=c++17 finetune.cpp $(pkg-config --cflags --libs hydrant) -o finetune_cpp
#include <hydrant.hpp>

#include <cstdio>

int main(int argc, char **argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s MODEL.onnx IMAGES.npy LABELS.npy OUT.safetensors\n",
                     argv[0]);
        return 2;
    }
    try {
        hydrant::model model(argv[1]);
        hydrant::tensor images = hydrant::tensor::load_npy(argv[2]);
        hydrant::tensor labels = hydrant::tensor::load_npy(argv[3]);
        std::string why = model.why_not_trainable("digit");
        if (!why.empty()) {
            std::fprintf(stderr, "finetune: %s\n", why.c_str());
            return 1;
        }
        auto params = hydrant::train_params().epochs(3).lr(0.05f).validation_fraction(0.25f);
        hydrant::trainer trainer(model, {"digit"}, {"ce"}, params);
        trainer.add_samples(model, {&images}, {&labels});
        trainer.fit(0, [](const hydrant_epoch_report &r) {
            std::printf("epoch %zu: train loss %.4f, validation accuracy %.3f\n", r.epoch,
                        r.train[0].loss, r.validation[0].accuracy);
            return true;
        });
        std::printf("accuracy %.3f\n", trainer.evaluate()[0].accuracy);
        trainer.swap_into(model);
        trainer.save_heads(argv[4]);
    } catch (const hydrant::error &e) {
        std::fprintf(stderr, "finetune: %s (status %d)\n", e.what(), static_cast<int>(e.status()));
        return 1;
    }
    return 0;
}
