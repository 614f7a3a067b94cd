#!/usr/bin/env python3
"""Parity fixtures for the native BERT graph, produced by Hugging Face transformers.

  .venv/bin/python scripts/gen_bert_fixtures.py            # (re)writes test/fixtures/bert-*/
  .venv/bin/python scripts/gen_bert_fixtures.py --check-roundtrip DIR --fixture test/fixtures/bert-a-cls
      loads a directory written by elmo's Bert::save with transformers and compares its outputs
      on the fixture inputs with the fixture's expected outputs.

Each fixture directory holds config.json + model.safetensors (save_pretrained), a trimmed
vocab.txt, and manifest.json describing a packed batch (ids, type_ids, offsets, mlm_positions)
and the expected outputs as little-endian f32 .bin files. Expected values are computed in
float64 from the stored weights (bf16/f16 fixtures: from the rounded values), one sequence at a
time without padding, so they are the exact answer the f32 graph is compared against.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = "/work/shared/data/bert_vocab/vocab.txt"
OUT = os.path.join(ROOT, "test", "fixtures")


def small_vocab(size):
    """Specials ([PAD], [unused*], [UNK], [CLS], [SEP], [MASK]), ASCII pieces, frequent words."""
    lines = open(VOCAB, encoding="utf-8").read().split("\n")
    keep = lines[:104]
    for tok in lines[999:1996]:
        core = tok[2:] if tok.startswith("##") else tok
        if len(core) == 1 and ord(core) < 128:
            keep.append(tok)
    i = 1996
    while len(keep) < size:
        keep.append(lines[i])
        i += 1
    return keep[:size]


def randomize(model, seed, std=0.2):
    """Every parameter non-trivial: weights and biases ~ N(0, std), LayerNorm gains ~ 1 + N(0, std)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32) * std
            if "LayerNorm.weight" in name:
                r += 1.0
            p.copy_(r)


def make_batch(vocab_size, type_vocab, seed):
    """Mixed lengths: a single-token sequence, a sentence pair with token types, longer ones."""
    rng = np.random.default_rng(seed)
    CLS, SEP = 101, 102
    seqs = []
    def words(n):
        return [int(x) for x in rng.integers(104, vocab_size, n)]
    seqs.append(([CLS] + words(5) + [SEP], None))
    seqs.append(([CLS], None))
    a, b = words(4), words(6)
    seqs.append(([CLS] + a + [SEP] + b + [SEP], [0] * (len(a) + 2) + [1] * (len(b) + 1)))
    seqs.append(([CLS] + words(21) + [SEP], None))
    seqs.append(([CLS] + words(1) + [SEP], None))
    ids, types, offsets = [], [], [0]
    for s, t in seqs:
        ids += s
        types += t if t is not None else [0] * len(s)
        offsets.append(len(ids))
    if type_vocab < 2:
        types = [0] * len(ids)
    return ids, types, offsets


def reference(model, ids, types, offsets, positions):
    """float64 outputs per sequence, packed back to [T, ...] rows."""
    m = model.to(torch.float64).eval()
    hidden, pooled, logits = [], [], []
    with torch.no_grad():
        for b in range(len(offsets) - 1):
            s, e = offsets[b], offsets[b + 1]
            x = torch.tensor([ids[s:e]])
            tt = torch.tensor([types[s:e]])
            out = m.bert(input_ids=x, token_type_ids=tt, attention_mask=torch.ones_like(x))
            hidden.append(out.last_hidden_state[0])
            if out.pooler_output is not None:
                pooled.append(out.pooler_output[0])
                if hasattr(m, "classifier"):
                    logits.append(m.classifier(out.pooler_output)[0])
        res = {"hidden": torch.cat(hidden)}
        if pooled:
            res["pooled"] = torch.stack(pooled)
        if logits:
            res["logits"] = torch.stack(logits)
        if hasattr(m, "cls"):
            res["mlm_logits"] = m.cls(res["hidden"][positions])
    return {k: v.numpy() for k, v in res.items()}


SPECS = [
    # name, config, head, storage dtype
    ("bert-a-cls", dict(hidden_size=96, num_attention_heads=3, intermediate_size=200, num_hidden_layers=3,
                        max_position_embeddings=64, type_vocab_size=2, num_labels=5,
                        problem_type="single_label_classification"), "cls", torch.float32),
    ("bert-b-mlm", dict(hidden_size=64, num_attention_heads=2, intermediate_size=130, num_hidden_layers=2,
                        max_position_embeddings=48, type_vocab_size=2), "mlm", torch.bfloat16),
    ("bert-b-multilabel", dict(hidden_size=64, num_attention_heads=2, intermediate_size=130, num_hidden_layers=2,
                               max_position_embeddings=40, type_vocab_size=1, num_labels=4,
                               problem_type="multi_label_classification"), "cls", torch.float16),
]
VOCAB_SIZE = 600


def generate():
    vocab = small_vocab(VOCAB_SIZE)
    for i, (name, cfg, head, dtype) in enumerate(SPECS):
        config = BertConfig(vocab_size=VOCAB_SIZE, hidden_act="gelu", layer_norm_eps=1e-12,
                            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **cfg)
        if head == "cls":
            n = cfg["num_labels"]
            config.id2label = {j: f"label_{chr(97 + j)}" for j in range(n)}
            config.label2id = {v: k for k, v in config.id2label.items()}
        torch.manual_seed(1000 + i)
        model = (BertForSequenceClassification if head == "cls" else BertForMaskedLM)(config)
        randomize(model, seed=2000 + i)
        model = model.to(dtype)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(vocab) + "\n")
        ids, types, offsets = make_batch(VOCAB_SIZE, cfg["type_vocab_size"], seed=3000 + i)
        positions = [0, 1, 7, 10, 12, len(ids) - 1] if head == "mlm" else []
        ref = reference(model, ids, types, offsets, positions)
        manifest = {"ids": ids, "type_ids": types, "offsets": offsets, "mlm_positions": positions,
                    "weights_dtype": str(dtype).replace("torch.", ""), "outputs": {}}
        for k, v in ref.items():
            v.astype("<f4").tofile(os.path.join(d, k + ".bin"))
            manifest["outputs"][k] = {"file": k + ".bin", "shape": list(v.shape)}
        with open(os.path.join(d, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        print(name, {k: v.shape for k, v in ref.items()}, "T =", len(ids))


def check_roundtrip(saved, fixture):
    """Loads elmo's saved directory with transformers; compares with the fixture's expectations."""
    cfg = json.load(open(os.path.join(saved, "config.json")))
    arch = (cfg.get("architectures") or ["BertModel"])[0]
    cls = {"BertForSequenceClassification": BertForSequenceClassification, "BertForMaskedLM": BertForMaskedLM}[arch]
    model, info = cls.from_pretrained(saved, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}  # missing/unexpected/mismatched keys, errors
    if problems:
        print("loading info:", problems)
        return 1
    man = json.load(open(os.path.join(fixture, "manifest.json")))
    ref = reference(model, man["ids"], man["type_ids"], man["offsets"], man["mlm_positions"])
    worst = 0.0
    for k, spec in man["outputs"].items():
        want = np.fromfile(os.path.join(fixture, spec["file"]), dtype="<f4").reshape(spec["shape"])
        got = ref[k]
        err = float(np.max(np.abs(got - want) / (1e-4 + np.abs(want))))
        worst = max(worst, err)
        print(f"{k}: shape {list(got.shape)} max |got-want|/(1e-4+|want|) = {err:.3g}")
    ok = worst < 1e-3
    print("round trip", "OK" if ok else "FAILED", f"({arch}, problem_type={model.config.problem_type})")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-roundtrip", metavar="DIR")
    ap.add_argument("--fixture", default=os.path.join(OUT, "bert-a-cls"))
    args = ap.parse_args()
    if args.check_roundtrip:
        sys.exit(check_roundtrip(args.check_roundtrip, args.fixture))
    generate()
