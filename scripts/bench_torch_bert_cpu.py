#!/usr/bin/env python3
"""PyTorch CPU side of `npm run bench:infer`: transformers BertModel forward over the benchmark cases.

  .venv/bin/python scripts/bench_torch_bert_cpu.py --spec cases.json

The spec (written by bench/infer.js) names the model directory (config.json + model.safetensors),
the thread count, the timing budget and the cases: per case, the token ids of every sequence.
Batches are padded to the longest sequence with an attention mask, as PyTorch users run them;
the model uses transformers' default attention (SDPA), torch.inference_mode, fp32.

Timing per case: warm-up until ~200 ms have passed (at least one forward), then the median of
`runs` forwards, runs = clamp(budget_ms / warm-up time, min_runs, max_runs); 2 when one forward
takes longer than long_ms. Prints one JSON row per case, then {"rss": ...}: peak resident set of
this process (ru_maxrss), the resident set before the model was loaded (torch imported) and the
peak right after loading it. With "check" in the
spec, also writes pooled [B, H] and the unpadded last hidden rows [T, H] of that batch as f32.
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time


def rss_now_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", required=True)
    args = ap.parse_args()
    spec = json.load(open(args.spec))

    import numpy as np
    import torch
    from transformers import BertModel

    rss_start = rss_now_mb()
    torch.set_num_threads(spec["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model = BertModel.from_pretrained(spec["model_dir"], dtype=torch.float32).eval()
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"attention {model.config._attn_implementation}", file=sys.stderr)

    def tensors(seqs):
        S = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), S, dtype=torch.int64)
        mask = torch.zeros(len(seqs), S, dtype=torch.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
            mask[i, : len(s)] = 1
        return ids, mask, torch.zeros_like(ids)

    def forward(batch):
        ids, mask, types = batch
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types)

    t = spec["timing"]
    with torch.inference_mode():
        if spec.get("check"):
            c = spec["check"]
            seqs = c["ids"]
            out = forward(tensors(seqs))
            valid = np.concatenate([out.last_hidden_state[i, : len(s)].numpy() for i, s in enumerate(seqs)])
            with open(c["out"], "wb") as f:
                f.write(out.pooler_output.numpy().astype("<f4").tobytes())
                f.write(valid.astype("<f4").tobytes())

        for case in spec["cases"]:
            batch = tensors(case["ids"])
            times = []
            t0 = time.perf_counter()
            while True:
                s = time.perf_counter()
                forward(batch)
                times.append((time.perf_counter() - s) * 1e3)
                if time.perf_counter() - t0 >= 0.2:
                    break
            est = min(times)
            if est > t["long_ms"]:
                runs = 2
            else:
                runs = max(t["min_runs"], min(t["max_runs"], math.ceil(t["budget_ms"] / est)))
            times = []
            for _ in range(runs):
                s = time.perf_counter()
                forward(batch)
                times.append((time.perf_counter() - s) * 1e3)
            ms = statistics.median(times)
            print(json.dumps({"engine": "pytorch", "case": case["name"], "ms": round(ms, 3), "runs": runs,
                              "padded_tokens": int(batch[0].numel())}), flush=True)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss": {"peak_mb": round(peak, 1), "start_mb": round(rss_start, 1),
                              "load_peak_mb": round(load_peak, 1)}}), flush=True)


if __name__ == "__main__":
    main()
