#!/usr/bin/env python3
"""PyTorch side of bench/accuracy.js: the same fine-tuning recipe with transformers.

BertForSequenceClassification of the named size from random init, the bert-base-uncased
vocabulary (BertTokenizerFast), AdamW (weight decay 0.01 except biases and LayerNorm), linear
decay after a 6 % warmup, clipping at 1, dropout 0.1, batches of 32 shuffled every epoch and
padded to their longest sequence. Prints one JSON line: accuracy and macro-F1 on the test split
(sklearn), training wall time and sequences per second.
"""
import argparse
import csv
import json
import math
import random
import time

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup

CONFIGS = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def main():
    ap = argparse.ArgumentParser()
    for k, d in [("data", None), ("vocab", None), ("config", "mini"), ("lr", 1e-3), ("epochs", 5), ("batch", 32),
                 ("max-seq-len", 64), ("seed", 42), ("threads", 2)]:
        ap.add_argument(f"--{k}", default=d)
    a = ap.parse_args()
    torch.set_num_threads(int(a.threads))
    torch.manual_seed(int(a.seed))
    random.seed(int(a.seed))
    tok = BertTokenizerFast(vocab=a.vocab, do_lower_case=True)
    xtr, ytr = read(f"{a.data}/train.csv")
    xte, yte = read(f"{a.data}/test.csv")
    labels = sorted(set(ytr))
    lid = {l: i for i, l in enumerate(labels)}
    cfg = BertConfig(vocab_size=tok.vocab_size, max_position_embeddings=512, type_vocab_size=2,
                     num_labels=len(labels), hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                     **CONFIGS[a.config])
    model = BertForSequenceClassification(cfg)
    L = int(a.max_seq_len)
    enc_tr = tok(xtr, truncation=True, max_length=L)["input_ids"]
    enc_te = tok(xte, truncation=True, max_length=L)["input_ids"]
    B, E = int(a.batch), int(a.epochs)
    steps = E * math.ceil(len(enc_tr) / B)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=float(a.lr), betas=(0.9, 0.999), eps=1e-8)
    sched = get_linear_schedule_with_warmup(opt, round(0.06 * steps), steps)

    def pad(batch_ids):
        n = max(len(x) for x in batch_ids)
        ids = torch.zeros(len(batch_ids), n, dtype=torch.long)
        mask = torch.zeros(len(batch_ids), n, dtype=torch.long)
        for i, x in enumerate(batch_ids):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        return ids, mask

    t0 = time.perf_counter()
    model.train()
    for e in range(E):
        order = list(range(len(enc_tr)))
        random.shuffle(order)
        for s in range(0, len(order), B):
            idx = order[s:s + B]
            ids, mask = pad([enc_tr[i] for i in idx])
            y = torch.tensor([lid[ytr[i]] for i in idx])
            out = model(input_ids=ids, attention_mask=mask, labels=y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        print(f"  pytorch epoch {e + 1}/{E} loss {out.loss.item():.3f}", file=__import__("sys").stderr)
    train_s = time.perf_counter() - t0
    model.eval()
    pred = []
    with torch.inference_mode():
        for s in range(0, len(enc_te), 64):
            ids, mask = pad(enc_te[s:s + 64])
            pred += model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
    yt = [lid[y] for y in yte]
    print(json.dumps({"engine": "pytorch", "torch": torch.__version__, "trainSeconds": train_s, "steps": steps,
                      "finalTrainLoss": float(out.loss.item()), "accuracy": accuracy_score(yt, pred),
                      "macroF1": f1_score(yt, pred, average="macro", labels=list(range(len(labels))), zero_division=0),
                      "sequencesPerSecond": E * len(enc_tr) / train_s}))


if __name__ == "__main__":
    main()
