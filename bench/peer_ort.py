#!/usr/bin/env python3
"""Time onnxruntime on a model the way `hydrant bench` times hydrant.

    python bench/peer_ort.py MODEL.onnx --batch 1 --threads 2 [--iters 30] [--cpu-time]

Inputs are random with every symbolic dimension set to the batch size. Prints human-readable
lines, then one JSON line (the last) with `full_ms` (all outputs), `heads_ms` (each output
alone) and `version`, which `hydrant bench --vs-ort` reads.
"""
import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def median_ms(fn, iters, clock=time.perf_counter):
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        t = clock()
        fn()
        times.append((clock() - t) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--cpu-time", action="store_true",
                   help="on-CPU time of the calling thread (with --threads 1) instead of wall time")
    a = p.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else a.batch for d in i.shape]
        x = rng.uniform(-1, 1, size=shape)
        feeds[i.name] = x.astype(np.float32) if "float" in i.type else x.astype(np.int64)
    outputs = [o.name for o in sess.get_outputs()]
    clock = time.thread_time if a.cpu_time else time.perf_counter
    full = median_ms(lambda: sess.run(None, feeds), a.iters, clock)
    heads = {o: median_ms(lambda o=o: sess.run([o], feeds), a.iters, clock) for o in outputs}
    print(f"onnxruntime {ort.__version__}: full graph {full:.3f} ms (batch {a.batch}, {a.threads} threads)")
    print(json.dumps({"full_ms": full, "heads_ms": heads, "version": ort.__version__,
                      "batch": a.batch, "threads": a.threads}))


if __name__ == "__main__":
    main()
