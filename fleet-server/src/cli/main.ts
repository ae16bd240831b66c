#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { FLEET_VERSION } from '../version.js';
import { addGlobalOptions, DEFAULT_FLEET_URL, LOCAL_TOKEN_FILE, type CliIo } from './context.js';

export type { CliIo } from './context.js';
import { registerCommandCommands } from './commands.js';
import { registerDeviceCommands } from './devices.js';
import { CliError, EXIT } from './exit-codes.js';
import { registerTelemetryCommands } from './metrics.js';
import { registerModelCommands } from './models.js';
import { registerRolloutCommands } from './rollouts.js';

/** `outpost`, the operator CLI: argv → one REST call (or an upload) → text or --json on stdout → exit status. */

const HELP_FOOTER = `
Fleet server: --fleet, else $OUTPOST_FLEET_URL, else ${DEFAULT_FLEET_URL}.
Token: --token, else $OUTPOST_TOKEN, else the contents of ./${LOCAL_TOKEN_FILE} when that file exists
  (outpost-fleet writes its first operator token there, so on the fleet box itself outpost works
  without a token when run from the directory outpost-fleet was started in).
Every command takes --json: the server's JSON answer is printed unchanged.

Exit status:
  0  success
  1  server error (5xx) or the fleet server cannot be reached; a wait ended without an outcome
     (rollouts watch --timeout, a device command that timed out)
  2  usage error: unknown command or option, malformed argument, unreadable local file
  3  authentication or authorization refused (401/403)
  4  not found (404): no such device, model, version, rollout or command
  5  conflict (409): version already exists, model in use, device revoked, not allowed in the rollout's state;
     a watched rollout ended halted, aborted or rolled_back; a device command failed
  6  input refused by the server (400/413/415/416): invalid manifest, not ONNX, too large

Examples:
  T=$(outpost devices token --tags line=3,site=a --ttl 1h)
  outpost devices ls
  outpost models push model.onnx --name detector --version 2 --manifest manifest.json
  outpost models rm detector@1
  R=$(outpost rollouts create detector@2 --selector line=3 --stages 10,50,100 --max-failure 20% --probation 5m)
  outpost rollouts watch $R --timeout 1h
  outpost rollback --device line-3-cam detector
  outpost devices cmd line-3-cam diagnostics --wait
  outpost metrics --device line-3-cam --model detector --since 6h
Reference: docs/cli.md`;

/** The whole command tree (exported for the docs test, which checks docs/cli.md covers it). */
export function buildProgram(io: CliIo): Command {
  const program = new Command()
    .name('outpost')
    .description('Outpost operator CLI: devices, models, rollouts and telemetry of an Outpost fleet server.')
    .version(FLEET_VERSION, '-v, --version')
    // Program options only before the command, so `models push --version 2` is the model's version.
    .enablePositionalOptions()
    .exitOverride()
    .showHelpAfterError('(run outpost --help for usage)')
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: (s, write) => write(`outpost: ${s.replace(/^error: /, '')}`),
    })
    .addHelpText('after', HELP_FOOTER);
  addGlobalOptions(program);
  registerCommandCommands(registerDeviceCommands(program, io), io);
  registerModelCommands(program, io);
  registerRolloutCommands(program, io);
  registerTelemetryCommands(program, io);
  return program;
}

/** Runs one command line (without "node outpost") and resolves with the exit status; never exits the process. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  try {
    await buildProgram(io).parseAsync(argv, { from: 'user' });
    return EXIT.OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; a group without a command printed its help on stderr; errors were printed.
      return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    }
    if (err instanceof CliError) {
      io.stderr.write(`outpost: ${err.message}\n`);
      return err.exitCode;
    }
    io.stderr.write(`outpost: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    return EXIT.FAILURE;
  }
}

/** True when this module is the program (node …/cli/main.js) or was imported by bin/outpost.js, not by a test. */
function invokedAsProgram(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  let real: string;
  try {
    real = realpathSync(script);
  } catch {
    return false;
  }
  return real === fileURLToPath(import.meta.url) || (path.basename(real) === 'outpost.js' && path.basename(path.dirname(real)) === 'bin');
}

if (invokedAsProgram()) {
  // `outpost devices ls | head -1` closes the pipe early; that is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
  runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() }).then((code) => {
    process.exitCode = code;
  });
}
