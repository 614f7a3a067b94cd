#!/usr/bin/env node
// The HTTP service under load: requests per second and latency of POST /v1/predict (or
// /v1/embed) at a few concurrency levels, with dynamic batching (the default limits) and
// without it (maxBatchTokens 1: every request is its own model call), and the mean texts per
// model call that batching reached.
//
//   node bench/serve.js [--model=DIR] [--route=predict|embed] [--connections=1,8,32]
//                       [--seconds=5] [--texts=1] [--threads=N]
//
// Without --model, a classifier with random weights and the architecture and tokenizer of
// assets/support-encoder (BERT-mini) is made in a temporary directory; speed does not depend on
// the weights. autocannon runs in the same process as the server, so the two share the CPU: the
// numbers compare the two modes with each other, they are not the capacity of a machine given
// to the server alone (for that, run `elmo serve` and autocannon in separate processes). One
// JSON object per line, then a table.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const autocannon = require('autocannon');

const { option, countsOption } = require('./common');

const root = path.resolve(__dirname, '..');

const TEXTS = [
  'I lost my card yesterday, can you block it?',
  'where is the money I transferred on monday',
  'how do I change my PIN',
  'the app keeps logging me out when I open the statement page',
  'can I get a refund for a payment I did not make',
  'is there a fee for sending money abroad',
  'my top up did not go through',
  'what exchange rate do you use for card payments in dollars',
];

async function makeModel(api, threads) {
  const encoder = await api.Bert.load(path.join(root, 'assets', 'support-encoder'), { device: 'cpu' });
  const c = encoder.config;
  const labels = Array.from({ length: 10 }, (_, i) => `intent_${i}`);
  const model = api.Bert.create(
    {
      vocabSize: c.vocabSize,
      hiddenSize: c.hiddenSize,
      numLayers: c.numLayers,
      numHeads: c.numHeads,
      intermediateSize: c.intermediateSize,
      maxPositions: c.maxPositions,
      typeVocabSize: c.typeVocabSize,
      labels,
    },
    { tokenizer: encoder.tokenizer, device: 'cpu', seed: 1, ...(threads ? { threads } : {}) },
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-bench-serve-'));
  await model.save(dir);
  model.dispose();
  encoder.dispose();
  return dir;
}

function metricValue(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

async function runCase(serve, dir, route, mode, connections, seconds, perRequest, threads) {
  const server = serve.createServer({
    model: dir,
    auth: false,
    loadOptions: { device: 'cpu', ...(threads ? { threads } : {}) },
    logger: { level: 'silent' },
    defaultMetrics: false,
    maxQueue: 4096,
    ...(mode === 'unbatched' ? { maxBatchTokens: 1, maxWaitMs: 0 } : {}),
  });
  const { port } = await server.listen(0);
  await server.ready();
  let k = 0;
  const body = () => JSON.stringify({ texts: Array.from({ length: perRequest }, () => TEXTS[k++ % TEXTS.length]) });
  const result = await autocannon({
    url: `http://127.0.0.1:${port}/v1/${route}`,
    connections,
    duration: seconds,
    requests: [{ method: 'POST', headers: { 'content-type': 'application/json' }, setupRequest: (r) => ({ ...r, body: body() }) }],
  });
  const metrics = await server.registry.metrics();
  const kind = route === 'predict' ? 'predict' : 'embed';
  const calls = metricValue(metrics, `elmo_batch_size_count{kind="${kind}"}`);
  const texts = metricValue(metrics, `elmo_batch_size_sum{kind="${kind}"}`);
  await server.close();
  return {
    route,
    mode,
    connections,
    seconds,
    textsPerRequest: perRequest,
    requestsPerSecond: Math.round(result.requests.average * 10) / 10,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
    modelCalls: calls,
    textsPerCall: calls > 0 ? Math.round((texts / calls) * 100) / 100 : 0,
  };
}

async function main() {
  let api;
  let serve;
  try {
    api = require(path.join(root, 'dist'));
    serve = require(path.join(root, 'dist', 'serve'));
  } catch (e) {
    throw new Error(`dist/ is not built (npm run build): ${e.message}`);
  }
  const route = String(option('route', 'predict'));
  if (route !== 'predict' && route !== 'embed') throw new Error(`--route: expected predict or embed, got ${route}`);
  const connections = countsOption('connections', '1,8,32');
  const seconds = Math.max(1, Number(option('seconds', '5')));
  const perRequest = Math.max(1, parseInt(option('texts', '1'), 10));
  const threads = option('threads', undefined) === undefined ? undefined : parseInt(option('threads'), 10);
  const given = option('model', undefined);
  const dir = given === undefined ? await makeModel(api, threads) : String(given);
  const rows = [];
  for (const c of connections) {
    for (const mode of ['batched', 'unbatched']) {
      const row = await runCase(serve, dir, route, mode, c, seconds, perRequest, threads);
      console.log(JSON.stringify(row));
      rows.push(row);
    }
  }
  console.log('\nconnections  mode        req/s     p50 ms  p99 ms  texts/call  non-2xx');
  for (const r of rows) {
    console.log(
      `${String(r.connections).padStart(11)}  ${r.mode.padEnd(10)} ${String(r.requestsPerSecond).padStart(7)}  ` +
        `${String(r.latencyP50Ms).padStart(6)}  ${String(r.latencyP99Ms).padStart(6)}  ${String(r.textsPerCall).padStart(10)}  ${String(r.non2xx).padStart(7)}`,
    );
  }
  if (given === undefined) fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
