#!/usr/bin/env python3
"""Checks that transformers 5 loads a checkpoint elmo pruned (elmo prune) and answers as elmo does.

    .venv/bin/python scripts/check_pruned_hf.py DIR ELMO_JSONL

DIR: the pruned checkpoint (config.json with a smaller intermediate_size and/or
"elmo_pruned_heads", model.safetensors, tokenizer files). ELMO_JSONL: what
`elmo predict --model DIR --json --text ... > ELMO_JSONL` printed for some texts (one JSON line per
text with "scores": {label: probability}). The script loads DIR with BertForSequenceClassification
(no missing or unexpected weight allowed), checks that config.json has no `pruned_heads` and that
every head listed under elmo_pruned_heads is zero in the loaded weights (query, key and value rows
and biases, attention-output columns), runs the texts, and compares transformers' softmax with
elmo's. Prints the largest difference; exit status 1 above 1e-4 or on any other failure.
"""
import json
import sys

import torch
from transformers import AutoTokenizer, BertForSequenceClassification


def main(model_dir, elmo_jsonl):
    rows = [json.loads(line) for line in open(elmo_jsonl) if line.strip()]
    cfg = json.load(open(f"{model_dir}/config.json"))
    ok = True
    if "pruned_heads" in cfg:
        print("config.json has pruned_heads: transformers 4 would prune full-size tensors")
        ok = False
    model, info = BertForSequenceClassification.from_pretrained(model_dir, output_loading_info=True)
    model.eval()
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"loading problems: {problems}")
        ok = False
    c = model.config
    pruned = cfg.get("elmo_pruned_heads", {})
    d = c.hidden_size // c.num_attention_heads
    print(
        f"{sum(p.numel() for p in model.parameters())} parameters; intermediate_size {c.intermediate_size}; "
        f"{sum(len(h) for h in pruned.values())} of {c.num_hidden_layers * c.num_attention_heads} heads pruned: {pruned}"
    )
    with torch.no_grad():
        for layer, heads in pruned.items():
            att = model.bert.encoder.layer[int(layer)].attention
            for h in heads:
                rows_ = slice(h * d, (h + 1) * d)
                parts = [att.self.query, att.self.key, att.self.value]
                left = max(float(p.weight[rows_].abs().max()) for p in parts)
                left = max(left, max(float(p.bias[rows_].abs().max()) for p in parts))
                left = max(left, float(att.output.dense.weight[:, rows_].abs().max()))
                if left != 0.0:
                    print(f"layer {layer} head {h}: weights not zero (max |w| {left:.3g})")
                    ok = False
    tok = AutoTokenizer.from_pretrained(model_dir)
    labels = [c.id2label[i] for i in range(c.num_labels)]
    worst = 0.0
    agree = 0
    with torch.no_grad():
        for r in rows:
            enc = tok(r["text"], r["pair"], return_tensors="pt") if "pair" in r else tok(r["text"], return_tensors="pt")
            p = torch.softmax(model(**enc).logits[0], -1)
            q = torch.tensor([r["scores"][name] for name in labels])
            worst = max(worst, float((p - q).abs().max()))
            agree += labels[int(p.argmax())] == r["label"]
    print(f"{len(rows)} texts: same label {agree}/{len(rows)}, largest probability difference {worst:.2e}")
    return 0 if ok and worst <= 1e-4 and agree == len(rows) else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
