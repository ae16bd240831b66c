import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentConfig } from '../../agent/src/config/schema.js';
import { FleetLink } from '../../agent/src/link/fleet-link.js';
import { createOutbox } from '../../agent/src/outbox/create-outbox.js';
import type { Outbox } from '../../agent/src/outbox/types.js';
import { openDatabase } from '../../agent/src/storage/database.js';
import { enrollDevice, eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';
import { parseMetrics, samples } from '../helpers/prom-text.js';

/**
 * A broker restart with many connected agents (research §5.1 C4, §5.7 F3): 50 agents' real fleet links, each
 * with its real SQLite outbox in its own file, connected to a real in-process fleet server (embedded aedes,
 * REST enrollment, ingest). The fleet stops; while it is down every agent queues events and keeps knocking
 * on a port that hangs up on it; a new fleet starts on the same ports and data dir. Every event arrives
 * exactly once, in order, and the agents come back spread over their backoff window rather than in step.
 */
const AGENTS = 50;
const EVENTS_PER_AGENT = 20;
const FLEET: AgentConfig['fleet'] = { keepaliveSeconds: 5, connectTimeoutMs: 1_000, reconnectMinMs: 100, reconnectMaxMs: 1_000, inflightWindow: 16, caFile: undefined };
const OUTBOX: AgentConfig['outbox'] = { maxRows: 10_000, maxBytes: 16 * 1024 * 1024, groupCommitMs: 20, groupCommitRows: 100, maxAttempts: 5 };
const log = pino({ level: process.env.OUTPOST_TEST_LOG ?? 'silent' });
const verbose = process.env.OUTPOST_TEST_VERBOSE !== undefined;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Box {
  deviceId: string;
  outbox: Outbox;
  link: FleetLink;
  /** When this box's link came up, epoch ms, in order. */
  connectedAt: number[];
}

function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function startBox(f: RunningFleet, dir: string, i: number): Promise<Box> {
  const enrolled = await enrollDevice(f, { tags: { rack: String(i % 5) } });
  const db = openDatabase(path.join(dir, `box-${i}.db`));
  const { outbox, committer } = createOutbox({ db, config: OUTBOX, log });
  // The product's jitter source (Math.random): what is under test is that real boxes do not reconnect in step.
  const link = new FleetLink({
    credentials: enrolled, fleet: FLEET, maxAttempts: OUTBOX.maxAttempts, outbox, log,
    reportState: () => ({ agentVersion: '0.0.0-test', startedAt: new Date().toISOString(), provider: 'cpu', models: [], hardware: {} }),
  });
  const box: Box = { deviceId: enrolled.deviceId, outbox, link, connectedAt: [] };
  link.on('connected', () => box.connectedAt.push(Date.now()));
  cleanups.push(async () => {
    await link.stop();
    await outbox.close();
    committer.close();
    db.close();
  });
  return box;
}

const event = (n: number) => ({ kind: 'events' as const, body: { ts: new Date().toISOString(), kind: 'test.queued', severity: 'info', message: `queued ${n}`, data: { n } } });

/**
 * A listener on the broker's port that hangs up on everyone (the broker is down, its port does not answer MQTT),
 * noting when each client tried: the client id is read from the CONNECT packet the client sends first.
 */
async function hangUpOn(port: number): Promise<{ attempts: Map<string, number[]>; close(): Promise<void> }> {
  const attempts = new Map<string, number[]>();
  const server = net.createServer((socket) => {
    const at = Date.now();
    let head = Buffer.alloc(0);
    socket.on('error', () => undefined);
    socket.setTimeout(1_000, () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const id = connectClientId(head);
      if (id === undefined) return;
      attempts.set(id, [...(attempts.get(id) ?? []), at]);
      socket.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
  return { attempts, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** The client id of an MQTT 3.1.1 CONNECT packet, once enough of it has arrived (undefined until then). */
function connectClientId(b: Buffer): string | undefined {
  if (b.length < 2 || b[0] !== 0x10) return undefined;
  let i = 1;
  while (i < b.length && i < 5 && (b[i]! & 0x80) !== 0) i++;
  // fixed header, then protocol name (2 + 4 bytes "MQTT"), level, flags, keepalive (2), client id (2 + n)
  const at = i + 1 + 6 + 1 + 1 + 2;
  if (b.length < at + 2) return undefined;
  const len = b.readUInt16BE(at);
  return b.length < at + 2 + len ? undefined : b.subarray(at + 2, at + 2 + len).toString('utf8');
}

/** Spread (max − min) of times and the largest number of them in one 100 ms slice. */
function herd(times: number[]): { spreadMs: number; busiestSlice: number } {
  const slices = new Map<number, number>();
  for (const t of times) slices.set(Math.floor(t / 100), (slices.get(Math.floor(t / 100)) ?? 0) + 1);
  return { spreadMs: Math.max(...times) - Math.min(...times), busiestSlice: Math.max(...slices.values()) };
}

describe('broker restart with 50 connected agents', () => {
  it('every event queued while the fleet was down arrives exactly once, and the agents reconnect spread by jitter', async () => {
    const dataDir = tempDir('outpost-restart-fleet-');
    const boxesDir = tempDir('outpost-restart-boxes-');
    const f1 = await startFleet({ dataDir });
    let f1Stopped = false;
    cleanups.push(async () => {
      if (!f1Stopped) await f1.stop();
    });
    const brokerPort = Number(new URL(f1.mqttUrl).port);
    const httpPort = Number(new URL(f1.httpUrl).port);
    const boxes: Box[] = [];
    for (let i = 0; i < AGENTS; i++) boxes.push(await startBox(f1, boxesDir, i));
    for (const b of boxes) b.link.start();
    await eventually(() => boxes.every((b) => b.link.connected), 'every link up', 15_000);
    await eventually(async () => (await f1.api('GET', '/api/v1/devices')).body.devices.filter((d: { online: boolean }) => d.online).length === AGENTS, 'every device online at the fleet', 15_000);

    // Broker down.
    const downAt = Date.now();
    await f1.stop();
    f1Stopped = true;
    await eventually(() => boxes.every((b) => !b.link.connected), 'every link down', 5_000);
    const down = await hangUpOn(brokerPort);
    let downClosed = false;
    cleanups.push(async () => {
      if (!downClosed) await down.close();
    });
    const queued = await Promise.all(boxes.map(async (b) => (await Promise.all(Array.from({ length: EVENTS_PER_AGENT }, (_, n) => b.outbox.enqueue(event(n))))).map((r) => r.seq)));
    // Down long enough that every box has knocked four more times since the queueing (which holds the event
    // loop for its fsyncs and would bunch the timestamps taken meanwhile): each of those tries comes after
    // several jittered delays.
    const knockFrom = Date.now();
    const KNOCKS = 4;
    const knocksOf = (b: Box) => (down.attempts.get(b.deviceId) ?? []).filter((t) => t > knockFrom);
    await eventually(() => boxes.every((b) => knocksOf(b).length >= KNOCKS), `every box knocking ${KNOCKS} times on the dead port`, 15_000);
    const downForMs = Date.now() - downAt;
    const attemptsWhileDown = [...down.attempts.values()].reduce((n, a) => n + a.length, 0);
    const knocks = herd(boxes.map((b) => knocksOf(b)[KNOCKS - 1]! - downAt));

    // Broker back: a new fleet on the same ports and data dir.
    const seenBefore = boxes.map((b) => b.connectedAt.length);
    await down.close();
    downClosed = true;
    const upAt = Date.now();
    const f2 = await startFleet({ dataDir, config: { broker: { port: brokerPort }, http: { port: httpPort } } });
    cleanups.push(() => f2.stop());
    await eventually(() => boxes.every((b, i) => b.connectedAt.length > seenBefore[i]!), 'every link back', 10_000);
    await eventually(() => boxes.every((b) => b.outbox.stats().rows === 0), 'every outbox drained', 15_000);
    await eventually(() => boxes.every((b) => storedEvents(f2, b.deviceId).length >= EVENTS_PER_AGENT), 'every event at the fleet', 10_000);

    // Reported, not asserted: these CONNACK times also carry the in-process broker's own work (auth, ingest).
    const back = boxes.map((b, i) => b.connectedAt[seenBefore[i]!]! - upAt).sort((a, b) => a - b);
    const reconnects = herd(back);
    const dups = samples(parseMetrics(await f2.fleet.metrics.registry.metrics()), 'outpost_fleet_duplicate_messages_total').reduce((n, x) => n + x.value, 0);
    if (verbose) {
      console.log(`[broker-restart] ${AGENTS} agents, ${attemptsWhileDown} connection attempts in ${downForMs} ms down; try #${KNOCKS} after the queueing: spread ${knocks.spreadMs} ms, busiest 100 ms slice ${knocks.busiestSlice}/${AGENTS}; back after the restart: p50 ${back[Math.floor(AGENTS / 2)]} ms, p99 ${back[Math.ceil(AGENTS * 0.99) - 1]} ms, spread ${reconnects.spreadMs} ms, busiest slice ${reconnects.busiestSlice}/${AGENTS}; ${AGENTS * EVENTS_PER_AGENT} events, ${dups} redeliveries dropped by dedup`);
    }

    // Exactly once, in order: the fleet holds each queued seq once and nothing else of that kind.
    for (const [i, b] of boxes.entries()) {
      const stored = storedEvents(f2, b.deviceId).filter((e) => e.kind === 'test.queued');
      expect({ device: b.deviceId, seqs: stored.map((e) => e.seq) }).toEqual({ device: b.deviceId, seqs: queued[i] });
      const arrivals = f2.fleet.store.db.prepare('SELECT received_at FROM received WHERE device_id = ? ORDER BY seq').all(b.deviceId) as { received_at: string }[];
      expect(arrivals.every((a, k) => k === 0 || arrivals[k - 1]!.received_at <= a.received_at)).toBe(true);
    }
    const online = (await f2.api('GET', '/api/v1/devices')).body.devices.filter((d: { online: boolean }) => d.online).length;
    expect(online).toBe(AGENTS);
    // No thundering herd. All 50 lost the broker at the same instant; without jitter those tries would land
    // together (one 100 ms slice). With full jitter they spread over a good part of the backoff window and no
    // slice holds 40 % of the fleet (about 10 % each is typical).
    expect(knocks.spreadMs).toBeGreaterThanOrEqual(FLEET.reconnectMaxMs * 0.3);
    expect(knocks.busiestSlice).toBeLessThan(AGENTS * 0.4);
    // While down, nobody hammered: no box tried more often than its backoff floor allows.
    for (const b of boxes) {
      const times = knocksOf(b);
      const gaps = times.slice(1).map((t, k) => t - times[k]!);
      expect({ id: b.deviceId, tooSoon: gaps.filter((g) => g < FLEET.reconnectMinMs - 5) }).toEqual({ id: b.deviceId, tooSoon: [] });
    }
    expect(back.at(-1)!).toBeLessThan(FLEET.reconnectMaxMs + 5_000);
  });
});

function storedEvents(f: RunningFleet, deviceId: string): { seq: number; kind: string }[] {
  return f.fleet.store.db.prepare('SELECT seq, kind FROM events WHERE device_id = ? ORDER BY seq').all(deviceId) as { seq: number; kind: string }[];
}
