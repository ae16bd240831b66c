import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { EmbeddedBroker } from '../../fleet-server/src/broker/embedded.js';
import type { AgentConfig } from '../../agent/src/config/schema.js';
import { seededRandom } from '../../agent/src/link/backoff.js';
import { FleetLink, type ReportedState } from '../../agent/src/link/fleet-link.js';
import { createOutbox } from '../../agent/src/outbox/create-outbox.js';
import type { Outbox } from '../../agent/src/outbox/types.js';
import { openDatabase, type Db } from '../../agent/src/storage/database.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { DEVICE, FleetObserver, log, selfSignedCert, startBroker, tempDir, until } from './agent-link-support.js';

/**
 * The fleet link against the fleet's real embedded broker, through a TCP proxy that cuts and freezes the
 * network, with the agent's real SQLite outbox: nothing committed is lost, every seq arrives (once after
 * dedup, in order), a half-open link is noticed within 1.5 × keepalive, a message the broker keeps
 * refusing is dead-lettered without blaming the healthy ones.
 */
const FLEET: AgentConfig['fleet'] = {
  keepaliveSeconds: 2,
  connectTimeoutMs: 1_000,
  reconnectMinMs: 50,
  reconnectMaxMs: 400,
  inflightWindow: 16,
  caFile: undefined,
};
const OUTBOX: AgentConfig['outbox'] = { maxRows: 100_000, maxBytes: 64 * 1024 * 1024, groupCommitMs: 5, groupCommitRows: 100, maxAttempts: 3 };

const STATE: ReportedState = { agentVersion: '0.0.0-test', startedAt: new Date().toISOString(), provider: 'cpu', models: [{ name: 'simple', version: 1, state: 'ready', provider: 'cpu', error: null }], hardware: {} };

interface Harness {
  broker: EmbeddedBroker;
  proxy: TcpProxy;
  fleet: FleetObserver;
  db: Db;
  outbox: Outbox;
  link: FleetLink;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function harness(options: { maxPacketBytes?: number; fleet?: Partial<AgentConfig['fleet']>; tls?: boolean } = {}): Promise<Harness> {
  const tmp = tempDir('outpost-link-');
  cleanups.push(() => tmp.remove());
  const tls = options.tls ? selfSignedCert(tmp.dir) : undefined;
  if (options.tls && !tls) throw new Error('openssl could not make a test certificate');
  const broker = await startBroker({ maxPacketBytes: options.maxPacketBytes, tls });
  cleanups.push(() => broker.close());
  const proxy = await startTcpProxy({ port: tls ? broker.tlsPort! : broker.port });
  cleanups.push(() => proxy.close());
  const fleet = await FleetObserver.connect(broker);
  cleanups.push(() => fleet.close());
  const db = openDatabase(path.join(tmp.dir, 'agent.db'));
  const { outbox, committer } = createOutbox({ db, config: OUTBOX, log });
  cleanups.push(async () => {
    await outbox.close();
    committer.close();
    db.close();
  });
  const link = new FleetLink({
    credentials: { ...DEVICE, mqttUrl: `${tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${proxy.port}` },
    fleet: { ...FLEET, ...(tls ? { caFile: tls.certFile } : {}), ...options.fleet },
    maxAttempts: OUTBOX.maxAttempts,
    outbox, log,
    reportState: () => STATE,
    random: seededRandom(1),
  });
  cleanups.push(() => link.stop());
  return { broker, proxy, fleet, db, outbox, link };
}

const event = (n: number, extra: Record<string, unknown> = {}) => ({
  kind: 'events' as const,
  body: { ts: new Date().toISOString(), kind: 'test.row', severity: 'info', message: `row ${n}`, data: { n, ...extra } },
});

/** Enqueues `count` events and resolves with their seqs once all are durable. */
async function enqueueEvents(outbox: Outbox, from: number, count: number): Promise<number[]> {
  const results = await Promise.all(Array.from({ length: count }, (_, i) => outbox.enqueue(event(from + i))));
  return results.map((r) => r.seq);
}

/** Arrival order with duplicates removed (first arrival kept). */
const dedup = (seqs: number[]) => seqs.filter((s, i) => seqs.indexOf(s) === i);
const ascending = (xs: number[]) => xs.every((x, i) => i === 0 || xs[i - 1]! < x);

describe('fleet link', () => {
  it('drains the outbox oldest first, each row exactly once, then announces the box online', async () => {
    const h = await harness();
    const before = await enqueueEvents(h.outbox, 1, 150);
    const connected = once(h.link, 'connected');
    h.link.start();
    await connected;
    const during = await enqueueEvents(h.outbox, 151, 50);
    const expected = [...before, ...during];
    await until('every event at the fleet', () => h.fleet.of('events').length >= expected.length);
    await until('outbox empty', () => h.outbox.stats().rows === 0);

    expect(h.fleet.received.filter((r) => r.invalid)).toEqual([]);
    expect(h.fleet.seqs('events')).toEqual(expected);
    const state = h.fleet.of('state').at(-1)!;
    expect(state.message).toMatchObject({ v: 1, deviceId: DEVICE.deviceId, online: true, agentVersion: '0.0.0-test', models: STATE.models });
    // Live deliveries carry retain=0 [MQTT-3.3.1-9]; a late subscriber shows what the broker retained.
    const late = await FleetObserver.connect(h.broker);
    cleanups.push(() => late.close());
    await until('retained state delivered', () => late.of('state').length > 0);
    expect(late.of('state')[0]).toMatchObject({ retain: true, message: { online: true, deviceId: DEVICE.deviceId } });
    expect(h.link.status()).toMatchObject({ state: 'connected', reconnects: 0, lastError: null });
  });

  it('keeps queueing through a cut network and delivers every seq after it heals, once after dedup, in order', async () => {
    const h = await harness();
    h.link.start();
    await once(h.link, 'connected');
    const a = await enqueueEvents(h.outbox, 1, 100);
    const disconnected = once(h.link, 'disconnected');
    h.proxy.cut();
    const [down] = await disconnected;
    expect(down.involuntary).toBe(true);
    expect(h.link.status().state).not.toBe('connected');

    const b = await enqueueEvents(h.outbox, 101, 300);
    // Offline: the rows wait in SQLite (those of batch a may or may not have made it before the cut).
    expect(h.outbox.stats().rows).toBeGreaterThanOrEqual(b.length);
    const connected = once(h.link, 'connected');
    h.proxy.restore();
    const [up] = await connected;
    expect(up).toMatchObject({ reconnect: true });
    expect(up.outageMs).toBeGreaterThan(0);

    const expected = [...a, ...b];
    await until('every seq at the fleet', () => new Set(h.fleet.seqs('events')).size >= expected.length);
    await until('outbox empty', () => h.outbox.stats().rows === 0);
    const firstArrivals = dedup(h.fleet.seqs('events'));
    expect(firstArrivals).toEqual(expected);
    expect(ascending(firstArrivals)).toBe(true);
    expect(h.link.status().reconnects).toBeGreaterThanOrEqual(1);
    expect(h.proxy.connections).toBeGreaterThanOrEqual(2);
  });

  it('notices a frozen (half-open) link within 1.5 × keepalive and recovers after it thaws, resending what was unacknowledged', async () => {
    const h = await harness();
    h.link.start();
    await once(h.link, 'connected');
    await enqueueEvents(h.outbox, 1, 5);
    await until('first rows delivered', () => h.fleet.of('events').length >= 5);

    const disconnected = once(h.link, 'disconnected');
    const frozenAt = Date.now();
    h.proxy.freeze();
    // Published into the frozen socket: no PUBACK can come back, so it must stay queued and go again later.
    const [stuck] = await enqueueEvents(h.outbox, 6, 1);
    const [down] = await disconnected;
    const noticedMs = Date.now() - frozenAt;
    if (process.env.OUTPOST_TEST_VERBOSE) console.log('half-open noticed after', noticedMs, 'ms', down.reason);
    expect(down.involuntary).toBe(true);
    // keepalive 2 s → 3 s, plus scheduling slack.
    expect(noticedMs).toBeLessThanOrEqual(3_300);
    expect(h.outbox.stats().rows).toBeGreaterThanOrEqual(1);

    const connected = once(h.link, 'connected');
    h.proxy.unfreeze();
    await connected;
    await until('the row sent into the frozen link arrives', () => h.fleet.seqs('events').includes(stuck!));
    await until('outbox empty', () => h.outbox.stats().rows === 0);
  });

  it('dead-letters a message the broker keeps refusing, without blaming the healthy rows behind it', async () => {
    // The broker closes any connection that sends a packet over 4 KiB: the 8 KiB event is poison.
    const h = await harness({ maxPacketBytes: 4096 });
    const causes: string[] = [];
    h.link.on('disconnected', (d) => causes.push(d.cause));
    const head = await enqueueEvents(h.outbox, 1, 3);
    const { seq: poison } = await h.outbox.enqueue(event(4, { blob: 'x'.repeat(8192) }));
    const tail = await enqueueEvents(h.outbox, 5, 20);
    h.link.start();
    await until('poison dead-lettered', () => h.outbox.stats().deadLettered === 1, 15_000);
    await until('healthy rows delivered', () => tail.every((s) => h.fleet.seqs('events').includes(s)), 15_000);
    await until('outbox empty', () => h.outbox.stats().rows === 0);

    const delivered = new Set(h.fleet.seqs('events'));
    expect([...head, ...tail].filter((s) => !delivered.has(s))).toEqual([]);
    expect(delivered.has(poison)).toBe(false);
    expect(h.outbox.stats().deadLettered).toBe(1);
    const dead = h.db.prepare('SELECT seq, attempts FROM outbox_dead_letter').all() as { seq: number; attempts: number }[];
    expect(dead).toEqual([{ seq: poison, attempts: OUTBOX.maxAttempts }]);
    // Each blamed drop was the broker hanging up on the poison message.
    expect(causes.filter((c) => c === 'closed-by-peer').length).toBeGreaterThanOrEqual(OUTBOX.maxAttempts);
  });

  it('never dead-letters a healthy message for drops the broker did not make (silence watchdog on a black-holed link, more than maxAttempts times)', async () => {
    // An MTU black hole: CONNECT/CONNACK pass, then nothing does. Each connection is frozen the moment it is
    // up, with rows in flight and no PUBACK on it; the watchdog drops it after 1.5 × keepalive.
    const h = await harness({ fleet: { keepaliveSeconds: 1 } });
    const rows = [...(await enqueueEvents(h.outbox, 1, 2)), (await h.outbox.enqueue(event(3, { blob: 'x'.repeat(3000) }))).seq];
    let blackHole = true;
    h.link.on('connected', () => {
      if (blackHole) h.proxy.freeze();
    });
    const causes: string[] = [];
    h.link.on('disconnected', (d) => causes.push(d.cause));
    h.link.start();
    const drops = OUTBOX.maxAttempts + 1;
    for (let round = 1; round <= drops; round++) {
      await until(`black-holed connection ${round} dropped`, () => causes.length >= round, 10_000);
      // Let the next attempt's CONNECT and CONNACK through; the listener above freezes it again once it is up.
      if (round < drops) h.proxy.unfreeze();
    }
    // Dropped by this side (mqtt.js' own keepalive timer may win the race with the watchdog), never by the broker.
    expect(causes.filter((c) => c !== 'watchdog' && c !== 'keepalive-timeout')).toEqual([]);
    expect(h.outbox.stats().deadLettered).toBe(0);
    expect(h.db.prepare('SELECT COUNT(*) AS n FROM outbox_dead_letter').get()).toEqual({ n: 0 });
    expect(h.db.prepare('SELECT MAX(attempts) AS m FROM outbox').get()).toEqual({ m: 0 });

    // The network heals: every row, the large one included, reaches the fleet.
    blackHole = false;
    h.proxy.unfreeze();
    await until('every row at the fleet', () => rows.every((s) => h.fleet.seqs('events').includes(s)), 10_000);
    expect(h.outbox.stats().deadLettered).toBe(0);
  });

  it.skipIf(spawnSync('openssl', ['version']).status !== 0)('connects over TLS (mqtts://) verifying the broker with fleet.caFile, and refuses a broker it cannot verify', async () => {
    const h = await harness({ tls: true });
    await enqueueEvents(h.outbox, 1, 10);
    h.link.start();
    await until('rows delivered over TLS', () => h.fleet.of('events').length >= 10);
    expect(h.link.status().mqttUrl).toMatch(/^mqtts:/);

    // Same broker, no CA given: the self-signed certificate is not trusted and nothing is sent.
    const untrusting = new FleetLink({
      credentials: { ...DEVICE, mqttUrl: h.link.status().mqttUrl }, fleet: FLEET, maxAttempts: 3, outbox: h.outbox, log, reportState: () => STATE,
    });
    cleanups.push(() => untrusting.stop());
    untrusting.start();
    await until('TLS refusal recorded', () => /certificate/i.test(untrusting.status().lastError ?? ''));
    expect(untrusting.status().state).not.toBe('connected');
  });

  it('stops gracefully: the fleet keeps {online:false, reason:"shutdown"} as the retained state, not the will', async () => {
    const h = await harness();
    h.link.start();
    await once(h.link, 'connected');
    await until('online state at the fleet', () => h.fleet.of('state').some((r) => r.message?.online === true));
    await h.link.stop();
    expect(h.link.status().state).toBe('stopped');
    await until('shutdown state at the fleet', () => h.fleet.of('state').some((r) => r.message?.reason === 'shutdown'));
    // A late subscriber sees what the broker retained: the shutdown state (a will would say connection-lost).
    const late = await FleetObserver.connect(h.broker);
    cleanups.push(() => late.close());
    await until('retained state delivered', () => late.of('state').length > 0);
    expect(late.of('state')[0]!.message).toMatchObject({ online: false, reason: 'shutdown', deviceId: DEVICE.deviceId });
    expect(h.fleet.of('state').some((r) => r.message?.reason === 'connection-lost')).toBe(false);
  });

  it('stop() returns promptly while an attempt hangs on a silent broker or a long backoff sleeps', async () => {
    const h = await harness({ fleet: { reconnectMinMs: 30_000, reconnectMaxMs: 60_000, connectTimeoutMs: 20_000 } });
    h.proxy.freeze();
    h.link.start();
    await until('connection attempt reached the proxy', () => h.proxy.connections >= 1);
    let started = Date.now();
    await h.link.stop();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(h.link.status().state).toBe('stopped');

    // A refused first attempt puts the next one ≥ 30 s away; stop must not wait for it.
    const h2 = await harness({ fleet: { reconnectMinMs: 30_000, reconnectMaxMs: 60_000 } });
    h2.proxy.cut();
    h2.link.start();
    await until('first attempt failed', () => h2.link.status().state === 'disconnected' && h2.link.status().lastError !== null);
    started = Date.now();
    await h2.link.stop();
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('when the link is lost, the broker publishes the retained will {online:false, reason:"connection-lost"}', async () => {
    const h = await harness();
    h.link.start();
    await once(h.link, 'connected');
    await until('online state at the fleet', () => h.fleet.of('state').some((r) => r.message?.online === true));
    h.proxy.cut();
    await until('will at the fleet', () => h.fleet.of('state').some((r) => r.message?.reason === 'connection-lost'));
    const will = h.fleet.of('state').find((r) => r.message?.reason === 'connection-lost')!;
    expect(will.message).toMatchObject({ v: 1, deviceId: DEVICE.deviceId, online: false });
    expect(will.message).not.toHaveProperty('seq');
  });
});
