#!/usr/bin/env node
/**
 * The `elmo` command line.
 *
 *   elmo info [--json] [--peak]       devices, CPU kernel path and threads, build flags,
 *                                     with --peak the CPU's measured GFLOP/s
 *   elmo predict --model DIR ...      labels of texts (JSON lines with --json)
 *   elmo embed --model DIR ...        sentence embeddings as JSON lines
 *
 * Texts come from repeated `--text` options or a JSONL file (`--input FILE`, `-` for stdin)
 * whose lines are `{"text": "...", "pair"?: "..."}` objects or bare JSON strings.
 */
import * as fs from 'node:fs';

import { Bert } from './bert';
import type { BertInput } from './bert';
import { ElmoError } from './errors';
import { native } from './native';

const USAGE = `Usage: elmo <command>

Commands:
  info [--json] [--peak]
                  devices, CPU ISA and threads, build flags; --peak also measures the
                  CPU's fp32 (and bf16) GFLOP/s on all its threads (about a second)
  predict --model DIR (--text TEXT ... | --input FILE.jsonl) [--json] [--device auto|cpu|cuda]
                  [--max-seq-len N] [--batch-size N]
                  the label and score of each text: tab-separated, or JSON lines
                  {"text", "pair"?, "label", "score", "scores": {label: score}} with --json
  embed --model DIR (--text TEXT ... | --input FILE.jsonl) [--pooling mean|cls]
                  [--device auto|cpu|cuda] [--max-seq-len N] [--batch-size N]
                  one JSON line per text: {"text", "pair"?, "embedding": number[]}
  help            this text

An --input file has one JSON value per line: {"text": "...", "pair": "..."} (pair optional)
or a bare string; "-" reads stdin.
`;

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

/** Options of `predict` and `embed`. */
interface ModelCommandArgs {
  model: string;
  inputs: BertInput[];
  json: boolean;
  pooling: 'cls' | 'mean';
  device: 'auto' | 'cpu' | 'cuda';
  maxSeqLen: number | undefined;
  batchSize: number;
}

/** A usage problem: printed with the command's name, exit code 2. */
class UsageError extends Error {}

function parseModelArgs(command: 'predict' | 'embed', args: readonly string[]): ModelCommandArgs {
  const out: ModelCommandArgs = {
    model: '',
    inputs: [],
    json: false,
    pooling: 'mean',
    device: 'auto',
    maxSeqLen: undefined,
    batchSize: 32,
  };
  let input: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? '';
    const value = (): string => {
      const v = args[++i];
      if (v === undefined) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    const count = (name: string): number => {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} expects a positive integer, got '${v}'`);
      return n;
    };
    switch (arg) {
      case '--model':
        out.model = value();
        break;
      case '--text':
        out.inputs.push(value());
        break;
      case '--input':
        input = value();
        break;
      case '--json':
        if (command !== 'predict') throw new UsageError(`unknown option ${arg}`);
        out.json = true;
        break;
      case '--pooling': {
        if (command !== 'embed') throw new UsageError(`unknown option ${arg}`);
        const v = value();
        if (v !== 'mean' && v !== 'cls') throw new UsageError(`--pooling expects 'mean' or 'cls', got '${v}'`);
        out.pooling = v;
        break;
      }
      case '--device': {
        const v = value();
        if (v !== 'auto' && v !== 'cpu' && v !== 'cuda') {
          throw new UsageError(`--device expects 'auto', 'cpu' or 'cuda', got '${v}'`);
        }
        out.device = v;
        break;
      }
      case '--max-seq-len':
        out.maxSeqLen = count('--max-seq-len');
        break;
      case '--batch-size':
        out.batchSize = count('--batch-size');
        break;
      default:
        throw new UsageError(`unknown option ${arg}`);
    }
  }
  if (out.model === '') throw new UsageError('--model DIR is required');
  if (input !== undefined) out.inputs.push(...readJsonl(input));
  if (out.inputs.length === 0) throw new UsageError('no texts: give --text TEXT or --input FILE.jsonl');
  return out;
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
  args: ModelCommandArgs,
  write: (line: string) => void,
): Promise<void> {
  const model = await Bert.load(args.model, {
    device: args.device,
    ...(args.maxSeqLen !== undefined ? { maxSeqLen: args.maxSeqLen } : {}),
  });
  try {
    const H = model.config.hiddenSize;
    for (let start = 0; start < args.inputs.length; start += args.batchSize) {
      const chunk = args.inputs.slice(start, start + args.batchSize);
      if (command === 'predict') {
        const results = await model.predict(chunk);
        results.forEach((r, i) => {
          const input = chunk[i] ?? '';
          if (args.json) {
            const scores: Record<string, number> = {};
            model.labels.forEach((name, k) => (scores[name] = r.scores[k] ?? NaN));
            write(JSON.stringify({ ...inputFields(input), label: r.label, score: r.score, scores }));
          } else {
            const shown = typeof input === 'string' ? input : input.join(' | ');
            write(`${r.label}\t${r.score.toFixed(4)}\t${shown}`);
          }
        });
      } else {
        const vectors = await model.embed(chunk, { pooling: args.pooling });
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

/**
 * Runs the CLI, model commands included; resolves to the exit code (0 ok, 1 failure, 2
 * usage). `write` receives stdout lines, `error` stderr lines.
 */
export async function main(
  argv: readonly string[],
  write: (line: string) => void = (l) => void process.stdout.write(`${l}\n`),
  error: (line: string) => void = (l) => void process.stderr.write(`${l}\n`),
): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== 'predict' && command !== 'embed') return runCli(argv, write, error);
  let args: ModelCommandArgs;
  try {
    args = parseModelArgs(command, rest);
  } catch (err) {
    if (err instanceof UsageError) {
      error(`elmo ${command}: ${err.message}\n\n${USAGE.trimEnd()}`);
      return 2;
    }
    throw err;
  }
  try {
    await runModelCommand(command, args, write);
    return 0;
  } catch (err) {
    if (err instanceof ElmoError) {
      error(`elmo ${command}: ${err.code}: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

/**
 * Runs the synchronous commands (`info`, `help`); returns the exit code. `predict` and
 * `embed` load a model and need {@link main}. `write` receives stdout lines, `error` stderr
 * lines.
 */
export function runCli(
  argv: readonly string[],
  write: (line: string) => void = (l) => void process.stdout.write(`${l}\n`),
  error: (line: string) => void = (l) => void process.stderr.write(`${l}\n`),
): number {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'info': {
        const unknown = rest.filter((a) => a !== '--json' && a !== '--peak');
        if (unknown.length > 0) {
          error(`elmo info: unknown option ${unknown[0] ?? ''}`);
          return 2;
        }
        info(rest.includes('--json'), rest.includes('--peak'), write);
        return 0;
      }
      case 'predict':
      case 'embed':
        error(`elmo ${command}: runs asynchronously; call main() instead of runCli()`);
        return 2;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        write(USAGE.trimEnd());
        return command === undefined ? 2 : 0;
      default:
        error(`elmo: unknown command '${command}'\n\n${USAGE.trimEnd()}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ElmoError) {
      error(`elmo: ${err.code}: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
