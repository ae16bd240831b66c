import { Cron } from 'croner';
import type { Command } from 'commander';
import {
  parseCron, parseDurationMs, parseList, parseNameArg, parseNumber, parsePercent, parsePositiveInt, parseRefArg, parseStages, parseTags,
  parseVersionArg, parseWholeSeconds,
} from './args.js';
import { action, addGlobalOptions, type CliIo } from './context.js';
import { usageError } from './exit-codes.js';
import { renderRollout, renderRolloutList, targetText, type Rollout, type RolloutSummary } from './rollout-view.js';
import { formatDuration } from './output.js';
import { watchRollout } from './rollout-watch.js';

/** `outpost rollouts …` (staged rollouts of a model version) and `outpost rollback` (one device or one rollout). */

const rolloutPath = (id: string) => `/api/v1/rollouts/${encodeURIComponent(id)}`;
const devicePath = (id: string) => `/api/v1/devices/${encodeURIComponent(id)}`;

const MIN_INTERVAL_MS = 100;
const MAX_DEVICES = 1_000_000;

/** The POST /api/v1/rollouts body from the create command's options; only the options given are sent. */
export function rolloutRequest(ref: string, opts: Record<string, unknown>): Record<string, unknown> {
  const { name, version } = parseRefArg(ref);
  const str = (key: string) => (typeof opts[key] === 'string' ? (opts[key] as string) : undefined);
  const body: Record<string, unknown> = { model: name, version };
  const put = <T>(key: string, raw: string | undefined, parse: (raw: string) => T) => {
    if (raw !== undefined) body[key] = parse(raw);
  };
  put('deviceIds', str('devices'), (r) => parseList(r, '--devices'));
  put('selector', str('selector'), (r) => {
    const tags = parseTags(r, '--selector');
    if (Object.keys(tags).length === 0) throw usageError(`--selector expects key=value pairs such as line=3, not "${r}"`);
    return tags;
  });
  put('stages', str('stages'), (r) => parseStages(r));
  put('minDevices', str('minDevices'), (r) => parsePositiveInt(r, '--min-devices', MAX_DEVICES));
  put('maxFailurePct', str('maxFailure'), (r) => parsePercent(r, '--max-failure'));
  put('probationSeconds', str('probation'), (r) => parseWholeSeconds(r, '--probation', { allowZero: true, maxSeconds: 7 * 86_400 }));
  put('probationRequests', str('probationRequests'), (r) => parsePositiveInt(r, '--probation-requests', 1e9));
  // The devices take a fraction (0..1); operators write percent.
  put('maxErrorRate', str('maxErrorRate'), (r) => parsePercent(r, '--max-error-rate') / 100);
  put('maxLatencyFactor', str('maxLatencyFactor'), (r) => parseNumber(r, '--max-latency-factor', 1, 1000));
  put('schedule', str('schedule'), (r) => parseCron(r, '--schedule'));
  return body;
}

/** The create command's notes: what was selected, the first stage's devices, and when a scheduled one starts. */
function createdNotes(r: Rollout, now: number): string[] {
  const total = r.stages.reduce((n, s) => n + s.devices, 0);
  const notes = [`rollout ${r.id}: ${r.model}@${r.version} to ${total} device(s) (${targetText(r.target)}) in ${r.stages.length} stage(s) ${r.stages.map((s) => `${s.percent}%`).join(', ')}; ${r.state}`];
  const first = r.stages[0];
  if (first) {
    const ids = r.devices.filter((d) => d.stage === first.index).map((d) => d.deviceId);
    notes.push(`stage 1 (${first.percent}%): ${first.devices} device(s)${ids.length > 0 ? `: ${ids.join(', ')}` : ''}`);
  }
  if (r.state === 'scheduled' && r.schedule) {
    const next = new Cron(r.schedule).nextRun(new Date(now));
    notes.push(`starts at ${next ? next.toISOString() : 'no future time of its schedule'} (schedule "${r.schedule}")`);
  }
  notes.push(`follow it with: outpost rollouts watch ${r.id}`);
  return notes;
}

const STATE_ACTIONS = {
  pause: { past: 'paused', help: 'pause a running rollout: no further device starts the update until resume' },
  resume: { past: 'resumed', help: 'resume a paused rollout where it stopped' },
  abort: { past: 'aborted', help: 'stop the rollout for good: no further device is updated' },
  rollback: { past: 'rolling back', help: 'stop the rollout and return every device it touched to its previous version' },
} as const;

export function registerRolloutCommands(program: Command, io: CliIo): void {
  const rollouts = program.command('rollouts').description('staged rollouts of a model version: create, list, watch, pause, resume, abort, roll back');

  addGlobalOptions(
    rollouts
      .command('create')
      .description('start a staged rollout (its id alone on stdout: R=$(outpost rollouts create …)); the server picks the devices of each stage')
      .argument('<model@version>', 'the registry version to roll out, e.g. yolov8n@4')
      .option('--devices <ids>', 'target these device ids (comma-separated)')
      .option('--selector <pairs>', 'target devices with all these tags, e.g. line=3,site=a')
      .option('--stages <percents>', 'cumulative percentages of the target per stage, ending at 100, e.g. 10,50,100 (default 100: one stage)')
      .option('--min-devices <n>', 'each stage takes at least this many devices (default 1)')
      .option('--max-failure <percent>', 'halt and roll back when more than this share of a stage fails, e.g. 20% (default 0%)')
      .option('--probation <duration>', 'how long a device watches the new version before committing it: 300s, 5m, 1h (default: the device\'s)')
      .option('--probation-requests <n>', '…or after this many requests to it, whichever comes first')
      .option('--max-error-rate <percent>', 'a device rolls back when more than this share of its requests fail in probation, e.g. 5%')
      .option('--max-latency-factor <x>', 'a device rolls back when its p95 latency exceeds x times the previous version\'s, e.g. 2')
      .option('--schedule <cron>', 'start at the next time of this cron expression instead of now, e.g. "0 2 * * *"'),
  ).action(
    action(io, async ({ api, out, opts, now }, [ref]) => {
      const created = await api.request<Rollout>('POST', '/api/v1/rollouts', { json: rolloutRequest(ref!, opts) });
      out.result(created, () => created.id);
      if (!out.json) for (const note of createdNotes(created, now())) out.note(note);
    }),
  );

  addGlobalOptions(rollouts.command('ls').description('list rollouts: model, state, stage, devices and their progress')).action(
    action(io, async ({ api, out }) => {
      const answer = await api.request<{ rollouts: RolloutSummary[] }>('GET', '/api/v1/rollouts');
      out.result(answer, () => renderRolloutList(answer.rollouts));
      if (!out.json && answer.rollouts.length === 0) out.note('no rollouts yet; start one with: outpost rollouts create NAME@VERSION --selector key=value');
    }),
  );

  addGlobalOptions(rollouts.command('show').description('one rollout: settings, a table of its stages (devices per state), a table of its devices').argument('<id>', 'rollout id')).action(
    action(io, async ({ api, out }, [id]) => {
      const r = await api.request<Rollout>('GET', rolloutPath(id!));
      out.result(r, () => renderRollout(r));
    }),
  );

  addGlobalOptions(
    rollouts
      .command('watch')
      .description('follow a rollout live until it ends: exit 0 when completed, 5 when halted/aborted/rolled back, 1 on --timeout')
      .argument('<id>', 'rollout id')
      .option('--interval <duration>', `how often to ask the server: 250ms, 1s, 5s (default 1s, at least ${MIN_INTERVAL_MS}ms)`)
      .option('--timeout <duration>', 'give up after this long, e.g. 10m or 2h (default: watch until the rollout ends)'),
  ).action(
    action(io, async ({ api, out, opts, now, sleep }, [id]) => {
      const intervalMs = typeof opts.interval === 'string' ? parseDurationMs(opts.interval, '--interval') : 1000;
      if (intervalMs < MIN_INTERVAL_MS) throw usageError(`--interval must be at least ${formatDuration(MIN_INTERVAL_MS)}, not "${String(opts.interval)}"`);
      const timeoutMs = typeof opts.timeout === 'string' ? parseDurationMs(opts.timeout, '--timeout') : null;
      await watchRollout({ api, out, id: id!, intervalMs, timeoutMs, now, sleep });
    }),
  );

  for (const [verb, { past, help }] of Object.entries(STATE_ACTIONS)) {
    addGlobalOptions(rollouts.command(verb).description(help).argument('<id>', 'rollout id')).action(
      action(io, async ({ api, out }, [id]) => {
        const r = await api.request<Rollout>('POST', `${rolloutPath(id!)}/${verb}`);
        out.result(r, () => `${past} rollout ${r.id}: now ${r.state}${r.reason ? ` (${r.reason})` : ''}`);
      }),
    );
  }

  addGlobalOptions(
    program
      .command('rollback')
      .description("return one device's model (--device) or every device a rollout touched (--rollout) to the previous version")
      .argument('[model]', 'with --device: the model name, or NAME@VERSION for a given version')
      .option('--device <id>', 'roll back this device')
      .option('--rollout <id>', 'roll back this rollout (same as outpost rollouts rollback ID)')
      .option('--version <version>', 'with --device: the version to return to (default: the one the device ran before)'),
  ).action(
    action(io, async ({ api, out, opts }, [model]) => {
      const device = typeof opts.device === 'string' ? opts.device : undefined;
      const rollout = typeof opts.rollout === 'string' ? opts.rollout : undefined;
      if ((device === undefined) === (rollout === undefined)) throw usageError('rollback needs either --device ID MODEL or --rollout ID');
      if (rollout !== undefined) {
        if (model !== undefined || opts.version !== undefined) throw usageError('rollback --rollout takes no model or --version: it returns every device of the rollout to its previous version');
        const r = await api.request<Rollout>('POST', `${rolloutPath(rollout)}/rollback`);
        out.result(r, () => `rolling back rollout ${r.id}: now ${r.state}${r.reason ? ` (${r.reason})` : ''}`);
        return;
      }
      if (model === undefined) throw usageError('rollback --device needs the model name: outpost rollback --device ID MODEL [--version N]');
      const ref = model.includes('@') ? parseRefArg(model) : null;
      const body: { model: string; version?: number } = ref ? { model: ref.name, version: ref.version } : { model: parseNameArg(model, 'MODEL') };
      if (typeof opts.version === 'string') {
        if (body.version !== undefined) throw usageError(`give the version once: ${model} or --version ${opts.version}`);
        body.version = parseVersionArg(opts.version);
      }
      const answer = await api.request<{ deviceId: string; model: string; version: number; deployment: number }>('POST', `${devicePath(device!)}/rollback`, { json: body });
      out.result(answer, () => `rolling back ${answer.model} on ${answer.deviceId} to version ${answer.version} (deployment ${answer.deployment})`);
    }),
  );
}
