/**
 * Device discovery and selection (DESIGN.md §4): `'auto'` means CUDA when compiled in and a
 * device answers, else the CPU; an explicit `'cuda'` that cannot be had throws
 * {@link DeviceUnavailableError} with the reason.
 */
import { DeviceUnavailableError, InputError, expected } from './errors';
import { native } from './native';
import type { CpuPeak, DevicesInfo } from './native';

export type { CpuInfo, CpuPeak, CudaDevice, CudaInfo, DevicesInfo } from './native';

/** A device request as the API takes it. */
export type DeviceRequest = 'auto' | 'cpu' | 'cuda';
/** A device a model actually runs on. */
export type DeviceKind = 'cpu' | 'cuda';

/**
 * What this process can run on.
 *
 * @example
 * ```ts
 * const { cpu, cuda } = devices();
 * console.log(cpu.isa, cpu.threads, cuda.available ? cuda.devices[0]?.name : cuda.reason);
 * ```
 */
export function devices(): DevicesInfo {
  return native().devices();
}

/**
 * Measures the arithmetic peak of the CPU backend's threads on its ISA path: every thread runs
 * chains of independent vector FMAs (and bf16 dot products where the CPU has AVX512_BF16) for
 * about `seconds` each. The clock a VM or a boosting core reports is not the one it runs at, so
 * benchmarks quote their GFLOP/s against this. Blocks the calling thread for about twice
 * `seconds` (default 0.25): for tools and benchmarks, not a server's event loop.
 *
 * @example
 * ```ts
 * const { fp32Gflops, bf16Gflops } = measureCpuPeak();
 * ```
 */
export function measureCpuPeak(seconds?: number): CpuPeak {
  return native().cpuPeak(seconds); // validates seconds: a number in (0, 60], else InputError
}

/**
 * Resolves a device request. Throws {@link DeviceUnavailableError} for `'cuda'` when no CUDA
 * device can be had, and {@link InputError} for anything that is not a device request.
 */
export function resolveDevice(request: unknown = 'auto', info: DevicesInfo = devices()): DeviceKind {
  if (request !== 'auto' && request !== 'cpu' && request !== 'cuda') {
    throw expected(InputError, "one of 'auto', 'cpu', 'cuda'", 'device', request);
  }
  if (request === 'cpu') return 'cpu';
  if (info.cuda.available) return 'cuda';
  if (request === 'auto') return 'cpu';
  const reason = info.cuda.reason ?? 'no CUDA device';
  throw new DeviceUnavailableError(`CUDA device requested but unavailable: ${reason}`, reason);
}
