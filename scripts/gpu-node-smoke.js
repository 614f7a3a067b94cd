#!/usr/bin/env node
// Node on a GPU machine: the addon reports the device, and a fixture checkpoint loaded with
// `device: 'cuda'` gives the transformers logits through the public API (dist/ must be built).
//   node scripts/gpu-node-smoke.js
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const elmo = require(path.join(root, 'dist'));

async function main() {
  const info = elmo.devices();
  console.log(JSON.stringify(info));
  if (!info.cuda.available) throw new Error(`no CUDA device: ${info.cuda.reason}`);
  const dir = path.join(root, 'test', 'fixtures', 'bert-a-cls');
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  // A small file's Buffer is a view into a shared pool: copy exactly its bytes.
  const bytes = fs.readFileSync(path.join(dir, manifest.outputs.logits.file));
  const expected = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  if (expected.length !== manifest.outputs.logits.shape.reduce((a, b) => a * b, 1)) throw new Error('bad fixture');
  for (const device of ['cuda', 'cpu']) {
    const model = await elmo.Bert.load(dir, { device });
    const out = await model.forwardIds({
      ids: Int32Array.from(manifest.ids),
      typeIds: Int32Array.from(manifest.type_ids),
      offsets: Int32Array.from(manifest.offsets),
    });
    if (!out.logits || out.logits.length !== expected.length) throw new Error(`${device}: logits missing or short`);
    let worst = 0;
    for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(out.logits[i] - expected[i]));
    console.log(JSON.stringify({ device: model.device, logits: expected.length, maxAbsDiff: worst }));
    model.dispose();
    if (!(worst < 1e-3)) throw new Error(`${device}: logits differ from transformers by ${worst}`);
  }
  console.log('node smoke: ok');
}

main().catch((e) => {
  console.error(`node smoke: FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
