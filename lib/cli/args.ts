/**
 * What every `elmo` command shares: where output goes, how usage errors read, and the option
 * value parsers handed to commander (each throws commander's InvalidArgumentError with a
 * message that starts after the flag's name, e.g. "expects a positive integer, got '0'").
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';

/** Where a command writes: stdout and stderr lines, and whether stderr is a terminal. */
export interface CliIo {
  write: (line: string) => void;
  error: (line: string) => void;
  /** stderr is a terminal: live progress bars instead of log lines. */
  isTTY: boolean;
}

/** A usage problem found after commander's parsing: exit code 2, the command's help after it. */
export class UsageError extends Error {}

/** Exit code of a usage error. */
export const USAGE_EXIT = 2;

/**
 * Makes `cmd` report through `io` as `elmo <name>: <message>` followed by its help, and throw
 * instead of exiting; applied to the program and to each subcommand. Subcommands are made with
 * `new Command()` and `addCommand()`: `program.command()` would share the program's output
 * settings object, so the last command configured would speak for all.
 */
export function configureCommand(cmd: Command, io: CliIo): Command {
  const name = (): string => (cmd.parent === null ? 'elmo' : `elmo ${cmd.name()}`);
  return cmd.exitOverride().configureOutput({
    writeOut: (s) => io.write(s.replace(/\n$/, '')),
    writeErr: (s) => io.error(s.replace(/\n$/, '')),
    outputError: (s, write) => write(`${name()}: ${usageMessage(s.trim())}\n\n${cmd.helpInformation()}`),
  });
}

/** commander's messages in this CLI's words ("--text needs a value", "--model DIR is required"). */
function usageMessage(message: string): string {
  const m = message.replace(/^error: /, '');
  const flag = "option '(?:-\\w, )?(--[\\w-]+)(?: [<[](\\w+)[>\\]])?'";
  const missing = new RegExp(`^${flag} argument missing$`).exec(m);
  if (missing) return `${missing[1] ?? ''} needs a value`;
  const required = new RegExp(`^required ${flag} not specified$`).exec(m);
  if (required) return `${required[1] ?? ''} ${required[2] ?? ''} is required`;
  const invalid = new RegExp(`^${flag} argument '.*' is invalid\\. (.*)$`, 's').exec(m);
  if (invalid) return `${invalid[1] ?? ''} ${invalid[3] ?? ''}`;
  const unknown = /^unknown option '([^']*)'(.*)$/s.exec(m);
  if (unknown) return `unknown option ${unknown[1] ?? ''}${unknown[2] ?? ''}`;
  return m;
}

/** Reports a {@link UsageError} found in an action through commander (exit code 2). */
export function usageError(cmd: Command, err: UsageError): never {
  cmd.error(err.message, { exitCode: USAGE_EXIT, code: 'elmo.usage' });
}

/** The exit code of a CommanderError: 0 for help and version, else 2 (a usage problem). */
export function commanderExitCode(err: CommanderError): number {
  const shown = err.code === 'commander.helpDisplayed' || err.code === 'commander.version';
  if (shown || (err.code === 'commander.help' && err.exitCode === 0)) return 0;
  return USAGE_EXIT;
}

// ---- value parsers -------------------------------------------------------------------------------

/** An integer >= `min`. */
export function integer(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isSafeInteger(n) || n < min) {
      const what = min === 1 ? 'a positive integer' : `an integer >= ${String(min)}`;
      throw new InvalidArgumentError(`expects ${what}, got '${value}'`);
    }
    return n;
  };
}

/** A finite number in [min, max] (or the open interval where `open`). */
export function number(min: number, max: number, open = false): (value: string) => number {
  return (value) => {
    const n = Number(value);
    const inside = open ? n > min && n < max : n >= min && n <= max;
    if (value.trim() === '' || !Number.isFinite(n) || !inside) {
      const range = open ? `(${String(min)}, ${String(max)})` : `[${String(min)}, ${String(max)}]`;
      throw new InvalidArgumentError(`expects a number in ${range.replace('Infinity', 'inf')}, got '${value}'`);
    }
    return n;
  };
}

/** One of `choices`. */
export function choice<T extends string>(choices: readonly T[]): (value: string) => T {
  return (value) => {
    if (!(choices as readonly string[]).includes(value)) {
      const list = choices.map((c) => `'${c}'`);
      const words = list.length === 2 ? list.join(' or ') : `${list.slice(0, -1).join(', ')} or ${list.at(-1) ?? ''}`;
      throw new InvalidArgumentError(`expects ${words}, got '${value}'`);
    }
    return value as T;
  };
}

/** `--device auto|cpu|cuda`, shared by the model commands. */
export function deviceOption(): Option {
  return new Option('--device <DEVICE>', 'auto, cpu or cuda')
    .argParser(choice(['auto', 'cpu', 'cuda']))
    .default('auto');
}

/** `--precision fp32|bf16|int8`: `Bert.load`'s `precision` (int8: dynamic quantization, CPU only). */
export function precisionOption(): Option {
  return new Option('--precision <P>', 'matrix products: fp32, bf16 or int8 (int8: dynamic quantization, CPU only)')
    .argParser(choice(['fp32', 'bf16', 'int8']))
    .default('fp32');
}

/** Repeated option: every value, in order. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/**
 * Ctrl-C for a long-running command: the first aborts `signal` (the run stops after its current
 * step with ERR_ABORTED, `message` logged when given), the second quits at once (exit 130).
 * `dispose()` removes the handler.
 */
export function interruptible(log?: () => void): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts += 1;
    if (interrupts > 1) process.exit(130);
    log?.();
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  return { signal: controller.signal, dispose: () => process.off('SIGINT', onSigint) };
}
