#!/usr/bin/env node
// bench/install.js: how long `npm install elmo-chat` takes with the prebuilt addon, against the
// same package without it (the addon then builds from source), and whether the installed
// package loads its addon.
//
//   node bench/install.js [--variants=prebuilt,source] [--json=FILE] [--keep]
//
// 1. The prebuilt binary: prebuilds/<platform>-<arch>/elmo-chat.napi.<libc>.node, made by
//    scripts/prebuild.js first when missing (its time is reported, not counted).
// 2. A staged copy of the package: package.json, the `files` it lists, and dist/ compiled from
//    lib/ into the stage (so the tarball holds this tree's loader, whatever the checkout's dist/
//    holds). `npm pack` twice: with prebuilds/ and without.
// 3. An untimed warm-up install (--prefer-offline, scripts skipped) puts the metadata of every
//    dependency in the npm cache: a lockfile install (`npm ci`) never fetched it, and resolving
//    `elmo-chat`'s version ranges needs it.
// 4. Each tarball installed into an empty project with `npm install --offline` (everything
//    from the npm cache; nothing is downloaded), wall time measured, and npm's own timing of
//    every install script (--timing): elmo-chat's and better-sqlite3's apart.
//    ELMO_CUDA and the like are removed from the environment: a CPU install, as a user gets.
// 5. In each project: `node -e "require('elmo-chat').buildInfo()"` and the file the addon was
//    loaded from.
// The JSON (stdout, and --json=FILE) has every number and the machine's load while it ran.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { option, listOption } = require('./common');
const { prebuildFile } = require('../scripts/install.js');

const root = path.resolve(__dirname, '..');

function sh(cmd, args, options = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...options });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  return { ...r, ms };
}

function must(r, what) {
  if (r.status !== 0) {
    const tail = `${r.stdout || ''}\n${r.stderr || ''}`.trim().split('\n').slice(-30).join('\n');
    throw new Error(`${what} failed (exit ${r.status ?? r.signal}):\n${tail}`);
  }
  return r;
}

/** The environment a user's `npm install` would see: nothing that asks for CUDA or a source build. */
function userEnv() {
  const drop = /^(ELMO_CUDA|ELMO_WERROR|ELMO_ADDON|ELMO_BUILD_FROM_SOURCE|npm_.*|INIT_CWD)$/i;
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !drop.test(k)));
}

/** Copies the package's `files` (but dist/ and prebuilds/) and package.json into `stage`. */
function stagePackage(stage, pkg) {
  fs.mkdirSync(stage, { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(stage, 'package.json'));
  for (const entry of pkg.files) {
    const rel = entry.replace(/\/$/, '');
    if (rel === 'dist' || rel.startsWith('prebuilds')) continue;
    const from = path.join(root, rel);
    if (!fs.existsSync(from)) continue;
    fs.cpSync(from, path.join(stage, rel), { recursive: true });
  }
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  must(sh(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', path.join(stage, 'dist')]), 'tsc');
}

function pack(stage, dest, name) {
  const r = must(
    sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], { cwd: stage, env: userEnv() }),
    'npm pack',
  );
  const [info] = JSON.parse(r.stdout);
  const file = path.join(dest, name);
  fs.renameSync(path.join(dest, info.filename), file);
  return { file, bytes: fs.statSync(file).size, unpackedBytes: info.unpackedSize, entries: info.entryCount };
}

/** npm's `build:run:<event>:<location>` timings (--timing prints them to stderr): ms per package. */
function scriptTimings(stderr) {
  const out = {};
  for (const [, , location, ms] of stderr.matchAll(
    /timing build:run:(preinstall|install|postinstall):(\S+) Completed in (\d+)ms/g,
  )) {
    out[location] = (out[location] ?? 0) + Number(ms);
  }
  return out;
}

/**
 * Fills the npm cache with the metadata of every dependency (an install resolves version
 * ranges, which `npm ci` from a lockfile never asked for), so that the timed installs run with
 * --offline. Untimed; scripts skipped.
 */
function warmCache(tmp, tarball) {
  const app = path.join(tmp, 'app-warm-up');
  fs.mkdirSync(app, { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), '{ "name": "elmo-install-warm-up", "version": "1.0.0", "private": true }\n');
  must(
    sh('npm', ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball], {
      cwd: app,
      env: userEnv(),
    }),
    'warm-up npm install',
  );
  fs.rmSync(app, { recursive: true, force: true });
}

function installInto(tmp, variant, tarball) {
  const app = path.join(tmp, `app-${variant}`);
  fs.mkdirSync(app, { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), `${JSON.stringify({ name: `elmo-install-${variant}`, version: '1.0.0', private: true }, null, 2)}\n`);
  const load0 = os.loadavg()[0];
  const r = sh(
    'npm',
    ['install', '--offline', '--no-audit', '--no-fund', '--timing', '--foreground-scripts', tarball],
    { cwd: app, env: userEnv() },
  );
  const result = {
    ok: r.status === 0,
    totalMs: Math.round(r.ms),
    loadAvg1mBefore: Number(load0.toFixed(2)),
    loadAvg1mAfter: Number(os.loadavg()[0].toFixed(2)),
    scriptsMs: scriptTimings(r.stderr),
  };
  const elmoScript = result.scriptsMs['node_modules/elmo-chat'];
  if (elmoScript !== undefined) result.elmoInstallScriptMs = elmoScript;
  // --foreground-scripts runs the scripts one after another, so the rest of the wall time is
  // npm's own work (resolve, extract, link). better-sqlite3's script compiles SQLite where its
  // prebuilt cannot be downloaded (as here): the total without it is what differs by machine.
  const scriptsTotal = Object.values(result.scriptsMs).reduce((a, b) => a + b, 0);
  result.npmOwnMs = Math.max(0, result.totalMs - scriptsTotal);
  const sqlite = result.scriptsMs['node_modules/better-sqlite3'];
  if (sqlite !== undefined) result.totalWithoutBetterSqlite3ScriptMs = result.totalMs - sqlite;
  result.installLine = (r.stdout.match(/^elmo-chat: .*$/gm) || []).slice(0, 3);
  if (r.status !== 0) {
    result.error = `${r.stdout}\n${r.stderr}`
      .split('\n')
      .filter((l) => !/^npm timing /.test(l))
      .slice(-20)
      .join('\n');
    return result;
  }
  // A fresh process loads the package and its addon, as a user's would.
  const check = sh(
    process.execPath,
    [
      '-e',
      `const t0 = process.hrtime.bigint();
       const e = require('elmo-chat');
       const info = e.buildInfo();
       const ms = Number(process.hrtime.bigint() - t0) / 1e6;
       const file = require('elmo-chat/dist/native').nativeAddonFile();
       process.stdout.write(JSON.stringify({ info, file, ms }));`,
    ],
    { cwd: app, env: userEnv() },
  );
  if (check.status === 0) {
    const { info, file, ms } = JSON.parse(check.stdout);
    result.buildInfo = info;
    result.addonFile = path.relative(app, file);
    result.requireAndBuildInfoMs = Math.round(ms);
  } else {
    result.ok = false;
    result.error = `require('elmo-chat').buildInfo() failed: ${check.stderr.trim().split('\n').slice(-5).join('\n')}`;
  }
  return result;
}

function main() {
  const variants = listOption('variants', 'prebuilt,source');
  for (const v of variants) if (!['prebuilt', 'source'].includes(v)) throw new Error(`--variants: unknown ${v}`);
  const jsonOut = option('json', null);
  const keep = option('keep', false) === true;
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

  const out = {
    bench: 'install',
    date: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model ?? 'unknown',
      memGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)),
      loadAvg1mAtStart: Number(os.loadavg()[0].toFixed(2)),
      platform: `${process.platform}-${process.arch}`,
    },
    node: process.version,
    npm: must(sh('npm', ['--version']), 'npm --version').stdout.trim(),
    package: `${pkg.name}@${pkg.version}`,
  };

  const prebuilt = prebuildFile(root);
  if (!fs.existsSync(prebuilt)) {
    console.error('bench/install: no prebuilt binary yet: node scripts/prebuild.js');
    const r = must(sh(process.execPath, [path.join(root, 'scripts', 'prebuild.js')], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] }), 'prebuild');
    out.prebuildMs = Math.round(r.ms);
  }
  out.prebuilt = { file: path.relative(root, prebuilt), bytes: fs.statSync(prebuilt).size };

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-bench-install-'));
  try {
    const stage = path.join(tmp, 'stage');
    const t0 = Date.now();
    stagePackage(stage, pkg);
    out.stageMs = Date.now() - t0;
    const tarballs = {};
    // With the prebuilt binary first, then the very same files without it.
    fs.mkdirSync(path.dirname(prebuildFile(stage)), { recursive: true });
    fs.copyFileSync(prebuilt, prebuildFile(stage));
    tarballs.prebuilt = pack(stage, tmp, 'elmo-chat-prebuilt.tgz');
    fs.rmSync(path.join(stage, 'prebuilds'), { recursive: true, force: true });
    tarballs.source = pack(stage, tmp, 'elmo-chat-source.tgz');
    out.tarballs = Object.fromEntries(
      Object.entries(tarballs).map(([k, v]) => [k, { bytes: v.bytes, unpackedBytes: v.unpackedBytes, entries: v.entries }]),
    );

    const w0 = Date.now();
    warmCache(tmp, tarballs.prebuilt.file);
    out.warmUpMs = Date.now() - w0;

    out.variants = {};
    for (const v of variants) {
      console.error(`bench/install: npm install --offline ${path.basename(tarballs[v].file)} ...`);
      out.variants[v] = installInto(tmp, v, tarballs[v].file);
      const r = out.variants[v];
      console.error(
        `bench/install: ${v}: ${r.ok ? 'ok' : 'FAILED'} in ${(r.totalMs / 1000).toFixed(1)} s` +
          (r.elmoInstallScriptMs !== undefined ? `, elmo-chat's install script ${(r.elmoInstallScriptMs / 1000).toFixed(1)} s` : '') +
          (r.addonFile ? `, addon from ${r.addonFile}` : ''),
      );
    }
    if (keep) out.kept = tmp;
  } finally {
    if (!keep) fs.rmSync(tmp, { recursive: true, force: true });
  }

  const text = `${JSON.stringify(out, null, 2)}\n`;
  if (typeof jsonOut === 'string') {
    fs.mkdirSync(path.dirname(path.resolve(jsonOut)), { recursive: true });
    fs.writeFileSync(jsonOut, text);
  }
  process.stdout.write(text);
  const failed = Object.values(out.variants).some((r) => !r.ok);
  process.exit(failed ? 1 : 0);
}

try {
  main();
} catch (err) {
  console.error(`bench/install: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
