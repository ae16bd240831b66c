import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentConfig } from '../../agent/src/config/schema.js';
import { FleetLink } from '../../agent/src/link/fleet-link.js';
import { createOutbox } from '../../agent/src/outbox/create-outbox.js';
import { openDatabase } from '../../agent/src/storage/database.js';
import { eventually } from '../helpers/fleet.js';
import { GENERATED_REPOSITORY, GENERATED_SAMPLES } from '../helpers/paths.js';
import { enrollAgentProcess, ProcessGroup, startAgentProcess, startDetectLoad, startFleetProcess, windowSeams, type FleetProcess } from '../helpers/processes.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * A network outage between a real agent process and a real fleet process (research §5.2 N1, N4): the fleet
 * server runs from dist/ with its embedded broker, the agent runs from dist/ serving the demo model,
 * enrolled with `outpost-agent enroll`, and its MQTT goes through a TCP proxy the test cuts and freezes.
 * Cameras keep getting detections while the uplink is down, and once it heals the fleet counts every
 * request exactly once, in windows that tile time without gaps or overlaps.
 */
const procs = new ProcessGroup();
const cleanups: (() => Promise<void> | void)[] = [];
const verbose = process.env.OUTPOST_TEST_VERBOSE !== undefined;
const log = pino({ level: process.env.OUTPOST_TEST_LOG ?? 'silent' });

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(procs.report());
  await procs.killAll();
  for (const c of cleanups.splice(0).reverse()) await c();
});

const MODEL = 'demo-shapes';
const FRAME = readFileSync(path.join(GENERATED_SAMPLES, 'shapes.jpg'));
/** Telemetry every second, the fastest reconnect the schema allows, no system sampling (not under test). */
const AGENT_CONFIG = {
  telemetry: { schedule: '* * * * * *', system: false },
  fleet: { keepaliveSeconds: 5, connectTimeoutMs: 2_000, reconnectMinMs: 50, reconnectMaxMs: 500 },
};

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-outage-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The fleet process with devices told to connect through a proxy in front of its broker. */
async function fleetBehindProxy(dir: string): Promise<{ fleet: FleetProcess; proxy: TcpProxy }> {
  const proxy = await startTcpProxy();
  cleanups.push(() => proxy.close());
  const fleet = await startFleetProcess(procs, { dataDir: path.join(dir, 'fleet'), config: { broker: { publicUrl: `mqtt://127.0.0.1:${proxy.port}` } } });
  proxy.setTarget({ port: fleet.brokerPort });
  return { fleet, proxy };
}

async function enrollmentToken(fleet: FleetProcess): Promise<string> {
  const r = await fleet.api('POST', '/api/v1/enrollment-tokens', { tags: { site: 'e2e' } });
  if (r.status !== 201) throw new Error(`enrollment-tokens answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body.token as string;
}

const ascending = (xs: number[]) => xs.every((x, i) => i === 0 || xs[i - 1]! < x);

describe('fleet outage, real processes', () => {
  it('cameras keep getting detections through a cut uplink, and afterwards the fleet counts every request exactly once', async () => {
    const dir = tempDir();
    const t0 = Date.now();
    const { fleet, proxy } = await fleetBehindProxy(dir);
    const agentDir = path.join(dir, 'agent');
    mkdirSync(agentDir);
    const deviceId = await enrollAgentProcess(procs, { fleetUrl: fleet.httpUrl, token: await enrollmentToken(fleet), dataDir: agentDir });
    const repository = path.join(dir, 'models');
    cpSync(path.join(GENERATED_REPOSITORY, MODEL), path.join(repository, MODEL), { recursive: true });
    const agent = await startAgentProcess(procs, { dataDir: agentDir, repository, config: AGENT_CONFIG });
    await eventually(async () => (await fleet.device(deviceId)).online === true, 'the device online at the fleet', 10_000);

    const load = startDetectLoad({ baseUrl: () => agent.url, model: MODEL, image: FRAME, concurrency: 2 });
    cleanups.push(() => load.stop());
    // Before: traffic is counted at the fleet while the link is up.
    await eventually(async () => (await fleet.modelMetrics(deviceId, MODEL, t0)).requests > 0, 'requests counted at the fleet before the cut', 10_000);

    const okBeforeCut = load.ok();
    const cutAt = Date.now();
    proxy.cut();
    // The broker sees the connection drop and publishes the device's last will.
    await eventually(async () => (await fleet.device(deviceId)).online === false, 'the device offline at the fleet (last will)', 5_000);
    const offlineAfterMs = Date.now() - cutAt;
    // During: several telemetry windows pile up in the agent's outbox while the cameras keep being served.
    await eventually(async () => {
      const s = await agent.status();
      return s.link.state !== 'connected' && s.outbox.rows >= 5 && load.ok() - okBeforeCut >= 20;
    }, 'five queued telemetry windows and 20 detections during the cut', 15_000);
    const servedDuringCut = load.ok() - okBeforeCut;
    const answeredDuringCut = load.answers.filter((a) => a.at > cutAt);
    const queuedAtRestore = (await agent.status()).outbox.rows as number;

    const restoreAt = Date.now();
    const cutMs = restoreAt - cutAt;
    proxy.restore();
    await eventually(async () => (await fleet.device(deviceId)).online === true, 'the device online again', 10_000);
    // Drained: the agent's outbox is empty (a new window is queued every second and goes at once).
    await eventually(async () => (await agent.status()).outbox.rows === 0, 'the outbox drained', 10_000);
    const drainMs = Date.now() - restoreAt;
    // After: traffic goes on until a window that started after the restore has arrived.
    await eventually(async () => (await fleet.modelMetrics(deviceId, MODEL, t0)).points.some((p) => Date.parse(p.windowStart) >= restoreAt && p.requests > 0), 'post-restore traffic counted', 10_000);
    await load.stop();
    const stoppedAt = Date.now();
    const sent = load.answers.length;

    // Every window up to one that began after the last answer (the drain is oldest first, so all earlier ones are in).
    await eventually(async () => (await fleet.modelMetrics(deviceId, MODEL, t0)).points.some((p) => Date.parse(p.windowStart) >= stoppedAt), 'a window after the load stopped', 10_000);
    const m = await fleet.modelMetrics(deviceId, MODEL, t0);
    const events = (await fleet.api('GET', `/api/v1/devices/${deviceId}/events?limit=1000`)).body.events as { seq: number; kind: string; data: Record<string, unknown> }[];
    const arrived = fleet.arrivals(deviceId);
    const dups = await fleet.duplicatesDropped();
    if (verbose) {
      console.log(`[outage] cut ${cutMs} ms: ${servedDuringCut} detections served during it, ${queuedAtRestore} rows queued; will after ${offlineAfterMs} ms; backlog drained ${drainMs} ms after restore; ${sent} requests sent, fleet counted ${m.requests} in ${m.points.length} windows; ${dups} redeliveries dropped by dedup`);
    }

    expect(servedDuringCut).toBeGreaterThan(0);
    expect(answeredDuringCut.filter((a) => a.status !== 200)).toEqual([]);
    expect(load.failures).toEqual([]);
    expect(load.answers.filter((a) => a.status !== 200)).toEqual([]);
    // 0 lost, 0 counted twice.
    expect(m.requests).toBe(sent);
    expect(m.failures).toBe(0);
    const seqs = m.points.map((p) => p.seq);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(ascending(seqs)).toBe(true);
    expect(windowSeams(m.points)).toEqual([]);
    // Windows closed during the cut are there, each with its own interval.
    expect(m.points.filter((p) => Date.parse(p.windowEnd) > cutAt && Date.parse(p.windowEnd) < restoreAt).length).toBeGreaterThanOrEqual(3);

    // Events emitted meanwhile: each once, in seq order.
    const eventSeqs = events.map((e) => e.seq);
    expect(ascending(eventSeqs)).toBe(true);
    expect(events.filter((e) => e.kind === 'model.loaded')).toHaveLength(1);
    const reconnected = events.filter((e) => e.kind === 'link.reconnected');
    expect(reconnected).toHaveLength(1);
    expect(reconnected[0]!.data.outageMs as number).toBeGreaterThanOrEqual(cutMs - 1_000);
    // Every message first reached the fleet in seq order (received_at never goes backwards along seq).
    const backwards = arrived.filter((a, i) => i > 0 && a.received_at < arrived[i - 1]!.received_at);
    expect(backwards).toEqual([]);
    expect(arrived.filter((a) => a.kind === 'telemetry').length).toBeGreaterThanOrEqual(m.points.length);
  });

  it('a half-open partition: the fleet shows the device offline by its last will within 1.5 × keepalive, and online again after it thaws', async () => {
    const dir = tempDir();
    const { fleet, proxy } = await fleetBehindProxy(dir);
    const token = await enrollmentToken(fleet);
    const enrolled = await fetch(`${fleet.httpUrl}/api/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
    expect(enrolled.status).toBe(201);
    const credentials = (await enrolled.json()) as { deviceId: string; secret: string; mqttUrl: string };
    expect(credentials.mqttUrl).toBe(`mqtt://127.0.0.1:${proxy.port}`);

    // The agent's link and outbox in this process: the product's schema floor for keepalive is 5 s, the link takes 2.
    const keepaliveSeconds = 2;
    const db = openDatabase(path.join(dir, 'agent.db'));
    const { outbox, committer } = createOutbox({ db, config: { maxRows: 10_000, maxBytes: 16 * 1024 * 1024, groupCommitMs: 5, groupCommitRows: 100, maxAttempts: 5 }, log });
    const fleetConfig: AgentConfig['fleet'] = { keepaliveSeconds, connectTimeoutMs: 1_000, reconnectMinMs: 50, reconnectMaxMs: 400, inflightWindow: 16, caFile: undefined };
    const link = new FleetLink({
      credentials, fleet: fleetConfig, maxAttempts: 5, outbox, log,
      reportState: () => ({ agentVersion: '0.0.0-test', startedAt: new Date().toISOString(), provider: 'cpu', models: [], hardware: {} }),
    });
    cleanups.push(async () => {
      await link.stop();
      await outbox.close();
      committer.close();
      db.close();
    });
    link.start();
    await eventually(async () => (await fleet.device(credentials.deviceId)).online === true, 'the device online', 10_000);

    const frozenAt = Date.now();
    proxy.freeze();
    await eventually(async () => (await fleet.device(credentials.deviceId)).online === false, 'the device offline at the fleet', 10_000);
    const offlineAfterMs = Date.now() - frozenAt;
    // The broker's keepalive rule: nothing heard for 1.5 × keepalive → the connection is dead, the will goes out.
    // Slack: REST polling, and the link's last PINGREQ may have been just before the freeze.
    expect(offlineAfterMs).toBeLessThanOrEqual(keepaliveSeconds * 1500 + 1_500);
    expect((await fleet.device(credentials.deviceId)).lastSeen).not.toBeNull();

    const thawedAt = Date.now();
    proxy.unfreeze();
    await eventually(async () => (await fleet.device(credentials.deviceId)).online === true, 'the device online after the thaw', 10_000);
    const onlineAfterMs = Date.now() - thawedAt;
    // And it stays online: an event sent after the reconnect arrives, and no late will overrode the state.
    const { seq } = await outbox.enqueue({ kind: 'events', body: { ts: new Date().toISOString(), kind: 'test.after-thaw', severity: 'info', message: 'after thaw', data: {} } });
    await eventually(async () => ((await fleet.api('GET', `/api/v1/devices/${credentials.deviceId}/events`)).body.events as { seq: number }[]).some((e) => e.seq === seq), 'the event after the thaw', 10_000);
    expect((await fleet.device(credentials.deviceId)).online).toBe(true);
    if (verbose) console.log(`[half-open] keepalive ${keepaliveSeconds} s: fleet saw the device offline ${offlineAfterMs} ms after the freeze, online ${onlineAfterMs} ms after the thaw`);
    expect(onlineAfterMs).toBeLessThanOrEqual(5_000);
  });
});
