import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { loadFleetConfig } from '../fleet-server/src/config/load.js';
import { createFleet, type Fleet } from '../fleet-server/src/fleet.js';
import { buildManifest, type ModelManifest } from '../models/manifest.js';
import { SIMPLE_WIDTH } from '../models/simple.js';
import { buildSimpleHeavy } from '../models/simple-variants.js';
import { ask, forkChild } from './children.js';
import { summarise } from './stats.js';
import type { UpdatesBenchOptions } from './updates-options.js';
import type { Connected, DeviceCredentials, DeviceRun, DownloadsResult } from './updates-protocol.js';

/**
 * The rollout part of the updates section (issue 5 item 12): for each device count, a fresh in-process fleet
 * (real SQLite in a temp dir, embedded aedes, HTTP on 127.0.0.1 port 0), the ~10 MB heavy `simple` pushed
 * through the registry REST API, N devices enrolled through REST and connected from a child process
 * (bench/rollout-devices.ts). Every version is pushed up front; each rep rolls out the next one, right after a
 * baseline in which the same devices GET that same artifact with plain HTTP (no MQTT, no rollout).
 */
export const HEAVY_MODEL = 'simple-heavy';
const POLL_MS = 50;
const FINISHED = new Set(['completed', 'halted', 'aborted', 'rolled_back']);

export interface HeavyVersion {
  version: number;
  bytes: Uint8Array;
  manifest: ModelManifest;
}

/** One download phase seen from the devices (and the fleet's HTTP server). Times are ms from the phase start. */
export interface PhaseFigures {
  /** → first artifact byte received by any device (loopback: the byte the fleet served). */
  firstByteMs: number | undefined;
  /** → the end: baseline, last download hashed; rollout, the fleet's finishedAt (state completed). */
  totalMs: number;
  /** → the last artifact byte received. */
  lastByteMs: number | undefined;
  /** Per device, first → last byte. */
  downloadP50Ms: number | undefined;
  downloadMaxMs: number | undefined;
  /** Artifact bytes received by all devices. */
  bytes: number;
  /** bytes ÷ (first byte → last byte): what the fleet served per second while it served. */
  bytesPerS: number | undefined;
  /** Devices that did not finish (download error, bad hash, bad signature). */
  errors: number;
  firstError: string | undefined;
  /** Artifact requests the fleet received during the phase (one per device expected). */
  artifactRequests: number;
  /** Their responses, by HTTP status (a response that closes after the phase ends counts in the next one). */
  artifactResponses: Record<string, number>;
}

export interface RolloutFigures extends PhaseFigures {
  rolloutId: string;
  state: string;
  /** POST /rollouts sent → its 201 (the fleet signs and publishes every device's desired state inside it). */
  createRequestMs: number;
  /** → the desired message reached a device: the first, p50 and max over devices. */
  desiredMinMs: number | undefined;
  desiredP50Ms: number | undefined;
  desiredMaxMs: number | undefined;
  /** → the last device's `committed` transition acknowledged (PUBACK) by the broker. */
  lastCommitMs: number | undefined;
  badSignatures: number;
  hashMismatches: number;
  linkCloses: number;
}

export interface RolloutRep {
  version: number;
  baseline: PhaseFigures;
  rollout: RolloutFigures | undefined;
  /** rollout.totalMs ÷ baseline.totalMs */
  ratio: number | undefined;
}

export interface RolloutCase {
  devices: number;
  enrollSeconds: number;
  connectSeconds: number | undefined;
  connectP99Ms: number | undefined;
  reps: RolloutRep[];
  /** Medians over the reps. */
  median: { rolloutFirstByteMs?: number; rolloutTotalMs?: number; rolloutBytesPerS?: number; baselineFirstByteMs?: number; baselineTotalMs?: number; baselineBytesPerS?: number; ratio?: number };
  error: string | undefined;
}

export interface RolloutContext {
  opts: UpdatesBenchOptions;
  tmp: string;
  childModule: string;
  log(msg: string): void;
}

export function buildHeavyVersions(opts: UpdatesBenchOptions, count: number): HeavyVersion[] {
  const io = (name: string) => ({ name, datatype: 'INT32' as const, dims: [-1, SIMPLE_WIDTH] });
  return Array.from({ length: count }, (_, i) => {
    const version = i + 1;
    // A new seed per version: every version is its own artifact, with its own hash, as a real update is.
    const bytes = buildSimpleHeavy({ width: opts.modelWidth, layers: opts.modelLayers, seed: version * 7 });
    const manifest = buildManifest(HEAVY_MODEL, version, bytes, {
      task: 'raw', description: `simple plus a ${opts.modelWidth}×${opts.modelWidth} dense layer ×${opts.modelLayers} multiplied by 0: the rollout bench's ~10 MB model`,
      inputs: [io('INPUT0'), io('INPUT1')], outputs: [io('OUTPUT0'), io('OUTPUT1')],
    });
    return { version, bytes, manifest };
  });
}

const median = (values: (number | undefined)[]): number | undefined => {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length === 0 ? undefined : summarise(v).p50Ms;
};

interface RunningFleet {
  fleet: Fleet;
  httpUrl: string;
  adminToken: string;
  api(method: string, route: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** Artifact requests received, and responses by status, since the fleet started. */
  artifact: { requests: number; responses: Record<string, number> };
  stop(): Promise<void>;
}

async function startFleet(dir: string, logFile: string): Promise<RunningFleet> {
  const config = loadFleetConfig({ env: {}, flags: { dataDir: dir, http: { host: '127.0.0.1', port: 0 }, broker: { host: '127.0.0.1', port: 0 }, log: { level: 'warn' } } });
  const fleet = await createFleet(config, { log: pino({ level: 'warn' }, pino.destination({ dest: logFile, sync: true })) });
  let urls;
  try {
    urls = await fleet.start();
  } catch (err) {
    await fleet.stop();
    throw err;
  }
  const adminToken = readFileSync(fleet.adminTokenFile, 'utf8').trim();
  const artifact = { requests: 0, responses: {} as Record<string, number> };
  // The raw server's event sees every request without touching the app (hooks cannot be added after listen).
  fleet.http.server.on('request', (req, res) => {
    if (!req.url?.endsWith('/artifact')) return;
    artifact.requests++;
    res.once('close', () => (artifact.responses[res.statusCode] = (artifact.responses[res.statusCode] ?? 0) + 1));
  });
  return {
    fleet, httpUrl: urls.httpUrl, adminToken, artifact,
    async api(method, route, body) {
      const res = await fetch(`${urls.httpUrl}${route}`, {
        method, headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }), signal: AbortSignal.timeout(60_000),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: keep the text for the error message
      }
      return { status: res.status, body: parsed };
    },
    stop: () => fleet.stop(),
  };
}

async function push(f: RunningFleet, v: HeavyVersion): Promise<void> {
  const form = new FormData();
  form.append('manifest', JSON.stringify(v.manifest));
  form.append('artifact', new Blob([v.bytes]), 'model.onnx');
  const res = await fetch(`${f.httpUrl}/api/v1/models/${HEAVY_MODEL}/versions/${v.version}`, { method: 'POST', body: form, headers: { authorization: `Bearer ${f.adminToken}` } });
  if (res.status !== 201) throw new Error(`pushing ${HEAVY_MODEL}@${v.version} answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
}

/** Enrolls `n` devices as an operator and a device would; also returns the URLs enrollment told them. */
async function enroll(f: RunningFleet, n: number, concurrency: number): Promise<{ devices: DeviceCredentials[]; mqttUrl: string; fleetUrl: string }> {
  const out: DeviceCredentials[] = [];
  let mqttUrl = '';
  let fleetUrl = '';
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      const token = await f.api('POST', '/api/v1/enrollment-tokens', { tags: { bench: 'updates' } });
      if (token.status !== 201) throw new Error(`POST /api/v1/enrollment-tokens answered ${token.status}: ${JSON.stringify(token.body).slice(0, 300)}`);
      const enrolled = await f.api('POST', '/api/v1/enroll', { token: token.body.token });
      if (enrolled.status !== 201) throw new Error(`POST /api/v1/enroll answered ${enrolled.status}: ${JSON.stringify(enrolled.body).slice(0, 300)}`);
      out.push({ deviceId: enrolled.body.deviceId, secret: enrolled.body.secret, fleetPublicKey: enrolled.body.fleetPublicKey });
      mqttUrl = enrolled.body.mqttUrl;
      fleetUrl = enrolled.body.fleetUrl;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return { devices: out, mqttUrl, fleetUrl };
}

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]).filter(([, v]) => (v as number) > 0));
}

/** Figures of one phase from the devices' runs; `startAt` and `endAt` are epoch ms. */
function figures(runs: DeviceRun[], startAt: number, endAt: number, f: RunningFleet, before: RunningFleet['artifact']): PhaseFigures {
  const firsts = runs.map((r) => r.firstByteAt).filter((t): t is number => t !== undefined);
  const lasts = runs.map((r) => r.downloadedAt).filter((t): t is number => t !== undefined);
  const durations = runs.filter((r) => r.firstByteAt !== undefined && r.downloadedAt !== undefined).map((r) => r.downloadedAt! - r.firstByteAt!);
  const bytes = runs.reduce((a, r) => a + r.bytes, 0);
  const first = firsts.length > 0 ? Math.min(...firsts) : undefined;
  const last = lasts.length > 0 ? Math.max(...lasts) : undefined;
  const failed = runs.filter((r) => r.error !== undefined);
  const d = durations.length > 0 ? summarise(durations) : undefined;
  return {
    firstByteMs: first === undefined ? undefined : first - startAt, totalMs: endAt - startAt, lastByteMs: last === undefined ? undefined : last - startAt,
    downloadP50Ms: d?.p50Ms, downloadMaxMs: d?.maxMs, bytes,
    bytesPerS: first !== undefined && last !== undefined && last > first ? (bytes / (last - first)) * 1000 : undefined,
    errors: failed.length, firstError: failed[0]?.error,
    artifactRequests: f.artifact.requests - before.requests, artifactResponses: delta(f.artifact.responses, before.responses),
  };
}

async function baselinePhase(f: RunningFleet, child: ChildProcess, v: HeavyVersion): Promise<PhaseFigures> {
  const before = { requests: f.artifact.requests, responses: { ...f.artifact.responses } };
  const sha256 = v.manifest.sha256;
  const r = await ask<DownloadsResult>(child, { type: 'baseline', path: `/api/v1/models/${HEAVY_MODEL}/versions/${v.version}/artifact`, sha256, size: v.bytes.length });
  const end = Math.max(...r.devices.map((d) => d.downloadedAt ?? d.startAt));
  return figures(r.devices, r.startedAt!, end, f, before);
}

async function rolloutPhase(f: RunningFleet, child: ChildProcess, v: HeavyVersion, deviceIds: string[], timeoutMs: number): Promise<RolloutFigures> {
  const before = { requests: f.artifact.requests, responses: { ...f.artifact.responses } };
  // Waiting is keyed by version, so the devices may see the desired message before or after this arrives.
  const devicesDone = ask<DownloadsResult>(child, { type: 'await-version', model: HEAVY_MODEL, version: v.version, timeoutMs });
  // When the rollout fails first this answer is never read; the child is killed after it.
  devicesDone.catch(() => undefined);
  const t0 = performance.now();
  const created = await f.api('POST', '/api/v1/rollouts', { model: HEAVY_MODEL, version: v.version, deviceIds, probationSeconds: 0 });
  const createRequestMs = performance.now() - t0;
  if (created.status !== 201) throw new Error(`POST /api/v1/rollouts answered ${created.status}: ${JSON.stringify(created.body).slice(0, 300)}`);
  const id = created.body.id as string;
  // The devices say when they are done; only then is the rollout read back, so no GET (a view of every device)
  // competes with the rollout on the fleet's event loop while it runs. The end time is the fleet's own stamp.
  const r = await devicesDone;
  const deadline = performance.now() + timeoutMs;
  let view = created.body as { state: string; createdAt: string; finishedAt: string | null; reason: string | null };
  while (!FINISHED.has(view.state)) {
    if (performance.now() > deadline) throw new Error(`rollout ${id} still ${view.state} ${timeoutMs} ms after its devices finished`);
    const got = await f.api('GET', `/api/v1/rollouts/${id}`);
    if (got.status !== 200) throw new Error(`GET /api/v1/rollouts/${id} answered ${got.status}`);
    view = got.body;
    if (!FINISHED.has(view.state)) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  if (view.state !== 'completed') throw new Error(`rollout ${id} ended ${view.state}: ${view.reason ?? ''}`);
  // The fleet's own stamps (ms, its clock = this machine's) bound the rollout: created → completed.
  const start = Date.parse(view.createdAt);
  const fig = figures(r.devices, start, Date.parse(view.finishedAt!), f, before);
  const desired = summarise(r.devices.map((d) => d.startAt - start));
  const commits = r.devices.map((d) => d.committedAt).filter((t): t is number => t !== undefined);
  return {
    ...fig, rolloutId: id, state: view.state, createRequestMs, desiredMinMs: desired.minMs, desiredP50Ms: desired.p50Ms, desiredMaxMs: desired.maxMs,
    lastCommitMs: commits.length > 0 ? Math.max(...commits) - start : undefined, badSignatures: r.badSignatures, hashMismatches: r.hashMismatches, linkCloses: r.linkCloses,
  };
}

export async function runRolloutCase(ctx: RolloutContext, n: number, versions: HeavyVersion[]): Promise<RolloutCase> {
  const { opts, log } = ctx;
  const dir = path.join(ctx.tmp, `fleet-${n}`);
  mkdirSync(dir, { recursive: true });
  const result: RolloutCase = { devices: n, enrollSeconds: 0, connectSeconds: undefined, connectP99Ms: undefined, reps: [], median: {}, error: undefined };
  const f = await startFleet(path.join(dir, 'data'), path.join(dir, 'fleet.log'));
  let child: ChildProcess | undefined;
  try {
    for (const v of versions) await push(f, v);
    const t0 = performance.now();
    const enrolled = await enroll(f, n, opts.enrollConcurrency);
    const creds = enrolled.devices;
    result.enrollSeconds = (performance.now() - t0) / 1000;
    child = forkChild(ctx.childModule);
    const c = await ask<Connected>(child, { type: 'connect', mqttUrl: enrolled.mqttUrl, fleetUrl: enrolled.fleetUrl, devices: creds, connectRatePerS: opts.connectRatePerS, timeoutMs: 60_000 });
    result.connectSeconds = c.seconds;
    result.connectP99Ms = c.p99Ms;
    log(`  ${n} devices: enrolled in ${result.enrollSeconds.toFixed(1)} s, connected in ${c.seconds.toFixed(1)} s`);
    for (const v of versions) {
      const baseline = await baselinePhase(f, child, v);
      const rollout = await rolloutPhase(f, child, v, creds.map((d) => d.deviceId), opts.rolloutTimeoutS * 1000);
      const ratio = rollout.totalMs / baseline.totalMs;
      result.reps.push({ version: v.version, baseline, rollout, ratio });
      log(`  ${n} devices, v${v.version}: baseline ${baseline.totalMs.toFixed(0)} ms, rollout ${rollout.totalMs.toFixed(0)} ms (first byte ${rollout.firstByteMs?.toFixed(1)} ms) = ${ratio.toFixed(2)}×${rollout.errors + baseline.errors > 0 ? `, ${rollout.errors + baseline.errors} ERRORS` : ''}`);
    }
  } catch (err) {
    result.error = (err as Error).message;
    log(`  ${n} devices: ERROR ${result.error}`);
  } finally {
    // After an error the child may still owe an answer, which would be taken for the close's: it is killed instead.
    if (child?.connected && result.error === undefined) {
      await ask(child, { type: 'close' }).catch(() => undefined);
      child.disconnect();
    } else child?.kill('SIGKILL');
    await f.stop();
    if (!opts.keepTemp) rmSync(dir, { recursive: true, force: true });
  }
  const reps = result.reps;
  result.median = {
    rolloutFirstByteMs: median(reps.map((r) => r.rollout?.firstByteMs)), rolloutTotalMs: median(reps.map((r) => r.rollout?.totalMs)),
    rolloutBytesPerS: median(reps.map((r) => r.rollout?.bytesPerS)), baselineFirstByteMs: median(reps.map((r) => r.baseline.firstByteMs)),
    baselineTotalMs: median(reps.map((r) => r.baseline.totalMs)), baselineBytesPerS: median(reps.map((r) => r.baseline.bytesPerS)), ratio: median(reps.map((r) => r.ratio)),
  };
  return result;
}
