#!/usr/bin/env node
/**
 * The `elmo` command line. For now: `elmo info [--json]` prints the devices, the CPU kernel
 * path and threads, and how the addon was built.
 */
import { ElmoError } from './errors';
import { native } from './native';

const USAGE = `Usage: elmo <command>

Commands:
  info [--json]   devices, CPU ISA and threads, build flags
  help            this text
`;

function info(json: boolean, write: (line: string) => void): void {
  const addon = native();
  const devices = addon.devices();
  const build = addon.buildInfo();
  if (json) {
    write(JSON.stringify({ devices, build, backend: addon.cpuBackendName() }, null, 2));
    return;
  }
  write(`elmo-chat`);
  write(`  build:    ${build.flags} (${build.compiler}, N-API ${String(build.napiVersion)})`);
  write(`  cpu:      ${devices.cpu.isa} kernels (best ${devices.cpu.bestIsa}), ${String(devices.cpu.threads)} threads`);
  write(`  features: ${devices.cpu.features.length > 0 ? devices.cpu.features.join(' ') : '(none)'}`);
  if (devices.cuda.available) {
    for (const d of devices.cuda.devices) {
      const gib = (d.memoryBytes / 2 ** 30).toFixed(1);
      write(`  cuda:${String(d.index)}:   ${d.name}, ${gib} GiB, sm_${d.computeCapability.replace('.', '')}`);
    }
  } else {
    write(`  cuda:     unavailable (${devices.cuda.reason ?? 'unknown reason'})`);
  }
}

/** Runs the CLI; returns the exit code. `write` receives stdout lines, `error` stderr lines. */
export function runCli(
  argv: readonly string[],
  write: (line: string) => void = (l) => void process.stdout.write(`${l}\n`),
  error: (line: string) => void = (l) => void process.stderr.write(`${l}\n`),
): number {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'info': {
        const unknown = rest.filter((a) => a !== '--json');
        if (unknown.length > 0) {
          error(`elmo info: unknown option ${unknown[0] ?? ''}`);
          return 2;
        }
        info(rest.includes('--json'), write);
        return 0;
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        write(USAGE.trimEnd());
        return command === undefined ? 2 : 0;
      default:
        error(`elmo: unknown command '${command}'\n\n${USAGE.trimEnd()}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ElmoError) {
      error(`elmo: ${err.code}: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

if (require.main === module) {
  process.exitCode = runCli(process.argv.slice(2));
}
