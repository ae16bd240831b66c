import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { createAgent, type Agent } from '../../agent/src/agent.js';
import { loadConfig } from '../../agent/src/config/load.js';
import { saveCredentials } from '../../agent/src/link/credentials.js';
import { computeGolden } from '../../fleet-server/src/cli/golden.js';
import { enrollDevice, eventually, type EnrolledDevice, type RunningFleet } from './fleet.js';
import { GENERATED_REPOSITORY } from './paths.js';

/**
 * Helpers for the update tests: push model bytes (with a golden computed as `outpost models push` does), start
 * enrolled in-process agents with empty repositories, and wait for what a rollout or a device reports.
 */

/** The generated `simple` model's manifest (name/version/sha256 are replaced per push). */
export function simpleManifest(): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(GENERATED_REPOSITORY, 'simple', '1', 'manifest.json'), 'utf8')) as Record<string, unknown>;
}

export function simpleBytes(version: 1 | 2): Uint8Array {
  return readFileSync(path.join(GENERATED_REPOSITORY, 'simple', String(version), 'model.onnx'));
}

/**
 * Pushes `onnx` as name@version through the registry REST API. `golden`: 'compute' (the default, as the CLI
 * does), 'none', or a golden section given as is (a wrong one, for the golden-mismatch test).
 */
export async function pushVersion(
  f: RunningFleet,
  name: string,
  version: number,
  onnx: Uint8Array,
  options: { manifest?: Record<string, unknown>; golden?: 'compute' | 'none' | Record<string, unknown> } = {},
): Promise<{ sha256: string; size: number }> {
  const base = { ...(options.manifest ?? simpleManifest()) };
  delete base.sha256;
  delete base.golden;
  const manifest: Record<string, unknown> = { ...base, name, version };
  const golden = options.golden ?? 'compute';
  if (golden === 'compute') manifest.golden = await computeGolden(onnx, manifest);
  else if (golden !== 'none') manifest.golden = golden;
  const form = new FormData();
  form.append('manifest', JSON.stringify(manifest));
  form.append('artifact', new Blob([onnx]), 'model.onnx');
  const res = await fetch(`${f.httpUrl}/api/v1/models/${name}/versions/${version}`, { method: 'POST', body: form, headers: { authorization: `Bearer ${f.adminToken}` } });
  const body = (await res.json()) as { sha256: string; size: number };
  if (res.status !== 201) throw new Error(`pushing ${name}@${version} answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

export interface EnrolledAgent {
  agent: Agent;
  url: string;
  device: EnrolledDevice;
  dataDir: string;
  /** Stops the agent; the data dir stays (restart() reuses it) until cleanup(). */
  stop(): Promise<void>;
  /** A new agent on the same data dir (after stop()). */
  restart(): Promise<EnrolledAgent>;
  cleanup(): Promise<void>;
}

/**
 * An enrolled agent in-process: real SQLite, real HTTP on 127.0.0.1:0, real MQTT link to the fleet, an empty
 * model repository under its data dir. `config` is its highest config layer (e.g. a small disk budget).
 */
export async function startEnrolledAgent(
  f: RunningFleet,
  options: { tags?: Record<string, string>; config?: Record<string, unknown>; dataDir?: string; device?: EnrolledDevice } = {},
): Promise<EnrolledAgent> {
  const dataDir = options.dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'outpost-update-agent-'));
  const device = options.device ?? (await enrollDevice(f, { tags: options.tags ?? {} }));
  if (!options.device) saveCredentials(dataDir, { ...device, enrolledAt: new Date().toISOString() });
  const extra = options.config ?? {};
  const config = loadConfig({
    env: {},
    flags: {
      ...extra,
      dataDir, modelRepository: path.join(dataDir, 'models'),
      http: { host: '127.0.0.1', port: 0 },
      fleet: { reconnectMinMs: 50, reconnectMaxMs: 500, ...(extra.fleet as object | undefined) },
      telemetry: { system: false, ...(extra.telemetry as object | undefined) },
      update: { backoffMinMs: 20, backoffMaxMs: 200, ...(extra.update as object | undefined) },
    },
  });
  const agent = await createAgent(config, { log: pino({ level: process.env.OUTPOST_TEST_LOG ?? 'silent' }) });
  const url = await agent.start();
  const self: EnrolledAgent = {
    agent, url, device, dataDir,
    stop: () => agent.stop(),
    restart: () => startEnrolledAgent(f, { ...options, dataDir, device }),
    async cleanup() {
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return self;
}

/** Waits until the agent's active version of `model` is `version` (null: none). */
export function activeVersion(a: EnrolledAgent, model: string, version: number | null, timeoutMs = 15_000): Promise<unknown> {
  return eventually(() => (a.agent.models.active(model)?.version ?? null) === version, `${a.device.deviceId}: ${model} active version ${version}`, timeoutMs);
}

/** The latest update row of a model on an agent (state, reason …). */
export function latestUpdate(a: EnrolledAgent, model: string) {
  return a.agent.updater.store.latest(model);
}

/** Waits for the latest update of `model` on the agent to reach one of `states`; returns the row. */
export function updateReaches(a: EnrolledAgent, model: string, states: string[], timeoutMs = 15_000) {
  return eventually(() => {
    const row = latestUpdate(a, model);
    return row && states.includes(row.state) ? row : undefined;
  }, `${a.device.deviceId}: ${model} update reaches ${states.join('|')} (now ${latestUpdate(a, model)?.state ?? 'none'})`, timeoutMs);
}

/** POST /v2/models/simple/infer with the standard request; resolves with the status and OUTPUT0's first value. */
export async function inferSimple(url: string, model = 'simple'): Promise<{ status: number; first: number | null; version: string | null }> {
  const A = Array.from({ length: 16 }, (_, i) => i);
  const B = Array.from({ length: 16 }, () => 1);
  const res = await fetch(`${url}/v2/models/${model}/infer`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'INPUT0', shape: [1, 16], datatype: 'INT32', data: A }, { name: 'INPUT1', shape: [1, 16], datatype: 'INT32', data: B }] }),
  });
  const body = (await res.json()) as { model_version?: string; outputs?: { name: string; data: number[] }[] };
  return { status: res.status, first: body.outputs?.find((o) => o.name === 'OUTPUT0')?.data[0] ?? null, version: body.model_version ?? null };
}
