#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { ConfigError, loadFleetConfig } from './config/load.js';
import { createFleet } from './fleet.js';
import { FLEET_VERSION } from './version.js';

/** argv → config → fleet → signals. Only this file calls start(). */
function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port number 0–65535');
  return n;
}

const program = new Command()
  .name('outpost-fleet')
  .description('Outpost fleet server: MQTT broker, device enrollment, model registry, telemetry and REST API.')
  .version(FLEET_VERSION, '-v, --version')
  // A bad flag is a configuration error like any other: exit 2 (help and --version still exit 0).
  .exitOverride();

program
  .command('run')
  .description('run the fleet server until stopped (SIGINT/SIGTERM)')
  .option('-c, --config <file>', 'YAML config file (default: none; see docs/fleet-api.md "Configuration")')
  .option('--http-port <port>', 'REST API port (default 8080)', port)
  .option('--mqtt-port <port>', 'embedded MQTT broker port (default 1883)', port)
  .option('--data-dir <dir>', 'state directory: fleet.db, admin token, signing key, artifacts (default ./data)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
  .addHelpText('after', '\nPrecedence: flags > OUTPOST_* environment > config file > defaults.\nExample: outpost-fleet run --data-dir /var/lib/outpost-fleet --http-port 8080')
  .action(async (opts: { config?: string; httpPort?: number; mqttPort?: number; dataDir?: string; logLevel?: string }) => {
    const flags: Record<string, unknown> = {};
    if (opts.dataDir) flags.dataDir = opts.dataDir;
    if (opts.httpPort !== undefined) flags.http = { port: opts.httpPort };
    if (opts.mqttPort !== undefined) flags.broker = { port: opts.mqttPort };
    if (opts.logLevel) flags.log = { level: opts.logLevel };
    let config;
    try {
      config = loadFleetConfig({ file: opts.config ?? process.env.OUTPOST_CONFIG, env: process.env, flags });
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`outpost-fleet: ${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
    let fleet;
    try {
      fleet = await createFleet(config);
    } catch (err) {
      process.stderr.write(`outpost-fleet: cannot open ${config.dataDir}: ${(err as Error).message}\n`);
      process.exit(1);
    }
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      fleet.http.log.info({ signal }, 'stopping');
      fleet.stop().then(() => process.exit(0), (err: unknown) => {
        process.stderr.write(`outpost-fleet: error while stopping: ${String(err)}\n`);
        process.exit(1);
      });
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    try {
      const urls = await fleet.start();
      process.stdout.write(
        `outpost-fleet ${FLEET_VERSION}\n` +
          `  REST API:    ${urls.httpUrl}/api/v1   (metrics: ${urls.httpUrl}/metrics)\n` +
          `  MQTT:        ${urls.mqttUrl}\n` +
          `  admin token: ${fleet.adminTokenFile}${fleet.adminTokenCreated ? ' (created now; send it as "Authorization: Bearer <token>")' : ''}\n`,
      );
    } catch (err) {
      process.stderr.write(`outpost-fleet: cannot start: ${(err as Error).message}\n`);
      await fleet.stop().catch(() => undefined);
      process.exit(1);
    }
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  process.stderr.write(`outpost-fleet: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
