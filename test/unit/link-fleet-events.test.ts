import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { ServedVersion } from '../../agent/src/inference/model-manager.js';
import { FleetEvents } from '../../agent/src/link/fleet-events.js';
import type { Outbox, OutboxMessage, OutboxStats } from '../../agent/src/outbox/types.js';

/** The events the agent queues for the fleet: their kinds, severities and data, and the drop-report throttle. */
function recordingOutbox(dropped: { total: number }) {
  const queued: OutboxMessage[] = [];
  const outbox: Outbox = {
    enqueue: async (m) => {
      queued.push(m);
      return { seq: queued.length };
    },
    next: () => [],
    ack: () => undefined,
    failedAttempt: () => false,
    stats: (): OutboxStats => ({ rows: 0, bytes: 0, droppedTelemetry: dropped.total, deadLettered: 0, alarm: null }),
    onCommitted: () => () => undefined,
    close: async () => undefined,
  };
  return { outbox, queued };
}

const log = pino({ level: 'silent' });
const bodies = (q: OutboxMessage[]) => q.map((m) => m.body as Record<string, any>);

describe('fleet events', () => {
  it('reports telemetry drops as one warn event with the count since the last report, at most once per interval', () => {
    const dropped = { total: 4 }; // drops of an earlier run are not reported again
    const { outbox, queued } = recordingOutbox(dropped);
    const events = new FleetEvents(outbox, log, 60_000);
    events.checkDrops(1_000_000);
    expect(queued).toEqual([]);

    dropped.total = 10;
    events.checkDrops(1_000_000);
    dropped.total = 15;
    events.checkDrops(1_030_000); // throttled: reporting must not cause a storm of events that cause more drops
    expect(bodies(queued)).toMatchObject([{ kind: 'outbox.dropped', severity: 'warn', data: { dropped: 6, total: 10 } }]);
    expect(queued[0]!.kind).toBe('events');

    events.checkDrops(1_061_000);
    expect(bodies(queued)[1]).toMatchObject({ kind: 'outbox.dropped', data: { dropped: 5, total: 15 } });
  });

  it('turns a finished model load into model.loaded (info) or model.failed (error) with name, version, provider, error, loadMs', () => {
    const { outbox, queued } = recordingOutbox({ total: 0 });
    const events = new FleetEvents(outbox, log);
    const base = { name: 'yolo', version: 3, spec: undefined, session: undefined, sessions: [], batcher: undefined, skippedProviders: [], sha256: undefined };
    events.modelLoad({ ...base, state: 'ready', error: undefined, provider: 'cpu', loadMs: 812.4 } as ServedVersion);
    events.modelLoad({ ...base, state: 'failed', error: 'protobuf parsing failed', provider: undefined, loadMs: undefined } as ServedVersion);
    events.modelLoad({ ...base, state: 'loading', error: undefined, provider: undefined, loadMs: undefined } as ServedVersion);
    expect(bodies(queued)).toMatchObject([
      { kind: 'model.loaded', severity: 'info', data: { name: 'yolo', version: 3, provider: 'cpu', error: null, loadMs: 812 } },
      { kind: 'model.failed', severity: 'error', data: { name: 'yolo', version: 3, provider: null, error: 'protobuf parsing failed', loadMs: null } },
    ]);
    expect(bodies(queued)[1]!.message).toContain('protobuf parsing failed');
    expect(bodies(queued).every((b) => typeof b.ts === 'string')).toBe(true);
  });

  it('reports a reconnect with the outage duration', () => {
    const { outbox, queued } = recordingOutbox({ total: 0 });
    new FleetEvents(outbox, log).linkReconnected(93_400);
    expect(bodies(queued)).toMatchObject([{ kind: 'link.reconnected', severity: 'info', data: { outageMs: 93_400 } }]);
    expect(bodies(queued)[0]!.message).toContain('93.4 s');
  });
});
