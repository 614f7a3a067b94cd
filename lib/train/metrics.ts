/**
 * Evaluation metrics for fine-tuning: single-label and multi-label classification, regression
 * and entity-level sequence labelling. Each function returns the numbers that scikit-learn
 * (`precision_recall_fscore_support`, `f1_score`, `accuracy_score`, `r2_score`, ...) or seqeval
 * (`classification_report`, `f1_score` in its default conlleval-compatible mode) give for the
 * same input, with `zero_division=0`: a ratio whose denominator is zero is 0, not NaN.
 * test/metrics.test.ts checks them against numbers computed by those libraries
 * (scripts/gen_metrics_fixtures.py).
 *
 * These run on the JS thread over predictions already copied out of the model: O(N·L) work on
 * a few thousand rows.
 */
import { InputError, expected } from '../errors';

/** Precision, recall, F1 and support of one class. */
export interface LabelScores {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  /** Number of true occurrences of the label. */
  support: number;
}

/** Result of {@link classificationMetrics}. */
export interface ClassificationMetrics {
  accuracy: number;
  /** Unweighted mean of the per-label F1 over all `labels`, present in the data or not. */
  macroF1: number;
  /** Mean of the per-label F1 weighted by support. */
  weightedF1: number;
  macroPrecision: number;
  macroRecall: number;
  /** One entry per label, in the order of `labels`. */
  perLabel: LabelScores[];
  /** `confusion[t][p]`: the number of examples of true label t predicted as p. */
  confusion: number[][];
  /** Number of examples. */
  count: number;
}

/** Result of {@link multiLabelMetrics}. */
export interface MultiLabelMetrics {
  /** F1 over all (example, label) decisions pooled. */
  microF1: number;
  /** Unweighted mean of the per-label F1. */
  macroF1: number;
  microPrecision: number;
  microRecall: number;
  macroPrecision: number;
  macroRecall: number;
  /** Fraction of examples whose whole predicted label set equals the true one. */
  subsetAccuracy: number;
  /** One entry per label, in the order of `labels`. */
  perLabel: LabelScores[];
  /** The threshold the scores were cut at (predicted when score >= threshold). */
  threshold: number;
  /** Number of examples. */
  count: number;
}

/** Result of {@link regressionMetrics}. */
export interface RegressionMetrics {
  /** Mean squared error. */
  mse: number;
  /** Mean absolute error. */
  mae: number;
  /** Coefficient of determination, as sklearn `r2_score` (1 or 0 when the truth is constant). */
  r2: number;
  /** Pearson correlation; 0 when either side is constant (where it is undefined). */
  pearson: number;
  /** Number of examples. */
  count: number;
}

/** Precision, recall, F1 and support of one entity type. */
export interface EntityTypeScores {
  type: string;
  precision: number;
  recall: number;
  f1: number;
  /** Number of true entities of the type. */
  support: number;
}

/** Result of {@link entityMetrics}. */
export interface EntityMetrics {
  /** Micro-averaged over entities: a predicted entity counts when type, start and end all match. */
  precision: number;
  recall: number;
  f1: number;
  /** Fraction of tags equal to the true tag, over all tokens. */
  tokenAccuracy: number;
  /** Every type found in the truth or the predictions, sorted by name. */
  perType: EntityTypeScores[];
  /** Number of sequences. */
  count: number;
}

/** One entity span found by {@link extractEntities}: tokens `start` to `end - 1`. */
export interface EntitySpan {
  type: string;
  start: number;
  /** Exclusive. */
  end: number;
}

/** Rows of an N×L matrix: an array of N rows of L numbers, or one flat row-major array of N·L. */
export type MatrixLike = readonly ArrayLike<number>[] | ArrayLike<number>;

// ------------------------------------------------------------------------------------------------
// Single-label classification

/**
 * Accuracy, macro and weighted F1, per-label scores and the confusion matrix of single-label
 * predictions. `yTrue` and `yPred` hold label indices into `labels`. Macro averages run over every
 * label in `labels`, as sklearn with `labels=range(len(labels))`: a label that is never true and
 * never predicted counts with F1 0.
 *
 * @example
 * ```ts
 * const m = classificationMetrics([0, 1, 2, 2], [0, 2, 2, 2], ['a', 'b', 'c']);
 * m.accuracy; // 0.75
 * m.confusion[1][2]; // 1
 * ```
 */
export function classificationMetrics(
  yTrue: ArrayLike<number>,
  yPred: ArrayLike<number>,
  labels: readonly string[],
): ClassificationMetrics {
  checkLabelNames(labels);
  const L = labels.length;
  const n = checkSameLength(yTrue, yPred, 'yTrue', 'yPred');
  const confusion: number[][] = Array.from({ length: L }, () => new Array<number>(L).fill(0));
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const t = labelIndex(yTrue[i], L, `yTrue[${i}]`);
    const p = labelIndex(yPred[i], L, `yPred[${i}]`);
    const row = confusion[t] as number[];
    row[p] = (row[p] as number) + 1;
    if (t === p) correct++;
  }
  const perLabel: LabelScores[] = [];
  let sumP = 0;
  let sumR = 0;
  let sumF = 0;
  let weightedF = 0;
  for (let c = 0; c < L; c++) {
    const row = confusion[c] as number[];
    const tp = row[c] as number;
    let support = 0;
    let predicted = 0;
    for (let k = 0; k < L; k++) {
      support += row[k] as number;
      predicted += (confusion[k] as number[])[c] as number;
    }
    const s = labelScores(labels[c] as string, tp, predicted, support);
    perLabel.push(s);
    sumP += s.precision;
    sumR += s.recall;
    sumF += s.f1;
    weightedF += s.f1 * support;
  }
  return {
    accuracy: ratio(correct, n),
    macroF1: ratio(sumF, L),
    weightedF1: ratio(weightedF, n),
    macroPrecision: ratio(sumP, L),
    macroRecall: ratio(sumR, L),
    perLabel,
    confusion,
    count: n,
  };
}

// ------------------------------------------------------------------------------------------------
// Multi-label classification

/**
 * Micro and macro F1, precision and recall, subset accuracy and per-label scores of multi-label
 * predictions: label l is predicted for example i when `scores[i][l] >= threshold`. `yTrue`
 * holds 0/1 per (example, label). Both take N rows of `labels.length` values, as arrays of rows
 * or flat row-major arrays (e.g. a Float32Array of sigmoid outputs).
 *
 * @example
 * ```ts
 * const m = multiLabelMetrics([[1, 0], [1, 1]], [[0.9, 0.2], [0.4, 0.7]], ['news', 'sport']);
 * m.microF1; // 0.8
 * ```
 */
export function multiLabelMetrics(
  yTrue: MatrixLike,
  scores: MatrixLike,
  labels: readonly string[],
  threshold = 0.5,
): MultiLabelMetrics {
  checkLabelNames(labels);
  if (typeof threshold !== 'number' || Number.isNaN(threshold)) {
    throw expected(InputError, 'a number', 'threshold', threshold);
  }
  const L = labels.length;
  const truth = matrixRows(yTrue, L, 'yTrue');
  const pred = matrixRows(scores, L, 'scores');
  if (truth.n !== pred.n) {
    throw expected(InputError, `${truth.n} rows (as yTrue)`, 'scores', scores);
  }
  const n = truth.n;
  const tp = new Float64Array(L);
  const predicted = new Float64Array(L);
  const support = new Float64Array(L);
  let exact = 0;
  for (let i = 0; i < n; i++) {
    let same = true;
    for (let l = 0; l < L; l++) {
      const t = truth.at(i, l);
      if (t !== 0 && t !== 1) throw expected(InputError, '0 or 1', `yTrue[${i}][${l}]`, t);
      const s = pred.at(i, l);
      if (typeof s !== 'number' || Number.isNaN(s)) throw expected(InputError, 'a number', `scores[${i}][${l}]`, s);
      const p = s >= threshold ? 1 : 0;
      support[l] = (support[l] as number) + t;
      predicted[l] = (predicted[l] as number) + p;
      tp[l] = (tp[l] as number) + t * p;
      if (t !== p) same = false;
    }
    if (same) exact++;
  }
  const perLabel: LabelScores[] = [];
  let sumP = 0;
  let sumR = 0;
  let sumF = 0;
  let allTp = 0;
  let allPred = 0;
  let allTrue = 0;
  for (let l = 0; l < L; l++) {
    const s = labelScores(labels[l] as string, tp[l] as number, predicted[l] as number, support[l] as number);
    perLabel.push(s);
    sumP += s.precision;
    sumR += s.recall;
    sumF += s.f1;
    allTp += tp[l] as number;
    allPred += predicted[l] as number;
    allTrue += support[l] as number;
  }
  return {
    microF1: ratio(2 * allTp, allTrue + allPred),
    macroF1: ratio(sumF, L),
    microPrecision: ratio(allTp, allPred),
    microRecall: ratio(allTp, allTrue),
    macroPrecision: ratio(sumP, L),
    macroRecall: ratio(sumR, L),
    subsetAccuracy: ratio(exact, n),
    perLabel,
    threshold,
    count: n,
  };
}

// ------------------------------------------------------------------------------------------------
// Regression

/**
 * Mean squared and absolute error, R² (sklearn `r2_score`) and Pearson correlation. With no
 * examples every number is 0.
 *
 * @example
 * ```ts
 * regressionMetrics([1, 2, 3], [1.1, 1.9, 3.2]).r2; // 0.97
 * ```
 */
export function regressionMetrics(yTrue: ArrayLike<number>, yPred: ArrayLike<number>): RegressionMetrics {
  const n = checkSameLength(yTrue, yPred, 'yTrue', 'yPred');
  let sumT = 0;
  let sumP = 0;
  for (let i = 0; i < n; i++) {
    sumT += finite(yTrue[i], `yTrue[${i}]`);
    sumP += finite(yPred[i], `yPred[${i}]`);
  }
  if (n === 0) return { mse: 0, mae: 0, r2: 0, pearson: 0, count: 0 };
  const meanT = sumT / n;
  const meanP = sumP / n;
  let se = 0;
  let ae = 0;
  let ssT = 0;
  let ssP = 0;
  let sTP = 0;
  for (let i = 0; i < n; i++) {
    const t = yTrue[i] as number;
    const p = yPred[i] as number;
    se += (t - p) * (t - p);
    ae += Math.abs(t - p);
    const dt = t - meanT;
    const dp = p - meanP;
    ssT += dt * dt;
    ssP += dp * dp;
    sTP += dt * dp;
  }
  // sklearn's force_finite: a constant truth gives 1 for a perfect fit, else 0.
  const r2 = ssT === 0 ? (se === 0 ? 1 : 0) : 1 - se / ssT;
  const pearson = ssT === 0 || ssP === 0 ? 0 : Math.max(-1, Math.min(1, sTP / Math.sqrt(ssT * ssP)));
  return { mse: se / n, mae: ae / n, r2, pearson, count: n };
}

// ------------------------------------------------------------------------------------------------
// Entities (sequence labelling)

/**
 * Entity-level precision, recall and F1 of tag sequences (BIO/IOB2, IOB1, IOE, IOBES), as
 * seqeval's default (conlleval-compatible) mode: entities are read with {@link extractEntities},
 * and a predicted entity is correct when its type, start and end equal a true entity's.
 * Precision, recall and F1 are micro averages over all entities, as seqeval `f1_score`; per-type
 * scores are those of seqeval `classification_report`.
 *
 * @example
 * ```ts
 * const m = entityMetrics([['B-PER', 'I-PER', 'O']], [['B-PER', 'O', 'O']]);
 * m.f1; // 0 (the predicted span is shorter)
 * m.tokenAccuracy; // 2 / 3
 * ```
 */
export function entityMetrics(
  trueTags: readonly (readonly string[])[],
  predTags: readonly (readonly string[])[],
): EntityMetrics {
  const n = checkSameLength(trueTags, predTags, 'trueTags', 'predTags');
  // type -> set of "sentence:start:end" keys
  const trueByType = new Map<string, Set<string>>();
  const predByType = new Map<string, Set<string>>();
  let tokens = 0;
  let sameTags = 0;
  for (let i = 0; i < n; i++) {
    const t = tagRow(trueTags[i], `trueTags[${i}]`);
    const p = tagRow(predTags[i], `predTags[${i}]`);
    if (p.length !== t.length) {
      throw expected(InputError, `${t.length} tags (as trueTags[${i}])`, `predTags[${i}]`, predTags[i]);
    }
    for (let k = 0; k < t.length; k++) if (t[k] === p[k]) sameTags++;
    tokens += t.length;
    collect(trueByType, extractEntities(t), i);
    collect(predByType, extractEntities(p), i);
  }
  const types = [...new Set([...trueByType.keys(), ...predByType.keys()])].sort(compareCodePoints);
  const perType: EntityTypeScores[] = [];
  let allTp = 0;
  let allPred = 0;
  let allTrue = 0;
  for (const type of types) {
    const tSet = trueByType.get(type) ?? new Set<string>();
    const pSet = predByType.get(type) ?? new Set<string>();
    let tp = 0;
    for (const key of pSet) if (tSet.has(key)) tp++;
    const s = prf(tp, pSet.size, tSet.size);
    perType.push({ type, ...s, support: tSet.size });
    allTp += tp;
    allPred += pSet.size;
    allTrue += tSet.size;
  }
  return { ...prf(allTp, allPred, allTrue), tokenAccuracy: ratio(sameTags, tokens), perType, count: n };
}

/**
 * The entity spans of one tag sequence, a port of seqeval's `get_entities` (prefix mode): the
 * first character of a tag is its role (B, I, E, S, O), the rest after the first '-' its type
 * ('_' when empty). A chunk starts at B or S, at an I or E after O/E/S, and wherever the type
 * changes; so an I- after O starts an entity (IOB1), and any tag that is not one of these is
 * read by the same rules rather than refused.
 *
 * @example
 * ```ts
 * extractEntities(['B-PER', 'I-PER', 'O', 'I-LOC']);
 * // [{ type: 'PER', start: 0, end: 2 }, { type: 'LOC', start: 3, end: 4 }]
 * ```
 */
export function extractEntities(tags: readonly string[]): EntitySpan[] {
  const row = tagRow(tags, 'tags');
  const out: EntitySpan[] = [];
  let prevTag = 'O';
  let prevType = '';
  let begin = 0;
  for (let i = 0; i <= row.length; i++) {
    const chunk = i < row.length ? (row[i] as string) : 'O';
    const first = String.fromCodePoint(chunk.codePointAt(0) as number);
    const rest = chunk.slice(first.length);
    const dash = rest.indexOf('-');
    const type = (dash < 0 ? rest : rest.slice(dash + 1)) || '_';
    if (endOfChunk(prevTag, first, prevType, type)) out.push({ type: prevType, start: begin, end: i });
    if (startOfChunk(prevTag, first, prevType, type)) begin = i;
    prevTag = first;
    prevType = type;
  }
  return out;
}

function endOfChunk(prevTag: string, tag: string, prevType: string, type: string): boolean {
  if (prevTag === 'E' || prevTag === 'S') return true;
  if ((prevTag === 'B' || prevTag === 'I') && (tag === 'B' || tag === 'S' || tag === 'O')) return true;
  return prevTag !== 'O' && prevTag !== '.' && prevType !== type;
}

function startOfChunk(prevTag: string, tag: string, prevType: string, type: string): boolean {
  if (tag === 'B' || tag === 'S') return true;
  if ((prevTag === 'E' || prevTag === 'S' || prevTag === 'O') && (tag === 'E' || tag === 'I')) return true;
  return tag !== 'O' && tag !== '.' && prevType !== type;
}

function collect(byType: Map<string, Set<string>>, spans: readonly EntitySpan[], sentence: number): void {
  for (const s of spans) {
    let set = byType.get(s.type);
    if (set === undefined) byType.set(s.type, (set = new Set()));
    set.add(`${sentence}:${s.start}:${s.end}`);
  }
}

// ------------------------------------------------------------------------------------------------
// Helpers

/** Precision, recall and F1 from counts, 0 where a denominator is 0. */
function prf(tp: number, predicted: number, actual: number): { precision: number; recall: number; f1: number } {
  const precision = ratio(tp, predicted);
  const recall = ratio(tp, actual);
  return { precision, recall, f1: precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall) };
}

function labelScores(label: string, tp: number, predicted: number, support: number): LabelScores {
  // F1 from counts, 2tp / (2tp + fp + fn), as sklearn >= 1.3 computes it.
  return {
    label,
    precision: ratio(tp, predicted),
    recall: ratio(tp, support),
    f1: ratio(2 * tp, predicted + support),
    support,
  };
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

function compareCodePoints(a: string, b: string): number {
  // Python's sorted() on str orders by code point; UTF-16 order differs only above U+FFFF.
  const x = Array.from(a, (c) => c.codePointAt(0) as number);
  const y = Array.from(b, (c) => c.codePointAt(0) as number);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return (x[i] as number) - (y[i] as number);
  }
  return x.length - y.length;
}

function checkLabelNames(labels: readonly string[]): void {
  if (!Array.isArray(labels) || !labels.every((l) => typeof l === 'string')) {
    throw expected(InputError, 'an array of label names', 'labels', labels);
  }
}

function isArrayLike(v: unknown): v is ArrayLike<unknown> {
  return Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));
}

function checkSameLength(a: unknown, b: unknown, nameA: string, nameB: string): number {
  if (!isArrayLike(a)) throw expected(InputError, 'an array', nameA, a);
  if (!isArrayLike(b)) throw expected(InputError, 'an array', nameB, b);
  if (a.length !== b.length) throw expected(InputError, `${a.length} values (as ${nameA})`, nameB, b);
  return a.length;
}

function labelIndex(v: unknown, L: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= L) {
    throw expected(InputError, `a label index in [0, ${L})`, what, v);
  }
  return v;
}

function finite(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw expected(InputError, 'a finite number', what, v);
  return v;
}

function tagRow(v: unknown, what: string): readonly string[] {
  if (!Array.isArray(v)) throw expected(InputError, 'an array of tags', what, v);
  for (let k = 0; k < v.length; k++) {
    const tag: unknown = v[k];
    if (typeof tag !== 'string' || tag.length === 0)
      throw expected(InputError, 'a non-empty tag', `${what}[${k}]`, tag);
  }
  return v as readonly string[];
}

/** Random access to an N×L matrix given as rows or flat. */
function matrixRows(m: unknown, L: number, what: string): { n: number; at: (i: number, l: number) => unknown } {
  if (!isArrayLike(m)) throw expected(InputError, 'an array of rows or a flat array', what, m);
  const rows = Array.isArray(m) && m.length > 0 && isArrayLike(m[0]);
  if (rows) {
    const list = m as readonly unknown[];
    list.forEach((row, i) => {
      if (!isArrayLike(row) || row.length !== L)
        throw expected(InputError, `a row of ${L} values`, `${what}[${i}]`, row);
    });
    const r = list as readonly ArrayLike<unknown>[];
    return { n: r.length, at: (i, l) => (r[i] as ArrayLike<unknown>)[l] };
  }
  if (m.length === 0) return { n: 0, at: () => 0 };
  if (L === 0 || m.length % L !== 0) {
    throw expected(InputError, `rows of ${L} values, or a flat array of N·${L}`, what, m);
  }
  const flat = m;
  return { n: m.length / L, at: (i, l) => flat[i * L + l] };
}
