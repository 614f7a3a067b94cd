"""torch scaled_dot_product_attention (flash backend) bf16 forward on the shapes of
cuda/bench/bench_attention.cu.

Same protocol and JSON rows as the CUDA benchmark, with "bench":"torch_sdpa": q, k and v are
strided views of one packed [B*S, 3*NH*HD] qkv tensor (the layout elmo's kernel reads), viewed
as [B, NH, S, HD]; 5 warm-up runs, 20 timed runs (CUDA events around each), median;
FLOPs = 4*B*NH*S²*HD. Needs torch with CUDA; exits 77 with a SKIP line without one.

    python scripts/bench_torch_attention_gpu.py > torch_attention.jsonl
"""
import json
import sys

import torch
import torch.nn.functional as F

SHAPES = [(32, 128), (32, 512), (256, 128)]
NH, HD = 12, 64


def bench(B, S):
    C = NH * HD
    qkv = torch.rand(B * S, 3 * C, device="cuda", dtype=torch.bfloat16) * 2 - 1
    q, k, v = (qkv[:, i * C:(i + 1) * C].view(B, S, NH, HD).transpose(1, 2) for i in range(3))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run():
        return F.scaled_dot_product_attention(q, k, v)

    # The backend choice is made once, outside the timed calls.
    with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        for _ in range(5):
            run()
        torch.cuda.synchronize()
        times = []
        for _ in range(20):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
    times.sort()
    ms = 0.5 * (times[9] + times[10])
    flops = 4.0 * B * NH * S * S * HD
    row = {"bench": "torch_sdpa", "B": B, "S": S, "NH": NH, "HD": HD, "dtype": "bf16",
           "ms": round(ms, 4), "tflops": round(flops / (ms * 1e-3) / 1e12, 2)}
    print(json.dumps(row, separators=(",", ":")), flush=True)


def main():
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device (torch.cuda.is_available() is False)")
        return 77
    props = torch.cuda.get_device_properties(0)
    print(f"device 0: {props.name}, torch {torch.__version__}", file=sys.stderr)
    for B, S in SHAPES:
        bench(B, S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
