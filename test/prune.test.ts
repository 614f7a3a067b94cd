// Pruning: FFN neurons by weight magnitude, attention heads by ablation, the recovery fine-tune,
// the checkpoint format (elmo_pruned_heads) and `elmo prune`, on tiny models made here.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Bert } from '../lib';
import { main } from '../lib/cli';
import {
  PRUNED_HEADS_KEY,
  headImportance,
  prune,
  pruneFfn,
  pruneHeads,
  readPrunedHeads,
  selectHeads,
} from '../lib/prune';
import type { HeadImportanceResult } from '../lib/prune';
import { readSafetensors, writeSafetensors } from '../lib/safetensors';
import { tokenizer, toy } from './chat-toy';
import { expectClose, rejection, tmpDir } from './helpers';

const LABELS = ['music', 'support', 'travel'];
const TINY = {
  vocabSize: tokenizer.vocabSize,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 4,
  intermediateSize: 64,
  maxPositions: 64,
  typeVocabSize: 2,
  labels: LABELS,
};
const TEXTS = ['i want to go to london', 'play some music from york now', 'please help me in paris', 'hi'];
const DATA = toy(48, 1).map((t) => ({ text: t.text, label: t.intent ?? '' }));
const DEV = toy(24, 5).map((t) => ({ text: t.text, label: t.intent ?? '' }));

function tinyModel(seed = 3): Bert {
  return Bert.create(TINY, { tokenizer, device: 'cpu', seed, threads: 1 });
}

async function logits(model: Bert): Promise<Float32Array> {
  const out = await model.forward(TEXTS);
  if (out.logits === undefined) throw new Error('no logits');
  return out.logits;
}

/** The model saved, its tensors edited by `edit`, loaded again. */
async function edited(model: Bert, edit: (t: Map<string, { shape: readonly number[]; data: Float32Array }>) => void) {
  const dir = tmpDir('prune-edit');
  await model.save(dir);
  const file = path.join(dir, 'model.safetensors');
  const st = readSafetensors(file);
  edit(st.tensors as Map<string, { shape: readonly number[]; data: Float32Array }>);
  writeSafetensors(file, st);
  return { dir, model: await Bert.load(dir, { device: 'cpu', threads: 1 }) };
}

function tensor(t: ReadonlyMap<string, { data: Float32Array }>, name: string): Float32Array {
  const x = t.get(name);
  if (x === undefined) throw new Error(`no ${name}`);
  return x.data;
}

const H = TINY.hiddenSize;
const I = TINY.intermediateSize;
const d = H / TINY.numHeads;

describe('pruneFfn', () => {
  test('keeping every neuron gives the same model, bit for bit', async () => {
    using model = tinyModel();
    using same = await pruneFfn(model, { keep: I });
    expect(same.config.intermediateSize).toBe(I);
    expect(Array.from(await logits(same))).toEqual(Array.from(await logits(model)));
  });

  test('sparsity 0.5 halves intermediate_size in the model and in the saved checkpoint', async () => {
    using model = tinyModel();
    using half = await pruneFfn(model, { sparsity: 0.5 });
    expect(half.config.intermediateSize).toBe(I / 2);
    expect(half.config.numParameters).toBe(model.config.numParameters - TINY.numLayers * (I / 2) * (2 * H + 1));
    const dir = tmpDir('prune-ffn');
    await half.save(dir);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(cfg.intermediate_size).toBe(I / 2);
    const st = readSafetensors(path.join(dir, 'model.safetensors'));
    expect(st.tensors.get('bert.encoder.layer.1.intermediate.dense.weight')?.shape).toEqual([I / 2, H]);
    expect(st.tensors.get('bert.encoder.layer.1.output.dense.weight')?.shape).toEqual([H, I / 2]);
    using again = await Bert.load(dir, { device: 'cpu', threads: 1 });
    expect(Array.from(await logits(again))).toEqual(Array.from(await logits(half)));
    // The input model is untouched.
    expect(model.config.intermediateSize).toBe(I);
  });

  test('pruning neurons whose weights are zero leaves the outputs as they were', async () => {
    using model = tinyModel();
    // Layer 0: 16 neurons with a zero input row and bias; layer 1: 16 with a zero output column.
    const dead0 = Array.from({ length: 16 }, (_, i) => 3 + i * 3);
    const dead1 = Array.from({ length: 16 }, (_, i) => 60 - i * 2);
    const { model: zeroed } = await edited(model, (t) => {
      const win = tensor(t, 'bert.encoder.layer.0.intermediate.dense.weight');
      const bin = tensor(t, 'bert.encoder.layer.0.intermediate.dense.bias');
      for (const j of dead0) {
        win.fill(0, j * H, (j + 1) * H);
        bin[j] = 0;
      }
      const wout = tensor(t, 'bert.encoder.layer.1.output.dense.weight');
      for (const j of dead1) for (let r = 0; r < H; r++) wout[r * I + j] = 0;
    });
    using z = zeroed;
    using narrow = await pruneFfn(z, { keep: I - 16 });
    expect(narrow.config.intermediateSize).toBe(I - 16);
    expectClose(await logits(narrow), await logits(z), 1e-6, 1e-5);
    const dir = tmpDir('prune-ffn-dead');
    await narrow.save(dir);
    const st = readSafetensors(path.join(dir, 'model.safetensors'));
    // No zero row left in layer 0's W_in: the dead neurons are the ones removed.
    const win = tensor(st.tensors, 'bert.encoder.layer.0.intermediate.dense.weight');
    for (let j = 0; j < I - 16; j++) expect(win.subarray(j * H, (j + 1) * H).some((v) => v !== 0)).toBe(true);
  });
});

describe('pruneHeads', () => {
  const HEADS = { 0: [1, 3], 1: [0] };

  test('outputs equal those of the model with the heads masked', async () => {
    using model = tinyModel();
    using pruned = await pruneHeads(model, HEADS);
    // The reference: only the heads' columns of the attention output projection zeroed.
    const { model: masked } = await edited(model, (t) => {
      for (const [l, hs] of Object.entries(HEADS)) {
        const wo = tensor(t, `bert.encoder.layer.${l}.attention.output.dense.weight`);
        for (const h of hs) for (let r = 0; r < H; r++) wo.fill(0, r * H + h * d, r * H + (h + 1) * d);
      }
    });
    using m = masked;
    const got = await logits(pruned);
    expectClose(got, await logits(m), 1e-6, 1e-5);
    expect(Array.from(got)).not.toEqual(Array.from(await logits(model)));
    // The engine holds the kept heads only: 3 pruned heads' q, k, v rows and biases and output columns less.
    expect(pruned.config.numParameters).toBe(model.config.numParameters - 3 * (4 * d * H + 3 * d));
  });

  test('the checkpoint keeps full shapes, zeroes the heads and lists them under elmo_pruned_heads', async () => {
    using model = tinyModel();
    using pruned = await pruneHeads(model, HEADS);
    const dir = tmpDir('prune-heads');
    await pruned.save(dir);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(cfg[PRUNED_HEADS_KEY]).toEqual({ 0: [1, 3], 1: [0] });
    expect(cfg.pruned_heads).toBeUndefined();
    expect(cfg.num_attention_heads).toBe(TINY.numHeads);
    expect(readPrunedHeads(dir)).toEqual({ 0: [1, 3], 1: [0] });
    const st = readSafetensors(path.join(dir, 'model.safetensors'));
    const v = st.tensors.get('bert.encoder.layer.0.attention.self.value.weight');
    expect(v?.shape).toEqual([H, H]);
    expect(v?.data.subarray(1 * d * H, 2 * d * H).every((x) => x === 0)).toBe(true);
    expect(v?.data.subarray(2 * d * H, 3 * d * H).some((x) => x !== 0)).toBe(true);
    using again = await Bert.load(dir, { device: 'cpu', threads: 1 });
    expect(Array.from(await logits(again))).toEqual(Array.from(await logits(pruned)));
    expect(again.config.prunedHeads).toEqual({ 0: [1, 3], 1: [0] });
    expect(model.config.prunedHeads).toEqual({});

    // Pruning more heads of a pruned model merges the lists.
    using more = await pruneHeads(again, { 1: [2] });
    const dir2 = tmpDir('prune-heads-more');
    await more.save(dir2);
    expect(readPrunedHeads(dir2)).toEqual({ 0: [1, 3], 1: [0, 2] });
  });
});

describe('headImportance and selectHeads', () => {
  test('one ablation per head; a head already zeroed is worth exactly nothing', async () => {
    using model = tinyModel();
    using pruned = await pruneHeads(model, { 1: [2] });
    const progress: number[] = [];
    const imp = await headImportance(pruned, DATA, { maxExamples: 30, onProgress: (p) => progress.push(p.done) });
    expect(imp.examples).toBe(30);
    expect(imp.heads).toHaveLength(TINY.numLayers * TINY.numHeads);
    expect(progress).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(imp.heads.map((h) => [h.layer, h.head])).toEqual([
      [0, 0],
      [0, 1],
      [0, 2],
      [0, 3],
      [1, 0],
      [1, 1],
      [1, 2],
      [1, 3],
    ]);
    const dead = imp.heads.find((h) => h.layer === 1 && h.head === 2);
    expect(dead?.importance).toBe(0);
    expect(dead?.loss).toBe(imp.baseLoss);
    expect(imp.heads.filter((h) => h.importance !== 0).length).toBeGreaterThan(4);
    expect(imp.baseAccuracy).toBeGreaterThanOrEqual(0);
    // Deterministic: the same sample and numbers again.
    const again = await headImportance(pruned, DATA, { maxExamples: 30 });
    expect(again).toEqual(imp);
  });

  test('selectHeads: least important first, at least minPerLayer kept per layer', () => {
    const imp: HeadImportanceResult = {
      examples: 10,
      baseLoss: 1,
      baseAccuracy: 0.5,
      heads: [
        [0, 0, 0.1],
        [0, 1, -0.2],
        [0, 2, 0.05],
        [1, 0, 0.3],
        [1, 1, 0.01],
        [1, 2, 0.4],
      ].map(([layer, head, importance]) => ({
        layer: layer!,
        head: head!,
        importance: importance!,
        loss: 1 + importance!,
        accuracy: 0.5,
      })),
    };
    expect(selectHeads(imp, { count: 2 })).toEqual({ 0: [1], 1: [1] });
    expect(selectHeads(imp, { sparsity: 0.5 })).toEqual({ 0: [1, 2], 1: [1] });
    // Five asked, four allowed: each layer keeps one head.
    expect(selectHeads(imp, { count: 5 })).toEqual({ 0: [1, 2], 1: [0, 1] });
    expect(selectHeads(imp, { count: 6, minPerLayer: 2 })).toEqual({ 0: [1], 1: [1] });
    expect(() => selectHeads(imp, { count: 6, minPerLayer: 0 })).toThrow(/integer >= 1 for options.minPerLayer/);
    expect(selectHeads(imp, { sparsity: 0 })).toEqual({});
  });
});

describe('prune', () => {
  test('heads and FFN, then a recovery fine-tune; saved, the model lists its heads and reloads the same', async () => {
    using model = tinyModel();
    const phases = new Set<string>();
    const r = await prune(model, {
      data: DATA,
      evalSet: DEV,
      heads: 0.25,
      ffn: 0.5,
      recoverEpochs: 2,
      importanceExamples: 24,
      recover: { learningRate: 1e-3, batchSize: 8 },
      onProgress: (p) => phases.add(p.phase),
    });
    using pruned = r.model;
    expect(r.headsPruned).toBe(2);
    expect(r.headsTotal).toBe(8);
    expect(Object.values(r.heads).flat()).toHaveLength(2);
    expect(r.intermediateSize).toEqual({ before: I, after: I / 2 });
    expect(r.parameters.before).toBe(model.config.numParameters);
    expect(r.parameters.after).toBe(pruned.config.numParameters);
    // The engine holds the kept heads only: per pruned head, q, k, v rows (d x H) and biases
    // (d) and d columns of the output projection less; the FFN loses half its neurons.
    expect(r.parameters.after).toBe(
      r.parameters.before - 2 * (4 * d * H + 3 * d) - TINY.numLayers * (I / 2) * (2 * H + 1),
    );
    expect(r.importance?.heads).toHaveLength(8);
    expect(r.recovery?.epochs).toBe(2);
    expect(r.eval?.before.task).toBe('sequence');
    expect(r.eval?.pruned).toBeDefined();
    expect(r.eval?.recovered).toBeDefined();
    expect([...phases].sort()).toEqual(['evaluate', 'importance', 'recover']);
    // Saved, it lists its heads and reloads with the same outputs.
    const dir = tmpDir('prune-all');
    await pruned.save(dir);
    expect(readPrunedHeads(dir)).toEqual(r.heads);
    expect(pruned.config.prunedHeads).toEqual(r.heads);
    using again = await Bert.load(dir, { device: 'cpu', threads: 1 });
    expect(Array.from(await logits(again))).toEqual(Array.from(await logits(pruned)));
    expect(model.config.intermediateSize).toBe(I);
  });

  test('heads listed in config.json are removed at load, whatever their weights; saved, they are zero', async () => {
    using model = tinyModel();
    const dir = tmpDir('prune-listed');
    await model.save(dir);
    const file = path.join(dir, 'config.json');
    const cfg = JSON.parse(fs.readFileSync(file, 'utf8'));
    fs.writeFileSync(file, JSON.stringify({ ...cfg, [PRUNED_HEADS_KEY]: { 1: [3] } }));
    using listed = await Bert.load(dir, { device: 'cpu', threads: 1 });
    expect(listed.config.numParameters).toBe(model.config.numParameters - (4 * d * H + 3 * d));
    using reference = await pruneHeads(model, { 1: [3] });
    expectClose(await logits(listed), await logits(reference), 1e-6, 1e-5);
    const r = await prune(listed, { recoverEpochs: 0 });
    using copy = r.model;
    expect(r.heads).toEqual({ 1: [3] });
    const out = tmpDir('prune-listed-out');
    await copy.save(out);
    const st = readSafetensors(path.join(out, 'model.safetensors'));
    const v = tensor(st.tensors, 'bert.encoder.layer.1.attention.self.value.weight');
    expect(v.length).toBe(H * H);
    expect(v.subarray(3 * d * H).every((x) => x === 0)).toBe(true);
    expect(v.subarray(0, 3 * d * H).some((x) => x !== 0)).toBe(true);
  });

  test('nothing to prune and no recovery: a copy with the same outputs', async () => {
    using model = tinyModel();
    const r = await prune(model, { recoverEpochs: 0 });
    using copy = r.model;
    expect(r.headsPruned).toBe(0);
    expect(r.parameters.after).toBe(r.parameters.before);
    expect(Array.from(await logits(copy))).toEqual(Array.from(await logits(model)));
  });
});

describe('bad input gets typed errors', () => {
  test('pruneFfn, pruneHeads, headImportance, prune, selectHeads, readPrunedHeads', async () => {
    using model = tinyModel();
    const cases: [() => Promise<unknown>, string, RegExp][] = [
      [() => pruneFfn(model, {}), 'ERR_INPUT', /exactly one of options.keep and options.sparsity .* neither/],
      [() => pruneFfn(model, { keep: 8, sparsity: 0.5 }), 'ERR_INPUT', /both/],
      [() => pruneFfn(model, { keep: 0 }), 'ERR_INPUT', /integer in \[1, 64\] for options.keep but received number 0/],
      [() => pruneFfn(model, { keep: 65 }), 'ERR_INPUT', /options.keep/],
      [() => pruneFfn(model, { sparsity: 1 }), 'ERR_INPUT', /number in \[0, 1\) for options.sparsity/],
      [() => pruneFfn('model' as never, { keep: 1 }), 'ERR_INPUT', /Expected a Bert model for model/],
      [() => pruneHeads(model, { 2: [0] }), 'ERR_INPUT', /layer index in \[0, 2\) .* received string '2'/],
      [() => pruneHeads(model, { 0: [4] }), 'ERR_INPUT', /head index in \[0, 4\) for heads\[0\] but received number 4/],
      [() => pruneHeads(model, { 0: 1 } as never), 'ERR_INPUT', /an array of head indices/],
      [() => pruneHeads(model, null as never), 'ERR_INPUT', /an object/],
      [() => pruneHeads(model, { 0: [0, 1, 2, 3] }), 'ERR_INPUT', /at least one head left in layer 0/],
      [() => headImportance(model, [{ text: 'hi', label: 'weather' }]), 'ERR_INPUT', /weather/],
      [() => headImportance(model, DATA, { maxExamples: 0 }), 'ERR_INPUT', /options.maxExamples/],
      [() => headImportance(model, []), 'ERR_INPUT', /at least one labelled example/],
      [() => prune(model, { heads: 0.5 }), 'ERR_INPUT', /options.data/],
      [() => prune(model, { data: DATA, heads: -0.1 }), 'ERR_INPUT', /options.heads/],
      [() => prune(model, { data: DATA, ffn: 2 }), 'ERR_INPUT', /options.ffn/],
      [() => prune(model, { data: DATA, recoverEpochs: 1.5 }), 'ERR_INPUT', /options.recoverEpochs/],
    ];
    for (const [p, code, message] of cases) {
      const err = await rejection(p());
      expect([err.code, err.message]).toEqual([code, expect.stringMatching(message)]);
    }
    // A model without a classification head has no loss to measure heads by.
    using bare = Bert.create({ ...TINY, labels: undefined } as never, { tokenizer, device: 'cpu', threads: 1 });
    expect((await rejection(headImportance(bare, DATA))).message).toMatch(/single-label sequence-classification head/);
    expect(() => selectHeads({} as never, { count: 1 })).toThrow(/the result of headImportance/);
    expect(() => readPrunedHeads('')).toThrow(expect.objectContaining({ code: 'ERR_INPUT' }));
    const dir = tmpDir('prune-bad');
    fs.writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({ num_hidden_layers: 2, num_attention_heads: 4, [PRUNED_HEADS_KEY]: { 0: [7] } }),
    );
    expect(() => readPrunedHeads(dir)).toThrow(expect.objectContaining({ code: 'ERR_CHECKPOINT' }));
    // A disposed model.
    const gone = tinyModel();
    gone.dispose();
    expect((await rejection(pruneFfn(gone, { keep: 1 }))).code).toBe('ERR_DISPOSED');
  });
});

describe('elmo prune', () => {
  test('prunes a checkpoint, recovers, writes the model and prune.json', async () => {
    using model = tinyModel();
    const work = tmpDir('prune-cli');
    const src = path.join(work, 'model');
    await model.save(src);
    const csv = (rows: { text: string; label: string }[]): string =>
      `text,label\n${rows.map((r) => `${r.text},${r.label}`).join('\n')}\n`;
    fs.writeFileSync(path.join(work, 'train.csv'), csv(DATA));
    fs.writeFileSync(path.join(work, 'dev.csv'), csv(DEV));
    const out = path.join(work, 'pruned');
    const lines: string[] = [];
    const errors: string[] = [];
    const code = await main(
      [
        'prune',
        '--model',
        src,
        '--data',
        path.join(work, 'train.csv'),
        '--eval',
        path.join(work, 'dev.csv'),
        '--heads',
        '0.25',
        '--ffn',
        '0.25',
        '--recover-epochs',
        '1',
        '--importance-examples',
        '24',
        '--device',
        'cpu',
        '--threads',
        '1',
        '--out',
        out,
      ],
      (l) => lines.push(l),
      (l) => errors.push(l),
    );
    expect([code, errors.filter((e) => /ERR_|error/.test(e))]).toEqual([0, []]);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(cfg.intermediate_size).toBe(48);
    expect(Object.values(cfg[PRUNED_HEADS_KEY] as Record<string, number[]>).flat()).toHaveLength(2);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'prune.json'), 'utf8'));
    expect(report.headsPruned).toBe(2);
    expect(report.eval.recovered.accuracy).toEqual(expect.any(Number));
    expect(lines.join('\n')).toMatch(/accuracy/);
    using again = await Bert.load(out, { device: 'cpu', threads: 1 });
    expect(again.config.intermediateSize).toBe(48);

    // A share outside [0, 1) is a usage error (exit 2).
    const bad: string[] = [];
    const code2 = await main(
      ['prune', '--model', src, '--data', path.join(work, 'train.csv'), '--ffn', '1.5', '--out', out],
      () => undefined,
      (l) => bad.push(l),
    );
    expect(code2).toBe(2);
    expect(bad.join('\n')).toMatch(/--ffn expects a number in \[0, 1\)/);
  });
});
