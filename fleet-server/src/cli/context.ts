import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { FleetApi } from './client.js';
import { usageError } from './exit-codes.js';
import { Output, type OutputStream } from './output.js';

/** Everything the CLI touches outside itself; runCli gets the real process's, tests their own. */
export interface CliIo {
  stdout: OutputStream;
  stderr: OutputStream;
  env: Record<string, string | undefined>;
  /** Where `data/admin-token` is looked for. */
  cwd: string;
  /** Default: the global fetch (undici). */
  fetch?: typeof fetch;
  /** Wall clock in ms, for `--since 1h` and "5m ago" (default Date.now). */
  now?: () => number;
  /** Waits between polls (`rollouts watch`, `devices cmd --wait`); a test pairs it with `now` as a fake clock. */
  sleep?: (ms: number) => Promise<void>;
}

export const DEFAULT_FLEET_URL = 'http://127.0.0.1:8080';
/** Where `outpost-fleet` writes the first operator token, relative to its working directory (data dir ./data). */
export const LOCAL_TOKEN_FILE = path.join('data', 'admin-token');

const MISSING_TOKEN_HINT = `no token given: pass --token, set OUTPOST_TOKEN, or run outpost where ./${LOCAL_TOKEN_FILE} exists`;

/** --fleet, --token and --json, accepted by the program and by every command (before or after its arguments). */
export function addGlobalOptions(cmd: Command): Command {
  return cmd
    .option('--fleet <url>', `fleet server URL (env OUTPOST_FLEET_URL, default ${DEFAULT_FLEET_URL})`)
    .option('--token <token>', `operator API token (env OUTPOST_TOKEN, default: the contents of ./${LOCAL_TOKEN_FILE} if it exists)`)
    .option('--json', "print the server's JSON answer unchanged instead of text");
}

export interface ActionContext {
  api: FleetApi;
  out: Output;
  io: CliIo;
  /** The command's own options (commander's camelCase keys). */
  opts: Record<string, unknown>;
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Options of the command and its ancestors; the command's own win over the program's. */
function mergedOptions(cmd: Command): Record<string, unknown> {
  const chain: Command[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) chain.unshift(c);
  return Object.assign({}, ...chain.map((c) => c.opts()));
}

function resolveFleetUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw usageError(`--fleet expects a URL such as ${DEFAULT_FLEET_URL}, not "${raw}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usageError(`--fleet must be an http:// or https:// URL, not "${raw}"`);
  return url.toString().replace(/\/+$/, '');
}

/** flag > OUTPOST_TOKEN > ./data/admin-token (the single-box case: outpost run beside outpost-fleet). */
function resolveToken(flag: unknown, io: CliIo): string | undefined {
  if (typeof flag === 'string' && flag.length > 0) return flag;
  if (io.env.OUTPOST_TOKEN) return io.env.OUTPOST_TOKEN;
  const file = path.join(io.cwd, LOCAL_TOKEN_FILE);
  if (!existsSync(file)) return undefined;
  try {
    const token = readFileSync(file, 'utf8').trim();
    return token.length > 0 ? token : undefined;
  } catch {
    return undefined; // unreadable (permissions): the server's 401 and the hint say what to do
  }
}

/**
 * Wraps a command handler for commander: resolves the global options into an API client and an Output,
 * and passes the positional arguments. Errors propagate to runCli, which prints them and picks the exit code.
 */
export function action(io: CliIo, handler: (ctx: ActionContext, args: string[]) => Promise<void>) {
  return async (...params: unknown[]): Promise<void> => {
    const cmd = params[params.length - 1] as Command;
    const args = params.slice(0, -2).filter((a): a is string => typeof a === 'string');
    const options = mergedOptions(cmd);
    const api = new FleetApi({
      baseUrl: resolveFleetUrl(typeof options.fleet === 'string' ? options.fleet : (io.env.OUTPOST_FLEET_URL ?? DEFAULT_FLEET_URL)),
      token: resolveToken(options.token, io),
      missingTokenHint: MISSING_TOKEN_HINT,
      fetch: io.fetch ?? fetch,
    });
    const now = io.now ?? Date.now;
    const sleep = io.sleep ?? realSleep;
    await handler({ api, out: new Output(io.stdout, io.stderr, options.json === true), io, opts: cmd.opts(), now, sleep }, args);
  };
}
