// Dataset adapters of bench/chat-accuracy.js: public dialogue datasets read as ChatModel examples
// ({ text, context?, intent?, emotions?, slots? }, slots as character spans). They read the
// datasets where they lie (../shared/data by default) and copy nothing; the package never reads
// them. test/chat-data.test.ts runs them on hand-written snippets of each format.
//
//   SNIPS       readSnips(dir)            intent + slots; seq.in words joined by single spaces,
//                                         the BIO tags of seq.out turned into character spans
//   SGD         readSgd(dir)              the user turns of each dialogue (active intent, slot
//                                         spans, the earlier turns as context), splitByDialogue
//   GoEmotions  readGoEmotions(dir)       multi-label emotions (original/ 28, ekman/ 7)
//   BANKING77   readBanking77(file)       intent
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const DATA = path.join(root, '..', 'shared', 'data');

/** The lines of a text file, without the empty one after its last newline. */
function readLines(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines.map((l) => l.replace(/\r$/, ''));
}

/** A 32-bit FNV-1a hash of a string (seeded splits and samples that do not depend on order). */
function hash32(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // final avalanche (murmur3's), so that ids differing in one character spread over [0, 2^32)
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** Up to n items, a seeded random subset kept in the original order (all of them when n >= length). */
function subsample(items, n, seed = 1) {
  if (n === undefined || n === null || !(n < items.length)) return items.slice();
  const keyed = items.map((_, i) => ({ i, k: hash32(`${seed}:${i}`) }));
  keyed.sort((a, b) => a.k - b.k || a.i - b.i);
  const keep = keyed.slice(0, n).map((x) => x.i);
  keep.sort((a, b) => a - b);
  return keep.map((i) => items[i]);
}

/**
 * Character spans of BIO word tags over the words joined by single spaces. An I- tag that does
 * not continue a slot of its name starts one (as seqeval reads it); `repaired` counts those.
 */
function bioToSpans(words, tags) {
  if (words.length !== tags.length) {
    throw new Error(`bioToSpans: ${words.length} words but ${tags.length} tags`);
  }
  const spans = [];
  let at = 0;
  let cur = null;
  let repaired = 0;
  words.forEach((w, k) => {
    const start = at;
    const end = at + w.length;
    at = end + 1;
    const tag = tags[k];
    if (tag === 'O') {
      cur = null;
      return;
    }
    const m = /^([BI])-(.+)$/.exec(tag);
    if (!m) throw new Error(`bioToSpans: '${tag}' is not a BIO tag`);
    if (m[1] === 'I' && cur !== null && cur.name === m[2]) {
      cur.end = end;
      return;
    }
    if (m[1] === 'I') repaired++;
    cur = { name: m[2], start, end };
    spans.push(cur);
  });
  return { text: words.join(' '), slots: spans.map((s) => ({ name: s.name, start: s.start, end: s.end })), repaired };
}

/**
 * One split of SNIPS (DIR/seq.in, DIR/seq.out, DIR/label): examples { text, intent, slots } and
 * the file's tags per line (`tags`, for checkWordTags). Lines may end in spaces; a line whose
 * word and tag counts differ is an error naming it.
 */
function readSnipsSplit(dir) {
  const words = readLines(path.join(dir, 'seq.in'));
  const tagLines = readLines(path.join(dir, 'seq.out'));
  const labels = readLines(path.join(dir, 'label'));
  if (words.length !== tagLines.length || words.length !== labels.length) {
    throw new Error(`${dir}: seq.in, seq.out and label have ${words.length}, ${tagLines.length}, ${labels.length} lines`);
  }
  const examples = [];
  const tags = [];
  let repaired = 0;
  words.forEach((line, i) => {
    const w = line.trim().split(/\s+/).filter(Boolean);
    const t = tagLines[i].trim().split(/\s+/).filter(Boolean);
    if (w.length === 0) return;
    if (w.length !== t.length) {
      throw new Error(`${dir}: line ${i + 1} has ${w.length} words in seq.in but ${t.length} tags in seq.out`);
    }
    const s = bioToSpans(w, t);
    repaired += s.repaired;
    examples.push({ text: s.text, intent: labels[i].trim(), slots: s.slots });
    tags.push(t);
  });
  return { examples, tags, repaired };
}

/** SNIPS: { train, valid, test }, each as readSnipsSplit returns it. */
function readSnips(dir = path.join(DATA, 'snips')) {
  return {
    train: readSnipsSplit(path.join(dir, 'train')),
    valid: readSnipsSplit(path.join(dir, 'valid')),
    test: readSnipsSplit(path.join(dir, 'test')),
  };
}

/**
 * How far elmo's words (lib/chat wordSpans: runs of letters and digits, or single other
 * characters) give back a dataset's word tags: `same` lines get exactly the file's tags from
 * wordTags(wordSpans(text), slots); `split` lines differ only because a file word is several
 * elmo words (`top-rated`, `2/6/2020`), each of which then carries the word's slot; `other`
 * lines differ otherwise (none expected). Needs `npm run build` (dist/chat).
 */
function checkWordTags(examples, tags, lib = chatLib()) {
  const out = { lines: examples.length, same: 0, split: 0, other: 0, splitExamples: [], otherExamples: [] };
  examples.forEach((ex, i) => {
    const words = [...lib.wordSpans(ex.text)];
    const got = lib.wordTags(words, ex.slots);
    const want = tags[i];
    if (got.length === want.length && got.every((t, k) => t === want[k])) {
      out.same++;
      return;
    }
    // the file's words are the text's space-separated runs: map each elmo word to its file word
    const starts = [];
    let at = 0;
    for (const w of ex.text.split(' ')) {
      starts.push(at);
      at += w.length + 1;
    }
    let fileWord = -1;
    const firstTags = [];
    let consistent = true;
    words.forEach((w, k) => {
      let f = fileWord;
      while (f + 1 < starts.length && starts[f + 1] <= w.start) f++;
      const tag = got[k];
      if (f !== fileWord) {
        fileWord = f;
        firstTags.push(tag);
      } else {
        // a later piece of the same file word: inside the same slot, or outside any
        const prev = firstTags[firstTags.length - 1];
        const same = tag === 'O' ? prev === 'O' : prev !== 'O' && tag === `I-${prev.slice(2)}`;
        if (!same) consistent = false;
      }
    });
    const recovered = consistent && firstTags.length === want.length && firstTags.every((t, k) => t === want[k]);
    if (recovered) {
      out.split++;
      if (out.splitExamples.length < 5) out.splitExamples.push(ex.text);
    } else {
      out.other++;
      if (out.otherExamples.length < 5) out.otherExamples.push(ex.text);
    }
  });
  return out;
}

function chatLib() {
  const { wordSpans } = require(path.join(root, 'dist', 'chat', 'encode'));
  const { wordTags } = require(path.join(root, 'dist', 'chat', 'chat-model'));
  return { wordSpans, wordTags };
}

/** The frame a user turn acts on: the one announcing an intent, else the one with slot spans, else the first. */
function actingFrame(frames) {
  return (
    frames.find((f) => (f.actions ?? []).some((a) => a.act === 'INFORM_INTENT')) ??
    frames.find((f) => (f.slots ?? []).length > 0) ??
    frames[0]
  );
}

/**
 * The user turns of SGD dialogues (a `dialogues_*.json` directory, or an array of dialogue
 * objects), one example each: `intent` is the acting frame's `state.active_intent` (turns whose
 * intent is "NONE" are skipped), `slots` the character spans of every frame's `slots`
 * (`start`/`exclusive_end`) with the schema's slot names unprefixed (a span overlapping one
 * already taken is dropped), `context` the utterances of the earlier turns of the dialogue, both
 * speakers, oldest first. Returns { dialogues: [{ id, examples }], stats }.
 */
function readSgd(source = path.join(DATA, 'sgd', 'dev')) {
  let all;
  if (Array.isArray(source)) all = source;
  else {
    all = [];
    const files = fs
      .readdirSync(source)
      .filter((f) => /^dialogues_\d+\.json$/.test(f))
      .sort();
    if (files.length === 0) throw new Error(`${source}: no dialogues_*.json`);
    for (const f of files) all.push(...JSON.parse(fs.readFileSync(path.join(source, f), 'utf8')));
  }
  const stats = { dialogues: 0, userTurns: 0, kept: 0, skippedNone: 0, multiFrame: 0, withSlots: 0, slots: 0, droppedOverlaps: 0 };
  const dialogues = all.map((d) => {
    stats.dialogues++;
    const examples = [];
    const earlier = [];
    for (const t of d.turns) {
      const text = t.utterance;
      if (t.speaker === 'USER') {
        stats.userTurns++;
        const frames = t.frames ?? [];
        if (frames.length > 1) stats.multiFrame++;
        const frame = actingFrame(frames);
        const intent = frame?.state?.active_intent;
        if (frame === undefined || intent === undefined || intent === 'NONE') stats.skippedNone++;
        else if (text.trim() !== '') {
          const slots = [];
          for (const f of [frame, ...frames.filter((x) => x !== frame)]) {
            for (const s of f.slots ?? []) {
              const span = { name: s.slot, start: s.start, end: s.exclusive_end };
              if (!(span.start >= 0 && span.start < span.end && span.end <= text.length)) {
                throw new Error(`SGD ${d.dialogue_id}: slot ${s.slot} [${s.start}, ${s.exclusive_end}) outside the utterance`);
              }
              if (slots.some((o) => o.start < span.end && span.start < o.end)) {
                if (!slots.some((o) => o.start === span.start && o.end === span.end && o.name === span.name)) stats.droppedOverlaps++;
                continue;
              }
              slots.push(span);
            }
          }
          slots.sort((a, b) => a.start - b.start);
          stats.kept++;
          if (slots.length > 0) stats.withSlots++;
          stats.slots += slots.length;
          examples.push({ text, context: earlier.slice(), intent, slots });
        }
      }
      earlier.push(text);
    }
    return { id: d.dialogue_id, examples };
  });
  return { dialogues, stats };
}

/**
 * A train/test split of dialogues by a seeded hash of their ids (a dialogue is never on both
 * sides): about `fraction` of them go to test. Returns the examples of each side.
 */
function splitByDialogue(dialogues, { fraction = 0.2, seed = 1 } = {}) {
  const train = [];
  const test = [];
  let testDialogues = 0;
  for (const d of dialogues) {
    const inTest = hash32(`${seed}:${d.id}`) / 2 ** 32 < fraction;
    if (inTest) testDialogues++;
    (inTest ? test : train).push(...d.examples);
  }
  return { train, test, trainDialogues: dialogues.length - testDialogues, testDialogues };
}

/** The same examples without their context (the no-context side of a comparison). */
function withoutContext(examples) {
  return examples.map((ex) => {
    const out = { ...ex };
    delete out.context;
    return out;
  });
}

/**
 * GoEmotions in one label set (`original`: 27 emotions + neutral; `ekman`: 7): { labels, train,
 * dev, test }, examples { text, emotions }. TSV lines `text \t ids (comma-separated) \t id`.
 */
function readGoEmotions(dir = path.join(DATA, 'goemotions', 'original')) {
  const labels = readLines(path.join(dir, 'labels.txt'))
    .map((l) => l.trim())
    .filter(Boolean);
  const read = (split) =>
    readLines(path.join(dir, `${split}.tsv`)).map((line, i) => {
      const cols = line.split('\t');
      if (cols.length < 2) throw new Error(`${dir}/${split}.tsv: line ${i + 1} has no label column`);
      const emotions = cols[1].split(',').map((x) => {
        const name = labels[Number(x)];
        if (x.trim() === '' || name === undefined) throw new Error(`${dir}/${split}.tsv: line ${i + 1}: no label ${x}`);
        return name;
      });
      return { text: cols[0], emotions: [...new Set(emotions)] };
    });
  return { labels, train: read('train'), dev: read('dev'), test: read('test') };
}

/** BANKING77 (CSV `text,category` with a header): examples { text, intent }. */
function readBanking77(file) {
  const { parse } = require('csv-parse/sync');
  const rows = parse(fs.readFileSync(file, 'utf8'), { columns: true, skip_empty_lines: true });
  return rows.map((r, i) => {
    if (typeof r.text !== 'string' || typeof r.category !== 'string') throw new Error(`${file}: row ${i + 2} lacks text or category`);
    return { text: r.text, intent: r.category };
  });
}

module.exports = {
  DATA,
  readLines,
  hash32,
  subsample,
  bioToSpans,
  readSnipsSplit,
  readSnips,
  checkWordTags,
  actingFrame,
  readSgd,
  splitByDialogue,
  withoutContext,
  readGoEmotions,
  readBanking77,
};
