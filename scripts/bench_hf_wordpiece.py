#!/usr/bin/env python3
"""The Hugging Face side of bench/vocab.js: trains tokenizers' WordPieceTrainer on a list of files.

BertNormalizer (lowercase unless --cased), BertPreTokenizer, WordPieceTrainer with the given
vocab size and min_frequency and the specials [PAD] [UNK] [CLS] [SEP] [MASK]: the setup that
elmo's Tokenizer.train reproduces. Each repeat trains a fresh tokenizer; the time is that of
`Tokenizer.train(files, trainer)` alone (reading, counting and merging, on all of rayon's
threads: RAYON_NUM_THREADS, default one per core), not Python's start-up or the imports.

Usage:  .venv/bin/python scripts/bench_hf_wordpiece.py --files FILES.json --vocab-size N
            [--min-frequency 2] [--repeat 1] [--cased] --vocab-out vocab.txt
Prints one JSON line: {"seconds": [...], "vocabSize": N, "tokenizers": "x.y.z", "threads": T}.
"""

import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", required=True, help="a JSON file holding the list of corpus files")
    ap.add_argument("--vocab-size", type=int, required=True)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cased", action="store_true")
    ap.add_argument("--vocab-out", required=True)
    args = ap.parse_args()

    import tokenizers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    with open(args.files, encoding="utf-8") as f:
        files = json.load(f)
    seconds = []
    tok = None
    for _ in range(args.repeat):
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=not args.cased)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=args.vocab_size,
            min_frequency=args.min_frequency,
            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            show_progress=False,
        )
        t0 = time.perf_counter()
        tok.train(files, trainer)
        seconds.append(time.perf_counter() - t0)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    with open(args.vocab_out, "w", encoding="utf-8") as f:
        f.write("\n".join(t for t, _ in vocab) + "\n")
    threads = int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count()
    print(json.dumps({"seconds": seconds, "vocabSize": len(vocab), "tokenizers": tokenizers.__version__, "threads": threads}))


if __name__ == "__main__":
    main()
