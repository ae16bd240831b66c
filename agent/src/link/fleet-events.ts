import type { Logger } from 'pino';
import type { ServedVersion } from '../inference/model-manager.js';
import type { Outbox } from '../outbox/types.js';

/** One event body (kind `events`); the link adds v, deviceId and seq when it publishes. */
export interface EventBody {
  kind: string;
  severity: 'info' | 'warn' | 'error';
  message: string;
  data: Record<string, unknown>;
}

/**
 * Events the agent reports to the fleet, all through the outbox (so they are durable and arrive in order,
 * enrolled yet or not). Queueing failures are logged, never thrown: reporting must not break serving.
 */
export class FleetEvents {
  /** Dropped-telemetry total already reported; drops from earlier runs were reported by those runs. */
  private reportedDrops: number;
  private lastDropReportAt = 0;

  constructor(
    private readonly outbox: Outbox,
    private readonly log: Logger,
    /** Least time between two outbox.dropped events, ms: reporting a drop must not cause more drops. */
    private readonly dropReportIntervalMs = 60_000,
  ) {
    this.reportedDrops = safeStats(outbox)?.droppedTelemetry ?? 0;
  }

  /** Queues an event; `onQueued(true)` runs once the outbox holds it durably, `onQueued(false)` when it refused it. */
  emit(event: EventBody, onQueued?: (queued: boolean) => void): void {
    this.outbox.enqueue({ kind: 'events', body: { ts: new Date().toISOString(), ...event } }).then(() => onQueued?.(true)).catch((err: unknown) => {
      onQueued?.(false);
      this.log.warn({ event: event.kind, err: (err as Error).message }, 'cannot queue an event for the fleet');
    });
  }

  /** model.loaded / model.failed for one version, after its load finished either way. */
  modelLoad(v: ServedVersion): void {
    const data = { name: v.name, version: v.version, provider: v.provider ?? null, error: v.error ?? null, loadMs: v.loadMs === undefined ? null : Math.round(v.loadMs) };
    if (v.state === 'ready') this.emit({ kind: 'model.loaded', severity: 'info', message: `${v.name} version ${v.version} loaded on ${v.provider ?? 'unknown provider'}`, data });
    else if (v.state === 'failed') this.emit({ kind: 'model.failed', severity: 'error', message: `${v.name} version ${v.version} failed to load: ${(v.error ?? 'unknown error').slice(0, 1500)}`, data });
  }

  linkReconnected(outageMs: number | null): void {
    const secs = outageMs === null ? null : Math.round(outageMs / 100) / 10;
    this.emit({ kind: 'link.reconnected', severity: 'info', message: `fleet link back after ${secs ?? '?'} s offline`, data: { outageMs } });
  }

  /** Call after outbox commits: reports telemetry the outbox dropped since the last report (throttled). */
  checkDrops(now = Date.now()): void {
    const total = safeStats(this.outbox)?.droppedTelemetry;
    if (total === undefined || total <= this.reportedDrops || now - this.lastDropReportAt < this.dropReportIntervalMs) return;
    const dropped = total - this.reportedDrops;
    this.reportedDrops = total;
    this.lastDropReportAt = now;
    this.emit({ kind: 'outbox.dropped', severity: 'warn', message: `outbox full: dropped the ${dropped} oldest telemetry message(s)`, data: { dropped, total } });
  }
}

function safeStats(outbox: Outbox) {
  try {
    return outbox.stats();
  } catch {
    return undefined;
  }
}
