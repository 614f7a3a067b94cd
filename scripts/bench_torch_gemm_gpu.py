"""torch.matmul (cuBLAS) bf16 throughput on the shapes of cuda/bench/bench_gemm.cu.

Same protocol and JSON rows as the CUDA benchmark, with "bench":"torch_gemm":
5 warm-up runs, 20 timed runs (CUDA events around each), median; inputs rotate over enough
copies to exceed the L2 cache. Needs torch with CUDA; exits 77 with a SKIP line without one.

    python scripts/bench_torch_gemm_gpu.py > torch_gemm.jsonl
"""
import json
import sys

import torch

SHAPES = [(3072, 768), (768, 3072), (768, 768), (2304, 768)]


def bench(op, m, n, k, l2_bytes):
    set_bytes = (m * k + n * k + m * n) * 2
    copies = max(2, min(64, 3 * l2_bytes // set_bytes + 1))
    a_shape = (k, m) if op == "TN" else (m, k)
    b_shape = (n, k) if op == "NT" else (k, n)
    as_ = [torch.rand(a_shape, device="cuda", dtype=torch.bfloat16) * 2 - 1 for _ in range(copies)]
    bs = [torch.rand(b_shape, device="cuda", dtype=torch.bfloat16) * 2 - 1 for _ in range(copies)]
    outs = [torch.empty((m, n), device="cuda", dtype=torch.bfloat16) for _ in range(copies)]

    def run(c):
        a, b = as_[c], bs[c]
        if op == "NT":
            torch.matmul(a, b.t(), out=outs[c])
        elif op == "NN":
            torch.matmul(a, b, out=outs[c])
        else:
            torch.matmul(a.t(), b, out=outs[c])

    for i in range(5):
        run(i % copies)
    torch.cuda.synchronize()
    times = []
    for i in range(20):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run((i + 5) % copies)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    ms = 0.5 * (times[9] + times[10])
    row = {"bench": "torch_gemm", "m": m, "n": n, "k": k, "op": op, "dtype": "bf16",
           "tflops": round(2.0 * m * n * k / (ms * 1e-3) / 1e12, 2), "ms": round(ms, 4)}
    print(json.dumps(row, separators=(",", ":")), flush=True)


def main():
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device (torch.cuda.is_available() is False)")
        return 77
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    print(f"device 0: {props.name}, torch {torch.__version__}", file=sys.stderr)
    for t in (128, 4096, 16384):
        for n, k in SHAPES:
            bench("NT", t, n, k, l2)
    for op in ("NN", "TN"):
        for n, k in SHAPES:
            bench(op, 4096, n, k, l2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
