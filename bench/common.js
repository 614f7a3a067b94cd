// Helpers of the bench/ scripts.
'use strict';

const { parseArgs } = require('node:util');

// `--kebab-name=value` flags (or `--name value`) into the camelCase keys of `defaults`, each of
// the type of its default: numbers parsed (a non-number is an error), strings as given,
// booleans as switches; an unknown flag is an error naming the known ones. Node's own parser.
function flags(defaults, argv = process.argv.slice(2)) {
  const kebab = (k) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  const options = {};
  for (const [key, value] of Object.entries(defaults)) {
    options[kebab(key)] = { type: typeof value === 'boolean' ? 'boolean' : 'string' };
  }
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true }));
  } catch (err) {
    throw new Error(`${err.message} (known: ${Object.keys(options).map((k) => `--${k}`).join(', ')})`);
  }
  const out = { ...defaults };
  for (const [key, value] of Object.entries(defaults)) {
    const v = values[kebab(key)];
    if (v === undefined) continue;
    if (typeof value === 'number') {
      out[key] = Number(v);
      if (!Number.isFinite(out[key])) throw new Error(`--${kebab(key)}: expected a number, got '${v}'`);
    } else {
      out[key] = v;
    }
  }
  return out;
}

// --name=value (a string), --name (true), else fallback.
function option(name, fallback) {
  const hit = process.argv.slice(2).find((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (hit === undefined) return fallback;
  return hit.includes('=') ? hit.slice(hit.indexOf('=') + 1) : true;
}

// --name=a,b,c as a list of strings (empty entries dropped).
function listOption(name, fallback) {
  return String(option(name, fallback)).split(',').filter(Boolean);
}

// --name=1,8,32 as positive integers; anything else is an error.
function countsOption(name, fallback) {
  const v = listOption(name, fallback).map(Number);
  for (const x of v) if (!Number.isInteger(x) || x < 1) throw new Error(`--${name}: expected positive integers, got ${option(name, fallback)}`);
  return v;
}

// The generators of native/bench/bench_bert (64-bit LCG).
const MASK64 = (1n << 64n) - 1n;
const lcg = (s) => (s * 6364136223846793005n + 1442695040888963407n) & MASK64;

// Token ids per sequence: [CLS] then ids in [1000, 29000), one generator across the batch.
function makeIds(lens, seed = 7n) {
  let s = seed;
  return lens.map((len) => {
    const ids = [];
    for (let i = 0; i < len; ++i) {
      s = lcg(s);
      ids.push(i === 0 ? 101 : 1000 + Number((s >> 33n) % 29000n));
    }
    return ids;
  });
}

function median(xs) {
  const v = [...xs].sort((a, b) => a - b);
  const h = v.length >> 1;
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

// CPU seconds the whole machine has been busy since boot (user, nice, system, irq, softirq; idle
// and iowait left out), and stolen by the hypervisor: /proc/stat at USER_HZ = 100.
function machineBusySeconds() {
  const v = require('node:fs').readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = v;
  return { busy: (user + nice + system + irq + softirq) / 100, steal: steal / 100 };
}

// Waits until the rest of the machine (all but this process) keeps under `pct` percent of its
// cores busy over 3 s, or `maxSeconds` have passed; resolves with the seconds waited. pct <= 0:
// no wait. For timed runs on a machine other jobs share.
async function waitQuiet(pct, maxSeconds) {
  const t0 = performance.now();
  if (!(pct > 0)) return 0;
  const cores = require('node:os').availableParallelism();
  for (;;) {
    const m0 = machineBusySeconds();
    const c0 = process.cpuUsage();
    await new Promise((r) => setTimeout(r, 3000));
    const c1 = process.cpuUsage(c0);
    const busy = machineBusySeconds().busy - m0.busy - (c1.user + c1.system) / 1e6;
    const waited = (performance.now() - t0) / 1000;
    if ((100 * busy) / (3 * cores) < pct || waited > maxSeconds) return Math.round(waited * 10) / 10;
  }
}

// onnxruntime-node inputs for a BERT session from token-id sequences: padded to the longest, an
// attention mask, token types 0; only the inputs the session declares. Returns { f, S }.
function ortFeeds(ort, session, seqs) {
  const B = seqs.length;
  const S = Math.max(...seqs.map((s) => s.length));
  const ids = new BigInt64Array(B * S);
  const mask = new BigInt64Array(B * S);
  seqs.forEach((s, b) =>
    s.forEach((id, i) => {
      ids[b * S + i] = BigInt(id);
      mask[b * S + i] = 1n;
    }),
  );
  const all = {
    input_ids: new ort.Tensor('int64', ids, [B, S]),
    attention_mask: new ort.Tensor('int64', mask, [B, S]),
    token_type_ids: new ort.Tensor('int64', new BigInt64Array(B * S), [B, S]),
  };
  const f = {};
  for (const n of session.inputNames) f[n] = all[n];
  return { f, S };
}

module.exports = {
  flags,
  option,
  listOption,
  countsOption,
  lcg,
  makeIds,
  median,
  machineBusySeconds,
  waitQuiet,
  ortFeeds,
};
