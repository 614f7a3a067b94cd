/**
 * `elmo keys create|list|revoke --keys FILE`: the API keys of `elmo serve` (lib/serve/auth.ts).
 * A new key is printed once, on stdout (a note goes to stderr, so `KEY=$(elmo keys create ...)`
 * holds just the key); the file keeps only its sha256 hash. A running server picks up changes to
 * the file within a second.
 */
import { Command, InvalidArgumentError, Option } from 'commander';

import { SCOPES, createKey, readKeyFile, revokeKey } from '../serve/auth';
import type { RateLimit, Scope } from '../serve/auth';
import type { CliIo } from './args';
import { UsageError, configureCommand, integer, number, usageError } from './args';

/** `predict,feedback` to scopes. */
function scopeList(value: string): Scope[] {
  const list = value.split(',').map((s) => s.trim());
  if (list.length === 0 || list.some((s) => !(SCOPES as readonly string[]).includes(s))) {
    throw new InvalidArgumentError(`expects a comma-separated list of ${SCOPES.join(', ')}, got '${value}'`);
  }
  return [...new Set(list as Scope[])];
}

/** A subcommand of `elmo keys`, reporting its usage errors as `elmo keys <name>: ...`. */
function subcommand(cmd: Command, io: CliIo): Command {
  configureCommand(cmd, io);
  const config = cmd.configureOutput();
  const outputError = config.outputError?.bind(config);
  if (outputError !== undefined) {
    cmd.configureOutput({
      outputError: (s, write) => {
        outputError(s, (t) => write(t.replace(/^elmo /, 'elmo keys ')));
      },
    });
  }
  return cmd;
}

interface CreateFlags {
  keys: string;
  scopes: Scope[];
  id?: string;
  rps?: number;
  burst?: number;
  json?: boolean;
}

/** Adds `elmo keys` with its subcommands `create`, `list` and `revoke`. */
export function addKeysCommand(program: Command, io: CliIo): void {
  const keys = new Command('keys').description(
    'API keys of elmo serve: create (printed once, only its hash stored), list, revoke',
  );
  configureCommand(keys, io);

  const create: Command = new Command('create')
    .description('make a key with scopes (and an optional rate limit), add its hash to the key file, print the key')
    .requiredOption('--keys <FILE>', 'the key file (created when missing)')
    .addOption(
      new Option('--scopes <LIST>', `comma-separated: ${SCOPES.join(', ')}`).argParser(scopeList).makeOptionMandatory(),
    )
    .option('--id <ID>', 'the key id (letters, digits, dashes; default k + 8 random hex digits)')
    .option('--rps <N>', 'rate limit: requests per second on average', number(0, Infinity, true))
    .option('--burst <N>', 'rate limit: requests at once (default: --rps rounded up)', integer(1))
    .option('--json', 'print {id, key, scopes, rateLimit} as JSON')
    .action((flags: CreateFlags) => {
      if (flags.burst !== undefined && flags.rps === undefined)
        usageError(create, new UsageError('--burst needs --rps'));
      const rateLimit: RateLimit | undefined =
        flags.rps === undefined
          ? undefined
          : { rps: flags.rps, burst: flags.burst ?? Math.max(1, Math.ceil(flags.rps)) };
      const { key, record } = createKey(flags.keys, {
        scopes: flags.scopes,
        ...(flags.id !== undefined ? { id: flags.id } : {}),
        ...(rateLimit !== undefined ? { rateLimit } : {}),
      });
      if (flags.json === true) {
        io.write(JSON.stringify({ id: record.id, key, scopes: record.scopes, rateLimit: record.rateLimit ?? null }));
      } else {
        io.write(key);
      }
      io.error(
        `elmo keys create: key '${record.id}' (scopes ${record.scopes.join(', ')}${rateLimitText(record.rateLimit)}) ` +
          `added to ${flags.keys}; this is the only time the key is shown, the file keeps its hash`,
      );
    });

  const list = new Command('list')
    .description('the keys of the file: id, scopes, rate limit, created, revoked (never the keys)')
    .requiredOption('--keys <FILE>', 'the key file')
    .option('--json', 'one JSON object per line (without the hashes)')
    .action((flags: { keys: string; json?: boolean }) => {
      const data = readKeyFile(flags.keys);
      for (const k of data.keys) {
        if (flags.json === true) {
          io.write(JSON.stringify({ ...k, hash: undefined }));
        } else {
          const state = k.revoked === true ? `revoked ${k.revokedAt ?? ''}`.trim() : 'active';
          io.write(
            `${k.id}\t${k.scopes.join(',')}\t${rateLimitText(k.rateLimit).replace(/^, /, '') || '-'}\t${k.createdAt}\t${state}`,
          );
        }
      }
    });

  const revoke = new Command('revoke')
    .description('revoke a key by id (kept in the file, marked revoked; a running server refuses it within a second)')
    .argument('<ID>', 'the key id')
    .requiredOption('--keys <FILE>', 'the key file')
    .action((id: string, flags: { keys: string }) => {
      const record = revokeKey(flags.keys, id);
      io.error(`elmo keys revoke: key '${record.id}' revoked in ${flags.keys}`);
    });

  for (const sub of [create, list, revoke]) keys.addCommand(subcommand(sub, io));
  program.addCommand(keys);
}

function rateLimitText(r: RateLimit | undefined): string {
  return r === undefined ? '' : `, ${String(r.rps)}/s burst ${String(r.burst)}`;
}
