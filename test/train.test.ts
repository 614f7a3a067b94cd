// Training from TypeScript: trainer.step against the PyTorch fixtures, fineTune / evaluate on
// every task, checkpoints and exact resume, abort, and the bad-input cases of the API.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { AbortedError, Bert, CheckpointError, InputError, NonFiniteError, Tokenizer } from '../lib';
import type { Example } from '../lib/train/data';
import { rejection, tmpDir } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures');

interface TrainManifest {
  ids: number[];
  type_ids: number[];
  offsets: number[];
  labels: number[];
  optimizer: { lr: number; weight_decay: number; warmup_steps: number; total_steps: number; max_grad_norm: number };
  losses: number[];
  grad_norms: number[];
  lrs: number[];
}

function manifest(name: string): TrainManifest {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'manifest.json'), 'utf8')) as TrainManifest;
}

const tokenizer = Tokenizer.fromVocab(fs.readFileSync(path.join(FIXTURES, 'bert-a-cls', 'vocab.txt'), 'utf8'));
const tiny = {
  vocabSize: tokenizer.vocabSize,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 2,
  intermediateSize: 64,
  maxPositions: 64,
  typeVocabSize: 2,
};

// A learnable toy task: the label is which of three word groups the text's first words come from.
const WORDS = ['the', 'a', 'of', 'and', 'to', 'in', 'is', 'it', 'you', 'that', 'he', 'was'];
function toyExamples(n: number, offset = 0): Example[] {
  const out: Example[] = [];
  for (let i = offset; i < offset + n; i++) {
    const k = i % 3;
    const g = WORDS.slice(k * 4, k * 4 + 4);
    out.push({
      text: `${g[i % 4] ?? ''} ${g[(i + 1) % 4] ?? ''} ${WORDS[(i * 7) % 12] ?? ''}`,
      label: ['x', 'y', 'z'][k] ?? 'x',
    });
  }
  return out;
}

describe('trainer.step', () => {
  it.each([
    ['train-seq', 'sequence'],
    ['train-token', 'token'],
    ['train-mlm', 'mlm'],
  ] as const)('%s: loss, gradient norm and learning rate of 5 AdamW steps as PyTorch', async (name, task) => {
    const m = manifest(name);
    using model = await Bert.load(path.join(FIXTURES, name), { device: 'cpu' });
    const o = m.optimizer;
    const trainer = model.trainer({
      task,
      learningRate: o.lr,
      weightDecay: o.weight_decay,
      warmupSteps: o.warmup_steps,
      totalSteps: o.total_steps,
      maxGradNorm: o.max_grad_norm,
    });
    const batch = {
      ids: Int32Array.from(m.ids),
      typeIds: Int32Array.from(m.type_ids),
      offsets: Int32Array.from(m.offsets),
      labels: Int32Array.from(m.labels),
    };
    for (let s = 0; s < 5; s++) {
      const r = await trainer.step(batch);
      expect(r.step).toBe(s + 1);
      expect(Math.abs(r.loss - (m.losses[s] ?? NaN))).toBeLessThan(1e-5 * (m.losses[s] ?? 1));
      expect(Math.abs(r.gradNorm - (m.grad_norms[s] ?? NaN))).toBeLessThan(1e-4 * (m.grad_norms[s] ?? 1));
      expect(r.lr).toBeCloseTo(m.lrs[s] ?? NaN, 9);
    }
    expect(trainer.steps).toBe(5);
    await trainer.dispose();
  });

  it('checks its options and labels with typed errors', async () => {
    using model = await Bert.load(path.join(FIXTURES, 'train-seq'), { device: 'cpu' });
    expect(() => model.trainer({ task: 'token' })).toThrow(InputError);
    expect(() => model.trainer({ learningRate: -1 })).toThrow(/learningRate/);
    expect(() => model.trainer({ schedule: 'linear' })).toThrow(/totalSteps/);
    const trainer = model.trainer({ learningRate: 1e-3 });
    const ids = Int32Array.of(101, 300, 102);
    const offsets = Int32Array.of(0, 3);
    expect((await rejection(trainer.step({ ids, offsets, labels: Float32Array.of(1) }))).code).toBe('ERR_DTYPE');
    expect((await rejection(trainer.step({ ids, offsets, labels: Int32Array.of(7) }))).code).toBe('ERR_INPUT');
    expect((await rejection(trainer.step({ ids, offsets, labels: Int32Array.of(0, 1) }))).code).toBe('ERR_SHAPE');
    expect(trainer.steps).toBe(0);
    const r = await trainer.step([
      { ids, offsets, labels: Int32Array.of(1) },
      { ids, offsets, labels: Int32Array.of(2) },
    ]);
    expect(r.count).toBe(2);
    await trainer.dispose();
    // The model is usable for inference afterwards.
    expect((await model.predict(['hello'])).length).toBe(1);
  });
});

describe('fineTune and evaluate', () => {
  it('learns a sequence task; evaluate gives accuracy, macro-F1, per-label scores and the confusion matrix', async () => {
    using model = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 3 });
    const progress: number[] = [];
    const result = await model.fineTune(toyExamples(240), {
      epochs: 12,
      learningRate: 1e-3,
      batchSize: 16,
      evalSet: toyExamples(60, 1000),
      progressIntervalMs: 0,
      onProgress: (p) => {
        if (p.phase === 'train') progress.push(p.step);
      },
    });
    expect(result.task).toBe('sequence');
    expect(result.labels).toEqual(['x', 'y', 'z']);
    expect(result.steps).toBe(12 * 15);
    expect(progress.length).toBeGreaterThan(10);
    expect(result.history[0]?.lr).toBe(0); // warmup starts at 0, as transformers
    const m = await model.evaluate(toyExamples(60, 1000));
    expect(m.task).toBe('sequence');
    if (m.task !== 'sequence') return;
    expect(m.accuracy).toBeGreaterThan(0.9);
    expect(m.count).toBe(60);
    expect(m.perLabel.map((p) => p.label)).toEqual(['x', 'y', 'z']);
    expect(m.confusion.flat().reduce((a, b) => a + b, 0)).toBe(60);
    expect(result.evalMetrics?.task).toBe('sequence');
    expect(model.labels).toEqual(['x', 'y', 'z']);
    const [p] = await model.predict([toyExamples(1)[0]?.text ?? '']);
    expect(p?.label).toBe('x');
  });

  it('multi-label, regression and token tasks train and evaluate', async () => {
    const ml: Example[] = toyExamples(90).map((e, i) => ({
      text: e.text ?? '',
      labels: i % 3 === 0 ? ['p', 'q'] : i % 3 === 1 ? ['q'] : [],
    }));
    using a = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 4 });
    const r1 = await a.fineTune(ml, { epochs: 2, evalSet: ml.slice(0, 30) });
    expect(r1.task).toBe('multi-label');
    expect(a.config.problemType).toBe('multi_label_classification');
    const m1 = await a.evaluate(ml.slice(0, 30));
    expect(m1.task === 'multi-label' && m1.perLabel.length === 2).toBe(true);

    const reg: Example[] = toyExamples(60).map((e, i) => ({ text: e.text ?? '', label: (i % 3) * 0.5 }));
    using b = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 5 });
    const r2 = await b.fineTune(reg, { epochs: 2 });
    expect(r2.task).toBe('regression');
    const m2 = await b.evaluate(reg);
    expect(m2.task === 'regression' && Number.isFinite(m2.mse)).toBe(true);

    const tok: Example[] = [];
    for (let i = 0; i < 60; i++) {
      const tokens = ['the', 'bank', 'of', 'you', 'was', 'it'].slice(0, 3 + (i % 4));
      tok.push({ tokens, tags: tokens.map((t) => (t === 'bank' ? 'B-ORG' : t === 'of' ? 'I-ORG' : 'O')) });
    }
    using c = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 6 });
    const r3 = await c.fineTune(tok, { epochs: 15, batchSize: 8 });
    expect(r3.task).toBe('token');
    expect(c.config.heads.tokenClassifier).toBe(true);
    const m3 = await c.evaluate(tok);
    expect(m3.task).toBe('token');
    if (m3.task === 'token') expect(m3.f1).toBeGreaterThan(0.8);
    // A token model saves as BertForTokenClassification and loads back.
    const dir = tmpDir('train-test');
    await c.save(dir);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).architectures).toEqual([
      'BertForTokenClassification',
    ]);
    using back = await Bert.load(dir, { device: 'cpu' });
    const again = await back.evaluate(tok);
    expect(again).toEqual(m3);
  });

  it("precision 'bf16' trains too (bf16 forward operands, f32 masters, gradients and moments)", async () => {
    using a = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 3 });
    using b = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 3, precision: 'bf16' });
    const opts = { epochs: 12, batchSize: 16, learningRate: 1e-3, evalSet: toyExamples(60, 1000) };
    const ra = await a.fineTune(toyExamples(240), opts);
    const rb = await b.fineTune(toyExamples(240), opts);
    expect(rb.evalMetrics?.task === 'sequence' && rb.evalMetrics.accuracy).toBeGreaterThan(0.9);
    // Same recipe, bf16 rounding of the forward's operands: the losses stay close.
    expect(Math.abs(rb.trainLoss - ra.trainLoss)).toBeLessThan(0.05);
    expect(rb.history[5]?.loss).not.toBe(ra.history[5]?.loss);
  });

  it('bad input: empty data, a label unseen in training, a head with other labels', async () => {
    using model = Bert.create({ ...tiny, labels: ['a', 'b'] }, { tokenizer, device: 'cpu', seed: 1 });
    await expect(model.fineTune([])).rejects.toThrow(InputError);
    const err = await rejection(
      model.fineTune(toyExamples(9), { evalSet: [{ text: 'hi', label: 'w' }], resetHead: true }),
    );
    expect(err.code).toBe('ERR_INPUT');
    expect(err.message).toMatch(/'w'|w/);
    const head = await rejection(model.fineTune(toyExamples(9)));
    expect(head.code).toBe('ERR_INPUT');
    expect(head.message).toMatch(/resetHead/);
    expect(model.labels).toEqual(['a', 'b']); // nothing changed
    const r = await model.fineTune(toyExamples(9), { resetHead: true, epochs: 1 });
    expect(r.labels).toEqual(['x', 'y', 'z']);
    expect(model.labels).toEqual(['x', 'y', 'z']);
  });

  it('a NaN loss stops with ERR_NONFINITE naming the step; the model goes back to the last good checkpoint', async () => {
    using model = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 3 });
    const dir = tmpDir('train-test');
    const data = toyExamples(64);
    // A learning rate of 900 without clipping blows the weights up within a few epochs.
    const err = await rejection(
      model.fineTune(data, {
        epochs: 50,
        batchSize: 8,
        learningRate: 900,
        maxGradNorm: 0,
        warmupRatio: 0,
        checkpointDir: dir,
      }),
    );
    expect(err).toBeInstanceOf(NonFiniteError);
    expect(err.message).toMatch(/^step \d+: the (loss|gradient norm) is (NaN|infinite); the step was not applied/);
    expect(err.message).toMatch(/last good checkpoint/);
    const ckpts = fs.readdirSync(dir).filter((n) => n.startsWith('checkpoint-'));
    expect(ckpts.length).toBeGreaterThan(0);
    const [p] = await model.predict([data[0]?.text ?? '']);
    for (const v of p?.scores ?? [NaN]) expect(Number.isFinite(v)).toBe(true);
  });

  it('an AbortSignal stops between steps; the model stays usable', async () => {
    using model = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 2 });
    const ac = new AbortController();
    const err = await rejection(
      model.fineTune(toyExamples(120), {
        epochs: 5,
        batchSize: 8,
        signal: ac.signal,
        progressIntervalMs: 0,
        onProgress: (p) => {
          if (p.step >= 3) ac.abort();
        },
      }),
    );
    expect(err).toBeInstanceOf(AbortedError);
    expect(err.message).toMatch(/step 3/);
    expect((await model.predict(['the a'])).length).toBe(1);
  });

  it('checkpoints: an interrupted run resumed from its last checkpoint ends with the same bits', async () => {
    const data = toyExamples(96);
    const opts = { epochs: 3, batchSize: 16, seed: 11 };
    using straight = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 9 });
    await straight.fineTune(data, opts);

    const dir = tmpDir('train-test');
    using first = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 9 });
    const ac = new AbortController();
    await expect(
      first.fineTune(data, {
        ...opts,
        checkpointDir: dir,
        signal: ac.signal,
        progressIntervalMs: 0,
        onProgress: (p) => {
          if (p.epoch === 2 && p.step >= 8) ac.abort(); // mid-epoch 2: the last checkpoint is epoch 1's
        },
      }),
    ).rejects.toThrow(AbortedError);
    const ckpts = fs.readdirSync(dir).filter((n) => n.startsWith('checkpoint-'));
    expect(ckpts).toEqual(['checkpoint-6']);
    for (const f of ['model.safetensors', 'config.json', 'optimizer.safetensors', 'trainer_state.json', 'vocab.txt']) {
      expect(fs.existsSync(path.join(dir, 'checkpoint-6', f))).toBe(true);
    }
    using resumed = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 1234 }); // other weights: all come from the checkpoint
    await resumed.fineTune(data, { ...opts, checkpointDir: dir, resume: true });
    const texts = data.slice(0, 8).map((e) => e.text ?? '');
    const a = await straight.forward(texts);
    const b = await resumed.forward(texts);
    expect(Buffer.from(b.hidden.buffer).equals(Buffer.from(a.hidden.buffer))).toBe(true);
    expect(
      Buffer.from((b.logits ?? new Float32Array()).buffer).equals(Buffer.from((a.logits ?? new Float32Array()).buffer)),
    ).toBe(true);

    // A checkpoint of another run (other epochs, so another schedule) is refused.
    using other = Bert.create(tiny, { tokenizer, device: 'cpu', seed: 9 });
    const e2 = await rejection(other.fineTune(data, { ...opts, epochs: 4, checkpointDir: dir, resume: true }));
    expect(e2).toBeInstanceOf(CheckpointError);
  });
});
