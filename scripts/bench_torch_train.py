#!/usr/bin/env python3
"""PyTorch side of the training benchmark: transformers BertForSequenceClassification training steps.

  .venv/bin/python scripts/bench_torch_train.py --config tiny --batch 32 --seq 32 --steps 10 --warmup 2
  .venv/bin/python scripts/bench_torch_train.py --config mini --lengths batches.json --steps 20
  .venv/bin/python scripts/bench_torch_train.py --config mini --mlm batch.json --steps 5

Model: a randomly initialised BERT (tiny 2/128/2/512, mini 4/256/4/1024, small 4/512/8/2048,
base 12/768/12/3072 = layers/hidden/heads/ffn; vocab 30522, 512 positions) with a
single-label classification head of --num-labels labels, default dropout (0.1), fp32,
transformers' default attention. AdamW (lr 1e-4, torch defaults otherwise).

Batches: --batch B --seq S gives one fixed [B, S] batch of random ids (attention mask of ones).
--lengths FILE reads a JSON list of batches, each a list of sequence lengths; every batch is
padded to its longest sequence with zeros in the attention mask on the padding, and the steps
cycle through the batches (the timed steps start again at the first batch). Inputs and labels
are built before timing.

--mlm FILE: masked-LM steps with transformers BertForMaskedLM instead (no pooler; the decoder
tied to the word embeddings, transformers' default) on the one batch of FILE, JSON
{"ids": [T], "offsets": [B+1], "labels": [T]} (packed, labels -100 where no loss is taken), as
bench/train.js --task mlm writes it; sequences are padded to the longest with attention mask 0
and label -100. The model computes the MLM head and the loss's softmax on every position (only
the labelled ones reach the loss): that is what users of BertForMaskedLM get.

One step = forward + loss + backward + clip_grad_norm_(1.0) + optimizer.step + zero_grad, timed
with time.perf_counter. The first --warmup steps are dropped. Prints one JSON line on stdout:
secPerStep is the median step time; seqPerSec and tokensPerSec are the medians of the per-step
rates (sequences and real, unpadded tokens of that step's batch over its time), which for a fixed
batch equal B / secPerStep and B*S / secPerStep. peakRssMb is ru_maxrss of this process.
"""
import argparse
import json
import resource
import statistics
import sys
import time

CONFIGS = {  # layers, hidden, heads, intermediate
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--lengths", metavar="FILE", help="JSON list of batches, each a list of sequence lengths")
    ap.add_argument("--mlm", metavar="FILE", help="masked LM on the batch of FILE: JSON {ids, offsets, labels}")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-labels", type=int, default=77)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be at least 1")

    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)

    mlm = None
    if args.mlm:
        mlm = json.load(open(args.mlm))
        off = mlm["offsets"]
        if len(off) < 2 or len(mlm["ids"]) != off[-1] or len(mlm["labels"]) != off[-1]:
            ap.error("--mlm: expected ids and labels of offsets[-1] tokens each")
        batches_len = [[off[i + 1] - off[i] for i in range(len(off) - 1)]]
    elif args.lengths:
        batches_len = json.load(open(args.lengths))
        if not batches_len or not all(batches_len) or min(min(b) for b in batches_len) < 1:
            ap.error("--lengths: expected a non-empty list of non-empty lists of positive lengths")
    else:
        batches_len = [[args.seq] * args.batch]
    if max(max(b) for b in batches_len) > 512:
        ap.error("sequences longer than 512 positions")

    layers, hidden, heads, ffn = CONFIGS[args.config]
    if mlm:
        config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=512)
        model = BertForMaskedLM(config).train()
        if model.cls.predictions.decoder.weight is not model.bert.embeddings.word_embeddings.weight:
            sys.exit("BertForMaskedLM: the decoder is not tied to the word embeddings")
    else:
        config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=512,
                            num_labels=args.num_labels, problem_type="single_label_classification")
        model = BertForSequenceClassification(config).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)

    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = []
    if mlm:
        lens = batches_len[0]
        B, S = len(lens), max(lens)
        ids = torch.zeros(B, S, dtype=torch.int64)
        mask = torch.zeros(B, S, dtype=torch.int64)
        labels = torch.full((B, S), -100, dtype=torch.int64)
        for i, n in enumerate(lens):
            a = mlm["offsets"][i]
            ids[i, :n] = torch.tensor(mlm["ids"][a:a + n])
            labels[i, :n] = torch.tensor(mlm["labels"][a:a + n])
            mask[i, :n] = 1
        batches.append(dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                            labels=labels, n_seq=B, n_tok=sum(lens), n_pad=B * S))
    else:
        for lens in batches_len:
            B, S = len(lens), max(lens)
            ids = torch.zeros(B, S, dtype=torch.int64)
            mask = torch.zeros(B, S, dtype=torch.int64)
            for i, n in enumerate(lens):
                ids[i, :n] = torch.randint(1000, config.vocab_size, (n,), generator=gen)
                ids[i, 0] = 101
                mask[i, :n] = 1
            labels = torch.randint(0, args.num_labels, (B,), generator=gen)
            batches.append(dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                                labels=labels, n_seq=B, n_tok=sum(lens), n_pad=B * S))

    def step(b):
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                    token_type_ids=b["token_type_ids"], labels=b["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return out.loss.item()

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    times, seq_rates, tok_rates, losses = [], [], [], []
    for i in range(args.steps):
        b = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = step(b)
        dt = time.perf_counter() - t0
        times.append(dt)
        seq_rates.append(b["n_seq"] / dt)
        tok_rates.append(b["n_tok"] / dt)
        losses.append(loss)

    timed = [batches[i % len(batches)] for i in range(args.steps)]
    real_tok = sum(b["n_tok"] for b in timed)
    pad_tok = sum(b["n_pad"] for b in timed)
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads, attention "
          f"{model.config._attn_implementation}, {sum(p.numel() for p in params)} params, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}", file=sys.stderr)
    row = {
        "engine": "pytorch",
        "torch": torch.__version__,
        "config": args.config,
        "batch": args.batch if not args.lengths else round(sum(b["n_seq"] for b in timed) / len(timed), 2),
        "seq": args.seq if not args.lengths else round(real_tok / sum(b["n_seq"] for b in timed), 2),
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "task": "mlm" if mlm else "sequence",
        "numLabels": None if mlm else args.num_labels,
        "seqPerSec": statistics.median(seq_rates),
        "tokensPerSec": statistics.median(tok_rates),
        "secPerStep": statistics.median(times),
        "meanSecPerStep": sum(times) / len(times),
        "paddingFraction": 1 - real_tok / pad_tok,
        "peakRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "lossFirst": losses[0],
        "lossLast": losses[-1],
    }
    if mlm:
        row["maskedPerStep"] = int((batches[0]["labels"] != -100).sum())
    if args.lengths:
        row["lengths"] = args.lengths
        row["batches"] = len(batches)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
