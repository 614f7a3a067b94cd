#!/usr/bin/env python3
"""Training parity fixture for LoRA adapters, produced by PyTorch + transformers + peft.

  .venv/bin/python scripts/gen_lora_fixtures.py        # (re)writes test/fixtures/train-lora/

A BertForSequenceClassification (5 labels) wrapped by peft's LoRA (r=4, alpha=8, query and value,
dropout 0, the classifier in modules_to_save: peft's SEQ_CLS defaults), trained 5 AdamW steps on
one packed batch; everything else frozen. Files:
  config.json, model.safetensors, vocab.txt  the base model (save_pretrained, f32)
  adapter_initial.safetensors                the adapter before training, peft's names
                                             (B set non-zero so that A gets a gradient at step 1)
  grads.safetensors                          the trainable parameters' gradients at step 1
  after.safetensors                          the trainable parameters after the 5 steps
  adapter/                                   the trained adapter as peft saves it
  manifest.json                              batch, labels, optimizer, per-step loss / norm / lr
Names in grads/after are peft's without "base_model.model." and without the adapter name
("...query.lora_A.weight", "classifier.weight").
"""
import json
import os

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

from gen_bert_fixtures import randomize, small_vocab
from gen_train_fixtures import OPT, STEPS, VOCAB_SIZE, make_batch, packed_logits
from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "fixtures", "train-lora")
R, ALPHA, LABELS = 4, 8, 5


def clean(name):
    return (name.replace("base_model.model.", "").replace(".default", "")
            .replace("classifier.modules_to_save.", "classifier."))


def main():
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=48, num_attention_heads=3, intermediate_size=100,
                        num_hidden_layers=2, max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12,
                        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        classifier_dropout=None, num_labels=LABELS,
                        id2label={j: f"label_{j}" for j in range(LABELS)},
                        label2id={f"label_{j}": j for j in range(LABELS)})
    torch.manual_seed(8000)
    model = BertForSequenceClassification(config)
    randomize(model, seed=8100, std=0.05)
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    with open(os.path.join(OUT, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(small_vocab(VOCAB_SIZE)) + "\n")

    peft_model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["query", "value"],
                                                  lora_dropout=0.0, task_type="SEQ_CLS"))
    g = torch.Generator().manual_seed(8200)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:  # non-zero, so that A has a gradient from the first step
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    trainable = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    initial = {clean(n): p.detach().float().contiguous().clone() for n, p in trainable if "lora_" in n}
    save_file(initial, os.path.join(OUT, "adapter_initial.safetensors"))

    rng = np.random.default_rng(8300)
    ids, types, offsets = make_batch(rng)
    labels = [int(x) for x in rng.integers(0, LABELS, len(offsets) - 1)]
    y = torch.tensor(labels)
    peft_model = peft_model.double().train()
    params = [p for _, p in trainable]
    decay = [p for n, p in trainable if not n.endswith("bias")]
    no_decay = [p for n, p in trainable if n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPT["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]), eps=OPT["eps"])
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=OPT["warmup_steps"],
                                            num_training_steps=OPT["total_steps"])
    losses, norms, lrs, grads, max_norm = [], [], [], None, None
    for step in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(packed_logits(peft_model, ids, types, offsets, False), y)
        loss.backward()
        if step == 0:
            grads = {clean(n): p.grad.detach().float().contiguous().clone() for n, p in trainable}
            max_norm = 0.5 * torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()
        norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm).item())
        losses.append(loss.item())
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    save_file(grads, os.path.join(OUT, "grads.safetensors"))
    save_file({clean(n): p.detach().float().contiguous().clone() for n, p in trainable},
              os.path.join(OUT, "after.safetensors"))
    peft_model.float().save_pretrained(os.path.join(OUT, "adapter"))
    os.remove(os.path.join(OUT, "adapter", "README.md"))  # peft's model-card template
    manifest = {"task": "seq", "lora": {"r": R, "alpha": ALPHA}, "num_labels": LABELS,
                "ids": ids, "type_ids": types, "offsets": offsets, "labels": labels,
                "optimizer": dict(OPT, max_grad_norm=max_norm),
                "steps": STEPS, "losses": losses, "grad_norms": norms, "lrs": lrs}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items()) + "\n}\n")
    print(f"train-lora: trainable {sum(p.numel() for p in params)}, losses {' '.join(f'{x:.8g}' for x in losses)}")


if __name__ == "__main__":
    main()
