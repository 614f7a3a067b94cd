import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  buildInfo,
  devices,
  measureCpuPeak,
  resolveDevice,
  DeviceUnavailableError,
  InputError,
  NativeLoadError,
} from '../lib';
import { addonPath, loadAddon, native } from '../lib/native';
import type { DevicesInfo } from '../lib/native';

describe('native addon', () => {
  it('loads from build/Release/elmo.node', () => {
    expect(fs.existsSync(addonPath)).toBe(true);
    expect(typeof native().devices).toBe('function');
  });

  it('a missing addon throws NativeLoadError with ERR_NATIVE_LOAD', () => {
    const missing = path.join(os.tmpdir(), 'elmo-missing', 'elmo.node');
    expect(() => loadAddon(missing)).toThrow(NativeLoadError);
    try {
      loadAddon(missing);
    } catch (err) {
      expect((err as NativeLoadError).code).toBe('ERR_NATIVE_LOAD');
      expect((err as NativeLoadError).message).toContain('npm install');
    }
  });

  it('a file that is not an addon throws NativeLoadError', () => {
    const bogus = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-')), 'elmo.node');
    fs.writeFileSync(bogus, 'not an ELF file');
    expect(() => loadAddon(bogus)).toThrow(NativeLoadError);
  });

  it('reports build info', () => {
    const info = buildInfo();
    expect(info.napiVersion).toBe(8);
    expect(info.flags).toMatch(/cuda=(ON|OFF)/);
    expect(info.compiler.length).toBeGreaterThan(0);
  });
});

describe('devices()', () => {
  const info = devices();

  it('describes the CPU', () => {
    expect(['scalar', 'avx2', 'avx512']).toContain(info.cpu.isa);
    expect(['scalar', 'avx2', 'avx512']).toContain(info.cpu.bestIsa);
    expect(Number.isInteger(info.cpu.threads)).toBe(true);
    expect(info.cpu.threads).toBeGreaterThanOrEqual(1);
    expect(Array.isArray(info.cpu.features)).toBe(true);
    if (info.cpu.bestIsa === 'avx2') expect(info.cpu.features).toEqual(expect.arrayContaining(['avx2', 'fma']));
    if (info.cpu.bestIsa === 'avx512') expect(info.cpu.features).toContain('avx512f');
    // bf16 products: AVX512-BF16 on the avx512 path of a CPU that has it, else AVX2, else scalar.
    const native16 = info.cpu.isa === 'avx512' && info.cpu.features.includes('avx512_bf16');
    expect(info.cpu.bf16Kernel).toBe(info.cpu.isa === 'scalar' ? 'scalar' : native16 ? 'avx512_bf16' : 'avx2');
    // int8 products: AVX-512 VNNI likewise.
    const vnni = info.cpu.isa === 'avx512' && info.cpu.features.includes('avx512_vnni');
    expect(info.cpu.int8Kernel).toBe(info.cpu.isa === 'scalar' ? 'scalar' : vnni ? 'avx512_vnni' : 'avx2');
  });

  it("measureCpuPeak() measures the backend's path and threads; bf16 only with AVX512_BF16", () => {
    for (const bad of [0, -1, 61, Number.NaN, '1' as unknown as number])
      expect(() => measureCpuPeak(bad)).toThrow(InputError);
    if (info.cpu.isa === 'scalar') {
      // No vector loop to measure on the scalar path (ELMO_ISA=scalar or a CPU without AVX2).
      expect(() => measureCpuPeak(0.05)).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED' }) as Error);
      return;
    }
    const peak = measureCpuPeak(0.05);
    expect(peak.isa).toBe(info.cpu.isa);
    expect(peak.threads).toBe(info.cpu.threads);
    expect(peak.fp32Gflops).toBeGreaterThan(0);
    if (info.cpu.bf16Kernel === 'avx512_bf16') expect(peak.bf16Gflops).toBeGreaterThan(0);
    else expect(peak.bf16Gflops).toBe(0);
  });

  it('the CPU entry agrees with the backend the ops use', () => {
    expect(native().cpuBackendName()).toBe(`cpu(${info.cpu.isa}, ${String(info.cpu.threads)} threads)`);
  });

  it('describes CUDA: devices, or no devices and a reason', () => {
    expect(typeof info.cuda.available).toBe('boolean');
    expect(info.cuda.compiled).toBe(buildInfo().cuda);
    if (info.cuda.available) {
      expect(info.cuda.devices.length).toBeGreaterThan(0);
      for (const d of info.cuda.devices) {
        expect(d.name.length).toBeGreaterThan(0);
        expect(d.memoryBytes).toBeGreaterThan(0);
      }
      expect(info.cuda.reason).toBeUndefined();
    } else {
      expect(info.cuda.devices).toEqual([]);
      expect(typeof info.cuda.reason).toBe('string');
      expect((info.cuda.reason ?? '').length).toBeGreaterThan(0);
    }
  });

  it('honours ELMO_NUM_THREADS and ELMO_ISA (fresh process)', () => {
    const script = `const a = require(${JSON.stringify(addonPath)}); process.stdout.write(JSON.stringify(a.devices().cpu))`;
    const out = execFileSync(process.execPath, ['-e', script], {
      env: { ...process.env, ELMO_NUM_THREADS: '3', ELMO_ISA: 'scalar' },
    }).toString();
    const cpu = JSON.parse(out) as DevicesInfo['cpu'];
    expect(cpu.threads).toBe(3);
    expect(cpu.isa).toBe('scalar');
  });
});

describe('resolveDevice()', () => {
  const cpuOnly: DevicesInfo = {
    cpu: { isa: 'avx2', bestIsa: 'avx2', threads: 2, features: [], bf16Kernel: 'avx2', int8Kernel: 'avx2' },
    cuda: { compiled: true, available: false, devices: [], reason: 'no CUDA driver' },
  };
  const withGpu: DevicesInfo = {
    cpu: cpuOnly.cpu,
    cuda: {
      compiled: true,
      available: true,
      devices: [{ index: 0, name: 'GPU', memoryBytes: 1, computeCapability: '9.0', multiprocessors: 1 }],
    },
  };

  it("'auto' picks CUDA when a device answers, else the CPU", () => {
    expect(resolveDevice('auto', cpuOnly)).toBe('cpu');
    expect(resolveDevice('auto', withGpu)).toBe('cuda');
    expect(resolveDevice(undefined, cpuOnly)).toBe('cpu');
    expect(resolveDevice('cpu', withGpu)).toBe('cpu');
  });

  it("'cuda' without a device throws DeviceUnavailableError with the reason", () => {
    expect(() => resolveDevice('cuda', cpuOnly)).toThrow(DeviceUnavailableError);
    try {
      resolveDevice('cuda', cpuOnly);
    } catch (err) {
      expect((err as DeviceUnavailableError).code).toBe('ERR_DEVICE_UNAVAILABLE');
      expect((err as DeviceUnavailableError).reason).toBe('no CUDA driver');
    }
    expect(resolveDevice('cuda', withGpu)).toBe('cuda');
  });

  it("this machine: 'cuda' resolves only when devices() says available", () => {
    const real = devices();
    if (real.cuda.available) expect(resolveDevice('cuda')).toBe('cuda');
    else expect(() => resolveDevice('cuda')).toThrow(DeviceUnavailableError);
  });

  it('anything else is an InputError in the one message shape', () => {
    expect(() => resolveDevice('gpu')).toThrow(InputError);
    expect(() => resolveDevice('gpu')).toThrow(
      "Expected one of 'auto', 'cpu', 'cuda' for device but received string 'gpu'",
    );
    expect(() => resolveDevice(3)).toThrow('but received number 3');
  });
});
