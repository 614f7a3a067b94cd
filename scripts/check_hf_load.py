"""Checks that transformers loads a directory elmo saved, as a user would.

    .venv/bin/python scripts/check_hf_load.py DIR [--texts "a" "b" ...] [--elmo-ids FILE]

Loads the tokenizer with AutoTokenizer and the model with the class of its config's
`architectures` (BertForMaskedLM, BertForSequenceClassification, ...), prints the weights
transformers reported missing or unexpected, and for --elmo-ids (a JSON list of id lists, one per
text, from elmo's tokenizer) whether the ids are the same. With a classification head, prints
the predicted label of each text. Exit status 1 on any missing weight or id mismatch.
"""

import argparse
import json
import sys

import torch
import transformers
from transformers import AutoTokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--texts", nargs="*", default=["where is my parcel?", "I can't log into my account!!"])
    ap.add_argument("--elmo-ids", help="JSON file: elmo's ids for --texts")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.dir)
    with open(f"{args.dir}/config.json") as f:
        arch = json.load(f)["architectures"][0]
    cls = getattr(transformers, arch)
    model, info = cls.from_pretrained(args.dir, output_loading_info=True)
    model.eval()
    ok = True
    print(f"{arch}: {sum(p.numel() for p in model.parameters())} parameters, tokenizer {type(tok).__name__}")
    print(f"  missing: {info['missing_keys']}  unexpected: {info['unexpected_keys']}")
    if info["missing_keys"]:
        ok = False
    ids = [tok(t)["input_ids"] for t in args.texts]
    if args.elmo_ids:
        with open(args.elmo_ids) as f:
            elmo = json.load(f)
        same = elmo == ids
        print(f"  ids equal to elmo's: {same}")
        ok = ok and same
    if arch.endswith("ForSequenceClassification"):
        with torch.no_grad():
            for t in args.texts:
                logits = model(**tok(t, return_tensors="pt")).logits[0]
                p = torch.softmax(logits, -1)
                k = int(p.argmax())
                print(f"  {t!r}: {model.config.id2label[k]} ({float(p[k]):.3f})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
