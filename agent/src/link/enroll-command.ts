import { existsSync } from 'node:fs';
import { ConfigError, loadConfig } from '../config/load.js';
import { credentialsPath, saveCredentials } from './credentials.js';
import { enroll, EnrollError } from './enroll.js';

/** Exit codes of `outpost-agent enroll` (documented in its --help). */
export const ENROLL_EXIT = { ok: 0, network: 1, usage: 2, tokenRefused: 3 } as const;

export interface EnrollCommandOptions {
  fleet: string;
  token: string;
  dataDir?: string;
  config?: string;
  force?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  fetch?: typeof fetch;
  timeoutMs?: number;
}

export interface CommandIo {
  out(line: string): void;
  err(line: string): void;
}

/**
 * `outpost-agent enroll`: trades a one-time token for device credentials and saves them in the data dir.
 * Existing credentials are checked BEFORE the token is spent, so a mistaken re-run does not burn a token.
 * Returns the exit code; main.ts exits with it.
 */
export async function runEnrollCommand(options: EnrollCommandOptions, io: CommandIo): Promise<number> {
  if (options.token.trim() === '') {
    io.err('outpost-agent enroll: --token must not be empty');
    return ENROLL_EXIT.usage;
  }
  let dataDir: string;
  try {
    const env = options.env ?? process.env;
    const config = loadConfig({ file: options.config ?? env.OUTPOST_CONFIG, env, flags: options.dataDir ? { dataDir: options.dataDir } : {}, cwd: options.cwd });
    dataDir = config.dataDir;
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`outpost-agent enroll: ${err.message}`);
      return ENROLL_EXIT.usage;
    }
    throw err;
  }
  const file = credentialsPath(dataDir);
  if (existsSync(file) && !options.force) {
    io.err(`outpost-agent enroll: this box is already enrolled (${file}); pass --force to replace its credentials with new ones`);
    return ENROLL_EXIT.usage;
  }
  try {
    const enrollment = await enroll({ fleetUrl: options.fleet, token: options.token, fetch: options.fetch, timeoutMs: options.timeoutMs });
    const saved = saveCredentials(dataDir, { ...enrollment, enrolledAt: new Date().toISOString() });
    io.out(`enrolled as device ${enrollment.deviceId}`);
    io.out(`credentials saved to ${saved} (mode 0600); the agent connects to ${enrollment.mqttUrl} on its next start`);
    return ENROLL_EXIT.ok;
  } catch (err) {
    if (err instanceof EnrollError) {
      io.err(`outpost-agent enroll: ${err.message}`);
      return err.kind === 'usage' ? ENROLL_EXIT.usage : err.kind === 'token-refused' ? ENROLL_EXIT.tokenRefused : ENROLL_EXIT.network;
    }
    io.err(`outpost-agent enroll: cannot save the credentials: ${(err as Error).message}`);
    return ENROLL_EXIT.network;
  }
}
