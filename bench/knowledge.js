#!/usr/bin/env node
// Knowledge-base search (lib/chat/knowledge.ts) against a plain-JS exact loop, in one run.
//
//   node bench/knowledge.js [--sizes=1000,10000,100000] [--dims=256] [--queries=300] [--k=5]
//                           [--baseline-ms=4000] [--json=OUT.json]
//
// Entries are random unit vectors (seeded, no model): `embed` hands out rows of a precomputed
// matrix, so the numbers are the knowledge base's own work. Per size n:
//   build      KnowledgeBase.build of n entries through `embed` in its default batches of 64
//              (checks, norms, copies); entries per second;
//   insert     add() of 1000 more entries in 10 calls of 100: entries per second over the 9 calls
//              after the first, and the first call's ms apart (it grows the storage by half,
//              a copy of every vector: the amortized cost of appending);
//   search     search(vector, { k }) one query at a time: p50 / p99 over --queries queries (ms);
//   batched    searchVectors of all the queries at once (blocks of 64 queries per GEMM): ms per query;
//   baseline   a plain-JS exact loop over the same unit vectors: one dot product per entry, the
//              top k kept in a small sorted array; p50 / p99 over as many queries as fit in
//              --baseline-ms (at least 20, at most --queries);
//   ratio      baseline p50 / search p50, and baseline p50 / batched ms per query;
//   agree      share of the baseline's queries whose top-k ids equal the knowledge base's.
// Needs dist/ (`npm run build`) or ELMO_DIST=<a compiled lib directory>.
// Prints the JSON on stdout and a table on stderr; writes it to --json (default
// bench/results/knowledge-latest.json).
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { option, countsOption } = require('./common');

const root = path.resolve(__dirname, '..');
const dist = process.env.ELMO_DIST || path.join(root, 'dist');
let KnowledgeBase;
try {
  ({ KnowledgeBase } = require(path.join(dist, 'chat', 'knowledge')));
} catch (err) {
  console.error(`bench/knowledge: cannot load ${path.join(dist, 'chat', 'knowledge')} (run npm run build): ${err.message}`);
  process.exit(1);
}

const sizes = countsOption('sizes', '1000,10000,100000');
const H = Number(option('dims', '256'));
const Q = Number(option('queries', '300'));
const K = Number(option('k', '5'));
const baselineMs = Number(option('baseline-ms', '4000'));
const jsonOut = String(option('json', path.join(__dirname, 'results', 'knowledge-latest.json')));
const INSERT = 1000;

// xorshift32 floats in [-1, 1).
function generator(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s / 2 ** 32) * 2 - 1;
  };
}

// `rows` random unit vectors of H floats.
function unitRows(rows, seed) {
  const next = generator(seed);
  const m = new Float32Array(rows * H);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < H; j++) {
      const v = next();
      m[r * H + j] = v;
      ss += v * v;
    }
    const inv = 1 / Math.sqrt(ss);
    for (let j = 0; j < H; j++) m[r * H + j] *= inv;
  }
  return m;
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function ms(t0) {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

// The exact top-k by a plain loop: dot products in doubles, a sorted array of k.
function baselineSearch(matrix, n, query, k) {
  const ids = [];
  const scores = [];
  for (let r = 0; r < n; r++) {
    let dot = 0;
    const o = r * H;
    for (let j = 0; j < H; j++) dot += query[j] * matrix[o + j];
    if (ids.length === k && dot <= scores[k - 1]) continue;
    let at = ids.length;
    while (at > 0 && scores[at - 1] < dot) at--;
    ids.splice(at, 0, r);
    scores.splice(at, 0, dot);
    if (ids.length > k) {
      ids.pop();
      scores.pop();
    }
  }
  return ids;
}

async function benchSize(n) {
  const matrix = unitRows(n + INSERT, 1000 + n);
  const queries = unitRows(Q, 7);
  // Texts are the row numbers; embed copies those rows out.
  const embed = (texts) => {
    const out = new Float32Array(texts.length * H);
    texts.forEach((t, i) => out.set(matrix.subarray(Number(t) * H, (Number(t) + 1) * H), i * H));
    return Promise.resolve(out);
  };
  const entry = (r) => ({ id: `e${r}`, question: String(r), answer: `answer ${r}` });
  const entries = Array.from({ length: n }, (_, r) => entry(r));

  let t0 = process.hrtime.bigint();
  const kb = await KnowledgeBase.build(entries, { embed });
  const buildMs = ms(t0);

  const extra = Array.from({ length: INSERT }, (_, i) => entry(n + i));
  t0 = process.hrtime.bigint();
  await kb.add(extra.slice(0, 100));
  const firstAddMs = ms(t0);
  t0 = process.hrtime.bigint();
  for (let i = 100; i < INSERT; i += 100) await kb.add(extra.slice(i, i + 100));
  const insertMs = ms(t0);
  kb.remove(extra.map((e) => e.id)); // search over the n entries, as the baseline

  const query = (i) => queries.subarray(i * H, (i + 1) * H);
  await kb.search(query(0), { k: K }); // warm-up
  const lat = [];
  const kbIds = [];
  for (let i = 0; i < Q; i++) {
    t0 = process.hrtime.bigint();
    const hits = await kb.search(query(i), { k: K });
    lat.push(ms(t0));
    kbIds.push(hits.map((h) => Number(h.entry.id.slice(1))));
  }
  lat.sort((a, b) => a - b);

  t0 = process.hrtime.bigint();
  kb.searchVectors(queries, { k: K });
  const batchedPerQuery = ms(t0) / Q;

  const base = [];
  let agree = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < Q && (i < 20 || ms(start) < baselineMs); i++) {
    t0 = process.hrtime.bigint();
    const ids = baselineSearch(matrix, n, query(i), K);
    base.push(ms(t0));
    if (ids.join() === kbIds[i].join()) agree++;
  }
  const baseCount = base.length;
  base.sort((a, b) => a - b);

  const row = {
    n,
    dims: H,
    k: K,
    buildMs: +buildMs.toFixed(1),
    buildPerSec: Math.round(n / (buildMs / 1000)),
    insertPerSec: Math.round((INSERT - 100) / (insertMs / 1000)),
    firstAddMs: +firstAddMs.toFixed(1),
    searchP50Ms: +quantile(lat, 0.5).toFixed(3),
    searchP99Ms: +quantile(lat, 0.99).toFixed(3),
    batchedMsPerQuery: +batchedPerQuery.toFixed(3),
    baselineP50Ms: +quantile(base, 0.5).toFixed(3),
    baselineP99Ms: +quantile(base, 0.99).toFixed(3),
    baselineQueries: baseCount,
    ratioP50: +(quantile(base, 0.5) / quantile(lat, 0.5)).toFixed(2),
    ratioBatched: +(quantile(base, 0.5) / batchedPerQuery).toFixed(2),
    agree: +(agree / baseCount).toFixed(4),
  };
  return row;
}

async function main() {
  const started = Date.now();
  const rows = [];
  for (const n of sizes) {
    const row = await benchSize(n);
    rows.push(row);
    console.error(
      `n=${String(n).padStart(6)}  build ${String(row.buildPerSec).padStart(8)}/s  insert ${String(row.insertPerSec).padStart(7)}/s (first ${row.firstAddMs} ms)  ` +
        `search p50 ${row.searchP50Ms} p99 ${row.searchP99Ms} ms  batched ${row.batchedMsPerQuery} ms/q  ` +
        `baseline p50 ${row.baselineP50Ms} p99 ${row.baselineP99Ms} ms (${row.baselineQueries} q)  ` +
        `x${row.ratioP50} single, x${row.ratioBatched} batched  agree ${row.agree}`,
    );
  }
  const result = {
    bench: 'knowledge',
    date: new Date().toISOString(),
    machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, loadavg: os.loadavg().map((x) => +x.toFixed(2)) },
    node: process.version,
    queries: Q,
    seconds: +((Date.now() - started) / 1000).toFixed(1),
    rows,
  };
  const json = JSON.stringify(result, null, 2);
  console.log(json);
  fs.mkdirSync(path.dirname(jsonOut), { recursive: true });
  fs.writeFileSync(jsonOut, `${json}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
