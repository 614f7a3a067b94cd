// `elmo finetune` and `elmo eval`, run as a user runs them: the CLI built with the package's own
// build config (into build-cli-train/, so that it does not race test/cli-model.test.ts writing
// dist/) in a child process, on a small synthetic dataset written to a temporary directory.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Bert } from '../lib';

const ROOT = path.join(__dirname, '..');
const OUT_DIR = path.join(ROOT, 'build-cli-train');
const CLI = path.join(OUT_DIR, 'cli.js');
const CLS_MODEL = path.join(__dirname, 'fixtures', 'bert-a-cls');
const VOCAB = path.join(CLS_MODEL, 'vocab.txt');

function elmo(args: string[]): { code: number; out: string[]; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ELMO_NUM_THREADS: '1' },
  });
  const out = r.stdout.split('\n').filter((l) => l !== '');
  return { code: r.status ?? -1, out, err: r.stderr };
}

/** Three topics told apart by their words (all in the fixture's vocabulary), with filler. */
const TOPICS: Record<string, string[]> = {
  music: ['music', 'album', 'song', 'band', 'released', 'single'],
  sport: ['game', 'league', 'team', 'season', 'football', 'won', 'played', 'club'],
  city: ['city', 'town', 'river', 'street', 'village', 'county', 'park', 'road'],
};
const FILLER = ['the', 'a', 'and', 'was', 'in', 'of', 'to', 'with', 'new'];

function examples(n: number, seed: number): { text: string; label: string; group: string }[] {
  let s = seed;
  const rand = (): number => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)]!;
  const labels = Object.keys(TOPICS);
  return Array.from({ length: n }, (_, i) => {
    const label = labels[i % labels.length]!;
    const words = Array.from({ length: 4 + Math.floor(rand() * 6) }, () =>
      rand() < 0.5 ? pick(TOPICS[label]!) : pick(FILLER),
    );
    return { text: words.join(' '), label, group: `conv-${String(Math.floor(i / 3))}` };
  });
}

let dir: string;
let trainJsonl: string;
let trainCsv: string;
let evalCsv: string;
let evalJsonl: string;

beforeAll(() => {
  execFileSync(
    process.execPath,
    [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', OUT_DIR, '--declaration', 'false'],
    { cwd: ROOT, stdio: 'pipe' },
  );
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-cli-train-'));
  trainJsonl = path.join(dir, 'train.jsonl');
  trainCsv = path.join(dir, 'train.csv');
  evalCsv = path.join(dir, 'eval.csv');
  evalJsonl = path.join(dir, 'eval.jsonl');
  const train = examples(60, 7);
  const dev = examples(24, 11);
  fs.writeFileSync(trainJsonl, train.map((e) => JSON.stringify({ text: e.text, label: e.label })).join('\n') + '\n');
  fs.writeFileSync(trainCsv, 'text,label,group\n' + train.map((e) => `"${e.text}",${e.label},${e.group}`).join('\n'));
  fs.writeFileSync(evalCsv, 'text,label\n' + dev.map((e) => `"${e.text}",${e.label}`).join('\n') + '\n');
  fs.writeFileSync(evalJsonl, dev.map((e) => JSON.stringify(e)).join('\n') + '\n');
}, 180_000);

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const TINY = ['--config', 'tiny', '--vocab', VOCAB, '--max-seq-len', '32', '--epochs', '2'];

interface MetricsFile {
  task: string;
  labels: string[];
  epochs: number;
  steps: number;
  trainLoss: number;
  bestEpoch: number;
  history: { step: number; loss: number; lr: number }[];
  evalHistory: { epoch: number; metric: number }[];
  evalMetrics: { task: string; accuracy: number; confusion: number[][] };
  recipe: { init: { from: string }; options: { epochs: number; seed: number }; resolved: { maxSeqLen: number } };
  machine: { cpu: string; cores: number };
  command: string;
  seconds: number;
}

describe('elmo finetune (built CLI)', () => {
  it('trains --config tiny on JSONL with a CSV eval set; the model, metrics.json and report.html are written', async () => {
    const out = path.join(dir, 'tiny');
    const r = elmo(['finetune', '--train', trainJsonl, '--eval', evalCsv, ...TINY, '--out', out]);
    expect(r.err).not.toContain('ERR_');
    expect(r.code).toBe(0);
    expect(r.out.join('\n')).toMatch(/trained +sequence, 3 labels: 2 epochs/);
    // Progress lines go to stderr when it is not a terminal: one per evaluation at least.
    expect(r.err).toMatch(/epoch 2\/2 +eval +accuracy \d/);

    using model = await Bert.load(out, { device: 'cpu' });
    expect([...model.labels].sort()).toEqual(['city', 'music', 'sport']);
    const [pred] = await model.predict(['the football game']);
    expect(model.labels).toContain(pred?.label);

    const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8')) as MetricsFile;
    expect(m.task).toBe('sequence');
    expect(m.epochs).toBe(2);
    expect(m.history).toHaveLength(m.steps);
    expect(m.evalHistory.map((h) => h.epoch)).toEqual([1, 2]);
    expect(m.evalMetrics.accuracy).toBeGreaterThanOrEqual(0);
    expect(m.evalMetrics.confusion).toHaveLength(3);
    expect(m.recipe.init.from).toBe('config');
    expect(m.recipe.options).toMatchObject({ epochs: 2, seed: 42 });
    expect(m.recipe.resolved.maxSeqLen).toBe(32);
    expect(m.machine.cores).toBeGreaterThan(0);
    expect(typeof m.machine.cpu).toBe('string');
    expect(m.command).toMatch(/^elmo finetune --train /);

    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    expect(html).toContain('<svg');
    expect(html).toContain('Confusion matrix');
    expect(html).not.toMatch(/<script|<link|src="http/);
  }, 60_000);

  it('trains from CSV with --eval-split by group; --metrics-out and --report go where asked', () => {
    const out = path.join(dir, 'csv');
    const metrics = path.join(dir, 'reports', 'm.json');
    const report = path.join(dir, 'reports', 'r.html');
    const r = elmo([
      'finetune',
      '--train',
      trainCsv,
      '--eval-split',
      '0.25',
      '--group',
      'group',
      ...TINY,
      '--out',
      out,
      '--metrics-out',
      metrics,
      '--report',
      report,
      '--early-stopping',
      '1',
    ]);
    expect(r.code).toBe(0);
    const m = JSON.parse(fs.readFileSync(metrics, 'utf8')) as MetricsFile;
    expect(m.evalHistory.length).toBeGreaterThanOrEqual(1);
    expect(fs.readFileSync(report, 'utf8')).toContain('<svg');
    expect(fs.existsSync(path.join(out, 'model.safetensors'))).toBe(true);
    expect(fs.existsSync(path.join(out, 'metrics.json'))).toBe(false);
  }, 60_000);

  it('--model with other labels asks for --reset-head, then replaces the head', () => {
    const out = path.join(dir, 'from-model');
    const base = ['finetune', '--train', trainJsonl, '--model', CLS_MODEL, '--max-seq-len', '32', '--epochs', '1'];
    const refused = elmo([...base, '--out', out]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/^elmo finetune: ERR_INPUT: .*pass --reset-head/m);
    const r = elmo([...base, '--out', out, '--reset-head']);
    expect(r.code).toBe(0);
    const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8')) as MetricsFile;
    expect(m.recipe.init.from).toBe('checkpoint');
    expect(fs.readFileSync(path.join(out, 'report.html'), 'utf8')).toContain('No evaluation set');
  }, 60_000);
});

describe('elmo finetune starting points and checkpoints (built CLI)', () => {
  it("--random-init keeps the checkpoint's architecture; --init-from puts a fresh head on its encoder", () => {
    const base = ['finetune', '--train', trainJsonl, '--max-seq-len', '32', '--epochs', '1'];
    const fresh = path.join(dir, 'random-init');
    const r1 = elmo([...base, '--model', CLS_MODEL, '--random-init', '--out', fresh]);
    expect(r1.code).toBe(0);
    const config = JSON.parse(fs.readFileSync(path.join(fresh, 'config.json'), 'utf8')) as {
      hidden_size: number;
      num_hidden_layers: number;
    };
    expect([config.hidden_size, config.num_hidden_layers]).toEqual([96, 3]);
    const m1 = JSON.parse(fs.readFileSync(path.join(fresh, 'metrics.json'), 'utf8')) as MetricsFile;
    expect(m1.recipe.init.from).toBe('random-init');

    const encoder = path.join(dir, 'init-from');
    const r2 = elmo([...base, '--init-from', CLS_MODEL, '--out', encoder]);
    expect(r2.code).toBe(0);
    const m2 = JSON.parse(fs.readFileSync(path.join(encoder, 'metrics.json'), 'utf8')) as MetricsFile;
    expect(m2.recipe.init.from).toBe('encoder');
    expect([...m2.labels].sort()).toEqual(['city', 'music', 'sport']);
  }, 60_000);

  it('--checkpoint-dir writes a checkpoint per epoch and --resume CHECKPOINT continues from it', () => {
    const ckpt = path.join(dir, 'ckpt');
    const args = ['finetune', '--train', trainJsonl, '--eval', evalCsv, ...TINY, '--checkpoint-dir', ckpt];
    const first = elmo([...args, '--out', path.join(dir, 'ck-out')]);
    expect(first.code).toBe(0);
    const saved = fs
      .readdirSync(ckpt)
      .filter((n) => n.startsWith('checkpoint-'))
      .sort((a, b) => Number(a.slice(11)) - Number(b.slice(11)));
    expect(saved).toHaveLength(2); // one per epoch
    // From the end of epoch 1: epoch 2 is trained again.
    const again = elmo([...args, '--out', path.join(dir, 'ck-out2'), '--resume', path.join(ckpt, saved[0]!)]);
    expect(again.err).not.toContain('ERR_');
    expect(again.code).toBe(0);
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'ck-out2', 'metrics.json'), 'utf8')) as MetricsFile;
    expect(m.epochs).toBe(2);
    expect(m.evalHistory.map((h) => h.epoch)).toEqual([1, 2]);
    const firstRun = JSON.parse(fs.readFileSync(path.join(dir, 'ck-out', 'metrics.json'), 'utf8')) as MetricsFile;
    expect(m.steps).toBe(firstRun.steps);
    expect(m.trainLoss).toBeCloseTo(firstRun.trainLoss, 4);
  }, 60_000);
});

describe('elmo eval (built CLI)', () => {
  it('prints the metrics of a model, as text and with --json', () => {
    const model = path.join(dir, 'tiny');
    const text = elmo(['eval', '--model', model, '--data', evalJsonl]);
    expect(text.code).toBe(0);
    expect(text.out.join('\n')).toMatch(/^accuracy +\d\.\d{4}$/m);
    expect(text.out.join('\n')).toMatch(/^sport +\d/m);
    const json = elmo(['eval', '--model', model, '--data', evalCsv, '--json']);
    expect(json.code).toBe(0);
    const m = JSON.parse(json.out.join('\n')) as { task: string; accuracy: number; count: number };
    expect(m.task).toBe('sequence');
    expect(m.count).toBe(24);
    // Same examples, same model: the JSONL and CSV files give the same accuracy.
    expect(text.out.join('\n')).toContain(`accuracy        ${m.accuracy.toFixed(4)}`);
  });
});

describe('elmo finetune errors', () => {
  it('bad arguments exit 2 with a message and the usage', () => {
    const out = path.join(dir, 'never');
    const cases: [string[], string][] = [
      [['finetune', ...TINY, '--out', out], '--train FILE is required'],
      [['finetune', '--train', trainJsonl, ...TINY], '--out DIR is required'],
      [['finetune', '--train', trainJsonl, '--out', out], 'no starting weights'],
      [
        ['finetune', '--train', trainJsonl, '--config', 'huge', '--out', out],
        "--config expects 'tiny', 'mini', 'small' or 'base'",
      ],
      [
        ['finetune', '--train', trainJsonl, ...TINY, '--out', out, '--epochs', '0'],
        '--epochs expects a positive integer',
      ],
      [['finetune', '--train', trainJsonl, ...TINY, '--out', out, '--lr', 'fast'], '--lr expects a number'],
      [
        ['finetune', '--train', trainJsonl, ...TINY, '--out', out, '--eval-split', '1.5'],
        '--eval-split expects a number in (0, 1)',
      ],
      [
        ['finetune', '--train', trainJsonl, ...TINY, '--out', out, '--eval', evalCsv, '--eval-split', '0.2'],
        'not both',
      ],
      [['finetune', '--train', trainJsonl, ...TINY, '--out', out, '--task', 'ner'], "--task expects 'sequence'"],
      [['finetune', '--train', trainJsonl, ...TINY, '--out', out, '--early-stopping', '2'], 'needs an evaluation set'],
      [
        ['finetune', '--train', trainJsonl, '--init-from', CLS_MODEL, '--model', CLS_MODEL, '--out', out],
        '--init-from DIR cannot be combined',
      ],
      [['finetune', '--train', trainJsonl, ...TINY, '--out', out, '--random-init'], '--random-init needs --model DIR'],
      [['finetune', '--train', trainJsonl, ...TINY, '--out', out, '--bogus'], 'unknown option --bogus'],
      [['eval', '--model', CLS_MODEL], '--data FILE is required'],
    ];
    for (const [args, message] of cases) {
      const r = elmo(args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.err).toContain(message);
      expect(r.err).toContain(`Usage: elmo ${args[0] ?? ''} [options]`);
    }
    expect(fs.existsSync(out)).toBe(false);
  });

  it('a malformed JSONL line exits 1 naming file:line', () => {
    const bad = path.join(dir, 'bad.jsonl');
    fs.writeFileSync(bad, '{"text": "the game", "label": "sport"}\n\n{"text": "no end", "label": \n');
    const r = elmo(['finetune', '--train', bad, ...TINY, '--out', path.join(dir, 'bad-out')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`elmo finetune: ERR_INPUT: Expected a JSON object for ${bad}:3`);
  });

  it('--config without --vocab or --model exits 1 with ERR_INPUT', () => {
    const r = elmo(['finetune', '--train', trainJsonl, '--config', 'tiny', '--out', path.join(dir, 'x')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('elmo finetune: ERR_INPUT: Expected --vocab FILE or --model DIR');
  });
});

describe('elmo pretrain, then finetune from it (built CLI)', () => {
  const corpusText = (): string => {
    const lines: string[] = [];
    const topics = Object.values(TOPICS);
    for (let i = 0; i < 300; i++) {
      const words = topics[i % topics.length] ?? [];
      const pick = (k: number): string => words[(i * 7 + k * 3) % words.length] ?? '';
      lines.push(`The ${pick(0)} and the ${pick(1)} were ${pick(2)}. A ${pick(3)} of ${pick(4)}!`);
    }
    return `${lines.join('\n')}\n`;
  };

  it('trains a vocabulary, pretrains --config tiny for --steps, saves a BertForMaskedLM that finetune --init-from takes', async () => {
    const corpusDir = path.join(dir, 'corpus');
    fs.mkdirSync(corpusDir, { recursive: true });
    fs.writeFileSync(path.join(corpusDir, 'topics.txt'), corpusText());
    const out = path.join(dir, 'pretrained');
    const r = elmo([
      'pretrain',
      '--corpus',
      corpusDir,
      '--corpus',
      trainJsonl,
      '--config',
      'tiny',
      '--vocab-size',
      '150',
      '--steps',
      '8',
      '--seq-len',
      '32',
      '--batch-size',
      '4',
      '--out',
      out,
    ]);
    expect(r.err).not.toContain('ERR_');
    expect(r.code).toBe(0);
    expect(r.err).toContain('training a WordPiece vocabulary of 150');
    expect(r.out.join('\n')).toMatch(/pretrained 8 steps/);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as {
      architectures: string[];
      vocab_size: number;
    };
    expect(config.architectures).toEqual(['BertForMaskedLM']);
    // At most 150: training stops early when no pair is seen twice any more.
    const vocabLines = fs.readFileSync(path.join(out, 'vocab.txt'), 'utf8').trim().split('\n');
    expect(vocabLines.length).toBeLessThanOrEqual(150);
    expect(vocabLines.length).toBeGreaterThan(100);
    expect(config.vocab_size).toBe(vocabLines.length);
    // The texts of the .jsonl file went into the vocabulary, not its JSON syntax.
    expect(vocabLines).not.toContain('"');
    expect(fs.existsSync(path.join(out, 'tokenizer.json'))).toBe(true);
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'pretrain.json'), 'utf8')) as {
      steps: number;
      history: { loss: number }[];
      corpus: { documents: number };
    };
    expect(summary.steps).toBe(8);
    expect(summary.history).toHaveLength(8);
    expect(summary.corpus.documents).toBe(2);

    const tuned = path.join(dir, 'from-pretrained');
    const f = elmo(['finetune', '--train', trainJsonl, '--init-from', out, '--epochs', '1', '--out', tuned]);
    expect(f.err).not.toContain('ERR_');
    expect(f.code).toBe(0);
    using model = await Bert.load(tuned);
    expect([...model.labels].sort()).toEqual(['city', 'music', 'sport']);

    // --per-label: a seeded few-shot sample, from random init of the pretrained architecture.
    const few = path.join(dir, 'few-shot');
    const p = elmo([
      'finetune',
      '--train',
      trainJsonl,
      '--model',
      out,
      '--random-init',
      '--per-label',
      '2',
      '--epochs',
      '1',
      '--out',
      few,
    ]);
    expect(p.code).toBe(0);
    expect(p.err).toContain('6 examples (--per-label 2)');
    const m = JSON.parse(fs.readFileSync(path.join(few, 'metrics.json'), 'utf8')) as {
      recipe: { perLabel: number; trainExamples: number; init: { from: string } };
    };
    expect(m.recipe).toMatchObject({ perLabel: 2, trainExamples: 6, init: { from: 'random-init' } });
  });

  it('usage errors exit 2; a missing corpus exits 1 with ERR_INPUT', () => {
    const out = path.join(dir, 'never');
    const cases: [string[], string][] = [
      [['pretrain', '--out', out], '--corpus PATH is required'],
      [['pretrain', '--corpus', trainJsonl, '--out', out, '--steps', '2', '--minutes', '1'], 'give one of --minutes'],
      [
        ['pretrain', '--corpus', trainJsonl, '--out', out, '--model', CLS_MODEL, '--config', 'tiny'],
        '--model DIR brings',
      ],
    ];
    for (const [args, message] of cases) {
      const r = elmo(args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.err).toContain(message);
    }
    const missing = elmo([
      'pretrain',
      '--corpus',
      path.join(dir, 'nope'),
      '--config',
      'tiny',
      '--steps',
      '1',
      '--out',
      out,
    ]);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('ERR_INPUT');
    expect(fs.existsSync(out)).toBe(false);
  });
});
