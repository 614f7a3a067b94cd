/**
 * `elmo finetune` and `elmo eval`: {@link Bert.fineTune} and {@link Bert.evaluate} from the
 * command line.
 *
 * Where the starting weights come from (exactly one of):
 * - `--model DIR`: a checkpoint, fine-tuned further; its head is kept when the data's labels
 *   fit it, replaced with `--reset-head`, and added when it has none;
 * - `--model DIR --random-init`: fresh weights with that checkpoint's architecture and tokenizer;
 * - `--config tiny|mini|small|base`: fresh weights of a standard size, with the tokenizer of
 *   `--vocab FILE` (or of `--model DIR`);
 * - `--init-from DIR`: a pretrained encoder, with a fresh head for the data's labels.
 *
 * At the end the model is saved to `--out`, the run's numbers to `--metrics-out` (default
 * `<out>/metrics.json`: the FineTuneResult plus `recipe`, `machine` and `command`) and the
 * HTML report to `--report` (default `<out>/report.html`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Command, Option } from 'commander';

import { Bert } from '../bert';
import type { BertConfig, BertModelInfo, BertRunOptions } from '../bert';
import type { DeviceRequest } from '../devices';
import { InputError } from '../errors';
import { Tokenizer } from '../tokenizer';
import { samplePerLabel } from '../train/data';
import type { TrainTask } from '../train/data';
import { collectExamples } from '../train/fine-tune';
import type { EvalMetrics, FineTuneOptions, FineTuneResult } from '../train/fine-tune';
import type { CliIo } from './args';
import {
  UsageError,
  choice,
  configureCommand,
  deviceOption,
  integer,
  interruptible,
  number,
  precisionOption,
  usageError,
} from './args';
import { metricsLine, progressDisplay } from './progress';
import { fmt, perLabelScores, renderReport, scalarMetrics } from './report';

/** Standard BERT sizes for `--config` (Turc et al. 2019 for tiny / mini / small; bert-base). */
export const CONFIG_PRESETS = {
  tiny: { numLayers: 2, hiddenSize: 128, numHeads: 2, intermediateSize: 512 },
  mini: { numLayers: 4, hiddenSize: 256, numHeads: 4, intermediateSize: 1024 },
  small: { numLayers: 4, hiddenSize: 512, numHeads: 8, intermediateSize: 2048 },
  base: { numLayers: 12, hiddenSize: 768, numHeads: 12, intermediateSize: 3072 },
} as const;

export type ConfigPreset = keyof typeof CONFIG_PRESETS;

const TASKS: readonly TrainTask[] = ['sequence', 'multi-label', 'regression', 'token'];

/** Flags of `elmo finetune`, as commander hands them over. */
interface FinetuneFlags {
  train: string;
  eval?: string;
  out: string;
  model?: string;
  config?: ConfigPreset;
  randomInit?: boolean;
  perLabel?: number;
  initFrom?: string;
  vocab?: string;
  resetHead?: boolean;
  task?: TrainTask;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  maxSeqLen?: number;
  warmupRatio?: number;
  weightDecay?: number;
  seed: number;
  evalSplit?: number;
  group?: string;
  metric?: string;
  earlyStopping?: number;
  checkpointDir?: string;
  resume?: boolean | string;
  metricsOut?: string;
  report?: string;
  device: DeviceRequest;
  threads?: number;
  progressInterval: number;
}

/** Flags of `elmo eval`. */
interface EvalFlags {
  model: string;
  data: string;
  task?: TrainTask;
  json?: boolean;
  device: DeviceRequest;
  precision: 'fp32' | 'bf16' | 'int8';
  threads?: number;
  maxSeqLen?: number;
  batchSize?: number;
}

/** `obj` without its undefined fields (for options types under exactOptionalPropertyTypes). */
function compact<T extends object>(obj: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], undefined>;
  };
}

/** Adds `elmo finetune`; `argv` is recorded in metrics.json as the command. */
export function addFinetuneCommand(program: Command, io: CliIo, argv: readonly string[]): void {
  const cmd = new Command('finetune')
    .description(
      'fine-tune a classifier (or train one from scratch) on a .jsonl/.json/.csv/.tsv file; saves the ' +
        'model, metrics.json and an HTML report (loss curve, eval metric, per-label scores, confusion matrix)',
    )
    .requiredOption('--train <FILE>', 'training examples')
    .option('--eval <FILE>', 'evaluation examples (evaluated after each epoch; the best epoch is kept)')
    .option('--eval-split <FRACTION>', 'without --eval: hold out this share of --train', number(0, 1, true))
    .option('--group <FIELD>', 'with --eval-split: keep examples sharing this field on one side')
    .requiredOption('--out <DIR>', 'where the fine-tuned model is saved')
    .option('--model <DIR>', 'checkpoint to start from (its tokenizer with --config)')
    .addOption(
      new Option('--config <SIZE>', 'fresh weights of a standard size: tiny, mini, small or base').argParser(
        choice(Object.keys(CONFIG_PRESETS) as ConfigPreset[]),
      ),
    )
    .option('--random-init', "with --model: fresh weights of that checkpoint's architecture")
    .option('--init-from <DIR>', 'pretrained encoder to start from, with a fresh head')
    .option('--per-label <K>', 'train on a seeded sample of K examples per label (few-shot)', integer(1))
    .option('--vocab <FILE>', 'with --config: the WordPiece vocab.txt')
    .option('--reset-head', "with --model: replace a head whose labels differ from the data's")
    .addOption(
      new Option('--task <TASK>', 'sequence, multi-label, regression or token (default: inferred)').argParser(
        choice(TASKS),
      ),
    )
    .option('--epochs <N>', 'passes over the training set (default 5)', integer(1))
    .option('--batch-size <N>', 'most sequences per batch (default 32)', integer(1))
    .option('--lr <X>', 'peak learning rate (default by width: 3e-4 / 1e-4 / 5e-5)', number(0, Infinity, true))
    .option('--max-seq-len <N>', "longest sequence in tokens (default: the model's)", integer(3))
    .option('--warmup-ratio <X>', 'share of the steps spent warming up (default 0.06)', number(0, 1))
    .option('--weight-decay <X>', 'AdamW weight decay (default 0.01)', number(0, Infinity))
    .option('--seed <N>', 'data order, dropout and initial weights', integer(0), 42)
    .option('--metric <NAME>', 'eval metric for early stopping and the best epoch (default per task)')
    .option('--early-stopping <N>', 'stop after N evaluations without improvement', integer(1))
    .option('--checkpoint-dir <DIR>', 'write checkpoint-<step>/ after each epoch')
    .option('--resume [CHECKPOINT]', 'continue from the newest checkpoint in --checkpoint-dir (or this one)')
    .option('--metrics-out <FILE>', 'metrics JSON (default <out>/metrics.json)')
    .option('--report <FILE>', 'HTML report (default <out>/report.html)')
    .addOption(deviceOption())
    .option('--threads <N>', 'CPU threads (default ELMO_NUM_THREADS or all cores)', integer(1))
    .option(
      '--progress-interval <SECONDS>',
      'seconds between progress lines when stderr is not a terminal',
      number(0, Infinity),
      10,
    )
    .addHelpText(
      'after',
      `
Starting weights: --model DIR, --model DIR --random-init, --config SIZE (with --vocab FILE or
--model DIR for the tokenizer) or --init-from DIR.

Examples:
  elmo finetune --train train.jsonl --eval dev.jsonl --model ./bert-base --out ./intent
  elmo finetune --train banking77.csv --eval-split 0.1 --config mini --vocab vocab.txt --out ./b77`,
    )
    .action(async (flags: FinetuneFlags) => {
      try {
        checkFinetuneFlags(flags);
      } catch (err) {
        if (err instanceof UsageError) usageError(cmd, err);
        throw err;
      }
      await runFinetune(flags, io, argv);
    });
  program.addCommand(configureCommand(cmd, io));
}

/** Combinations commander cannot check by itself. */
function checkFinetuneFlags(f: FinetuneFlags): void {
  if (f.model === undefined && f.config === undefined && f.initFrom === undefined) {
    throw new UsageError('no starting weights: give --model DIR, --config SIZE or --init-from DIR');
  }
  if (f.initFrom !== undefined && (f.model !== undefined || f.config !== undefined)) {
    throw new UsageError('--init-from DIR cannot be combined with --model or --config');
  }
  if (f.randomInit === true && (f.model === undefined || f.config !== undefined)) {
    throw new UsageError('--random-init needs --model DIR (and no --config)');
  }
  if (f.vocab !== undefined && f.config === undefined) throw new UsageError('--vocab FILE goes with --config SIZE');
  if (f.eval !== undefined && f.evalSplit !== undefined)
    throw new UsageError('give --eval FILE or --eval-split FRACTION, not both');
  if (f.group !== undefined && f.evalSplit === undefined)
    throw new UsageError('--group FIELD goes with --eval-split FRACTION');
  if (f.earlyStopping !== undefined && f.eval === undefined && f.evalSplit === undefined) {
    throw new UsageError('--early-stopping needs an evaluation set: --eval FILE or --eval-split FRACTION');
  }
  if (f.resume === true && f.checkpointDir === undefined) {
    throw new UsageError('--resume needs --checkpoint-dir DIR (or a checkpoint: --resume DIR)');
  }
}

/** The model to start from, and how it was made (for the recipe). */
async function startingModel(
  f: FinetuneFlags,
  run: BertRunOptions,
): Promise<{ model: Bert; init: Record<string, unknown>; resetHead: boolean }> {
  if (f.initFrom !== undefined) {
    // fineTune keeps a head only when it fits the data's labels; resetHead replaces any other.
    return { model: await Bert.load(f.initFrom, run), init: { from: 'encoder', dir: f.initFrom }, resetHead: true };
  }
  if (f.config !== undefined) {
    let tokenizer: Tokenizer;
    if (f.vocab !== undefined) tokenizer = Tokenizer.fromVocab(f.vocab);
    else if (f.model !== undefined) {
      const source = await Bert.load(f.model, { device: 'cpu' });
      tokenizer = source.tokenizer;
      source.dispose();
    } else {
      throw new InputError(
        `Expected --vocab FILE or --model DIR for the tokenizer of --config ${f.config} but received neither`,
      );
    }
    const config: BertConfig = {
      ...CONFIG_PRESETS[f.config],
      vocabSize: tokenizer.vocabSize,
      maxPositions: 512,
      typeVocabSize: 2,
    };
    const model = Bert.create(config, { ...run, tokenizer, seed: f.seed });
    const init = { from: 'config', config: f.config, vocab: f.vocab ?? f.model ?? null };
    return { model, init, resetHead: false };
  }
  const dir = f.model ?? '';
  if (f.randomInit === true) {
    const source = await Bert.load(dir, run);
    try {
      const model = Bert.createLike(source, { ...run, seed: f.seed });
      return { model, init: { from: 'random-init', architectureOf: dir }, resetHead: false };
    } finally {
      source.dispose();
    }
  }
  return { model: await Bert.load(dir, run), init: { from: 'checkpoint', dir }, resetHead: f.resetHead === true };
}

/** fineTune's default eval metric per task (the one in evalHistory[].metric). */
function defaultMetric(task: TrainTask): string {
  return task === 'sequence' ? 'accuracy' : task === 'multi-label' ? 'microF1' : task === 'token' ? 'f1' : 'mse';
}

/** Writes `text` to a temporary file beside `file` and renames it into place. */
export function writeFileAtomic(file: string, text: string): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${String(process.pid)}`;
  try {
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new InputError(`Cannot write '${file}': ${(err as Error).message}`);
  }
}

/** The architecture part of a recipe (metrics.json, pretrain.json). */
export function modelSummary(info: BertModelInfo): Record<string, number> {
  const { vocabSize, hiddenSize, numLayers, numHeads, intermediateSize, maxPositions, numParameters } = info;
  return { vocabSize, hiddenSize, numLayers, numHeads, intermediateSize, maxPositions, numParameters };
}

/** `argv` as a shell line (arguments with spaces or quotes single-quoted). */
export function commandLine(argv: readonly string[]): string {
  const quote = (a: string): string => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  return ['elmo', ...argv.map(quote)].join(' ');
}

export function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)),
    platform: `${os.platform()} ${os.release()}`,
    arch: os.arch(),
    node: process.version,
  };
}

async function runFinetune(f: FinetuneFlags, io: CliIo, argv: readonly string[]): Promise<void> {
  const run: BertRunOptions = compact({ device: f.device, threads: f.threads, maxSeqLen: f.maxSeqLen });
  const { model, init, resetHead } = await startingModel(f, run);
  const display = progressDisplay(io, f.progressInterval);
  const interrupt = interruptible(() => {
    display.log('elmo finetune: stopping after this step (Ctrl-C again to quit now)');
  });
  try {
    const options: FineTuneOptions = compact({
      task: f.task,
      resetHead: resetHead || undefined,
      epochs: f.epochs,
      batchSize: f.batchSize,
      maxSeqLen: f.maxSeqLen,
      learningRate: f.lr,
      warmupRatio: f.warmupRatio,
      weightDecay: f.weightDecay,
      seed: f.seed,
      evalSet: f.eval,
      evalSplit: f.evalSplit !== undefined ? { fraction: f.evalSplit, ...compact({ group: f.group }) } : undefined,
      metricForBest: f.metric,
      earlyStoppingPatience: f.earlyStopping,
      checkpointDir: f.checkpointDir,
      resume: f.resume,
    });
    // --per-label: a seeded few-shot sample of the training file.
    const train =
      f.perLabel !== undefined
        ? samplePerLabel(await collectExamples(f.train, '--train'), f.perLabel, { seed: f.seed })
        : f.train;
    if (typeof train !== 'string')
      display.log(`elmo finetune: ${String(train.length)} examples (--per-label ${String(f.perLabel)})`);
    const result = await model
      .fineTune(train, {
        ...options,
        onProgress: display.onProgress,
        progressIntervalMs: display.intervalMs,
        signal: interrupt.signal,
      })
      .catch((err: unknown) => {
        // fineTune's advice, in this CLI's words.
        if (err instanceof InputError && err.message.includes('resetHead: true')) {
          throw new InputError(err.message.replace('pass resetHead: true', 'pass --reset-head'));
        }
        throw err;
      });
    display.stop();
    await model.save(f.out);

    const info = model.config;
    const recipe = {
      init,
      train: f.train,
      ...(typeof train !== 'string' ? { perLabel: f.perLabel, trainExamples: train.length } : {}),
      ...(f.eval !== undefined ? { eval: f.eval } : {}),
      options,
      resolved: {
        task: result.task,
        numLabels: result.labels.length,
        peakLearningRate: Number(result.history.reduce((a, h) => Math.max(a, h.lr), 0).toPrecision(6)),
        maxSeqLen: model.maxSeqLen,
        metric: f.metric ?? defaultMetric(result.task),
        device: model.device,
        ...(f.threads !== undefined ? { threads: f.threads } : {}),
      },
      model: modelSummary(info),
    };
    const command = commandLine(argv);
    const mach = machine();
    const metricsFile = f.metricsOut ?? path.join(f.out, 'metrics.json');
    writeFileAtomic(metricsFile, `${JSON.stringify({ ...result, recipe, machine: mach, command }, null, 1)}\n`);
    const reportFile = f.report ?? path.join(f.out, 'report.html');
    writeFileAtomic(
      reportFile,
      renderReport({
        result,
        metricName: recipe.resolved.metric,
        recipe,
        machine: mach,
        command,
        createdAt: new Date().toISOString(),
      }),
    );
    for (const line of summary(result, f.out, metricsFile, reportFile)) io.write(line);
  } finally {
    display.stop();
    interrupt.dispose();
    model.dispose();
  }
}

function summary(r: FineTuneResult, out: string, metricsFile: string, reportFile: string): string[] {
  const lines = [
    `trained  ${r.task}, ${String(r.labels.length)} labels: ${String(r.epochs)} epochs, ${String(r.steps)} steps in ` +
      `${r.seconds.toFixed(1)} s (${r.trainSequencesPerSecond.toFixed(0)} seq/s)${r.stoppedEarly ? ', stopped early' : ''}`,
    `loss     ${fmt(r.trainLoss)} (last epoch)`,
  ];
  if (r.evalMetrics !== undefined) lines.push(`eval     ${metricsLine(r.evalMetrics)} (epoch ${String(r.bestEpoch)})`);
  lines.push(`model    ${out}`, `metrics  ${metricsFile}`, `report   ${reportFile}`);
  return lines;
}

/** Adds `elmo eval`. */
export function addEvalCommand(program: Command, io: CliIo): void {
  const cmd = new Command('eval')
    .description('metrics of a fine-tuned model on labelled examples (.jsonl/.json/.csv/.tsv)')
    .requiredOption('--model <DIR>', 'the model')
    .requiredOption('--data <FILE>', 'labelled examples')
    .addOption(
      new Option('--task <TASK>', 'sequence, multi-label, regression or token (default: inferred)').argParser(
        choice(TASKS),
      ),
    )
    .option('--json', 'the metrics as JSON')
    .addOption(deviceOption())
    .addOption(precisionOption())
    .option('--threads <N>', 'CPU threads', integer(1))
    .option('--max-seq-len <N>', "longest sequence in tokens (default: the model's)", integer(3))
    .option('--batch-size <N>', 'sequences per forward (default 64)', integer(1))
    .action(async (f: EvalFlags) => {
      const model = await Bert.load(
        f.model,
        compact({ device: f.device, precision: f.precision, threads: f.threads, maxSeqLen: f.maxSeqLen }),
      );
      try {
        const metrics = await model.evaluate(f.data, compact({ task: f.task, batchSize: f.batchSize }));
        if (f.json === true) io.write(JSON.stringify(metrics, null, 2));
        else for (const line of metricsText(metrics)) io.write(line);
      } finally {
        model.dispose();
      }
    });
  program.addCommand(configureCommand(cmd, io));
}

/** The metrics as aligned text: scalars, then the per-label table. */
export function metricsText(m: EvalMetrics): string[] {
  const scalars = scalarMetrics(m);
  const width = Math.max(4, ...scalars.map(([k]) => k.length));
  const lines = [`${'task'.padEnd(width)}  ${m.task}`];
  for (const [k, v] of scalars) lines.push(`${k.padEnd(width)}  ${k === 'count' ? String(v) : fmt(v)}`);
  const rows = perLabelScores(m);
  if (rows.length > 0) {
    const lw = Math.max(5, ...rows.map((r) => r.label.length));
    lines.push('', `${(m.task === 'token' ? 'type' : 'label').padEnd(lw)}  precision  recall     f1         support`);
    for (const r of rows) {
      lines.push(
        `${r.label.padEnd(lw)}  ${fmt(r.precision).padEnd(9)}  ${fmt(r.recall).padEnd(9)}  ${fmt(r.f1).padEnd(9)}  ${String(r.support)}`,
      );
    }
  }
  return lines;
}
