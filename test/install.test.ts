// Packaging: where lib/native.ts looks for the addon and what scripts/install.js decides.
// Nothing here compiles: layouts are temp folders with empty or copied binaries.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { NativeLoadError } from '../lib/errors';
import { addonCandidates, addonPath, loadAddon, resolveAddon } from '../lib/native';
import type { AddonLookup } from '../lib/native';

interface Decision {
  action: 'skip' | 'build' | 'unsupported';
  reason: string;
  cuda: 'ON' | 'OFF' | 'AUTO';
  file?: string;
  args?: string[];
  notes: string[];
}
type Probe = (file: string) => { ok: boolean; info?: { cuda: boolean }; error?: string };
interface DecideContext {
  root: string;
  env: Record<string, string | undefined>;
  platform: string;
  arch: string;
  libc: string | null;
  checkout: boolean;
  nvcc: string | null;
  cudaPackageDir: string | null;
  probe: Probe;
}
interface InstallScript {
  OPT_IN: string;
  prebuildFile(root: string, opts?: { platform?: string; arch?: string; libc?: string | null; cuda?: boolean }): string;
  cudaPackageName(platform?: string, arch?: string): string;
  cudaRequest(env: Record<string, string | undefined>): 'ON' | 'OFF' | 'AUTO';
  findNvcc(env: Record<string, string | undefined>, exists?: (file: string) => boolean): string | null;
  decide(ctx: DecideContext): Decision;
}

const root = path.join(__dirname, '..');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const install = require('../scripts/install.js') as InstallScript;

const tmpRoots: string[] = [];
function tmpPackage(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-install-'));
  tmpRoots.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of tmpRoots) fs.rmSync(dir, { recursive: true, force: true });
});

function touch(file: string, content = ''): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  return file;
}

const linux = { platform: 'linux', arch: 'x64', libc: 'glibc', env: {}, cudaPackageDir: null } satisfies AddonLookup;

describe('loader: where lib/native.ts looks', () => {
  it('looks in build/Release, then the CUDA prebuilt, then the CPU prebuilt (libc-tagged first)', () => {
    const pkg = tmpPackage();
    const rel = addonCandidates({ ...linux, root: pkg }).map((c) => [c.kind, path.relative(pkg, c.file)]);
    expect(rel).toEqual([
      ['build', path.join('build', 'Release', 'elmo.node')],
      ['prebuild-cuda', path.join('prebuilds', 'linux-x64-cuda', 'elmo-chat.napi.glibc.node')],
      ['prebuild-cuda', path.join('prebuilds', 'linux-x64-cuda', 'elmo-chat.napi.node')],
      ['prebuild', path.join('prebuilds', 'linux-x64', 'elmo-chat.napi.glibc.node')],
      ['prebuild', path.join('prebuilds', 'linux-x64', 'elmo-chat.napi.node')],
    ]);
  });

  it('ELMO_ADDON is the only place looked at when set', () => {
    const pkg = tmpPackage();
    const file = path.join(pkg, 'custom.node');
    expect(addonCandidates({ ...linux, root: pkg, env: { ELMO_ADDON: file } })).toEqual([{ file, kind: 'env' }]);
  });

  it('the CUDA companion package comes after the package’s own CUDA prebuilt; ELMO_CUDA=OFF skips both', () => {
    const pkg = tmpPackage();
    const companion = path.join(pkg, 'node_modules', 'elmo-chat-cuda-linux-x64');
    const cuda = addonCandidates({ ...linux, root: pkg, cudaPackageDir: companion }).filter(
      (c) => c.kind === 'prebuild-cuda',
    );
    expect(cuda.map((c) => path.relative(pkg, path.dirname(c.file)))).toEqual([
      path.join('prebuilds', 'linux-x64-cuda'),
      path.join('prebuilds', 'linux-x64-cuda'),
      path.join('node_modules', 'elmo-chat-cuda-linux-x64', 'prebuilds', 'linux-x64-cuda'),
      path.join('node_modules', 'elmo-chat-cuda-linux-x64', 'prebuilds', 'linux-x64-cuda'),
    ]);
    const off = addonCandidates({ ...linux, root: pkg, cudaPackageDir: companion, env: { ELMO_CUDA: 'OFF' } });
    expect(off.some((c) => c.kind === 'prebuild-cuda')).toBe(false);
  });

  it('finds an installed companion package by itself (node_modules/elmo-chat-cuda-linux-x64)', () => {
    const pkg = tmpPackage();
    const companion = path.join(pkg, 'node_modules', 'elmo-chat-cuda-linux-x64');
    touch(path.join(companion, 'package.json'), '{ "name": "elmo-chat-cuda-linux-x64", "version": "0.0.0" }');
    const file = touch(path.join(companion, 'prebuilds', 'linux-x64-cuda', 'elmo-chat.napi.glibc.node'));
    touch(path.join(pkg, 'prebuilds', 'linux-x64', 'elmo-chat.napi.glibc.node'));
    const lookup = { root: pkg, platform: 'linux', arch: 'x64', libc: 'glibc', env: {} };
    expect(resolveAddon(lookup)).toEqual({ file: fs.realpathSync(file), kind: 'prebuild-cuda' });
    expect(resolveAddon({ ...lookup, env: { ELMO_CUDA: '0' } }).kind).toBe('prebuild');
  });

  it('no libc tag outside Linux; musl is looked for by name on musl', () => {
    const pkg = tmpPackage();
    const darwin = addonCandidates({ ...linux, root: pkg, platform: 'darwin', libc: null });
    expect(darwin.filter((c) => c.kind === 'prebuild').map((c) => path.basename(c.file))).toEqual([
      'elmo-chat.napi.node',
    ]);
    const musl = addonCandidates({ ...linux, root: pkg, libc: 'musl' });
    expect(musl.filter((c) => c.kind === 'prebuild').map((c) => path.basename(c.file))).toEqual([
      'elmo-chat.napi.musl.node',
      'elmo-chat.napi.node',
    ]);
  });

  it('resolves to the first file that exists: build/Release wins over prebuilds', () => {
    const pkg = tmpPackage();
    const cpu = touch(path.join(pkg, 'prebuilds', 'linux-x64', 'elmo-chat.napi.glibc.node'));
    expect(resolveAddon({ ...linux, root: pkg })).toEqual({ file: cpu, kind: 'prebuild' });
    const cuda = touch(path.join(pkg, 'prebuilds', 'linux-x64-cuda', 'elmo-chat.napi.glibc.node'));
    expect(resolveAddon({ ...linux, root: pkg })).toEqual({ file: cuda, kind: 'prebuild-cuda' });
    expect(resolveAddon({ ...linux, root: pkg, env: { ELMO_CUDA: 'off' } })).toEqual({ file: cpu, kind: 'prebuild' });
    const built = touch(path.join(pkg, 'build', 'Release', 'elmo.node'));
    expect(resolveAddon({ ...linux, root: pkg })).toEqual({ file: built, kind: 'build' });
  });

  it('the real package looks in build/Release first (addonPath)', () => {
    const first = addonCandidates({ ...linux })[0];
    expect(first).toEqual({ file: addonPath, kind: 'build' });
  });

  it('no binary: NativeLoadError naming every place and the command that builds one', () => {
    const pkg = tmpPackage();
    let err: unknown;
    try {
      resolveAddon({ ...linux, root: pkg });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NativeLoadError);
    const e = err as NativeLoadError;
    expect(e.code).toBe('ERR_NATIVE_LOAD');
    expect(e.message).toContain('No native addon for linux-x64 (glibc)');
    for (const c of addonCandidates({ ...linux, root: pkg })) expect(e.message).toContain(c.file);
    expect(e.message).toContain('npm rebuild elmo-chat --build-from-source');
    expect(e.message).toContain('cmake >= 3.20');
    expect(e.message).toContain('docs/install.md');
  });

  it('an unsupported CPU or OS is told so, not sent to a build that cannot work', () => {
    const pkg = tmpPackage();
    for (const [platform, arch] of [
      ['darwin', 'arm64'],
      ['linux', 'arm64'],
      ['win32', 'x64'],
    ] as const) {
      expect(() => resolveAddon({ ...linux, root: pkg, platform, arch, libc: null })).toThrow(
        new RegExp(
          `No native addon for ${platform}-${arch}:[\\s\\S]*x86-64[\\s\\S]*does not build for ${platform}-${arch}`,
        ),
      );
    }
  });

  it('ELMO_ADDON naming a missing file says so', () => {
    const pkg = tmpPackage();
    const file = path.join(pkg, 'nowhere', 'elmo.node');
    expect(() => resolveAddon({ ...linux, root: pkg, env: { ELMO_ADDON: file } })).toThrow(
      `ELMO_ADDON names ${file}, which does not exist`,
    );
  });

  it('a prebuilt that does not load points at a build from source', () => {
    const pkg = tmpPackage();
    const file = touch(path.join(pkg, 'prebuilds', 'linux-x64', 'elmo-chat.napi.glibc.node'), 'not an ELF file');
    const chosen = resolveAddon({ ...linux, root: pkg });
    expect(chosen.file).toBe(file);
    expect(() => loadAddon(chosen)).toThrow(NativeLoadError);
    expect(() => loadAddon(chosen)).toThrow(/prebuilt binary does not run on this system.*--build-from-source/);
  });

  const haveBuild = fs.existsSync(addonPath);
  (haveBuild ? it : it.skip)('a binary laid out as a prebuilt loads from there', () => {
    const pkg = tmpPackage();
    const file = path.join(pkg, 'prebuilds', 'linux-x64', 'elmo-chat.napi.glibc.node');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.copyFileSync(addonPath, file);
    const chosen = resolveAddon({ ...linux, root: pkg });
    expect(chosen).toEqual({ file, kind: 'prebuild' });
    expect(loadAddon(chosen).buildInfo().napiVersion).toBe(8);
  });
});

describe('install script: what it decides', () => {
  const ok: Probe = () => ({ ok: true, info: { cuda: false } });
  function ctx(over: Partial<DecideContext> = {}): DecideContext {
    return {
      root: tmpPackage(),
      env: {},
      platform: 'linux',
      arch: 'x64',
      libc: 'glibc',
      checkout: false,
      nvcc: null,
      cudaPackageDir: null,
      probe: ok,
      ...over,
    };
  }
  const cpuPrebuilt = (pkg: string) =>
    touch(install.prebuildFile(pkg, { platform: 'linux', arch: 'x64', libc: 'glibc' }));

  it('names the prebuilt where the loader looks for it', () => {
    const pkg = tmpPackage();
    const loader = addonCandidates({ ...linux, root: pkg }).map((c) => c.file);
    expect(loader).toContain(install.prebuildFile(pkg, { platform: 'linux', arch: 'x64', libc: 'glibc' }));
    expect(loader).toContain(install.prebuildFile(pkg, { platform: 'linux', arch: 'x64', libc: 'glibc', cuda: true }));
    expect(install.cudaPackageName('linux', 'x64')).toBe('elmo-chat-cuda-linux-x64');
  });

  it('a prebuilt that loads: nothing to build', () => {
    const c = ctx();
    const file = cpuPrebuilt(c.root);
    const probe = jest.fn(ok);
    const d = install.decide({ ...c, probe });
    expect(d.action).toBe('skip');
    expect(d.file).toBe(file);
    expect(probe).toHaveBeenCalledWith(file);
    expect(d.args).toBeUndefined();
  });

  it('no prebuilt: builds from source with cmake-js, CPU only', () => {
    const probe = jest.fn(ok);
    const d = install.decide(ctx({ probe }));
    expect(d.action).toBe('build');
    expect(d.args).toEqual(['rebuild', '--CDELMO_TESTS=OFF', '--CDELMO_BENCH=OFF', '--CDELMO_CUDA=OFF']);
    expect(d.reason).toContain('no prebuilt addon for linux-x64 (glibc)');
    expect(probe).not.toHaveBeenCalled();
  });

  it('a prebuilt that does not load here: builds from source', () => {
    const c = ctx({ probe: () => ({ ok: false, error: "version `GLIBC_2.34' not found" }) });
    cpuPrebuilt(c.root);
    const d = install.decide(c);
    expect(d.action).toBe('build');
    expect(d.reason).toContain('does not load here');
    expect(d.reason).toContain('GLIBC_2.34');
  });

  it('a git checkout and --build-from-source always build', () => {
    const c = ctx({ checkout: true, probe: jest.fn(ok) });
    cpuPrebuilt(c.root);
    expect(install.decide(c).action).toBe('build');
    expect(c.probe).not.toHaveBeenCalled();
    const r = ctx({ env: { npm_config_build_from_source: 'true' } });
    cpuPrebuilt(r.root);
    expect(install.decide(r).action).toBe('build');
  });

  it('nvcc alone does not turn CUDA on; one line says how to opt in', () => {
    const built = install.decide(ctx({ nvcc: '/usr/local/cuda/bin/nvcc' }));
    expect(built.cuda).toBe('OFF');
    expect(built.args).toContain('--CDELMO_CUDA=OFF');
    expect(built.notes).toEqual([install.OPT_IN]);
    expect(install.OPT_IN).toContain('ELMO_CUDA=ON');
    const c = ctx({ nvcc: '/usr/local/cuda/bin/nvcc' });
    cpuPrebuilt(c.root);
    const skipped = install.decide(c);
    expect(skipped.action).toBe('skip');
    expect(skipped.notes).toEqual([install.OPT_IN]);
    expect(install.decide(ctx()).notes).toEqual([]);
  });

  it('CUDA when asked: ELMO_CUDA=ON or npm_config_elmo_cuda=on builds with it', () => {
    const c = ctx({ env: { ELMO_CUDA: 'ON' } });
    cpuPrebuilt(c.root); // a CPU prebuilt does not answer a request for CUDA
    const d = install.decide(c);
    expect(d.action).toBe('build');
    expect(d.args).toContain('--CDELMO_CUDA=ON');
    expect(install.decide(ctx({ env: { npm_config_elmo_cuda: 'on' } })).args).toContain('--CDELMO_CUDA=ON');
    // The environment variable wins over the npm config.
    expect(install.decide(ctx({ env: { ELMO_CUDA: 'off', npm_config_elmo_cuda: 'on' } })).cuda).toBe('OFF');
    expect(install.decide(ctx({ env: { ELMO_CUDA: 'auto' } })).args).toContain('--CDELMO_CUDA=AUTO');
  });

  it('CUDA asked and a CUDA prebuilt (own or companion package) that loads with CUDA: nothing to build', () => {
    const c = ctx({ env: { ELMO_CUDA: '1' }, probe: () => ({ ok: true, info: { cuda: true } }) });
    const companion = tmpPackage();
    const file = touch(install.prebuildFile(companion, { platform: 'linux', arch: 'x64', libc: 'glibc', cuda: true }));
    const d = install.decide({ ...c, cudaPackageDir: companion });
    expect(d.action).toBe('skip');
    expect(d.file).toBe(file);
    // ... but a binary without the CUDA backend does not count.
    const cpuOnly = install.decide({ ...c, cudaPackageDir: companion, probe: ok });
    expect(cpuOnly.action).toBe('build');
    expect(cpuOnly.reason).toContain('has no CUDA backend');
  });

  it('an unknown ELMO_CUDA value is an error', () => {
    expect(() => install.decide(ctx({ env: { ELMO_CUDA: 'maybe' } }))).toThrow(
      "Expected one of on, off, auto for ELMO_CUDA but received 'maybe'",
    );
  });

  it('not x86-64, or Windows: unsupported, with the reason', () => {
    for (const [platform, arch] of [
      ['linux', 'arm64'],
      ['darwin', 'arm64'],
      ['win32', 'x64'],
    ]) {
      const d = install.decide(ctx({ platform: platform as string, arch: arch as string }));
      expect(d.action).toBe('unsupported');
      expect(d.reason).toContain(`no build for ${platform}-${arch}`);
      expect(d.reason).toContain('x86-64');
    }
    expect(install.decide(ctx({ platform: 'darwin', libc: null })).action).toBe('build');
  });

  it('finds nvcc on PATH, in CUDACXX or in /usr/local/cuda/bin', () => {
    const at = (files: string[]) => (f: string) => files.includes(f);
    expect(install.findNvcc({ PATH: '/a:/b' }, at(['/b/nvcc']))).toBe('/b/nvcc');
    expect(install.findNvcc({ PATH: '/a', CUDACXX: '/opt/cu/nvcc' }, at(['/opt/cu/nvcc']))).toBe('/opt/cu/nvcc');
    expect(install.findNvcc({ PATH: '/a' }, at(['/usr/local/cuda/bin/nvcc']))).toBe('/usr/local/cuda/bin/nvcc');
    expect(install.findNvcc({ PATH: '/a' }, at([]))).toBeNull();
  });
});

describe('install script: run in a package layout', () => {
  // A copy of the script in a temp package: its own prebuilds/, no .git, no node_modules.
  function layout(): string {
    const pkg = tmpPackage();
    fs.mkdirSync(path.join(pkg, 'scripts'));
    fs.copyFileSync(path.join(root, 'scripts', 'install.js'), path.join(pkg, 'scripts', 'install.js'));
    return pkg;
  }
  // Without the variables that ask for CUDA or a build from source (CI sets ELMO_CUDA=ON).
  const asks = /^(ELMO_CUDA|ELMO_BUILD_FROM_SOURCE|ELMO_ADDON|npm_config_build_from_source|npm_config_elmo_cuda)$/i;
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !asks.test(k)));
  const runInstall = (pkg: string, extra: Record<string, string> = {}) =>
    spawnSync(process.execPath, [path.join(pkg, 'scripts', 'install.js')], {
      cwd: pkg,
      env: { ...env, ...extra },
      encoding: 'utf8',
      timeout: 60000,
    });

  const haveBuild = fs.existsSync(addonPath);
  (haveBuild ? it : it.skip)('with a prebuilt that loads it exits at once', () => {
    const pkg = layout();
    const file = install.prebuildFile(pkg);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.copyFileSync(addonPath, file);
    const t0 = Date.now();
    const r = runInstall(pkg);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('using the prebuilt addon');
    expect(Date.now() - t0).toBeLessThan(20000);
  });

  it('without one it goes to the cmake-js build (missing here, so it stops with the reason)', () => {
    const pkg = layout();
    const r = runInstall(pkg, { NODE_PATH: '' });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('building it from source (ELMO_CUDA=OFF)');
    expect(r.stderr).toContain('cmake-js is missing');
  });

  it('package.json runs it, ships the linux-x64 prebuilds and says where it runs', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
      files: string[];
      os: string[];
      cpu: string[];
    };
    expect(pkg.scripts['install']).toBe('node scripts/install.js');
    expect(pkg.files).toEqual(expect.arrayContaining(['scripts/install.js', 'prebuilds/linux-x64/']));
    expect(pkg.os).toEqual(['linux']);
    expect(pkg.cpu).toEqual(['x64']);
    // The prebuilt binary is made when the package is packed (npm pack / npm publish), not by a
    // `prebuild` script: npm would run that before every `npm run build`.
    expect(pkg.scripts['prepack']).toBe('node scripts/prebuild.js');
    expect(pkg.scripts['prebuild']).toBeUndefined();
  });

  it('scripts/prebuild.js rejects an unknown option before building anything', () => {
    const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'prebuild.js'), '--bogus'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown option --bogus');
  });
});
