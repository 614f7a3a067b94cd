/**
 * elmo-chat: pretrain, fine-tune and run BERT encoders from Node.js on CPU and CUDA.
 *
 * What exists today: device discovery, native tensors with zero-copy views, a few CPU kernels
 * run in place on typed arrays, and the error classes. The model API (`Bert.load`, `forward`,
 * `fineTune`, ...) is planned; see README.md.
 *
 * @packageDocumentation
 */
export { devices, resolveDevice } from './devices';
export type { CpuInfo, CudaDevice, CudaInfo, DeviceKind, DeviceRequest, DevicesInfo } from './devices';
export { NativeTensor, ops } from './tensor';
export type { AttentionOptions, F32, GeluOptions, GemmOptions, LayerNormOptions, SoftmaxOptions } from './tensor';
export {
  AbortedError,
  BusyError,
  CheckpointError,
  CudaError,
  DTypeError,
  DeviceUnavailableError,
  ElmoError,
  InputError,
  NativeLoadError,
  OutOfMemoryError,
  ShapeError,
  UnsupportedError,
  DisposedError,
} from './errors';
export type { ErrorCode } from './errors';
export type { BuildInfo } from './native';

import { native } from './native';
import type { BuildInfo } from './native';

/** How the native addon was built: build type, CUDA, compiler, N-API version. */
export function buildInfo(): BuildInfo {
  return native().buildInfo();
}
