import mqtt, { type MqttClient } from 'mqtt';
import { topicFor } from '../shared/src/mqtt/topics.js';
import type { FleetApi } from './fleet-api.js';
import { summarise } from './stats.js';

/**
 * The simulated devices, all in the bench process: enrolled through the fleet's REST API, then one mqtt.js
 * client each, connected the way the agent's link connects (MQTT 3.1.1, client id = username = device id,
 * password = secret, persistent session, QoS 1 subscriptions to its own `desired` and `cmd`).
 */
export interface SimDevice {
  id: string;
  secret: string;
  /** outpost/v1/<id>/events */
  eventsTopic: string;
  /** Last seq used; the next event carries seq + 1 (per device, from 1, as the agent's outbox numbers them). */
  seq: number;
  client: MqttClient | undefined;
  connectMs: number | undefined;
  /** Set when the bench ends the client, so its own close is not counted as a disconnect under load. */
  closing: boolean;
}

export interface EnrollResult {
  devices: SimDevice[];
  mqttUrl: string;
  seconds: number;
  perSecond: number;
  concurrency: number;
}

/** Enrolls `n` devices, `concurrency` at a time; each is a token request (operator) and an enroll (device). */
export async function enrollDevices(api: FleetApi, n: number, concurrency: number): Promise<EnrollResult> {
  const devices: SimDevice[] = [];
  let mqttUrl = '';
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      const e = await api.enroll();
      mqttUrl = e.mqttUrl;
      devices.push({ id: e.deviceId, secret: e.secret, eventsTopic: topicFor(e.deviceId, 'events'), seq: 0, client: undefined, connectMs: undefined, closing: false });
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  const seconds = (performance.now() - started) / 1000;
  return { devices, mqttUrl, seconds, perSecond: n / seconds, concurrency };
}

export interface ConnectResult {
  devices: number;
  ratePerS: number;
  /** First connect started → last device connected and subscribed. */
  seconds: number;
  /** Per device: connect started → CONNACK + SUBACK. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Connection attempts refused or failed before each device got in (mqtt.js retries every second). */
  failedAttempts: number;
}

/** Live counters over all device clients, for the report: unexpected closes and reconnects under load. */
export interface LinkCounters {
  closes: number;
  reconnects: number;
  errors: number;
  lastError: string | undefined;
}

/** Starts `ratePerS` connections per second until every device is connected and subscribed, or throws at the deadline. */
export async function connectDevices(devices: SimDevice[], url: string, ratePerS: number, timeoutMs: number, counters: LinkCounters): Promise<ConnectResult> {
  let failedAttempts = 0;
  const started = performance.now();
  const connectOne = (d: SimDevice): Promise<void> =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const client = mqtt.connect(url, {
        protocolVersion: 4, clientId: d.id, username: d.id, password: d.secret, clean: false,
        keepalive: 30, reconnectPeriod: 1000, connectTimeout: 30_000,
      });
      d.client = client;
      let ready = false;
      client.on('error', (err) => {
        counters.errors++;
        counters.lastError = err.message;
        if (!ready) failedAttempts++;
      });
      client.on('close', () => {
        if (ready && !d.closing) counters.closes++;
      });
      client.on('reconnect', () => {
        if (ready && !d.closing) counters.reconnects++;
      });
      client.once('connect', () => {
        client.subscribe([topicFor(d.id, 'desired'), topicFor(d.id, 'cmd')], { qos: 1 }, (err) => {
          if (err) {
            counters.errors++;
            counters.lastError = `subscribe: ${err.message}`;
          }
          ready = true;
          d.connectMs = performance.now() - t0;
          resolve();
        });
      });
    });
  const pending: Promise<void>[] = [];
  for (let i = 0; i < devices.length; i++) {
    const due = started + (i * 1000) / ratePerS;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(connectOne(devices[i]!));
  }
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const missing = devices.filter((d) => d.connectMs === undefined).length;
      reject(new Error(`${missing} of ${devices.length} devices not connected within ${timeoutMs} ms (last error: ${counters.lastError ?? 'none'})`));
    }, timeoutMs);
  });
  try {
    await Promise.race([Promise.all(pending), deadline]);
  } finally {
    clearTimeout(timer);
  }
  const seconds = (performance.now() - started) / 1000;
  const s = summarise(devices.map((d) => d.connectMs!));
  return { devices: devices.length, ratePerS, seconds, p50Ms: s.p50Ms, p99Ms: s.p99Ms, maxMs: s.maxMs, failedAttempts };
}

/** Closes every device client (no DISCONNECT wait: force), bounded in time. */
export async function closeDevices(devices: SimDevice[], timeoutMs = 10_000): Promise<void> {
  for (const d of devices) d.closing = true;
  const ends = devices.map((d) => (d.client ? d.client.endAsync(true).catch(() => undefined) : Promise.resolve()));
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(ends), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  clearTimeout(timer);
  for (const d of devices) d.client = undefined;
}
