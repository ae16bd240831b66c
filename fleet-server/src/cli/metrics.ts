import type { Command } from 'commander';
import { parseInstant, parsePositiveInt } from './args.js';
import { action, addGlobalOptions, type CliIo } from './context.js';
import { table, formatMs } from './output.js';

/** GET /api/v1/devices/{id}/metrics (fleet-server/src/telemetry/metrics-query.ts). */
interface ModelMetrics {
  deviceId: string;
  model: string;
  since: string;
  until: string;
  requests: number;
  failures: number;
  latency: { p50: number | null; p95: number | null; p99: number | null };
  points: Array<{ seq: number; windowStart: string; windowEnd: string; version: number; requests: number; failures: number; p50: number; p95: number; p99: number }>;
  truncated?: boolean;
}

interface DeviceEvent {
  seq: number;
  ts: string;
  kind: string;
  severity: string;
  message: string;
  data?: unknown;
}

const devicePath = (id: string) => `/api/v1/devices/${encodeURIComponent(id)}`;

function percent(part: number, whole: number): string {
  return whole === 0 ? '0%' : `${((100 * part) / whole).toFixed(2)}%`;
}

export function renderMetrics(m: ModelMetrics): string {
  const header = [
    `device ${m.deviceId}  model ${m.model}  ${m.since} → ${m.until}`,
    `requests ${m.requests}  failures ${m.failures} (${percent(m.failures, m.requests)})  latency p50 ${formatMs(m.latency.p50)}  p95 ${formatMs(m.latency.p95)}  p99 ${formatMs(m.latency.p99)}`,
  ].join('\n');
  if (m.points.length === 0) return `${header}\n\nno telemetry points in this window`;
  const rows = m.points.map((p) => [p.windowEnd, String(p.version), String(p.requests), String(p.failures), formatMs(p.p50), formatMs(p.p95), formatMs(p.p99)]);
  const more = m.truncated ? `\n(only the first ${m.points.length} points are listed; the totals cover all of them)` : '';
  return `${header}\n\n${table(['WINDOW END', 'VERSION', 'REQUESTS', 'FAILURES', 'P50', 'P95', 'P99'], rows)}${more}`;
}

/** `outpost metrics` and `outpost events`: what devices reported, from the fleet's telemetry store. */
export function registerTelemetryCommands(program: Command, io: CliIo): void {
  addGlobalOptions(
    program
      .command('metrics')
      .description("one model's requests, failures and latency percentiles on one device, per telemetry window")
      .requiredOption('--device <id>', 'device id')
      .requiredOption('--model <name>', 'model name')
      .option('--since <time>', 'start: a duration back from now (1h, 30m, 7d) or an ISO-8601 time (default: 1h before --until)')
      .option('--until <time>', 'end: ISO-8601 time or a duration back from now (default: now)'),
  ).action(
    action(io, async ({ api, out, opts, now }) => {
      const query = {
        model: opts.model as string,
        since: typeof opts.since === 'string' ? parseInstant(opts.since, '--since', now()) : undefined,
        until: typeof opts.until === 'string' ? parseInstant(opts.until, '--until', now()) : undefined,
      };
      const metrics = await api.request<ModelMetrics>('GET', `${devicePath(opts.device as string)}/metrics`, { query });
      out.result(metrics, () => renderMetrics(metrics));
    }),
  );

  addGlobalOptions(
    program
      .command('events')
      .description("a device's events (model loads, update transitions, errors, outbox drops), oldest first")
      .requiredOption('--device <id>', 'device id')
      .option('--since <time>', 'a duration back from now (1h, 7d) or an ISO-8601 time (default: the last day)')
      .option('--until <time>', 'ISO-8601 time or a duration back from now (default: no bound)')
      .option('--after-seq <seq>', 'page on: only events after this sequence number')
      .option('--limit <n>', 'at most this many events (1–1000, default 100)'),
  ).action(
    action(io, async ({ api, out, opts, now }) => {
      const query = {
        since: typeof opts.since === 'string' ? parseInstant(opts.since, '--since', now()) : undefined,
        until: typeof opts.until === 'string' ? parseInstant(opts.until, '--until', now()) : undefined,
        afterSeq: typeof opts.afterSeq === 'string' ? parsePositiveInt(opts.afterSeq, '--after-seq', Number.MAX_SAFE_INTEGER) : undefined,
        limit: typeof opts.limit === 'string' ? parsePositiveInt(opts.limit, '--limit', 1000) : undefined,
      };
      const answer = await api.request<{ events: DeviceEvent[] }>('GET', `${devicePath(opts.device as string)}/events`, { query });
      out.result(answer, () => table(['SEQ', 'TIME', 'SEVERITY', 'KIND', 'MESSAGE'], answer.events.map((e) => [String(e.seq), e.ts, e.severity, e.kind, e.message])));
      if (!out.json) {
        const last = answer.events.at(-1);
        if (answer.events.length === 0) out.note('no events in this window');
        else if (answer.events.length === (query.limit ?? 100)) out.note(`more may follow: add --after-seq ${last!.seq}`);
      }
    }),
  );
}
