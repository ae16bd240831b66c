import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { saveCredentials } from '../../agent/src/link/credentials.js';
import { buildSimpleHeavy } from '../../models/simple-variants.js';
import { enrollDevice, eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';
import { ProcessGroup } from '../helpers/processes.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import {
  firstAnswer, installedDigests, partFiles, rewriteCredentials, spawnAgent, startServeProbe, type ServeProbe, type SpawnedAgent,
} from '../helpers/update-processes.js';
import { pushVersion, simpleBytes } from '../helpers/updates.js';

/**
 * kill -9 of the agent in every state of the update machine (issue 5 (a), docs/updates.md "if the agent is killed
 * here"). The fleet runs in-process, each agent is a real `outpost-agent run` from dist/, killed by its own
 * OUTPOST_TEST_CRASH_AT hook as a step starts (or by the test) and restarted on the same data dir. What a user
 * must see: the box answers again within 2 s of the restart, always from a verified version (v1 or the new one,
 * never none, never a 5xx once it answered), and the update either resumes to committed or rolls back; the model
 * repository never holds a file whose sha256 is not the registry's.
 */
const procs = new ProcessGroup();
const MODEL = 'simple';
/** Time from spawning the restarted agent to its first 200 (issue 5 target). */
const SERVING_AGAIN_MS = 2_000;
/**
 * On a CPU-starved test machine even a plain start of the agent (Node's start and imports, nothing to recover)
 * can take longer than the target, so the bound is the larger of the target and a plain start of the same box
 * moments before plus this slack: a recovery that waits for anything (the fleet, a download, a re-stage, a hash
 * of the new version) before serving the verified one fails either way. The figures are printed as a table.
 */
const SLACK_OVER_PLAIN_START_MS = 1_000;
/**
 * Latency verdicts are not under test here, and a p95 of a few ms on a box busy starting processes would make
 * them flaky (the heavy v3 is also slower than v1 by design): the factor is set to its maximum.
 */
const THRESHOLDS = { maxLatencyFactor: 1000 };
const RESUMING = ['downloading', 'verifying', 'staging', 'activating'] as const;

interface Box {
  name: string; deviceId: string; dataDir: string; repository: string;
  /** Spawn → first 200 of this box's latest plain start (serving v1, nothing to recover). */
  plainStartMs?: number;
}

let f: RunningFleet;
/** In front of the fleet's HTTP, for the mid-download box's artifact downloads. */
let proxy: TcpProxy;
/** In front of the fleet's broker, for the probation box's link. */
let mqttProxy: TcpProxy;
let root: string;
const boxes = new Map<string, Box>();
/** version → sha256, as the registry reports it. */
const registry = new Map<number, string>();
let heavySize = 0;
/** Per restart, ms from the spawn: HTTP listening, repository loaded (null: not yet at the first 200), first 200. */
const timings: { scenario: string; restart: string; listening: number; loaded: number | null; first200: number; plainStart: number | null; version: string | null }[] = [];

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(procs.report(30));
  await procs.killAll();
});

afterAll(async () => {
  if (timings.length > 0) console.table(timings);
  await procs.killAll();
  await proxy?.close();
  await mqttProxy?.close();
  await f?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** An enrolled box: the enrollment answer saved as `outpost-agent enroll` saves it (enrolling is not under test here). */
async function newBox(name: string): Promise<Box> {
  const dataDir = path.join(root, name);
  mkdirSync(dataDir);
  const device = await enrollDevice(f);
  saveCredentials(dataDir, { ...device, enrolledAt: new Date().toISOString() });
  return { name, deviceId: device.deviceId, dataDir, repository: path.join(dataDir, 'models') };
}

/** A plain start serving v1 (with the crash hook armed when `env` says so), timed as a restart is. */
async function start(box: Box, label: string, env?: Record<string, string>): Promise<SpawnedAgent> {
  const agent = await spawnAgent(procs, { dataDir: box.dataDir, repository: box.repository, name: `${box.name}:${label}`, ...(env ? { env } : {}) });
  box.plainStartMs = (await firstAnswer(agent)).ms;
  await agent.proc.waitForLog((l) => l.msg === 'model repository loaded', `${agent.proc.name} to load its models`);
  return agent;
}

function online(box: Box): Promise<unknown> {
  return eventually(async () => (await f.api('GET', `/api/v1/devices/${box.deviceId}`)).body.online === true, `${box.name} online at the fleet`, 10_000);
}

async function createRollout(version: number, targets: Box[], thresholds: Record<string, number>): Promise<string> {
  const r = await f.api('POST', '/api/v1/rollouts', { model: MODEL, version, deviceIds: targets.map((b) => b.deviceId), ...THRESHOLDS, ...thresholds });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id as string;
}

function rolloutReaches(id: string, states: string[], timeoutMs = 15_000): Promise<any> {
  return eventually(async () => {
    const r = await f.api('GET', `/api/v1/rollouts/${id}`);
    return states.includes(r.body.state) ? r.body : undefined;
  }, `rollout ${id} ${states.join('|')}`, timeoutMs);
}

/** The agent's /status view of the model's update machine ({active, previous, update: {version, state, reason …}}). */
async function machine(agent: SpawnedAgent): Promise<any> {
  return (await agent.status()).update.models[MODEL];
}

function machineReaches(agent: SpawnedAgent, check: (m: any) => boolean, what: string, timeoutMs = 15_000): Promise<any> {
  return eventually(async () => {
    const m = await machine(agent);
    return check(m) ? m : undefined;
  }, `${agent.proc.name}: ${what}`, timeoutMs);
}

/** INVARIANT under test: what the loader can read is only ever a complete, verified version. */
function expectOnlyVerifiedFiles(box: Box, when: string): Map<number, string> {
  const installed = installedDigests(box.repository, MODEL);
  for (const [v, sha] of installed) expect(sha, `${box.name}: ${MODEL}/${v}/model.onnx ${when}`).toBe(registry.get(v));
  return installed;
}

/** Restarts the agent without the crash hook; times spawn → first 200 and keeps a client asking from then on. */
async function restart(box: Box, label: string): Promise<{ agent: SpawnedAgent; version: string | null; probe: ServeProbe }> {
  const agent = await spawnAgent(procs, { dataDir: box.dataDir, repository: box.repository, name: `${box.name}:${label}` });
  const first = await firstAnswer(agent);
  const logged = (msg: string) => agent.proc.logs.find((l) => l.msg === msg)?.time as number | undefined;
  const loaded = logged('model repository loaded');
  timings.push({
    scenario: box.name, restart: label, listening: (logged('agent listening; loading models') ?? Number.NaN) - agent.spawnedAt,
    loaded: loaded === undefined ? null : loaded - agent.spawnedAt, first200: first.ms, plainStart: box.plainStartMs ?? null, version: first.version,
  });
  const bound = Math.max(SERVING_AGAIN_MS, (box.plainStartMs ?? 0) + SLACK_OVER_PLAIN_START_MS);
  expect(first.ms, `${box.name} ${label}: spawn → first 200 (a plain start took ${box.plainStartMs} ms)`).toBeLessThanOrEqual(bound);
  return { agent, version: first.version, probe: startServeProbe(agent.url) };
}

/** Once the agent answered, every later request is a 200 from one of `versions`. */
async function expectServedThroughout(probe: ServeProbe, versions: string[]): Promise<void> {
  await probe.stop();
  expect(probe.answers.length).toBeGreaterThan(0);
  expect(probe.answers.filter((a) => a.status !== 200 || !versions.includes(a.version ?? ''))).toEqual([]);
}

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'outpost-update-crash-'));
  f = await startFleet();
  proxy = await startTcpProxy({ port: Number(new URL(f.httpUrl).port) });
  mqttProxy = await startTcpProxy({ port: Number(new URL(f.mqttUrl).port) });
  await pushVersion(f, MODEL, 1, simpleBytes(1));
  await pushVersion(f, MODEL, 2, simpleBytes(2));
  // ≈ 9.4 MB: a download long enough to be cut in the middle through a throttled link.
  heavySize = (await pushVersion(f, MODEL, 3, buildSimpleHeavy({ width: 1536, layers: 2, offset: 3000 }))).size;
  for (const v of (await f.api('GET', `/api/v1/models/${MODEL}`)).body.versions as { version: number; sha256: string }[]) registry.set(v.version, v.sha256);

  for (const box of await Promise.all([...RESUMING, 'probation', 'crash-loop', 'mid-download'].map((n) => newBox(n)))) boxes.set(box.name, box);
  // Only the artifact downloads of this box go through the proxy (its MQTT goes straight to the broker).
  rewriteCredentials(boxes.get('mid-download')!.dataDir, { fleetUrl: `http://127.0.0.1:${proxy.port}` });
  rewriteCredentials(boxes.get('probation')!.dataDir, { mqttUrl: `mqtt://127.0.0.1:${mqttProxy.port}` });

  // Every box serves v1, deployed by a rollout and committed, before its crash.
  const all = [...boxes.values()];
  const agents = await Promise.all(all.map((b) => spawnAgent(procs, { dataDir: b.dataDir, repository: b.repository, name: `${b.name}:v1`, waitLoaded: true })));
  await Promise.all(all.map((b) => online(b)));
  await rolloutReaches(await createRollout(1, all, { probationSeconds: 1 }), ['completed'], 30_000);
  for (const b of all) expect([...expectOnlyVerifiedFiles(b, 'after v1').keys()]).toEqual([1]);
  await Promise.all(agents.map((a) => a.proc.stop()));
  await procs.killAll();
}, 90_000);

describe('kill -9 of the agent in each update state, real processes', () => {
  it.each(RESUMING)('killed as %s starts: restarted, v1 serves within 2 s and the update resumes to v2 committed', async (step) => {
    const box = boxes.get(step)!;
    const crashing = await start(box, 'crash', { OUTPOST_TEST_CRASH_AT: step });
    await online(box);
    const rollout = await createRollout(2, [box], { probationSeconds: 1 });
    expect((await crashing.proc.exited).signal).toBe('SIGKILL');

    const left = expectOnlyVerifiedFiles(box, `after kill -9 at ${step}`);
    // Installed (verified, renamed into place) only once verifying finished.
    expect(left.has(2)).toBe(step === 'staging' || step === 'activating');
    if (step === 'verifying') expect(partFiles(box.dataDir).map((p) => p.size)).toEqual([simpleBytes(2).length]);

    const { agent, version, probe } = await restart(box, 'restart');
    expect(version).toBe('1'); // the pointer on disk names v1 until the activation is written
    const done = await machineReaches(agent, (m) => m.active === 2 && m.update?.state === 'committed', 'v2 committed');
    expect(done).toMatchObject({ active: 2, previous: 1, update: { version: 2, state: 'committed' } });
    const view = await rolloutReaches(rollout, ['completed']);
    expect(view.devices[0]).toMatchObject({ deviceId: box.deviceId, state: 'committed' });
    await expectServedThroughout(probe, ['1', '2']);
    expect([...expectOnlyVerifiedFiles(box, 'after the resumed update').keys()].sort()).toEqual([1, 2]);
  });

  it('killed as probation starts: the restart serves v2 within 2 s and, even without a link, continues probation with the rollout\'s thresholds and commits', async () => {
    const box = boxes.get('probation')!;
    const crashing = await start(box, 'crash', { OUTPOST_TEST_CRASH_AT: 'probation' });
    await online(box);
    const rollout = await createRollout(2, [box], { probationSeconds: 2 });
    expect((await crashing.proc.exited).signal).toBe('SIGKILL');
    expect([...expectOnlyVerifiedFiles(box, 'after kill -9 at probation').keys()].sort()).toEqual([1, 2]);

    // The box comes back without its uplink: probation must still run on the thresholds it accepted (2 s), not
    // on the agent's defaults (300 s) — the saved desired state is all it has.
    mqttProxy.cut();
    const { agent, version, probe } = await restart(box, 'restart');
    expect(version).toBe('2'); // the flip was written with the probation state
    await machineReaches(agent, (m) => m.active === 2 && m.update?.state === 'probation', 'v2 still on probation after the first restart');
    const done = await machineReaches(agent, (m) => m.update?.state === 'committed', 'v2 committed after a 2 s probation, offline', 10_000);
    expect(done).toMatchObject({ active: 2, previous: 1, update: { version: 2, state: 'committed' } });
    expect((await agent.status()).link.state).not.toBe('connected');
    mqttProxy.restore();
    expect((await rolloutReaches(rollout, ['completed'])).devices[0].state).toBe('committed');
    await expectServedThroughout(probe, ['1', '2']);
  });

  it('killed twice during probation: the next boot rolls back to v1 (crash_loop), within 2 s, and the rollout shows the device failed', async () => {
    const box = boxes.get('crash-loop')!;
    const crashing = await start(box, 'crash', { OUTPOST_TEST_CRASH_AT: 'probation' });
    await online(box);
    // Long enough that probation cannot end before the second kill.
    const rollout = await createRollout(2, [box], { probationSeconds: 120 });
    expect((await crashing.proc.exited).signal).toBe('SIGKILL');
    expect([...expectOnlyVerifiedFiles(box, 'after the first kill -9 in probation').keys()].sort()).toEqual([1, 2]);

    const first = await restart(box, 'restart-1');
    expect(first.version).toBe('2');
    await machineReaches(first.agent, (m) => m.update?.state === 'probation', 'v2 on probation after the first restart');
    await expectServedThroughout(first.probe, ['2']);
    await first.agent.proc.kill9();
    expect([...expectOnlyVerifiedFiles(box, 'after the second kill -9 in probation').keys()].sort()).toEqual([1, 2]);

    const second = await restart(box, 'restart-2');
    expect(second.version).toBe('1'); // rolled back at boot, before anything loaded
    const back = await machine(second.agent);
    expect(back).toMatchObject({ active: 1, update: { version: 2, state: 'rolled_back', reason: 'crash_loop' } });
    const view = await eventually(async () => {
      const r = (await f.api('GET', `/api/v1/rollouts/${rollout}`)).body;
      return ['failed', 'rolled_back'].includes(r.devices[0].state) ? r : undefined;
    }, 'the rollout to show the device failed', 10_000);
    expect(view.devices[0]).toMatchObject({ deviceId: box.deviceId, reason: 'crash_loop' });
    expect(['halted', 'rolled_back']).toContain(view.state);
    await rolloutReaches(rollout, ['rolled_back']);
    await expectServedThroughout(second.probe, ['1']);
    expect([...expectOnlyVerifiedFiles(box, 'after the rollback').keys()]).toEqual([1]);
  });

  it('killed in the middle of a throttled download: the restart resumes from the .part and installs only the verified file', async () => {
    const box = boxes.get('mid-download')!;
    const agent = await start(box, 'downloading');
    await online(box);
    proxy.throttle(1024 * 1024);
    const rollout = await createRollout(3, [box], { probationSeconds: 1 });
    await machineReaches(agent, (m) => m.update?.version === 3 && m.update.state === 'downloading' && m.update.receivedBytes >= 256 * 1024, 'a quarter MB of v3 received');
    await agent.proc.kill9();

    expect([...expectOnlyVerifiedFiles(box, 'after kill -9 mid-download').keys()]).toEqual([1]);
    const parts = partFiles(box.dataDir);
    expect(parts).toHaveLength(1);
    const kept = parts[0]!.size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(heavySize);

    proxy.throttle(null);
    await eventually(() => proxy.active === 0, 'the killed download connection closed');
    const downBefore = proxy.bytes.down;
    const { agent: restarted, version, probe } = await restart(box, 'restart');
    expect(version).toBe('1');
    const done = await machineReaches(restarted, (m) => m.active === 3 && m.update?.state === 'committed', 'v3 committed', 20_000);
    expect(done).toMatchObject({ active: 3, previous: 1 });
    // The resumed request fetched only the rest (plus headers): a restart from byte 0 would move `kept` more.
    const fetched = proxy.bytes.down - downBefore;
    expect(fetched).toBeGreaterThanOrEqual(heavySize - kept);
    expect(fetched).toBeLessThan(heavySize - kept + 16 * 1024);
    expect(partFiles(box.dataDir)).toEqual([]);
    expect((await rolloutReaches(rollout, ['completed'])).devices[0].state).toBe('committed');
    await expectServedThroughout(probe, ['1', '3']);
    expect(expectOnlyVerifiedFiles(box, 'after the resumed download').get(3)).toBe(registry.get(3));
  });
});
