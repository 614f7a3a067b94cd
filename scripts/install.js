#!/usr/bin/env node
// The package's `install` script: use the prebuilt addon when it loads here, else build one.
//
//   - A prebuilt binary for this platform (prebuilds/<platform>-<arch>/elmo-chat.napi.<libc>.node,
//     made by scripts/prebuild.js and shipped in the package) that loads in a child process:
//     nothing to do, the install takes seconds. lib/native.ts finds the same file at run time,
//     so a package manager that skips install scripts gets the same result.
//   - No prebuilt, one that does not load here (an older glibc, say), a git checkout, or
//     `npm rebuild elmo-chat --build-from-source`: build from source with cmake-js into
//     build/Release/elmo.node (needs cmake >= 3.20 and a C++17 compiler).
//   - The CUDA backend only when asked: ELMO_CUDA=ON in the environment, or the npm config
//     `elmo-cuda=on` (npm_config_elmo_cuda); never merely because nvcc is found (then one line
//     says how to opt in). ELMO_CUDA=AUTO keeps CMake's "CUDA when nvcc is found".
//   - Not x86-64, or Windows: a clear message and a failed install; the native code needs
//     x86-64 (cpuid, AVX2/AVX-512 kernels chosen at run time) and POSIX (mmap).
//
// The decision is a pure function (`decide`) so that test/install.test.ts checks it without
// compiling; the helpers here are shared with scripts/prebuild.js and bench/install.js.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const PACKAGE_NAME = 'elmo-chat';
const ROOT = path.resolve(__dirname, '..');

/** glibc or musl on Linux (a prebuilt links against one of them), null elsewhere. */
function detectLibc(platform = process.platform) {
  if (platform !== 'linux') return null;
  if (platform !== process.platform) return 'glibc';
  const report = process.report && typeof process.report.getReport === 'function' ? process.report.getReport() : null;
  const header = report && typeof report === 'object' ? report.header : undefined;
  return header && header.glibcVersionRuntime ? 'glibc' : 'musl';
}

/**
 * Where the prebuilt addon of a platform lives in a package:
 * `<root>/prebuilds/<platform>-<arch>[-cuda]/elmo-chat.napi[.<libc>].node`.
 */
function prebuildFile(root, { platform = process.platform, arch = process.arch, libc = detectLibc(platform), cuda = false } = {}) {
  const tuple = `${platform}-${arch}${cuda ? '-cuda' : ''}`;
  return path.join(root, 'prebuilds', tuple, `${PACKAGE_NAME}.napi${libc ? `.${libc}` : ''}.node`);
}

/** The companion package that holds the CUDA build for a platform (scripts/prebuild.js --cuda --package). */
function cudaPackageName(platform = process.platform, arch = process.arch) {
  return `${PACKAGE_NAME}-cuda-${platform}-${arch}`;
}

/** 'ON' | 'OFF' | 'AUTO' from ELMO_CUDA, else npm_config_elmo_cuda, else 'OFF'. Throws on a value it does not know. */
function cudaRequest(env) {
  for (const name of ['ELMO_CUDA', 'npm_config_elmo_cuda']) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    const v = String(raw).trim().toLowerCase();
    if (['on', '1', 'true', 'yes'].includes(v)) return 'ON';
    if (['off', '0', 'false', 'no'].includes(v)) return 'OFF';
    if (v === 'auto') return 'AUTO';
    throw new Error(`Expected one of on, off, auto for ${name} but received '${raw}'`);
  }
  return 'OFF';
}

/** npm rebuild --build-from-source (npm_config_build_from_source) or ELMO_BUILD_FROM_SOURCE=1. */
function buildFromSourceRequested(env) {
  const v = (env.npm_config_build_from_source || env.ELMO_BUILD_FROM_SOURCE || '').toLowerCase();
  return v !== '' && v !== 'false' && v !== '0';
}

/** nvcc where CMake would find it: CUDACXX, PATH, /usr/local/cuda/bin. */
function findNvcc(env, exists = fs.existsSync) {
  if (env.CUDACXX && exists(env.CUDACXX)) return env.CUDACXX;
  const dirs = (env.PATH || '').split(path.delimiter).filter(Boolean);
  dirs.push('/usr/local/cuda/bin');
  for (const dir of dirs) {
    const file = path.join(dir, 'nvcc');
    if (exists(file)) return file;
  }
  return null;
}

/** Loads `file` in a child process (a crash there cannot take npm down) and reads its buildInfo(). */
function probeAddon(file) {
  const script = `process.stdout.write(JSON.stringify(require(${JSON.stringify(file)}).buildInfo()))`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
  if (r.status === 0) {
    try {
      return { ok: true, info: JSON.parse(r.stdout) };
    } catch {
      return { ok: false, error: `unexpected output: ${r.stdout.slice(0, 200)}` };
    }
  }
  const why = (r.stderr || '').split('\n').find((l) => /Error|error:/.test(l)) || r.error?.message || `exit ${r.status ?? r.signal}`;
  return { ok: false, error: why.trim() };
}

const OPT_IN =
  'elmo-chat: nvcc found; the CUDA backend is opt-in: ELMO_CUDA=ON npm rebuild elmo-chat --build-from-source';

/**
 * What the install script does, decided without side effects.
 *
 * ctx: { root, env, platform, arch, libc, checkout (a git work tree), nvcc (path or null),
 *        cudaPackageDir (the installed companion package's folder or null), probe(file) }.
 * Returns { action: 'skip' | 'build' | 'unsupported', reason, cuda: 'ON' | 'OFF' | 'AUTO',
 *           file (the prebuilt that loads, for 'skip'), args (cmake-js arguments, for 'build'),
 *           notes (lines to print) }.
 */
function decide(ctx) {
  const { root, env, platform, arch, libc, checkout, nvcc, cudaPackageDir, probe } = ctx;
  const cuda = cudaRequest(env);
  const notes = [];
  if (nvcc && cuda === 'OFF') notes.push(OPT_IN);

  if (arch !== 'x64' || platform === 'win32') {
    return {
      action: 'unsupported',
      cuda,
      notes,
      reason:
        `elmo-chat: no build for ${platform}-${arch}. The native code needs an x86-64 CPU (cpuid, ` +
        'AVX2/AVX-512 kernels chosen at run time, with a scalar fallback) and a POSIX system (mmap); ' +
        'prebuilt binaries exist for linux-x64 (glibc). See docs/install.md.',
    };
  }

  const args = ['rebuild', '--CDELMO_TESTS=OFF', '--CDELMO_BENCH=OFF', `--CDELMO_CUDA=${cuda}`];
  const build = (reason) => ({ action: 'build', cuda, notes, reason, args });

  if (checkout) return build('a git checkout: building the addon from source');
  if (buildFromSourceRequested(env)) return build('--build-from-source: building the addon from source');

  // ELMO_CUDA=ON wants a CUDA build: the package's own CUDA prebuilt or the companion
  // package's; AUTO wants one only where nvcc is (else the CPU prebuilt serves).
  const wantCuda = cuda === 'ON' || (cuda === 'AUTO' && nvcc !== null);
  const candidates = [];
  if (wantCuda) {
    candidates.push(prebuildFile(root, { platform, arch, libc, cuda: true }));
    if (cudaPackageDir) candidates.push(prebuildFile(cudaPackageDir, { platform, arch, libc, cuda: true }));
  } else {
    candidates.push(prebuildFile(root, { platform, arch, libc }));
  }
  const failures = [];
  for (const file of candidates) {
    if (!fs.existsSync(file)) continue;
    const p = probe(file);
    if (p.ok && (!wantCuda || p.info.cuda)) {
      return { action: 'skip', cuda, notes, file, reason: `elmo-chat: using the prebuilt addon ${path.relative(root, file)}` };
    }
    failures.push(`${path.relative(root, file)} ${p.ok ? 'has no CUDA backend' : `does not load here (${p.error})`}`);
  }
  if (failures.length > 0) return build(`the prebuilt ${failures.join('; ')}: building the addon from source`);
  return build(
    `no prebuilt ${wantCuda ? 'CUDA ' : ''}addon for ${platform}-${arch}${libc ? ` (${libc})` : ''}: building it from source`,
  );
}

function resolveCudaPackage(root) {
  try {
    return path.dirname(require.resolve(`${cudaPackageName()}/package.json`, { paths: [root] }));
  } catch {
    return null;
  }
}

function main() {
  const env = process.env;
  let decision;
  try {
    decision = decide({
      root: ROOT,
      env,
      platform: process.platform,
      arch: process.arch,
      libc: detectLibc(),
      checkout: fs.existsSync(path.join(ROOT, '.git')),
      nvcc: findNvcc(env),
      cudaPackageDir: resolveCudaPackage(ROOT),
      probe: probeAddon,
    });
  } catch (err) {
    console.error(`elmo-chat: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
  for (const line of decision.notes) console.log(line);
  if (decision.action === 'unsupported') {
    console.error(decision.reason);
    return 1;
  }
  if (decision.action === 'skip') {
    console.log(decision.reason);
    return 0;
  }
  console.log(`elmo-chat: ${decision.reason.replace(/^elmo-chat: /, '')} (ELMO_CUDA=${decision.cuda})`);
  if (process.platform !== 'linux') console.log(`elmo-chat: ${process.platform} builds are not tested; linux-x64 is.`);
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [ROOT] });
  } catch {
    console.error('elmo-chat: cmake-js is missing (a dependency of elmo-chat): reinstall the package');
    return 1;
  }
  const r = spawnSync(process.execPath, [cmakeJs, ...decision.args], { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(
      `elmo-chat: the build from source failed (${r.error ? r.error.message : `exit ${r.status ?? r.signal}`}). ` +
        'It needs cmake >= 3.20, a C++17 compiler (g++ >= 9 or clang >= 10) and an x86-64 CPU' +
        (decision.cuda === 'ON' ? ', and for ELMO_CUDA=ON the CUDA toolkit (nvcc)' : '') +
        '. See docs/install.md.',
    );
    return 1;
  }
  return 0;
}

module.exports = {
  PACKAGE_NAME,
  OPT_IN,
  detectLibc,
  prebuildFile,
  cudaPackageName,
  cudaRequest,
  buildFromSourceRequested,
  findNvcc,
  probeAddon,
  decide,
};

if (require.main === module) process.exit(main());
