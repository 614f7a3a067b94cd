#!/usr/bin/env python3
"""Training parity fixtures for the native BERT trainer, produced by PyTorch + transformers.

  .venv/bin/python scripts/gen_train_fixtures.py          # (re)writes test/fixtures/train-*/

One directory per task (seq, multilabel, regression, token, mlm), each holding:
  config.json, model.safetensors  initial weights (save_pretrained, f32), written before training
  vocab.txt                       600-token vocabulary (same trim as scripts/gen_bert_fixtures.py)
  grads.safetensors               gradient of every parameter at step 1, before clipping, f32
  after.safetensors               every parameter after all steps, f32
  manifest.json                   the packed batch, labels, optimizer settings and per-step
                                  loss / pre-clip grad norm / learning rate

Tensors in grads/after are keyed by model.named_parameters() names; a tied parameter appears once
(mlm: the decoder weight is bert.embeddings.word_embeddings.weight and the decoder bias is
cls.predictions.bias). The reference runs in float64, one sequence at a time without padding;
logits of all sequences are concatenated and the loss is applied once, which equals the loss HF
computes on the padded batch. Training: AdamW with decay / no-decay groups, linear warmup
schedule, clip_grad_norm_ before each step, the same batch every step.
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

from gen_bert_fixtures import randomize, small_vocab  # shared with the inference fixtures
from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification,
                          BertForTokenClassification, get_linear_schedule_with_warmup)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "fixtures")
VOCAB_SIZE = 600
CLS, SEP, MASK, PAD = 101, 102, 103, 0

OPT = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01,
       "warmup_steps": 2, "total_steps": 5, "schedule": "linear"}
STEPS = 5

TASKS = [
    # name, head class, num_labels, problem_type
    ("seq", BertForSequenceClassification, 5, "single_label_classification"),
    ("multilabel", BertForSequenceClassification, 4, "multi_label_classification"),
    ("regression", BertForSequenceClassification, 1, "regression"),
    ("token", BertForTokenClassification, 7, None),
    ("mlm", BertForMaskedLM, None, None),
]


def make_batch(rng):
    """Packed batch of 5: [CLS] alone, 7 tokens, a 12-token sentence pair, 23 tokens, 3 tokens."""
    def words(n):
        return [int(x) for x in rng.integers(104, VOCAB_SIZE, n)]
    seqs = [([CLS], None), ([CLS] + words(5) + [SEP], None)]
    a, b = words(4), words(5)
    seqs.append(([CLS] + a + [SEP] + b + [SEP], [0] * (len(a) + 2) + [1] * (len(b) + 1)))
    seqs.append(([CLS] + words(21) + [SEP], None))
    seqs.append(([CLS] + words(1) + [SEP], None))
    ids, types, offsets = [], [], [0]
    for s, t in seqs:
        ids += s
        types += t if t is not None else [0] * len(s)
        offsets.append(len(ids))
    return ids, types, offsets


def make_labels(task, num_labels, ids, offsets, rng):
    """Labels in HF conventions (flat list for the manifest, tensor for the loss). May edit ids (mlm)."""
    B, T = len(offsets) - 1, len(ids)
    special = [i for i, x in enumerate(ids) if x in (CLS, SEP)]
    words = [i for i in range(T) if i not in special]
    if task == "seq":
        lab = [int(x) for x in rng.integers(0, num_labels, B)]
        return lab, torch.tensor(lab)
    if task == "multilabel":
        lab = rng.integers(0, 2, (B, num_labels)).astype(float)
        lab[0, :] = [1, 0, 1, 0]  # at least one row with mixed labels whatever the draw
        return [float(x) for x in lab.reshape(-1)], torch.tensor(lab, dtype=torch.float64)
    if task == "regression":
        lab = [float(np.round(x * 16) / 16) for x in rng.normal(0, 1.5, B)]  # exact in f32
        return lab, torch.tensor(lab, dtype=torch.float64)
    if task == "token":
        lab = [int(x) for x in rng.integers(0, num_labels, T)]
        for i in special:
            lab[i] = -100
        for i in rng.choice(words, 3, replace=False):
            lab[int(i)] = -100
        return lab, torch.tensor(lab)
    if task == "mlm":
        # six labelled word positions spread over the 7-token, pair, 23-token and 3-token sequences
        seq_of = np.searchsorted(offsets, np.arange(T), side="right") - 1
        pick = []
        for b, n in ((1, 1), (2, 2), (3, 2), (4, 1)):
            cand = [i for i in words if seq_of[i] == b]
            pick += [int(i) for i in rng.choice(cand, n, replace=False)]
        pick.sort()
        lab = [-100] * T
        for i in pick:
            lab[i] = int(rng.integers(104, VOCAB_SIZE))
        for i in pick[:2] + pick[3:5]:  # four positions masked, two keep their (corrupted) input id
            ids[i] = MASK
        # the pad id once as an ordinary, unlabelled token in the 23-token sequence
        pad_pos = next(i for i in words if seq_of[i] == 3 and lab[i] == -100)
        ids[pad_pos] = PAD
        return lab, torch.tensor(lab)
    raise ValueError(task)


def packed_logits(model, ids, types, offsets, per_token):
    """Logits per sequence (no padding, mask of ones), concatenated: [B, L] or [T, L]."""
    out = []
    for b in range(len(offsets) - 1):
        s, e = offsets[b], offsets[b + 1]
        x = torch.tensor([ids[s:e]])
        tt = torch.tensor([types[s:e]])
        lg = model(input_ids=x, token_type_ids=tt, attention_mask=torch.ones_like(x)).logits
        out.append(lg[0])
    return torch.cat(out) if per_token else torch.stack(out)


def loss_fn(task, logits, labels):
    if task in ("seq", "token", "mlm"):
        return torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
    if task == "multilabel":
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    if task == "regression":
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels)
    raise ValueError(task)


def param_groups(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": OPT["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0}]


def f32_dict(pairs):
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in pairs}


def generate():
    vocab = small_vocab(VOCAB_SIZE)
    total = 0
    for i, (task, cls, num_labels, problem_type) in enumerate(TASKS):
        kw = dict(vocab_size=VOCAB_SIZE, hidden_size=48, num_attention_heads=3, intermediate_size=100,
                  num_hidden_layers=2, max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12,
                  hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  classifier_dropout=None)
        if num_labels is not None:
            kw.update(num_labels=num_labels, id2label={j: f"label_{j}" for j in range(num_labels)},
                      label2id={f"label_{j}": j for j in range(num_labels)})
        if problem_type:
            kw["problem_type"] = problem_type
        config = BertConfig(**kw)
        torch.manual_seed(4000 + i)
        model = cls(config)
        randomize(model, seed=5000 + i, std=0.05)
        if task == "mlm":
            assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
        d = os.path.join(OUT, f"train-{task}")
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(vocab) + "\n")
        # the saved directory loads back with nothing missing or unexpected, and equal weights
        back, info = cls.from_pretrained(d, output_loading_info=True)
        problems = {k: v for k, v in info.items() if v}
        assert not problems, (task, problems)
        for (n1, p1), (n2, p2) in zip(model.named_parameters(), back.named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2), (task, n1)

        rng = np.random.default_rng(6000 + i)
        ids, types, offsets = make_batch(rng)
        labels, y = make_labels(task, num_labels, ids, offsets, rng)
        per_token = task in ("token", "mlm")

        model = model.double().train()
        opt = torch.optim.AdamW(param_groups(model), lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]),
                                eps=OPT["eps"])
        sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=OPT["warmup_steps"],
                                                num_training_steps=OPT["total_steps"])
        params = list(model.parameters())
        losses, norms, lrs = [], [], []
        max_norm = None
        grads = None
        for step in range(STEPS):
            opt.zero_grad()
            loss = loss_fn(task, packed_logits(model, ids, types, offsets, per_token), y)
            loss.backward()
            if step == 0:
                grads = f32_dict((n, p.grad) for n, p in model.named_parameters())
                key_bias = max(p.grad.abs().max().item() for n, p in model.named_parameters()
                               if n.endswith("attention.self.key.bias"))
                pad_row = model.bert.embeddings.word_embeddings.weight.grad[PAD].abs().max().item()
                max_norm = 0.5 * torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            losses.append(loss.item())
            norms.append(norm.item())
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()

        save_file(grads, os.path.join(d, "grads.safetensors"))
        save_file(f32_dict(model.named_parameters()), os.path.join(d, "after.safetensors"))
        manifest = {"task": task, "num_labels": num_labels if num_labels is not None else VOCAB_SIZE,
                    "ids": ids, "type_ids": types, "offsets": offsets, "labels": labels,
                    "optimizer": dict(OPT, max_grad_norm=max_norm),
                    "steps": STEPS, "losses": losses, "grad_norms": norms, "lrs": lrs}
        with open(os.path.join(d, "manifest.json"), "w") as f:  # one key a line, lists inline
            f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items()) + "\n}\n")
        size = sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d))
        total += size
        print(f"train-{task}: T={len(ids)} B={len(offsets) - 1} params={sum(p.numel() for p in params)} "
              f"max_grad_norm={max_norm:.6g} size={size / 1024:.0f} KiB")
        print("  losses     ", " ".join(f"{x:.8g}" for x in losses))
        print("  grad_norms ", " ".join(f"{x:.8g}" for x in norms))
        print("  lrs        ", " ".join(f"{x:.6g}" for x in lrs))
        print(f"  max |grad| attention.self.key.bias: {key_bias:.3g}   "
              f"max |grad| word_embeddings row {PAD}: {pad_row:.3g}")
    print(f"total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    generate()
