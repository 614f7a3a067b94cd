/**
 * lib/train/metrics.ts against numbers computed by scikit-learn and seqeval
 * (scripts/gen_metrics_fixtures.py writes test/fixtures/metrics/).
 */
import { readFileSync } from 'fs';
import { join } from 'path';

import { InputError } from '../lib/errors';
import {
  classificationMetrics,
  entityMetrics,
  extractEntities,
  multiLabelMetrics,
  regressionMetrics,
} from '../lib/train/metrics';

const FIXTURES = join(__dirname, 'fixtures', 'metrics');

interface Case {
  name: string;
  expected: unknown;
}

function load(name: string): unknown {
  return JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8'));
}

/**
 * Compares numbers to 1e-9 (absolute, relative above 1) and everything else exactly; returns one
 * line per difference, with its path.
 */
function diff(got: unknown, want: unknown, path = ''): string[] {
  if (typeof want === 'number') {
    if (typeof got !== 'number' || !(Math.abs(got - want) <= 1e-9 * Math.max(1, Math.abs(want)))) {
      return [`${path}: got ${String(got)}, want ${want}`];
    }
    return [];
  }
  if (Array.isArray(want)) {
    if (!Array.isArray(got) || got.length !== want.length) return [`${path}: got ${JSON.stringify(got)}`];
    return want.flatMap((w, i) => diff(got[i], w, `${path}[${i}]`));
  }
  if (typeof want === 'object' && want !== null) {
    if (typeof got !== 'object' || got === null) return [`${path}: got ${JSON.stringify(got)}`];
    const g = got as Record<string, unknown>;
    const w = want as Record<string, unknown>;
    const keys = new Set([...Object.keys(g), ...Object.keys(w)]);
    return [...keys].flatMap((k) => diff(g[k], w[k], `${path}.${k}`));
  }
  return got === want ? [] : [`${path}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`];
}

describe('classificationMetrics', () => {
  const { cases } = load('classification') as {
    cases: (Case & { labels: string[]; yTrue: number[]; yPred: number[] })[];
  };

  test.each(cases.map((c) => [c.name, c] as const))('matches sklearn: %s', (_name, c) => {
    expect(diff(classificationMetrics(c.yTrue, c.yPred, c.labels), c.expected)).toEqual([]);
  });

  test('takes typed arrays', () => {
    const c = cases[0]!;
    const m = classificationMetrics(Int32Array.from(c.yTrue), Int32Array.from(c.yPred), c.labels);
    expect(diff(m, c.expected)).toEqual([]);
  });

  test('no examples: zeros, and the confusion matrix of the labels', () => {
    const m = classificationMetrics([], [], ['a', 'b']);
    expect(m).toMatchObject({ accuracy: 0, macroF1: 0, weightedF1: 0, count: 0 });
    expect(m.confusion).toEqual([
      [0, 0],
      [0, 0],
    ]);
  });

  test('refuses out-of-range indices and length mismatches', () => {
    expect(() => classificationMetrics([0, 2], [0, 1], ['a', 'b'])).toThrow(
      'Expected a label index in [0, 2) for yTrue[1] but received number 2',
    );
    expect(() => classificationMetrics([0, 1], [0, 0.5], ['a', 'b'])).toThrow(InputError);
    expect(() => classificationMetrics([0, 1], [0], ['a', 'b'])).toThrow(
      'Expected 2 values (as yTrue) for yPred but received Array(1)',
    );
    expect(() => classificationMetrics([0], [0], 'ab' as never)).toThrow(InputError);
  });
});

describe('multiLabelMetrics', () => {
  const { cases } = load('multilabel') as {
    cases: (Case & { labels: string[]; yTrue: number[][]; scores: number[][]; threshold: number })[];
  };

  test.each(cases.map((c) => [c.name, c] as const))('matches sklearn: %s', (_name, c) => {
    expect(diff(multiLabelMetrics(c.yTrue, c.scores, c.labels, c.threshold), c.expected)).toEqual([]);
  });

  test('takes flat row-major arrays and Uint8Array rows', () => {
    const c = cases[0]!;
    const flatScores = Float64Array.from(c.scores.flat());
    const rows = c.yTrue.map((r) => Uint8Array.from(r));
    expect(diff(multiLabelMetrics(rows, flatScores, c.labels, c.threshold), c.expected)).toEqual([]);
    expect(diff(multiLabelMetrics(c.yTrue.flat(), c.scores, c.labels, c.threshold), c.expected)).toEqual([]);
  });

  test('defaults to a threshold of 0.5, inclusive', () => {
    const m = multiLabelMetrics([[1, 0]], [[0.5, 0.49]], ['a', 'b']);
    expect(m.threshold).toBe(0.5);
    expect(m.subsetAccuracy).toBe(1);
  });

  test('refuses ragged rows, non-0/1 truth and mismatched row counts', () => {
    expect(() =>
      multiLabelMetrics(
        [[1, 0], [1]],
        [
          [0, 0],
          [0, 0],
        ],
        ['a', 'b'],
      ),
    ).toThrow('Expected a row of 2 values for yTrue[1] but received Array(1)');
    expect(() => multiLabelMetrics([[2, 0]], [[0, 0]], ['a', 'b'])).toThrow(
      'Expected 0 or 1 for yTrue[0][0] but received number 2',
    );
    expect(() =>
      multiLabelMetrics(
        [[1, 0]],
        [
          [0, 0],
          [0, 0],
        ],
        ['a', 'b'],
      ),
    ).toThrow(InputError);
    expect(() => multiLabelMetrics([1, 0, 1], [0, 0, 0], ['a', 'b'])).toThrow(InputError);
  });
});

describe('regressionMetrics', () => {
  const { cases } = load('regression') as { cases: (Case & { yTrue: number[]; yPred: number[] })[] };

  test.each(cases.map((c) => [c.name, c] as const))('matches sklearn: %s', (_name, c) => {
    expect(diff(regressionMetrics(c.yTrue, c.yPred), c.expected)).toEqual([]);
  });

  test('one example: errors, and r2 as for a constant truth', () => {
    expect(regressionMetrics([3.5], [3])).toEqual({ mse: 0.25, mae: 0.5, r2: 0, pearson: 0, count: 1 });
    expect(regressionMetrics(Float32Array.of(2), Float32Array.of(2)).r2).toBe(1);
  });

  test('no examples: zeros; non-finite values refused', () => {
    expect(regressionMetrics([], [])).toEqual({ mse: 0, mae: 0, r2: 0, pearson: 0, count: 0 });
    expect(() => regressionMetrics([1, NaN], [1, 2])).toThrow(
      'Expected a finite number for yTrue[1] but received number NaN',
    );
  });
});

describe('entityMetrics', () => {
  const fixture = load('entities') as {
    cases: (Case & { trueTags: string[][]; predTags: string[][] })[];
    spans: { tags: string[]; spans: unknown[] }[];
  };

  test.each(fixture.cases.map((c) => [c.name, c] as const))('matches seqeval: %s', (_name, c) => {
    expect(diff(entityMetrics(c.trueTags, c.predTags), c.expected)).toEqual([]);
  });

  test("extractEntities matches seqeval's get_entities", () => {
    const wrong = fixture.spans.filter((s) => diff(extractEntities(s.tags), s.spans).length > 0);
    expect(wrong).toEqual([]);
    expect(fixture.spans.length).toBeGreaterThan(40);
  });

  test('an entity never spans two sentences', () => {
    // As seqeval, which puts an 'O' between sentences.
    const m = entityMetrics([['O', 'B-PER'], ['I-PER']], [['O', 'B-PER'], ['I-PER']]);
    expect(m.perType).toEqual([{ type: 'PER', precision: 1, recall: 1, f1: 1, support: 2 }]);
  });

  test('refuses mismatched lengths and empty tags', () => {
    expect(() => entityMetrics([['O', 'O']], [['O']])).toThrow(
      'Expected 2 tags (as trueTags[0]) for predTags[0] but received Array(1)',
    );
    expect(() => entityMetrics([['O']], [['O'], ['O']])).toThrow(InputError);
    expect(() => entityMetrics([['']], [['O']])).toThrow(
      "Expected a non-empty tag for trueTags[0][0] but received string ''",
    );
  });
});
