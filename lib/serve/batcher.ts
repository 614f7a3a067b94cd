/**
 * Dynamic batching: the texts of concurrent requests are merged into one model call, so that
 * throughput grows with load while a lone request is not held back.
 *
 * The model runs one call at a time (DESIGN.md §4: a second concurrent call is `ERR_BUSY`), and
 * the batcher is built around that:
 * - idle model, empty queue: a request's batch starts at once (on the next turn of the event
 *   loop, so that requests read in the same turn share it); `maxWaitMs` does not apply;
 * - while a batch runs, requests queue; when it ends the next batch takes the oldest request
 *   and every queued request of the same kind after it, in arrival order, while their tokens
 *   fit in `maxBatchTokens` (a request larger than the budget runs alone);
 * - when a batch ends with fewer queued tokens than the budget, the next one may wait until
 *   its oldest request has waited `maxWaitMs`, or until the budget fills, whichever comes first:
 *   clients that were answered by the batch that just ended have a moment to send their next
 *   request and join. Requests that waited through the previous batch are never held further.
 *
 * A request leaves the queue when its `AbortSignal` fires (the client went away) or its timeout
 * passes; once its batch has started it cannot be taken back, and its results are dropped.
 * When a merged batch fails, each of its requests is run again on its own so that one bad
 * request does not fail the others.
 */
import { HttpError } from './http-error';

/** What a batch returns: one output per text, and the version of the model that computed them. */
export interface BatchOutput<T> {
  outputs: T[];
  version: string;
}

/** Options of {@link Batcher}. */
export interface BatcherOptions<T> {
  /** Most tokens (special tokens included) in one model call. */
  maxBatchTokens: number;
  /** Longest a request may be held for its batch to fill once the model has just been busy. */
  maxWaitMs: number;
  /** Most requests waiting; beyond it `submit` refuses with 429. */
  maxQueue: number;
  /** Runs one model call over `texts` (all of one `kind`). */
  run: (kind: string, texts: string[]) => Promise<BatchOutput<T>>;
  /** Tokens of each text as the model will see them. */
  countTokens: (texts: readonly string[]) => number;
  /** Called after each model call (metrics). */
  onBatch?: (info: BatchInfo) => void;
}

/** One model call, as {@link BatcherOptions.onBatch} reports it. */
export interface BatchInfo {
  kind: string;
  requests: number;
  texts: number;
  tokens: number;
  /** Wall time of the model call. */
  seconds: number;
  ok: boolean;
}

/** Options of one {@link Batcher.submit}. */
export interface SubmitOptions {
  /** The request is withdrawn from the queue when it fires (rejects with 499 ERR_CANCELLED). */
  signal?: AbortSignal;
  /** Rejects after this many ms: 503 when still queued, 504 when its batch was running. */
  timeoutMs?: number;
}

interface Job<T> {
  kind: string;
  texts: string[];
  tokens: number;
  enqueuedAt: number;
  state: 'queued' | 'running' | 'settled';
  resolve: (out: BatchOutput<T>) => void;
  reject: (err: Error) => void;
  cleanup: () => void;
}

/** Merges concurrent requests into model calls; see the file comment for the policy. */
export class Batcher<T> {
  readonly #opts: BatcherOptions<T>;
  readonly #queue: Job<T>[] = [];
  #running = false;
  #holdTimer: NodeJS.Timeout | undefined;
  #startPending = false;
  #idleWaiters: (() => void)[] = [];
  // Tokens per second of recent batches (exponential average), for Retry-After.
  #rate = 0;

  constructor(options: BatcherOptions<T>) {
    this.#opts = options;
  }

  /** Requests waiting for a batch. */
  get depth(): number {
    return this.#queue.length;
  }

  /** Whether a model call is running. */
  get running(): boolean {
    return this.#running;
  }

  /**
   * Queues `texts` for a model call of `kind` and resolves with their outputs, in order.
   * Rejects with an {@link HttpError}: 429 when the queue is full, 499 when cancelled, 503 / 504
   * on timeout; or with the model's error.
   */
  submit(kind: string, texts: string[], options: SubmitOptions = {}): Promise<BatchOutput<T>> {
    if (this.#queue.length >= this.#opts.maxQueue) {
      return Promise.reject(
        new HttpError(
          429,
          'ERR_QUEUE_FULL',
          `The queue is full (${String(this.#opts.maxQueue)} requests waiting); retry later`,
          { 'retry-after': String(this.retryAfterSeconds()) },
        ),
      );
    }
    if (options.signal?.aborted === true) return Promise.reject(cancelled());
    return new Promise<BatchOutput<T>>((resolve, reject) => {
      const job: Job<T> = {
        kind,
        texts,
        tokens: this.#opts.countTokens(texts),
        enqueuedAt: performance.now(),
        state: 'queued',
        resolve: (out) => {
          if (job.state === 'settled') return;
          job.state = 'settled';
          job.cleanup();
          resolve(out);
        },
        reject: (err) => {
          if (job.state === 'settled') return;
          const wasQueued = job.state === 'queued';
          job.state = 'settled';
          job.cleanup();
          if (wasQueued) this.#remove(job);
          reject(err);
        },
        cleanup: () => undefined,
      };
      const onAbort = (): void => {
        if (job.state === 'queued') job.reject(cancelled());
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      let timer: NodeJS.Timeout | undefined;
      if (options.timeoutMs !== undefined) {
        const ms = options.timeoutMs;
        timer = setTimeout(() => {
          job.reject(
            job.state === 'queued'
              ? new HttpError(
                  503,
                  'ERR_TIMEOUT',
                  `The request waited ${String(ms)} ms in the queue (requestTimeoutMs); retry later`,
                  {
                    'retry-after': String(this.retryAfterSeconds()),
                  },
                )
              : new HttpError(
                  504,
                  'ERR_TIMEOUT',
                  `The model did not answer within ${String(ms)} ms (requestTimeoutMs)`,
                ),
          );
        }, ms);
      }
      job.cleanup = () => {
        if (timer !== undefined) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      this.#queue.push(job);
      this.#pump(false);
    });
  }

  /** Resolves when the queue is empty and no batch runs. */
  idle(): Promise<void> {
    if (!this.#running && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Seconds a new request would likely wait: the queued tokens at the recent rate, 1 to 60. */
  retryAfterSeconds(): number {
    const tokens = this.#queue.reduce((n, j) => n + j.tokens, 0);
    if (this.#rate <= 0) return 1;
    return Math.min(60, Math.max(1, Math.ceil(tokens / this.#rate)));
  }

  #remove(job: Job<T>): void {
    const i = this.#queue.indexOf(job);
    if (i >= 0) this.#queue.splice(i, 1);
    if (this.#queue.length === 0 && this.#holdTimer !== undefined) {
      clearTimeout(this.#holdTimer);
      this.#holdTimer = undefined;
    }
    this.#notifyIdle();
  }

  /** Starts a batch if one should start now; `afterBatch`: the model has just finished one. */
  #pump(afterBatch: boolean): void {
    if (this.#running || this.#startPending || this.#queue.length === 0) {
      this.#notifyIdle();
      return;
    }
    const head = this.#queue[0];
    if (head === undefined) return;
    const full = this.#queuedTokens(head.kind) >= this.#opts.maxBatchTokens;
    if (this.#holdTimer !== undefined) {
      // Holding after a batch: only a full budget starts the batch early.
      if (!full) return;
      clearTimeout(this.#holdTimer);
      this.#holdTimer = undefined;
      this.#start();
      return;
    }
    if (afterBatch && !full && this.#opts.maxWaitMs > 0) {
      const left = head.enqueuedAt + this.#opts.maxWaitMs - performance.now();
      if (left > 0) {
        this.#holdTimer = setTimeout(() => {
          this.#holdTimer = undefined;
          this.#start();
        }, left);
        return;
      }
    }
    if (afterBatch) {
      this.#start();
      return;
    }
    // Idle model: start on the next turn, so that requests read in this one join the batch.
    this.#startPending = true;
    setImmediate(() => {
      this.#startPending = false;
      this.#start();
    });
  }

  #queuedTokens(kind: string): number {
    let n = 0;
    for (const j of this.#queue) if (j.kind === kind) n += j.tokens;
    return n;
  }

  /** Takes the next batch off the queue and runs it. */
  #start(): void {
    if (this.#running) return;
    const head = this.#queue[0];
    if (head === undefined) {
      this.#notifyIdle();
      return;
    }
    const jobs: Job<T>[] = [];
    let tokens = 0;
    for (const j of this.#queue) {
      if (j.kind !== head.kind) continue;
      if (jobs.length > 0 && tokens + j.tokens > this.#opts.maxBatchTokens) break;
      jobs.push(j);
      tokens += j.tokens;
    }
    for (const j of jobs) {
      j.state = 'running';
      this.#queue.splice(this.#queue.indexOf(j), 1);
    }
    this.#running = true;
    void this.#runBatch(head.kind, jobs).finally(() => {
      this.#running = false;
      this.#pump(true);
    });
  }

  async #runBatch(kind: string, jobs: Job<T>[]): Promise<void> {
    const texts = jobs.flatMap((j) => j.texts);
    const tokens = jobs.reduce((n, j) => n + j.tokens, 0);
    const t0 = performance.now();
    let out: BatchOutput<T>;
    try {
      out = await this.#opts.run(kind, texts);
    } catch (err) {
      this.#report(kind, jobs.length, texts.length, tokens, t0, false);
      if (jobs.length === 1) {
        jobs[0]?.reject(err as Error);
        return;
      }
      // One request's texts may have failed the whole call: run each on its own.
      for (const j of jobs) {
        if (j.state !== 'running') continue;
        const t1 = performance.now();
        try {
          const own = await this.#opts.run(kind, j.texts);
          this.#report(kind, 1, j.texts.length, j.tokens, t1, true);
          j.resolve(own);
        } catch (err2) {
          this.#report(kind, 1, j.texts.length, j.tokens, t1, false);
          j.reject(err2 as Error);
        }
      }
      return;
    }
    this.#report(kind, jobs.length, texts.length, tokens, t0, true);
    let at = 0;
    for (const j of jobs) {
      j.resolve({ outputs: out.outputs.slice(at, at + j.texts.length), version: out.version });
      at += j.texts.length;
    }
  }

  #report(kind: string, requests: number, texts: number, tokens: number, t0: number, ok: boolean): void {
    const seconds = (performance.now() - t0) / 1000;
    if (ok && seconds > 0) {
      const rate = tokens / seconds;
      this.#rate = this.#rate === 0 ? rate : 0.8 * this.#rate + 0.2 * rate;
    }
    this.#opts.onBatch?.({ kind, requests, texts, tokens, seconds, ok });
  }

  #notifyIdle(): void {
    if (this.#running || this.#queue.length > 0 || this.#startPending) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}

function cancelled(): HttpError {
  return new HttpError(499, 'ERR_CANCELLED', 'The client closed the connection before its batch started');
}
