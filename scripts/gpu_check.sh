#!/usr/bin/env bash
# GPU checks of the CUDA backend, in one run of under 8 minutes on a machine with a CUDA 13
# driver, Python and PyTorch, and no Rust toolchain.
#
#   bash scripts/gpu_check.sh --build   # with Rust: builds target/gpu-check/{gpu_parity,
#                                       # gpu_routing,gpu_bench,gpu_train_bench,hydrant}, packed
#                                       # as target/gpu-check.tar.xz
#   bash scripts/gpu_check.sh           # on the GPU machine, from the repository root, with
#                                       # target/gpu-check.tar.xz carried over (~25 MB)
#
# Steps: the device as hydrant sees it; parity (every kernel against plain references, the
# optimizer kernels against the CPU optimizer, every fixture model against the CPU backend,
# f32 ≤ 1e-4, f16/bf16 ≤ 1e-2; every training layer forward and backward against the CPU
# layer, and the PyTorch training fixtures reproduced by the GPU trainer, ≤ 1e-4); model runs
# routed to the GPU (`Model::load` on cuda in each precision against the CPU model, head swaps,
# threads); compute-sanitizer memcheck on the kernel parity tests when present; benchmark
# against PyTorch eager (bench/peer_torch_gpu.py; needs torchvision); head training, CPU
# trainer against GPU trainer (gpu_train_bench); train-head --device cuda against --device cpu.
# Exits non-zero when a parity check or the sanitizer fails.
set -uo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-check

if [[ ${1:-} == --build ]]; then
  set -e
  cargo test --workspace --release --features hydrant/cuda --no-run --test gpu_parity \
    --test gpu_routing --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] in ("gpu_parity", "gpu_routing") and m.get("executable"):
        print(m["target"]["name"], m["executable"])' > target/gpu_tests.paths
  cargo build --workspace --release --features hydrant/cuda --example gpu_bench \
    --example gpu_train_bench --bin hydrant
  mkdir -p "$out"
  while read -r name exe; do cp "$exe" "$out/$name"; done < target/gpu_tests.paths
  for t in gpu_parity gpu_routing; do
    [[ -x $out/$t ]] || { echo "$t was not built"; exit 1; }
  done
  cp target/release/examples/gpu_bench target/release/examples/gpu_train_bench \
    target/release/hydrant "$out/"
  strip --strip-all "$out"/*
  tar -cJf target/gpu-check.tar.xz -C target gpu-check
  ls -la "$out" target/gpu-check.tar.xz
  echo "carry: target/gpu-check.tar.xz (the GPU run unpacks it into $out)"
  exit 0
fi

if [[ ! -x $out/gpu_parity || ! -x $out/gpu_routing ]]; then
  tar -xJf target/gpu-check.tar.xz -C target || { echo "no $out and no target/gpu-check.tar.xz: build with --build"; exit 2; }
fi

status=0
begin=$(date +%s)
section() { echo; echo "== $* ($(( $(date +%s) - begin )) s)"; }

section "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
command -v nvcc >/dev/null && nvcc --version | tail -2

# NVRTC, cuBLAS and the CUDA headers: a CUDA install, else the NVIDIA wheels PyTorch brings.
wheel_dir=$(python3 - <<'PY' 2>/dev/null
import importlib.util, os
for mod in ("nvidia.cu13", "nvidia.cuda_nvrtc", "nvidia"):
    try:
        spec = importlib.util.find_spec(mod)
    except ModuleNotFoundError:
        continue
    if spec and spec.submodule_search_locations:
        print(list(spec.submodule_search_locations)[0]); break
PY
)
libs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  [[ -d $d ]] && libs+=("$d")
done
if [[ -n $wheel_dir ]]; then
  while IFS= read -r d; do libs+=("$d"); done < <(find "$wheel_dir" -name 'libnvrtc.so*' -o -name 'libcublas.so*' 2>/dev/null | xargs -r -n1 dirname | sort -u)
fi
LD_LIBRARY_PATH=$(IFS=:; echo "${libs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
if [[ -z ${HYDRANT_CUDA_INCLUDE:-} ]]; then
  for d in /usr/local/cuda/include $(find "${wheel_dir:-/nonexistent}" -name cuda_fp16.h 2>/dev/null | xargs -r -n1 dirname); do
    [[ -f $d/cuda_fp16.h ]] && { export HYDRANT_CUDA_INCLUDE=$d; break; }
  done
fi
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "HYDRANT_CUDA_INCLUDE=${HYDRANT_CUDA_INCLUDE:-<not found>}"
for l in libcuda.so.1 libnvrtc.so.13 libcublas.so.13; do
  python3 -c "import ctypes,sys; ctypes.CDLL(sys.argv[1])" "$l" 2>/dev/null && echo "$l: loads" || echo "$l: MISSING"
done
export HYDRANT_FIXTURES=$PWD/tests/fixtures
export HYDRANT_REQUIRE_GPU=1
# The first process compiles each kernel module and stores its PTX; the later ones read it.
export HYDRANT_PTX_CACHE=${HYDRANT_PTX_CACHE:-$(mktemp -d)}

section "device selection"
"$out/hydrant" inspect tests/fixtures/hydranet.onnx | sed -n '/^device:/,$p'
"$out/hydrant" inspect tests/fixtures/hydranet.onnx --device cuda | sed -n '/^device:/,$p' || status=1
"$out/hydrant" inspect tests/fixtures/dtypes.onnx --device cuda --precision f16 | sed -n '/^device:/,$p' || status=1
"$out/hydrant" inspect tests/fixtures/hydranet.onnx --device cuda:99 2>&1 | tail -1

section "parity"
timeout 240 "$out/gpu_parity" --test-threads=1 --nocapture || { echo "PARITY FAILED"; status=1; }

echo "PTX cache $HYDRANT_PTX_CACHE: $(find "$HYDRANT_PTX_CACHE" -name '*.ptx' | wc -l) module file(s)"

section "model runs routed to the GPU"
timeout 120 "$out/gpu_routing" --test-threads=1 --nocapture || { echo "ROUTING FAILED"; status=1; }

section "compute-sanitizer"
if command -v compute-sanitizer >/dev/null; then
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$out/gpu_parity" --test-threads=1 \
    convolutions gemm_pooling cross_entropy every_training_layer dropout_masks || { echo "SANITIZER FAILED"; status=1; }
else
  echo "compute-sanitizer not installed: skipped"
fi

section "training from the command line on the device"
cli=$(mktemp -d)
head_args=(train-head --head tests/fixtures/train/parity_mlp_init.safetensors
  --features tests/fixtures/train/parity_mlp_features.npy
  --labels tests/fixtures/train/parity_mlp_labels.npy --loss ce --lr 0.05 --epochs 3 --batch 16
  --no-shuffle --quiet)
if "$out/hydrant" "${head_args[@]}" --device cpu --out "$cli/cpu.st" | tail -1 \
  && "$out/hydrant" "${head_args[@]}" --device cuda --out "$cli/cuda.st" | tail -1 \
  && python3 scripts/compare_heads.py "$cli/cpu.st" "$cli/cuda.st" 1e-4; then
  echo "train-head --device cuda matches --device cpu"
else
  echo "CLI DEVICE TRAINING FAILED"; status=1
fi
"$out/hydrant" "${head_args[@]}" --val-fraction 0.25 --out "$cli/auto.st" 2>&1 | grep -E "instead|trained on"
"$out/hydrant" "${head_args[@]}" --val-fraction 0.25 --device cuda --out "$cli/no.st" 2>&1 | tail -1

section "benchmark against PyTorch eager"
models=$(mktemp -d)
if timeout 120 python3 bench/peer_torch_gpu.py --export "$models"; then
  timeout 150 "$out/gpu_bench" "$models"/*.onnx --batch 1,64 --storage f32,f16 --iters 30 \
    | tee "$models/hydrant.txt"
  timeout 150 python3 bench/peer_torch_gpu.py --compare "$models/hydrant.txt" --iters 30
else
  echo "benchmark skipped: the peer script could not build the models (torchvision?)"
fi

section "head training: CPU trainer against GPU trainer"
if [[ -x $out/gpu_train_bench ]]; then
  timeout 120 "$out/gpu_train_bench" --batch 64 || echo "training benchmark failed"
else
  echo "no $out/gpu_train_bench in this build: skipped"
fi

section "done: status $status"
exit $status
