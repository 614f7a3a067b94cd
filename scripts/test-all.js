#!/usr/bin/env node
// `npm test`: every test of the project, one summary.
//
//   1. configure + build the native tests with -DELMO_WERROR=ON, ELMO_CUDA=AUTO (the CUDA backend
//      compiles with -Werror wherever nvcc exists), in the addon's tree build/ when `npm install`
//      made one (the libraries then compile once), else in build-native-ci;
//   2. ctest --output-on-failure; each native test executable prints "N passed, N failed",
//      which is summed here (an executable that exits 77 is a visible SKIP, not a pass);
//   3. jest with test/reporter.js (builds the addon first if it is missing);
//   4. the combined line "N passed, N failed" (and "N skipped" on the line before, if any).
//
// Flags: --native-only (skip jest), --asan (build-asan with -DELMO_ASAN=ON, CUDA off; implies
// nothing about jest: combine with --native-only for the sanitizer run), --jest-only.
// Exit status is non-zero on any failure, including a failed build.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = new Set(process.argv.slice(2));
const known = new Set(['--native-only', '--asan', '--jest-only']);
for (const a of args) {
  if (!known.has(a)) {
    console.error(`test-all: unknown option ${a} (known: ${[...known].join(', ')})`);
    process.exit(2);
  }
}
const asan = args.has('--asan');
const runNative = !args.has('--jest-only');
const runJest = !args.has('--native-only');
const jobs = String(Math.max(1, typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length));

function run(cmd, argv, options = {}) {
  console.log(`\n$ ${[cmd, ...argv].join(' ')}`);
  const r = spawnSync(cmd, argv, { cwd: root, stdio: 'inherit', ...options });
  if (r.error) console.error(`test-all: cannot run ${cmd}: ${r.error.message}`);
  return r;
}

function unescapeXml(s) {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)))
    .replace(/&amp;/g, '&');
}

const SUMMARY = /^(\d+) passed, (\d+) failed\s*$/m;
function lastSummary(text) {
  let found = null;
  for (const line of text.split('\n')) {
    const m = SUMMARY.exec(line);
    if (m) found = { passed: Number(m[1]), failed: Number(m[2]) };
  }
  return found;
}

// ---- native ------------------------------------------------------------------------------
function native() {
  const result = { passed: 0, failed: 0, skipped: 0, skippedNames: [], problems: [] };
  // The addon's build tree (cmake-js, build/) is reused when it exists: the tests are added to
  // it, so the libraries (CUDA included) compile once for `npm ci` and `npm test` together.
  const addonTree = path.join(root, 'build', 'CMakeCache.txt');
  const reuse = !asan && fs.existsSync(addonTree) && /CMAKE_JS_INC/.test(fs.readFileSync(addonTree, 'utf8'));
  const dir = path.join(root, asan ? 'build-asan' : reuse ? 'build' : 'build-native-ci');
  const configure = ['-S', '.', '-B', dir, '-DELMO_WERROR=ON', '-DELMO_TESTS=ON', '-DELMO_BENCH=ON'];
  if (!reuse) configure.push('-DELMO_ADDON=OFF');
  if (asan) configure.push('-DELMO_ASAN=ON', '-DELMO_CUDA=OFF', '-DCMAKE_BUILD_TYPE=RelWithDebInfo');
  else configure.push(`-DELMO_CUDA=${process.env.ELMO_CUDA || 'AUTO'}`);
  if (!fs.existsSync(path.join(dir, 'CMakeCache.txt'))) {
    const hasNinja = spawnSync('ninja', ['--version'], { stdio: 'ignore' }).status === 0;
    if (hasNinja) configure.push('-G', 'Ninja');
  }
  if (run('cmake', configure).status !== 0) {
    result.problems.push('cmake configure failed');
    result.failed += 1;
    return result;
  }
  if (run('cmake', ['--build', dir, '-j', jobs]).status !== 0) {
    result.problems.push('native build failed');
    result.failed += 1;
    return result;
  }
  const junit = path.join(dir, 'ctest-junit.xml');
  fs.rmSync(junit, { force: true });
  const env = { ...process.env };
  if (asan) env.ASAN_OPTIONS = env.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=0';
  const ctest = run('ctest', ['--test-dir', dir, '--output-on-failure', '--output-junit', junit, '-j', jobs], { env });
  if (!fs.existsSync(junit)) {
    result.problems.push('ctest produced no report');
    result.failed += 1;
    return result;
  }
  const xml = fs.readFileSync(junit, 'utf8');
  const cases = xml.matchAll(/<testcase name="([^"]*)"[^>]*status="([^"]*)"[^>]*>([\s\S]*?)<\/testcase>/g);
  let executables = 0;
  for (const [, name, status, body] of cases) {
    executables += 1;
    const out = unescapeXml((/<system-out>([\s\S]*?)<\/system-out>/.exec(body) || [])[1] || '');
    if (status === 'notrun' || /<skipped/.test(body)) {
      const why = out.trim().split('\n').filter(Boolean).pop() || 'skipped';
      result.skipped += 1;
      result.skippedNames.push(`${name}: ${why}`);
      continue;
    }
    const s = lastSummary(out);
    if (s) {
      result.passed += s.passed;
      result.failed += s.failed;
    }
    // Cases an executable skipped (SKIP_CASE in native/tests/harness.h), by name.
    for (const [, caseName, why] of out.matchAll(/^SKIP (\S+): (.*)$/gm)) {
      result.skipped += 1;
      result.skippedNames.push(`${name} ${caseName}: ${why}`);
    }
    if (status === 'fail' && (!s || s.failed === 0)) {
      // Crashed, timed out or exited non-zero without reporting a failed case: one failure.
      result.failed += 1;
      result.problems.push(`${name} failed without a failing case (crash, timeout or sanitizer report)`);
    } else if (status !== 'fail' && !s) {
      result.problems.push(`${name} printed no "N passed, N failed" line; counted as 1 passed`);
      result.passed += 1;
    }
  }
  if (ctest.status !== 0 && result.failed === 0) {
    result.failed += 1;
    result.problems.push(`ctest exited with ${ctest.status}`);
  }
  console.log(`\nnative: ${executables} test executables, ${result.passed} cases passed, ${result.failed} failed` +
    (result.skipped ? `, ${result.skipped} skipped (executables or cases)` : ''));
  for (const s of result.skippedNames) console.log(`  SKIP ${s}`);
  for (const p of result.problems) console.log(`  ! ${p}`);
  return result;
}

// ---- jest --------------------------------------------------------------------------------
function jest() {
  const result = { passed: 0, failed: 0, skipped: 0, problems: [] };
  const addon = path.join(root, 'build', 'Release', 'elmo.node');
  if (!fs.existsSync(addon)) {
    console.log('\naddon missing: building it (npm run build:addon)');
    if (run('npm', ['run', 'build:addon']).status !== 0) result.problems.push('addon build failed (jest runs anyway)');
  }
  const jestBin = path.join(root, 'node_modules', 'jest', 'bin', 'jest.js');
  console.log(`\n$ jest --ci`);
  const r = spawnSync(process.execPath, [jestBin, '--ci'], {
    cwd: root,
    stdio: ['inherit', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  process.stdout.write(r.stdout || '');
  const out = r.stdout || '';
  const s = lastSummary(out);
  const skipped = /^(\d+) skipped\s*$/m.exec(out);
  if (s) {
    result.passed = s.passed;
    result.failed = s.failed;
  }
  if (skipped) result.skipped = Number(skipped[1]);
  if (!s || (r.status !== 0 && result.failed === 0)) {
    result.failed += 1;
    result.problems.push(`jest exited with ${r.status} ${r.error ? r.error.message : ''}`.trim());
  }
  for (const p of result.problems) console.log(`  ! ${p}`);
  return result;
}

const parts = [];
if (runNative) parts.push(['native', native()]);
if (runJest) parts.push(['jest', jest()]);

let passed = 0;
let failed = 0;
let skipped = 0;
console.log('\n==== summary ====');
for (const [name, r] of parts) {
  passed += r.passed;
  failed += r.failed;
  skipped += r.skipped;
  console.log(`${name}: ${r.passed} passed, ${r.failed} failed${r.skipped ? `, ${r.skipped} skipped` : ''}`);
  for (const s of r.skippedNames || []) console.log(`  SKIP ${s}`);
}
if (skipped > 0) console.log(`${skipped} skipped`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
