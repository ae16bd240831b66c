import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentConfigSchema } from '../../agent/src/config/schema.js';
import { createAgentMetrics } from '../../agent/src/metrics/agent-metrics.js';
import { createOutbox } from '../../agent/src/outbox/create-outbox.js';
import { isOutboxError } from '../../agent/src/outbox/errors.js';
import type { CommitTimers } from '../../agent/src/outbox/group-commit.js';
import { openDatabase } from '../../agent/src/storage/database.js';
import { createTelemetry, type CreateTelemetryOptions, type Telemetry } from '../../agent/src/telemetry/create-telemetry.js';
import { createSystemSampler } from '../../agent/src/telemetry/system.js';
import type { RequestObservation } from '../../agent/src/telemetry/types.js';
import { TelemetryMessageSchema, type SystemPoint, type TelemetryMessage } from '../../shared/src/mqtt/messages.js';
import { nextCommit, openOutbox, outboxConfig, recordingLog, tempDir, type OutboxFixture } from '../helpers/outbox-db.js';

const SYSTEM: SystemPoint = { cpuPercent: 12.5, memUsedBytes: 1000, memTotalBytes: 4000, temperatureC: 48, diskUsedBytes: 10, diskTotalBytes: 100, gpus: [] };
/** Timers that never fire: commits happen only when the test says (flush/closeWindow), as in a frozen process. */
const FROZEN: CommitTimers = { setTimeout: () => 0, clearTimeout: () => undefined, setImmediate: () => 0, clearImmediate: () => undefined };

const req = (over: Partial<RequestObservation> = {}): RequestObservation => ({ model: 'det', version: 2, ok: true, latencyMs: 10, ...over });

function telemetryOn(f: Pick<OutboxFixture, 'db' | 'outbox' | 'committer' | 'log' | 'dir'>, over: Partial<CreateTelemetryOptions> = {}, schedule = '*/10 * * * * *'): Telemetry {
  return createTelemetry({
    db: f.db, outbox: f.outbox, committer: f.committer, log: f.log,
    config: { dataDir: f.dir, telemetry: { schedule, system: true } },
    sampleSystem: async () => SYSTEM,
    ...over,
  });
}

/** The message the fleet would receive for a queued telemetry row (the link adds v, deviceId and seq). */
function fleetView(f: OutboxFixture, seq: number): TelemetryMessage {
  const row = f.outbox.next(0, 10_000).find((r) => r.seq === seq);
  expect(row?.kind).toBe('telemetry');
  return TelemetryMessageSchema.parse({ v: 1, deviceId: 'box-1', seq, ...(JSON.parse(row!.body) as object) });
}

describe('telemetry aggregation is durable and counted once', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  function fixture(overrides: Parameters<typeof openOutbox>[1] = {}): OutboxFixture {
    const t = tempDir('outpost-telemetry-');
    const f = openOutbox(t.dir, overrides);
    cleanups.push(async () => {
      await f.shutdown();
      t.remove();
    });
    return f;
  }

  it('puts the counts of observed requests on disk within the group-commit window', async () => {
    const f = fixture({ groupCommitMs: 20 });
    const tel = telemetryOn(f);
    for (let i = 0; i < 7; i++) tel.observer(req({ ok: i !== 3 }));
    await nextCommit(f.committer);
    // Read through a second connection: what a restarted agent would find.
    const rows = f.peek<{ model: string; version: number; data: string }>('SELECT model, version, data FROM telemetry_window');
    expect(rows.map((r) => ({ model: r.model, version: r.version, ...(JSON.parse(r.data) as { requests: number; failures: number }) }))).toMatchObject([{ model: 'det', version: 2, requests: 7, failures: 1 }]);
  });

  it('moves a window into exactly one outbox message with the right counts, percentiles, bins and classes', async () => {
    const f = fixture({ groupCommitMs: 20 });
    const tel = telemetryOn(f, { listModels: () => [{ model: 'det', version: 2 }, { model: 'idle', version: 1 }] });
    for (let ms = 1; ms <= 100; ms++) tel.observer(req({ latencyMs: ms, queueMs: 2, batchSize: ms <= 50 ? 1 : 3, scores: [0.91, 0.42], classes: ['person', ms % 2 ? 'car' : 'person'] }));
    for (let i = 0; i < 5; i++) tel.observer(req({ ok: false, latencyMs: 30_000 }));
    tel.observer(req({ model: 'cls', version: 1, latencyMs: 3, scores: [0.7], classes: ['red'] }));
    await nextCommit(f.committer);
    for (let i = 0; i < 4; i++) tel.observer(req({ latencyMs: 100 })); // still only in memory: closeWindow must take these too

    const { seq } = await tel.closeWindow();
    const msg = fleetView(f, seq);
    expect(f.outbox.next(0, 100).filter((r) => r.kind === 'telemetry')).toHaveLength(1);
    expect(f.peek('SELECT * FROM telemetry_window')).toEqual([]);
    expect(msg.system).toEqual(SYSTEM);
    expect(Date.parse(msg.windowEnd)).toBeGreaterThanOrEqual(Date.parse(msg.windowStart));

    const det = msg.models.find((m) => m.model === 'det')!;
    expect(det).toMatchObject({ version: 2, requests: 109, failures: 5, batchSize: { mean: 2, max: 3 } });
    const within = (got: number, want: number) => got >= want && got <= want * 2 ** (1 / 8) + 0.01;
    expect([within(det.latencyMs.p50, 52), within(det.latencyMs.p95, 100), within(det.latencyMs.p99, 100)]).toEqual([true, true, true]);
    expect(within(det.queueMs.p99, 2)).toBe(true);
    expect(det.scoreBins).toEqual([0, 0, 0, 0, 100, 0, 0, 0, 0, 100]);
    expect(det.classes).toEqual({ person: 150, car: 50 });
    expect(msg.models.find((m) => m.model === 'cls')).toMatchObject({ requests: 1, classes: { red: 1 } });
    // A served model without traffic still gets a (zero) point; the fleet sees it alive and idle.
    expect(msg.models.find((m) => m.model === 'idle')).toMatchObject({ requests: 0, failures: 0, scoreBins: new Array(10).fill(0) });

    // The next window starts where this one ended and carries none of its counts; it is sent even when idle.
    const next = fleetView(f, (await tel.closeWindow()).seq);
    expect(next.windowStart).toBe(msg.windowEnd);
    expect(next.models.map((m) => [m.model, m.requests])).toEqual([['det', 0], ['idle', 0]]);
  });

  it('after a crash, the next process sends exactly what was committed: not zero, not twice', async () => {
    const t = tempDir('outpost-telemetry-crash-');
    cleanups.push(t.remove);
    const file = path.join(t.dir, 'agent.db');
    const config = outboxConfig({ groupCommitMs: 50 });
    const crashed = () => {
      // A process whose timers never fire: its state is dropped without closing anything, as by kill -9.
      const db = openDatabase(file);
      const { log } = recordingLog();
      const { outbox, committer } = createOutbox({ db, config, log, timers: FROZEN });
      const tel = telemetryOn({ db, outbox, committer, log, dir: t.dir });
      cleanups.push(() => {
        db.close();
      });
      return { committer, tel };
    };

    // Run 1: 5 requests committed, 3 more only in memory when the process dies.
    const a = crashed();
    for (let i = 0; i < 5; i++) a.tel.observer(req());
    expect(a.committer.flush()).toBe(true);
    for (let i = 0; i < 3; i++) a.tel.observer(req());
    // Run 2: its window (with run 1's 5) is queued, then 2 more are committed, then it dies too.
    const b = crashed();
    const first = await b.tel.closeWindow();
    for (let i = 0; i < 2; i++) b.tel.observer(req());
    expect(b.committer.flush()).toBe(true);

    const f = openOutbox(t.dir, { groupCommitMs: 20 });
    cleanups.push(() => f.shutdown());
    const tel = telemetryOn(f);
    const second = await tel.closeWindow();
    expect(fleetView(f, first.seq).models.map((m) => m.requests)).toEqual([5]);
    expect(fleetView(f, second.seq).models.map((m) => m.requests)).toEqual([2]);
    expect(f.outbox.next(0, 100).filter((r) => r.kind === 'telemetry').map((r) => r.seq)).toEqual([first.seq, second.seq]);
  });

  it('closes windows on the configured node-cron schedule', async () => {
    const f = fixture({ groupCommitMs: 20 });
    const tel = telemetryOn(f, {}, '* * * * * *');
    tel.start();
    cleanups.push(() => tel.stop());
    tel.observer(req());
    const deadline = Date.now() + 5_000;
    let rows = f.outbox.next(0, 10).filter((r) => r.kind === 'telemetry');
    while (rows.length === 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const off = f.outbox.onCommitted(() => {
          off();
          resolve();
        });
      });
      rows = f.outbox.next(0, 10).filter((r) => r.kind === 'telemetry');
    }
    expect(rows).toHaveLength(1);
    expect(fleetView(f, rows[0]!.seq).models.map((m) => m.requests)).toEqual([1]);
  });

  it('refuses an invalid schedule when it is created, naming the setting', () => {
    const f = fixture();
    expect(() => telemetryOn(f, {}, '*/10 * *')).toThrow(/telemetry\.schedule: "\*\/10 \* \*" is not a valid cron expression/);
  });

  it('refuses to close a window while the outbox is in alarm, queues nothing half-done, and counts every request once the disk has space again', async () => {
    const f = fixture({ groupCommitMs: 10_000 });
    const tel = telemetryOn(f);
    f.db.pragma(`max_page_count = ${(f.db.pragma('page_count', { simple: true }) as number) + 1}`);
    for (let i = 0; i < 300; i++) tel.observer(req({ model: `model-${i}`, classes: [`label-${'x'.repeat(100)}-${i}`] }));
    expect(f.committer.flush()).toBe(false);
    expect(f.outbox.stats().alarm).toMatch(/SQLITE_FULL/);
    // Disk full rolled the commit back cleanly: the counts are not on disk, so they are kept, not lost.
    expect(tel.aggregator.lostRequests).toBe(0);
    await expect(tel.closeWindow()).rejects.toSatisfy((e: unknown) => isOutboxError(e, 'OUTBOX_ALARM'));
    expect(f.peek('SELECT seq FROM outbox')).toEqual([]);
    expect(f.peek('SELECT model FROM telemetry_window')).toEqual([]);

    // Space is back: the committer's retry writes the kept counts, and the next window holds each request once.
    tel.observer(req({ model: 'model-0' }));
    f.db.pragma('max_page_count = 1000000');
    const deadline = Date.now() + 10_000;
    while (f.outbox.stats().alarm !== null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(f.outbox.stats().alarm).toBeNull();
    const { seqs } = await tel.closeWindow();
    const models = seqs.flatMap((seq) => fleetView(f, seq).models);
    expect(models.reduce((n, m) => n + m.requests, 0)).toBe(301);
    expect(models.find((m) => m.model === 'model-0')?.requests).toBe(2);
    expect(tel.aggregator.lostRequests).toBe(0);
  });

  it('counts the requests it could not make durable before stopping, and exports the count', async () => {
    const f = fixture({ groupCommitMs: 10_000 });
    const tel = telemetryOn(f);
    const metrics = createAgentMetrics();
    metrics.sources.telemetryLostRequests = () => tel.aggregator.lostRequests;
    f.db.pragma(`max_page_count = ${(f.db.pragma('page_count', { simple: true }) as number) + 1}`);
    for (let i = 0; i < 300; i++) tel.observer(req({ model: `model-${i}`, classes: [`label-${'x'.repeat(100)}-${i}`] }));
    expect(f.committer.flush()).toBe(false);
    for (let i = 0; i < 20; i++) tel.observer(req());
    // The agent stops while the disk is still full: the counts held in memory can never be sent.
    tel.stop();
    expect(tel.aggregator.lostRequests).toBe(320);
    expect(f.entries.some((e) => e.level === 'error' && /pending at stop dropped/.test(e.msg ?? ''))).toBe(true);
    expect(await metrics.registry.getSingleMetricAsString('outpost_telemetry_lost_requests_total')).toMatch(/^outpost_telemetry_lost_requests_total 320$/m);
  });

  it('queues a window too large for one MQTT payload as several valid messages, every request counted', async () => {
    const f = fixture({ groupCommitMs: 20 });
    const tel = telemetryOn(f);
    const label = (i: number) => `n${String(i).padStart(8, '0')} ${'x'.repeat(110)}`;
    for (const model of ['imagenet-a', 'imagenet-b', 'imagenet-c']) for (let i = 0; i < 999; i++) tel.observer(req({ model, version: 1, classes: [label(i)], scores: [0.5] }));
    const { seqs } = await tel.closeWindow();
    expect(seqs.length).toBeGreaterThan(1);
    const msgs = seqs.map((seq) => fleetView(f, seq));
    for (const seq of seqs) expect(f.outbox.next(0, 100).find((r) => r.seq === seq)!.bytes).toBeLessThanOrEqual(256 * 1024);
    expect(msgs.flatMap((m) => m.models).map((m) => [m.model, m.requests])).toEqual([['imagenet-a', 999], ['imagenet-b', 999], ['imagenet-c', 999]]);
    expect(new Set(msgs.map((m) => m.windowStart)).size).toBe(1);
    expect(f.peek('SELECT model FROM telemetry_window')).toEqual([]);
  });

  it('samples the real box (systeminformation) into a valid message', async () => {
    const f = fixture({ groupCommitMs: 20 });
    const tel = telemetryOn(f, { sampleSystem: createSystemSampler({ dataDir: f.dir }) });
    const msg = fleetView(f, (await tel.closeWindow()).seq);
    expect(msg.system?.memTotalBytes).toBeGreaterThan(0);
    expect(msg.system?.diskTotalBytes).toBeGreaterThan(0);
  });
});

describe('telemetry config', () => {
  it('sends system: null when config.telemetry.system is off', async () => {
    const t = tempDir('outpost-telemetry-nosys-');
    const f = openOutbox(t.dir, { groupCommitMs: 20 });
    try {
      const config = AgentConfigSchema.parse({ dataDir: t.dir, telemetry: { system: false } });
      const tel = createTelemetry({ db: f.db, outbox: f.outbox, committer: f.committer, log: f.log, config, sampleSystem: async () => SYSTEM });
      const { seq } = await tel.closeWindow();
      expect(fleetView(f, seq).system).toBeNull();
    } finally {
      await f.shutdown();
      t.remove();
    }
  });
});
