import { Argument, type Command } from 'commander';
import { parseDurationMs, parseJsonObject } from './args.js';
import { action, addGlobalOptions, type CliIo } from './context.js';
import { CliError, EXIT } from './exit-codes.js';
import { details, formatDuration } from './output.js';

/**
 * `outpost devices cmd`: one command to one device over its `cmd` topic (POST /api/v1/devices/{id}/commands).
 * The fleet answers at once with the command in state `sent`; the device's `cmd/result` moves it to ok or
 * failed, or the fleet marks it timed_out at its deadline. --wait polls until then.
 */

export const COMMAND_KINDS = ['ping', 'reload', 'diagnostics', 'rollback'] as const;

export interface DeviceCommand {
  id: string;
  kind: (typeof COMMAND_KINDS)[number];
  state: 'sent' | 'ok' | 'failed' | 'timed_out';
  result: Record<string, unknown> | null;
  error: { code: string; message: string } | null;
  createdAt: string;
  finishedAt: string | null;
}

/** The agent's default when no timeout is sent (CmdMessageSchema.timeoutMs) and its bound. */
const DEFAULT_TIMEOUT_MS = 60_000;
const MAX_TIMEOUT_MS = 3_600_000;
const POLL_MS = 500;
/** The fleet marks a command timed_out on its own sweep; past the deadline plus this, --wait stops waiting. */
const DEADLINE_GRACE_MS = 15_000;

function renderCommand(deviceId: string, c: DeviceCommand): string {
  const took = c.finishedAt ? Date.parse(c.finishedAt) - Date.parse(c.createdAt) : NaN;
  const pairs: Array<[string, string]> = [
    ['command', c.id],
    ['device', deviceId],
    ['kind', c.kind],
    ['state', c.state],
    ['sent', c.createdAt],
    ['finished', c.finishedAt ? `${c.finishedAt}${Number.isFinite(took) ? ` (${(took / 1000).toFixed(1)} s)` : ''}` : '-'],
  ];
  if (c.error) pairs.push(['error', `${c.error.code}: ${c.error.message}`]);
  const result = c.result && Object.keys(c.result).length > 0 ? `\n\n${JSON.stringify(c.result, null, 2)}` : '';
  return `${details(pairs)}${result}`;
}

export function registerCommandCommands(devices: Command, io: CliIo): void {
  addGlobalOptions(
    devices
      .command('cmd')
      .description("send a command to a device (ping, reload, diagnostics, rollback); its id alone on stdout, or with --wait the device's answer")
      .argument('<id>', 'device id')
      .addArgument(new Argument('<kind>', 'what the device is asked to do').choices(COMMAND_KINDS))
      .option('--args <json>', 'arguments as a JSON object, e.g. \'{"model":"detector"}\' for rollback')
      .option('--timeout <duration>', `the device must answer within this long: 500ms, 30s, 5m (default ${formatDuration(DEFAULT_TIMEOUT_MS)}, at most 1h)`)
      .option('--wait', 'wait for the answer and print it: exit 0 when ok, 5 when the device reports a failure, 1 when it timed out'),
  ).action(
    action(io, async ({ api, out, opts, now, sleep }, [deviceId, kind]) => {
      const body: Record<string, unknown> = { kind };
      if (typeof opts.args === 'string') body.args = parseJsonObject(opts.args, '--args');
      const timeoutMs = typeof opts.timeout === 'string' ? parseDurationMs(opts.timeout, '--timeout', { maxMs: MAX_TIMEOUT_MS }) : DEFAULT_TIMEOUT_MS;
      if (typeof opts.timeout === 'string') body.timeoutMs = timeoutMs;
      const base = `/api/v1/devices/${encodeURIComponent(deviceId!)}/commands`;
      let cmd = await api.request<DeviceCommand>('POST', base, { json: body });
      if (opts.wait !== true) {
        out.result(cmd, () => cmd.id);
        if (!out.json) out.note(`sent ${kind} to ${deviceId} as command ${cmd.id}; it times out after ${formatDuration(timeoutMs)} (add --wait to wait for the answer)`);
        return;
      }
      const giveUpAt = now() + timeoutMs + DEADLINE_GRACE_MS;
      while (cmd.state === 'sent') {
        const left = giveUpAt - now();
        if (left <= 0) throw new CliError(`no answer to command ${cmd.id} (${kind} on ${deviceId}) within ${formatDuration(timeoutMs)}; the fleet still lists it as sent`, EXIT.FAILURE);
        await sleep(Math.min(POLL_MS, left));
        cmd = await api.request<DeviceCommand>('GET', `${base}/${encodeURIComponent(cmd.id)}`);
      }
      out.result(cmd, () => renderCommand(deviceId!, cmd));
      if (cmd.state === 'failed') throw new CliError(`command ${cmd.id} (${kind} on ${deviceId}) failed${cmd.error ? `: ${cmd.error.message} (${cmd.error.code})` : ''}`, EXIT.CONFLICT);
      if (cmd.state === 'timed_out') throw new CliError(`command ${cmd.id} (${kind} on ${deviceId}) timed out: the device did not answer within ${formatDuration(timeoutMs)}`, EXIT.FAILURE);
    }),
  );
}
