import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { FleetLink } from '../../agent/src/link/fleet-link.js';
import { createOutbox } from '../../agent/src/outbox/create-outbox.js';
import { openDatabase } from '../../agent/src/storage/database.js';
import { eventually } from '../helpers/fleet.js';
import { GENERATED_REPOSITORY, GENERATED_SAMPLES } from '../helpers/paths.js';
import { enrollAgentProcess, freePort, ProcessGroup, startAgentProcess, startDetectLoad, startFleetProcess, windowSeams, type AgentProcess, type FleetProcess } from '../helpers/processes.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * kill -9 of the agent process (research §5.1 C3): in the middle of draining a backlog to the fleet, and under
 * load while connected. The fleet server and the agent run from dist/, the agent's MQTT goes through a proxy
 * that can cut and throttle it. What the operator must see afterwards: every request the cameras got an
 * answer for counted exactly once (lost = 0, duplicates = 0 after the fleet's dedup), except at most the
 * requests of the last moment before the crash — never one answered a second before it, never one too many.
 * And kill -9 of the fleet server (C4) in the middle of ingesting a backlog: nothing the agent handed over is lost.
 */
const procs = new ProcessGroup();
const log = pino({ level: process.env.OUTPOST_TEST_LOG ?? 'silent' });
const cleanups: (() => Promise<void> | void)[] = [];
const verbose = process.env.OUTPOST_TEST_VERBOSE !== undefined;

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(procs.report());
  await procs.killAll();
  for (const c of cleanups.splice(0).reverse()) await c();
});

const MODEL = 'demo-shapes';
const FRAME = readFileSync(path.join(GENERATED_SAMPLES, 'shapes.jpg'));
const AGENT_CONFIG = {
  telemetry: { schedule: '* * * * * *', system: false },
  fleet: { keepaliveSeconds: 5, connectTimeoutMs: 2_000, reconnectMinMs: 50, reconnectMaxMs: 500 },
};

interface Outpost {
  dir: string;
  fleet: FleetProcess;
  proxy: TcpProxy;
  deviceId: string;
  agentDir: string;
  repository: string;
  agent: AgentProcess;
  /** Starts the agent process again on the same data dir (after a kill -9). */
  restartAgent(): Promise<AgentProcess>;
}

/** Fleet process, proxy in front of its broker, one agent process enrolled through the CLI and connected. */
async function outpost(): Promise<Outpost> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-crash-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const proxy = await startTcpProxy();
  cleanups.push(() => proxy.close());
  const fleet = await startFleetProcess(procs, { dataDir: path.join(dir, 'fleet'), config: { broker: { publicUrl: `mqtt://127.0.0.1:${proxy.port}` } } });
  proxy.setTarget({ port: fleet.brokerPort });
  const token = await fleet.api('POST', '/api/v1/enrollment-tokens', {});
  const agentDir = path.join(dir, 'agent');
  mkdirSync(agentDir);
  const deviceId = await enrollAgentProcess(procs, { fleetUrl: fleet.httpUrl, token: token.body.token, dataDir: agentDir });
  const repository = path.join(dir, 'models');
  cpSync(path.join(GENERATED_REPOSITORY, MODEL), path.join(repository, MODEL), { recursive: true });
  const start = (name: string) => startAgentProcess(procs, { dataDir: agentDir, repository, config: AGENT_CONFIG, name });
  const o: Outpost = {
    dir, fleet, proxy, deviceId, agentDir, repository,
    agent: await start('agent'),
    async restartAgent() {
      o.agent = await start('agent-restarted');
      return o.agent;
    },
  };
  await eventually(async () => (await fleet.device(deviceId)).online === true, 'the device online at the fleet', 10_000);
  return o;
}

const ascending = (xs: number[]) => xs.every((x, i) => i === 0 || xs[i - 1]! < x);

describe('kill -9 of the agent, real processes', () => {
  it('killed in the middle of draining a backlog and restarted on the same data dir: every request counted exactly once', async () => {
    const t0 = Date.now();
    const o = await outpost();
    const load = startDetectLoad({ baseUrl: () => o.agent.url, model: MODEL, image: FRAME, concurrency: 2 });
    cleanups.push(() => load.stop());
    await eventually(async () => (await o.fleet.modelMetrics(o.deviceId, MODEL, t0)).requests > 0, 'requests counted before the cut', 10_000);

    // A backlog: windows pile up in the outbox while the uplink is cut and the cameras are served.
    const cutAt = Date.now();
    o.proxy.cut();
    await eventually(async () => (await o.agent.status()).outbox.rows >= 4 && load.ok() > 0, 'four windows queued', 10_000);
    await load.stop();
    const sent = load.answers.length;
    expect(load.answers.filter((a) => a.status !== 200)).toEqual([]);
    expect(load.failures).toEqual([]);
    // One more window closes after the last answer, so every count is in an outbox row before the drain starts.
    const queuedAfterLoad = (await o.agent.status()).outbox.rows as number;
    await eventually(async () => (await o.agent.status()).outbox.rows > queuedAfterLoad, 'a window closed after the load', 5_000);
    const backlog = (await o.agent.status()).outbox.rows as number;
    const atFleetBefore = (await o.fleet.modelMetrics(o.deviceId, MODEL, t0)).points.length;

    // A slow uplink (each telemetry message takes about half a second), so the drain can be watched and cut short.
    o.proxy.throttle(1_500);
    const restoreAt = Date.now();
    o.proxy.restore();
    const partial = await eventually(async () => {
      const m = await o.fleet.modelMetrics(o.deviceId, MODEL, t0);
      const arrived = m.points.length - atFleetBefore;
      return arrived >= 2 && arrived < backlog - 1 ? { arrived, requests: m.requests } : undefined;
    }, 'part of the backlog at the fleet', 15_000);
    const killedAt = Date.now();
    await o.agent.proc.kill9();
    const atKill = await o.fleet.modelMetrics(o.deviceId, MODEL, t0);
    expect(atKill.requests).toBeLessThan(sent);

    o.proxy.throttle(null);
    const restartedAt = Date.now();
    const agent = await o.restartAgent();
    await eventually(async () => (await o.fleet.modelMetrics(o.deviceId, MODEL, t0)).points.some((p) => Date.parse(p.windowStart) >= restartedAt), 'a window of the restarted agent at the fleet', 15_000);
    const drainedMs = Date.now() - restartedAt;
    const m = await o.fleet.modelMetrics(o.deviceId, MODEL, t0);
    const dups = await o.fleet.duplicatesDropped();
    if (verbose) {
      console.log(`[crash-drain] ${sent} requests, backlog ${backlog} rows; throttled drain: ${partial.arrived} windows (${partial.requests} requests) at the fleet ${killedAt - restoreAt} ms after restore when killed; restarted agent finished the drain in ${drainedMs} ms; fleet counted ${m.requests}; ${dups} redeliveries dropped by dedup`);
    }

    expect(m.requests).toBe(sent);
    expect(m.failures).toBe(0);
    const seqs = m.points.map((p) => p.seq);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(ascending(seqs)).toBe(true);
    // The windows tile time except one gap: while the agent was dead nothing was served (its open window was empty).
    const seams = windowSeams(m.points);
    expect(seams.filter((s) => s.kind === 'overlap')).toEqual([]);
    expect(seams.length).toBeLessThanOrEqual(1);
    for (const s of seams) {
      expect(Date.parse(s.from)).toBeLessThanOrEqual(killedAt);
      expect(Date.parse(s.to)).toBeGreaterThanOrEqual(restartedAt - 5_000);
    }
    expect((await agent.status()).outbox.rows).toBeLessThanOrEqual(1);
    // Time went on between the cut and the restore: each queued window kept its own interval.
    expect(m.points.filter((p) => Date.parse(p.windowEnd) > cutAt && Date.parse(p.windowEnd) <= restoreAt).length).toBeGreaterThanOrEqual(3);
  });

  it('killed under load while connected: every request answered a second before the crash is counted, exactly once, and none too many', async () => {
    const t0 = Date.now();
    const o = await outpost();
    const load = startDetectLoad({ baseUrl: () => o.agent.url, model: MODEL, image: FRAME, concurrency: 2 });
    cleanups.push(() => load.stop());
    // Some windows reach the fleet, and the load runs well past a second more before the crash.
    await eventually(async () => (await o.fleet.modelMetrics(o.deviceId, MODEL, t0)).points.filter((p) => p.requests > 0).length >= 2, 'two windows with traffic at the fleet', 10_000);
    const from = load.ok();
    await eventually(() => load.ok() >= from + 40, '40 more answers', 10_000);

    const killAt = Date.now();
    await o.agent.proc.kill9();
    await load.stop();
    const answered = load.answers.filter((a) => a.status === 200);
    expect(load.answers.filter((a) => a.status !== 200)).toEqual([]);
    const answeredBy = (ms: number) => answered.filter((a) => a.at <= ms).length;
    const safe = answeredBy(killAt - 1_000);

    const restartedAt = Date.now();
    await o.restartAgent();
    // Drained oldest first: once a window of the new process is in, every older one is.
    await eventually(async () => (await o.fleet.modelMetrics(o.deviceId, MODEL, t0)).points.some((p) => Date.parse(p.windowStart) >= restartedAt), 'a window of the restarted agent at the fleet', 15_000);
    const m = await o.fleet.modelMetrics(o.deviceId, MODEL, t0);
    if (verbose) {
      console.log(`[crash-load] ${answered.length} answered before the kill (${safe} of them ≥ 1 s before, ${answered.length - answeredBy(killAt - 100)} in its last 100 ms); fleet counted ${m.requests} (${answered.length - m.requests} lost at the crash); ${load.failures.length} requests cut off by it`);
    }
    expect(m.requests).toBeGreaterThanOrEqual(safe);
    expect(m.requests).toBeLessThanOrEqual(answered.length);
    const seqs = m.points.map((p) => p.seq);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(ascending(seqs)).toBe(true);
    // The killed process's open window, stored with its counts, is continued by the new one's first window, so
    // no overlap. A gap is possible only when that window held no committed count yet (a kill within one
    // group commit of a window closing), and then only across the crash.
    const seams = windowSeams(m.points);
    expect(seams.filter((s) => s.kind === 'overlap')).toEqual([]);
    expect(seams.length).toBeLessThanOrEqual(1);
    for (const s of seams) expect(Date.parse(s.from)).toBeLessThanOrEqual(killAt);
  });
  it('the fleet server killed in the middle of ingesting a backlog, restarted on its data dir and ports: every event stored exactly once', async () => {
    // Regression: the embedded broker PUBACKed before the fleet stored a message, and the agent deletes on PUBACK.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-fleet-kill-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const config = { http: { port: await freePort() }, broker: { port: await freePort() } };
    const dataDir = path.join(dir, 'fleet');
    let fleet = await startFleetProcess(procs, { dataDir, config });
    const token = await fleet.api('POST', '/api/v1/enrollment-tokens', {});
    const enrolled = await fetch(`${fleet.httpUrl}/api/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: token.body.token }) });
    const credentials = (await enrolled.json()) as { deviceId: string; secret: string; mqttUrl: string };

    // The agent's outbox and link in this process, with a backlog queued before the link starts.
    const BACKLOG = 2_000;
    const db = openDatabase(path.join(dir, 'agent.db'));
    const { outbox, committer } = createOutbox({ db, config: { maxRows: 100_000, maxBytes: 64 * 1024 * 1024, groupCommitMs: 5, groupCommitRows: 500, maxAttempts: 5 }, log });
    const seqs = (await Promise.all(Array.from({ length: BACKLOG }, (_, n) => outbox.enqueue({ kind: 'events', body: { ts: new Date().toISOString(), kind: 'test.backlog', severity: 'info', message: `backlog ${n}`, data: { n } } })))).map((r) => r.seq);
    const link = new FleetLink({
      credentials, fleet: { keepaliveSeconds: 5, connectTimeoutMs: 1_000, reconnectMinMs: 50, reconnectMaxMs: 300, inflightWindow: 16, caFile: undefined }, maxAttempts: 5, outbox, log,
      reportState: () => ({ agentVersion: '0.0.0-test', startedAt: new Date().toISOString(), provider: 'cpu', models: [], hardware: {} }),
    });
    cleanups.push(async () => {
      await link.stop();
      await outbox.close();
      committer.close();
      db.close();
    });
    const storedEvents = (f: FleetProcess) => f.arrivals(credentials.deviceId).filter((a) => a.kind === 'events');
    const startedAt = Date.now();
    link.start();
    await eventually(() => storedEvents(fleet).length >= BACKLOG / 10, 'part of the backlog stored', 15_000);
    await fleet.proc.kill9();
    const atKill = storedEvents(fleet).length;
    const handedOver = BACKLOG - outbox.stats().rows;
    expect(atKill).toBeLessThan(BACKLOG);

    const restartedAt = Date.now();
    fleet = await startFleetProcess(procs, { dataDir, config, name: 'fleet-restarted' });
    await eventually(() => outbox.stats().rows === 0, 'the outbox drained into the restarted fleet', 20_000);
    await eventually(() => storedEvents(fleet).length >= BACKLOG, 'the whole backlog stored', 5_000).catch(() => undefined);
    const stored = storedEvents(fleet);
    const dups = await fleet.duplicatesDropped();
    if (verbose) console.log(`[fleet-kill] killed ${Date.now() - startedAt} ms into the drain with ${atKill} of ${BACKLOG} events stored (${handedOver} acknowledged to the agent); restarted fleet had all ${stored.length} ${Date.now() - restartedAt} ms later; ${dups} redeliveries dropped by dedup`);
    const missing = seqs.filter((q) => !stored.some((a) => a.seq === q));
    expect(missing).toEqual([]);
    expect(stored.map((a) => a.seq)).toEqual(seqs);
    expect(stored.every((a, i) => i === 0 || stored[i - 1]!.received_at <= a.received_at)).toBe(true);
  });
});
