#!/usr/bin/env node
/**
 * The `elmo` command line (arguments parsed by commander; `elmo <command> --help` for each).
 *
 *   elmo info [--json] [--peak]       devices, CPU kernel path and threads, build flags,
 *                                     with --peak the CPU's measured GFLOP/s
 *   elmo predict --model DIR ...      labels of texts (JSON lines with --json)
 *   elmo embed --model DIR ...        sentence embeddings as JSON lines
 *   elmo finetune --train F --out DIR fine-tune (or train from scratch) a classifier, with
 *                                     metrics.json and an HTML report (lib/cli/finetune.ts)
 *   elmo eval --model DIR --data F    metrics of a model on labelled examples
 *   elmo pretrain --corpus P --out D  masked-LM pretraining on unlabelled text (a vocabulary
 *                                     trained first when none is given; lib/cli/pretrain.ts)
 *   elmo vocab --corpus P --out DIR   train a WordPiece vocabulary and save it as a tokenizer
 *                                     directory (lib/cli/vocab.ts)
 *   elmo train-chat --train F --encoder DIR --out DIR
 *                                     a joint intent + emotion + slot model (lib/cli/chat.ts)
 *   elmo chat --model DIR | --agent DIR
 *                                     talk to it: intent, emotions, slots, answer per turn
 *   elmo refine --agent DIR --replay F --held-out F
 *                                     refine the live model from feedback, swap if not worse
 *   elmo feedback export|import       feedback of a chat store as JSON lines (lib/cli/feedback.ts)
 *   elmo serve --model DIR | --agent DIR
 *                                     the HTTP service: batching, API keys, metrics, /v1/chat
 *                                     (lib/cli/serve.ts, docs/serving.md)
 *   elmo keys create|list|revoke      API keys of elmo serve (lib/cli/keys.ts)
 *   elmo bench tokenizer|predict|server
 *                                     micro-benchmarks of a model (lib/cli/bench.ts)
 *   elmo prune --model DIR --data F --out DIR
 *                                     prune heads and FFN neurons, recover (lib/cli/prune.ts)
 *
 * Texts come from repeated `--text` options or a JSONL file (`--input FILE`, `-` for stdin)
 * whose lines are `{"text": "...", "pair"?: "..."}` objects or bare JSON strings.
 *
 * Exit codes: 0 ok, 1 a failure (an ElmoError: its code and message on stderr), 2 a usage
 * problem (the message and the command's help on stderr).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Command, CommanderError, Option } from 'commander';

import { Bert } from './bert';
import type { BertInput } from './bert';
import type { CliIo } from './cli/args';
import {
  UsageError,
  choice,
  collect,
  commanderExitCode,
  configureCommand,
  deviceOption,
  integer,
  precisionOption,
  usageError,
} from './cli/args';
import { addBenchCommand } from './cli/bench';
import { addChatCommand, addRefineCommand, addTrainChatCommand } from './cli/chat';
import { addFeedbackCommand } from './cli/feedback';
import { addEvalCommand, addFinetuneCommand } from './cli/finetune';
import { addKeysCommand } from './cli/keys';
import { addPretrainCommand } from './cli/pretrain';
import { addPruneCommand } from './cli/prune';
import { addServeCommand } from './cli/serve';
import { addVocabCommand } from './cli/vocab';
import { ElmoError } from './errors';
import { native } from './native';

/** Commands that load a model and run asynchronously: {@link main} runs them, {@link runCli} does not. */
const ASYNC_COMMANDS = new Set([
  'predict',
  'embed',
  'finetune',
  'eval',
  'pretrain',
  'vocab',
  'train-chat',
  'chat',
  'refine',
  'feedback',
  'serve',
  'bench',
  'prune',
]);

const INPUT_HELP = `
An --input file has one JSON value per line: {"text": "...", "pair": "..."} (pair optional)
or a bare string; "-" reads stdin.`;

function info(json: boolean, peak: boolean, write: (line: string) => void): void {
  const addon = native();
  const devices = addon.devices();
  const build = addon.buildInfo();
  const measured = peak ? addon.cpuPeak() : undefined;
  if (json) {
    write(
      JSON.stringify(
        { devices, build, backend: addon.cpuBackendName(), ...(measured ? { peak: measured } : {}) },
        null,
        2,
      ),
    );
    return;
  }
  write(`elmo-chat`);
  write(`  build:    ${build.flags} (${build.compiler}, N-API ${String(build.napiVersion)})`);
  write(`  cpu:      ${devices.cpu.isa} kernels (best ${devices.cpu.bestIsa}), ${String(devices.cpu.threads)} threads`);
  write(`  features: ${devices.cpu.features.length > 0 ? devices.cpu.features.join(' ') : '(none)'}`);
  write(`  bf16:     ${bf16Line(devices.cpu.bf16Kernel, devices.cpu.features.includes('avx512_bf16'))}`);
  write(`  int8:     ${devices.cpu.int8Kernel} kernels`);
  if (measured) {
    const bf16 = measured.bf16Gflops > 0 ? `, bf16 ${measured.bf16Gflops.toFixed(0)}` : '';
    write(
      `  peak:     fp32 ${measured.fp32Gflops.toFixed(0)}${bf16} GFLOP/s (measured, ${measured.isa}, ${String(measured.threads)} threads)`,
    );
  }
  if (devices.cuda.available) {
    for (const d of devices.cuda.devices) {
      const gib = (d.memoryBytes / 2 ** 30).toFixed(1);
      write(`  cuda:${String(d.index)}:   ${d.name}, ${gib} GiB, sm_${d.computeCapability.replace('.', '')}`);
    }
  } else {
    write(`  cuda:     unavailable (${devices.cuda.reason ?? 'unknown reason'})`);
  }
}

/** What `precision: 'bf16'` runs on this CPU, and whether the CPU has AVX512_BF16 at all. */
function bf16Line(kernel: string, hasAvx512Bf16: boolean): string {
  if (kernel === 'avx512_bf16') return 'avx512_bf16 kernels (bf16 dot products)';
  const why = hasAvx512Bf16 ? 'avx512_bf16 present but not selected' : 'no avx512_bf16';
  return `${kernel} kernels (${why}: bf16 weights widened to fp32)`;
}

/** Flags of `predict` and `embed`, as commander hands them over. */
interface ModelCommandFlags {
  model: string;
  text?: string[];
  input?: string;
  json?: boolean;
  pooling?: 'cls' | 'mean';
  device: 'auto' | 'cpu' | 'cuda';
  precision: 'fp32' | 'bf16' | 'int8';
  maxSeqLen?: number;
  batchSize: number;
}

/** Texts of a JSONL file (or stdin for "-"). */
function readJsonl(file: string): BertInput[] {
  let text: string;
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read --input ${file}: ${(err as Error).message}`);
  }
  const inputs: BertInput[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new UsageError(`${file}:${String(i + 1)}: not JSON (${(err as Error).message})`);
    }
    if (typeof value === 'string') {
      inputs.push(value);
      return;
    }
    const obj = value as { text?: unknown; pair?: unknown } | null;
    if (obj === null || typeof obj !== 'object' || typeof obj.text !== 'string') {
      throw new UsageError(`${file}:${String(i + 1)}: expected a string or an object with a "text" string`);
    }
    if (obj.pair === undefined) inputs.push(obj.text);
    else if (typeof obj.pair === 'string') inputs.push([obj.text, obj.pair]);
    else throw new UsageError(`${file}:${String(i + 1)}: "pair" must be a string`);
  });
  return inputs;
}

/** `{text}` or `{text, pair}` for a JSON output line. */
function inputFields(input: BertInput): { text: string; pair?: string } {
  return typeof input === 'string' ? { text: input } : { text: input[0], pair: input[1] };
}

async function runModelCommand(
  command: 'predict' | 'embed',
  flags: ModelCommandFlags,
  inputs: readonly BertInput[],
  write: (line: string) => void,
): Promise<void> {
  const model = await Bert.load(flags.model, {
    device: flags.device,
    precision: flags.precision,
    ...(flags.maxSeqLen !== undefined ? { maxSeqLen: flags.maxSeqLen } : {}),
  });
  try {
    const H = model.config.hiddenSize;
    for (let start = 0; start < inputs.length; start += flags.batchSize) {
      const chunk = inputs.slice(start, start + flags.batchSize);
      if (command === 'predict') {
        const results = await model.predict(chunk);
        results.forEach((r, i) => {
          const input = chunk[i] ?? '';
          if (flags.json === true) {
            const scores: Record<string, number> = {};
            model.labels.forEach((name, k) => (scores[name] = r.scores[k] ?? NaN));
            write(JSON.stringify({ ...inputFields(input), label: r.label, score: r.score, scores }));
          } else {
            const shown = typeof input === 'string' ? input : input.join(' | ');
            write(`${r.label}\t${r.score.toFixed(4)}\t${shown}`);
          }
        });
      } else {
        const vectors = await model.embed(chunk, { pooling: flags.pooling ?? 'mean' });
        chunk.forEach((input, i) => {
          const embedding = Array.from(vectors.subarray(i * H, (i + 1) * H));
          write(JSON.stringify({ ...inputFields(input), embedding }));
        });
      }
    }
  } finally {
    model.dispose();
  }
}

function addModelCommand(program: Command, io: CliIo, command: 'predict' | 'embed'): void {
  const cmd = new Command(command)
    .description(
      command === 'predict'
        ? 'the label and score of each text: tab-separated, or JSON lines {"text", "pair"?, "label", "score", "scores": {label: score}} with --json'
        : 'one JSON line per text: {"text", "pair"?, "embedding": number[]}',
    )
    .requiredOption('--model <DIR>', 'checkpoint directory (config.json, model.safetensors, vocab)')
    .option('--text <TEXT>', 'a text (repeatable)', collect)
    .option('--input <FILE>', 'a JSONL file of texts, "-" for stdin');
  if (command === 'predict') cmd.option('--json', 'JSON lines with every label score');
  else {
    cmd.addOption(new Option('--pooling <MODE>', 'mean or cls').argParser(choice(['mean', 'cls'])).default('mean'));
  }
  cmd
    .addOption(deviceOption())
    .addOption(precisionOption())
    .option('--max-seq-len <N>', "longest sequence in tokens (default: the model's)", integer(1))
    .option('--batch-size <N>', 'texts per forward', integer(1), 32)
    .addHelpText('after', INPUT_HELP)
    .action(async (flags: ModelCommandFlags) => {
      const inputs: BertInput[] = [...(flags.text ?? [])];
      try {
        if (flags.input !== undefined) inputs.push(...readJsonl(flags.input));
        if (inputs.length === 0) throw new UsageError('no texts: give --text TEXT or --input FILE.jsonl');
      } catch (err) {
        if (err instanceof UsageError) usageError(cmd, err);
        throw err;
      }
      await runModelCommand(command, flags, inputs, io.write);
    });
  program.addCommand(configureCommand(cmd, io));
}

/** The version in package.json (one directory above lib/ and dist/). */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The `elmo` program with every command, reporting through `io`. */
export function buildProgram(io: CliIo, argv: readonly string[] = []): Command {
  const program = new Command('elmo')
    .description('Pretrain, fine-tune and run BERT encoders from Node.js on CPU and CUDA.')
    .version(packageVersion(), '-V, --version')
    .addHelpText('after', INPUT_HELP);
  configureCommand(program, io);
  const infoCmd = new Command('info')
    .description(
      "devices, CPU ISA and threads, build flags; --peak also measures the CPU's fp32 (and bf16) GFLOP/s on all its threads (about a second)",
    )
    .option('--json', 'machine-readable')
    .option('--peak', 'measure the CPU peak GFLOP/s')
    .action((flags: { json?: boolean; peak?: boolean }) => {
      info(flags.json === true, flags.peak === true, io.write);
    });
  program.addCommand(configureCommand(infoCmd, io));
  addModelCommand(program, io, 'predict');
  addModelCommand(program, io, 'embed');
  addFinetuneCommand(program, io, argv);
  addEvalCommand(program, io);
  addPretrainCommand(program, io, argv);
  addVocabCommand(program, io);
  addTrainChatCommand(program, io);
  addChatCommand(program, io);
  addRefineCommand(program, io);
  addFeedbackCommand(program, io);
  addServeCommand(program, io, argv);
  addKeysCommand(program, io);
  addBenchCommand(program, io);
  addPruneCommand(program, io, argv);
  return program;
}

const stdoutLine = (l: string): void => void process.stdout.write(`${l}\n`);
const stderrLine = (l: string): void => void process.stderr.write(`${l}\n`);

/** Exit code of a failed command: ElmoErrors 1 (code and message printed), usage problems 2. */
function failure(err: unknown, argv: readonly string[], error: (line: string) => void): number {
  if (err instanceof CommanderError) return commanderExitCode(err);
  if (err instanceof ElmoError) {
    const command = argv[0] !== undefined && ASYNC_COMMANDS.has(argv[0]) ? `elmo ${argv[0]}` : 'elmo';
    error(`${command}: ${err.code}: ${err.message}`);
    return 1;
  }
  throw err;
}

/**
 * Runs the CLI, model commands included; resolves to the exit code (0 ok, 1 failure, 2
 * usage). `write` receives stdout lines, `error` stderr lines; progress bars are drawn only
 * when both are the defaults and stderr is a terminal.
 */
export async function main(
  argv: readonly string[],
  write: (line: string) => void = stdoutLine,
  error: (line: string) => void = stderrLine,
): Promise<number> {
  const io: CliIo = { write, error, isTTY: error === stderrLine && process.stderr.isTTY };
  if (argv.length === 0) return runCli(argv, write, error);
  try {
    await buildProgram(io, argv).parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    return failure(err, argv, error);
  }
}

/**
 * Runs the synchronous commands (`info`, `help`); returns the exit code. `predict`, `embed`,
 * `finetune` and `eval` load a model and need {@link main}. `write` receives stdout lines,
 * `error` stderr lines.
 */
export function runCli(
  argv: readonly string[],
  write: (line: string) => void = stdoutLine,
  error: (line: string) => void = stderrLine,
): number {
  const [command] = argv;
  const io: CliIo = { write, error, isTTY: false };
  const program = buildProgram(io, argv);
  if (command === undefined) {
    write(program.helpInformation().trimEnd());
    return 2;
  }
  if (ASYNC_COMMANDS.has(command) && !argv.includes('--help') && !argv.includes('-h')) {
    error(`elmo ${command}: runs asynchronously; call main() instead of runCli()`);
    return 2;
  }
  try {
    program.parse(argv, { from: 'user' });
    return 0;
  } catch (err) {
    return failure(err, argv, error);
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
