#!/usr/bin/env node
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError, loadConfig } from './config/load.js';
import { AGENT_VERSION } from './version.js';

/** argv → config → agent → signals. Only this file (and the demo) call start(). */
function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port number 0–65535');
  return n;
}

const program = new Command()
  .name('outpost-agent')
  .description('Outpost edge inference agent: serves ONNX models over KServe v2 HTTP on this box.')
  .version(AGENT_VERSION, '-v, --version');

program
  .command('run')
  .description('serve the models in the model repository until stopped (SIGINT/SIGTERM)')
  .option('-c, --config <file>', 'YAML config file (default: none; see README "Configuration")')
  .option('--model-repository <dir>', 'Triton-style model repository (default: <data-dir>/models)')
  .option('--http-port <port>', 'HTTP port (default 8500)', port)
  .option('--http-host <host>', 'address to listen on (default 0.0.0.0)')
  .option('--data-dir <dir>', 'state directory (default ./data)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
  .addHelpText('after', '\nPrecedence: flags > OUTPOST_* environment > config file > defaults.\nExample: outpost-agent run --model-repository ./models/repository --http-port 8500')
  .action(async (opts: { config?: string; modelRepository?: string; httpPort?: number; httpHost?: string; dataDir?: string; logLevel?: string }) => {
    const flags: Record<string, unknown> = {};
    if (opts.modelRepository) flags.modelRepository = opts.modelRepository;
    if (opts.dataDir) flags.dataDir = opts.dataDir;
    if (opts.httpPort !== undefined || opts.httpHost) flags.http = { ...(opts.httpPort !== undefined ? { port: opts.httpPort } : {}), ...(opts.httpHost ? { host: opts.httpHost } : {}) };
    if (opts.logLevel) flags.log = { level: opts.logLevel };
    let config;
    try {
      config = loadConfig({ file: opts.config ?? process.env.OUTPOST_CONFIG, env: process.env, flags });
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`outpost-agent: ${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
    const lib = config.inference.runtimeLibraryPath;
    if (lib !== undefined) {
      if (!existsSync(path.join(lib, 'libonnxruntime.so.1'))) {
        process.stderr.write(`outpost-agent: inference.runtimeLibraryPath ${lib} has no libonnxruntime.so.1\n`);
        process.exit(2);
      }
      // The onnxruntime binding finds libonnxruntime.so.1 through RUNPATH $ORIGIN, which LD_LIBRARY_PATH
      // overrides; the loader reads it only at process start, so run the agent in a child that has it.
      if (!(process.env.LD_LIBRARY_PATH ?? '').split(':').includes(lib)) return reexecWithLibraryPath(lib);
    }
    // Imported here, after the check above, so a parent that re-executes never loads onnxruntime itself.
    const { createAgent } = await import('./agent.js');
    const agent = await createAgent(config);
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      agent.http.log.info({ signal }, 'stopping');
      agent.stop().then(() => process.exit(0), (err: unknown) => {
        process.stderr.write(`outpost-agent: error while stopping: ${String(err)}\n`);
        process.exit(1);
      });
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    try {
      await agent.start();
    } catch (err) {
      process.stderr.write(`outpost-agent: cannot start: ${(err as Error).message}\n`);
      await agent.stop().catch(() => undefined);
      process.exit(1);
    }
  });

program
  .command('enroll')
  .description('register this box with a fleet server using a one-time token, and save its credentials')
  .requiredOption('--fleet <url>', 'fleet server base URL, e.g. http://fleet.example:8080')
  .requiredOption('--token <token>', 'one-time enrollment token from the fleet operator')
  .option('--data-dir <dir>', 'state directory where the credentials are saved (default ./data)')
  .option('-c, --config <file>', 'YAML config file (its dataDir is used)')
  .option('--force', 'replace existing credentials (the box gets a new identity)')
  // Usage errors (a missing --fleet or --token, an unknown flag) exit 2 like config errors; help exits 0.
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
  .addHelpText('after', [
    '',
    'Saves <data-dir>/fleet-credentials.json (mode 0600); `outpost-agent run` then connects to the fleet.',
    'Exit codes: 0 enrolled, 1 fleet unreachable or server error, 2 usage/config error or already enrolled',
    '(without --force), 3 token refused (unknown, expired or already used).',
  ].join('\n'))
  .action(async (opts: { fleet: string; token: string; dataDir?: string; config?: string; force?: boolean }) => {
    const { runEnrollCommand } = await import('./link/enroll-command.js');
    const code = await runEnrollCommand(opts, {
      out: (line) => process.stdout.write(`${line}\n`),
      err: (line) => process.stderr.write(`${line}\n`),
    });
    process.exitCode = code;
  });

function reexecWithLibraryPath(lib: string): void {
  const env = { ...process.env, LD_LIBRARY_PATH: [lib, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') };
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { env, stdio: 'inherit' });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`outpost-agent: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
