// classify (C++17): load a model, compute the trunk once, run every head on the stored features,
// and print each head's output shapes and, for the chosen head, the top class of each row.
//
//   classify_cpp MODEL IMAGE.npy [HEAD]
//
// Prints "HEAD row R: class C (score S)" for each row of HEAD's first output (default: the first
// head), after one "output NAME [dims]" line per output of every head. Exit status 1 on an error.
#include <hydrant.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        std::cerr << "usage: " << argv[0] << " MODEL IMAGE.npy [HEAD]\n";
        return 1;
    }
    try {
        hydrant::params params;
        params.threads = 1;
        hydrant::model model(argv[1], params);
        hydrant::tensor image = hydrant::tensor::load_npy(argv[2]);
        std::string head = argc == 4 ? argv[3] : model.head_names().at(0);

        // One trunk pass; each head then runs on the stored features.
        hydrant::features features = model.trunk({&image});
        for (const hydrant::tensor &out : model.heads(features)) {
            std::cout << "output " << out.name() << " [";
            auto shape = out.shape();
            for (std::size_t i = 0; i < shape.size(); i++) {
                std::cout << (i ? ", " : "") << shape[i];
            }
            std::cout << "]\n";
        }

        std::vector<hydrant::tensor> outputs = model.heads(features, {head});
        const hydrant::tensor &scores = outputs.at(0);
        auto shape = scores.shape();
        if (shape.size() != 2) {
            throw hydrant::error(HYDRANT_ERR_BAD_TENSOR, "head " + head + ": expected [N, classes]");
        }
        const float *data = scores.data<float>();
        for (std::int64_t row = 0; row < shape[0]; row++) {
            const float *s = data + row * shape[1];
            auto best = std::max_element(s, s + shape[1]) - s;
            std::printf("%s row %lld: class %lld (score %.6f)\n", head.c_str(), (long long)row,
                        (long long)best, (double)s[best]);
        }
    } catch (const hydrant::error &e) {
        std::cerr << "classify_cpp: " << e.what() << " (status " << e.status() << ")\n";
        return 1;
    }
    return 0;
}
