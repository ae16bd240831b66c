import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import pino from 'pino';
import { loadFleetConfig } from '../../fleet-server/src/config/load.js';
import { createFleet, type Fleet } from '../../fleet-server/src/fleet.js';
import type { Clock } from '../../fleet-server/src/storage/clock.js';

/**
 * A real fleet server for tests: real SQLite in a temp data dir, the embedded aedes broker and HTTP on
 * 127.0.0.1 with ports 0. Always `await running.stop()` (afterEach/afterAll); it removes the temp dir.
 *
 *   const f = await startFleet();
 *   const { status, body } = await f.api('POST', '/api/v1/enrollment-tokens', { tags: { site: 'a' } });
 *   const device = await enrollDevice(f);             // { deviceId, secret, mqttUrl, … }
 *   await f.stop();
 */
export interface RunningFleet {
  fleet: Fleet;
  /** REST base URL, e.g. http://127.0.0.1:40123 (no trailing slash; routes start with /api/v1). */
  httpUrl: string;
  /** MQTT URL of the embedded broker, e.g. mqtt://127.0.0.1:40124 */
  mqttUrl: string;
  /** The first operator token, read from <dataDir>/admin-token. */
  adminToken: string;
  dataDir: string;
  /**
   * One REST call with a JSON body. `auth` defaults to the admin token; pass null for no Authorization header,
   * a string starting with "Basic " or "Bearer " to send it as is, or any other string as a bearer token.
   * `body` is the parsed JSON answer (or the text when it is not JSON).
   */
  api(method: string, urlPath: string, body?: unknown, auth?: string | null): Promise<{ status: number; body: any; headers: Headers }>;
  stop(): Promise<void>;
}

export interface StartFleetOptions {
  /** Highest config layer, e.g. { enrollment: { maxTtlSeconds: 60 } }. Ports and hosts default to 127.0.0.1:0. */
  config?: Record<string, unknown>;
  /** A clock the test moves (fleet-server/src/storage/clock.ts manualClock). */
  clock?: Clock;
  /** Reuse a data dir (e.g. to restart a fleet on the same database); then stop() leaves it in place. */
  dataDir?: string;
}

export async function startFleet(options: StartFleetOptions = {}): Promise<RunningFleet> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'outpost-fleet-test-'));
  const overrides = options.config ?? {};
  const config = loadFleetConfig({
    env: {},
    flags: {
      ...overrides,
      dataDir,
      http: { host: '127.0.0.1', port: 0, ...(overrides.http as object | undefined) },
      broker: { host: '127.0.0.1', port: 0, ...(overrides.broker as object | undefined) },
    },
  });
  const fleet = await createFleet(config, { log: pino({ level: process.env.OUTPOST_TEST_LOG ?? 'silent' }), ...(options.clock ? { clock: options.clock } : {}) });
  let urls;
  try {
    urls = await fleet.start();
  } catch (err) {
    await fleet.stop();
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  const adminToken = readFileSync(fleet.adminTokenFile, 'utf8').trim();
  const api: RunningFleet['api'] = async (method, urlPath, body, auth = adminToken) => {
    const headers: Record<string, string> = {};
    if (auth !== null) headers.authorization = /^(Basic|Bearer) /.test(auth) ? auth : `Bearer ${auth}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${urls.httpUrl}${urlPath}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON (e.g. /metrics): keep the text
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  return {
    fleet, httpUrl: urls.httpUrl, mqttUrl: urls.mqttUrl, adminToken, dataDir, api,
    async stop() {
      await fleet.stop();
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface EnrolledDevice {
  deviceId: string;
  secret: string;
  mqttUrl: string;
  fleetUrl: string;
  fleetPublicKey: string;
  tags: Record<string, string>;
}

/** Creates an enrollment token (as the admin) and enrolls with it; throws on any non-201 answer. */
export async function enrollDevice(f: RunningFleet, token: { tags?: Record<string, string>; deviceId?: string } = {}): Promise<EnrolledDevice> {
  const created = await f.api('POST', '/api/v1/enrollment-tokens', token);
  if (created.status !== 201) throw new Error(`enrollment-tokens answered ${created.status}: ${JSON.stringify(created.body)}`);
  const enrolled = await f.api('POST', '/api/v1/enroll', { token: created.body.token }, null);
  if (enrolled.status !== 201) throw new Error(`enroll answered ${enrolled.status}: ${JSON.stringify(enrolled.body)}`);
  return enrolled.body as EnrolledDevice;
}

/** HTTP Basic credentials of a device, for `api(…, auth)`. */
export function deviceAuth(d: { deviceId: string; secret: string }): string {
  return `Basic ${Buffer.from(`${d.deviceId}:${d.secret}`).toString('base64')}`;
}

/**
 * Connects an mqtt.js client (MQTT 3.1.1, no auto-reconnect) as the device; rejects with the broker's refusal
 * (err.code 4 or 5) or a socket error. The caller ends it (`client.end(true)`) in afterEach.
 */
export function connectDevice(mqttUrl: string, d: { deviceId: string; secret: string }, extra: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(mqttUrl, { protocolVersion: 4, clientId: d.deviceId, username: d.deviceId, password: d.secret, reconnectPeriod: 0, connectTimeout: 5_000, ...extra });
    client.once('connect', () => {
      client.removeAllListeners('error');
      client.on('error', () => undefined);
      resolve(client);
    });
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
    client.once('close', () => reject(new Error('connection closed before CONNACK')));
  });
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs` (bounded, no fixed sleeps). */
export async function eventually<T>(check: () => T | Promise<T>, what: string, timeoutMs = 5_000): Promise<Exclude<T, undefined | false>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v as Exclude<T, undefined | false>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
