import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { writePasswordFile } from '../../fleet-server/src/broker/password-file.js';
import { FLEET_USERNAME } from '../../fleet-server/src/broker/types.js';
import { hashSecret, newSecret } from '../../fleet-server/src/devices/secret-hash.js';
import { openFleetStore } from '../../fleet-server/src/storage/fleet-store.js';
import { topicFor } from '../../shared/src/mqtt/topics.js';
import { connectDevice, enrollDevice, eventually, startFleet, type EnrolledDevice, type RunningFleet } from '../helpers/fleet.js';
import { freePort, MOSQUITTO, ProcessGroup, startMosquitto } from '../helpers/processes.js';
import { parseMetrics, samples } from '../helpers/prom-text.js';

/**
 * What a PUBACK from the fleet means. The agent deletes an outbox row on PUBACK, so with the embedded broker the
 * PUBACK must mean "stored in fleet.db": a real enrolled device (mqtt.js with its own credentials) publishes to a
 * real fleet server (embedded aedes, SQLite in a temp dir), the fleet stops right after the last PUBACK, and the
 * database is read back; a failing database must withhold the PUBACK. Also: shutdown does not wait forever for
 * a stalled HTTP request, and with Mosquitto the fleet's own login is not valid on the device listener.
 */
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-durable-ack-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A fleet on `dataDir` (left in place by stop()), stopped after the test unless the test stopped it. */
async function fleetOn(dataDir: string): Promise<RunningFleet> {
  const f = await startFleet({ dataDir });
  cleanups.push(() => f.stop());
  return f;
}

async function device(f: RunningFleet, d: EnrolledDevice): Promise<MqttClient> {
  const client = await connectDevice(f.mqttUrl, d);
  cleanups.push(() => void client.end(true));
  return client;
}

function event(deviceId: string, seq: number): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, deviceId, seq, ts: new Date().toISOString(), kind: 'test.durable', severity: 'info', message: `event ${seq}`, data: { seq } }));
}

function storedSeqs(f: RunningFleet, deviceId: string): number[] {
  return (f.fleet.store.db.prepare('SELECT seq FROM events WHERE device_id = ? ORDER BY seq').all(deviceId) as { seq: number }[]).map((r) => r.seq);
}

async function rejectedCount(f: RunningFleet, reason: string): Promise<number> {
  const all = parseMetrics((await f.api('GET', '/metrics', undefined, null)).body as string);
  return samples(all, 'outpost_fleet_rejected_messages_total', { reason }).reduce((n, s) => n + s.value, 0);
}

function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('embedded broker: a PUBACK means stored', () => {
  it('keeps every acknowledged event when the fleet stops right after the last PUBACK', async () => {
    const N = 2_000;
    const dataDir = tempDir();
    const f = await fleetOn(dataDir);
    const d = await enrollDevice(f);
    const client = await device(f, d);
    const topic = topicFor(d.deviceId, 'events');

    // All in flight at once, as an agent draining a backlog does; each promise resolves on its own PUBACK.
    await Promise.all(Array.from({ length: N }, (_, i) => client.publishAsync(topic, event(d.deviceId, i + 1), { qos: 1 })));
    await f.fleet.stop(); // no waiting: whatever was acknowledged must already be in fleet.db

    const reopened = openFleetStore(dataDir);
    try {
      const seqs = (reopened.db.prepare('SELECT seq FROM events WHERE device_id = ? ORDER BY seq').all(d.deviceId) as { seq: number }[]).map((r) => r.seq);
      expect(seqs.length).toBe(N);
      expect(seqs).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    } finally {
      reopened.close();
    }
  }, 30_000);

  it('withholds the PUBACK and closes the connection while the database fails; the resend is stored once it recovers', async () => {
    const f = await fleetOn(tempDir());
    const d = await enrollDevice(f);
    const topic = topicFor(d.deviceId, 'events');
    const first = await device(f, d);
    const closed = new Promise<void>((resolve) => first.once('close', () => resolve()));

    // A real SQLite write failure ("attempt to write a readonly database"), as a full or failing disk gives.
    f.fleet.store.db.pragma('query_only = ON');
    let acked = false;
    void first.publishAsync(topic, event(d.deviceId, 1), { qos: 1 }).then(() => (acked = true), () => undefined);
    await within(closed, 3_000, 'the fleet to close the connection');
    expect(acked).toBe(false); // so the agent's outbox keeps the row
    expect(await rejectedCount(f, 'store-failed')).toBeGreaterThanOrEqual(1);
    first.end(true);

    f.fleet.store.db.pragma('query_only = OFF');
    const second = await device(f, d);
    await second.publishAsync(topic, event(d.deviceId, 1), { qos: 1 });
    expect(storedSeqs(f, d.deviceId)).toEqual([1]); // stored by the time the PUBACK arrived
  });

  it('acknowledges garbage, drops and counts it, and keeps the connection', async () => {
    const f = await fleetOn(tempDir());
    const d = await enrollDevice(f);
    const client = await device(f, d);
    const topic = topicFor(d.deviceId, 'events');

    // Never going to become valid: acking it lets the agent move on instead of reconnecting over it.
    await client.publishAsync(topic, Buffer.from('not json'), { qos: 1 });
    await client.publishAsync(topic, event(d.deviceId, 2), { qos: 1 });
    expect(client.connected).toBe(true);
    expect(storedSeqs(f, d.deviceId)).toEqual([2]);
    expect(await rejectedCount(f, 'not-json')).toBe(1);
  });
});

describe('fleet shutdown', () => {
  it('cuts an HTTP request that stalls instead of waiting for it forever', async () => {
    const f = await fleetOn(tempDir());
    const { port } = new URL(f.httpUrl);
    const socket = net.connect(Number(port), '127.0.0.1');
    cleanups.push(() => void socket.destroy()); // runs before the fleet's stop (reverse order)
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    // An upload whose body stops arriving (a client on a dead link). "100 Continue" shows the server has
    // started handling the request, so the connection is not idle when the fleet stops.
    socket.write(`POST /api/v1/enrollment-tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${f.adminToken}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n`);
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    await eventually(() => received.includes('100 Continue'), 'the server to accept the request');
    socket.write('{"tags":');
    const socketClosed = once(socket, 'close');

    await within(f.fleet.stop(), 15_000, 'the fleet to stop');
    await within(socketClosed, 1_000, 'the stalled connection to be closed');
  }, 30_000);
});

/** The shipped Mosquitto on free ports, with a fleet server in external-broker mode behind it; both cleaned up. */
async function externalFleet() {
    const procs = new ProcessGroup();
    cleanups.push(() => procs.killAll());
    const dir = tempDir();
    const fleetPassword = newSecret();
    await writePasswordFile(path.join(dir, 'fleet.passwd'), [{ username: FLEET_USERNAME, secretHash: hashSecret(fleetPassword) }]);
    const mosquitto = await startMosquitto(procs, dir, { device: await freePort(), fleet: await freePort() });
    const external = await startFleet({
      dataDir: path.join(dir, 'fleet'),
      config: { broker: { url: mosquitto.fleetUrl, username: FLEET_USERNAME, password: fleetPassword, passwordFile: mosquitto.passwordFile, pidFile: mosquitto.pidFile, publicUrl: mosquitto.deviceUrl } },
    });
    cleanups.push(() => external.stop());
  return { mosquitto, external, fleetPassword };
}

const hasMosquitto = existsSync(MOSQUITTO);
describe.skipIf(!hasMosquitto)('external Mosquitto: the fleet login', () => {
  it('is not accepted on the device listener, only on the fleet listener', async () => {
    const { mosquitto, external, fleetPassword } = await externalFleet();
    // Started: the fleet's client is connected on the fleet listener. Enrolling rewrites the device password
    // file and reloads Mosquitto; once the device gets in, that reload has been applied.
    const d = await enrollDevice(external);
    const dev = await eventually(() => connectDevice(mosquitto.deviceUrl, d), 'the enrolled device to log in on the device listener', 10_000);
    cleanups.push(() => void dev.end(true));

    // The fleet user may read and write every device's topics; on the device listener it would be a master key.
    const outcome = await connectDevice(mosquitto.deviceUrl, { deviceId: FLEET_USERNAME, secret: fleetPassword }).then(
      (c) => (c.end(true), 'accepted'),
      (err: { code?: unknown }) => err.code,
    );
    expect(outcome).toBe(5); // CONNACK "not authorized": Mosquitto's answer to a user not in the password file
  });

  it('leaves a message it could not store with Mosquitto, which redelivers it once the database recovers', async () => {
    const { mosquitto, external, fleetPassword } = await externalFleet();
    const d = await enrollDevice(external);
    const dev = await eventually(() => connectDevice(mosquitto.deviceUrl, d), 'the enrolled device to log in on the device listener', 10_000);
    cleanups.push(() => void dev.end(true));

    // Mosquitto acknowledges the device at once; the fleet's store fails, so the fleet must not acknowledge it
    // to Mosquitto (before this, the message was counted as store-failed and lost).
    external.fleet.store.db.pragma('query_only = ON');
    await dev.publishAsync(topicFor(d.deviceId, 'events'), event(d.deviceId, 7), { qos: 1 });
    await eventually(async () => (await rejectedCount(external, 'store-failed')) >= 1 || undefined, 'the store to fail', 5_000);
    expect(storedSeqs(external, d.deviceId)).toEqual([]);
    external.fleet.store.db.pragma('query_only = OFF');
    await eventually(() => (storedSeqs(external, d.deviceId).length > 0 ? true : undefined), 'the redelivered message to be stored', 10_000);
    expect(storedSeqs(external, d.deviceId)).toEqual([7]);
  });
});
