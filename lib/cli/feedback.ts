/**
 * `elmo feedback export` and `elmo feedback import`: the feedback of a chat store
 * ({@link openStore}) as JSON lines, one stored feedback per line, to move it between stores
 * (production SQLite to a training machine, SQLite to Postgres), back it up, or read it.
 *
 *   elmo feedback export --store URL [--since ISO] [--out FILE|-]
 *   elmo feedback import --store URL FILE|-
 *
 * `--store` defaults to the ELMO_STORE environment variable. An export to a file is written
 * next to it and renamed into place, so a failed export leaves the old file or none; an import
 * is one transaction, so a bad line imports nothing, and feedback already in the store is
 * skipped. Store failures are ElmoErrors (exit 1); unreadable files and bad flags are usage
 * errors (exit 2).
 */
import * as fs from 'node:fs';
import * as readline from 'node:readline';

import { Command, InvalidArgumentError, Option } from 'commander';

import { isoTime, openStore } from '../chat/store';
import { InputError } from '../errors';
import type { CliIo } from './args';
import { UsageError, configureCommand, usageError } from './args';

interface ExportFlags {
  store: string;
  since?: string;
  out: string;
}

interface ImportFlags {
  store: string;
}

const STORE_HELP = 'the store: a SQLite file, sqlite:PATH, or postgres://user:pass@host:port/db';

/** `--since`: an ISO 8601 time, normalized. */
function since(value: string): string {
  try {
    return isoTime(value, '--since');
  } catch {
    throw new InvalidArgumentError(
      `expects an ISO 8601 time such as 2025-01-31 or 2025-01-31T12:00:00Z, got '${value}'`,
    );
  }
}

function storeOption(): Option {
  return new Option('--store <URL>', STORE_HELP).env('ELMO_STORE').makeOptionMandatory();
}

/**
 * Like {@link configureCommand}, for a subcommand of `feedback`: its messages start with
 * `elmo feedback <name>:` rather than `elmo <name>:`.
 */
function configureSubcommand(cmd: Command, io: CliIo): Command {
  configureCommand(cmd, io);
  // configureOutput() merges into the object it returns: keep the function, not the object.
  const previous = cmd.configureOutput().outputError?.bind(undefined);
  const prefix = `elmo ${cmd.name()}: `;
  return cmd.configureOutput({
    outputError: (s, write) => {
      const rewrite = (t: string): void => {
        write(t.startsWith(prefix) ? `elmo feedback ${t.slice('elmo '.length)}` : t);
      };
      if (previous) previous(s, rewrite);
      else rewrite(s);
    },
  });
}

/** Adds `elmo feedback export` and `elmo feedback import`; `stdin` is what `-` reads. */
export function addFeedbackCommand(program: Command, io: CliIo, stdin: NodeJS.ReadableStream = process.stdin): void {
  const feedback = new Command('feedback').description(
    'move the feedback of a chat store in and out as JSON lines (export, import)',
  );

  const exportCmd = new Command('export')
    .description('write every stored feedback as one JSON line: {id, conversationId, turn, text, intent?, ...}')
    .addOption(storeOption())
    .option('--since <ISO>', 'only feedback created at or after this time', since)
    .option('--out <FILE>', 'where to write, - for stdout', '-')
    .addHelpText(
      'after',
      `
Examples:
  elmo feedback export --store data/chat.db --since 2025-06-01 --out june.jsonl
  ELMO_STORE=postgres://elmo@db/chat elmo feedback export > all.jsonl`,
    )
    .action(async (flags: ExportFlags) => {
      await runExport(flags, io, exportCmd);
    });

  const importCmd = new Command('import')
    .description('add the feedback of an export (one transaction; feedback already in the store is skipped)')
    .addOption(storeOption())
    .argument('<FILE>', 'JSON lines of `elmo feedback export`, - for stdin')
    .addHelpText(
      'after',
      `
Examples:
  elmo feedback import --store postgres://elmo@db/chat june.jsonl
  ssh prod 'elmo feedback export --store /srv/chat.db' | elmo feedback import --store train.db -`,
    )
    .action(async (file: string, flags: ImportFlags) => {
      await runImport(file, flags, io, stdin, importCmd);
    });

  feedback.addCommand(configureSubcommand(exportCmd, io));
  feedback.addCommand(configureSubcommand(importCmd, io));
  program.addCommand(configureCommand(feedback, io));
}

async function runExport(flags: ExportFlags, io: CliIo, cmd: Command): Promise<void> {
  const options = flags.since !== undefined ? { since: flags.since } : {};
  if (flags.out === '-') {
    const store = await openStore(flags.store);
    try {
      const n = await store.exportFeedback((line) => io.write(line), options);
      io.error(`elmo feedback export: ${lines(n)}`);
    } finally {
      await store.close();
    }
    return;
  }
  const out = flags.out;
  const tmp = `${out}.tmp-${String(process.pid)}-${Math.random().toString(36).slice(2)}`;
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(tmp, 'w');
  } catch (err) {
    usageError(cmd, new UsageError(`cannot write --out ${out}: ${(err as Error).message}`));
  }
  let done = false;
  try {
    const store = await openStore(flags.store);
    let n: number;
    try {
      // Lines are gathered into chunks of about 64 KiB per write.
      let chunk = '';
      n = await store.exportFeedback(async (line) => {
        chunk += `${line}\n`;
        if (chunk.length >= 65536) {
          const text = chunk;
          chunk = '';
          await handle.write(text);
        }
      }, options);
      if (chunk !== '') await handle.write(chunk);
    } finally {
      await store.close();
    }
    await handle.close();
    await fs.promises.rename(tmp, out);
    done = true;
    io.write(`exported ${lines(n)} to ${out}`);
  } finally {
    if (!done) {
      await handle.close().catch(() => undefined);
      await fs.promises.rm(tmp, { force: true });
    }
  }
}

async function runImport(
  file: string,
  flags: ImportFlags,
  io: CliIo,
  stdin: NodeJS.ReadableStream,
  cmd: Command,
): Promise<void> {
  if (file !== '-') {
    try {
      if (!fs.statSync(file).isFile()) throw new Error('not a file');
      fs.accessSync(file, fs.constants.R_OK);
    } catch (err) {
      usageError(cmd, new UsageError(`cannot read ${file}: ${(err as Error).message}`));
    }
  }
  const store = await openStore(flags.store);
  const input = file === '-' ? stdin : fs.createReadStream(file, { encoding: 'utf8' });
  const rl = readline.createInterface({ input, crlfDelay: Infinity });
  try {
    const { imported, skipped } = await store.importFeedback(rl);
    io.write(`imported ${lines(imported)}, skipped ${String(skipped)} already in the store`);
  } catch (err) {
    // "line 3: ..." from the store: say which file.
    if (err instanceof InputError && err.message.startsWith('line ')) {
      throw new InputError(`${file === '-' ? 'stdin' : file}: ${err.message}`);
    }
    throw err;
  } finally {
    rl.close();
    await store.close();
  }
}

function lines(n: number): string {
  return `${String(n)} feedback ${n === 1 ? 'line' : 'lines'}`;
}
