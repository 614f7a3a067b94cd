#!/usr/bin/env python3
"""Reference numbers for lib/train/metrics.ts, computed by scikit-learn and seqeval.

Writes test/fixtures/metrics/{classification,multilabel,regression,entities}.json: seeded random
inputs (with the awkward cases: a label that is never predicted, one that is never true, one that
is neither, scores exactly at the threshold, a constant truth, IOB1/IOBES/malformed tags) and the
numbers the libraries give for them, with zero_division=0. The TypeScript tests compare to 1e-9.

Needs numpy, scikit-learn and seqeval (any recent versions; the versions used are recorded in
each file). Usage:  python scripts/gen_metrics_fixtures.py
"""

import json
import os
import random
import warnings

import numpy as np
import seqeval
import sklearn
from seqeval.metrics import accuracy_score as seq_accuracy
from seqeval.metrics import f1_score as seq_f1
from seqeval.metrics import precision_score as seq_precision
from seqeval.metrics import recall_score as seq_recall
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.metrics.sequence_labeling import precision_recall_fscore_support as seq_prfs
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    precision_score,
    r2_score,
    recall_score,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "test", "fixtures", "metrics")
SEED = 20240611


def versions():
    return {"sklearn": sklearn.__version__, "seqeval": getattr(seqeval, "__version__", "1.2.2"), "numpy": np.__version__}


def floats(a):
    return [float(x) for x in a]


# ------------------------------------------------------------------------------------------------
# Single-label classification


def classification_case(name, y_true, y_pred, n_labels):
    labels = [f"label_{c}" for c in range(n_labels)]
    ids = list(range(n_labels))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
    return {
        "name": name,
        "labels": labels,
        "yTrue": [int(x) for x in y_true],
        "yPred": [int(x) for x in y_pred],
        "expected": {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "macroF1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
            "weightedF1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
            "macroPrecision": float(precision_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
            "macroRecall": float(recall_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
            "perLabel": [
                {"label": labels[c], "precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                 "support": int(s[c])}
                for c in range(n_labels)
            ],
            "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
            "count": len(y_true),
        },
    }


def classification_cases(rng):
    cases = []
    # 6 labels: label 4 is never predicted, label 5 is never true; predictions right ~60%.
    n, L = 300, 6
    y_true = [rng.randrange(5) for _ in range(n)]
    y_pred = []
    for t in y_true:
        if rng.random() < 0.6:
            y_pred.append(t if t != 4 else 5)
        else:
            y_pred.append(rng.choice([0, 1, 2, 3, 5]))
    cases.append(classification_case("absent-from-predictions-and-truth", y_true, y_pred, L))
    # 12 labels, few examples: several labels neither true nor predicted.
    y_true = [rng.randrange(8) for _ in range(25)]
    y_pred = [rng.randrange(10) for _ in range(25)]
    cases.append(classification_case("sparse-labels", y_true, y_pred, 12))
    # Uniform random, many examples.
    y_true = [rng.randrange(4) for _ in range(1000)]
    y_pred = [t if rng.random() < 0.3 else rng.randrange(4) for t in y_true]
    cases.append(classification_case("uniform", y_true, y_pred, 4))
    cases.append(classification_case("all-correct", [0, 1, 2, 1], [0, 1, 2, 1], 3))
    cases.append(classification_case("one-label", [0, 0, 0], [0, 0, 0], 1))
    cases.append(classification_case("one-example-wrong", [1], [0], 2))
    return cases


# ------------------------------------------------------------------------------------------------
# Multi-label classification


def multilabel_case(name, y_true, scores, n_labels, threshold):
    labels = [f"tag_{c}" for c in range(n_labels)]
    yt = np.array(y_true, dtype=np.int64).reshape(-1, n_labels)
    yp = (np.array(scores, dtype=np.float64).reshape(-1, n_labels) >= threshold).astype(np.int64)
    p, r, f, s = precision_recall_fscore_support(yt, yp, average=None, zero_division=0)

    def avg(fn, average):
        return float(fn(yt, yp, average=average, zero_division=0))

    return {
        "name": name,
        "labels": labels,
        "threshold": threshold,
        "yTrue": yt.tolist(),
        "scores": [floats(row) for row in np.array(scores).reshape(-1, n_labels)],
        "expected": {
            "microF1": avg(f1_score, "micro"),
            "macroF1": avg(f1_score, "macro"),
            "microPrecision": avg(precision_score, "micro"),
            "microRecall": avg(recall_score, "micro"),
            "macroPrecision": avg(precision_score, "macro"),
            "macroRecall": avg(recall_score, "macro"),
            "subsetAccuracy": float(accuracy_score(yt, yp)),
            "perLabel": [
                {"label": labels[c], "precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                 "support": int(s[c])}
                for c in range(n_labels)
            ],
            "threshold": threshold,
            "count": int(yt.shape[0]),
        },
    }


def multilabel_cases(rng):
    cases = []
    n, L = 200, 7
    y_true, scores = [], []
    for _ in range(n):
        row_t, row_s = [], []
        for c in range(L):
            # label 5 is never true; label 6 is never predicted (scores below every threshold used)
            t = 0 if c == 5 else int(rng.random() < 0.3)
            if c == 6:
                s = rng.random() * 0.2
            else:
                # scores on a 0.1 grid so that many sit exactly on the threshold
                s = round(min(1.0, max(0.0, (0.55 if t else 0.35) + rng.gauss(0, 0.25))), 1)
            row_t.append(t)
            row_s.append(s)
        y_true.append(row_t)
        scores.append(row_s)
    cases.append(multilabel_case("ties-at-threshold", y_true, scores, L, 0.5))
    cases.append(multilabel_case("threshold-0.3", y_true, scores, L, 0.3))
    y_true = [[int(rng.random() < 0.5) for _ in range(3)] for _ in range(50)]
    scores = [[rng.random() for _ in range(3)] for _ in range(50)]
    cases.append(multilabel_case("continuous-scores", y_true, scores, 3, 0.5))
    cases.append(multilabel_case("exact", [[1, 0], [0, 1], [1, 1]], [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], 2, 0.5))
    cases.append(multilabel_case("nothing-true-or-predicted", [[0, 0], [0, 0]], [[0.1, 0.2], [0.3, 0.4]], 2, 0.5))
    return cases


# ------------------------------------------------------------------------------------------------
# Regression


def regression_case(name, y_true, y_pred):
    t = np.array(y_true, dtype=np.float64)
    p = np.array(y_pred, dtype=np.float64)
    # Pearson is undefined when either side is constant; the TypeScript side reports 0 then.
    pearson = 0.0 if t.std() == 0 or p.std() == 0 else float(np.corrcoef(t, p)[0, 1])
    return {
        "name": name,
        "yTrue": floats(t),
        "yPred": floats(p),
        "expected": {
            "mse": float(mean_squared_error(t, p)),
            "mae": float(mean_absolute_error(t, p)),
            "r2": float(r2_score(t, p)),
            "pearson": pearson,
            "count": len(t),
        },
    }


def regression_cases(rng):
    t = [rng.uniform(0, 5) for _ in range(500)]
    p = [x + rng.gauss(0, 0.7) for x in t]
    cases = [regression_case("noisy", t, p)]
    t = [rng.gauss(100, 30) for _ in range(40)]
    p = [rng.gauss(100, 30) for _ in range(40)]
    cases.append(regression_case("uncorrelated", t, p))
    cases.append(regression_case("negative", [1, 2, 3, 4], [4, 3, 2, 1.5]))
    cases.append(regression_case("constant-truth-perfect", [2, 2, 2], [2, 2, 2]))
    cases.append(regression_case("constant-truth-off", [2, 2, 2], [1, 2, 3]))
    # (One example is left to the TypeScript tests: sklearn's r2_score gives NaN for it.)
    return cases


# ------------------------------------------------------------------------------------------------
# Entities


TYPES = ["PER", "LOC", "ORG", "MISC"]


def bio_sentence(rng, n):
    tags, i = [], 0
    while i < n:
        if rng.random() < 0.6:
            tags.append("O")
            i += 1
            continue
        typ = rng.choice(TYPES)
        length = min(n - i, rng.randint(1, 3))
        tags.extend([f"B-{typ}"] + [f"I-{typ}"] * (length - 1))
        i += length
    return tags


def corrupt(rng, tags, pool):
    out = list(tags)
    for k in range(len(out)):
        r = rng.random()
        if r < 0.08:
            out[k] = "O"
        elif r < 0.14:
            out[k] = rng.choice(pool)
        elif r < 0.18 and out[k].startswith("B-"):
            out[k] = "I-" + out[k][2:]  # IOB1-style start
    return out


def entity_case(name, y_true, y_pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, s = seq_prfs(y_true, y_pred, average=None, zero_division=0)
        types = sorted({e[0] for e in get_entities(y_true)} | {e[0] for e in get_entities(y_pred)})
        return {
            "name": name,
            "trueTags": y_true,
            "predTags": y_pred,
            "expected": {
                "precision": float(seq_precision(y_true, y_pred, zero_division=0)),
                "recall": float(seq_recall(y_true, y_pred, zero_division=0)),
                "f1": float(seq_f1(y_true, y_pred, zero_division=0)),
                "tokenAccuracy": float(seq_accuracy(y_true, y_pred)),
                "perType": [
                    {"type": t, "precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                     "support": int(s[k])}
                    for k, t in enumerate(types)
                ],
                "count": len(y_true),
            },
        }


def entity_cases(rng):
    cases = []
    bio_pool = ["O"] + [f"{p}-{t}" for p in "BI" for t in TYPES]
    y_true = [bio_sentence(rng, rng.randint(1, 30)) for _ in range(150)]
    y_pred = [corrupt(rng, s, bio_pool) for s in y_true]
    cases.append(entity_case("bio-noisy", y_true, y_pred))
    # IOBES truth against noisy predictions that mix schemes.
    iobes_pool = ["O"] + [f"{p}-{t}" for p in "BIES" for t in TYPES[:2]]
    y_true = [[rng.choice(iobes_pool) for _ in range(rng.randint(1, 20))] for _ in range(80)]
    y_pred = [corrupt(rng, s, iobes_pool) for s in y_true]
    cases.append(entity_case("iobes-random", y_true, y_pred))
    # Malformed and unusual tags: bare roles, empty types, multi-dash types, unknown roles.
    odd_pool = ["O", "B", "I", "E", "S", "B-", "I-", "B-A-B", "I-A-B", "X-PER", "I-PER", "B-PER", ".", "I-LOC"]
    y_true = [[rng.choice(odd_pool) for _ in range(rng.randint(1, 15))] for _ in range(60)]
    y_pred = [[rng.choice(odd_pool) for _ in range(len(s))] for s in y_true]
    cases.append(entity_case("odd-tags", y_true, y_pred))
    # A type only in the predictions, a type only in the truth, no entities at all.
    cases.append(entity_case("pred-only-type", [["B-PER", "O"], ["O", "O"]], [["B-PER", "O"], ["B-LOC", "O"]]))
    cases.append(entity_case("no-entities", [["O", "O"]], [["O", "O"]]))
    cases.append(entity_case("empty-sentence", [[], ["B-PER"]], [[], ["B-PER"]]))
    return cases


def spans_cases(rng):
    seqs = [
        ["B-PER", "I-PER", "O", "I-LOC"],
        ["I-PER", "I-PER", "B-PER", "I-LOC", "E-LOC", "S-ORG", "E-ORG"],
        ["B", "I", "O", "B-", "I-", "B-A-B", "I-A-B", "X-Y", ".", "I-Y"],
    ]
    pool = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "B", "I", "S", "E-", "."]
    seqs += [[rng.choice(pool) for _ in range(rng.randint(0, 12))] for _ in range(40)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # seqeval's end is inclusive; the TypeScript spans' end is exclusive.
        return [{"tags": s, "spans": [{"type": t, "start": a, "end": b + 1} for t, a, b in get_entities(s)]}
                for s in seqs]


def main():
    warnings.simplefilter("ignore")  # sklearn's notes on single-label and zero-division inputs
    rng = random.Random(SEED)
    os.makedirs(OUT_DIR, exist_ok=True)
    outputs = {
        "classification": {"cases": classification_cases(rng)},
        "multilabel": {"cases": multilabel_cases(rng)},
        "regression": {"cases": regression_cases(rng)},
        "entities": {"cases": entity_cases(rng), "spans": spans_cases(rng)},
    }
    for name, body in outputs.items():
        body = {"generator": "scripts/gen_metrics_fixtures.py", "versions": versions(), **body}
        path = os.path.join(OUT_DIR, f"{name}.json")
        with open(path, "w") as f:
            json.dump(body, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
