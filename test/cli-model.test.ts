// `elmo predict` and `elmo embed`, run as a user runs them: the built CLI (dist/cli.js, compiled
// here first with the package's own build config) in a child process.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Bert } from '../lib';
import { expectClose } from './helpers';

const ROOT = path.join(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const CLS_MODEL = path.join(__dirname, 'fixtures', 'bert-a-cls');
const MLM_MODEL = path.join(__dirname, 'fixtures', 'bert-b-mlm');

function elmo(args: string[], stdin?: string): { code: number; out: string[]; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    input: stdin ?? '',
    env: { ...process.env, ELMO_NUM_THREADS: '1' },
  });
  const out = r.stdout.split('\n').filter((l) => l !== '');
  return { code: r.status ?? -1, out, err: r.stderr };
}

beforeAll(() => {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
    stdio: 'pipe',
  });
}, 180_000);

describe('elmo predict / embed (built CLI)', () => {
  it('predict prints label, score and text per --text, matching the library', async () => {
    const texts = ['hello world', 'where is my card'];
    const r = elmo(['predict', '--model', CLS_MODEL, '--text', texts[0] ?? '', '--text', texts[1] ?? '']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toHaveLength(2);
    using model = await Bert.load(CLS_MODEL, { device: 'cpu' });
    const preds = await model.predict(texts);
    r.out.forEach((line, i) => {
      const [label, score, text] = line.split('\t');
      expect(label).toBe(preds[i]?.label);
      expect(Number(score)).toBeCloseTo(preds[i]?.score ?? NaN, 4);
      expect(text).toBe(texts[i]);
    });
  });

  it('predict --precision int8 runs the int8 model (the library, loaded the same way)', async () => {
    const texts = ['hello world', 'where is my card'];
    const r = elmo([
      'predict',
      '--model',
      CLS_MODEL,
      '--precision',
      'int8',
      '--json',
      '--text',
      texts[0] ?? '',
      '--text',
      texts[1] ?? '',
    ]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    using model = await Bert.load(CLS_MODEL, { device: 'cpu', precision: 'int8', threads: 1 });
    const preds = await model.predict(texts);
    r.out.forEach((line, i) => {
      const row = JSON.parse(line) as { label: string; score: number };
      expect(row.label).toBe(preds[i]?.label);
      expect(row.score).toBeCloseTo(preds[i]?.score ?? NaN, 5);
    });
  });

  it('predict --json reads a JSONL file (strings, objects, pairs) and writes JSON lines', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-cli-')), 'in.jsonl');
    fs.writeFileSync(file, '"plain string"\n{"text": "an object"}\n\n{"text": "context turn", "pair": "reply"}\n');
    const r = elmo(['predict', '--model', CLS_MODEL, '--input', file, '--json', '--batch-size', '2']);
    expect(r.code).toBe(0);
    expect(r.out).toHaveLength(3);
    const rows = r.out.map(
      (l) =>
        JSON.parse(l) as { text: string; pair?: string; label: string; score: number; scores: Record<string, number> },
    );
    expect(rows.map((x) => x.text)).toEqual(['plain string', 'an object', 'context turn']);
    expect(rows[2]?.pair).toBe('reply');
    for (const row of rows) {
      const values = Object.values(row.scores);
      expect(Object.keys(row.scores)).toEqual(['label_a', 'label_b', 'label_c', 'label_d', 'label_e']);
      expect(values.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      expect(row.score).toBe(Math.max(...values));
      expect(row.scores[row.label]).toBe(row.score);
    }
  });

  it('embed writes one JSON line per text with the pooled vector, from stdin too', async () => {
    const r = elmo(['embed', '--model', MLM_MODEL, '--input', '-', '--pooling', 'cls'], '"first"\n"second text"\n');
    expect(r.code).toBe(0);
    const rows = r.out.map((l) => JSON.parse(l) as { text: string; embedding: number[] });
    expect(rows.map((x) => x.text)).toEqual(['first', 'second text']);
    using model = await Bert.load(MLM_MODEL, { device: 'cpu' });
    const ref = await model.embed(['first', 'second text'], { pooling: 'cls' });
    const H = model.config.hiddenSize;
    rows.forEach((row, i) => expectClose(row.embedding, ref.subarray(i * H, (i + 1) * H), 0, 0));
  });

  it('a missing or corrupt model directory exits 1 with a clear message', () => {
    const missing = elmo(['predict', '--model', '/nonexistent/model', '--text', 'x']);
    expect(missing.code).toBe(1);
    expect(missing.out).toEqual([]);
    expect(missing.err).toContain('elmo predict: ERR_CHECKPOINT');
    expect(missing.err).toContain("'/nonexistent/model', which does not exist");

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-cli-'));
    for (const f of ['config.json', 'vocab.txt']) fs.copyFileSync(path.join(CLS_MODEL, f), path.join(dir, f));
    fs.writeFileSync(path.join(dir, 'model.safetensors'), 'garbage');
    const corrupt = elmo(['embed', '--model', dir, '--text', 'x']);
    expect(corrupt.code).toBe(1);
    expect(corrupt.err).toMatch(/^elmo embed: ERR_CHECKPOINT: .*model\.safetensors/);
  });

  it('usage errors exit 2 and name the problem', () => {
    const cases: [string[], string][] = [
      [['predict', '--text', 'x'], '--model DIR is required'],
      [['predict', '--model', CLS_MODEL], 'no texts'],
      [['predict', '--model', CLS_MODEL, '--text'], '--text needs a value'],
      [['embed', '--model', CLS_MODEL, '--text', 'x', '--pooling', 'max'], "--pooling expects 'mean' or 'cls'"],
      [['embed', '--model', CLS_MODEL, '--text', 'x', '--json'], 'unknown option --json'],
      [['predict', '--model', CLS_MODEL, '--text', 'x', '--batch-size', '0'], '--batch-size expects a positive'],
      [['predict', '--model', CLS_MODEL, '--input', '/nonexistent.jsonl'], 'cannot read --input'],
      [['predict', '--model', CLS_MODEL, '--text', 'x', '--precision', 'int4'], '--precision expects'],
    ];
    for (const [args, message] of cases) {
      const r = elmo(args);
      expect(r.code).toBe(2);
      expect(r.err).toContain(message);
    }
  });

  it('predict on a model without a classification head exits 1 with ERR_INPUT', () => {
    const r = elmo(['predict', '--model', MLM_MODEL, '--text', 'x']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('ERR_INPUT: Expected a model with a sequence-classification head');
  });

  it('info still works', () => {
    const r = elmo(['info', '--json']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out.join('\n')) as { build: { napiVersion: number } }).build.napiVersion).toBe(8);
  });
});
