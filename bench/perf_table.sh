#!/usr/bin/env bash
# The README benchmark table: hydrant (own CPU ops on, then off = tract alone) and onnxruntime,
# ResNet-18 and MobileNet-V2 trunks, batch 1 and 8, 1 and 2 threads, medians from one
# `hydrant bench --vs-ort` run per setting. Needs bench/models (bench/make_perf_models.py).
#   bash bench/perf_table.sh [ITERS] [extra hydrant bench flags, e.g. --cpu-time]
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-10}
shift || true
bin=./target/release/hydrant
echo "load: $(uptime)"
printf '%-13s %5s %7s %12s %12s %8s %12s\n' model batch threads hydrant onnxruntime ratio "tract alone"
for m in resnet18 mobilenet_v2; do
  for b in 1 8; do
    for t in 1 2; do
      [[ " $* " == *" --cpu-time "* && $t != 1 ]] && continue
      f=bench/models/${m}_3heads.onnx
      out=$($bin bench "$f" --batch "$b" --threads "$t" --iters "$iters" --full-only --vs-ort "$@")
      ours=$(awk '$1 == "hydrant" {print $2}' <<<"$out")
      ort=$(awk '$1 == "onnxruntime" && NF == 4 {print $3}' <<<"$out")
      off=$(HYDRANT_CPU_OPS=off $bin bench "$f" --batch "$b" --threads "$t" --iters "$iters" --full-only "$@" \
        | awk '$1 == "full" && $2 == "graph:" {print $NF == "" ? "" : $(NF-1)}')
      printf '%-13s %5s %7s %9s ms %9s ms %7.2fx %9s ms\n' "$m" "$b" "$t" "$ours" "$ort" \
        "$(echo "$ours / $ort" | bc -l)" "$off"
    done
  done
done
echo "load: $(uptime)"
