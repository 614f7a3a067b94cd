/**
 * `elmo serve --workers N`: the primary of a node:cluster. It forks N workers that each run
 * `elmo serve` with the same arguments (each loads its own model and listens on the shared
 * port; the primary hands connections to them round-robin), forwards SIGTERM / SIGINT (graceful
 * shutdown) and SIGHUP (reload) to every worker, and replaces a worker that dies. A worker that
 * dies before its model is loaded is not replaced: the same arguments would fail again, so the
 * primary stops the others and fails.
 */
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import * as os from 'node:os';

import type { Logger } from 'pino';

import { ElmoError } from '../errors';

/** What a worker sends the primary once its model is loaded and it listens. */
export interface WorkerReadyMessage {
  elmo: 'ready';
  version: string;
}

/** Options of {@link runPrimary}. */
export interface PrimaryOptions {
  /** How many workers to keep running. */
  workers: number;
  /** The CLI script each worker runs, and its arguments (`serve ...`). */
  exec: string;
  args: readonly string[];
  logger: Logger;
}

/** The CPU threads of each worker's model: the cores shared out, at least one. */
export function threadsPerWorker(workers: number): number {
  return Math.max(1, Math.floor(os.availableParallelism() / workers));
}

/** Tells the primary this worker is serving; nothing outside a cluster. */
export function announceReady(version: string): void {
  if (cluster.isWorker && process.send !== undefined) {
    const message: WorkerReadyMessage = { elmo: 'ready', version };
    process.send(message);
  }
}

function isReadyMessage(m: unknown): m is WorkerReadyMessage {
  return typeof m === 'object' && m !== null && (m as { elmo?: unknown }).elmo === 'ready';
}

/**
 * Forks the workers and supervises them until SIGTERM / SIGINT, then waits for every worker to
 * exit. Rejects when a worker dies before it was ready.
 */
export async function runPrimary(options: PrimaryOptions): Promise<void> {
  const { logger, workers } = options;
  cluster.setupPrimary({ exec: options.exec, args: [...options.args] });
  const ready = new Set<number>();
  let stopping = false;
  let failure: ElmoError | undefined;
  let interrupts = 0;
  let done: (() => void) | undefined;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const live = (): Worker[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);

  const fork = (): void => {
    const w = cluster.fork();
    logger.info({ worker: w.id, pid: w.process.pid }, 'worker started');
  };
  const stop = (): void => {
    stopping = true;
    for (const w of live()) w.process.kill('SIGTERM');
    if (live().length === 0) done?.();
  };
  const onMessage = (w: Worker, message: unknown): void => {
    if (!isReadyMessage(message)) return;
    ready.add(w.id);
    logger.info({ worker: w.id, pid: w.process.pid, version: message.version }, 'worker ready');
    if (ready.size === workers) logger.info({ workers }, 'all workers ready');
  };
  const onExit = (w: Worker, code: number | null, signal: string | null): void => {
    const wasReady = ready.delete(w.id);
    logger[stopping ? 'info' : 'warn']({ worker: w.id, pid: w.process.pid, code, signal }, 'worker exited');
    if (stopping) {
      if (live().length === 0) done?.();
    } else if (!wasReady) {
      failure = new ElmoError(
        `a worker exited before it was ready (${signal ?? `code ${String(code)}`}); its log above says why`,
        'ERR_INPUT',
      );
      stop();
    } else {
      fork();
    }
  };
  const onStop = (signal: NodeJS.Signals): void => {
    interrupts += 1;
    if (interrupts > 1 && signal === 'SIGINT') process.exit(130);
    logger.info({ signal, workers: live().length }, 'shutting down the workers');
    stop();
  };
  const onHup = (): void => {
    logger.info({ signal: 'SIGHUP' }, 'reloading the model in every worker');
    for (const w of live()) w.process.kill('SIGHUP');
  };
  cluster.on('message', onMessage);
  cluster.on('exit', onExit);
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHup);
  logger.info({ workers, exec: options.exec }, 'starting workers');
  try {
    for (let i = 0; i < workers; i++) fork();
    await finished;
  } finally {
    cluster.off('message', onMessage);
    cluster.off('exit', onExit);
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
    process.off('SIGHUP', onHup);
  }
  logger.info('all workers stopped');
  if (failure !== undefined) throw failure;
}
