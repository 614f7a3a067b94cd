#!/usr/bin/env python3
"""Training parity fixtures for the joint task (intent + emotion + slots in one forward).

  .venv/bin/python scripts/gen_joint_fixtures.py        # (re)writes test/fixtures/train-joint*/

The reference model is transformers' BertForSequenceClassification (pooler + `classifier`, whose
first `joint_intents` columns are the intent head and the rest the emotion head) with one more
linear layer, `slot_classifier`, on every token's last hidden state: the layout elmo's ChatModel
saves. The loss is
    w_intent * CE(intent columns)            mean over sequences with an intent (-100 = none)
  + w_emotion * BCE-with-logits(emotions)    mean over rows x columns of sequences with emotions
  + w_slots * CE(slot logits)                mean over tagged tokens (-100 = ignored)
Variants: "train-joint" (hard intents, some rows without intent or emotions, slots) and
"train-joint-soft" (soft intent targets, as distillation gives them, with a row without them).

Files as in scripts/gen_train_fixtures.py (config.json, model.safetensors, vocab.txt,
grads.safetensors, after.safetensors, manifest.json); the manifest has "intents",
"intent_probs", "emotions" (rows of -1 = no emotions), "slots", "joint_intents" and
"loss_weights" instead of "labels".
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

from gen_bert_fixtures import randomize, small_vocab
from gen_train_fixtures import CLS, SEP, OPT, STEPS, VOCAB_SIZE, f32_dict, make_batch, param_groups
from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "fixtures")
LI, LE, S = 4, 3, 5  # intents, emotions, slot tags


class JointBert(BertForSequenceClassification):
    def __init__(self, config):
        super().__init__(config)
        self.slot_classifier = torch.nn.Linear(config.hidden_size, config.num_slot_labels)
        self.post_init()


def joint_logits(model, ids, types, offsets):
    """[B, L] sequence logits and [T, S] slot logits, one sequence at a time (no padding)."""
    seq, tok = [], []
    for b in range(len(offsets) - 1):
        s, e = offsets[b], offsets[b + 1]
        x = torch.tensor([ids[s:e]])
        out = model.bert(input_ids=x, token_type_ids=torch.tensor([types[s:e]]), attention_mask=torch.ones_like(x))
        seq.append(model.classifier(model.dropout(out.pooler_output))[0])
        tok.append(model.slot_classifier(model.dropout(out.last_hidden_state))[0])
    return torch.stack(seq), torch.cat(tok)


def joint_loss(seq, tok, labels, weights):
    intents, probs, emotions, slots = labels
    loss = torch.zeros((), dtype=torch.float64)
    if intents is not None:
        loss = loss + weights[0] * torch.nn.functional.cross_entropy(seq[:, :LI], intents, ignore_index=-100)
    if probs is not None:
        rows = probs[:, 0] >= 0
        logp = torch.log_softmax(seq[rows, :LI], dim=-1)
        loss = loss + weights[0] * -(probs[rows] * logp).sum(-1).mean()
    rows = emotions[:, 0] >= 0
    loss = loss + weights[1] * torch.nn.functional.binary_cross_entropy_with_logits(seq[rows, LI:], emotions[rows])
    if slots is not None:
        loss = loss + weights[2] * torch.nn.functional.cross_entropy(tok, slots, ignore_index=-100)
    return loss


def generate():
    vocab = small_vocab(VOCAB_SIZE)
    for i, (name, soft, weights) in enumerate((("train-joint", False, [1.0, 0.5, 2.0]),
                                              ("train-joint-soft", True, [1.5, 1.0, 1.0]))):
        labels_all = [f"intent:{j}" for j in range(LI)] + [f"emotion:{j}" for j in range(LE)]
        config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=48, num_attention_heads=3, intermediate_size=100,
                            num_hidden_layers=2, max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12,
                            hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            classifier_dropout=None, num_labels=LI + LE,
                            id2label=dict(enumerate(labels_all)), label2id={l: j for j, l in enumerate(labels_all)},
                            num_slot_labels=S)
        torch.manual_seed(7000 + i)
        model = JointBert(config)
        randomize(model, seed=7100 + i, std=0.05)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(vocab) + "\n")

        rng = np.random.default_rng(7200 + i)
        ids, types, offsets = make_batch(rng)
        B, T = len(offsets) - 1, len(ids)
        intents = [int(x) for x in rng.integers(0, LI, B)]
        intents[1] = -100  # a sequence without an intent
        probs = rng.dirichlet(np.ones(LI), B).astype(np.float32).astype(np.float64)
        probs /= probs.sum(-1, keepdims=True)
        probs[3, :] = -1  # a row without soft targets
        emotions = rng.integers(0, 2, (B, LE)).astype(float)
        emotions[0, :] = [1, 0, 1]
        emotions[2, :] = -1  # a sequence without emotion labels
        slots = [int(x) for x in rng.integers(0, S, T)]
        for t in range(T):
            if ids[t] in (CLS, SEP):
                slots[t] = -100
        y = (None if soft else torch.tensor(intents),
             torch.tensor(probs) if soft else None,
             torch.tensor(emotions),
             torch.tensor(slots))

        model = model.double().train()
        opt = torch.optim.AdamW(param_groups(model), lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]), eps=OPT["eps"])
        sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=OPT["warmup_steps"],
                                                num_training_steps=OPT["total_steps"])
        params = list(model.parameters())
        losses, norms, lrs, grads, max_norm = [], [], [], None, None
        for step in range(STEPS):
            opt.zero_grad()
            seq, tok = joint_logits(model, ids, types, offsets)
            loss = joint_loss(seq, tok, y, weights)
            loss.backward()
            if step == 0:
                grads = f32_dict((n, p.grad) for n, p in model.named_parameters())
                max_norm = 0.5 * torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()
            norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm).item())
            losses.append(loss.item())
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        save_file(grads, os.path.join(d, "grads.safetensors"))
        save_file(f32_dict(model.named_parameters()), os.path.join(d, "after.safetensors"))
        manifest = {"task": "joint", "joint_intents": LI, "loss_weights": weights,
                    "ids": ids, "type_ids": types, "offsets": offsets,
                    "intents": None if soft else intents,
                    "intent_probs": [float(x) for x in probs.reshape(-1)] if soft else None,
                    "emotions": [float(x) for x in emotions.reshape(-1)],
                    "slots": slots,
                    "optimizer": dict(OPT, max_grad_norm=max_norm),
                    "steps": STEPS, "losses": losses, "grad_norms": norms, "lrs": lrs}
        with open(os.path.join(d, "manifest.json"), "w") as f:
            f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items()) + "\n}\n")
        print(f"{name}: T={T} B={B} losses {' '.join(f'{x:.8g}' for x in losses)}")


if __name__ == "__main__":
    generate()
