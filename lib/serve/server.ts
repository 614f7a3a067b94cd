/**
 * The HTTP service (DESIGN.md §6): a model behind JSON routes on node:http, with dynamic
 * batching across requests, API keys, limits and backpressure, PII-free JSON logs, Prometheus
 * metrics, readiness, graceful shutdown and hot reload. docs/serving.md is the user's guide.
 *
 * @example
 * ```ts
 * import { createServer } from 'elmo-chat';
 *
 * const server = createServer({ model: 'models/intent', auth: { keysFile: 'keys.json' } });
 * await server.listen(8080, '0.0.0.0');
 * process.on('SIGTERM', () => void server.close());
 * ```
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

import pino from 'pino';
import type { DestinationStream, Logger, LoggerOptions } from 'pino';

import { Bert } from '../bert';
import type { BertLoadOptions } from '../bert';
import { InputError, describeValue, expected } from '../errors';
import { KeyStore } from './auth';
import type { Scope } from './auth';
import { Batcher } from './batcher';
import type { BatchOutput } from './batcher';
import { HttpError, statusOf } from './http-error';
import { badRequest, bodyObject, checkTexts, optionalString, readJsonBody, resolveLimits } from './limits';
import type { ServeLimits } from './limits';
import { ServeMetrics } from './metrics';
import { ROUTES, openApiDocument } from './openapi';
import { maskPII } from './pii';
import type { MaskOptions } from './pii';
import type { ChatService, ServeModel } from './types';

/** API keys: the key file (see `elmo keys`) and how often it is checked for changes. */
export interface AuthOptions {
  keysFile: string;
  /** Milliseconds between checks of the key file for changes (at most one per request). Default 1000. */
  refreshMs?: number;
}

/** Options of {@link createServer}; the limits are documented in {@link ServeLimits}. */
export interface ServeOptions extends Partial<ServeLimits> {
  /** A model directory (loaded with `Bert.load`, reloadable) or a loaded model. */
  model: string | ServeModel;
  /**
   * API keys, or `false` to serve without them (say so explicitly: there is no default). With
   * keys, every route but /healthz and /readyz needs `Authorization: Bearer <key>`.
   */
  auth: AuthOptions | false;
  /** Options of `Bert.load` for the model directory (device, threads, maxSeqLen, ...). */
  loadOptions?: BertLoadOptions;
  /** The version reported for a model given as an object. Default: `'unversioned'`. */
  modelVersion?: string;
  /** Enables `POST /v1/chat` and `POST /v1/feedback`. */
  chat?: ChatService;
  /** `GET /metrics` without a key. Default false (it needs the `admin` scope). */
  metricsPublic?: boolean;
  /** prom-client's default process metrics in the server's registry. Default true. */
  defaultMetrics?: boolean;
  /** A pino logger, or pino options for one (written to `logStream`, default stdout). */
  logger?: Logger | LoggerOptions;
  /** Where a logger made from options writes. */
  logStream?: DestinationStream;
  /** Log each request's texts, PII-masked (debug aid; default false: only their count). */
  logTexts?: boolean;
  /** Extra patterns masked in everything logged (`maskPII` options). */
  pii?: MaskOptions;
  /** Serve HTTPS with these options (`key`, `cert`, ...); default plain HTTP (TLS at a proxy). */
  tls?: https.ServerOptions;
}

/** What {@link ModelServer.reload} resolves with. */
export interface ReloadResult {
  version: string;
  previous: string;
}

/** The model being served, and what is needed to retire it safely. */
interface ModelSlot {
  model: ServeModel;
  version: string;
  /** Loaded by the server (disposed by it) rather than handed in. */
  owned: boolean;
  hiddenSize: number;
  classifier: boolean;
  labels: readonly string[];
  /** Model calls running on it. */
  active: number;
  retired: boolean;
}

/** One prediction as the API returns it. */
interface PredictionJson {
  label: string;
  score: number;
  scores: Record<string, number>;
}

type Output = PredictionJson | number[];

/** What a route handler returns. */
interface Reply {
  status: number;
  body: unknown;
  /** Raw text body with its content type (metrics). */
  text?: { contentType: string; value: string };
}

/** Per-request facts for the log line. */
interface RequestContext {
  reqId: string;
  route: string;
  keyId?: string;
  texts?: number;
  signal: AbortSignal;
  maskedTexts?: string[];
}

type Handler = (body: unknown, ctx: RequestContext) => Promise<Reply>;

const REQUEST_ID_RE = /^[\w.:-]{1,128}$/;

/**
 * Creates the HTTP service and starts loading the model; {@link ModelServer.listen} starts
 * serving (the model may still be loading: /readyz says when it is ready). Throws `ERR_INPUT`
 * for bad options.
 */
export function createServer(options: ServeOptions): ModelServer {
  return new ModelServer(options);
}

/** The service made by {@link createServer}. */
export class ModelServer {
  readonly #limits: ServeLimits;
  readonly #http: http.Server;
  readonly #logger: Logger;
  readonly #metrics: ServeMetrics;
  readonly #keys: KeyStore | undefined;
  readonly #chat: ChatService | undefined;
  readonly #batcher: Batcher<Output>;
  readonly #routes: Map<string, { method: string; scope: Scope | 'any' | null; handler: Handler }>;
  readonly #options: ServeOptions;
  readonly #mask: MaskOptions;
  #dir: string | undefined;
  #slot: ModelSlot | undefined;
  #loadError: Error | undefined;
  readonly #ready: Promise<void>;
  #reloading: Promise<unknown> = Promise.resolve();
  // Shutting down: /readyz answers 503 from here on ...
  #unready = false;
  // ... and, drainDelayMs later, no new connection is accepted and new requests get 503.
  #draining = false;
  #closing: Promise<void> | undefined;
  #closed = false;
  #inFlight = 0;
  #onIdle: (() => void)[] = [];

  constructor(options: ServeOptions) {
    if (typeof options !== 'object' || options === null) throw expected(InputError, 'an object', 'options', options);
    this.#options = options;
    this.#limits = resolveLimits(options);
    checkOptions(options);
    this.#mask = { ...(options.pii ?? {}) };
    maskPII('', this.#mask); // checks the patterns now
    this.#logger = makeLogger(options.logger, options.logStream);
    this.#chat = options.chat;
    this.#batcher = new Batcher<Output>({
      maxBatchTokens: this.#limits.maxBatchTokens,
      maxWaitMs: this.#limits.maxWaitMs,
      maxQueue: this.#limits.maxQueue,
      run: (kind, texts) => this.#runBatch(kind, texts),
      countTokens: (texts) => this.#countTokens(texts),
      onBatch: (b) => {
        const kind = b.kind.startsWith('embed') ? 'embed' : b.kind;
        this.#metrics.batchSeconds.observe({ kind, result: b.ok ? 'ok' : 'failed' }, b.seconds);
        if (!b.ok) return;
        this.#metrics.batchTexts.observe({ kind }, b.texts);
        this.#metrics.batchRequests.observe({ kind }, b.requests);
        this.#metrics.batchTokens.observe({ kind }, b.tokens);
        this.#metrics.tokens.inc({ kind }, b.tokens);
        this.#metrics.texts.inc({ kind }, b.texts);
      },
    });
    this.#metrics = new ServeMetrics({
      defaultMetrics: options.defaultMetrics ?? true,
      queueDepth: () => this.#batcher.depth,
      inFlight: () => this.#inFlight,
    });
    this.#keys =
      options.auth === false
        ? undefined
        : new KeyStore(options.auth.keysFile, {
            ...(options.auth.refreshMs !== undefined ? { refreshMs: options.auth.refreshMs } : {}),
            onError: (err) => this.#logger.error({ err: this.#safe(err.message) }, 'key file not reloaded'),
          });
    this.#routes = this.#makeRoutes();
    this.#http = this.#makeHttpServer();
    if (typeof options.model === 'string') {
      this.#dir = options.model;
      this.#ready = this.#loadSlot(options.model).then((slot) => this.#install(slot));
    } else {
      const slot = slotOf(options.model, options.modelVersion ?? 'unversioned', false);
      this.#install(slot);
      this.#ready = Promise.resolve();
    }
    this.#ready.catch((err: unknown) => {
      this.#loadError = err as Error;
      this.#logger.error({ err: this.#safe((err as Error).message) }, 'model failed to load');
    });
    // A reload waits for the first load, so that the first model cannot replace a newer one.
    this.#reloading = this.#ready.catch(() => undefined);
  }

  /** Resolves when the first model is loaded; rejects when it cannot be. */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** The server's Prometheus registry. */
  get registry(): ServeMetrics['registry'] {
    return this.#metrics.registry;
  }

  /** The logger requests are logged to. */
  get logger(): Logger {
    return this.#logger;
  }

  /** The version of the model being served, or undefined while none is loaded. */
  get modelVersion(): string | undefined {
    return this.#slot?.version;
  }

  /** Starts accepting connections; resolves with the address (port 0: an ephemeral port). */
  listen(port = 8080, host = '127.0.0.1'): Promise<AddressInfo> {
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw expected(InputError, 'a port in [0, 65535]', 'port', port);
    if (typeof host !== 'string') throw expected(InputError, 'a host name or address', 'host', host);
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#http.once('error', onError);
      this.#http.listen(port, host, () => {
        this.#http.off('error', onError);
        const address = this.address();
        if (address === null) {
          reject(new Error('The server has no address after listen'));
          return;
        }
        this.#logger.info({ host: address.address, port: address.port }, 'listening');
        resolve(address);
      });
    });
  }

  /** Where the server listens; null before listen() and after close(). */
  address(): AddressInfo | null {
    const a = this.#http.address();
    return a !== null && typeof a === 'object' ? a : null;
  }

  /** Re-reads the key file now (it is also re-read when it changes). */
  reloadKeys(): void {
    this.#keys?.reload();
  }

  /**
   * Loads the model of `dir` (default: the directory served now) and swaps it in once loaded:
   * requests in flight finish on the old model, which is disposed after its last batch. When
   * the new model cannot be loaded the promise rejects (`ERR_CHECKPOINT`, ...) and the old one
   * keeps serving. Reloads run one at a time.
   */
  reload(dir?: string): Promise<ReloadResult> {
    const run = async (): Promise<ReloadResult> => {
      const target = dir ?? this.#dir;
      if (target === undefined) {
        throw new InputError(
          'Expected a model directory for reload(dir) but received none (the server was given a model object)',
        );
      }
      if (typeof target !== 'string' || target === '') throw expected(InputError, 'a directory path', 'dir', target);
      if (this.#closing !== undefined)
        throw new InputError('Expected a running server for reload but the server is closing');
      let slot: ModelSlot;
      try {
        slot = await this.#loadSlot(target);
      } catch (err) {
        this.#metrics.reloads.inc({ result: 'failed' });
        this.#logger.error({ err: this.#safe((err as Error).message) }, 'reload failed; the old model keeps serving');
        throw err;
      }
      const previous = this.#slot?.version ?? 'none';
      this.#dir = target;
      this.#install(slot);
      this.#metrics.reloads.inc({ result: 'ok' });
      this.#logger.info({ version: slot.version, previous }, 'model reloaded');
      return { version: slot.version, previous };
    };
    const p = this.#reloading.then(run, run);
    this.#reloading = p.catch(() => undefined);
    return p;
  }

  /**
   * Graceful shutdown: /readyz turns 503 at once; `drainDelayMs` later (default 0) new
   * connections are refused and new requests on open ones get 503; requests in flight and in
   * the queue are answered (up to `shutdownTimeoutMs`, then their connections are closed), and
   * the model is disposed. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#unready = true;
    if (this.#limits.drainDelayMs > 0 && this.#http.listening) {
      // Load balancers see /readyz fail and stop sending traffic while it is still served.
      this.#logger.info({ drainDelayMs: this.#limits.drainDelayMs }, 'not ready; draining soon');
      await new Promise((resolve) => setTimeout(resolve, this.#limits.drainDelayMs));
    }
    this.#draining = true;
    this.#logger.info({ inFlight: this.#inFlight, queued: this.#batcher.depth }, 'draining');
    const closed = new Promise<void>((resolve) => {
      this.#http.close(() => resolve());
    });
    this.#http.closeIdleConnections();
    // One deadline for the requests, a reload under way and the last batch.
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), this.#limits.shutdownTimeoutMs);
    });
    const drained = await Promise.race([this.#requestsDone().then(() => true), deadline]);
    if (!drained) this.#logger.warn({ inFlight: this.#inFlight }, 'shutdown timeout: closing open requests');
    this.#http.closeAllConnections();
    await closed;
    const settled = await Promise.race([
      Promise.all([this.#reloading, this.#batcher.idle()]).then(() => true),
      deadline,
    ]);
    clearTimeout(timer);
    if (!settled) this.#logger.warn('shutdown timeout: a model call is still running; the model is freed after it');
    this.#closed = true;
    const slot = this.#slot;
    if (slot !== undefined) {
      slot.retired = true;
      // A model call still running keeps the weights until it ends (Bert.dispose defers).
      if (slot.owned) slot.model.dispose();
    }
    this.#logger.info('closed');
  }

  #requestsDone(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#onIdle.push(resolve));
  }

  // ---- model ------------------------------------------------------------------------------------

  async #loadSlot(dir: string): Promise<ModelSlot> {
    const model = await Bert.load(dir, this.#options.loadOptions ?? {});
    try {
      return slotOf(model, await modelVersion(dir), true);
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  /** Makes `slot` the model new batches run on; the old one is disposed after its last batch. */
  #install(slot: ModelSlot): void {
    if (this.#closed) {
      // A load that outlived close(): nothing will serve it.
      if (slot.owned) slot.model.dispose();
      return;
    }
    const old = this.#slot;
    this.#slot = slot;
    this.#metrics.setModel(slot.version);
    if (old !== undefined) {
      old.retired = true;
      if (old.owned && old.active === 0) old.model.dispose();
    }
  }

  #countTokens(texts: readonly string[]): number {
    const slot = this.#slot;
    if (slot === undefined) return texts.length;
    const m = slot.model;
    return m.tokenizer.encodeBatch(texts, { maxSeqLen: m.maxSeqLen, truncation: 'longest_first' }).ids.length;
  }

  async #runBatch(kind: string, texts: string[]): Promise<BatchOutput<Output>> {
    const slot = this.#slot;
    if (slot === undefined) throw new HttpError(503, 'ERR_NOT_READY', 'No model is loaded yet', { 'retry-after': '1' });
    slot.active++;
    try {
      if (kind === 'predict') {
        const predictions = await slot.model.predict(texts);
        const outputs = predictions.map((p): PredictionJson => {
          const scores: Record<string, number> = {};
          p.scores.forEach((s, k) => (scores[slot.labels[k] ?? `LABEL_${String(k)}`] = s));
          return { label: p.label, score: p.score, scores };
        });
        return { outputs, version: slot.version };
      }
      const pooling = kind === 'embed:cls' ? 'cls' : 'mean';
      const E = await slot.model.embed(texts, { pooling });
      const H = slot.hiddenSize;
      const outputs = texts.map((_, i) => Array.from(E.subarray(i * H, (i + 1) * H)));
      return { outputs, version: slot.version };
    } finally {
      slot.active--;
      if (slot.retired && slot.owned && slot.active === 0) slot.model.dispose();
    }
  }

  #liveSlot(): ModelSlot {
    const slot = this.#slot;
    if (slot !== undefined) return slot;
    if (this.#loadError !== undefined) {
      throw new HttpError(503, 'ERR_NOT_READY', 'The model failed to load; see the server log');
    }
    throw new HttpError(503, 'ERR_NOT_READY', 'The model is still loading', { 'retry-after': '1' });
  }

  // ---- HTTP ---------------------------------------------------------------------------------------

  #makeHttpServer(): http.Server {
    const l = this.#limits;
    const httpOptions: http.ServerOptions = {
      headersTimeout: l.headersTimeoutMs,
      requestTimeout: l.bodyTimeoutMs,
      // How often Node checks the two timeouts above; its default (30 s) would let a slow
      // client hold a connection for up to 30 s past headersTimeoutMs.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(l.headersTimeoutMs / 4))),
      maxHeaderSize: 16 * 1024,
    };
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => void this.#handle(req, res);
    const server =
      this.#options.tls !== undefined
        ? https.createServer({ ...this.#options.tls, ...httpOptions }, handler)
        : http.createServer(httpOptions, handler);
    // After listen(): errors of the listening socket are logged, not thrown.
    server.on('error', (err) => {
      if (this.#http.listening) this.#logger.error({ err: err.message }, 'server error');
    });
    server.keepAliveTimeout = l.keepAliveTimeoutMs;
    server.maxConnections = l.maxConnections;
    // Without a 'timeout' listener Node destroys a socket idle for this long.
    server.setTimeout(l.idleTimeoutMs);
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      // Malformed requests and headers or bodies that took too long: 400 / 408, then close.
      if (socket.writable && !socket.destroyed && !(err.code === 'ECONNRESET')) {
        const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT' ? 408 : 400;
        const code = status === 408 ? 'ERR_TIMEOUT' : 'ERR_BAD_REQUEST';
        const body = JSON.stringify({
          error: { code, message: status === 408 ? 'The request took too long to arrive' : 'Malformed HTTP request' },
        });
        socket.end(
          `HTTP/1.1 ${String(status)} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\n` +
            `content-length: ${String(Buffer.byteLength(body))}\r\nconnection: close\r\n\r\n${body}`,
        );
        // A client that does not read the answer does not keep the socket.
        setTimeout(() => socket.destroy(), 1000).unref();
      } else socket.destroy();
      this.#logger.info({ code: err.code ?? 'unknown' }, 'client error');
    });
    return server;
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const t0 = performance.now();
    const header = req.headers['x-request-id'];
    const reqId = typeof header === 'string' && REQUEST_ID_RE.test(header) ? header : crypto.randomUUID();
    res.setHeader('x-request-id', reqId);
    const pathname = (req.url ?? '/').split('?')[0] ?? '/';
    const route = this.#routes.get(pathname);
    const controller = new AbortController();
    const ctx: RequestContext = {
      reqId,
      route: route !== undefined ? pathname : 'unmatched',
      signal: controller.signal,
    };
    let errorInfo: { code: string; message: string } | undefined;
    this.#inFlight++;
    res.once('close', () => {
      if (!res.writableFinished) controller.abort();
      const status = res.writableFinished ? res.statusCode : 499;
      const seconds = (performance.now() - t0) / 1000;
      const labels = { route: ctx.route, method: req.method ?? 'OTHER', status: String(status) };
      this.#metrics.requests.inc(labels);
      this.#metrics.requestSeconds.observe(labels, seconds);
      const line = {
        reqId,
        method: req.method,
        route: ctx.route,
        status,
        ms: Math.round(seconds * 1e4) / 10,
        ...(ctx.keyId !== undefined ? { keyId: ctx.keyId } : {}),
        ...(ctx.texts !== undefined ? { texts: ctx.texts } : {}),
        ...(ctx.maskedTexts !== undefined ? { maskedTexts: ctx.maskedTexts } : {}),
        ...(errorInfo !== undefined ? { error: errorInfo } : {}),
      };
      if (status >= 500) this.#logger.error(line, 'request');
      else this.#logger.info(line, 'request');
      this.#inFlight--;
      if (this.#inFlight === 0) {
        const waiters = this.#onIdle;
        this.#onIdle = [];
        for (const w of waiters) w();
      }
    });
    try {
      if (route === undefined)
        throw new HttpError(404, 'ERR_NOT_FOUND', `No route ${decodePath(pathname.slice(0, 200))}`);
      if (req.method !== route.method && !(req.method === 'HEAD' && route.method === 'GET')) {
        throw new HttpError(
          405,
          'ERR_METHOD',
          `Expected ${route.method} for ${pathname} but received ${req.method ?? ''}`,
          {
            allow: route.method,
          },
        );
      }
      if (this.#draining) {
        res.setHeader('connection', 'close');
        if (route.scope !== null) throw new HttpError(503, 'ERR_DRAINING', 'The server is shutting down');
      }
      if (
        this.#keys !== undefined &&
        route.scope !== null &&
        !(pathname === '/metrics' && this.#options.metricsPublic === true)
      ) {
        const auth = this.#keys.authenticate(req.headers.authorization, route.scope === 'any' ? null : route.scope);
        if (auth.ok) ctx.keyId = auth.keyId;
        else {
          if (auth.keyId !== undefined) ctx.keyId = auth.keyId;
          throw new HttpError(
            auth.status,
            auth.code,
            auth.message,
            auth.retryAfter !== undefined ? { 'retry-after': String(auth.retryAfter) } : {},
          );
        }
      }
      // The reload route takes no body (`curl -X POST` sends none); whatever comes is discarded.
      const readBody = route.method === 'POST' && pathname !== '/v1/admin/reload';
      if (!readBody) req.resume();
      const body = readBody ? await readJsonBody(req, this.#limits.maxBodyBytes) : undefined;
      const reply = await route.handler(body, ctx);
      if (reply.text !== undefined) {
        res.writeHead(reply.status, { 'content-type': reply.text.contentType });
        res.end(req.method === 'HEAD' ? undefined : reply.text.value);
      } else {
        sendJson(res, reply.status, reply.body, req.method === 'HEAD');
      }
    } catch (err) {
      const e = this.#toHttpError(err);
      errorInfo = { code: e.code, message: this.#safe(e.message) };
      if (e.status >= 500 && !(err instanceof HttpError)) {
        this.#logger.error({ reqId, err: this.#safe(String((err as Error).stack ?? err)) }, 'unexpected error');
      }
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
      if (this.#draining) res.setHeader('connection', 'close');
      sendJson(res, e.status, { error: { code: e.code, message: e.message } }, req.method === 'HEAD');
    }
  }

  /** An error as the client sees it: HttpErrors as they are, others by their code. */
  #toHttpError(err: unknown): HttpError {
    if (err instanceof HttpError) return err;
    const status = statusOf(err);
    const code = (err as { code?: unknown } | null)?.code;
    const message = (err as { message?: unknown } | null)?.message;
    if (status === 500) return new HttpError(500, 'ERR_INTERNAL', 'Internal error; the server log has its request id');
    return new HttpError(
      status,
      typeof code === 'string' ? code : 'ERR_INTERNAL',
      typeof message === 'string' ? message : String(err),
    );
  }

  /** Text fit for a log line: PII masked. */
  #safe(text: string): string {
    return maskPII(text, this.#mask).text;
  }

  #makeRoutes(): Map<string, { method: string; scope: Scope | 'any' | null; handler: Handler }> {
    const handlers: Record<string, Handler> = {
      '/v1/predict': (body, ctx) => this.#predict(body, ctx),
      '/v1/embed': (body, ctx) => this.#embed(body, ctx),
      '/v1/chat': (body, ctx) => this.#chatReply(body, ctx),
      '/v1/feedback': (body) => this.#feedback(body),
      '/v1/admin/reload': async () => {
        const r = await this.reload();
        return { status: 200, body: { model: { version: r.version }, previous: { version: r.previous } } };
      },
      '/healthz': () => Promise.resolve({ status: 200, body: { status: 'ok' } }),
      '/readyz': () => {
        if (this.#unready) throw new HttpError(503, 'ERR_NOT_READY', 'The server is shutting down');
        const slot = this.#liveSlot();
        return Promise.resolve({ status: 200, body: { status: 'ready', model: { version: slot.version } } });
      },
      '/metrics': async () => {
        const value = await this.#metrics.registry.metrics();
        return { status: 200, body: undefined, text: { contentType: this.#metrics.registry.contentType, value } };
      },
      '/openapi.json': () => Promise.resolve({ status: 200, body: this.openapi() }),
    };
    const routes = new Map<string, { method: string; scope: Scope | 'any' | null; handler: Handler }>();
    for (const r of ROUTES) {
      if ('chat' in r && this.#chat === undefined) continue;
      const handler = handlers[r.path];
      if (handler !== undefined) routes.set(r.path, { method: r.method, scope: r.scope, handler });
    }
    return routes;
  }

  /** The OpenAPI 3.1 document of this server (what `GET /openapi.json` returns). */
  openapi(): Record<string, unknown> {
    return openApiDocument({
      version: packageVersion(),
      auth: this.#keys !== undefined,
      chat: this.#chat !== undefined,
      metricsPublic: this.#options.metricsPublic === true,
      limits: this.#limits,
    });
  }

  /** The routes this server answers, as `METHOD /path`. */
  routes(): string[] {
    return [...this.#routes].map(([p, r]) => `${r.method} ${p}`);
  }

  // ---- route handlers -----------------------------------------------------------------------------

  async #predict(body: unknown, ctx: RequestContext): Promise<Reply> {
    const texts = this.#texts(body, ctx);
    const slot = this.#liveSlot();
    if (!slot.classifier) {
      throw new HttpError(501, 'ERR_UNSUPPORTED', 'The model has no classification head: use /v1/embed');
    }
    const out = await this.#submit('predict', texts, ctx);
    return { status: 200, body: { results: out.outputs, model: { version: out.version } } };
  }

  async #embed(body: unknown, ctx: RequestContext): Promise<Reply> {
    const obj = bodyObject(body);
    const pooling = obj.pooling ?? 'mean';
    if (pooling !== 'mean' && pooling !== 'cls') {
      throw badRequest(`Expected 'mean' or 'cls' for pooling but received ${describeValue(pooling)}`);
    }
    const texts = this.#texts(obj, ctx);
    this.#liveSlot();
    const out = await this.#submit(`embed:${pooling}`, texts, ctx);
    return { status: 200, body: { embeddings: out.outputs, model: { version: out.version } } };
  }

  async #chatReply(body: unknown, ctx: RequestContext): Promise<Reply> {
    const chat = this.#chat;
    if (chat === undefined) throw new HttpError(404, 'ERR_NOT_FOUND', 'No chat service');
    const obj = bodyObject(body);
    if (typeof obj.text !== 'string')
      throw badRequest(`Expected a string for text but received ${describeValue(obj.text)}`);
    if (obj.text.length > this.#limits.maxTextChars) {
      throw badRequest(
        `Expected at most ${String(this.#limits.maxTextChars)} characters (maxTextChars) for text but received ${String(obj.text.length)}`,
      );
    }
    const conversationId = optionalString(obj, 'conversationId', 200);
    ctx.texts = 1;
    if (this.#options.logTexts === true) ctx.maskedTexts = [this.#safe(obj.text)];
    const reply = await this.#withTimeout(
      chat.reply({ text: obj.text, ...(conversationId !== undefined ? { conversationId } : {}) }),
    );
    return { status: 200, body: reply };
  }

  async #feedback(body: unknown): Promise<Reply> {
    const chat = this.#chat;
    if (chat === undefined) throw new HttpError(404, 'ERR_NOT_FOUND', 'No chat service');
    bodyObject(body);
    const stored = await this.#withTimeout(chat.feedback(body));
    if (typeof stored !== 'object' || stored === null || typeof stored.id !== 'string') {
      throw new Error(`ChatService.feedback resolved with ${describeValue(stored)} instead of {id: string}`);
    }
    return { status: 201, body: { id: stored.id } };
  }

  #texts(body: unknown, ctx: RequestContext): string[] {
    const texts = checkTexts(bodyObject(body), this.#limits);
    ctx.texts = texts.length;
    if (this.#options.logTexts === true) ctx.maskedTexts = texts.map((t) => this.#safe(t));
    return texts;
  }

  /** Queues texts for a batch; counts the requests withdrawn before their batch ran. */
  async #submit(kind: string, texts: string[], ctx: RequestContext): Promise<BatchOutput<Output>> {
    try {
      return await this.#batcher.submit(kind, texts, { signal: ctx.signal, timeoutMs: this.#limits.requestTimeoutMs });
    } catch (err) {
      if (err instanceof HttpError && err.code === 'ERR_CANCELLED')
        this.#metrics.cancelled.inc({ reason: 'disconnect' });
      if (err instanceof HttpError && err.status === 503 && err.code === 'ERR_TIMEOUT') {
        this.#metrics.cancelled.inc({ reason: 'timeout' });
      }
      throw err;
    }
  }

  async #withTimeout<T>(p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const ms = this.#limits.requestTimeoutMs;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new HttpError(504, 'ERR_TIMEOUT', `No answer within ${String(ms)} ms (requestTimeoutMs)`)),
        ms,
      );
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

// ---- helpers ----------------------------------------------------------------------------------------

function checkOptions(options: ServeOptions): void {
  const model: unknown = options.model;
  if (typeof model === 'string') {
    if (model === '') throw expected(InputError, 'a model directory or a model', 'options.model', model);
  } else if (
    typeof model !== 'object' ||
    model === null ||
    typeof (model as ServeModel).predict !== 'function' ||
    typeof (model as ServeModel).embed !== 'function'
  ) {
    throw expected(InputError, 'a model directory or a model', 'options.model', model);
  }
  const auth: unknown = options.auth;
  if (
    auth !== false &&
    (typeof auth !== 'object' || auth === null || typeof (auth as AuthOptions).keysFile !== 'string')
  ) {
    throw expected(
      InputError,
      '{keysFile} or false (serving without keys must be asked for explicitly)',
      'options.auth',
      auth,
    );
  }
  const chat: unknown = options.chat;
  if (
    chat !== undefined &&
    (typeof chat !== 'object' ||
      chat === null ||
      typeof (chat as ChatService).reply !== 'function' ||
      typeof (chat as ChatService).feedback !== 'function')
  ) {
    throw expected(InputError, 'an object with reply() and feedback()', 'options.chat', chat);
  }
  for (const key of ['metricsPublic', 'defaultMetrics', 'logTexts'] as const) {
    const v: unknown = options[key];
    if (v !== undefined && typeof v !== 'boolean') throw expected(InputError, 'a boolean', `options.${key}`, v);
  }
  if (options.modelVersion !== undefined && typeof options.modelVersion !== 'string') {
    throw expected(InputError, 'a string', 'options.modelVersion', options.modelVersion);
  }
}

function slotOf(model: ServeModel, version: string, owned: boolean): ModelSlot {
  const config = model.config;
  return {
    model,
    version,
    owned,
    hiddenSize: config.hiddenSize,
    classifier: config.heads.classifier && config.problemType !== 'regression',
    labels: [...model.labels],
    active: 0,
    retired: false,
  };
}

/** sha256 of config.json and model.safetensors, 12 hex digits: the same files give the same version. */
async function modelVersion(dir: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for (const file of ['config.json', 'model.safetensors']) {
    for await (const chunk of fs.createReadStream(path.join(dir, file))) hash.update(chunk as Buffer);
  }
  return hash.digest('hex').slice(0, 12);
}

function makeLogger(logger: Logger | LoggerOptions | undefined, stream: DestinationStream | undefined): Logger {
  if (
    logger !== undefined &&
    typeof (logger as Logger).child === 'function' &&
    typeof (logger as Logger).info === 'function'
  ) {
    return logger as Logger;
  }
  if (logger !== undefined && (typeof logger !== 'object' || logger === null)) {
    throw expected(InputError, 'a pino logger or pino options', 'options.logger', logger);
  }
  const opts: LoggerOptions = { name: 'elmo-serve', ...(logger as LoggerOptions | undefined) };
  return stream !== undefined ? pino(opts, stream) : pino(opts);
}

/** A URL path with its %-escapes decoded (so that masking sees what they spell), as is when malformed. */
function decodePath(p: string): string {
  try {
    return decodeURIComponent(p);
  } catch {
    return p;
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, head: boolean): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(head ? undefined : text);
}

let cachedVersion: string | undefined;

/** The version in package.json (two directories above lib/serve/ and dist/serve/). */
function packageVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
      version?: string;
    };
    cachedVersion = pkg.version ?? 'unknown';
  } catch {
    cachedVersion = 'unknown';
  }
  return cachedVersion;
}
