#!/usr/bin/env python3
"""PyTorch CPU baseline for the fused attention benchmark (native/bench/bench_attention.cpp).

Measures torch.nn.functional.scaled_dot_product_attention on the CPU in the padded
[B, NH, S, HD] layout (every sequence full length, so no padding is wasted), forward only
(under no_grad) and forward + backward (q, k, v require grad; out.backward(dout)), with one
thread and with all threads. Prints the same JSON rows as bench_attention:

  {"bench":"attention","B":..,"S":..,"NH":..,"HD":..,"pass":"fwd"|"fwd+bwd","threads":..,
   "tokens_per_s":..,"ms":..,"peak_scratch_bytes":..,"impl":"torch-sdpa"}

ms is the median over repeats; peak_scratch_bytes is reported as 0 (not measured here).
On a shared, loaded machine ELMO_BENCH_CLOCK=thread times single-thread rows with the calling
thread's CPU time (torch runs one-thread ops inline), like bench_attention.

  .venv/bin/python scripts/bench_torch_attention.py [--batch 32] [--seq 128 512] [--threads 1 2]
"""

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(fn, min_seconds, thread_clock, min_reps=3):
    clock = time.thread_time if thread_clock else time.perf_counter
    fn()  # warm-up
    times = []
    total = 0.0
    while len(times) < min_reps or total < min_seconds * 1e3:
        t0 = clock()
        fn()
        dt = (clock() - t0) * 1e3
        times.append(dt)
        total += dt
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="thread counts (default: 1 and all cores)")
    args = ap.parse_args()
    all_threads = os.cpu_count() or 1
    thread_counts = args.threads or ([1, all_threads] if all_threads > 1 else [1])
    B, NH, HD = args.batch, args.heads, args.head_dim
    thread_clock = os.environ.get("ELMO_BENCH_CLOCK") == "thread"
    gen = torch.Generator().manual_seed(0)

    for S in args.seq:
        q, k, v = (torch.rand(B, NH, S, HD, generator=gen) * 2 - 1 for _ in range(3))
        dout = torch.rand(B, NH, S, HD, generator=gen) * 2 - 1
        for threads in thread_counts:
            torch.set_num_threads(threads)
            min_s = 2.0 if S >= 512 else 1.0

            def fwd():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v)

            qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

            def fwd_bwd():
                out = F.scaled_dot_product_attention(qg, kg, vg)
                out.backward(dout)
                qg.grad = kg.grad = vg.grad = None

            for name, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                ms = median_ms(fn, min_s, thread_clock and threads == 1)
                print(json.dumps({
                    "bench": "attention", "B": B, "S": S, "NH": NH, "HD": HD, "pass": name,
                    "threads": threads, "tokens_per_s": round(B * S / (ms * 1e-3), 1),
                    "ms": round(ms, 3), "peak_scratch_bytes": 0, "impl": "torch-sdpa",
                }, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
