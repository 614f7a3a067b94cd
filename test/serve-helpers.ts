// Shared pieces of the HTTP service tests (test/serve*.test.ts): a tiny random model saved to a
// temporary folder, an HTTP client that returns status, headers and the parsed answer, a poller,
// a registry of started servers, and a model wrapper that records its calls and can be held at a
// gate. Importing this file registers no jest hooks: each test file closes its servers itself,
// e.g. `afterEach(closeServers)`.
import * as http from 'node:http';
import * as path from 'node:path';

import pino from 'pino';

import { Bert, Tokenizer } from '../lib';
import type { EmbedOptions } from '../lib';
import { createServer } from '../lib/serve';
import type { ModelServer, ServeModel, ServeOptions } from '../lib/serve';
import { tmpDir } from './helpers';

const VOCAB = path.join(__dirname, 'fixtures', 'bert-a-cls', 'vocab.txt');

/**
 * Saves a small random classifier (hidden size 32, one layer, two heads, 64 positions) over the
 * fixture vocabulary test/fixtures/bert-a-cls/vocab.txt to a new temporary folder named after
 * `prefix`, and returns that folder. The same `labels` and `seed` give the same weights.
 */
export async function makeTinyModel(prefix: string, labels: readonly string[], seed: number): Promise<string> {
  const tokenizer = Tokenizer.fromVocab(VOCAB);
  using model = Bert.create(
    {
      vocabSize: tokenizer.vocabSize,
      hiddenSize: 32,
      numLayers: 1,
      numHeads: 2,
      intermediateSize: 64,
      maxPositions: 64,
      typeVocabSize: 2,
      labels: [...labels],
    },
    { tokenizer, device: 'cpu', seed, threads: 1 },
  );
  const dir = tmpDir(prefix);
  await model.save(dir);
  return dir;
}

/** A JSON answer of the service; which fields exist depends on the route. */
export interface ReplyBody {
  results: { label: string; score: number; scores: Record<string, number> }[];
  embeddings: number[][];
  model: { version: string };
  error: { code: string; message: string };
  [field: string]: unknown;
}

/** An answer of the service, read to its end. */
export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The answer parsed as JSON; `{}` when it is not JSON (e.g. /metrics). */
  body: ReplyBody;
  /** The answer as UTF-8 text. */
  text: string;
}

/**
 * Sends one request to 127.0.0.1:`port` on a connection of its own. A string `body` is sent as it
 * is (malformed JSON included), any other defined `body` as JSON; either way with
 * `content-type: application/json` and its Content-Length. `headers` are added last and override
 * those. Rejects only when the connection fails.
 */
export function call(
  port: number,
  method: string,
  route: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: route,
        agent: false,
        headers: {
          ...(payload !== undefined
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = {};
          try {
            parsed = JSON.parse(text);
          } catch {
            // Not JSON: the caller reads `text`.
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed as ReplyBody, text });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** The `authorization` header for an API key; no header when `key` is undefined. */
export function bearer(key: string | undefined): Record<string, string> {
  return key === undefined ? {} : { authorization: `Bearer ${key}` };
}

/** Polls `cond` every 5 ms; fails after `ms` with "timed out waiting for `what`" (a hang detector). */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A model that records the texts of each call and can be held at a gate. */
export interface Spy {
  model: ServeModel;
  /** The texts of each predict and embed call, in the order the calls came. */
  calls: string[][];
  /** Holds the calls that come from now on until release(). */
  hold: () => void;
  /** Lets the held calls, and all later ones, go through to the model. */
  release: () => void;
}

/**
 * Wraps `model` for a server (which does not dispose it). With `held`, the gate starts closed, as
 * if hold() had been called.
 */
export function spyModel(model: Bert, { held = false }: { held?: boolean } = {}): Spy {
  const calls: string[][] = [];
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  const wait = async (): Promise<void> => {
    if (gate !== undefined) await gate;
  };
  const spy: Spy = {
    calls,
    hold: () => {
      gate = new Promise((r) => (open = r));
    },
    release: () => {
      gate = undefined;
      open?.();
    },
    model: {
      labels: model.labels,
      tokenizer: model.tokenizer,
      maxSeqLen: model.maxSeqLen,
      config: model.config,
      async predict(texts: readonly string[]) {
        calls.push([...texts]);
        await wait();
        return model.predict(texts);
      },
      async embed(texts: readonly string[], options: EmbedOptions) {
        calls.push([...texts]);
        await wait();
        return model.embed(texts, options);
      },
      dispose: () => undefined,
    },
  };
  if (held) spy.hold();
  return spy;
}

/** The servers started by startServer() (or pushed here by a test), until closeServers(). */
export const servers: ModelServer[] = [];

/**
 * Creates a server without API keys, on the CPU with one thread, with a silent logger and without
 * the default process metrics; then `defaults` (a test file's model, say), then `options` on top.
 * Listens on a free port of 127.0.0.1, waits until the model is ready, and records the server in
 * `servers`.
 */
export async function startServer(
  options: Partial<ServeOptions>,
  defaults: Partial<ServeOptions> & Pick<ServeOptions, 'model'>,
): Promise<{ server: ModelServer; port: number }> {
  const server = createServer({
    auth: false,
    loadOptions: { device: 'cpu', threads: 1 },
    logger: pino({ level: 'silent' }),
    defaultMetrics: false,
    ...defaults,
    ...options,
  });
  servers.push(server);
  const { port } = await server.listen(0, '127.0.0.1');
  await server.ready();
  return { server, port };
}

/** Closes every server in `servers` and empties it; for `afterEach`. */
export async function closeServers(): Promise<void> {
  await Promise.all(servers.splice(0).map((s) => s.close()));
}
