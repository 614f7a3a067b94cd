#!/usr/bin/env node
// `npm run prebuild`: the prebuilt addon that `npm install elmo-chat` uses without a compiler.
//
//   npm run prebuild                  CPU addon   -> prebuilds/<platform>-<arch>/elmo-chat.napi.<libc>.node
//   npm run prebuild -- --cuda        CUDA addon  -> prebuilds/<platform>-<arch>-cuda/elmo-chat.napi.<libc>.node
//   npm run prebuild -- --cuda --package
//                                     ... and the CUDA addon as its own package folder
//                                     (build-prebuild-cuda/package/, `npm pack` it)
//
// The build runs in its own tree (build-prebuild/ or build-prebuild-cuda/, via cmake-js --out),
// never in build/, so a developer's build/Release/elmo.node is left alone. Release, no tests,
// no benchmarks. The CPU kernels pick AVX-512, AVX2 or scalar at run time, so one binary covers
// every x86-64 CPU. The binary needs the glibc and libstdc++ symbol versions of the machine
// that builds it, at least: both are printed (docs/install.md lists them). libstdc++ stays
// dynamic: linked statically it would pull in the glibc 2.36 arc4random (random_device) and
// exclude more systems than GCC 12's libstdc++ does.
//
// The CPU folder follows the prebuildify / node-gyp-build convention (`<platform>-<arch>/`,
// `<name>.napi.<libc>.node`); the CUDA one is a folder of its own (`<platform>-<arch>-cuda/`),
// which generic resolvers ignore, so nothing picks the CUDA build by accident (lib/native.ts
// picks it only when asked). package.json `files` ships prebuilds/<platform>-<arch>/ only.
//
// Options: --cuda, --package (with --cuda), --jobs N (default: the machine's cores),
// --keep-symbols (do not strip). Prints one JSON line last: { file, bytes, cuda, glibc, glibcxx, ms }.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { prebuildFile, detectLibc } = require('./install.js');

const root = path.resolve(__dirname, '..');

function parseArgs(argv) {
  const opts = { cuda: false, package: false, jobs: 0, strip: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--cuda') opts.cuda = true;
    else if (a === '--package') opts.package = true;
    else if (a === '--keep-symbols') opts.strip = false;
    else if (a === '--jobs') opts.jobs = Number(argv[++i]);
    else {
      console.error(`prebuild: unknown option ${a} (known: --cuda, --package, --jobs N, --keep-symbols)`);
      process.exit(2);
    }
  }
  if (opts.package && !opts.cuda) {
    console.error('prebuild: --package makes the CUDA companion package; use it with --cuda');
    process.exit(2);
  }
  if (!Number.isInteger(opts.jobs) || opts.jobs < 0) {
    console.error('prebuild: --jobs takes a positive integer');
    process.exit(2);
  }
  return opts;
}

function run(cmd, argv, options = {}) {
  console.log(`$ ${[cmd, ...argv].join(' ')}`);
  const r = spawnSync(cmd, argv, { cwd: root, stdio: 'inherit', ...options });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} exited with ${r.status ?? r.signal}`);
}

/** The newest GLIBC_x.y and GLIBCXX_x.y.z symbol versions the binary needs (objdump); null when unknown. */
function symbolVersionsNeeded(file) {
  const r = spawnSync('objdump', ['-T', file], { encoding: 'utf8' });
  if (r.status !== 0) return { glibc: null, glibcxx: null };
  const newest = (re) => {
    let best = null;
    for (const [, v] of r.stdout.matchAll(re)) if (!best || compareVersions(v, best) > 0) best = v;
    return best;
  };
  return { glibc: newest(/\(GLIBC_(\d+(?:\.\d+)*)\)/g), glibcxx: newest(/\(GLIBCXX_(\d+(?:\.\d+)*)\)/g) };
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The companion package: the CUDA addon alone, installable beside elmo-chat. */
function writeCudaPackage(binary, buildDir) {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const tuple = `${process.platform}-${process.arch}`;
  const dir = path.join(buildDir, 'package');
  fs.rmSync(dir, { recursive: true, force: true });
  const rel = path.relative(root, binary);
  fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
  fs.copyFileSync(binary, path.join(dir, rel));
  const companion = {
    name: `elmo-chat-cuda-${tuple}`,
    version: pkg.version,
    description: `The CUDA build of the elmo-chat addon for ${tuple}; elmo-chat loads it when installed beside it.`,
    license: pkg.license,
    os: [process.platform],
    cpu: [process.arch],
    files: ['prebuilds/'],
    peerDependencies: { 'elmo-chat': pkg.version },
  };
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(companion, null, 2)}\n`);
  fs.writeFileSync(
    path.join(dir, 'README.md'),
    `# ${companion.name}\n\n${companion.description}\n\n` +
      'Needs an NVIDIA driver at run time (the CUDA runtime is linked statically); without a ' +
      "device the addon runs on the CPU and `devices().cuda.reason` says why. See elmo-chat's docs/install.md.\n",
  );
  return dir;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const buildDir = path.join(root, opts.cuda ? 'build-prebuild-cuda' : 'build-prebuild');
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  const jobs = opts.jobs || (typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);
  // configure every time (the options below win over whatever the tree's cache holds), then an
  // incremental build.
  const common = ['--out', buildDir, '--config', 'Release'];
  run(process.execPath, [
    cmakeJs,
    'configure',
    ...common,
    '--CDCMAKE_BUILD_TYPE=Release',
    // A value, not empty (cmake-js drops empty ones): resets what an earlier configure left.
    '--CDCMAKE_SHARED_LINKER_FLAGS=-Wl,--as-needed',
    `--CDELMO_CUDA=${opts.cuda ? 'ON' : 'OFF'}`,
    '--CDELMO_TESTS=OFF',
    '--CDELMO_BENCH=OFF',
    '--CDELMO_ASAN=OFF',
  ]);
  run(process.execPath, [cmakeJs, 'build', ...common, '--parallel', String(jobs)]);

  const built = path.join(buildDir, 'Release', 'elmo.node');
  if (!fs.existsSync(built)) throw new Error(`the build finished without ${path.relative(root, built)}`);
  const dest = prebuildFile(root, { cuda: opts.cuda, libc: detectLibc() });
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp`;
  fs.copyFileSync(built, tmp);
  if (opts.strip && process.platform === 'linux') run('strip', ['--strip-unneeded', tmp]);
  fs.renameSync(tmp, dest);

  // The binary must load here and say what it is before it is shipped.
  const probe = spawnSync(
    process.execPath,
    ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(dest)}).buildInfo()))`],
    { encoding: 'utf8' },
  );
  if (probe.status !== 0) throw new Error(`the new binary does not load: ${probe.stderr.trim()}`);
  const info = JSON.parse(probe.stdout);
  if (info.cuda !== opts.cuda) throw new Error(`expected cuda=${opts.cuda} but the binary reports ${info.flags}`);

  const result = {
    file: path.relative(root, dest),
    bytes: fs.statSync(dest).size,
    cuda: info.cuda,
    flags: info.flags,
    compiler: info.compiler,
    ...(process.platform === 'linux' ? symbolVersionsNeeded(dest) : {}),
    ms: Date.now() - started,
  };
  if (opts.package) result.package = path.relative(root, writeCudaPackage(dest, buildDir));
  console.log(JSON.stringify(result));
}

try {
  main();
} catch (err) {
  console.error(`prebuild: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
