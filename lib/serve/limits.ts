/**
 * Limits of the HTTP service and the checks of what clients send: the body (size, JSON), the
 * texts (how many, how long), with one message shape, "Expected X for Y but received Z".
 */
import type { IncomingMessage } from 'node:http';

import { InputError, describeValue, expected } from '../errors';
import { HttpError } from './http-error';

/** Limits and timeouts of the service; every field has a default (docs/serving.md). */
export interface ServeLimits {
  /** Most tokens in one model call. Default 4096. */
  maxBatchTokens: number;
  /** Longest a request is held for its batch to fill after the model was busy. Default 2. */
  maxWaitMs: number;
  /** Most requests waiting for a batch; beyond it 429 with Retry-After. Default 256. */
  maxQueue: number;
  /** Time a request may take from arrival to answer; 503 (queued) or 504 (running) after. Default 30000. */
  requestTimeoutMs: number;
  /** Largest request body; larger ones get 413. Default 1 MiB. */
  maxBodyBytes: number;
  /** Most texts in one request. Default 64. */
  maxTexts: number;
  /** Longest text, in UTF-16 code units (texts are also cut to the model's maxSeqLen tokens). Default 10000. */
  maxTextChars: number;
  /** Time a client has to send the request headers (slowloris). Default 10000. */
  headersTimeoutMs: number;
  /** Time a client has to send the whole request, headers and body. Default 30000. */
  bodyTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. Default 5000. */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic either way for this long is closed. Default 60000. */
  idleTimeoutMs: number;
  /** Most open connections; more are refused at accept. Default 1024. */
  maxConnections: number;
  /** `close()` waits this long for requests in flight before it closes their connections. Default 30000. */
  shutdownTimeoutMs: number;
  /**
   * On `close()`, /readyz answers 503 for this long before new connections are refused, so that
   * a load balancer stops routing here first. Default 0.
   */
  drainDelayMs: number;
}

export const DEFAULT_LIMITS: Readonly<ServeLimits> = {
  maxBatchTokens: 4096,
  maxWaitMs: 2,
  maxQueue: 256,
  requestTimeoutMs: 30_000,
  maxBodyBytes: 1024 * 1024,
  maxTexts: 64,
  maxTextChars: 10_000,
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 60_000,
  maxConnections: 1024,
  shutdownTimeoutMs: 30_000,
  drainDelayMs: 0,
};

/** The limits of `options` over the defaults, each checked (`ERR_INPUT`). */
export function resolveLimits(options: Partial<Record<keyof ServeLimits, unknown>>): ServeLimits {
  const out = { ...DEFAULT_LIMITS };
  for (const key of Object.keys(DEFAULT_LIMITS) as (keyof ServeLimits)[]) {
    const v = options[key];
    if (v === undefined) continue;
    const zeroOk = key === 'maxWaitMs' || key === 'drainDelayMs';
    if (typeof v !== 'number' || !Number.isInteger(v) || v < (zeroOk ? 0 : 1)) {
      throw expected(InputError, zeroOk ? 'an integer >= 0' : 'a positive integer', `options.${key}`, v);
    }
    out[key] = v;
  }
  if (out.headersTimeoutMs > out.bodyTimeoutMs) {
    throw new InputError(
      `Expected options.headersTimeoutMs (${String(out.headersTimeoutMs)}) to be at most options.bodyTimeoutMs (${String(out.bodyTimeoutMs)})`,
    );
  }
  return out;
}

/**
 * Reads a JSON request body of at most `maxBytes`: 413 when larger (by Content-Length or as it
 * arrives), 415 for another content type, 400 for malformed JSON.
 */
export async function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const type = req.headers['content-type'];
  if (type !== undefined && !/^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i.test(type)) {
    throw new HttpError(
      415,
      'ERR_MEDIA_TYPE',
      `Expected Content-Type application/json but received '${type.slice(0, 64)}'`,
    );
  }
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(maxBytes, declared);
  const { chunks, size } = await new Promise<{ chunks: Buffer[]; size: number }>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= maxBytes) {
        chunks.push(chunk);
        return;
      }
      // Stop keeping what arrives; the answer is sent with Connection: close (not destroying
      // the request, which would take the socket and the answer with it).
      req.off('data', onData);
      req.resume();
      reject(tooLarge(maxBytes));
    };
    req.on('data', onData);
    req.once('end', () => resolve({ chunks, size }));
    req.once('error', reject);
    req.once('close', () => {
      if (!req.complete)
        reject(new HttpError(499, 'ERR_CANCELLED', 'The client closed the connection while sending the body'));
    });
  });
  const text = Buffer.concat(chunks, size).toString('utf8');
  if (text.trim() === '')
    throw new HttpError(400, 'ERR_JSON', 'Expected a JSON object for the request body but received an empty body');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HttpError(
      400,
      'ERR_JSON',
      `Expected a JSON object for the request body but received malformed JSON (${(err as Error).message})`,
    );
  }
}

function tooLarge(maxBytes: number, declared?: number): HttpError {
  const got = declared === undefined ? `more than ${String(maxBytes)} bytes` : `${String(declared)} bytes`;
  return new HttpError(
    413,
    'ERR_TOO_LARGE',
    `Expected a body of at most ${String(maxBytes)} bytes (maxBodyBytes) but received ${got}`,
    {
      connection: 'close',
    },
  );
}

/** A 400 with the message of an {@link InputError}. */
export function badRequest(message: string): HttpError {
  return new HttpError(400, 'ERR_INPUT', message);
}

/** The body as an object, or 400. */
export function bodyObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest(`Expected a JSON object for the request body but received ${describeValue(body)}`);
  }
  return body as Record<string, unknown>;
}

/** `body.texts`: a non-empty array of at most maxTexts strings of at most maxTextChars each. */
export function checkTexts(body: Record<string, unknown>, limits: ServeLimits): string[] {
  const texts = body.texts;
  if (!Array.isArray(texts) || texts.length === 0) {
    throw badRequest(`Expected a non-empty array of strings for texts but received ${describeValue(texts)}`);
  }
  if (texts.length > limits.maxTexts) {
    throw badRequest(
      `Expected at most ${String(limits.maxTexts)} texts (maxTexts) for texts but received ${describeValue(texts)}`,
    );
  }
  texts.forEach((t: unknown, i) => {
    if (typeof t !== 'string')
      throw badRequest(`Expected a string for texts[${String(i)}] but received ${describeValue(t)}`);
    if (t.length > limits.maxTextChars) {
      throw badRequest(
        `Expected at most ${String(limits.maxTextChars)} characters (maxTextChars) for texts[${String(i)}] but received ${String(t.length)}`,
      );
    }
  });
  return texts as string[];
}

/** An optional string field of at most `max` characters. */
export function optionalString(body: Record<string, unknown>, field: string, max: number): string | undefined {
  const v = body[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.length > max) {
    throw badRequest(
      `Expected a string of at most ${String(max)} characters for ${field} but received ${describeValue(v)}`,
    );
  }
  return v;
}
