/**
 * `elmo serve --model DIR` (or `--agent DIR` for the dialogue routes): the HTTP service of
 * lib/serve from the command line. It logs JSON
 * lines (pino) to stdout, answers /healthz at once and /readyz once the model is loaded, reloads
 * the model on SIGHUP, and on SIGTERM or Ctrl-C stops accepting connections, answers the
 * requests it has, and exits (a second Ctrl-C exits at once). With `--workers N` the process is
 * the primary of a node:cluster of N such servers on one port (lib/cli/serve-cluster.ts).
 */
import cluster from 'node:cluster';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';

import { Command, Option } from 'commander';
import pino from 'pino';

import { ChatAgent } from '../chat/agent';
import { createServer } from '../serve/server';
import type { ModelServer, ServeOptions } from '../serve/server';
import type { DeviceRequest } from '../devices';
import { InputError, UnsupportedError } from '../errors';
import type { CliIo } from './args';
import { UsageError, choice, configureCommand, deviceOption, integer, precisionOption, usageError } from './args';
import { announceReady, runPrimary, threadsPerWorker } from './serve-cluster';

/** Flags of `elmo serve`, as commander hands them over. */
interface ServeFlags {
  model?: string;
  agent?: string;
  store?: string;
  responses?: string;
  port: number;
  host: string;
  keys?: string;
  auth: boolean;
  maxBatchTokens?: number;
  maxWaitMs?: number;
  maxQueue?: number;
  requestTimeoutMs?: number;
  maxBodyBytes?: number;
  maxTexts?: number;
  maxTextChars?: number;
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  shutdownTimeoutMs?: number;
  drainDelayMs?: number;
  metricsPublic?: boolean;
  logLevel: string;
  logTexts?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  device: DeviceRequest;
  precision: 'fp32' | 'bf16' | 'int8';
  threads?: number;
  maxSeqLen?: number;
  workers?: number;
}

const LIMIT_FLAGS = [
  ['maxBatchTokens', '--max-batch-tokens <N>', 'most tokens per model call (default 4096)', 1],
  ['maxWaitMs', '--max-wait-ms <MS>', 'longest a batch is held to fill after the model was busy (default 2)', 0],
  ['maxQueue', '--max-queue <N>', 'most requests waiting; more get 429 (default 256)', 1],
  ['requestTimeoutMs', '--request-timeout-ms <MS>', 'answer within this or 503/504 (default 30000)', 1],
  ['maxBodyBytes', '--max-body-bytes <N>', 'largest request body; larger get 413 (default 1048576)', 1],
  ['maxTexts', '--max-texts <N>', 'most texts per request (default 64)', 1],
  ['maxTextChars', '--max-text-chars <N>', 'longest text in characters (default 10000)', 1],
  ['headersTimeoutMs', '--headers-timeout-ms <MS>', 'time to send the headers (default 10000)', 1],
  ['bodyTimeoutMs', '--body-timeout-ms <MS>', 'time to send the whole request (default 30000)', 1],
  ['keepAliveTimeoutMs', '--keep-alive-timeout-ms <MS>', 'idle keep-alive connections close after (default 5000)', 1],
  ['idleTimeoutMs', '--idle-timeout-ms <MS>', 'silent connections close after (default 60000)', 1],
  ['maxConnections', '--max-connections <N>', 'most open connections (default 1024)', 1],
  ['shutdownTimeoutMs', '--shutdown-timeout-ms <MS>', 'on SIGTERM, wait this long for requests (default 30000)', 1],
  [
    'drainDelayMs',
    '--drain-delay-ms <MS>',
    'on SIGTERM, fail /readyz this long before refusing connections (default 0)',
    0,
  ],
] as const;

/**
 * Adds `elmo serve`. `argv` is the command line it is parsed from (`serve ...`): with
 * `--workers`, each worker runs the built CLI with it.
 */
export function addServeCommand(program: Command, io: CliIo, argv: readonly string[] = []): void {
  const cmd: Command = new Command('serve')
    .description(
      'serve a model over HTTP: POST /v1/predict, /v1/embed; GET /healthz, /readyz, /metrics, /openapi.json ' +
        '(docs/serving.md), with dynamic batching, API keys, limits and JSON logs',
    )
    .option(
      '--model <DIR>',
      'checkpoint directory (config.json, model.safetensors, vocab) of /v1/predict and /v1/embed',
    )
    .option(
      '--agent <DIR>',
      "a chat agent's directory (model versions, chat.db): POST /v1/chat and /v1/feedback; --model defaults to its live version",
    )
    .option('--store <URL>', 'the store of --agent (default sqlite at DIR/chat.db; postgres://... for replicas)')
    .option('--responses <FILE>', 'responses.json of --agent: templates per intent, fallback, hand-off')
    .option('--port <N>', 'TCP port (0: any free one)', integer(0), 8080)
    .option('--host <HOST>', 'address to listen on (0.0.0.0: every interface)', '127.0.0.1')
    .option('--keys <FILE>', 'API key file (elmo keys create); required unless --no-auth')
    .option('--no-auth', 'serve without API keys (say so explicitly)');
  for (const [, flag, help, min] of LIMIT_FLAGS) cmd.option(flag, help, integer(min));
  cmd
    .option('--metrics-public', 'GET /metrics without a key (default: admin scope)')
    .addOption(
      new Option('--log-level <LEVEL>', 'trace, debug, info, warn, error, fatal or silent')
        .argParser(choice(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
        .default('info'),
    )
    .option('--log-texts', "log each request's texts, PII-masked (default: only their count)")
    .option('--tls-cert <FILE>', 'serve HTTPS with this certificate (PEM), with --tls-key')
    .option('--tls-key <FILE>', 'the private key of --tls-cert (PEM)')
    .addOption(deviceOption())
    .addOption(precisionOption())
    .option('--threads <N>', "the model's CPU threads (default ELMO_NUM_THREADS or all cores)", integer(1))
    .option('--max-seq-len <N>', "longest sequence in tokens (default: the model's)", integer(3))
    .option(
      '--workers <N>',
      'a node:cluster of N processes on the port, each with its own model (default --threads: cores / N)',
      integer(1),
    )
    .addHelpText(
      'after',
      `
Signals: SIGHUP reloads the model from --model (the old one serves until the new one is
loaded; a failed load keeps it), SIGTERM / Ctrl-C shut down gracefully. With --workers the
primary forwards them to every worker and replaces a worker that dies.

Examples:
  elmo keys create --keys keys.json --scopes predict
  elmo serve --model ./intent --keys keys.json --port 8080
  elmo serve --model ./intent --no-auth --host 0.0.0.0 --max-batch-tokens 8192
  elmo serve --model ./intent --keys keys.json --workers 2 --threads 4
  elmo serve --agent models/support --responses responses.json --keys keys.json`,
    )
    .action(async (flags: ServeFlags) => {
      if (flags.model === undefined && flags.agent === undefined) {
        usageError(cmd, new UsageError('give --model DIR, --agent DIR, or both'));
      }
      // A worker of `--workers`: its share of the cores unless --threads says otherwise.
      if (flags.workers !== undefined && cluster.isWorker) flags.threads ??= threadsPerWorker(flags.workers);
      let options: ServeOptions;
      try {
        options = serveOptions(flags, io);
      } catch (err) {
        if (err instanceof UsageError) usageError(cmd, err);
        throw err;
      }
      if (flags.workers !== undefined && cluster.isPrimary) {
        const exec = path.join(__dirname, '..', 'cli.js');
        if (!fs.existsSync(exec)) {
          throw new UnsupportedError(
            `--workers runs the built CLI in each worker, and ${exec} is missing (npm run build)`,
          );
        }
        const logger = pino({ name: 'elmo-serve', level: flags.logLevel }, lineStream(io));
        await runPrimary({ workers: flags.workers, exec, args: argv, logger });
        return;
      }
      // The dialogue routes: the agent's live version answers /v1/chat (refinements swap it in
      // place); /v1/predict and /v1/embed serve --model, by default a copy of the live version
      // loaded by the server (SIGHUP reloads that directory).
      let agent: ChatAgent | undefined;
      if (flags.agent !== undefined) {
        agent = await ChatAgent.open({
          modelsDir: flags.agent,
          model: options.loadOptions ?? {},
          ...(flags.store !== undefined ? { store: flags.store } : {}),
          ...(flags.responses !== undefined ? { responses: flags.responses } : {}),
        });
        options.chat = agent;
        if (flags.model === undefined) {
          const live = await agent.store.activeModelVersion();
          options.model = live?.dir ?? flags.agent;
        }
      }
      try {
        await runServe(createServer(options), flags);
      } finally {
        await agent?.close();
        // A cluster worker's IPC channel would keep it alive: let go of it to exit.
        if (cluster.isWorker) cluster.worker?.disconnect();
      }
    });
  program.addCommand(configureCommand(cmd, io));
}

/** The options of createServer from the flags; usage problems as {@link UsageError}. */
function serveOptions(flags: ServeFlags, io: CliIo): ServeOptions {
  if (flags.auth && flags.keys === undefined) {
    throw new UsageError('no API keys: give --keys FILE (made by elmo keys create) or --no-auth');
  }
  if (!flags.auth && flags.keys !== undefined) throw new UsageError('give --keys FILE or --no-auth, not both');
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    throw new UsageError('--tls-cert and --tls-key go together');
  }
  const limits: Record<string, number> = {};
  for (const [name] of LIMIT_FLAGS) {
    const v = flags[name];
    if (v !== undefined) limits[name] = v;
  }
  const read = (file: string, flag: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new UsageError(`cannot read ${flag} ${file}: ${(err as Error).message}`);
    }
  };
  return {
    ...limits,
    model: flags.model ?? '',
    auth: flags.auth && flags.keys !== undefined ? { keysFile: flags.keys } : false,
    loadOptions: {
      device: flags.device,
      precision: flags.precision,
      ...(flags.threads !== undefined ? { threads: flags.threads } : {}),
      ...(flags.maxSeqLen !== undefined ? { maxSeqLen: flags.maxSeqLen } : {}),
    },
    ...(flags.metricsPublic === true ? { metricsPublic: true } : {}),
    ...(flags.logTexts === true ? { logTexts: true } : {}),
    ...(flags.tlsCert !== undefined && flags.tlsKey !== undefined
      ? { tls: { cert: read(flags.tlsCert, '--tls-cert'), key: read(flags.tlsKey, '--tls-key') } }
      : {}),
    logger: pino({ name: 'elmo-serve', level: flags.logLevel }, lineStream(io)),
  };
}

/** Listens, waits for the model, then serves until SIGTERM / SIGINT; SIGHUP reloads. */
async function runServe(server: ModelServer, flags: ServeFlags): Promise<void> {
  let interrupts = 0;
  let stop: (() => void) | undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const onStop = (signal: NodeJS.Signals): void => {
    interrupts += 1;
    if (interrupts > 1 && signal === 'SIGINT') process.exit(130);
    server.logger.info({ signal }, 'shutting down');
    void server.close().then(stop);
  };
  const onHup = (): void => {
    server.logger.info({ signal: 'SIGHUP' }, 'reloading the model');
    // A failure is logged by reload(); the old model keeps serving.
    server.reload().catch(() => undefined);
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHup);
  try {
    try {
      await server.listen(flags.port, flags.host).catch((err: unknown) => {
        throw new InputError(`Cannot listen on ${flags.host}:${String(flags.port)}: ${(err as Error).message}`);
      });
      await server.ready();
    } catch (err) {
      await server.close();
      throw err;
    }
    server.logger.info({ version: server.modelVersion }, 'ready');
    announceReady(server.modelVersion ?? 'unversioned');
    await stopped;
  } finally {
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
    process.off('SIGHUP', onHup);
  }
}

/** A stream that hands each log line to `io.write`. */
function lineStream(io: CliIo): Writable {
  let rest = '';
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) io.write(line);
      done();
    },
  });
}
