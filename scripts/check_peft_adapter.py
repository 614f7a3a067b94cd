#!/usr/bin/env python3
"""Checks that peft loads a LoRA adapter elmo saved (ChatModel.saveAdapter) and answers as elmo did.

  .venv/bin/python scripts/check_peft_adapter.py BASE_DIR ADAPTER_DIR ELMO_JSON

BASE_DIR: a chat model directory (elmo's ChatModel.save) before the adapter; ADAPTER_DIR: what
saveAdapter wrote; ELMO_JSON: {"texts", "intents", "probs": [[...]], "emotion": [[...]]}, elmo's
intent softmax and emotion sigmoids for the texts with the adapter active. The base is loaded as
BertForSequenceClassification plus the chat model's slot classifier (a Linear on the last hidden
state), the adapter with PeftModel.from_pretrained; the script prints the largest difference of the
probabilities and exits 1 above 1e-4.
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoTokenizer, BertForSequenceClassification


class ChatBert(BertForSequenceClassification):
    def __init__(self, config):
        super().__init__(config)
        if getattr(config, "num_slot_labels", 0):
            self.slot_classifier = torch.nn.Linear(config.hidden_size, config.num_slot_labels)
        self.post_init()


def main(base, adapter, elmo_json):
    ref = json.load(open(elmo_json))
    model, info = ChatBert.from_pretrained(base, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, problems
    model = PeftModel.from_pretrained(model, adapter).eval()
    tok = AutoTokenizer.from_pretrained(base)
    li = len(ref["intents"])
    worst = 0.0
    with torch.no_grad():
        for text, probs, emotion in zip(ref["texts"], ref["probs"], ref["emotion"]):
            enc = tok(text, return_tensors="pt")
            logits = model(**enc).logits[0]
            p = torch.softmax(logits[:li], -1)
            e = torch.sigmoid(logits[li:])
            worst = max(worst, (p - torch.tensor(probs)).abs().max().item())
            if len(emotion):
                worst = max(worst, (e - torch.tensor(emotion)).abs().max().item())
            print(f"{text!r}: peft {p.numpy().round(4)}  elmo {torch.tensor(probs).numpy().round(4)}")
    print(f"largest difference {worst:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
