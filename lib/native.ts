/**
 * The one place that loads the native addon and declares its shape. Everything else in lib/
 * goes through {@link native}. Internal: not part of the public API.
 *
 * Which binary (first that exists; see {@link addonCandidates} and docs/install.md):
 * `ELMO_ADDON` (a path, and then only it); `build/Release/elmo.node` (built from source: a
 * checkout, `npm rebuild elmo-chat --build-from-source`); the CUDA prebuilt, where one was
 * installed (`prebuilds/<platform>-<arch>-cuda/` here or in the `elmo-chat-cuda-<platform>-<arch>`
 * package; `ELMO_CUDA=OFF` skips it); the CPU prebuilt the package ships,
 * `prebuilds/<platform>-<arch>/elmo-chat.napi.<libc>.node` (the prebuildify / node-gyp-build
 * layout; scripts/prebuild.js makes it, scripts/install.js names the same files).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ElmoError, NativeLoadError, errorClasses } from './errors';

/** CPU section of {@link DevicesInfo}. */
export interface CpuInfo {
  /** The kernel path in use: `'scalar' | 'avx2' | 'avx512'` (ELMO_ISA forces one). */
  isa: string;
  /** The best path this CPU can run. */
  bestIsa: string;
  /** Threads of the CPU backend's pool (ELMO_NUM_THREADS or the machine's cores). */
  threads: number;
  /** Instruction-set extensions detected (`'avx2'`, `'fma'`, `'avx512f'`, `'avx512_bf16'`, ...). */
  features: string[];
  /**
   * The kernel that runs matrix products of a `precision: 'bf16'` model on this CPU:
   * `'avx512_bf16'` (bf16 dot-product instructions), `'avx2'` (bf16 weights widened to fp32 in
   * registers) or `'scalar'`.
   */
  bf16Kernel: string;
  /**
   * The kernel that runs matrix products of a `precision: 'int8'` model on this CPU:
   * `'avx512_vnni'` (`vpdpbusd`), `'avx2'` (`vpmaddubsw`) or `'scalar'`.
   */
  int8Kernel: string;
}

/** One CUDA device. */
export interface CudaDevice {
  index: number;
  name: string;
  /** Total device memory in bytes. */
  memoryBytes: number;
  /** e.g. `'9.0'`. */
  computeCapability: string;
  multiprocessors: number;
}

/** CUDA section of {@link DevicesInfo}. */
export interface CudaInfo {
  /** The addon was built with the CUDA backend. */
  compiled: boolean;
  /** At least one device answers. */
  available: boolean;
  devices: CudaDevice[];
  /** Why there are no devices (not compiled, no driver, no device). */
  reason?: string;
}

/** What {@link devices} reports. */
export interface DevicesInfo {
  cpu: CpuInfo;
  cuda: CudaInfo;
}

/** The CPU's measured arithmetic peak (see `measureCpuPeak`). */
export interface CpuPeak {
  /** The ISA path measured (the one the CPU backend runs). */
  isa: 'scalar' | 'avx2' | 'avx512';
  /** Threads that ran at once (the CPU backend's thread count). */
  threads: number;
  /** fp32 multiply-adds, 2 FLOPs each, all threads together. */
  fp32Gflops: number;
  /** bf16 dot products (AVX512_BF16, fp32 accumulate), 2 FLOPs per product; 0 without them. */
  bf16Gflops: number;
}

/** How the addon binary was built. */
export interface BuildInfo {
  /** Build type and options, e.g. `'Release cuda=ON asan=OFF'`. */
  flags: string;
  cuda: boolean;
  compiler: string;
  napiVersion: number;
}

/** The native f32 tensor handle (see lib/tensor.ts for the public wrapper). */
export interface NativeTensorHandle {
  /** Zero-copy view of the tensor's memory; the same object on every read. */
  readonly data: Float32Array;
  readonly shape: number[];
  readonly disposed: boolean;
  /** true: native memory behind an external ArrayBuffer; false: a JS ArrayBuffer. */
  readonly native: boolean;
  dispose(): void;
}

/** What the ops functions accept as f32 operands: a typed array or a tensor handle, in place. */
export type NativeF32 = Float32Array | NativeTensorHandle;

/** Positional entry points of bindings/ops.cpp. Dims are checked against every length. */
export interface NativeOps {
  gemm(
    out: NativeF32,
    a: NativeF32,
    b: NativeF32,
    M: number,
    N: number,
    K: number,
    op: 'nn' | 'nt' | 'tn',
    epilogue: 'none' | 'bias' | 'bias-gelu' | 'residual' | 'bias-residual',
    bias: NativeF32 | null,
    residual: NativeF32 | null,
    preGelu: NativeF32 | null,
    accumulate: boolean,
  ): void;
  layernormForward(
    out: NativeF32,
    inp: NativeF32,
    weight: NativeF32,
    bias: NativeF32,
    T: number,
    C: number,
    eps: number,
    residual: NativeF32 | null,
    sumOut: NativeF32 | null,
    mean: NativeF32 | null,
    rstd: NativeF32 | null,
  ): void;
  geluForward(out: NativeF32, inp: NativeF32, n: number): void;
  softmaxForward(out: NativeF32, inp: NativeF32, N: number, V: number): void;
  attentionForward(
    out: NativeF32,
    lse: NativeF32,
    qkv: NativeF32,
    offsets: Int32Array,
    NH: number,
    HD: number,
    dropoutP: number,
    seed: number | bigint,
    stream: number | bigint,
  ): void;
}

/** Options of the {@link NativeModel} constructor. */
export interface NativeModelOptions {
  device?: 'cpu' | 'cuda';
  /** CPU threads of the model's own pool (0: ELMO_NUM_THREADS or the machine's cores). */
  threads?: number;
  /** CUDA device index. */
  cudaDevice?: number;
  /**
   * Matrix-product precision: `'fp32'` (exact), `'bf16'` (bf16 weight copies; on CUDA also bf16
   * attention) or `'int8'` (CPU: dynamic quantization of the encoder's linear layers).
   */
  precision?: 'fp32' | 'bf16' | 'int8';
  /** CPU forwards estimated to take at most this long (ms) run on the calling thread; default 1, 0: never. */
  inlineMaxMs?: number;
}

/** Classification problem types, spelled as `config.json`'s `problem_type`. */
export type NativeProblemType = 'single_label_classification' | 'multi_label_classification' | 'regression';

/** Architecture and heads of a loaded or created model, as bindings/model.cpp reports them. */
export interface NativeModelConfig {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  typeVocabSize: number;
  layerNormEps: number;
  hiddenDropout: number;
  attentionDropout: number;
  initializerRange: number;
  padTokenId: number;
  /** Classifier outputs; 0 without a classifier head. */
  numLabels: number;
  /** Label names in id order (`LABEL_i` where the config names none). */
  labels: string[];
  problemType: NativeProblemType | null;
  heads: { pooler: boolean; classifier: boolean; mlm: boolean; tokenClassifier: boolean; slots: boolean };
  /** Rows of the slot classifier (joint models); 0 without one. */
  numSlotLabels: number;
  /** The LoRA adapter merged into the query and value weights, or null. */
  lora: { rank: number; alpha: number } | null;
  /** Heads pruned from each layer (config.json `elmo_pruned_heads`), ascending; `{}`: none. */
  prunedHeads: Record<number, number[]>;
  numParameters: number;
}

/**
 * What {@link NativeModel.create} takes: the `config.json` fields of Hugging Face, camelCased
 * (`numLayers` is `num_hidden_layers`, `maxPositions` is `max_position_embeddings`). Public as
 * `BertConfig`.
 */
export interface NativeCreateConfig {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  typeVocabSize: number;
  /** Classifier outputs; 0 or absent: no classification head. Defaults to `labels.length`. */
  numLabels?: number;
  /** Label names in id order (`id2label`); default `LABEL_0`, `LABEL_1`, ... */
  labels?: string[];
  /** Default `'single_label_classification'` when there are labels. */
  problemType?: NativeProblemType;
  /** Rows of a slot classifier beside the sequence classifier (joint models; `num_slot_labels`). */
  numSlotLabels?: number;
  /** Default 1e-12. */
  layerNormEps?: number;
  /** Default 0.1. */
  hiddenDropout?: number;
  /** Default 0.1. */
  attentionDropout?: number;
  /** Standard deviation of the initial weights, default 0.02. */
  initializerRange?: number;
  padTokenId?: number;
}

/** Options of {@link NativeModel.forward}: what to compute and hand back. */
export interface NativeForwardOptions {
  /** Return the [T, H] last hidden state (default true). */
  hidden?: boolean;
  /** Also return `embeddings` [B, H]: the [CLS] row or the mean of each sequence's rows. */
  pooling?: 'none' | 'cls' | 'mean';
  /** Also return `scores` [B, L] (softmax or sigmoid of the logits) and `best` [B] (arg-max). */
  scores?: 'none' | 'softmax' | 'sigmoid' | 'joint';
  /** `scores: 'joint'`: softmax over the first `jointIntents` labels, sigmoid over the others. */
  jointIntents?: number;
}

/** Outputs of one forward, each over its own ArrayBuffer (external native memory or a copy). */
export interface NativeForwardResult {
  hidden?: Float32Array;
  pooled?: Float32Array;
  logits?: Float32Array;
  embeddings?: Float32Array;
  scores?: Float32Array;
  best?: Int32Array;
  /** Slot classifier: logits [T, S]; with `scores: 'joint'` also softmax scores and the arg-max per token. */
  slotLogits?: Float32Array;
  slotScores?: Float32Array;
  slotBest?: Int32Array;
}

/** What {@link NativeModel.trainerCreate} takes (validated by lib/train/trainer.ts). */
export interface NativeTrainerOptions {
  task: 'sequence' | 'multi-label' | 'regression' | 'token' | 'mlm' | 'joint';
  /** Joint task: the classifier's first columns that form the (single-label) intent head. */
  jointIntents?: number;
  /** Joint task: weights of the intent, emotion and slot losses. */
  lossWeights?: [number, number, number];
  /** Train the LoRA adapters and the heads after the pooler only (the model must have adapters). */
  lora?: boolean;
  learningRate?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  warmupSteps?: number;
  totalSteps?: number;
  schedule?: 'constant' | 'linear' | 'cosine';
  maxGradNorm?: number;
  dropout?: number;
  attentionDropout?: number;
  seed?: number | bigint;
}

/** One packed training batch; arrays are read in place until the step's promise settles. */
export interface NativeTrainBatch {
  ids: Int32Array;
  typeIds?: Int32Array | undefined;
  offsets: Int32Array;
  labels?: Int32Array | Float32Array | undefined;
  /** Joint task: [B] intent ids (-100 none), or [B, intents] soft targets (first entry < 0: none). */
  intents?: Int32Array | undefined;
  intentProbs?: Float32Array | undefined;
  /** Joint task: [B, emotions] 0/1 targets (first entry < 0: none). */
  emotions?: Float32Array | undefined;
  /** Joint task: [T] slot tag ids (-100 ignored). */
  slots?: Int32Array | undefined;
}

/** What one optimizer step reports. */
export interface NativeStepResult {
  loss: number;
  gradNorm: number;
  lr: number;
  step: number;
  count: number;
  /** Joint task: each head's mean loss (intent, emotion, slots) and its labelled rows. */
  headLoss: [number, number, number];
  headCount: [number, number, number];
}

/**
 * The native BERT model (bindings/model.cpp): its own backend and worker thread; calls queue
 * and run one at a time in order; promise methods reject and never throw; `dispose()`
 * idempotent and deferred until queued operations have run.
 */
export interface NativeModel {
  /** config.json + model.safetensors of `dir`, read on the model's thread. */
  load(dir: string): Promise<void>;
  /** Fresh weights as transformers initializes them, deterministic in `seed`. */
  create(
    config: NativeCreateConfig,
    heads: { pooler?: boolean; classifier?: boolean; mlm?: boolean; tokenClassifier?: boolean; slots?: boolean },
    seed?: number | bigint,
  ): void;
  /** Writes dir/config.json and dir/model.safetensors, each atomically. */
  save(dir: string): Promise<void>;
  /** Inputs are read in place until the promise settles: do not modify them before. */
  forward(
    ids: Int32Array,
    typeIds: Int32Array | null,
    offsets: Int32Array,
    options?: NativeForwardOptions,
  ): Promise<NativeForwardResult>;
  /**
   * The encoder's weights (not the pooler or heads) from another checkpoint's model.safetensors
   * of the same configuration; with `heads`, every parameter.
   */
  loadEncoder(safetensorsPath: string, heads?: boolean): Promise<void>;
  /** Fresh LoRA adapters (A as peft initializes it, B zero) on every layer's query and value. */
  loraEnable(rank: number, alpha: number, seed?: number): Promise<void>;
  /** Removes the adapters: the base weights back, or (`merge`) the merged ones kept. */
  loraDisable(merge: boolean): Promise<void>;
  /** The adapter tensors (`bert.encoder.layer.L.attention.self.{query,value}.lora_{A,B}.weight`) and the heads after the pooler. */
  loraTensors(): Promise<Record<string, Float32Array>>;
  /** Sets adapter tensors and head parameters by name (checked first), then re-merges. */
  loraLoad(tensors: Record<string, Float32Array>): Promise<void>;
  /** Creates (or replaces) the model's trainer; enables its training memory. */
  trainerCreate(options: NativeTrainerOptions): Promise<void>;
  /** One optimizer step; an array is one step over its micro-batches. */
  trainStep(batch: NativeTrainBatch | NativeTrainBatch[]): Promise<NativeStepResult>;
  /** Forward + loss without dropout or gradient. */
  evalLoss(batch: NativeTrainBatch): Promise<{ loss: number; count: number }>;
  trainerSetSchedule(
    learningRate: number,
    warmupSteps: number,
    totalSteps: number,
    schedule: 'constant' | 'linear' | 'cosine',
  ): Promise<void>;
  /** optimizer.safetensors (AdamW moments, step); resolves with the step count. */
  trainerSaveState(path: string): Promise<number>;
  trainerLoadState(path: string): Promise<number>;
  /** Frees the trainer and the training memory; the weights are packed for inference again. */
  trainerDispose(): Promise<void>;
  dispose(): void;
  /** null before load() / create(). */
  readonly config: NativeModelConfig | null;
  readonly loaded: boolean;
  readonly busy: boolean;
  readonly disposed: boolean;
  readonly device: 'cpu' | 'cuda';
  readonly backendName: string;
}

/** Hooks for the package's own tests. */
export interface NativeTesting {
  /** Native buffers alive in this process (each freed by its last owner or finalizer). */
  liveStorages(): number;
  /** `n` floats of native memory filled with `value`, handed out zero-copy (or copied). */
  nativeFloat32(n: number, value: number): Float32Array;
  /** false: behave as a runtime that forbids external ArrayBuffers. */
  setExternalBuffers(allowed: boolean): void;
  /** Throws the error class registered for `code`. */
  throwCode(code: string, message: string): never;
}

/** The addon's exports. */
export interface NativeAddon {
  init(classes: Record<string, new (message: string) => ElmoError>, base: typeof ElmoError): void;
  devices(): DevicesInfo;
  buildInfo(): BuildInfo;
  cpuBackendName(): string;
  cpuPeak(seconds?: number): CpuPeak;
  TensorHandle: new (shape: number[]) => NativeTensorHandle;
  ops: NativeOps;
  NativeModel: new (options?: NativeModelOptions) => NativeModel;
  testing: NativeTesting;
}

/** The package's folder: lib/ (ts-jest) and dist/ (compiled) both sit one level below it. */
const packageRoot = path.join(__dirname, '..');

/** The addon built from source: `<package>/build/Release/elmo.node` (from lib/ and from dist/). */
export const addonPath = path.join(packageRoot, 'build', 'Release', 'elmo.node');

/** What {@link addonCandidates} looks at; every field defaults to this process and package. */
export interface AddonLookup {
  /** The package's folder. */
  root?: string;
  platform?: string;
  arch?: string;
  /** `'glibc'` or `'musl'` on Linux, `null` elsewhere; detected when absent. */
  libc?: string | null;
  env?: Record<string, string | undefined>;
  /** Folder of the installed `elmo-chat-cuda-<platform>-<arch>` package; `null`: none. Resolved when absent. */
  cudaPackageDir?: string | null;
}

/** One place an addon binary may be. */
export interface AddonCandidate {
  file: string;
  /** `env`: ELMO_ADDON; `build`: built from source; `prebuild-cuda` / `prebuild`: shipped prebuilt binaries. */
  kind: 'env' | 'build' | 'prebuild-cuda' | 'prebuild';
}

/** The package name in prebuilt file names (`elmo-chat.napi.glibc.node`). */
const PREBUILD_NAME = 'elmo-chat';

function detectLibc(platform: string): string | null {
  if (platform !== 'linux') return null;
  if (platform !== process.platform) return 'glibc';
  const report = process.report.getReport() as { header?: { glibcVersionRuntime?: string } };
  return report.header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

function cudaPackageFolder(root: string, platform: string, arch: string): string | null {
  try {
    return path.dirname(require.resolve(`elmo-chat-cuda-${platform}-${arch}/package.json`, { paths: [root] }));
  } catch {
    return null;
  }
}

function isOff(value: string | undefined): boolean {
  return value !== undefined && ['off', '0', 'false', 'no'].includes(value.trim().toLowerCase());
}

/** The candidates in order, computed lazily (libc detection and package lookup only when reached). */
function* candidates(lookup: AddonLookup): Generator<AddonCandidate> {
  const env = lookup.env ?? process.env;
  const explicit = env['ELMO_ADDON'];
  if (explicit) {
    yield { file: path.resolve(explicit), kind: 'env' };
    return;
  }
  const root = lookup.root ?? packageRoot;
  yield { file: path.join(root, 'build', 'Release', 'elmo.node'), kind: 'build' };
  const platform = lookup.platform ?? process.platform;
  const arch = lookup.arch ?? process.arch;
  const libc = lookup.libc !== undefined ? lookup.libc : detectLibc(platform);
  // Most specific first: the libc-tagged name, then an untagged one (any libc).
  const names = [...(libc ? [`${PREBUILD_NAME}.napi.${libc}.node`] : []), `${PREBUILD_NAME}.napi.node`];
  if (!isOff(env['ELMO_CUDA'])) {
    const dirs = [root];
    const companion =
      lookup.cudaPackageDir !== undefined ? lookup.cudaPackageDir : cudaPackageFolder(root, platform, arch);
    if (companion) dirs.push(companion);
    for (const dir of dirs) {
      for (const name of names)
        yield { file: path.join(dir, 'prebuilds', `${platform}-${arch}-cuda`, name), kind: 'prebuild-cuda' };
    }
  }
  for (const name of names) yield { file: path.join(root, 'prebuilds', `${platform}-${arch}`, name), kind: 'prebuild' };
}

/** Every place the loader looks for the addon, in the order it looks. */
export function addonCandidates(lookup: AddonLookup = {}): AddonCandidate[] {
  return [...candidates(lookup)];
}

/**
 * The addon binary to load: the first of {@link addonCandidates} that exists. Throws
 * {@link NativeLoadError} (`ERR_NATIVE_LOAD`) naming every place it looked and what to do.
 */
export function resolveAddon(lookup: AddonLookup = {}): AddonCandidate {
  const tried: string[] = [];
  for (const c of candidates(lookup)) {
    if (fs.existsSync(c.file)) return c;
    tried.push(c.file);
  }
  const env = lookup.env ?? process.env;
  if (env['ELMO_ADDON']) {
    throw new NativeLoadError(
      `ELMO_ADDON names ${tried[0] ?? ''}, which does not exist. Unset it to use the package's own addon, ` +
        'or point it at an elmo.node file.',
    );
  }
  const platform = lookup.platform ?? process.platform;
  const arch = lookup.arch ?? process.arch;
  const libc = lookup.libc !== undefined ? lookup.libc : detectLibc(platform);
  const target = `${platform}-${arch}${libc ? ` (${libc})` : ''}`;
  const supported = arch === 'x64' && platform !== 'win32';
  const what = supported
    ? 'Build one with `npm rebuild elmo-chat --build-from-source` (in a checkout of elmo-chat: `npm install`); ' +
      'it needs cmake >= 3.20 and a C++17 compiler.'
    : 'elmo-chat runs on x86-64 CPUs under Linux (prebuilt for linux-x64 with glibc): its native code uses ' +
      'x86-64 instructions (AVX2/AVX-512 chosen at run time, with a scalar fallback) and POSIX memory mapping, ' +
      `and does not build for ${platform}-${arch}.`;
  throw new NativeLoadError(
    `No native addon for ${target}: looked for ${tried.join(', ')}. ${what} See docs/install.md.`,
  );
}

function loadCandidate(chosen: AddonCandidate): NativeAddon {
  let addon: NativeAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(chosen.file) as NativeAddon;
  } catch (cause) {
    const why = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
    const what = chosen.kind.startsWith('prebuild')
      ? 'The prebuilt binary does not run on this system (it needs x86-64 Linux with glibc >= 2.33 and the ' +
        'libstdc++ of GCC >= 12): build one for it with `npm rebuild elmo-chat --build-from-source` (needs cmake >= 3.20 ' +
        'and a C++17 compiler), or set ELMO_ADDON to an elmo.node built elsewhere.'
      : 'Build it with `npm install` or `npm run build:addon` in a checkout of elmo-chat, or with ' +
        '`npm rebuild elmo-chat --build-from-source` where elmo-chat is a dependency (needs cmake >= 3.20 and a C++17 compiler).';
    throw new NativeLoadError(`Cannot load the native addon ${chosen.file} (${why ?? 'unknown error'}). ${what}`, {
      cause,
    });
  }
  addon.init(errorClasses, ElmoError);
  return addon;
}

/**
 * Loads an addon binary (`file`, or the one {@link resolveAddon} picks) and hands it the error
 * classes. Throws {@link NativeLoadError} (`ERR_NATIVE_LOAD`) when there is none or it cannot be
 * loaded, saying what was looked for and what to do.
 */
export function loadAddon(file?: string | AddonCandidate): NativeAddon {
  if (file === undefined) return loadCandidate(resolveAddon());
  return loadCandidate(typeof file === 'string' ? { file, kind: 'env' } : file);
}

let loadedFrom: string | undefined;

/** The file {@link native} loaded the addon from; undefined before the first load. */
export function nativeAddonFile(): string | undefined {
  return loadedFrom;
}

let loaded: NativeAddon | undefined;

/** The addon, loaded on first use. */
export function native(): NativeAddon {
  if (loaded === undefined) {
    const chosen = resolveAddon();
    loaded = loadCandidate(chosen);
    loadedFrom = chosen.file;
  }
  return loaded;
}
