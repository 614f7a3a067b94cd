"""PyTorch baseline for BERT inference on a GPU: Hugging Face BertModel, eager, bf16, SDPA.

Prints one JSON row per configuration, in the row format of the native bench_bert:
  {"bench": "torch_bert", "model": "base", "batch": 1, "seq": 128, "seq_per_s": ..., "ms": ...}
"chat" rows use a batch of uneven lengths (5-60 tokens; the same generator and seed as the
native bench_bert), padded to the longest as BertModel needs; elmo-chat packs the same batch.
"""
import json
import sys

import torch
from transformers import BertConfig, BertModel

MODELS = {
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}
ROWS = [("base", 1, 128), ("base", 32, 128), ("base", 256, 128), ("base", 256, "chat"), ("mini", 256, 128),
        ("small", 256, 128)]


def chat_lengths(batch, seed=12345):
    """64-bit LCG, as bench_bert draws the chat batch."""
    s, out = seed, []
    for _ in range(batch):
        s = (s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(5 + (s >> 33) % 56)
    return out


def time_cuda(fn, warmup=5, iters=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def main():
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "torch_bert", "skipped": "no CUDA device"}))
        return
    torch.manual_seed(0)
    cache = {}
    for name, batch, seq in ROWS:
        if name not in cache:
            cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, attn_implementation="sdpa",
                             **MODELS[name])
            cache[name] = BertModel(cfg, add_pooling_layer=True).cuda().to(torch.bfloat16).eval()
        model = cache[name]
        if seq == "chat":
            lens = chat_lengths(batch)
            S = max(lens)
            ids = torch.randint(1000, 30000, (batch, S), device="cuda")
            mask = torch.zeros(batch, S, dtype=torch.long, device="cuda")
            for i, l in enumerate(lens):
                mask[i, :l] = 1
            tokens = sum(lens)
        else:
            ids = torch.randint(1000, 30000, (batch, seq), device="cuda")
            mask = torch.ones_like(ids)
            tokens = batch * seq
        with torch.inference_mode():
            ms = time_cuda(lambda: model(input_ids=ids, attention_mask=mask))
        print(json.dumps({"bench": "torch_bert", "model": name, "batch": batch, "seq": seq, "dtype": "bf16",
                          "ms": round(ms, 4), "seq_per_s": round(batch / ms * 1e3, 1),
                          "tokens_per_s": round(tokens / ms * 1e3, 1)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
