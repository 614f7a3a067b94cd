/**
 * Training progress of `elmo finetune` on stderr: a live cli-progress bar (step, epoch, loss,
 * learning rate, sequences per second, ETA) when stderr is a terminal, else one plain line per
 * interval and one per evaluation, which reads well in CI logs and `nohup` files.
 */
import { MultiBar, Presets } from 'cli-progress';
import type { SingleBar } from 'cli-progress';

import type { EvalMetrics, FineTuneProgress } from '../train/fine-tune';
import type { CliIo } from './args';
import { fmt, headlineMetrics } from './report';

/** What {@link progressDisplay} hands to fineTune, and how to end it. */
export interface ProgressDisplay {
  onProgress: (p: FineTuneProgress) => void;
  /** FineTuneOptions.progressIntervalMs for this display. */
  intervalMs: number;
  /** Prints a line without breaking the bar. */
  log: (line: string) => void;
  /** Takes the bar down (idempotent). */
  stop: () => void;
}

/** `90s` -> `1m30s`. */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${String(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${String(m)}m${String(s % 60).padStart(2, '0')}s`;
  return `${String(Math.floor(m / 60))}h${String(m % 60).padStart(2, '0')}m`;
}

/** `accuracy 0.8125  macroF1 0.7900` */
export function metricsLine(m: EvalMetrics): string {
  return headlineMetrics(m)
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join('  ');
}

function trainLine(p: FineTuneProgress): string {
  return (
    `epoch ${String(p.epoch)}/${String(p.epochs)}  step ${String(p.step)}/${String(p.totalSteps)}  ` +
    `loss ${p.loss.toFixed(4)}  lr ${p.lr.toExponential(2)}  ${p.sequencesPerSecond.toFixed(0)} seq/s  ` +
    `eta ${duration(p.etaSeconds)}`
  );
}

/**
 * A progress display writing to `io` (lines) or to process.stderr (the bar, when `io.isTTY`).
 * `intervalSeconds`: how often a plain line is printed.
 */
export function progressDisplay(io: CliIo, intervalSeconds: number): ProgressDisplay {
  if (!io.isTTY) {
    return {
      intervalMs: intervalSeconds * 1000,
      onProgress: (p) => {
        if (p.phase === 'eval' && p.evalMetrics !== undefined) {
          io.error(`epoch ${String(p.epoch)}/${String(p.epochs)}  eval  ${metricsLine(p.evalMetrics)}`);
        } else if (p.phase === 'train') {
          io.error(trainLine(p));
        }
      },
      log: io.error,
      stop: () => undefined,
    };
  }
  const multi = new MultiBar(
    {
      stream: process.stderr,
      format:
        ' {bar} {percentage}% | step {value}/{total} | epoch {epoch}/{epochs} | loss {loss} | lr {lr} | {speed} seq/s | ETA {eta_text}',
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      fps: 10,
    },
    Presets.shades_classic,
  );
  let bar: SingleBar | undefined;
  let stopped = false;
  // MultiBar.log only buffers until the next redraw, and stop() drops the buffer: redraw now.
  const log = (line: string): void => {
    multi.log(`${line}\n`);
    multi.update();
  };
  return {
    intervalMs: 200,
    onProgress: (p) => {
      if (stopped) return;
      if (p.phase === 'eval') {
        if (p.evalMetrics !== undefined)
          log(`epoch ${String(p.epoch)}/${String(p.epochs)}  eval  ${metricsLine(p.evalMetrics)}`);
        return;
      }
      const payload = {
        epoch: p.epoch,
        epochs: p.epochs,
        loss: p.loss.toFixed(4),
        lr: p.lr.toExponential(2),
        speed: p.sequencesPerSecond.toFixed(0),
        eta_text: duration(p.etaSeconds),
      };
      bar ??= multi.create(p.totalSteps, 0, payload);
      bar.setTotal(p.totalSteps);
      bar.update(p.step, payload);
    },
    log: (line) => {
      if (stopped) io.error(line);
      else log(line);
    },
    stop: () => {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}
