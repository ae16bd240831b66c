/**
 * Bench child: the simulated devices of the rollout part of the updates section. Each is a real mqtt.js client
 * (connected as bench/fleet-devices.ts connects them: the agent link's options) that plays the agent's update
 * path minus ONNX, as test/helpers/fake-updater.ts does, plus the download: on a desired entry for a version it
 * does not run, it checks the ed25519 signature over deploymentStatement() with the fleet key from enrollment,
 * publishes downloading, GETs the artifact (URL relative to the enrolled fleet URL, HTTP Basic, a connection of
 * its own as the agent's downloader uses) hashing every chunk as it arrives, checks size and sha256, then
 * publishes verifying → staging → activating → probation → committed (probation 0 s) and its new state. Like the
 * agent (whose events go through its outbox) it does not wait for the fleet's PUBACK before the next step.
 * Nothing is written to disk. The devices live in their own process so their hashing and MQTT work do not share
 * the fleet's event loop. Jobs come one at a time over IPC (bench/updates-protocol.ts).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { DesiredMessageSchema, type DesiredModel, type UpdateState } from '../shared/src/mqtt/messages.js';
import { topicFor } from '../shared/src/mqtt/topics.js';
import { deploymentStatement, manifestDigest, verifyStatement } from '../shared/src/signing.js';
import { closeDevices, connectDevices, type LinkCounters, type SimDevice } from './fleet-devices.js';
import {
  epochMs, type AwaitVersionJob, type BaselineJob, type Closed, type ConnectJob, type Connected, type DeviceRun, type DevicesJob, type DownloadsResult,
} from './updates-protocol.js';

const AFTER_DOWNLOAD: UpdateState[] = ['verifying', 'staging', 'activating', 'probation', 'committed'];
const DOWNLOAD_TIMEOUT_MS = 120_000;

interface Device {
  sim: SimDevice;
  publicKey: string;
  /** model → version it serves. */
  running: Map<string, number>;
  /** model → its update state (idle between updates). */
  updateState: Map<string, UpdateState>;
  /** `${model}@${version}` → what happened to that update. */
  runs: Map<string, DeviceRun>;
  /** Desired messages are handled one after the other, as the agent's update machine does. */
  chain: Promise<void>;
}

let devices: Device[] = [];
let fleetUrl = '';
const counters: LinkCounters = { closes: 0, reconnects: 0, errors: 0, lastError: undefined };
/** Called after every finished update, so an await-version job notices the last one. */
let onUpdateDone: (() => void) | undefined;

function basicAuth(d: Device): string {
  return `Basic ${Buffer.from(`${d.sim.id}:${d.sim.secret}`).toString('base64')}`;
}

/** GETs `url` and hashes the body as it streams; resolves with what arrived (the caller judges it). */
function download(url: URL, auth: string, run: DeviceRun): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    const req = http.request(url, { method: 'GET', agent: false, headers: { authorization: auth, 'accept-encoding': 'identity', 'user-agent': 'outpost-bench' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`GET ${url.pathname} answered ${res.statusCode}`));
        return;
      }
      res.on('data', (chunk: Buffer) => {
        run.firstByteAt ??= epochMs();
        run.bytes += chunk.length;
        hash.update(chunk);
      });
      res.on('error', reject);
      res.on('end', () => {
        run.downloadedAt = epochMs();
        resolve(hash.digest('hex'));
      });
    });
    req.on('error', reject);
    req.setTimeout(DOWNLOAD_TIMEOUT_MS, () => req.destroy(new Error(`no data for ${DOWNLOAD_TIMEOUT_MS} ms`)));
    req.end();
  });
}

function newRun(deviceId: string): DeviceRun {
  return { deviceId, startAt: epochMs(), firstByteAt: undefined, downloadedAt: undefined, committedAt: undefined, bytes: 0, transitions: [], error: undefined };
}

/** Publishes an agent message with the next seq (QoS 1, resolves on PUBACK). */
async function publish(d: Device, kind: 'state' | 'events', body: Record<string, unknown>): Promise<void> {
  const message = { v: 1, deviceId: d.sim.id, seq: ++d.sim.seq, ts: new Date().toISOString(), ...body };
  await d.sim.client!.publishAsync(topicFor(d.sim.id, kind), JSON.stringify(message), { qos: 1, retain: kind === 'state' });
}

function publishState(d: Device): Promise<void> {
  return publish(d, 'state', {
    online: true, agentVersion: 'bench-1', startedAt: new Date().toISOString(), provider: 'cpu',
    models: [...d.running].map(([name, version]) => ({ name, version, state: 'active', provider: 'cpu', error: null })),
    outbox: { rows: 0, bytes: 0, droppedTelemetry: 0, deadLettered: 0 }, hardware: {}, update: {},
  });
}

/**
 * Publishes one transition and moves the model's update state at once; returns the PUBACK. The agent queues its
 * events in the outbox and goes on without waiting for the fleet, so the caller does not await it either
 * (mqtt.js keeps the order on the connection).
 */
function transition(d: Device, e: DesiredModel, run: DeviceRun, to: UpdateState, failure?: { reason: string; detail: string }): Promise<void> {
  const from = d.updateState.get(e.name) ?? 'idle';
  const previous = d.running.get(e.name) ?? null;
  run.transitions.push(to);
  d.updateState.set(e.name, to === 'committed' || to === 'failed' ? 'idle' : to);
  return publish(d, 'events', {
    kind: 'update.transition', severity: failure ? 'warn' : 'info', message: `${e.name}@${e.version}: ${from} -> ${to}`,
    data: {
      model: e.name, version: e.version, previousVersion: previous === e.version ? null : previous, from, to, deployment: e.deployment,
      rollout: e.rollout, reason: failure?.reason ?? null, detail: failure?.detail ?? null,
    },
  });
}

async function update(d: Device, e: DesiredModel): Promise<void> {
  const run = newRun(d.sim.id);
  d.runs.set(`${e.name}@${e.version}`, run);
  const acks: Promise<void>[] = [];
  // Awaited together later; until then a refused publish must not surface as an unhandled rejection.
  const sent = (p: Promise<void>) => {
    p.catch(() => undefined);
    acks.push(p);
  };
  try {
    const stmt = deploymentStatement({
      device: d.sim.id, name: e.name, version: e.version, sha256: e.sha256, size: e.size, manifestSha256: manifestDigest(e.manifest), deployment: e.deployment, expires: e.expires, remove: e.remove,
    });
    if (!verifyStatement(d.publicKey, stmt, e.signature)) {
      run.error = 'signature does not verify with the fleet key from enrollment';
      await transition(d, e, run, 'failed', { reason: 'SIGNATURE_INVALID', detail: run.error });
      return;
    }
    sent(transition(d, e, run, 'downloading'));
    const sha256 = await download(new URL(e.url, fleetUrl), basicAuth(d), run);
    if (sha256 !== e.sha256 || run.bytes !== e.size) {
      run.error = `downloaded ${run.bytes} bytes with sha256 ${sha256.slice(0, 12)}…, signed ${e.size} bytes ${e.sha256.slice(0, 12)}…`;
      sent(transition(d, e, run, 'failed', { reason: 'SHA256_MISMATCH', detail: run.error }));
      await Promise.all(acks);
      return;
    }
    for (const to of AFTER_DOWNLOAD) sent(transition(d, e, run, to));
    d.running.set(e.name, e.version);
    sent(publishState(d));
    // Committed = the broker acknowledged the committed transition (and everything sent before it).
    await Promise.all(acks);
    run.committedAt = epochMs();
  } catch (err) {
    run.error ??= (err as Error).message;
    await Promise.allSettled(acks);
    if (d.updateState.get(e.name) !== 'idle') await transition(d, e, run, 'failed', { reason: 'DOWNLOAD_FAILED', detail: run.error }).catch(() => undefined);
  } finally {
    onUpdateDone?.();
  }
}

function onDesired(d: Device, payload: Buffer): void {
  d.chain = d.chain.then(async () => {
    const msg = DesiredMessageSchema.parse(JSON.parse(payload.toString('utf8')));
    for (const e of msg.models) {
      if (d.running.get(e.name) === e.version || d.runs.has(`${e.name}@${e.version}`)) continue;
      await update(d, e);
    }
  }).catch((err: unknown) => {
    counters.errors++;
    counters.lastError = `desired: ${(err as Error).message}`;
  });
}

async function connect(job: ConnectJob): Promise<Connected> {
  fleetUrl = job.fleetUrl;
  devices = job.devices.map((c) => ({
    sim: { id: c.deviceId, secret: c.secret, eventsTopic: topicFor(c.deviceId, 'events'), seq: 0, client: undefined, connectMs: undefined, closing: false },
    publicKey: c.fleetPublicKey, running: new Map(), updateState: new Map(), runs: new Map(), chain: Promise.resolve(),
  }));
  const result = await connectDevices(devices.map((d) => d.sim), job.mqttUrl, job.connectRatePerS, job.timeoutMs, counters);
  for (const d of devices) {
    const desiredTopic = topicFor(d.sim.id, 'desired');
    d.sim.client!.on('message', (topic, payload) => {
      if (topic === desiredTopic) onDesired(d, payload);
    });
  }
  // The agent reports its state as soon as it is connected; the fleet reads the running version from it.
  await Promise.all(devices.map((d) => publishState(d)));
  return { type: 'connected', seconds: result.seconds, p99Ms: result.p99Ms };
}

async function baseline(job: BaselineJob): Promise<DownloadsResult> {
  const closesBefore = counters.closes;
  const startedAt = epochMs();
  const runs = await Promise.all(devices.map(async (d) => {
    const run = newRun(d.sim.id);
    try {
      const sha256 = await download(new URL(job.path, fleetUrl), basicAuth(d), run);
      if (sha256 !== job.sha256 || run.bytes !== job.size) {
        run.error = `downloaded ${run.bytes} bytes with sha256 ${sha256.slice(0, 12)}…, expected ${job.size} bytes ${job.sha256.slice(0, 12)}…`;
      }
    } catch (err) {
      run.error = (err as Error).message;
    }
    return run;
  }));
  return { type: 'baseline-result', startedAt, devices: runs, badSignatures: 0, hashMismatches: runs.filter((r) => r.error?.startsWith('downloaded')).length, linkCloses: counters.closes - closesBefore };
}

function awaitVersion(job: AwaitVersionJob): Promise<DownloadsResult> {
  const closesBefore = counters.closes;
  const key = `${job.model}@${job.version}`;
  const finished = (r: DeviceRun | undefined) => r !== undefined && (r.committedAt !== undefined || r.error !== undefined);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      onUpdateDone = undefined;
      const missing = devices.filter((d) => !finished(d.runs.get(key))).length;
      reject(new Error(`${missing} of ${devices.length} devices did not finish ${key} within ${job.timeoutMs} ms (last link error: ${counters.lastError ?? 'none'})`));
    }, job.timeoutMs);
    const check = () => {
      if (!devices.every((d) => finished(d.runs.get(key)))) return;
      clearTimeout(timer);
      onUpdateDone = undefined;
      const runs = devices.map((d) => d.runs.get(key)!);
      resolve({
        type: 'version-result', startedAt: undefined, devices: runs,
        badSignatures: runs.filter((r) => r.error?.startsWith('signature')).length, hashMismatches: runs.filter((r) => r.error?.startsWith('downloaded')).length,
        linkCloses: counters.closes - closesBefore,
      });
    };
    onUpdateDone = check;
    check();
  });
}

async function handle(job: DevicesJob): Promise<Connected | DownloadsResult | Closed> {
  switch (job.type) {
    case 'connect':
      return connect(job);
    case 'baseline':
      return baseline(job);
    case 'await-version':
      return awaitVersion(job);
    case 'close':
      await closeDevices(devices.map((d) => d.sim));
      return { type: 'closed' };
  }
}

process.on('disconnect', () => process.exit(0));
process.on('message', (job: DevicesJob) => {
  handle(job).then(
    (result) => process.send!(result),
    (err: unknown) => process.send!({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});
