import { retryTransient } from '../../agent/src/update/commands.js';
import { createHash } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createAgent, type Agent } from '../../agent/src/agent.js';
import { loadConfig } from '../../agent/src/config/load.js';
import { saveCredentials } from '../../agent/src/link/credentials.js';
import { openDatabase } from '../../agent/src/storage/database.js';
import { installVersion } from '../../agent/src/update/install.js';
import { waitForWindow } from '../../agent/src/update/steps.js';
import { UpdateStore } from '../../agent/src/update/update-store.js';
import { safeVersionDir } from '../../agent/src/update/verify.js';
import { DesiredMessageSchema, PROTOCOL_VERSION, type DesiredMessage, type DesiredModel, type Thresholds } from '../../shared/src/mqtt/messages.js';
import { deploymentStatement, generateSigningKey, loadPrivateKey, manifestDigest, signStatement } from '../../shared/src/signing.js';
import { eventually } from '../helpers/fleet.js';
import { inferSimple, simpleBytes, simpleManifest } from '../helpers/updates.js';

/**
 * Review of the agent's update machine (notes/review-update.md): each test shows one finding. They drive a real
 * agent (real SQLite, real HTTP, real onnxruntime) through Updater.onDesired with entries signed by a test key
 * that the agent holds as its enrolled fleet key; the artifacts come from a tiny HTTP server on 127.0.0.1.
 * The MQTT link points at a closed port: desired state is handed to the updater directly.
 * A failing test here is the proof of a bug; a passing one means the finding was fixed.
 */

const DEVICE = 'review-dev';
const SECRET = 'review-secret-123';
const keys = generateSigningKey();
const privateKey = loadPrivateKey(keys.privateKeyPem);

interface ArtifactServer {
  url: string;
  requests: { path: string; authorization: string | undefined }[];
  close(): Promise<void>;
}

/** Serves /artifacts/simple/{1,2}; /hang/simple/2 sends half of v2 and keeps the response open. */
async function artifactServer(): Promise<ArtifactServer> {
  const requests: ArtifactServer['requests'] = [];
  const hanging = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    requests.push({ path: req.url ?? '', authorization: req.headers.authorization });
    const m = /^\/(artifacts|hang)\/simple\/([12])$/.exec(req.url ?? '');
    if (!m) {
      res.writeHead(404).end();
      return;
    }
    const bytes = simpleBytes(Number(m[2]) as 1 | 2);
    res.writeHead(200, { 'content-length': bytes.length, etag: `"${sha256(bytes)}"` });
    if (m[1] === 'artifacts') res.end(Buffer.from(bytes));
    else {
      res.write(Buffer.from(bytes.subarray(0, Math.floor(bytes.length / 2))));
      hanging.add(res);
      res.on('close', () => hanging.delete(res));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    async close() {
      for (const r of hanging) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** A desired entry for simple@version, signed for DEVICE by the test fleet key. */
function entry(version: 1 | 2, deployment: number, o: { url?: string; rollout?: string | null; expires?: string; remove?: boolean } = {}): DesiredModel {
  const bytes = simpleBytes(version);
  const sha = sha256(bytes);
  const manifest: Record<string, unknown> = { ...simpleManifest(), name: 'simple', version, sha256: sha };
  delete manifest.golden;
  const expires = o.expires ?? new Date(Date.now() + 3_600_000).toISOString();
  const statement = deploymentStatement({ device: DEVICE, name: 'simple', version, sha256: sha, size: bytes.length, manifestSha256: manifestDigest(manifest), deployment, expires, remove: o.remove === true });
  return {
    name: 'simple', version, sha256: sha, size: bytes.length, url: o.url ?? `/artifacts/simple/${version}`, manifest, deployment, expires,
    rollout: o.rollout ?? null, remove: o.remove === true, signature: signStatement(privateKey, statement),
  };
}

function desired(revision: number, models: DesiredModel[], thresholds: Thresholds = {}): DesiredMessage {
  return DesiredMessageSchema.parse({ v: PROTOCOL_VERSION, deviceId: DEVICE, revision, ts: new Date().toISOString(), models, maintenanceWindow: null, thresholds });
}

interface Box {
  agent: Agent;
  url: string;
  dataDir: string;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startBox(fleetUrl: string, dataDir?: string): Promise<Box> {
  const dir = dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'outpost-update-review-'));
  if (!dataDir) {
    saveCredentials(dir, { deviceId: DEVICE, secret: SECRET, mqttUrl: 'mqtt://127.0.0.1:1', fleetUrl, fleetPublicKey: keys.publicKeyPem, tags: {}, enrolledAt: new Date().toISOString() });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  }
  const config = loadConfig({
    env: {},
    flags: {
      dataDir: dir, modelRepository: path.join(dir, 'models'), http: { host: '127.0.0.1', port: 0 },
      fleet: { reconnectMinMs: 10_000, reconnectMaxMs: 20_000 }, telemetry: { system: false }, update: { backoffMinMs: 20, backoffMaxMs: 200 },
    },
  });
  const agent = await createAgent(config, { log: pino({ level: process.env.OUTPOST_TEST_LOG ?? 'silent' }) });
  const url = await agent.start();
  let stopped = false;
  const box: Box & { stop(): Promise<void> } = {
    agent, url, dataDir: dir,
    async stop() {
      if (stopped) return;
      stopped = true;
      await agent.stop();
    },
  };
  cleanups.push(() => box.stop());
  return box;
}

const latest = (b: Box) => b.agent.updater.store.latest('simple');
const reaches = (b: Box, states: string[], timeoutMs = 8_000) =>
  eventually(() => {
    const r = latest(b);
    return r && states.includes(r.state) ? r : undefined;
  }, `simple update reaches ${states.join('|')} (now ${latest(b)?.state ?? 'none'})`, timeoutMs);
const stop = (b: Box) => (b as Box & { stop(): Promise<void> }).stop();
/**
 * An in-process agent cannot be SIGKILLed: stopped, then its graceful-stop mark is cleared, which leaves the database
 * as a kill -9 would (test/e2e/update-crash.test.ts does it with real processes).
 */
async function crash(b: Box): Promise<void> {
  await stop(b);
  const db = openDatabase(path.join(b.dataDir, 'agent.db'));
  db.prepare('UPDATE updates SET clean_stop = 0').run();
  db.close();
}

/** simple@1 committed on a fresh box. */
async function boxOnV1(server: ArtifactServer): Promise<Box> {
  const b = await startBox(server.url);
  b.agent.updater.onDesired(desired(1, [entry(1, 1)], { probationSeconds: 0 }));
  await reaches(b, ['committed']);
  expect(b.agent.models.active('simple')?.version).toBe(1);
  return b;
}

async function serverForTest(): Promise<ArtifactServer> {
  const s = await artifactServer();
  cleanups.push(() => s.close());
  return s;
}

describe('update machine review', () => {
  it('#1 a deployment killed in `activating` is resumed at boot (not left non-terminal forever)', async () => {
    const server = await serverForTest();
    const a = await boxOnV1(server);
    await stop(a);
    // What OUTPOST_TEST_CRASH_AT=activating leaves: v2 installed, its row written as `activating`, pointer still on v1.
    const db = openDatabase(path.join(a.dataDir, 'agent.db'));
    const store = new UpdateStore(db);
    const e2 = entry(2, 2);
    store.saveDesired(desired(2, [e2], { probationSeconds: 0 }));
    let row = store.accept(e2, 1)!;
    for (const s of ['downloading', 'verifying', 'staging', 'activating'] as const) row = store.transition(row.id, s);
    const tmp = path.join(a.dataDir, 'v2.onnx');
    writeFileSync(tmp, simpleBytes(2));
    installVersion(tmp, safeVersionDir(path.join(a.dataDir, 'models'), 'simple', 2), e2);
    db.close();

    const b = await startBox(server.url, a.dataDir);
    expect(b.agent.models.active('simple')?.version).toBe(1); // the old version serves: good
    // …but the row must move on (re-stage + activate, or roll back); it stays `activating` for ever.
    await reaches(b, ['probation', 'committed', 'rolled_back', 'failed'], 3_000);
  });

  it('#2 a deployment superseded while it stages must not activate afterwards', async () => {
    const server = await serverForTest();
    const b = await boxOnV1(server);
    const models = b.agent.models;
    const original = models.stage.bind(models);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inStage = new Promise<void>((r) => (entered = r));
    models.stage = (async (...args: Parameters<typeof original>) => {
      entered();
      await gate;
      return original(...args);
    }) as typeof models.stage;

    b.agent.updater.onDesired(desired(2, [entry(2, 2)], { probationSeconds: 1 }));
    await inStage;
    const v2 = latest(b)!;
    expect(v2.state).toBe('staging');
    // The rollout halts: the fleet points the box back at v1 (a newer deployment) while v2 is still staging.
    b.agent.updater.onDesired(desired(3, [entry(1, 3)], { probationSeconds: 1 }));
    models.stage = original;
    release();
    await eventually(() => b.agent.updater.store.get(v2.id)!.state !== 'staging', 'v2 leaves staging');
    expect(b.agent.updater.store.get(v2.id)!.state).not.toBe('probation');
    expect(models.active('simple')?.version).toBe(1);
  });

  it('#3 probation resumed at boot keeps the desired thresholds (not the config defaults)', async () => {
    const server = await serverForTest();
    const a = await boxOnV1(server);
    a.agent.updater.onDesired(desired(2, [entry(2, 2)], { probationSeconds: 600, probationRequests: 3 }));
    await reaches(a, ['probation']);
    await stop(a);
    const b = await startBox(server.url, a.dataDir);
    expect(latest(b)!.state).toBe('probation');
    for (let i = 0; i < 3; i++) expect((await inferSimple(b.url)).status).toBe(200);
    // probationRequests 3 was met: committed at the next judge tick (200 ms) — unless the defaults (1000) apply.
    await reaches(b, ['committed'], 2_000);
  });

  it('#4 bad client input during probation does not count as a failure of the new version', async () => {
    const server = await serverForTest();
    const b = await boxOnV1(server);
    b.agent.updater.onDesired(desired(2, [entry(2, 2)], { probationSeconds: 600, probationRequests: 1000, minRequests: 5, maxErrorRate: 0.5 }));
    await reaches(b, ['probation']);
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${b.url}/v2/models/simple/infer`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [{ name: 'NOPE', shape: [1, 16], datatype: 'INT32', data: Array(16).fill(0) }] }),
      });
      expect(res.status).toBe(400);
    }
    // docs/updates.md: "failures of the new version (runtime errors, timeouts, overload; not bad client input)".
    expect(b.agent.updater.monitor.progress('simple')?.failures).toBe(0);
  });

  it('#5 rolling back a first install (no previous version): what serves must survive a restart', async () => {
    const server = await serverForTest();
    const a = await startBox(server.url);
    a.agent.updater.onDesired(desired(1, [entry(1, 1)], { probationSeconds: 600 }));
    const row = await reaches(a, ['probation']);
    await a.agent.updater.rollback(row, 'operator', 'review');
    expect(latest(a)!.state).toBe('rolled_back');
    const before = (await inferSimple(a.url)).status;
    await stop(a);
    const b = await startBox(server.url, a.dataDir);
    const after = (await inferSimple(b.url)).status;
    // Today: 200 before (the rolled-back version keeps serving from memory) and 404 after (its files were deleted).
    expect({ before, after }).toEqual({ before: after, after: before });
  });

  it('#6 a crash-loop rollback of a first install does not load the rolled-back version again', async () => {
    const server = await serverForTest();
    const a = await startBox(server.url);
    a.agent.updater.onDesired(desired(1, [entry(1, 1)], { probationSeconds: 600 }));
    await reaches(a, ['probation']);
    await crash(a);
    const b = await startBox(server.url, a.dataDir); // boot 1 on probation
    await crash(b);
    const c = await startBox(server.url, a.dataDir); // boot 2: crash loop → rolled back at boot
    expect(latest(c)).toMatchObject({ state: 'rolled_back', reason: 'crash_loop' });
    // The repository's version policy loads the rolled-back version again (its files were kept, the pointer is null).
    expect(c.agent.models.active('simple')?.version).toBeUndefined();
  });

  it('#6b graceful restarts during probation are not a crash loop: probation goes on', async () => {
    const server = await serverForTest();
    const a = await startBox(server.url);
    a.agent.updater.onDesired(desired(1, [entry(1, 1)], { probationSeconds: 600 }));
    const row = await reaches(a, ['probation']);
    await stop(a);
    const b = await startBox(server.url, a.dataDir);
    await stop(b);
    const c = await startBox(server.url, a.dataDir);
    expect(c.agent.updater.store.get(row.id)).toMatchObject({ state: 'probation', probationBoots: 0 });
    expect(c.agent.models.active('simple')?.version).toBe(1);
  });

  it('#7 a re-signed entry (same version, new counter: the fleet refresh job) does not roll back the version on probation', async () => {
    const server = await serverForTest();
    const b = await boxOnV1(server);
    b.agent.updater.onDesired(desired(2, [entry(2, 2)], { probationSeconds: 600 }));
    const onProbation = await reaches(b, ['probation']);
    // deployer.refreshExpiring(): "a new counter for the same version and sha256 … fresher metadata, not a change".
    b.agent.updater.onDesired(desired(3, [entry(2, 3)], { probationSeconds: 600 }));
    expect(b.agent.updater.store.get(onProbation.id)!.state).toBe('probation');
  });

  it('#8 the unsigned artifact URL cannot send the device secret to another origin', async () => {
    const server = await serverForTest();
    const other = await serverForTest();
    const b = await startBox(server.url);
    b.agent.updater.onDesired(desired(1, [entry(1, 1, { url: `${other.url}/artifacts/simple/1` })], { probationSeconds: 0 }));
    await reaches(b, ['committed', 'failed', 'rolled_back']);
    const leaked = other.requests.filter((r) => r.authorization !== undefined);
    expect(leaked).toEqual([]);
  });

  it('#9 a superseded download does not leave its .part in the staging dir (it counts against the disk budget)', async () => {
    const server = await serverForTest();
    const b = await startBox(server.url);
    b.agent.updater.onDesired(desired(1, [entry(2, 1, { url: '/hang/simple/2' })]));
    const staging = path.join(b.dataDir, 'staging');
    await eventually(() => existsSync(staging) && readdirSync(staging).some((f) => f.startsWith('simple-2-')), 'v2 .part written');
    b.agent.updater.onDesired(desired(2, [entry(1, 2)], { probationSeconds: 0 }));
    await eventually(() => b.agent.updater.store.recent(5).find((r) => r.version === 2)?.state === 'failed', 'v2 superseded');
    expect(readdirSync(staging).filter((f) => f.startsWith('simple-2-'))).toEqual([]);
  });

  it('#11 a signed removal (rollout halt of a box with no previous version) ends the first install and unloads the model; an unsigned absence does not', async () => {
    const server = await serverForTest();
    const b = await startBox(server.url);
    b.agent.updater.onDesired(desired(1, [entry(1, 1, { rollout: 'ro-1' })], { probationSeconds: 30 }));
    const row = await reaches(b, ['probation']);
    // A desired state that merely does not name the model changes nothing (removal must be signed).
    b.agent.updater.onDesired(desired(2, [], { probationSeconds: 30 }));
    expect(b.agent.updater.store.get(row.id)!.state).toBe('probation');
    // engine.rollbackDevices(): previousVersion null → deployer.setDesired(device, model, null) → a signed tombstone.
    b.agent.updater.onDesired(desired(3, [entry(1, 2, { rollout: 'ro-1', remove: true })], { probationSeconds: 30 }));
    const end = await eventually(() => {
      const r = b.agent.updater.store.get(row.id)!;
      return ['committed', 'rolled_back', 'failed'].includes(r.state) ? r : undefined;
    }, 'the first install ends');
    expect(end.state).toBe('rolled_back');
    await eventually(() => b.agent.models.active('simple') === undefined, 'simple unloaded');
  });

  it('#12 `reload` does not start a new install from an entry that has expired since (U4)', async () => {
    const server = await serverForTest();
    const b = await startBox(server.url);
    const expires = new Date(Date.now() + 500).toISOString();
    b.agent.updater.onDesired(desired(1, [entry(1, 1, { url: '/missing/simple/1', expires })]));
    await reaches(b, ['failed']);
    expect(latest(b)!.reason).toBe('download_failed');
    await eventually(() => Date.now() > Date.parse(expires), 'the entry expires');
    const before = server.requests.length;
    retryTransient(b.agent.updater, new Set(['download_failed']));
    await reaches(b, ['failed']);
    expect(server.requests.length).toBe(before);
  });
});

describe('waitForWindow', () => {
  it('#10a rejects when the signal is already aborted, even with the window open', async () => {
    const ac = new AbortController();
    ac.abort(new Error('superseded'));
    await expect(waitForWindow(() => null, ac.signal, () => undefined)).rejects.toThrow('superseded');
  });

  it('#10b keeps one abort listener while it waits, not one per re-check', async () => {
    vi.useFakeTimers({ now: new Date('2030-06-01T12:00:00Z') });
    const ac = new AbortController();
    const waiting = waitForWindow(() => ({ cron: '0 3 1 1 *', durationMinutes: 60 }), ac.signal, () => undefined);
    const settled = waiting.catch(() => 'aborted');
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    const listeners = getEventListeners(ac.signal, 'abort').length;
    ac.abort(new Error('done'));
    expect(await settled).toBe('aborted');
    expect(listeners).toBeLessThanOrEqual(1);
  });
});
