/**
 * `elmo bench tokenizer|predict|server`: micro-benchmarks of one model from the command line.
 *
 *   tokenizer  `encodeBatch` of short chat utterances (texts/s, tokens/s) and `encode` of one
 *              text (latency percentiles)
 *   predict    single-text `predict` calls (latency p50/p99) and batches of `--batch-size`
 *              texts (throughput); `embed` for a model without a classification head
 *   server     a short load run: `elmo serve` in a child process, autocannon here, one text per
 *              request (req/s, p50/p99 latency, errors)
 *
 * The JS-level timing is tinybench's (warm-up, then every call timed; percentiles of the
 * per-call samples). The native kernel benchmarks are `npm run bench` (native/bench/).
 * The texts are the user turns of the seeded support dialogues (lib/demo), the same on every
 * machine.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { Argument, Command } from 'commander';
import type { Bench, Task } from 'tinybench';

import { Bert } from '../bert';
import { generateSupportDialogues } from '../demo/support-dialogues';
import type { DeviceRequest } from '../devices';
import { ElmoError, UnsupportedError } from '../errors';
import type { CliIo } from './args';
import { UsageError, configureCommand, deviceOption, integer, precisionOption, usageError } from './args';

/** What `elmo bench` measures. */
type BenchTarget = 'tokenizer' | 'predict' | 'server';

/** Flags of `elmo bench`, as commander hands them over. */
interface BenchFlags {
  model?: string;
  json?: boolean;
  timeMs: number;
  batchSize: number;
  connections: number;
  seconds: number;
  device: DeviceRequest;
  precision: 'fp32' | 'bf16' | 'int8';
  threads?: number;
}

/** Percentiles of per-call latency in milliseconds. */
interface LatencyMs {
  p50: number;
  p99: number;
  mean: number;
}

/** Where the numbers were taken. */
interface MachineInfo {
  cpu: string;
  cores: number;
  node: string;
  platform: string;
}

/** The subset of autocannon's result read here. */
interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
}

type Autocannon = (options: Record<string, unknown>) => Promise<AutocannonResult>;

/** The default model: the repository's BERT-mini encoder, where the package runs from a checkout. */
const CHECKOUT_MODEL = path.join(__dirname, '..', '..', 'assets', 'support-encoder');

/** Adds `elmo bench`. */
export function addBenchCommand(program: Command, io: CliIo): void {
  const cmd: Command = new Command('bench')
    .description(
      'micro-benchmarks of a model: tokenizer (texts/s, tokens/s), predict (single-text latency, ' +
        'batch throughput), server (a short autocannon run against elmo serve)',
    )
    .addArgument(new Argument('<what>', 'what to measure').choices(['tokenizer', 'predict', 'server']))
    .option('--model <DIR>', 'checkpoint directory (default: assets/support-encoder of a checkout)')
    .option('--json', 'one JSON object on stdout')
    .option('--time-ms <MS>', 'timed milliseconds per tokenizer / predict case, after a warm-up', integer(1), 1000)
    .option('--batch-size <N>', 'texts per call of the predict throughput case', integer(1), 32)
    .option('--connections <N>', 'concurrent connections of the server run', integer(1), 16)
    .option('--seconds <S>', 'length of the server run (after a 1 s warm-up)', integer(1), 5)
    .addOption(deviceOption())
    .addOption(precisionOption())
    .option('--threads <N>', "the model's CPU threads (default ELMO_NUM_THREADS or all cores)", integer(1))
    .addHelpText(
      'after',
      `
The texts are short chat utterances (the user turns of the seeded support dialogues). predict
times embed() when the model has no classification head; server posts to /v1/predict (or
/v1/embed) and needs autocannon (a devDependency: npm install autocannon).

Examples:
  elmo bench tokenizer --model ./intent
  elmo bench predict --model ./intent --threads 2 --json
  elmo bench server --model ./intent --connections 64 --seconds 10`,
    )
    .action(async (what: BenchTarget, flags: BenchFlags) => {
      const model = flags.model ?? (fs.existsSync(CHECKOUT_MODEL) ? CHECKOUT_MODEL : undefined);
      if (model === undefined) usageError(cmd, new UsageError('--model DIR is required'));
      const result = await runBench(what, { ...flags, model });
      if (flags.json === true) io.write(JSON.stringify(result, null, 2));
      else for (const line of describe(result)) io.write(line);
    });
  program.addCommand(configureCommand(cmd, io));
}

/** Runs one benchmark; the object printed by `--json`. */
async function runBench(what: BenchTarget, flags: BenchFlags & { model: string }): Promise<Record<string, unknown>> {
  const head = { bench: what, model: flags.model, machine: machine() };
  if (what === 'server') return { ...head, ...(await benchServer(flags)) };
  const model = await Bert.load(flags.model, {
    device: flags.device,
    precision: flags.precision,
    ...(flags.threads !== undefined ? { threads: flags.threads } : {}),
  });
  try {
    return {
      ...head,
      ...(what === 'tokenizer' ? await benchTokenizer(model, flags) : await benchPredict(model, flags)),
    };
  } finally {
    model.dispose();
  }
}

/** `encodeBatch` over every utterance, and `encode` of one at a time. */
async function benchTokenizer(model: Bert, flags: BenchFlags): Promise<Record<string, unknown>> {
  const texts = utterances();
  const tok = model.tokenizer;
  const options = { maxSeqLen: model.maxSeqLen, truncation: 'longest_first' as const };
  const tokens = tok.encodeBatch(texts, options).ids.length;
  let k = 0;
  const bench = await newBench(flags.timeMs);
  bench.add('encodeBatch', () => {
    tok.encodeBatch(texts, options);
  });
  bench.add('encode', () => {
    tok.encode(texts[k++ % texts.length] ?? '', undefined, options);
  });
  await bench.run();
  const batch = stats(bench.getTask('encodeBatch'));
  const single = stats(bench.getTask('encode'));
  return {
    texts: texts.length,
    tokens,
    textsPerSecond: round((texts.length * 1000) / batch.period),
    tokensPerSecond: round((tokens * 1000) / batch.period),
    batchMs: batch.latency,
    encodeMs: single.latency,
    samples: { encodeBatch: batch.samples, encode: single.samples },
  };
}

/** Single-text calls (latency), then batches of `--batch-size` (throughput). */
async function benchPredict(model: Bert, flags: BenchFlags): Promise<Record<string, unknown>> {
  const texts = utterances();
  const classifier = model.config.heads.classifier;
  const call = classifier ? 'predict' : 'embed';
  const run = (batch: string[]): Promise<unknown> => (classifier ? model.predict(batch) : model.embed(batch));
  const B = flags.batchSize;
  let k = 0;
  const next = (n: number): string[] => Array.from({ length: n }, () => texts[k++ % texts.length] ?? '');
  const bench = await newBench(flags.timeMs);
  bench.add('single', async () => {
    await run(next(1));
  });
  bench.add('batch', async () => {
    await run(next(B));
  });
  await bench.run();
  const single = stats(bench.getTask('single'));
  const batch = stats(bench.getTask('batch'));
  return {
    call,
    threads: flags.threads ?? null,
    singleMs: single.latency,
    singlePerSecond: round(1000 / single.period),
    batchSize: B,
    batchMs: batch.latency,
    batchTextsPerSecond: round((B * 1000) / batch.period),
    samples: { single: single.samples, batch: batch.samples },
  };
}

/** `elmo serve` in a child process, autocannon here: one text per request. */
async function benchServer(flags: BenchFlags & { model: string }): Promise<Record<string, unknown>> {
  const autocannon = loadAutocannon();
  const cli = path.join(__dirname, '..', 'cli.js');
  if (!fs.existsSync(cli)) {
    throw new UnsupportedError(`elmo bench server runs the built CLI (${cli}); build it first (npm run build)`);
  }
  const port = await freePort();
  const args = [cli, 'serve', '--model', flags.model, '--no-auth', '--port', String(port), '--log-level', 'warn'];
  args.push(
    '--device',
    flags.device,
    '--precision',
    flags.precision,
    ...(flags.threads !== undefined ? ['--threads', String(flags.threads)] : []),
  );
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    await waitReady(child, port, () => stderr);
    const texts = utterances();
    // A model without a classification head answers /v1/predict with 501.
    const route = (await post(port, '/v1/predict', texts[0] ?? '')) === 501 ? 'embed' : 'predict';
    let k = 0;
    const load = (duration: number): Promise<AutocannonResult> =>
      autocannon({
        url: `http://127.0.0.1:${String(port)}/v1/${route}`,
        connections: flags.connections,
        duration,
        requests: [
          {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            setupRequest: (r: Record<string, unknown>) => ({
              ...r,
              body: JSON.stringify({ texts: [texts[k++ % texts.length]] }),
            }),
          },
        ],
      });
    await load(1);
    const r = await load(flags.seconds);
    return {
      route: `/v1/${route}`,
      connections: flags.connections,
      seconds: flags.seconds,
      threads: flags.threads ?? null,
      requests: r.requests.total,
      requestsPerSecond: round(r.requests.average),
      latencyMs: { p50: r.latency.p50, p99: r.latency.p99, mean: round(r.latency.average) },
      non2xx: r.non2xx,
      errors: r.errors,
      timeouts: r.timeouts,
    };
  } finally {
    await stopChild(child);
  }
}

// ---- helpers ------------------------------------------------------------------------------------

/** The user turns of 100 seeded support dialogues (424 utterances of 2-30 words). */
function utterances(): string[] {
  return generateSupportDialogues({ seed: 1, dialogues: 100 }).flatMap((d) =>
    d.turns.filter((t) => t.speaker === 'user').map((t) => t.text),
  );
}

/**
 * tinybench, an ES module: `import()` here compiles to `require()`, which loads ES modules from
 * Node 20.19 on; older Node 20 releases take the real dynamic import.
 */
async function newBench(timeMs: number): Promise<Bench> {
  let mod: typeof import('tinybench');
  try {
    mod = await import('tinybench');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_REQUIRE_ESM') throw err;
    // eslint-disable-next-line @typescript-eslint/no-implied-eval -- a dynamic import tsc leaves as it is
    const importEsm = new Function('s', 'return import(s)') as (s: string) => Promise<typeof import('tinybench')>;
    mod = await importEsm('tinybench');
  }
  return new mod.Bench({ time: timeMs, warmupTime: Math.min(500, timeMs), iterations: 10 });
}

/** Latency percentiles (ms), the mean period and the sample count of a finished task. */
function stats(task: Task | undefined): { latency: LatencyMs; period: number; samples: number } {
  const r = task?.result;
  if (r === undefined || !('latency' in r)) {
    const error = r !== undefined && 'error' in r ? r.error : undefined;
    throw new ElmoError(`the benchmark ${task?.name ?? ''} did not complete: ${String(error)}`, 'ERR_INPUT');
  }
  return {
    latency: { p50: round(r.latency.p50), p99: round(r.latency.p99), mean: round(r.latency.mean) },
    period: r.period,
    samples: r.latency.samplesCount,
  };
}

function loadAutocannon(): Autocannon {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- optional at run time, loaded on use
    return require('autocannon') as Autocannon;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    throw new UnsupportedError(
      'elmo bench server needs autocannon, which elmo-chat lists as a devDependency only: npm install autocannon',
    );
  }
}

/** POSTs one text to `route`; resolves with the status code. */
function post(port: number, route: string, text: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: route, method: 'POST', headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ texts: [text] }));
  });
}

/** A TCP port free now on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      s.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

/** Polls /readyz until 200; fails when the child exits first or after 120 s. */
async function waitReady(child: ChildProcess, port: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new ElmoError(`elmo serve exited (${String(child.exitCode ?? child.signalCode)}): ${stderr().trim()}`);
    }
    const status = await new Promise<number>((resolve) => {
      http
        .get({ host: '127.0.0.1', port, path: '/readyz' }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
        .on('error', () => resolve(0));
    });
    if (status === 200) return;
    if (Date.now() > deadline) throw new ElmoError('elmo serve was not ready within 120 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

function machine(): MachineInfo {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

function round(x: number): number {
  return Number(x.toPrecision(4));
}

/** The readable lines of a result. */
function describe(r: Record<string, unknown>): string[] {
  const m = r.machine as MachineInfo;
  const lines = [
    `elmo bench ${String(r.bench)}: ${String(r.model)} (${m.cpu}, ${String(m.cores)} cores, Node ${m.node})`,
  ];
  const ms = (l: unknown): string => {
    const x = l as LatencyMs;
    return `p50 ${String(x.p50)} ms, p99 ${String(x.p99)} ms`;
  };
  if (r.bench === 'tokenizer') {
    lines.push(
      `  encodeBatch of ${String(r.texts)} texts (${String(r.tokens)} tokens): ${String(r.textsPerSecond)} texts/s, ` +
        `${String(r.tokensPerSecond)} tokens/s (${ms(r.batchMs)})`,
      `  encode, one text: ${ms(r.encodeMs)}`,
    );
  } else if (r.bench === 'predict') {
    lines.push(
      `  ${String(r.call)}, one text: ${ms(r.singleMs)} (${String(r.singlePerSecond)} calls/s)`,
      `  ${String(r.call)}, ${String(r.batchSize)} texts: ${String(r.batchTextsPerSecond)} texts/s (${ms(r.batchMs)})`,
    );
  } else {
    const errors = Number(r.non2xx) + Number(r.errors) + Number(r.timeouts);
    lines.push(
      `  POST ${String(r.route)}, ${String(r.connections)} connections, ${String(r.seconds)} s: ` +
        `${String(r.requestsPerSecond)} req/s, ${ms(r.latencyMs)}, ${String(errors)} errors`,
    );
  }
  return lines;
}
