/**
 * `elmo prune`: {@link prune} from the command line. A fine-tuned classifier loses the least
 * important share of its attention heads (`--heads`, measured by ablation on a sample of
 * `--data`) and of its FFN neurons (`--ffn`, by weight magnitude), is fine-tuned on `--data`
 * for `--recover-epochs` epochs, and is saved to `--out` with `prune.json` (the PruneResult
 * without the model, plus `command` and `machine`). With `--eval`, accuracy before pruning,
 * after pruning and after recovery.
 */
import * as path from 'node:path';

import { Command, InvalidArgumentError, Option } from 'commander';

import { Bert } from '../bert';
import type { BertRunOptions } from '../bert';
import type { DeviceRequest } from '../devices';
import { prune } from '../prune';
import type { PruneResult } from '../prune';
import type { FineTuneOptions } from '../train/fine-tune';
import type { CliIo } from './args';
import { configureCommand, deviceOption, integer, interruptible, number } from './args';
import { commandLine, machine, modelSummary, writeFileAtomic } from './finetune';
import { metricsLine, progressDisplay } from './progress';

/** Flags of `elmo prune`, as commander hands them over. */
interface PruneFlags {
  model: string;
  data: string;
  eval?: string;
  out: string;
  heads: number;
  ffn: number;
  recoverEpochs: number;
  importanceExamples: number;
  minHeadsPerLayer: number;
  lr?: number;
  batchSize?: number;
  seed: number;
  json?: boolean;
  device: DeviceRequest;
  threads?: number;
  maxSeqLen?: number;
  progressInterval: number;
}

/** Adds `elmo prune`. */
export function addPruneCommand(program: Command, io: CliIo, argv: readonly string[]): void {
  const cmd = new Command('prune')
    .description(
      'prune attention heads (by ablation) and FFN neurons (by weight magnitude) of a fine-tuned classifier, ' +
        'recover with a short fine-tune, save the model and prune.json',
    )
    .requiredOption('--model <DIR>', 'the fine-tuned classifier')
    .requiredOption(
      '--data <FILE>',
      'labelled training examples (.jsonl/.json/.csv/.tsv): head importance and recovery',
    )
    .option('--eval <FILE>', 'labelled examples for accuracy before, after pruning and after recovery')
    .requiredOption('--out <DIR>', 'where the pruned model goes')
    .addOption(
      new Option('--heads <FRACTION>', 'share of all attention heads to prune, in [0, 1)').argParser(share).default(0),
    )
    .addOption(
      new Option('--ffn <FRACTION>', "share of each layer's FFN neurons to prune, in [0, 1)")
        .argParser(share)
        .default(0),
    )
    .option('--recover-epochs <N>', 'epochs of the recovery fine-tune (0: none)', integer(0), 1)
    .option('--importance-examples <N>', 'examples of --data the head importance is measured on', integer(1), 1000)
    .option('--min-heads-per-layer <N>', 'heads every layer keeps', integer(1), 1)
    .option('--lr <RATE>', "recovery learning rate (default: fineTune's for the model's width)", number(0, 1, true))
    .option('--batch-size <N>', 'recovery batch size (default 32)', integer(1))
    .option('--seed <N>', 'sample and data-order seed', integer(0), 42)
    .option('--json', 'print prune.json instead of the summary')
    .addOption(deviceOption())
    .option('--threads <N>', 'CPU threads', integer(1))
    .option('--max-seq-len <N>', "longest sequence in tokens (default: the model's)", integer(3))
    .option('--progress-interval <S>', 'seconds between progress lines when stderr is not a terminal', integer(1), 10)
    .action(async (f: PruneFlags) => {
      await runPrune(f, io, argv);
    });
  program.addCommand(configureCommand(cmd, io));
}

/** A share in [0, 1): 1 would prune everything. */
function share(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n >= 1) {
    throw new InvalidArgumentError(`expects a number in [0, 1), got '${value}'`);
  }
  return n;
}

async function runPrune(f: PruneFlags, io: CliIo, argv: readonly string[]): Promise<void> {
  const run: BertRunOptions = {
    device: f.device,
    ...(f.threads !== undefined ? { threads: f.threads } : {}),
    ...(f.maxSeqLen !== undefined ? { maxSeqLen: f.maxSeqLen } : {}),
  };
  const model = await Bert.load(f.model, run);
  const display = progressDisplay(io, f.progressInterval);
  const interrupt = interruptible(() => {
    display.log('elmo prune: stopping after this step (Ctrl-C again to quit now)');
  });
  let result: PruneResult | undefined;
  try {
    const recover: Omit<FineTuneOptions, 'epochs' | 'onProgress'> = {
      ...(f.lr !== undefined ? { learningRate: f.lr } : {}),
      ...(f.batchSize !== undefined ? { batchSize: f.batchSize } : {}),
      progressIntervalMs: display.intervalMs,
      signal: interrupt.signal,
    };
    let lastImportance = 0;
    result = await prune(model, {
      data: f.data,
      ...(f.eval !== undefined ? { evalSet: f.eval } : {}),
      heads: f.heads,
      ffn: f.ffn,
      recoverEpochs: f.recoverEpochs,
      importanceExamples: f.importanceExamples,
      minHeadsPerLayer: f.minHeadsPerLayer,
      seed: f.seed,
      runOptions: run,
      recover,
      onProgress: (p) => {
        if (p.phase === 'recover') display.onProgress(p.fineTune);
        else if (p.phase === 'evaluate') display.log(`elmo prune: evaluating (${p.stage})`);
        else if (p.done === p.total || performance.now() - lastImportance > f.progressInterval * 1000) {
          lastImportance = performance.now();
          display.log(`elmo prune: head importance ${String(p.done)}/${String(p.total)}`);
        }
      },
    });
    display.stop();
    await result.model.save(f.out);
    const { model: pruned, ...rest } = result;
    const report = {
      ...rest,
      source: f.model,
      modelBefore: modelSummary(model.config),
      modelAfter: modelSummary(pruned.config),
      command: commandLine(argv),
      machine: machine(),
    };
    const reportFile = path.join(f.out, 'prune.json');
    writeFileAtomic(reportFile, `${JSON.stringify(report, null, 1)}\n`);
    if (f.json === true) io.write(JSON.stringify(report, null, 2));
    else for (const line of summary(result, f.out, reportFile)) io.write(line);
  } finally {
    display.stop();
    interrupt.dispose();
    result?.model.dispose();
    model.dispose();
  }
}

function summary(r: PruneResult, out: string, reportFile: string): string[] {
  const heads = Object.entries(r.heads)
    .map(([l, hs]) => `${l}: ${hs.join(' ')}`)
    .join(', ');
  const lines = [
    `heads     ${String(r.headsPruned)}/${String(r.headsTotal)} pruned${heads !== '' ? ` (layer ${heads})` : ''}`,
    `ffn       intermediate_size ${String(r.intermediateSize.before)} -> ${String(r.intermediateSize.after)}`,
    `params    ${String(r.parameters.before)} -> ${String(r.parameters.after)}`,
  ];
  if (r.recovery !== undefined) {
    lines.push(
      `recovery  ${String(r.recovery.epochs)} epochs, ${String(r.recovery.steps)} steps in ${r.recovery.seconds.toFixed(1)} s`,
    );
  }
  if (r.eval !== undefined) {
    lines.push(`before    ${metricsLine(r.eval.before)}`, `pruned    ${metricsLine(r.eval.pruned)}`);
    if (r.eval.recovered !== undefined) lines.push(`recovered ${metricsLine(r.eval.recovered)}`);
  }
  lines.push(`model     ${out}`, `report    ${reportFile}`);
  return lines;
}
