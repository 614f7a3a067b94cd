/**
 * `elmo vocab`: {@link Tokenizer.train} from the command line. Learns a WordPiece vocabulary
 * from text files and directories (walked for .txt and .md files) and saves it to `--out` as a
 * Hugging Face tokenizer directory (vocab.txt, tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json) that `elmo finetune --config SIZE --vocab DIR/vocab.txt`,
 * `Tokenizer.fromTokenizerJson` and transformers' `AutoTokenizer.from_pretrained` all read.
 *
 * Progress goes to stderr: a cli-progress bar when stderr is a terminal (bytes read, then
 * tokens learned), else one line per phase.
 */
import * as path from 'node:path';

import { Command } from 'commander';
import { Presets, SingleBar } from 'cli-progress';

import { Tokenizer } from '../tokenizer';
import type { TrainOptions, TrainProgress } from '../tokenizer';
import type { CliIo } from './args';
import { UsageError, configureCommand, integer, interruptible, usageError } from './args';
import { duration } from './progress';

/** Flags of `elmo vocab`, as commander hands them over. */
interface VocabFlags {
  corpus?: string[];
  out: string;
  vocabSize: number;
  /** undefined unless --lowercase or --no-lowercase is given. */
  lowercase?: boolean;
  minFrequency: number;
  limitAlphabet?: number;
}

/** Adds `elmo vocab`. */
export function addVocabCommand(program: Command, io: CliIo): void {
  const cmd = new Command('vocab')
    .description(
      'train a WordPiece vocabulary on text (the algorithm of Hugging Face tokenizers) and save it as a ' +
        'tokenizer directory: vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json',
    )
    // Not requiredOption: commander's message for a missing variadic option reads differently.
    .option('--corpus <PATH...>', 'UTF-8 text files, or directories walked for .txt and .md files (required)')
    .requiredOption('--out <DIR>', 'where the tokenizer files are written (created if needed)')
    .option('--vocab-size <N>', 'tokens in the vocabulary, special tokens included', integer(1), 8000)
    .option('--lowercase', 'lowercase the text and strip accents (the default)')
    .option('--no-lowercase', 'keep case and accents')
    .option('--min-frequency <N>', 'fewest occurrences of a pair of tokens to merge it', integer(0), 2)
    .option('--limit-alphabet <N>', 'keep only the N most frequent characters', integer(1))
    .addHelpText(
      'after',
      `
The vocabulary starts with [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4), then every character of
the corpus and its "##" form, then merged pieces, most frequent pair first, until --vocab-size.

Examples:
  elmo vocab --corpus books/ notes.txt --vocab-size 8000 --out ./my-tokenizer
  elmo finetune --train train.csv --config mini --vocab ./my-tokenizer/vocab.txt --out ./intent`,
    )
    .action(async (flags: VocabFlags) => {
      const corpus = flags.corpus;
      if (corpus === undefined) usageError(cmd, new UsageError('--corpus PATH is required'));
      await runVocab({ ...flags, corpus }, io);
    });
  program.addCommand(configureCommand(cmd, io));
}

async function runVocab(f: VocabFlags & { corpus: string[] }, io: CliIo): Promise<void> {
  const display = vocabProgress(io);
  const interrupt = interruptible();
  let last: TrainProgress | undefined;
  try {
    const options: TrainOptions = {
      vocabSize: f.vocabSize,
      lowercase: f.lowercase ?? true,
      minFrequency: f.minFrequency,
      ...(f.limitAlphabet !== undefined ? { limitAlphabet: f.limitAlphabet } : {}),
      signal: interrupt.signal,
      progressIntervalMs: display.intervalMs,
      onProgress: (p) => {
        last = p;
        display.onProgress(p);
      },
    };
    const tokenizer = await Tokenizer.train(f.corpus, options);
    display.stop();
    tokenizer.save(f.out);
    if (last === undefined) return;
    const merged = last.vocabSize - last.initialVocabSize;
    const short =
      last.vocabSize < last.targetVocabSize
        ? ` (fewer than ${String(last.targetVocabSize)}: no pair left that occurs ${String(f.minFrequency)} times)`
        : '';
    io.write(
      `vocab    ${String(last.vocabSize)} tokens: ${String(last.initialVocabSize)} specials and characters, ` +
        `${String(merged)} merged${short}`,
    );
    io.write(
      `corpus   ${files(last.files)}, ${mb(last.totalBytes)}, ${String(last.words)} words ` +
        `(${String(last.distinctWords)} distinct)`,
    );
    io.write(`time     ${last.elapsedSeconds.toFixed(1)} s`);
    io.write(
      `out      ${path.join(f.out, 'vocab.txt')}, tokenizer.json, tokenizer_config.json, special_tokens_map.json`,
    );
  } finally {
    display.stop();
    interrupt.dispose();
  }
}

function files(n: number): string {
  return `${String(n)} ${n === 1 ? 'file' : 'files'}`;
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;
}

interface VocabProgressDisplay {
  onProgress: (p: TrainProgress) => void;
  intervalMs: number;
  stop: () => void;
}

/** A bar per phase on a terminal (bytes read, then tokens learned); else a line per phase. */
function vocabProgress(io: CliIo): VocabProgressDisplay {
  if (!io.isTTY) {
    let phase = '';
    return {
      intervalMs: 1000,
      onProgress: (p) => {
        if (p.phase === phase) return;
        phase = p.phase;
        if (p.phase === 'count') io.error(`elmo vocab: counting words in ${files(p.files)} (${mb(p.totalBytes)})`);
        else if (p.phase === 'merge') {
          io.error(
            `elmo vocab: ${String(p.words)} words (${String(p.distinctWords)} distinct) in ${duration(p.elapsedSeconds)}; ` +
              `merging up to ${String(p.targetVocabSize)} tokens`,
          );
        }
      },
      stop: () => undefined,
    };
  }
  let bar: SingleBar | undefined;
  let phase = '';
  let stopped = false;
  const stop = (): void => {
    bar?.stop();
    bar = undefined;
  };
  return {
    intervalMs: 100,
    onProgress: (p) => {
      if (stopped || p.phase === 'done') return;
      const [value, total, unit] =
        p.phase === 'count'
          ? [Math.round(p.read / 1e6), Math.max(1, Math.round(p.totalBytes / 1e6)), 'MB']
          : [p.vocabSize, p.targetVocabSize, 'tokens'];
      const payload = { phase: p.phase === 'count' ? 'counting' : 'merging ', unit, words: p.distinctWords };
      if (p.phase !== phase) {
        if (bar !== undefined) bar.update(bar.getTotal());
        stop();
        phase = p.phase;
        bar = new SingleBar(
          {
            stream: process.stderr,
            format: ' {phase} {bar} {percentage}% | {value}/{total} {unit} | {words} distinct words | {duration}s',
            hideCursor: true,
            fps: 10,
          },
          Presets.shades_classic,
        );
        bar.start(total, value, payload);
      }
      bar?.update(value, payload);
    },
    stop: () => {
      stopped = true;
      stop();
    },
  };
}
