// The HTTP service (lib/serve) against a real server on an ephemeral port, with a small random
// model made here: each route, dynamic batching (merging, no delay when idle, the token budget,
// timeouts, clients that leave), limits and backpressure, hostile clients, PII-free logs and the
// metrics. Timed bounds below are hang detectors, never performance claims.
import * as http from 'node:http';
import * as net from 'node:net';
import { Writable } from 'node:stream';

import { Bert } from '../lib';
import type { ModelServer, ServeOptions } from '../lib/serve';
import { call, closeServers, makeTinyModel, spyModel, startServer, until } from './serve-helpers';
import type { Reply } from './serve-helpers';

const LABELS = ['greet', 'bye', 'other'];

let modelDir: string;
let direct: Bert;

beforeAll(async () => {
  modelDir = await makeTinyModel('serve', LABELS, 11);
  direct = await Bert.load(modelDir, { device: 'cpu', threads: 1 });
});

afterAll(() => direct.dispose());

afterEach(closeServers);

function start(options: Partial<ServeOptions> = {}): Promise<{ server: ModelServer; port: number }> {
  return startServer(options, { model: modelDir });
}

/** The value of a metric line in Prometheus text, e.g. `elmo_batch_size_count{kind="predict"}`. */
async function metric(server: ModelServer, name: string): Promise<number> {
  const text = await server.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

// ---- routes -------------------------------------------------------------------------------------------

describe('routes', () => {
  it('POST /v1/predict: one result per text with every label score, and the model version', async () => {
    const { port } = await start();
    const texts = ['where is my card', 'hello there', 'bye'];
    const r = await call(port, 'POST', '/v1/predict', { texts });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(r.body.model.version).toMatch(/^[0-9a-f]{12}$/);
    const want = await direct.predict(texts);
    expect(r.body.results).toHaveLength(3);
    r.body.results.forEach((res: { label: string; score: number; scores: Record<string, number> }, i: number) => {
      expect(res.label).toBe(want[i]!.label);
      expect(res.score).toBeCloseTo(want[i]!.score, 6);
      expect(Object.keys(res.scores)).toEqual(LABELS);
      expect(Object.values(res.scores).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    });
  });

  it('POST /v1/embed: vectors of the hidden size, mean or cls pooling', async () => {
    const { port } = await start();
    const texts = ['hello', 'where is my card'];
    const mean = await call(port, 'POST', '/v1/embed', { texts });
    const cls = await call(port, 'POST', '/v1/embed', { texts, pooling: 'cls' });
    expect(mean.status).toBe(200);
    expect(mean.body.embeddings).toHaveLength(2);
    expect(mean.body.embeddings[0]).toHaveLength(32);
    const want = await direct.embed(texts, { pooling: 'mean' });
    // Float32 values survive the JSON round trip exactly.
    expect(Array.from(Float32Array.from(mean.body.embeddings.flat()))).toEqual(Array.from(want));
    const wantCls = await direct.embed(texts, { pooling: 'cls' });
    expect(Array.from(Float32Array.from(cls.body.embeddings.flat()))).toEqual(Array.from(wantCls));
  });

  it('GET /healthz, /readyz, /metrics and /openapi.json', async () => {
    const { server, port } = await start();
    expect((await call(port, 'GET', '/healthz')).body).toEqual({ status: 'ok' });
    const ready = await call(port, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ready', model: { version: server.modelVersion } });
    const metrics = await call(port, 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.headers['content-type']).toMatch(/^text\/plain/);
    expect(metrics.text).toContain(`elmo_model_info{version="${server.modelVersion ?? ''}"} 1`);
    const doc = await call(port, 'GET', '/openapi.json');
    expect(doc.body.openapi).toBe('3.1.0');
    // Every route the server answers is in the document, and nothing else.
    const documented = Object.entries(doc.body.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    expect(documented.sort()).toEqual(server.routes().sort());
    expect(documented).not.toContain('POST /v1/chat');
  });

  it('POST /v1/chat and /v1/feedback exist only with a chat service, and map its error codes', async () => {
    const seen: unknown[] = [];
    const chat = {
      reply: (input: { conversationId?: string; text: string }) => {
        seen.push(input);
        if (input.text === 'missing')
          return Promise.reject(Object.assign(new Error('no such conversation'), { code: 'ERR_NOT_FOUND' }));
        if (input.text === 'store')
          return Promise.reject(Object.assign(new Error('database down'), { code: 'ERR_STORE' }));
        if (input.text === 'bad')
          return Promise.reject(Object.assign(new Error('Expected a turn'), { code: 'ERR_INPUT' }));
        if (input.text === 'boom') return Promise.reject(new Error('secret internals'));
        return Promise.resolve({ conversationId: input.conversationId ?? 'c-1', reply: 'hi!' });
      },
      feedback: (input: unknown) => {
        seen.push(input);
        return Promise.resolve({ id: 'f-1' });
      },
    };
    const { server, port } = await start({ chat });
    const r = await call(port, 'POST', '/v1/chat', { conversationId: 'c-9', text: 'hello' });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ conversationId: 'c-9', reply: 'hi!' });
    expect(seen[0]).toEqual({ conversationId: 'c-9', text: 'hello' });
    expect((await call(port, 'POST', '/v1/chat', { text: 'missing' })).status).toBe(404);
    expect((await call(port, 'POST', '/v1/chat', { text: 'store' })).status).toBe(503);
    const bad = await call(port, 'POST', '/v1/chat', { text: 'bad' });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toEqual({ code: 'ERR_INPUT', message: 'Expected a turn' });
    const boom = await call(port, 'POST', '/v1/chat', { text: 'boom' });
    expect(boom.status).toBe(500);
    expect(boom.body.error.code).toBe('ERR_INTERNAL');
    expect(boom.text).not.toContain('secret internals');
    expect((await call(port, 'POST', '/v1/chat', { text: 3 })).body.error.message).toBe(
      'Expected a string for text but received number 3',
    );
    const fb = await call(port, 'POST', '/v1/feedback', { conversationId: 'c-9', turn: 0, intent: 'greet' });
    expect(fb.status).toBe(201);
    expect(fb.body).toEqual({ id: 'f-1' });
    expect(seen.at(-1)).toEqual({ conversationId: 'c-9', turn: 0, intent: 'greet' });
    expect(server.routes()).toEqual(expect.arrayContaining(['POST /v1/chat', 'POST /v1/feedback']));
    const doc = await call(port, 'GET', '/openapi.json');
    expect(Object.keys(doc.body.paths as object)).toEqual(expect.arrayContaining(['/v1/chat', '/v1/feedback']));
  });

  it('echoes a well-formed x-request-id and makes one otherwise', async () => {
    const { port } = await start();
    expect(
      (await call(port, 'GET', '/healthz', undefined, { 'x-request-id': 'abc-123' })).headers['x-request-id'],
    ).toBe('abc-123');
    const made = await call(port, 'GET', '/healthz', undefined, { 'x-request-id': 'has spaces\tand tabs' });
    expect(made.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});

// ---- batching -----------------------------------------------------------------------------------------

describe('dynamic batching', () => {
  it('merges 16 concurrent requests into fewer model calls, each request getting its own results', async () => {
    const spy = spyModel(direct);
    const { server, port } = await start({ model: spy.model, maxWaitMs: 0 });
    spy.hold();
    const texts = Array.from({ length: 16 }, (_, i) => [`text number ${String(i)}`, `and ${String(i)} more`]);
    const pending = texts.map((t) => call(port, 'POST', '/v1/predict', { texts: t }));
    // The first call is held at the gate while the other requests queue behind it.
    await until(() => spy.calls.length === 1, 'the first call');
    await until(async () => (await metric(server, 'elmo_queue_depth')) === 16 - spy.calls[0]!.length / 2, 'the queue');
    spy.release();
    const replies = await Promise.all(pending);
    expect(spy.calls.length).toBeLessThan(16);
    expect(spy.calls.length).toBe(2);
    for (const [i, r] of replies.entries()) {
      expect(r.status).toBe(200);
      const want = await direct.predict(texts[i]!);
      expect(r.body.results.map((x: { label: string }) => x.label)).toEqual(want.map((p) => p.label));
      expect(r.body.results[1]!.score).toBeCloseTo(want[1]!.score, 6);
    }
    expect(await metric(server, 'elmo_batch_size_count{kind="predict"}')).toBe(2);
    expect(await metric(server, 'elmo_batch_size_sum{kind="predict"}')).toBe(32);
    expect(await metric(server, 'elmo_batch_requests_sum{kind="predict"}')).toBe(16);
  });

  it('runs a lone request at once, however long maxWaitMs is', async () => {
    const spy = spyModel(direct);
    const { server, port } = await start({ model: spy.model, maxWaitMs: 600_000 });
    // With a 10-minute maxWaitMs, an answer at all shows the request was not held for it.
    const r = await call(port, 'POST', '/v1/predict', { texts: ['alone'] });
    expect(r.status).toBe(200);
    expect(spy.calls).toEqual([['alone']]);
    const again = await call(port, 'POST', '/v1/embed', { texts: ['alone again'] });
    expect(again.status).toBe(200);
    expect(spy.calls).toHaveLength(2);
    expect(await metric(server, 'elmo_batch_size_count{kind="embed"}')).toBe(1);
  });

  it('after a batch, holds the next one until the token budget fills (maxWaitMs long)', async () => {
    const spy = spyModel(direct);
    const perRequest = direct.tokenizer.encode('hold me').ids.length;
    const { server, port } = await start({ model: spy.model, maxWaitMs: 600_000, maxBatchTokens: 3 * perRequest });
    spy.hold();
    const first = call(port, 'POST', '/v1/predict', { texts: ['first'] });
    await until(() => spy.calls.length === 1, 'the first call');
    const queued = [
      call(port, 'POST', '/v1/predict', { texts: ['hold me'] }),
      call(port, 'POST', '/v1/predict', { texts: ['hold me'] }),
    ];
    await until(async () => (await metric(server, 'elmo_queue_depth')) === 2, 'two queued requests');
    spy.release();
    expect((await first).status).toBe(200);
    // Two requests' tokens are under the budget: the batch waits for more.
    await new Promise((r) => setTimeout(r, 100));
    expect(spy.calls).toHaveLength(1);
    // A third fills the budget and the three run as one call.
    const third = call(port, 'POST', '/v1/predict', { texts: ['hold me'] });
    const replies = await Promise.all([...queued, third]);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(spy.calls).toEqual([['first'], ['hold me', 'hold me', 'hold me']]);
  });

  it('a request over the token budget runs alone; requests of another kind wait for their own call', async () => {
    const spy = spyModel(direct);
    const { server, port } = await start({ model: spy.model, maxWaitMs: 0, maxBatchTokens: 8 });
    spy.hold();
    const first = call(port, 'POST', '/v1/predict', { texts: ['x'] });
    await until(() => spy.calls.length === 1, 'the first call');
    // Queued one after the other, so that their order is known.
    const queue = async (route: string, texts: string[], depth: number): Promise<{ reply: Promise<Reply> }> => {
      const reply = call(port, 'POST', route, { texts });
      await until(async () => (await metric(server, 'elmo_queue_depth')) === depth, `${String(depth)} queued`);
      return { reply };
    };
    const big = (await queue('/v1/predict', ['a rather long text that has many more than eight tokens'], 1)).reply;
    const embed = (await queue('/v1/embed', ['e'], 2)).reply;
    const small = (await queue('/v1/predict', ['s'], 3)).reply;
    spy.release();
    const replies = await Promise.all([first, big, embed, small]);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(spy.calls).toEqual([['x'], ['a rather long text that has many more than eight tokens'], ['e'], ['s']]);
  });

  it('answers 504 when the running batch outlasts requestTimeoutMs, 503 when a request timed out in the queue', async () => {
    const spy = spyModel(direct);
    const { server, port } = await start({ model: spy.model, requestTimeoutMs: 300 });
    spy.hold();
    const running = call(port, 'POST', '/v1/predict', { texts: ['slow'] });
    await until(() => spy.calls.length === 1, 'the first call');
    const queued = call(port, 'POST', '/v1/predict', { texts: ['queued'] });
    const [r1, r2] = await Promise.all([running, queued]);
    expect(r1.status).toBe(504);
    expect(r1.body.error.code).toBe('ERR_TIMEOUT');
    expect(r1.body.error.message).toBe('The model did not answer within 300 ms (requestTimeoutMs)');
    expect(r2.status).toBe(503);
    expect(r2.body.error.code).toBe('ERR_TIMEOUT');
    expect(r2.headers['retry-after']).toMatch(/^\d+$/);
    spy.release();
    expect(await metric(server, 'elmo_requests_cancelled_total{reason="timeout"}')).toBe(1);
    // The queued request never reached the model.
    await until(async () => (await metric(server, 'elmo_batch_size_count{kind="predict"}')) === 1, 'the batch');
    expect(spy.calls).toEqual([['slow']]);
  });

  it('drops the share of a client that disconnects before its batch starts', async () => {
    const spy = spyModel(direct);
    const { server, port } = await start({ model: spy.model, maxWaitMs: 0 });
    spy.hold();
    const first = call(port, 'POST', '/v1/predict', { texts: ['first'] });
    await until(() => spy.calls.length === 1, 'the first call');
    const staying = call(port, 'POST', '/v1/predict', { texts: ['staying'] });
    // A raw client that sends its request and leaves.
    const leaving = net.connect(port, '127.0.0.1');
    const body = JSON.stringify({ texts: ['leaving'] });
    leaving.write(
      `POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${String(body.length)}\r\n\r\n${body}`,
    );
    await until(async () => (await metric(server, 'elmo_queue_depth')) === 2, 'two queued requests');
    leaving.destroy();
    await until(
      async () => (await metric(server, 'elmo_requests_cancelled_total{reason="disconnect"}')) === 1,
      'the cancel',
    );
    expect(await metric(server, 'elmo_queue_depth')).toBe(1);
    spy.release();
    expect((await first).status).toBe(200);
    expect((await staying).status).toBe(200);
    expect(spy.calls).toEqual([['first'], ['staying']]);
  });
});

// ---- limits and hostile clients ---------------------------------------------------------------------

describe('limits and backpressure', () => {
  it('429 with Retry-After beyond maxQueue', async () => {
    const spy = spyModel(direct);
    const { server, port } = await start({ model: spy.model, maxQueue: 2 });
    spy.hold();
    const running = call(port, 'POST', '/v1/predict', { texts: ['a'] });
    await until(() => spy.calls.length === 1, 'the first call');
    const queued = [
      call(port, 'POST', '/v1/predict', { texts: ['b'] }),
      call(port, 'POST', '/v1/predict', { texts: ['c'] }),
    ];
    await until(async () => (await metric(server, 'elmo_queue_depth')) === 2, 'a full queue');
    const refused = await call(port, 'POST', '/v1/predict', { texts: ['d'] });
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('ERR_QUEUE_FULL');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    spy.release();
    expect((await Promise.all([running, ...queued])).map((r) => r.status)).toEqual([200, 200, 200]);
  });

  it('400 for malformed JSON and wrong types, with "Expected X for Y but received Z"', async () => {
    const { port } = await start({ maxTexts: 4, maxTextChars: 20 });
    const cases: [unknown, number, string, string][] = [
      ['{"texts": [', 400, 'ERR_JSON', 'Expected a JSON object for the request body but received malformed JSON'],
      ['', 400, 'ERR_JSON', 'Expected a JSON object for the request body but received an empty body'],
      [[1, 2], 400, 'ERR_INPUT', 'Expected a JSON object for the request body but received Array(2)'],
      [{ text: 'hi' }, 400, 'ERR_INPUT', 'Expected a non-empty array of strings for texts but received undefined'],
      [{ texts: 'hi' }, 400, 'ERR_INPUT', "Expected a non-empty array of strings for texts but received string 'hi'"],
      [{ texts: [] }, 400, 'ERR_INPUT', 'Expected a non-empty array of strings for texts but received Array(0)'],
      [{ texts: ['ok', 7] }, 400, 'ERR_INPUT', 'Expected a string for texts[1] but received number 7'],
      [
        { texts: ['a', 'b', 'c', 'd', 'e'] },
        400,
        'ERR_INPUT',
        'Expected at most 4 texts (maxTexts) for texts but received Array(5)',
      ],
      [
        { texts: ['x'.repeat(21)] },
        400,
        'ERR_INPUT',
        'Expected at most 20 characters (maxTextChars) for texts[0] but received 21',
      ],
    ];
    for (const [body, status, code, message] of cases) {
      const r = await call(port, 'POST', '/v1/predict', body);
      expect([r.status, r.body.error.code]).toEqual([status, code]);
      expect(r.body.error.message).toContain(message);
    }
    const pooling = await call(port, 'POST', '/v1/embed', { texts: ['a'], pooling: 'max' });
    expect(pooling.body.error.message).toBe("Expected 'mean' or 'cls' for pooling but received string 'max'");
    const media = await call(port, 'POST', '/v1/predict', 'texts=a', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    expect([media.status, media.body.error.code]).toEqual([415, 'ERR_MEDIA_TYPE']);
    const missing = await call(port, 'GET', '/v1/nothing');
    expect([missing.status, missing.body.error.code]).toEqual([404, 'ERR_NOT_FOUND']);
    const method = await call(port, 'GET', '/v1/predict');
    expect([method.status, method.headers.allow]).toEqual([405, 'POST']);
  });

  it('413 for a body over maxBodyBytes, declared or streamed, and keeps serving', async () => {
    const { port } = await start({ maxBodyBytes: 1024 });
    const big = JSON.stringify({ texts: ['x'.repeat(4000)] });
    const declared = await call(port, 'POST', '/v1/predict', big);
    expect([declared.status, declared.body.error.code]).toEqual([413, 'ERR_TOO_LARGE']);
    expect(declared.body.error.message).toBe(
      `Expected a body of at most 1024 bytes (maxBodyBytes) but received ${String(big.length)} bytes`,
    );
    // Chunked, without a Content-Length: refused as it arrives.
    const streamed = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/v1/predict',
          agent: false,
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.write('{"texts": ["');
      const chunk = 'y'.repeat(512);
      let sent = 0;
      const pump = (): void => {
        if (sent > 64 || req.destroyed) return;
        sent++;
        req.write(chunk, () => setImmediate(pump));
      };
      pump();
    });
    expect(streamed).toBe(413);
    expect((await call(port, 'POST', '/v1/predict', { texts: ['fine'] })).status).toBe(200);
  });

  it('cuts off a slowloris client that sends its headers slowly while serving others', async () => {
    const { port } = await start({ headersTimeoutMs: 400, bodyTimeoutMs: 800 });
    const slow = net.connect(port, '127.0.0.1');
    let received = '';
    slow.on('data', (d: Buffer) => (received += d.toString()));
    const closed = new Promise<void>((resolve) => slow.on('close', () => resolve()));
    slow.on('error', () => undefined);
    slow.write('POST /v1/predict HTTP/1.1\r\nhost: x\r\n');
    const header = 'x-slow: ' + 'a'.repeat(200);
    let i = 0;
    const drip = setInterval(() => {
      if (!slow.destroyed) slow.write(header[i++ % header.length] ?? 'a');
    }, 50);
    try {
      // Others are served meanwhile.
      for (let k = 0; k < 3; k++)
        expect((await call(port, 'POST', '/v1/predict', { texts: ['meanwhile'] })).status).toBe(200);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        closed,
        new Promise(
          (_, reject) => (timer = setTimeout(() => reject(new Error('the slow client was not cut off')), 15000)),
        ),
      ]);
      clearTimeout(timer);
    } finally {
      clearInterval(drip);
    }
    expect(received).toMatch(/^HTTP\/1\.1 408/);
  });

  it('serves others while many clients never read their answers', async () => {
    const { port } = await start();
    const body = JSON.stringify({
      texts: Array.from({ length: 32 }, () => 'a text to embed for a client that never reads'),
    });
    const sockets = Array.from({ length: 40 }, () => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      s.pause();
      s.write(
        `POST /v1/embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${String(body.length)}\r\n\r\n${body}`,
      );
      return s;
    });
    try {
      for (let k = 0; k < 3; k++) {
        const r = await call(port, 'POST', '/v1/predict', { texts: ['still served'] });
        expect(r.status).toBe(200);
      }
    } finally {
      for (const s of sockets) s.destroy();
    }
  });
});

// ---- logs and metrics ---------------------------------------------------------------------------------

describe('logs and metrics', () => {
  it('logs one JSON line per request with its id, and no raw PII from any part of a request', async () => {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(
          ...chunk
            .toString()
            .split('\n')
            .filter((l) => l !== ''),
        );
        done();
      },
    });
    const chat = {
      reply: () =>
        Promise.reject(Object.assign(new Error('unknown caller jane.doe@example.com'), { code: 'ERR_NOT_FOUND' })),
      feedback: () => Promise.resolve({ id: 'f' }),
    };
    const { port } = await start({ logger: { level: 'info' }, logStream: stream, logTexts: true, chat });
    const pii = ['jane.doe@example.com', '+44 20 7946 0958', '4111 1111 1111 1111', 'DE89 3704 0044 0532 0130 00'];
    const text = `mail ${pii[0]!}, call ${pii[1]!}, card ${pii[2]!}, iban ${pii[3]!}`;
    expect((await call(port, 'POST', '/v1/predict', { texts: [text] }, { 'x-request-id': 'req-1' })).status).toBe(200);
    expect((await call(port, 'POST', '/v1/embed', { texts: [text] })).status).toBe(200);
    expect((await call(port, 'POST', '/v1/predict', { texts: text })).status).toBe(400); // echoed in the message
    expect((await call(port, 'POST', '/v1/predict', `{"texts": ["${text}"`)).status).toBe(400); // in a JSON error
    expect((await call(port, 'POST', '/v1/predict', { texts: [text, 5] })).status).toBe(400);
    expect((await call(port, 'POST', '/v1/chat', { text })).status).toBe(404);
    expect((await call(port, 'GET', `/v1/${encodeURIComponent(pii[0]!)}?q=${pii[0]!}`)).status).toBe(404);
    expect((await call(port, 'GET', '/healthz', undefined, { 'x-request-id': pii[0]! })).status).toBe(200);
    await until(() => lines.filter((l) => l.includes('"msg":"request"')).length >= 8, 'the log lines');
    const log = lines.join('\n');
    for (const value of pii) {
      expect(log).not.toContain(value);
      expect(log).not.toContain(encodeURIComponent(value));
      expect(log).not.toContain(value.replace(/ /g, ''));
    }
    expect(log).toContain('[EMAIL]');
    expect(log).toContain('[PHONE]');
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.msg === 'request');
    expect(records[0]).toMatchObject({ reqId: 'req-1', method: 'POST', route: '/v1/predict', status: 200, texts: 1 });
    expect(records[0]!.maskedTexts).toEqual(['mail [EMAIL], call [PHONE], card [CARD], iban [IBAN]']);
    for (const r of records) expect(typeof r.reqId).toBe('string');
  });

  it('keeps each server in a registry of its own, with the documented metrics', async () => {
    const a = await start({ defaultMetrics: true });
    const b = await start({ defaultMetrics: true });
    expect(a.server.registry).not.toBe(b.server.registry);
    await call(a.port, 'POST', '/v1/predict', { texts: ['one', 'two'] });
    const text = await a.server.registry.metrics();
    for (const name of [
      'elmo_http_requests_total{route="/v1/predict",method="POST",status="200"} 1',
      'elmo_http_request_duration_seconds_bucket',
      'elmo_batch_size_bucket',
      'elmo_batch_tokens_bucket',
      'elmo_batch_duration_seconds_bucket',
      'elmo_queue_depth 0',
      'elmo_tokens_processed_total{kind="predict"}',
      'elmo_texts_processed_total{kind="predict"} 2',
      'elmo_model_info{version=',
      'process_cpu_user_seconds_total',
      'nodejs_eventloop_lag_seconds',
    ]) {
      expect(text).toContain(name);
    }
    expect(await metric(b.server, 'elmo_texts_processed_total{kind="predict"}')).toBe(0);
  });
});
