import { runCli } from '../lib/cli';
import { devices } from '../lib';

function capture(argv: string[]): { code: number; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  const code = runCli(
    argv,
    (l) => out.push(l),
    (l) => err.push(l),
  );
  return { code, out, err };
}

describe('elmo CLI', () => {
  it('info prints the devices, ISA, threads and build flags', () => {
    const { code, out } = capture(['info']);
    const text = out.join('\n');
    const info = devices();
    expect(code).toBe(0);
    expect(text).toContain(`${info.cpu.isa} kernels`);
    expect(text).toContain(`${String(info.cpu.threads)} threads`);
    expect(text).toContain(`bf16:     ${info.cpu.bf16Kernel} kernels`);
    expect(text).toContain(`int8:     ${info.cpu.int8Kernel} kernels`);
    expect(text).toContain(info.cpu.features.includes('avx512_bf16') ? 'avx512_bf16' : 'no avx512_bf16');
    expect(text).toMatch(/build: +Release|build: +\S+/);
    expect(text).toContain('cuda');
    if (!info.cuda.available) expect(text).toContain(info.cuda.reason ?? 'unavailable');
  });

  it('info --json is machine-readable', () => {
    const { code, out } = capture(['info', '--json']);
    expect(code).toBe(0);
    const parsed = JSON.parse(out.join('\n')) as { devices: { cpu: { isa: string } }; build: { napiVersion: number } };
    expect(parsed.devices.cpu.isa).toBe(devices().cpu.isa);
    expect(parsed.build.napiVersion).toBe(8);
  });

  it('info --peak measures the CPU on the path devices() reports', () => {
    const text = capture(['info', '--peak']).out.join('\n');
    expect(text).toMatch(/peak: +fp32 \d+/);
    const { code, out } = capture(['info', '--peak', '--json']);
    expect(code).toBe(0);
    const parsed = JSON.parse(out.join('\n')) as { peak: { isa: string; threads: number; fp32Gflops: number } };
    expect(parsed.peak.isa).toBe(devices().cpu.isa);
    expect(parsed.peak.threads).toBe(devices().cpu.threads);
    expect(parsed.peak.fp32Gflops).toBeGreaterThan(0);
  });

  it('unknown commands and options exit 2 with a message', () => {
    expect(capture(['frobnicate']).code).toBe(2);
    expect(capture(['frobnicate']).err.join('\n')).toContain("unknown command 'frobnicate'");
    expect(capture(['info', '--yaml']).code).toBe(2);
    expect(capture([]).code).toBe(2);
    expect(capture(['help']).code).toBe(0);
  });
});
