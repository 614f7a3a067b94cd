#!/usr/bin/env node
// `npm run bench:vocab`: WordPiece vocabulary training, elmo-chat's Tokenizer.train next to
// Hugging Face tokenizers' WordPieceTrainer, on the same files, in one run.
//
//   node bench/vocab.js [--corpus PATH]... [--vocab-sizes 8000,30522] [--min-frequency 2]
//                       [--repeat 3] [--holdout-every 40] [--ood FILE.csv] [--json OUT.json]
//                       [--python PY] [--no-hf]
//
// Corpus: every .txt / .md file under each --corpus (default ../shared/data/pretrain_text, next
// to the repository), walked in name order as Tokenizer.train walks it. Every --holdout-every-th
// file of that list (the 20th, 60th, ... for 40) is held out; both trainers get the rest, as the
// same list of files. Held-out text: those files (in-domain), and the `text` column of
// --ood (default ../shared/data/banking77/test.csv: short banking questions, out of domain).
//
// Per vocabulary size, --repeat rounds, alternating:
//   elmo  Tokenizer.train(files, {vocabSize, minFrequency}) from dist/ (`npm run build`), in this
//         process, one thread; the time of the call (reading, counting, merging).
//   hf    scripts/bench_hf_wordpiece.py (.venv, or --python / $ELMO_PYTHON): BertNormalizer,
//         BertPreTokenizer, WordPieceTrainer with the same specials, vocab size and
//         min_frequency; the time of tokenizer.train(files, trainer), on all of rayon's threads.
//         Skipped, with a message, when Python or `tokenizers` is missing (or --no-hf).
// Seconds are the median of the rounds; ratio = elmo / hf.
//
// Quality, measured with the same code for both vocabularies (elmo's encoder over each
// vocab.txt; it gives Hugging Face's ids, test/tokenizer.test.ts):
//   tokensPerWord  WordPiece tokens / words (words as the BERT pre-tokenizer splits them,
//                  punctuation included), no [CLS]/[SEP];
//   unkRate        [UNK] tokens / words;
//   vocabOverlap   share of hf's tokens that elmo's vocabulary has too.
// Goals (from the issue): tokens per word within 5% of hf's, an [UNK] rate no higher, and
// training time at most 3x hf's.
//
// Prints the JSON on stdout and a table on stderr; writes the JSON to --json (default
// bench/results/vocab-latest.json).
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { median } = require('./common');

const ROOT = path.join(__dirname, '..');

function parseArgs(argv) {
  const a = {
    corpus: [],
    vocabSizes: [8000, 30522],
    minFrequency: 2,
    repeat: 3,
    holdoutEvery: 40,
    ood: path.join(ROOT, '..', 'shared', 'data', 'banking77', 'test.csv'),
    json: path.join(ROOT, 'bench', 'results', 'vocab-latest.json'),
    python: process.env.ELMO_PYTHON || path.join(ROOT, '.venv', 'bin', 'python'),
    hf: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s);
    const value = () => (inline !== undefined ? inline : argv[++i]);
    if (flag === '--corpus') a.corpus.push(value());
    else if (flag === '--vocab-sizes') a.vocabSizes = value().split(',').map(Number);
    else if (flag === '--min-frequency') a.minFrequency = Number(value());
    else if (flag === '--repeat') a.repeat = Number(value());
    else if (flag === '--holdout-every') a.holdoutEvery = Number(value());
    else if (flag === '--ood') a.ood = value();
    else if (flag === '--json') a.json = value();
    else if (flag === '--python') a.python = value();
    else if (flag === '--no-hf') a.hf = false;
    else {
      console.error(`bench/vocab.js: unknown option ${argv[i]}`);
      process.exit(2);
    }
  }
  if (a.corpus.length === 0) a.corpus.push(path.join(ROOT, '..', 'shared', 'data', 'pretrain_text'));
  return a;
}

/** .txt / .md files under p, in the order Tokenizer.train walks them. */
function walk(p, out) {
  const st = fs.statSync(p);
  if (st.isFile()) out.push(p);
  else if (st.isDirectory()) {
    for (const name of fs.readdirSync(p).sort()) {
      if (name.startsWith('.')) continue;
      const child = path.join(p, name);
      if (fs.statSync(child).isDirectory() || /\.(txt|md)$/i.test(name)) walk(child, out);
    }
  }
  return out;
}

function oodTexts(file) {
  if (!fs.existsSync(file)) return [];
  const { parse } = require('csv-parse/sync');
  return parse(fs.readFileSync(file, 'utf8'), { columns: true }).map((r) => r.text);
}

/** Tokens per word and [UNK] rate of `tok` over `texts`. */
function quality(api, tok, texts) {
  const split = api.Tokenizer.wordSplitter({ lowercase: true });
  const unk = tok.tokenToId('[UNK]');
  let words = 0;
  let tokens = 0;
  let unks = 0;
  for (const text of texts) {
    split(text, () => void words++);
    const ids = tok.encode(text, undefined, { addSpecialTokens: false }).ids;
    tokens += ids.length;
    for (const id of ids) if (id === unk) unks++;
  }
  return { words, tokensPerWord: tokens / words, unkRate: unks / words };
}

function hfAvailable(python) {
  const r = spawnSync(python, ['-c', 'import tokenizers'], { encoding: 'utf8' });
  if (r.error) return `cannot run ${python} (${r.error.message})`;
  if (r.status !== 0) return `${python} has no 'tokenizers' package (${r.stderr.trim().split('\n').pop()})`;
  return null;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let api;
  try {
    api = require(path.join(ROOT, 'dist', 'tokenizer'));
  } catch (err) {
    console.error(`bench/vocab.js: cannot load dist/ (${err.message}); run \`npm run build\` first`);
    process.exit(1);
  }
  if (typeof api.Tokenizer.train !== 'function') {
    console.error('bench/vocab.js: dist/ has no Tokenizer.train; run `npm run build` first');
    process.exit(1);
  }

  const all = [];
  for (const c of args.corpus) walk(c, all);
  const heldOut = [];
  const train = [];
  all.forEach((f, i) =>
    (all.length > 1 && args.holdoutEvery > 0 && i % args.holdoutEvery === Math.floor(args.holdoutEvery / 2)
      ? heldOut
      : train
    ).push(f),
  );
  const inDomain = heldOut.flatMap((f) => fs.readFileSync(f, 'utf8').split('\n'));
  const ood = oodTexts(args.ood);
  const trainBytes = train.reduce((s, f) => s + fs.statSync(f).size, 0);

  const missing = args.hf ? hfAvailable(args.python) : '--no-hf';
  if (missing !== null) console.error(`bench/vocab.js: skipping Hugging Face tokenizers: ${missing}`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-bench-vocab-'));
  const filesJson = path.join(tmp, 'files.json');
  fs.writeFileSync(filesJson, JSON.stringify(train));

  const cpus = os.cpus();
  const report = {
    machine: { cpu: cpus[0] ? cpus[0].model.trim() : 'unknown', cores: cpus.length, node: process.version },
    corpus: {
      roots: args.corpus,
      trainFiles: train.length,
      trainMB: Number((trainBytes / 1e6).toFixed(2)),
      heldOutFiles: heldOut.map((f) => path.relative(path.dirname(args.corpus[0]), f)),
      ood: fs.existsSync(args.ood) ? args.ood : null,
      oodTexts: ood.length,
    },
    minFrequency: args.minFrequency,
    repeat: args.repeat,
    results: [],
  };

  for (const vocabSize of args.vocabSizes) {
    const elmoRuns = [];
    const hfRuns = [];
    let elmoTok;
    let hfInfo;
    const hfVocab = path.join(tmp, `hf-${vocabSize}.txt`);
    for (let r = 0; r < args.repeat; r++) {
      const t0 = performance.now();
      elmoTok = await api.Tokenizer.train(train, { vocabSize, minFrequency: args.minFrequency });
      elmoRuns.push((performance.now() - t0) / 1000);
      if (missing === null) {
        const py = spawnSync(
          args.python,
          [
            path.join(ROOT, 'scripts', 'bench_hf_wordpiece.py'),
            '--files',
            filesJson,
            '--vocab-size',
            String(vocabSize),
            '--min-frequency',
            String(args.minFrequency),
            '--vocab-out',
            hfVocab,
          ],
          { encoding: 'utf8', maxBuffer: 1 << 26 },
        );
        if (py.status !== 0) throw new Error(`bench_hf_wordpiece.py failed:\n${py.stderr}`);
        hfInfo = JSON.parse(py.stdout.trim().split('\n').pop());
        hfRuns.push(...hfInfo.seconds);
      }
    }
    const side = (tok, runs) => ({
      seconds: Number(median(runs).toFixed(3)),
      runs: runs.map((s) => Number(s.toFixed(3))),
      vocabSize: tok.vocabSize,
      heldOut: quality(api, tok, inDomain),
      ood: quality(api, tok, ood),
    });
    const row = { vocabSize, elmo: side(elmoTok, elmoRuns) };
    if (hfInfo !== undefined) {
      const hfTok = api.Tokenizer.fromVocab(hfVocab, { lowercase: true });
      row.hf = { ...side(hfTok, hfRuns), threads: hfInfo.threads, tokenizers: hfInfo.tokenizers };
      row.ratio = Number((row.elmo.seconds / row.hf.seconds).toFixed(3));
      const mine = new Set();
      for (let id = 0; id < elmoTok.vocabSize; id++) mine.add(elmoTok.idToToken(id));
      let shared = 0;
      for (let id = 0; id < hfTok.vocabSize; id++) if (mine.has(hfTok.idToToken(id))) shared++;
      row.vocabOverlap = Number((shared / hfTok.vocabSize).toFixed(5));
      const within = (a, b) => Math.abs(a - b) / b <= 0.05;
      row.goals = {
        tokensPerWordWithin5pct:
          within(row.elmo.heldOut.tokensPerWord, row.hf.heldOut.tokensPerWord) &&
          within(row.elmo.ood.tokensPerWord, row.hf.ood.tokensPerWord),
        unkRateNotHigher:
          row.elmo.heldOut.unkRate <= row.hf.heldOut.unkRate && row.elmo.ood.unkRate <= row.hf.ood.unkRate,
        timeWithin3x: row.ratio <= 3,
      };
    }
    report.results.push(row);
  }
  fs.rmSync(tmp, { recursive: true, force: true });

  const q = (x) => `${x.tokensPerWord.toFixed(4)} / ${(100 * x.unkRate).toFixed(3)}%`;
  console.error(`train: ${train.length} files, ${report.corpus.trainMB} MB; held out: ${heldOut.length} files`);
  console.error('vocab   engine  seconds  tokens/word / UNK (held-out)  tokens/word / UNK (banking77)');
  for (const r of report.results) {
    for (const [name, s] of [
      ['elmo', r.elmo],
      ['hf', r.hf],
    ]) {
      if (s === undefined) continue;
      console.error(
        `${String(r.vocabSize).padEnd(7)} ${name.padEnd(7)} ${s.seconds.toFixed(2).padStart(7)}  ${q(s.heldOut).padEnd(29)} ${q(s.ood)}`,
      );
    }
    if (r.hf)
      console.error(
        `        ratio ${r.ratio}  overlap ${(100 * r.vocabOverlap).toFixed(2)}%  goals ${JSON.stringify(r.goals)}`,
      );
  }
  if (missing === null) report.machine.tokenizers = report.results[0]?.hf?.tokenizers;
  const text = JSON.stringify(report, null, 2);
  fs.mkdirSync(path.dirname(args.json), { recursive: true });
  fs.writeFileSync(args.json, `${text}\n`);
  process.stdout.write(`${text}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
