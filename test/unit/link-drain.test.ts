import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { Drainer, envelope, type PublishTarget } from '../../agent/src/link/drain.js';
import type { Outbox, OutboxMessage, OutboxRow, OutboxStats } from '../../agent/src/outbox/types.js';

/**
 * The drain rules against an in-memory outbox (the SQLite one is exercised by the integration tests):
 * order, window, ack-on-PUBACK, restart after a disconnect, the poison/probe rule, oversized rows.
 */
class MemoryOutbox implements Outbox {
  rows: OutboxRow[] = [];
  dead: { id: number; reason: string }[] = [];
  private seq = 0;
  private listeners = new Set<() => void>();
  constructor(private readonly maxAttempts = 3) {}

  add(body: Record<string, unknown> | string, kind: OutboxRow['kind'] = 'events', retain = false): OutboxRow {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    this.seq++;
    const row: OutboxRow = { id: this.seq, seq: this.seq, kind, retain, body: text, bytes: Buffer.byteLength(text), attempts: 0 };
    this.rows.push(row);
    return row;
  }
  async enqueue(m: OutboxMessage) {
    const row = this.add(m.body, m.kind, m.retain ?? false);
    for (const l of this.listeners) l();
    return { seq: row.seq };
  }
  next(afterId: number, limit: number) {
    return this.rows.filter((r) => r.id > afterId).slice(0, limit);
  }
  ack(id: number) {
    this.rows = this.rows.filter((r) => r.id !== id);
  }
  failedAttempt(id: number, reason: string) {
    const row = this.rows.find((r) => r.id === id);
    if (!row) return false;
    row.attempts++;
    if (row.attempts < this.maxAttempts) return false;
    this.rows = this.rows.filter((r) => r.id !== id);
    this.dead.push({ id, reason });
    return true;
  }
  stats(): OutboxStats {
    return { rows: this.rows.length, bytes: 0, droppedTelemetry: 0, deadLettered: this.dead.length, alarm: null };
  }
  onCommitted(listener: () => void) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  async close() {}
}

/** A broker the test answers by hand: each publish waits until the test acks it. */
class ManualBroker implements PublishTarget {
  sent: { topic: string; payload: string; retain: boolean; ack: () => void }[] = [];
  publish(topic: string, payload: string, options: { qos: 1; retain: boolean }, callback: (err?: Error) => void) {
    this.sent.push({ topic, payload, retain: options.retain, ack: () => callback() });
  }
  seqs() {
    return this.sent.map((s) => (JSON.parse(s.payload) as { seq: number }).seq);
  }
}

const log = pino({ level: 'silent' });
const make = (outbox: MemoryOutbox, window = 3, maxPayloadBytes?: number) =>
  new Drainer({ outbox, deviceId: 'box-1', inflightWindow: window, maxAttempts: 3, log, ...(maxPayloadBytes ? { maxPayloadBytes } : {}) });

describe('outbox drain', () => {
  it('publishes oldest first, at most `inflightWindow` awaiting PUBACK, and deletes a row only on its PUBACK', () => {
    const outbox = new MemoryOutbox();
    for (let i = 1; i <= 5; i++) outbox.add({ ts: 't', n: i });
    const drainer = make(outbox, 3);
    const broker = new ManualBroker();
    drainer.attach(broker);
    expect(broker.seqs()).toEqual([1, 2, 3]);
    expect(outbox.rows).toHaveLength(5);
    broker.sent[0]!.ack();
    expect(outbox.rows.map((r) => r.seq)).toEqual([2, 3, 4, 5]);
    expect(broker.seqs()).toEqual([1, 2, 3, 4]);
    for (const s of broker.sent.slice(1)) s.ack();
    broker.sent[4]!.ack();
    expect(broker.seqs()).toEqual([1, 2, 3, 4, 5]);
    expect(outbox.rows).toEqual([]);
    expect(drainer.idle()).toBe(true);
  });

  it('sends the envelope {v, deviceId, seq, …body} on the kind topic with the row retain flag', () => {
    const outbox = new MemoryOutbox();
    outbox.add({ ts: '2026-01-01T00:00:00.000Z', online: true }, 'state', true);
    outbox.add({ ts: '2026-01-01T00:00:01.000Z', kind: 'model.loaded' }, 'events');
    const broker = new ManualBroker();
    make(outbox).attach(broker);
    expect(broker.sent.map((s) => [s.topic, s.retain])).toEqual([
      ['outpost/v1/box-1/state', true],
      ['outpost/v1/box-1/events', false],
    ]);
    expect(JSON.parse(broker.sent[0]!.payload)).toEqual({ v: 1, deviceId: 'box-1', seq: 1, ts: '2026-01-01T00:00:00.000Z', online: true });
    expect(envelope('box-1', { seq: 9, body: '{}' })).toBe('{"v":1,"deviceId":"box-1","seq":9}');
    expect(envelope('box-1', { seq: 9, body: '[1]' })).toBeUndefined();
  });

  it('wakes when the outbox commits new rows', async () => {
    const outbox = new MemoryOutbox();
    const broker = new ManualBroker();
    make(outbox).attach(broker);
    expect(broker.sent).toEqual([]);
    await outbox.enqueue({ kind: 'telemetry', body: { ts: 't' } });
    expect(broker.seqs()).toEqual([1]);
  });

  it('after a disconnect starts again from the oldest unacknowledged row (duplicates, never a gap)', () => {
    const outbox = new MemoryOutbox();
    for (let i = 1; i <= 4; i++) outbox.add({ ts: 't', n: i });
    const drainer = make(outbox, 3);
    const first = new ManualBroker();
    drainer.attach(first);
    first.sent[0]!.ack();
    drainer.detach('closed-by-peer', 'socket closed');
    // A late PUBACK from the dead connection changes nothing.
    first.sent[1]!.ack();
    expect(outbox.rows.map((r) => r.seq)).toEqual([2, 3, 4]);
    const second = new ManualBroker();
    drainer.attach(second);
    expect(second.seqs()).toEqual([2, 3, 4]);
    // A PUBACK arrived on the first connection, so nothing was blamed.
    expect(outbox.rows.every((r) => r.attempts === 0)).toBe(true);
  });

  it('poison rule: a broker close before any PUBACK blames only the oldest row in flight, and the next connection probes with it alone', () => {
    const outbox = new MemoryOutbox(3);
    for (let i = 1; i <= 4; i++) outbox.add({ ts: 't', n: i });
    const drainer = make(outbox, 3);
    // The broker drops the link every time row 1 is in flight (e.g. its ACL refuses it).
    for (let attempt = 1; attempt <= 3; attempt++) {
      const b = new ManualBroker();
      drainer.attach(b);
      expect(b.seqs()).toEqual(attempt === 1 ? [1, 2, 3] : [1]);
      const blamed = drainer.detach('closed-by-peer', 'connection closed by broker');
      expect(blamed?.blamedId).toBe(1);
      expect(drainer.probing).toBe(true);
    }
    expect(outbox.dead).toEqual([{ id: 1, reason: 'connection closed by broker' }]);
    expect(outbox.rows.map((r) => [r.seq, r.attempts])).toEqual([[2, 0], [3, 0], [4, 0]]);
    // Healthy again: the probe row goes alone, its PUBACK opens the full window.
    const b = new ManualBroker();
    drainer.attach(b);
    expect(b.seqs()).toEqual([2]);
    b.sent[0]!.ack();
    expect(drainer.probing).toBe(false);
    expect(b.seqs()).toEqual([2, 3, 4]);
  });

  it('blames nothing when the agent closes the link itself, or when nothing was in flight', () => {
    const outbox = new MemoryOutbox();
    outbox.add({ ts: 't' });
    const drainer = make(outbox);
    drainer.attach(new ManualBroker());
    expect(drainer.detach('stopped', 'stopped')).toBeUndefined();
    const empty = make(new MemoryOutbox());
    empty.attach(new ManualBroker());
    expect(empty.detach('closed-by-peer', 'socket closed')).toBeUndefined();
    expect(outbox.rows[0]!.attempts).toBe(0);
    expect(drainer.probing).toBe(false);
  });

  it('blames nothing for network failures before any PUBACK (watchdog, keepalive, socket error), however often they repeat', () => {
    const outbox = new MemoryOutbox(3);
    for (let i = 1; i <= 3; i++) outbox.add({ ts: 't', n: i });
    const drainer = make(outbox, 3);
    const causes = ['watchdog', 'keepalive-timeout', 'socket-error', 'client-error'] as const;
    for (let attempt = 0; attempt < 3 * 4; attempt++) {
      const b = new ManualBroker();
      drainer.attach(b);
      expect(b.seqs()).toEqual([1, 2, 3]);
      expect(drainer.detach(causes[attempt % causes.length]!, 'no packet from the broker')).toBeUndefined();
    }
    expect(outbox.dead).toEqual([]);
    expect(outbox.rows.map((r) => [r.seq, r.attempts])).toEqual([[1, 0], [2, 0], [3, 0]]);
    expect(drainer.probing).toBe(false);
  });

  it('dead-letters a row larger than the payload limit at once, without publishing it, and sends the rows behind it', () => {
    const outbox = new MemoryOutbox();
    outbox.add({ ts: 't', n: 1 });
    outbox.add({ ts: 't', blob: 'x'.repeat(2_000) });
    outbox.add({ ts: 't', n: 3 });
    const broker = new ManualBroker();
    make(outbox, 3, 1_000).attach(broker);
    expect(broker.seqs()).toEqual([1, 3]);
    expect(outbox.dead.map((d) => d.id)).toEqual([2]);
    expect(outbox.dead[0]!.reason).toMatch(/exceeds MAX_PAYLOAD_BYTES/);
  });

  it('whenIdle() resolves once everything queued is acknowledged, and false on timeout', async () => {
    const outbox = new MemoryOutbox();
    outbox.add({ ts: 't' });
    const drainer = make(outbox);
    const broker = new ManualBroker();
    drainer.attach(broker);
    expect(await drainer.whenIdle(20)).toBe(false);
    const idle = drainer.whenIdle(5_000);
    broker.sent[0]!.ack();
    expect(await idle).toBe(true);
  });
});
