/**
 * API keys of the HTTP service: the key file, hashing, constant-time checks, scopes and per-key
 * rate limits.
 *
 * A key is `elmo_<id>.<secret>`: the id names the key in the file, in logs and in `elmo keys`
 * (it is not secret), the secret is 32 random bytes in base64url. The file keeps only
 * `sha256:<hex>` of the whole key. A fast hash is enough here, unlike for passwords: the secret
 * has 256 bits of entropy, so a stolen file cannot be brute-forced whatever the hash's speed,
 * and a slow hash (scrypt, ~50 ms of CPU) on every request would hand any client a cheap way to
 * burn the server's CPU. The presented key's hash is compared with `crypto.timingSafeEqual`.
 *
 * The key file, written atomically (a reader sees the old file or the new one):
 * ```json
 * { "keys": [ { "id": "k7f3a9c01", "hash": "sha256:...", "scopes": ["predict"],
 *               "rateLimit": { "rps": 20, "burst": 40 }, "createdAt": "2025-01-31T12:00:00.000Z" } ] }
 * ```
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

import { InputError, expected } from '../errors';
import { writeFileAtomic } from '../fs-atomic';

/** What a key may do: `predict` (/v1/predict, /v1/embed, /v1/chat), `feedback`, `admin` (/metrics, reload). */
export type Scope = 'predict' | 'feedback' | 'admin';

export const SCOPES: readonly Scope[] = ['predict', 'feedback', 'admin'];

/** A token bucket: `rps` requests per second on average, up to `burst` at once. */
export interface RateLimit {
  rps: number;
  burst: number;
}

/** One entry of the key file. */
export interface KeyRecord {
  id: string;
  /** `sha256:<64 hex digits>` of the whole key. */
  hash: string;
  scopes: Scope[];
  rateLimit?: RateLimit;
  revoked?: boolean;
  /** ISO 8601. */
  createdAt: string;
  revokedAt?: string;
}

/** The key file's content. */
export interface KeyFile {
  keys: KeyRecord[];
}

const KEY_RE = /^elmo_([A-Za-z0-9-]{1,64})\.([A-Za-z0-9_-]{43})$/;
const ID_RE = /^[A-Za-z0-9-]{1,64}$/;
const HASH_RE = /^sha256:[0-9a-f]{64}$/;

/** `sha256:<hex>` of a key. */
export function hashKey(key: string): string {
  return `sha256:${crypto.createHash('sha256').update(key, 'utf8').digest('hex')}`;
}

/** Reads and checks a key file (`ERR_INPUT` naming the file and the bad field). */
export function readKeyFile(file: string): KeyFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InputError(`Cannot read the key file ${file}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new InputError(`The key file ${file} is not JSON: ${(err as Error).message}`);
  }
  return checkKeyFile(data, file);
}

function checkKeyFile(data: unknown, file: string): KeyFile {
  const keys = (data as { keys?: unknown } | null)?.keys;
  if (typeof data !== 'object' || data === null || !Array.isArray(keys)) {
    throw expected(InputError, 'an object {keys: [...]}', `the key file ${file}`, data);
  }
  const ids = new Set<string>();
  const checked = keys.map((k: unknown, i): KeyRecord => {
    const at = `keys[${String(i)}] of ${file}`;
    if (typeof k !== 'object' || k === null) throw expected(InputError, 'an object', at, k);
    const r = k as Record<string, unknown>;
    if (typeof r.id !== 'string' || !ID_RE.test(r.id)) {
      throw expected(InputError, 'an id of 1-64 letters, digits and dashes', `${at}.id`, r.id);
    }
    if (ids.has(r.id)) throw new InputError(`Expected unique key ids in ${file} but received '${r.id}' twice`);
    ids.add(r.id);
    if (typeof r.hash !== 'string' || !HASH_RE.test(r.hash)) {
      throw expected(InputError, "'sha256:' and 64 hex digits", `${at}.hash`, r.hash);
    }
    const scopes = parseScopes(r.scopes, `${at}.scopes`);
    if (typeof r.createdAt !== 'string')
      throw expected(InputError, 'an ISO 8601 string', `${at}.createdAt`, r.createdAt);
    if (r.revoked !== undefined && typeof r.revoked !== 'boolean') {
      throw expected(InputError, 'a boolean', `${at}.revoked`, r.revoked);
    }
    const record: KeyRecord = { id: r.id, hash: r.hash, scopes, createdAt: r.createdAt };
    if (r.rateLimit !== undefined) record.rateLimit = checkRateLimit(r.rateLimit, `${at}.rateLimit`);
    if (r.revoked === true) record.revoked = true;
    if (typeof r.revokedAt === 'string') record.revokedAt = r.revokedAt;
    return record;
  });
  return { keys: checked };
}

/** Scopes from an array or a comma-separated string. */
export function parseScopes(value: unknown, what: string): Scope[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
  if (
    !Array.isArray(list) ||
    list.length === 0 ||
    list.some((s: unknown) => typeof s !== 'string' || !(SCOPES as readonly string[]).includes(s))
  ) {
    throw expected(InputError, "a non-empty list of 'predict', 'feedback', 'admin'", what, value);
  }
  return [...new Set(list as Scope[])];
}

/** A rate limit with rps > 0 and burst >= 1. */
export function checkRateLimit(value: unknown, what: string): RateLimit {
  const r = value as Partial<RateLimit> | null;
  if (
    typeof r !== 'object' ||
    r === null ||
    typeof r.rps !== 'number' ||
    !(r.rps > 0) ||
    !Number.isFinite(r.rps) ||
    typeof r.burst !== 'number' ||
    !Number.isFinite(r.burst) ||
    r.burst < 1
  ) {
    throw expected(InputError, '{rps: a number > 0, burst: a number >= 1}', what, value);
  }
  return { rps: r.rps, burst: r.burst };
}

/** Options of {@link createKey}. */
export interface CreateKeyOptions {
  scopes: readonly Scope[];
  rateLimit?: RateLimit;
  /** Default: `k` and 8 random hex digits. */
  id?: string;
}

/**
 * Makes a key, adds its hash to `file` (created when missing) and returns the key: the only
 * time it is seen.
 *
 * @example
 * ```ts
 * const { key } = createKey('keys.json', { scopes: ['predict'], rateLimit: { rps: 10, burst: 20 } });
 * // Authorization: Bearer <key>
 * ```
 */
export function createKey(file: string, options: CreateKeyOptions): { key: string; record: KeyRecord } {
  const data = fs.existsSync(file) ? readKeyFile(file) : { keys: [] };
  const scopes = parseScopes(options.scopes, 'options.scopes');
  const id = options.id ?? `k${crypto.randomBytes(4).toString('hex')}`;
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw expected(InputError, 'an id of 1-64 letters, digits and dashes', 'options.id', id);
  }
  if (data.keys.some((k) => k.id === id)) throw new InputError(`A key with id '${id}' already exists in ${file}`);
  const key = `elmo_${id}.${crypto.randomBytes(32).toString('base64url')}`;
  const record: KeyRecord = { id, hash: hashKey(key), scopes, createdAt: new Date().toISOString() };
  if (options.rateLimit !== undefined) record.rateLimit = checkRateLimit(options.rateLimit, 'options.rateLimit');
  data.keys.push(record);
  writeFileAtomic(file, `${JSON.stringify(data, null, 2)}\n`);
  return { key, record };
}

/** Marks key `id` revoked in `file` (kept, so that its id is not reused); returns its record. */
export function revokeKey(file: string, id: string): KeyRecord {
  const data = readKeyFile(file);
  const record = data.keys.find((k) => k.id === id);
  if (record === undefined) throw new InputError(`No key with id '${id}' in ${file}`);
  if (record.revoked !== true) {
    record.revoked = true;
    record.revokedAt = new Date().toISOString();
    writeFileAtomic(file, `${JSON.stringify(data, null, 2)}\n`);
  }
  return record;
}

/** Why a request was refused, as the HTTP layer answers it. */
export interface AuthFailure {
  ok: false;
  status: 401 | 403 | 429;
  code: 'ERR_UNAUTHORIZED' | 'ERR_FORBIDDEN' | 'ERR_RATE_LIMITED';
  message: string;
  /** Seconds, for 429. */
  retryAfter?: number;
  /** The key's id when the key itself was valid. */
  keyId?: string;
}

export type AuthResult = { ok: true; keyId: string } | AuthFailure;

/** Options of {@link KeyStore}. */
export interface KeyStoreOptions {
  /** How often (ms) the file is checked for changes, at most; 0: on every request. Default 1000. */
  refreshMs?: number;
  /** Called when a changed file cannot be read; the keys read before stay in force. */
  onError?: (err: Error) => void;
  /** Clock in ms (tests). */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
  limit: RateLimit;
}

/**
 * The keys of a key file, re-read when the file changes (checked at most every `refreshMs`), so
 * `elmo keys create` / `revoke` take effect on a running server without a restart.
 */
export class KeyStore {
  readonly file: string;
  readonly #refreshMs: number;
  readonly #onError: ((err: Error) => void) | undefined;
  readonly #now: () => number;
  #byId = new Map<string, { record: KeyRecord; hash: Buffer }>();
  #stamp = '';
  #checkedAt = 0;
  readonly #buckets = new Map<string, Bucket>();
  // Compared against when the id is unknown, so that the work done does not depend on it.
  readonly #dummy = crypto.createHash('sha256').update('elmo-dummy').digest();

  constructor(file: string, options: KeyStoreOptions = {}) {
    if (typeof file !== 'string' || file === '') throw expected(InputError, 'a file path', 'keysFile', file);
    const refreshMs = options.refreshMs ?? 1000;
    if (typeof refreshMs !== 'number' || !(refreshMs >= 0)) {
      throw expected(InputError, 'a number >= 0', 'auth.refreshMs', refreshMs);
    }
    this.file = file;
    this.#refreshMs = refreshMs;
    this.#onError = options.onError;
    this.#now = options.now ?? Date.now;
    this.reload();
  }

  /** Re-reads the file now; throws (`ERR_INPUT`) and keeps the old keys when it is malformed. */
  reload(): void {
    const stamp = this.#fileStamp();
    const data = readKeyFile(this.file);
    const byId = new Map<string, { record: KeyRecord; hash: Buffer }>();
    for (const record of data.keys) {
      byId.set(record.id, { record, hash: Buffer.from(record.hash.slice('sha256:'.length), 'hex') });
    }
    this.#byId = byId;
    this.#stamp = stamp;
    this.#checkedAt = this.#now();
  }

  /** The keys, hashes included. */
  get keys(): KeyRecord[] {
    return [...this.#byId.values()].map((k) => structuredClone(k.record));
  }

  /**
   * Checks an `Authorization` header for `scope` (null: any valid key) and takes one token from
   * the key's bucket.
   */
  authenticate(header: string | undefined, scope: Scope | null): AuthResult {
    this.#maybeRefresh();
    const m = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m === null) {
      return {
        ok: false,
        status: 401,
        code: 'ERR_UNAUTHORIZED',
        message: 'Expected an Authorization: Bearer <key> header but received none',
      };
    }
    const key = m[1] ?? '';
    const parts = KEY_RE.exec(key);
    const entry = parts === null ? undefined : this.#byId.get(parts[1] ?? '');
    const presented = crypto.createHash('sha256').update(key, 'utf8').digest();
    const equal = crypto.timingSafeEqual(presented, entry?.hash ?? this.#dummy);
    if (entry === undefined || !equal) {
      return {
        ok: false,
        status: 401,
        code: 'ERR_UNAUTHORIZED',
        message: 'Expected a valid API key but received an unknown key',
      };
    }
    const record = entry.record;
    if (record.revoked === true) {
      return {
        ok: false,
        status: 401,
        code: 'ERR_UNAUTHORIZED',
        message: `Expected a valid API key but received key '${record.id}', which is revoked`,
        keyId: record.id,
      };
    }
    if (scope !== null && !record.scopes.includes(scope)) {
      return {
        ok: false,
        status: 403,
        code: 'ERR_FORBIDDEN',
        message: `Expected a key with scope '${scope}' but received key '${record.id}' with scopes [${record.scopes.join(', ')}]`,
        keyId: record.id,
      };
    }
    if (record.rateLimit !== undefined) {
      const wait = this.#take(record.id, record.rateLimit);
      if (wait > 0) {
        return {
          ok: false,
          status: 429,
          code: 'ERR_RATE_LIMITED',
          message: `Key '${record.id}' is over its rate limit (${String(record.rateLimit.rps)} requests per second, burst ${String(record.rateLimit.burst)})`,
          retryAfter: Math.max(1, Math.ceil(wait)),
          keyId: record.id,
        };
      }
    }
    return { ok: true, keyId: record.id };
  }

  /** Takes a token from the key's bucket: 0 when there was one, else the seconds until there is. */
  #take(id: string, limit: RateLimit): number {
    const now = this.#now();
    let b = this.#buckets.get(id);
    if (b === undefined || b.limit.rps !== limit.rps || b.limit.burst !== limit.burst) {
      b = { tokens: limit.burst, at: now, limit };
      this.#buckets.set(id, b);
    }
    b.tokens = Math.min(limit.burst, b.tokens + ((now - b.at) / 1000) * limit.rps);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return (1 - b.tokens) / limit.rps;
  }

  #maybeRefresh(): void {
    const now = this.#now();
    if (now - this.#checkedAt < this.#refreshMs) return;
    this.#checkedAt = now;
    let stamp: string;
    try {
      stamp = this.#fileStamp();
    } catch (err) {
      this.#onError?.(err as Error);
      return;
    }
    if (stamp === this.#stamp) return;
    try {
      this.reload();
    } catch (err) {
      this.#onError?.(err as Error);
    }
  }

  /** What changes when the file is replaced or written. */
  #fileStamp(): string {
    try {
      const s = fs.statSync(this.file);
      return `${String(s.ino)}:${String(s.size)}:${String(s.mtimeMs)}`;
    } catch (err) {
      throw new InputError(`Cannot read the key file ${this.file}: ${(err as Error).message}`);
    }
  }
}
