#!/usr/bin/env python3
"""Reference data for the WordPiece trainer (lib/tokenizer/train.ts).

Trains Hugging Face `tokenizers`' WordPieceTrainer (BertNormalizer lowercase, BertPreTokenizer,
min_frequency 2, specials [PAD] [UNK] [CLS] [SEP] [MASK]) on test/fixtures/wordpiece/corpus.txt
and writes, next to it:

  vocab.txt      the vocabulary of the first run, one token per line (line index = id)
  expected.json  the settings, the tokenizers version, whether the vocabulary (as a set) was the
                 same in every run, and for a few sentences the ids and tokens that
                 BertTokenizerFast gives with that vocabulary.

The trainer numbers the "##c" tokens in hash-map order, which changes from process to process,
so training runs in several child processes (--runs) and the set of tokens is compared.

Usage:  .venv/bin/python scripts/gen_wordpiece_fixture.py [--vocab-size 300] [--runs 8]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(REPO, "test", "fixtures", "wordpiece")
CORPUS = os.path.join(FIXTURE_DIR, "corpus.txt")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_FREQUENCY = 2

SENTENCES = [
    "The morning train to the harbour leaves at seven.",
    "Readers write about lost cats, broken lamps, new shops, and the price of bread.",
    "The café closes at ten; the chess games continue by lamplight.",
    "A harbourmaster counted boathouses, rehearsals and frozen ponds.",
    "Unseen words: xylophone, quartz, Zürich and 🚲 bicycles!",
    "Numbers like 2025 and 3.14159 appear in the newsletter.",
    "東京 and Ελληνικά are in other scripts.",
]


def train_once(vocab_size, out_dir):
    """One training run in this process; writes out_dir/tokenizer.json."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, decoders, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=MIN_FREQUENCY, special_tokens=SPECIALS, show_progress=False
    )
    tok.train([CORPUS], trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    tok.save(os.path.join(out_dir, "tokenizer.json"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab-size", type=int, default=300)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--train-once", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.train_once:
        train_once(args.vocab_size, args.train_once)
        return

    import tokenizers
    from transformers import BertTokenizerFast

    vocabs = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            out = os.path.join(tmp, str(run))
            os.makedirs(out)
            subprocess.run(
                [sys.executable, __file__, "--vocab-size", str(args.vocab_size), "--train-once", out], check=True
            )
            with open(os.path.join(out, "tokenizer.json"), encoding="utf-8") as f:
                vocab = json.load(f)["model"]["vocab"]
            vocabs.append([t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
        first = os.path.join(tmp, "0")
        fast = BertTokenizerFast(tokenizer_file=os.path.join(first, "tokenizer.json"))
        cases = []
        for text in SENTENCES:
            ids = fast(text)["input_ids"]
            cases.append({"text": text, "ids": ids, "tokens": fast.convert_ids_to_tokens(ids)})

    stable = all(set(v) == set(vocabs[0]) for v in vocabs)
    same_order = all(v == vocabs[0] for v in vocabs)
    with open(os.path.join(FIXTURE_DIR, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocabs[0]) + "\n")
    expected = {
        "generator": "scripts/gen_wordpiece_fixture.py",
        "tokenizers": tokenizers.__version__,
        "corpus": "corpus.txt",
        "options": {"vocabSize": args.vocab_size, "minFrequency": MIN_FREQUENCY, "lowercase": True},
        "specialTokens": SPECIALS,
        "runs": args.runs,
        "sameSetEveryRun": stable,
        "sameOrderEveryRun": same_order,
        "cases": cases,
    }
    with open(os.path.join(FIXTURE_DIR, "expected.json"), "w", encoding="utf-8") as f:
        # One line per case, so that a diff shows which sentence changed.
        head = json.dumps({k: v for k, v in expected.items() if k != "cases"}, ensure_ascii=False, indent=1)
        cases_json = ",\n  ".join(json.dumps(c, ensure_ascii=False) for c in cases)
        f.write(head[:-2] + ',\n "cases": [\n  ' + cases_json + "\n ]\n}\n")
    print(f"vocab {len(vocabs[0])} tokens; same set in {args.runs} runs: {stable}; same order: {same_order}")


if __name__ == "__main__":
    main()
