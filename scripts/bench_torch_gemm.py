#!/usr/bin/env python3
"""torch.matmul (CPU) on the same rows as native/bench/bench_gemm.cpp, same JSON row format:

  {"bench":"gemm","m":4096,"n":3072,"k":768,"op":"NT","threads":1,"gflops":95.1,"ms":203.2}

out[M=T, N] = op(a) . op(b) with K inner: NN a[M,K] b[K,N]; NT a[M,K] b[N,K] (b.t() view);
TN a[K,M] (a.t() view) b[K,N]. Output preallocated (matmul(out=...)), median of repeats after
warm-up. Filters as in bench_gemm: op=NN,NT m=128 n=768 k=3072 threads=1 reps=7.
"""
import json
import os
import sys
import time

import torch


def parse_filters(argv):
    filters = {}
    for arg in argv:
        if "=" not in arg:
            sys.exit(f"usage: {sys.argv[0]} [op=NN,NT,TN] [m=..] [n=..] [k=..] [threads=..] [reps=N]")
        key, value = arg.split("=", 1)
        filters[key] = value.split(",")
    return filters


def main():
    filters = parse_filters(sys.argv[1:])
    reps = int(filters.pop("reps", ["7"])[0])
    all_threads = int(os.environ.get("ELMO_NUM_THREADS", os.cpu_count() or 1))
    thread_counts = [1] + ([all_threads] if all_threads > 1 else [])

    def keep(key, value):
        return key not in filters or str(value) in filters[key]

    rows = []
    for T in (128, 4096):
        for n, k in ((3072, 768), (768, 3072), (768, 768), (512, 128), (128, 512)):
            for op in ("NN", "NT", "TN"):
                for threads in thread_counts:
                    if all(keep(key, v) for key, v in (("m", T), ("n", n), ("k", k), ("op", op), ("threads", threads))):
                        rows.append((T, n, k, op, threads))

    gen = torch.Generator().manual_seed(0)
    for m, n, k, op, threads in rows:
        torch.set_num_threads(threads)
        a = torch.rand((k, m) if op == "TN" else (m, k), generator=gen) - 0.5
        b = torch.rand((n, k) if op == "NT" else (k, n), generator=gen) - 0.5
        lhs = a.t() if op == "TN" else a
        rhs = b.t() if op == "NT" else b
        out = torch.empty(m, n)

        def run():
            torch.matmul(lhs, rhs, out=out)

        t0 = time.perf_counter()
        inner = 0
        while True:  # warm up for ~50 ms
            run()
            inner += 1
            if time.perf_counter() - t0 >= 0.05 or inner >= 1000:
                break
        one = (time.perf_counter() - t0) / inner
        inner = max(1, int(0.02 / max(one, 1e-6)))
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                run()
            samples.append((time.perf_counter() - t0) / inner)
        samples.sort()
        ms = samples[len(samples) // 2] * 1e3
        gflops = 2.0 * m * n * k / (ms * 1e6)
        print(json.dumps({"bench": "gemm", "m": m, "n": n, "k": k, "op": op, "threads": threads,
                          "gflops": round(gflops, 2), "ms": round(ms, 4)}, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
