/**
 * `elmo pretrain`: {@link Bert.pretrain} from the command line, with the project's default
 * recipe (docs/accuracy.md says how it was found):
 *
 * - no `--vocab` and no `--model`: a WordPiece vocabulary of `--vocab-size` is trained on the
 *   corpus first ({@link Tokenizer.train});
 * - no `--model`: fresh weights of `--config` (default the recipe's size);
 * - `--model DIR`: that checkpoint, pretrained further (a masked-LM head is added when it has
 *   none, and the log says so);
 * - masked-LM for `--minutes` (or `--steps` / `--epochs`), then a `BertForMaskedLM` checkpoint
 *   in `--out` (transformers loads it; `elmo finetune --init-from DIR` starts from it), with
 *   `pretrain.json` (the result, the recipe, the machine).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Command, Option } from 'commander';
import { MultiBar, Presets } from 'cli-progress';
import type { SingleBar } from 'cli-progress';

import { Bert } from '../bert';
import type { BertConfig, BertRunOptions } from '../bert';
import type { DeviceRequest } from '../devices';
import { Tokenizer } from '../tokenizer';
import { readCorpus } from '../train/corpus';
import type { PretrainOptions, PretrainProgress, PretrainResult } from '../train/pretrain';
import type { CliIo } from './args';
import {
  UsageError,
  choice,
  collect,
  configureCommand,
  deviceOption,
  integer,
  interruptible,
  number,
  usageError,
} from './args';
import { CONFIG_PRESETS, commandLine, machine, modelSummary, writeFileAtomic } from './finetune';
import type { ConfigPreset } from './finetune';
import { duration } from './progress';

/**
 * The default recipe of `elmo pretrain` (and of `npm start -- --full`): measured on BANKING77
 * few-shot, docs/accuracy.md.
 */
export const PRETRAIN_RECIPE = {
  config: 'mini' as ConfigPreset,
  vocabSize: 6000,
  seqLen: 64,
  batchSize: 32,
  learningRate: 1e-3,
  warmupRatio: 0.06,
  maxPositions: 128,
  minutes: 25,
};

interface PretrainFlags {
  corpus: string[];
  out: string;
  model?: string;
  config?: ConfigPreset;
  vocab?: string;
  vocabSize?: number;
  lowercase: boolean;
  minutes?: number;
  steps?: number;
  epochs?: number;
  seqLen?: number;
  batchSize?: number;
  lr?: number;
  warmupRatio?: number;
  maskProb?: number;
  wholeWordMask?: boolean;
  seed: number;
  checkpointDir?: string;
  checkpointMinutes?: number;
  resume?: boolean | string;
  device: DeviceRequest;
  threads?: number;
  progressInterval: number;
}

/** Adds `elmo pretrain`. */
export function addPretrainCommand(program: Command, io: CliIo, argv: readonly string[]): void {
  const r = PRETRAIN_RECIPE;
  const cmd = new Command('pretrain')
    .description(
      'pretrain an encoder with masked-LM on unlabelled text (files, directories of .txt/.md, or .jsonl/.csv ' +
        'example files); trains a vocabulary first when none is given; saves a BertForMaskedLM checkpoint',
    )
    .requiredOption('--corpus <PATH>', 'file or directory of text (repeatable)', collect)
    .requiredOption('--out <DIR>', 'where the pretrained model is saved')
    .option('--model <DIR>', 'checkpoint to pretrain further (a masked-LM head is added when it has none)')
    .addOption(
      new Option('--config <SIZE>', `fresh weights of a standard size (default ${r.config})`).argParser(
        choice(Object.keys(CONFIG_PRESETS) as ConfigPreset[]),
      ),
    )
    .option('--vocab <FILE>', 'a WordPiece vocab.txt (default: one trained on the corpus)')
    .option('--vocab-size <N>', `size of the trained vocabulary (default ${String(r.vocabSize)})`, integer(100))
    .option('--no-lowercase', 'keep case in the trained vocabulary')
    .option('--minutes <M>', `wall-clock budget of training (default ${String(r.minutes)})`, number(0, Infinity, true))
    .option('--steps <N>', 'optimizer steps instead of minutes', integer(1))
    .option('--epochs <N>', 'passes over the corpus instead of minutes', integer(1))
    .option('--seq-len <N>', `longest block in tokens (default ${String(r.seqLen)})`, integer(8))
    .option('--batch-size <N>', `blocks of seq-len tokens per step (default ${String(r.batchSize)})`, integer(1))
    .option('--lr <X>', `peak learning rate (default ${String(r.learningRate)})`, number(0, Infinity, true))
    .option('--warmup-ratio <X>', `share of steps warming up (default ${String(r.warmupRatio)})`, number(0, 1))
    .option('--mask-prob <X>', 'share of tokens predicted (default 0.15)', number(0, 1, true))
    .option('--whole-word-mask', 'mask whole words')
    .option('--seed <N>', 'vocabulary ties, weights, data order, masking, dropout', integer(0), 42)
    .option('--checkpoint-dir <DIR>', 'write checkpoint-<step>/ during the run')
    .option('--checkpoint-minutes <M>', 'minutes between checkpoints (default 10)', number(0, Infinity, true))
    .option('--resume [CHECKPOINT]', 'continue from the newest checkpoint in --checkpoint-dir (or this one)')
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
Examples:
  elmo pretrain --corpus books/ --corpus utterances.jsonl --minutes 25 --out ./encoder
  elmo finetune --init-from ./encoder --train train.jsonl --eval test.jsonl --out ./intent`,
    )
    .action(async (flags: PretrainFlags) => {
      try {
        checkFlags(flags);
      } catch (err) {
        if (err instanceof UsageError) usageError(cmd, err);
        throw err;
      }
      await runPretrain(flags, io, argv);
    });
  program.addCommand(configureCommand(cmd, io));
}

function checkFlags(f: PretrainFlags): void {
  if (f.corpus.length === 0) throw new UsageError('give at least one --corpus PATH');
  if ([f.minutes, f.steps, f.epochs].filter((v) => v !== undefined).length > 1) {
    throw new UsageError('give one of --minutes, --steps and --epochs');
  }
  if (f.model !== undefined && (f.config !== undefined || f.vocab !== undefined || f.vocabSize !== undefined)) {
    throw new UsageError(
      '--model DIR brings its own architecture and vocabulary: no --config, --vocab or --vocab-size',
    );
  }
  if (f.vocab !== undefined && f.vocabSize !== undefined)
    throw new UsageError('give --vocab FILE or --vocab-size N, not both');
  if (f.resume === true && f.checkpointDir === undefined) {
    throw new UsageError('--resume needs --checkpoint-dir DIR (or a checkpoint: --resume DIR)');
  }
}

/** The model to pretrain, and how it was made. */
async function startingModel(
  f: PretrainFlags,
  run: BertRunOptions,
  log: (line: string) => void,
): Promise<{ model: Bert; init: Record<string, unknown> }> {
  if (f.model !== undefined)
    return { model: await Bert.load(f.model, run), init: { from: 'checkpoint', dir: f.model } };
  let tokenizer: Tokenizer;
  let vocab: Record<string, unknown>;
  if (f.vocab !== undefined) {
    tokenizer = Tokenizer.fromVocab(fs.readFileSync(f.vocab, 'utf8'), { lowercase: f.lowercase });
    vocab = { file: f.vocab };
  } else {
    const vocabSize = f.vocabSize ?? PRETRAIN_RECIPE.vocabSize;
    log(`elmo pretrain: training a WordPiece vocabulary of ${String(vocabSize)} on the corpus`);
    const t = performance.now();
    // The corpus as pretraining reads it (the texts of .jsonl / .csv example files, not their syntax).
    const lines = async function* (): AsyncGenerator<string> {
      for await (const line of readCorpus(f.corpus)) yield line.text;
    };
    tokenizer = await Tokenizer.train({ texts: lines() }, { vocabSize, lowercase: f.lowercase });
    vocab = {
      trained: true,
      vocabSize: tokenizer.vocabSize,
      lowercase: f.lowercase,
      seconds: (performance.now() - t) / 1000,
    };
    log(
      `elmo pretrain: vocabulary of ${String(tokenizer.vocabSize)} tokens in ${duration((performance.now() - t) / 1000)}`,
    );
  }
  const size = f.config ?? PRETRAIN_RECIPE.config;
  const seqLen = f.seqLen ?? PRETRAIN_RECIPE.seqLen;
  const config: BertConfig = {
    ...CONFIG_PRESETS[size],
    vocabSize: tokenizer.vocabSize,
    maxPositions: Math.max(PRETRAIN_RECIPE.maxPositions, seqLen),
    typeVocabSize: 2,
  };
  const model = Bert.create(config, { ...run, tokenizer, seed: f.seed, mlm: true });
  return { model, init: { from: 'config', config: size, vocab } };
}

/** Progress of {@link Bert.pretrain} on stderr: a bar on a terminal, else a line per interval. */
export function pretrainDisplay(
  io: CliIo,
  intervalSeconds: number,
): {
  onProgress: (p: PretrainProgress) => void;
  intervalMs: number;
  log: (line: string) => void;
  stop: () => void;
} {
  const line = (p: PretrainProgress): string =>
    `step ${String(p.step)}/${String(p.totalSteps)}  loss ${p.loss.toFixed(4)}  lr ${p.lr.toExponential(2)}  ` +
    `${p.tokensPerSecond.toFixed(0)} tok/s  elapsed ${duration(p.elapsedSeconds)}  eta ${duration(p.etaSeconds)}`;
  const other = (p: PretrainProgress): string | undefined =>
    p.phase === 'prepare'
      ? `elmo pretrain: ${p.message ?? ''}`
      : p.phase === 'eval'
        ? `step ${String(p.step)}  held-out MLM loss ${(p.evalLoss ?? NaN).toFixed(4)}`
        : p.phase === 'checkpoint'
          ? `step ${String(p.step)}  checkpoint ${p.message ?? ''}`
          : undefined;
  if (!io.isTTY) {
    return {
      intervalMs: intervalSeconds * 1000,
      onProgress: (p) => io.error(other(p) ?? line(p)),
      log: io.error,
      stop: () => undefined,
    };
  }
  const multi = new MultiBar(
    {
      stream: process.stderr,
      format: ' {bar} {percentage}% | step {value}/{total} | loss {loss} | lr {lr} | {speed} tok/s | ETA {eta_text}',
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      fps: 5,
    },
    Presets.shades_classic,
  );
  let bar: SingleBar | undefined;
  let stopped = false;
  const log = (text: string): void => {
    if (stopped) {
      io.error(text);
      return;
    }
    multi.log(`${text}\n`);
    multi.update();
  };
  return {
    intervalMs: 500,
    onProgress: (p) => {
      const text = other(p);
      if (text !== undefined) {
        log(text);
        return;
      }
      const payload = {
        loss: p.loss.toFixed(4),
        lr: p.lr.toExponential(2),
        speed: p.tokensPerSecond.toFixed(0),
        eta_text: duration(p.etaSeconds),
      };
      bar ??= multi.create(p.totalSteps, 0, payload);
      bar.setTotal(p.totalSteps);
      bar.update(p.step, payload);
    },
    log,
    stop: () => {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}

async function runPretrain(f: PretrainFlags, io: CliIo, argv: readonly string[]): Promise<void> {
  const run: BertRunOptions = {
    device: f.device,
    ...(f.threads !== undefined ? { threads: f.threads } : {}),
  };
  const show = pretrainDisplay(io, f.progressInterval);
  const interrupt = interruptible(() => {
    show.log('elmo pretrain: stopping after this step (Ctrl-C again to quit now)');
  });
  try {
    const { model, init } = await startingModel(f, run, show.log);
    try {
      const budget =
        f.steps !== undefined
          ? { steps: f.steps }
          : f.epochs !== undefined
            ? { epochs: f.epochs }
            : { minutes: f.minutes ?? PRETRAIN_RECIPE.minutes };
      const options: PretrainOptions = {
        ...budget,
        seqLen: Math.min(f.seqLen ?? PRETRAIN_RECIPE.seqLen, model.config.maxPositions),
        batchSize: f.batchSize ?? PRETRAIN_RECIPE.batchSize,
        learningRate: f.lr ?? PRETRAIN_RECIPE.learningRate,
        warmupRatio: f.warmupRatio ?? PRETRAIN_RECIPE.warmupRatio,
        seed: f.seed,
        ...(f.maskProb !== undefined ? { maskProb: f.maskProb } : {}),
        ...(f.wholeWordMask === true ? { wholeWordMask: true } : {}),
        ...(f.checkpointDir !== undefined ? { checkpointDir: f.checkpointDir } : {}),
        ...(f.checkpointMinutes !== undefined ? { checkpointMinutes: f.checkpointMinutes } : {}),
        ...(f.resume !== undefined ? { resume: f.resume } : {}),
      };
      const result: PretrainResult = await model.pretrain(f.corpus, {
        ...options,
        onProgress: show.onProgress,
        progressIntervalMs: show.intervalMs,
        signal: interrupt.signal,
      });
      show.stop();
      await model.save(f.out);
      const summary = {
        ...result,
        recipe: {
          init,
          corpus: f.corpus,
          options,
          model: modelSummary(model.config),
        },
        machine: machine(),
        command: commandLine(argv),
      };
      writeFileAtomic(path.join(f.out, 'pretrain.json'), `${JSON.stringify(summary, null, 1)}\n`);
      io.write(
        `pretrained ${String(result.steps)} steps in ${duration(result.trainSeconds)}: MLM loss ${result.trainLoss.toFixed(3)} ` +
          `(held-out ${result.evalLoss.toFixed(3)}), ${result.tokensPerSecond.toFixed(0)} tokens/s; saved to ${f.out}`,
      );
      io.write(`next: elmo finetune --init-from ${f.out} --train <examples> --out <dir>`);
    } finally {
      model.dispose();
    }
  } catch (err) {
    show.stop();
    throw err;
  } finally {
    interrupt.dispose();
  }
}
