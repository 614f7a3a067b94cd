#!/usr/bin/env node
// The HTTP service under load, side by side with a naive server, in one run. autocannon runs in
// this process; each server runs in a child process of its own, started fresh for each case:
//
//   elmo   `elmo serve` (dist/cli.js: dynamic batching, the default limits, --no-auth, info logs
//          to /dev/null, --metrics-public to read the batch sizes)
//   naive  node:http calling `model.predict([text])` once per request, no batching: the calls
//          are chained one after another (a second concurrent call on a model is ERR_BUSY), a
//          request whose client has gone is skipped, and it answers the same JSON as elmo serve
//
// Both load the same model directory with the same threads (default: all cores). Each request
// POSTs one short chat utterance (the user turns of the seeded support dialogues, lib/demo) to
// /v1/predict. Three parts:
//
//   load       each model x each connection count x both servers: warm-up, then --seconds of
//              load; req/s, p50/p99 latency, errors (non-2xx, socket errors, timeouts), peak RSS,
//              texts per model call (elmo)
//   scale-out  --scale-model at --scale-connections: elmo serve as one process (all threads),
//              then `--workers N` for each N of --workers (threads = cores / N each), in turn,
//              --scale-rounds times
//   soak       elmo serve, --soak-model, --soak-requests requests at --soak-connections; the
//              server's RSS (its whole process tree) sampled every second: first, last, max
//
// Every case also records how much CPU the rest of the machine took meanwhile (/proc/stat busy
// time less this process and the server's tree) and which other `node bench/` processes ran.
//
//   npm run build && node bench/serve.js [--models=mini,base] [--connections=1,4,16,64,256]
//        [--seconds=10] [--warmup=2] [--base-seconds=60] [--base-warmup=20]
//        [--scale-model=mini,base] [--workers=1,2] [--scale-rounds=1] [--wait-quiet=PCT]
//        [--soak-requests=100000] [--parts=load,scale,soak] [--threads=0] [--json=FILE]
//
// Models (random weights: speed does not depend on them): mini, the architecture of
// assets/support-encoder (L4 H256) with a 10-label classifier; base, BERT-base (L12 H768,
// vocab 30522, 512 positions) with the same tokenizer and classifier; both made with Bert.create
// and saved to a temporary directory. --model-dir=DIR serves a directory of your own instead.
'use strict';

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { flags, machineBusySeconds, waitQuiet } = require('./common');

const root = path.resolve(__dirname, '..');
const CLI = path.join(root, 'dist', 'cli.js');

function args() {
  return flags({
    models: 'mini,base',
    modelDir: '',
    connections: '1,4,16,64,256',
    seconds: 10,
    warmup: 2,
    // BERT-base answers 10-100x slower: longer runs, so that each holds many rounds of requests.
    baseSeconds: 60,
    baseWarmup: 20,
    parts: 'load,scale,soak',
    scaleModel: 'mini,base',
    scaleConnections: 64,
    workers: '1,2',
    scaleRounds: 1,
    soakModel: 'mini',
    soakRequests: 100000,
    soakConnections: 64,
    threads: 0,
    logLevel: 'info',
    // Before each case, wait (at most --wait-quiet-max seconds) until the rest of the machine
    // takes under this share of it (percent over 3 s); 0: do not wait.
    waitQuiet: 0,
    waitQuietMax: 900,
    json: path.join(root, 'bench', 'results', 'serve-latest.json'),
    // Internal: run the naive server (a child of this script).
    naiveServer: false,
    port: 0,
  });
}

const list = (s) => String(s).split(',').filter(Boolean);
const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

// ---- the naive server (child process) -----------------------------------------------------------

async function naiveServer(o) {
  const { Bert } = require(path.join(root, 'dist'));
  const model = await Bert.load(o.modelDir, { device: 'cpu', ...(o.threads > 0 ? { threads: o.threads } : {}) });
  const labels = model.labels;
  let last = Promise.resolve();
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/readyz') {
      res.end('{"status":"ready"}');
      return;
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let text;
      try {
        text = JSON.parse(Buffer.concat(chunks).toString()).texts[0];
        if (typeof text !== 'string') throw new Error('texts[0] is not a string');
      } catch (err) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'ERR_INPUT', message: err.message } }));
        return;
      }
      // One model call at a time, in arrival order, one text each; a request whose client has
      // gone meanwhile (the end of a warm-up run) is skipped.
      const call = last.then(() => (res.destroyed ? [] : model.predict([text])));
      last = call.catch(() => undefined);
      call.then(
        ([p]) => {
          if (p === undefined) return;
          const scores = {};
          p.scores.forEach((s, k) => (scores[labels[k]] = s));
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ results: [{ label: p.label, score: p.score, scores }] }));
        },
        (err) => {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { code: 'ERR_INTERNAL', message: err.message } }));
        },
      );
    });
  });
  server.keepAliveTimeout = 5000;
  server.listen(o.port, '127.0.0.1');
  process.on('SIGTERM', () => {
    server.close(() => {
      model.dispose();
      process.exit(0);
    });
    server.closeAllConnections();
  });
}

// ---- models ---------------------------------------------------------------------------------------

const LABELS = Array.from({ length: 10 }, (_, i) => `intent_${i}`);

async function makeModel(api, name, work) {
  const encoder = await api.Bert.load(path.join(root, 'assets', 'support-encoder'), { device: 'cpu' });
  const c = encoder.config;
  const config =
    name === 'mini'
      ? {
          vocabSize: c.vocabSize,
          hiddenSize: c.hiddenSize,
          numLayers: c.numLayers,
          numHeads: c.numHeads,
          intermediateSize: c.intermediateSize,
          maxPositions: c.maxPositions,
          typeVocabSize: c.typeVocabSize,
        }
      : name === 'base'
        ? {
            vocabSize: 30522,
            hiddenSize: 768,
            numLayers: 12,
            numHeads: 12,
            intermediateSize: 3072,
            maxPositions: 512,
            typeVocabSize: 2,
          }
        : undefined;
  if (config === undefined) throw new Error(`--models: expected mini or base, got ${name}`);
  const model = api.Bert.create({ ...config, labels: LABELS }, { tokenizer: encoder.tokenizer, device: 'cpu', seed: 1 });
  const dir = path.join(work, name);
  await model.save(dir);
  model.dispose();
  encoder.dispose();
  return dir;
}

// ---- processes ------------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function get(port, p) {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: p }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      })
      .on('error', () => resolve({ status: 0, body: '' }));
  });
}

// Starts a server child and resolves once /readyz answers 200 (with --workers: once every
// worker is up, by the primary's log line).
async function startServer(kind, o, dir, { workers, threads } = {}) {
  const port = await freePort();
  let argv;
  if (kind === 'naive') {
    argv = [__filename, '--naive-server', '--model-dir', dir, '--port', String(port), '--threads', String(threads)];
  } else {
    argv = [CLI, 'serve', '--model', dir, '--no-auth', '--port', String(port), '--device', 'cpu'];
    argv.push('--log-level', o.logLevel, '--metrics-public');
    if (threads > 0) argv.push('--threads', String(threads));
    if (workers !== undefined) argv.push('--workers', String(workers));
  }
  const child = spawn(process.execPath, argv, { stdio: ['ignore', workers !== undefined ? 'pipe' : 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  let allReady = false;
  if (workers !== undefined) {
    child.stdout.on('data', (d) => {
      if (String(d).includes('"msg":"all workers ready"')) allReady = true;
    });
  }
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${kind} server exited ${child.exitCode}: ${stderr}`);
    if ((await get(port, '/readyz')).status === 200 && (workers === undefined || allReady)) break;
    if (Date.now() > deadline) throw new Error(`${kind} server not ready after 180 s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, port, stderr: () => stderr };
}

async function stopServer(s) {
  if (s.child.exitCode !== null) return s.child.exitCode;
  const exited = new Promise((resolve) => s.child.once('exit', (code) => resolve(code)));
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), 60_000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

// ---- measurements ---------------------------------------------------------------------------------

// pid and every descendant (workers of a cluster).
function tree(pid) {
  const out = [];
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop();
    out.push(p);
    try {
      for (const t of fs.readdirSync(`/proc/${p}/task`)) {
        const kids = fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').trim();
        if (kids !== '') stack.push(...kids.split(/\s+/).map(Number));
      }
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function rssMb(pid) {
  let kb = 0;
  for (const p of tree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch {
      // exited meanwhile
    }
  }
  return kb / 1024;
}

const TICK = 100; // USER_HZ
function treeCpuSeconds(pid) {
  let ticks = 0;
  for (const p of tree(pid)) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      // exited meanwhile
    }
  }
  return ticks / TICK;
}


// CPU ticks and command line of every process now.
function processTicks() {
  const out = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmd = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      out.set(Number(name), { ticks: Number(fields[11]) + Number(fields[12]), cmd });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

// The processes other than this one and the server's that took over 5% of a core.
function otherProcesses(before, after, exclude, wall) {
  const busy = [];
  for (const [pid, a] of after) {
    if (exclude.has(pid)) continue;
    const cores = (a.ticks - (before.get(pid)?.ticks ?? 0)) / TICK / wall;
    if (cores > 0.05) busy.push({ cmd: a.cmd.slice(0, 100), cores: round(cores, 2) });
  }
  return busy.sort((x, y) => y.cores - x.cores);
}

// CPU the rest of the machine took while fn ran, as a share of all cores; and the RSS of the
// server sampled every second.
async function observed(serverPid, fn) {
  const cores = os.availableParallelism();
  const m0 = machineBusySeconds();
  const s0 = treeCpuSeconds(serverPid);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const rss = [rssMb(serverPid)];
  const timer = setInterval(() => rss.push(rssMb(serverPid)), 1000);
  const p0 = processTicks();
  let result;
  try {
    result = await fn();
  } finally {
    clearInterval(timer);
  }
  rss.push(rssMb(serverPid));
  const exclude = new Set([process.pid, ...tree(serverPid)]);
  const p1 = processTicks();
  const wall = (performance.now() - t0) / 1000;
  const m1 = machineBusySeconds();
  const server = treeCpuSeconds(serverPid) - s0;
  const c1 = process.cpuUsage(c0);
  const self = (c1.user + c1.system) / 1e6;
  const other = Math.max(0, m1.busy - m0.busy - server - self);
  return {
    result,
    wall,
    rss,
    cpu: {
      serverCores: round(server / wall, 2),
      loadGeneratorCores: round(self / wall, 2),
      othersPct: round((100 * other) / (wall * cores)),
      stealPct: round((100 * (m1.steal - m0.steal)) / (wall * cores)),
    },
    otherProcesses: otherProcesses(p0, p1, exclude, wall),
  };
}

// A devDependency of the package.
const autocannon = require('autocannon');

function load(port, texts, { connections, seconds, amount }) {
  let k = 0;
  return autocannon({
    url: `http://127.0.0.1:${port}/v1/predict`,
    connections,
    ...(amount !== undefined ? { amount } : { duration: seconds }),
    timeout: 30,
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        setupRequest: (r) => ({ ...r, body: JSON.stringify({ texts: [texts[k++ % texts.length]] }) }),
      },
    ],
  });
}

function metric(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

async function batchCounters(s) {
  const { body } = await get(s.port, '/metrics');
  return {
    calls: metric(body, 'elmo_batch_size_count{kind="predict"}'),
    texts: metric(body, 'elmo_batch_size_sum{kind="predict"}'),
  };
}

function row(fields, obs, r) {
  const errors = r.non2xx + r.errors + r.timeouts;
  return {
    ...fields,
    requests: r.requests.total,
    requestsPerSecond: round(r.requests.average),
    latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max },
    errors,
    non2xx: r.non2xx,
    socketErrors: r.errors,
    timeouts: r.timeouts,
    rssMb: { first: round(obs.rss[0]), last: round(obs.rss.at(-1)), max: round(Math.max(...obs.rss)) },
    cpu: obs.cpu,
    otherProcesses: obs.otherProcesses,
  };
}

// One case: a fresh server, warm-up, measured load.
async function runCase(o, kind, dir, texts, fields, serverOptions, loadOptions) {
  const waitedSeconds = await waitQuiet(o.waitQuiet, o.waitQuietMax);
  const s = await startServer(kind, o, dir, serverOptions);
  try {
    await load(s.port, texts, { connections: loadOptions.connections, seconds: loadOptions.warmup });
    const before = kind === 'elmo' && serverOptions.workers === undefined ? await batchCounters(s) : undefined;
    const obs = await observed(s.child.pid, () => load(s.port, texts, loadOptions));
    const out = row(fields, obs, obs.result);
    if (before !== undefined) {
      const after = await batchCounters(s);
      out.textsPerCall = round((after.texts - before.texts) / Math.max(1, after.calls - before.calls), 2);
    }
    out.rssSamples = obs.rss.map((x) => round(x));
    if (o.waitQuiet > 0) out.waitedSeconds = waitedSeconds;
    out.wallSeconds = round(obs.wall, 2);
    return out;
  } finally {
    const code = await stopServer(s);
    if (code !== 0) console.error(`${kind} server exited ${code}: ${s.stderr()}`);
  }
}

function machine() {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
  } catch {
    // not a checkout
  }
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memGb: round(os.totalmem() / 2 ** 30),
    node: process.version,
    commit,
    loadavg: os.loadavg().map((x) => round(x, 2)),
  };
}

async function main() {
  const o = args();
  if (o.naiveServer) return naiveServer(o);
  if (!fs.existsSync(CLI)) throw new Error('dist/ is not built (npm run build)');
  const api = require(path.join(root, 'dist'));
  const { generateSupportDialogues } = require(path.join(root, 'dist', 'demo', 'support-dialogues'));
  const texts = generateSupportDialogues({ seed: 1, dialogues: 100 }).flatMap((d) =>
    d.turns.filter((t) => t.speaker === 'user').map((t) => t.text),
  );
  const parts = new Set(list(o.parts));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-bench-serve-'));
  const dirs = {};
  const dirOf = async (name) => {
    if (o.modelDir !== '') return o.modelDir;
    dirs[name] ??= await makeModel(api, name, work);
    return dirs[name];
  };
  const out = { command: `node bench/serve.js ${process.argv.slice(2).join(' ')}`.trim(), machine: machine(), load: [], scale: [], soak: [] };
  const threads = o.threads;
  const timing = (model) =>
    model === 'base' ? { seconds: o.baseSeconds, warmup: o.baseWarmup } : { seconds: o.seconds, warmup: o.warmup };
  const save = () => {
    fs.mkdirSync(path.dirname(o.json), { recursive: true });
    fs.writeFileSync(o.json, `${JSON.stringify(out, null, 2)}\n`);
  };
  const print = (r) => console.log(JSON.stringify({ ...r, rssSamples: undefined }));
  try {
    if (parts.has('load')) {
      for (const model of list(o.models)) {
        const dir = await dirOf(model);
        let flip = false;
        for (const c of list(o.connections).map(Number)) {
          // Alternate which server goes first, so that neither always follows the other.
          const order = flip ? ['naive', 'elmo'] : ['elmo', 'naive'];
          flip = !flip;
          for (const server of order) {
            const r = await runCase(o, server, dir, texts, { model, server, connections: c }, { threads }, {
              connections: c,
              ...timing(model),
            });
            print(r);
            out.load.push(r);
            save();
          }
        }
      }
    }
    if (parts.has('scale')) {
      for (const model of list(o.scaleModel)) {
        const dir = await dirOf(model);
        const c = o.scaleConnections;
        const configs = [{ workers: undefined }, ...list(o.workers).map((w) => ({ workers: Number(w) }))];
        // Rounds take the configurations in turn, so that a slow spell of the host does not
        // fall on one of them only.
        for (let round = 1; round <= o.scaleRounds; round++) {
          for (const { workers } of configs) {
            const fields = { model, server: 'elmo', workers: workers ?? 0, connections: c, round };
            const r = await runCase(o, 'elmo', dir, texts, fields, { workers, threads }, { connections: c, ...timing(model) });
            print(r);
            out.scale.push(r);
            save();
          }
        }
      }
    }
    if (parts.has('soak')) {
      const model = o.soakModel;
      const dir = await dirOf(model);
      const fields = { model, server: 'elmo', connections: o.soakConnections, amount: o.soakRequests };
      const r = await runCase(o, 'elmo', dir, texts, fields, { threads }, {
        connections: o.soakConnections,
        amount: o.soakRequests,
        warmup: o.warmup,
      });
      print(r);
      out.soak.push(r);
      save();
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  report(out);
  console.log(`\nJSON: ${path.relative(process.cwd(), o.json)}`);
}

function report(out) {
  const lat = (r) => `${String(r.latencyMs.p50).padStart(6)} ${String(r.latencyMs.p99).padStart(6)}`;
  if (out.load.length > 0) {
    console.log('\nmodel  conns  server    req/s  p50 ms p99 ms  errors  texts/call  peak RSS MB  others %');
    for (const r of out.load) {
      console.log(
        `${r.model.padEnd(5)}  ${String(r.connections).padStart(5)}  ${r.server.padEnd(6)} ${String(r.requestsPerSecond).padStart(8)}  ${lat(r)}  ` +
          `${String(r.errors).padStart(6)}  ${String(r.textsPerCall ?? '').padStart(10)}  ${String(r.rssMb.max).padStart(11)}  ${String(r.cpu.othersPct).padStart(8)}`,
      );
    }
    console.log('\nmodel  conns  elmo/naive req/s  p99 elmo / naive');
    for (const e of out.load.filter((r) => r.server === 'elmo')) {
      const n = out.load.find((r) => r.server === 'naive' && r.model === e.model && r.connections === e.connections);
      if (n === undefined) continue;
      console.log(
        `${e.model.padEnd(5)}  ${String(e.connections).padStart(5)}  ${(e.requestsPerSecond / n.requestsPerSecond).toFixed(2).padStart(16)}  ${e.latencyMs.p99} / ${n.latencyMs.p99}`,
      );
    }
  }
  if (out.scale.length > 0) {
    console.log('\nmodel  workers  conns    req/s  p50 ms p99 ms  errors  peak RSS MB  others %');
    for (const r of out.scale) {
      console.log(
        `${r.model.padEnd(5)}  ${String(r.workers || 'none').padStart(7)}  ${String(r.connections).padStart(5)} ${String(r.requestsPerSecond).padStart(8)}  ${lat(r)}  ` +
          `${String(r.errors).padStart(6)}  ${String(r.rssMb.max).padStart(11)}  ${String(r.cpu.othersPct).padStart(8)}`,
      );
    }
  }
  for (const r of out.soak) {
    console.log(
      `\nsoak: ${r.requests} requests at ${r.connections} connections on ${r.model}: ${r.requestsPerSecond} req/s, ` +
        `p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, ${r.errors} errors; RSS MB first ${r.rssMb.first}, ` +
        `last ${r.rssMb.last}, max ${r.rssMb.max} (${r.rssSamples.length} samples over ${r.wallSeconds} s)`,
    );
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
