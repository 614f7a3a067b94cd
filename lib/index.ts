/**
 * elmo-chat: pretrain, fine-tune and run BERT encoders from Node.js on CPU and CUDA.
 *
 * What exists today: the model API for inference ({@link Bert}: `load`, `create`, `save`,
 * `forward`, `predict`, `embed`), the WordPiece {@link Tokenizer}, device discovery, native
 * tensors with zero-copy views, a few CPU kernels run in place on typed arrays, and the error
 * classes, and training: `pretrain` (masked-LM on unlabelled text), `fineTune`, `evaluate` and
 * the low-level `trainer()`.
 *
 * @packageDocumentation
 */
export { Bert } from './bert';
export type {
  BertConfig,
  BertCreateOptions,
  BertInput,
  BertLoadOptions,
  BertModelInfo,
  BertOutput,
  BertRunOptions,
  EmbedOptions,
  PackedIds,
  Prediction,
  ProblemType,
} from './bert';
export type { Trainer, TrainerOptions, TrainerTask, TrainBatch, StepResult, LrSchedule } from './train/trainer';
export type {
  EvalMetrics,
  EvaluateOptions,
  ExampleSource,
  FineTuneOptions,
  FineTuneProgress,
  FineTuneResult,
} from './train/fine-tune';
export type { Example, TrainTask } from './train/data';
export type { PretrainOptions, PretrainProgress, PretrainResult } from './train/pretrain';
export type { CorpusEntry, CorpusSource, CorpusTexts } from './train/corpus';
export { CorpusError, Tokenizer, TokenizerError } from './tokenizer';
export type {
  BatchEncoding,
  CorpusErrorReason,
  EncodeOptions,
  Encoding,
  NormalizerOptions,
  TokenizerInput,
  TokenizerOptions,
  TrainCorpus,
  TrainOptions,
  TrainProgress,
  WordSink,
  WordSplitter,
} from './tokenizer';
export { devices, measureCpuPeak, resolveDevice } from './devices';
export type { CpuInfo, CpuPeak, CudaDevice, CudaInfo, DeviceKind, DeviceRequest, DevicesInfo } from './devices';
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
  NonFiniteError,
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
