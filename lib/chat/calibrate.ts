/**
 * Choosing the out-of-scope threshold of an intent classifier from held-out scores, and measuring
 * how well calibrated those scores are.
 *
 * A turn is kept (in scope) when its score is at or above the threshold and flagged out of scope
 * below it. The score is any confidence where higher means surer: usually the intent head's
 * highest softmax probability.
 *
 * @example
 * ```ts
 * const preds = await model.predict(dev.map((e) => e.text));
 * const report = calibrateThreshold({
 *   inScope: preds.map((p, i) => ({ score: p.score, correct: p.label === dev[i].label })),
 *   outOfScope: (await model.predict(oosTexts)).map((p) => p.score),
 * });
 * // report.threshold, report.oosF1, report.coverage, report.ece
 * ```
 */
import { InputError, expected } from '../errors';

/** One held-out in-scope example: the classifier's score and whether its prediction was right. */
export interface CalibrationExample {
  score: number;
  correct: boolean;
}

/**
 * What the threshold maximizes when out-of-scope examples are given:
 * - `'f1'`: F1 of out-of-scope detection (out of scope is the positive class);
 * - `'accuracy-at-recall'`: in-scope accuracy (kept and correct, over all in-scope examples) at
 *   an out-of-scope recall of at least `targetRecall`, i.e. the lowest threshold reaching it.
 */
export type CalibrationObjective = 'f1' | 'accuracy-at-recall';

/** Options of {@link calibrateThreshold}. */
export interface CalibrateOptions {
  /** Held-out in-scope examples (at least one). */
  inScope: readonly CalibrationExample[];
  /** Scores of held-out out-of-scope examples. Without them the threshold keeps `keepFraction`. */
  outOfScope?: readonly number[];
  /** Default `'f1'`. */
  objective?: CalibrationObjective;
  /** Out-of-scope recall to reach with `'accuracy-at-recall'`, in (0, 1]. Default 0.9. */
  targetRecall?: number;
  /**
   * Without out-of-scope examples: the fraction of correctly predicted in-scope examples the
   * threshold keeps (at least), in (0, 1]. Default 0.95.
   */
  keepFraction?: number;
  /** Bins of the expected calibration error. Default 10. */
  bins?: number;
}

/** How a threshold does on the held-out examples; see {@link evaluateThreshold}. */
export interface ThresholdMetrics {
  threshold: number;
  /** Fraction of in-scope examples kept (score >= threshold). */
  coverage: number;
  /** Accuracy on the kept in-scope examples (NaN when none is kept). */
  accuracyKept: number;
  /** Kept and correct over all in-scope examples: a flagged in-scope turn counts as a miss. */
  inScopeAccuracy: number;
  /** Fraction of the correctly predicted in-scope examples that are kept (NaN when none is correct). */
  correctKept: number;
  /** Out-of-scope detection, when out-of-scope examples were given (precision NaN when nothing is flagged). */
  oosRecall?: number;
  oosPrecision?: number;
  oosF1?: number;
}

/** What {@link calibrateThreshold} returns: the threshold, how it does, and the scores' ECE. */
export interface CalibrationReport extends ThresholdMetrics {
  /** How the threshold was chosen. */
  method: CalibrationObjective | 'keep-fraction';
  /** Expected calibration error of the in-scope scores against their correctness. */
  ece: number;
  counts: { inScope: number; correct: number; outOfScope: number };
}

/**
 * Chooses the out-of-scope threshold. With `outOfScope` scores it maximizes the objective over
 * every cut between two distinct held-out scores (the threshold is the midpoint of the cut;
 * ties go to the lower threshold, which keeps more in-scope turns). Without them it is the
 * highest threshold keeping at least `keepFraction` of the correctly predicted in-scope examples
 * (all of them when no example is marked correct). Throws `ERR_INPUT` naming a bad field.
 */
export function calibrateThreshold(options: CalibrateOptions): CalibrationReport {
  if (typeof options !== 'object' || options === null)
    throw expected(InputError, 'an options object', 'options', options);
  const inScope = checkExamples(options.inScope);
  const oos = options.outOfScope === undefined ? undefined : checkScores(options.outOfScope, 'options.outOfScope');
  const objective = options.objective ?? 'f1';
  if (objective !== 'f1' && objective !== 'accuracy-at-recall') {
    throw expected(InputError, "'f1' or 'accuracy-at-recall'", 'options.objective', objective);
  }
  const targetRecall = fraction(options.targetRecall, 0.9, 'options.targetRecall');
  const keepFraction = fraction(options.keepFraction, 0.95, 'options.keepFraction');
  const bins = options.bins ?? 10;
  if (!Number.isInteger(bins) || bins < 1) throw expected(InputError, 'a positive integer', 'options.bins', bins);
  const ece = expectedCalibrationError(
    inScope.map((e) => e.score),
    inScope.map((e) => e.correct),
    bins,
  );
  const correct = inScope.filter((e) => e.correct).length;
  const counts = { inScope: inScope.length, correct, outOfScope: oos?.length ?? 0 };

  if (oos === undefined || oos.length === 0) {
    const pool = (correct > 0 ? inScope.filter((e) => e.correct) : inScope).map((e) => e.score).sort((a, b) => a - b);
    // Keep at least ceil(f·n) of them: the threshold is the score of the lowest one kept.
    const keep = Math.max(1, Math.ceil(keepFraction * pool.length - 1e-9));
    const threshold = pool[pool.length - keep] ?? 0;
    return { ...evaluateThreshold(threshold, inScope), method: 'keep-fraction', ece, counts };
  }

  // Sweep the cuts: after the group of equal scores v_i, every score <= v_i is flagged.
  const all = [...inScope.map((e) => ({ score: e.score, oos: false })), ...oos.map((score) => ({ score, oos: true }))];
  all.sort((a, b) => a.score - b.score);
  const lowest = all[0]?.score ?? 0;
  let best = { value: -Infinity, threshold: lowest };
  const consider = (value: number, threshold: number): void => {
    if (value > best.value) best = { value, threshold };
  };
  let tp = 0; // out-of-scope flagged
  let fp = 0; // in-scope flagged
  const nOos = oos.length;
  // Flagging nothing: F1 0 (and a recall of 0, below any target).
  if (objective === 'f1') consider(0, lowest);
  for (let i = 0; i < all.length;) {
    const v = all[i]?.score ?? 0;
    while (i < all.length && all[i]?.score === v) {
      if (all[i]?.oos === true) tp++;
      else fp++;
      i++;
    }
    const next = all[i]?.score;
    const threshold = next === undefined ? v + Math.max(Math.abs(v), 1) * 1e-9 : v + (next - v) / 2;
    if (objective === 'f1') {
      consider((2 * tp) / (tp + fp + nOos), threshold);
    } else if (tp >= targetRecall * nOos - 1e-9) {
      // The lowest threshold reaching the recall keeps the most in-scope turns; stop there.
      consider(1, threshold);
      break;
    }
  }
  return { ...evaluateThreshold(best.threshold, inScope, oos), method: objective, ece, counts };
}

/**
 * The metrics of a given threshold on held-out examples: coverage and accuracy of the in-scope
 * ones, and, with out-of-scope scores, recall, precision and F1 of flagging them.
 */
export function evaluateThreshold(
  threshold: number,
  inScope: readonly CalibrationExample[],
  outOfScope?: readonly number[],
): ThresholdMetrics {
  if (typeof threshold !== 'number' || !Number.isFinite(threshold)) {
    throw expected(InputError, 'a finite number', 'threshold', threshold);
  }
  const examples = checkExamples(inScope, 'inScope');
  const kept = examples.filter((e) => e.score >= threshold);
  const keptCorrect = kept.filter((e) => e.correct).length;
  const correct = examples.filter((e) => e.correct).length;
  const metrics: ThresholdMetrics = {
    threshold,
    coverage: kept.length / examples.length,
    accuracyKept: kept.length === 0 ? NaN : keptCorrect / kept.length,
    inScopeAccuracy: keptCorrect / examples.length,
    correctKept: correct === 0 ? NaN : keptCorrect / correct,
  };
  if (outOfScope !== undefined && outOfScope.length > 0) {
    const scores = checkScores(outOfScope, 'outOfScope');
    const tp = scores.filter((s) => s < threshold).length;
    const fp = examples.length - kept.length;
    metrics.oosRecall = tp / scores.length;
    metrics.oosPrecision = tp + fp === 0 ? NaN : tp / (tp + fp);
    metrics.oosF1 = (2 * tp) / (tp + fp + scores.length);
  }
  return metrics;
}

/**
 * Expected calibration error: the scores in `bins` equal-width bins over [0, 1] (1 goes to the
 * last), and the mean over examples of |accuracy − mean score| of their bin. 0 for perfectly
 * calibrated scores. Scores must lie in [0, 1].
 */
export function expectedCalibrationError(scores: ArrayLike<number>, correct: ArrayLike<boolean>, bins = 10): number {
  if (!Number.isInteger(bins) || bins < 1) throw expected(InputError, 'a positive integer', 'bins', bins);
  if (typeof scores !== 'object' || scores === null || typeof scores.length !== 'number') {
    throw expected(InputError, 'an array of scores', 'scores', scores);
  }
  if (typeof correct !== 'object' || correct === null || correct.length !== scores.length) {
    throw expected(InputError, `an array of ${scores.length} booleans`, 'correct', correct);
  }
  const n = scores.length;
  if (n === 0) return 0;
  const count = new Float64Array(bins);
  const confidence = new Float64Array(bins);
  const hits = new Float64Array(bins);
  for (let i = 0; i < n; i++) {
    const s = scores[i];
    if (typeof s !== 'number' || !(s >= 0 && s <= 1)) {
      throw expected(InputError, 'a number in [0, 1]', `scores[${i}]`, s);
    }
    const b = Math.min(bins - 1, Math.floor(s * bins));
    count[b] = (count[b] ?? 0) + 1;
    confidence[b] = (confidence[b] ?? 0) + s;
    if (correct[i] === true) hits[b] = (hits[b] ?? 0) + 1;
  }
  let ece = 0;
  for (let b = 0; b < bins; b++) {
    const c = count[b] ?? 0;
    if (c > 0) ece += Math.abs((hits[b] ?? 0) - (confidence[b] ?? 0)) / n;
  }
  return ece;
}

function checkExamples(examples: unknown, what = 'options.inScope'): CalibrationExample[] {
  if (!Array.isArray(examples) || examples.length === 0) {
    throw expected(InputError, 'a non-empty array of { score, correct }', what, examples);
  }
  return examples.map((e: unknown, i) => {
    if (typeof e !== 'object' || e === null)
      throw expected(InputError, 'an object { score, correct }', `${what}[${i}]`, e);
    const { score, correct } = e as Record<string, unknown>;
    if (typeof score !== 'number' || !Number.isFinite(score)) {
      throw expected(InputError, 'a finite number', `${what}[${i}].score`, score);
    }
    if (typeof correct !== 'boolean') throw expected(InputError, 'a boolean', `${what}[${i}].correct`, correct);
    return { score, correct };
  });
}

function checkScores(scores: unknown, what: string): number[] {
  if (!Array.isArray(scores)) throw expected(InputError, 'an array of numbers', what, scores);
  return scores.map((s: unknown, i) => {
    if (typeof s !== 'number' || !Number.isFinite(s)) throw expected(InputError, 'a finite number', `${what}[${i}]`, s);
    return s;
  });
}

function fraction(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value > 0 && value <= 1))
    throw expected(InputError, 'a number in (0, 1]', what, value);
  return value;
}
