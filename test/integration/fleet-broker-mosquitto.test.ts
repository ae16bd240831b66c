/**
 * The external-broker mode against a real Mosquitto 2 started from the shipped fleet-server/mosquitto/outpost.conf
 * and acl (copied into a temp dir with paths and ports rewritten): syncDevices installs the devices' $7$ hashes
 * and SIGHUPs Mosquitto; the same ACL cases as the embedded broker (research §5.5 M1–M4, where Mosquitto's
 * semantics allow); shared subscriptions over the fleet listener; resubscription after a broker restart that
 * lost the session; and QoS 1 no-loss with a slow consumer, which Mosquitto's defaults fail (research §0).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { writeMosquittoConfig } from '../helpers/mosquitto-config.js';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { hashSecret, newSecret } from '../../fleet-server/src/devices/secret-hash.js';
import { externalBroker } from '../../fleet-server/src/broker/external.js';
import { connectFleetClient } from '../../fleet-server/src/broker/fleet-client.js';
import { writePasswordFile } from '../../fleet-server/src/broker/password-file.js';
import { FLEET_USERNAME, type FleetBroker, type FleetClient } from '../../fleet-server/src/broker/types.js';
import { topicFor } from '../../shared/src/mqtt/topics.js';
import {
  MapAuthority, connackRefusal, connectClient, freePort, openRaw, rawConnect, rawPublishHeader, silentLog, subscribeCodes, waitFor,
  type Received, type TestClient,
} from './support/fleet-broker-fixtures.js';

const MOSQUITTO = '/usr/sbin/mosquitto';
const hasMosquitto = fs.existsSync(MOSQUITTO);
if (!hasMosquitto) console.warn(`fleet-broker-mosquitto: skipped, ${MOSQUITTO} is not installed (Debian: apt-get install mosquitto)`);


interface Mosquitto {
  dir: string;
  deviceUrl: string;
  fleetUrl: string;
  devicePort: number;
  passwordFile: string;
  pidFile: string;
  stop(): Promise<void>;
}

/**
 * Starts Mosquitto from the shipped config. `defaults: true` deletes the two queue settings, i.e. runs with
 * Mosquitto's own defaults (max_queued_messages 1000, max_inflight_messages 20).
 */
async function startMosquitto(dir: string, ports: { device: number; fleet: number }, opts: { defaults?: boolean } = {}): Promise<Mosquitto> {
  writeMosquittoConfig(dir, ports, opts);
  if (!fs.existsSync(path.join(dir, 'devices.passwd'))) await writePasswordFile(path.join(dir, 'devices.passwd'), []);

  const proc: ChildProcess = spawn(MOSQUITTO, ['-c', path.join(dir, 'outpost.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let exited = false;
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<void>((resolve) => proc.once('exit', () => ((exited = true), resolve())));
  for (const port of [ports.device, ports.fleet]) {
    const deadline = Date.now() + 5000;
    while (!(await canConnect(port))) {
      if (exited || Date.now() > deadline) throw new Error(`mosquitto did not listen on ${port}: ${stderr}`);
      await delay(20);
    }
  }
  return {
    dir,
    deviceUrl: `mqtt://127.0.0.1:${ports.device}`,
    fleetUrl: `mqtt://127.0.0.1:${ports.fleet}`,
    devicePort: ports.device,
    passwordFile: path.join(dir, 'devices.passwd'),
    pidFile: path.join(dir, 'mosquitto.pid'),
    async stop() {
      if (exited) return;
      proc.kill('SIGTERM');
      const killer = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exit;
      clearTimeout(killer);
    },
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

/** Mosquitto applies a rewritten password file when it handles SIGHUP, a moment after syncDevices returns. */
async function connectEventually(url: string, id: string, secret: string, clean = false): Promise<TestClient> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return await connectClient(url, { clientId: id, username: id, password: secret, clean });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await delay(25);
    }
  }
}

async function makeFleetAuth(dir: string): Promise<string> {
  const password = newSecret();
  await writePasswordFile(path.join(dir, 'fleet.passwd'), [{ username: FLEET_USERNAME, secretHash: hashSecret(password) }]);
  return password;
}

const dirs: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-mosquitto-'));
  dirs.push(dir);
  return dir;
}

afterAll(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!hasMosquitto)('external Mosquitto from the shipped outpost.conf and acl', () => {
  let mosquitto: Mosquitto;
  let broker: FleetBroker;
  let fleet: FleetClient;
  let fleetInbox: Received[] = [];
  const authority = new MapAuthority();
  const secrets = new Map<string, string>();
  const clients: TestClient[] = [];

  beforeAll(async () => {
    const dir = tempDir();
    const fleetPassword = await makeFleetAuth(dir);
    mosquitto = await startMosquitto(dir, { device: await freePort(), fleet: await freePort() });
    broker = externalBroker({ url: mosquitto.fleetUrl, username: FLEET_USERNAME, password: fleetPassword, passwordFile: mosquitto.passwordFile, pidFile: mosquitto.pidFile, log: silentLog });
    fleet = await connectFleetClient({ url: broker.internalUrl, ...broker.internalCredentials, log: silentLog, onMessage: (topic, payload) => void fleetInbox.push({ topic, payload: payload.toString() }) });
  });

  afterAll(async () => {
    await fleet?.close();
    await broker?.close();
    await mosquitto?.stop();
  });

  beforeEach(async () => {
    fleetInbox = [];
    for (const id of ['dev-A', 'dev-B']) secrets.set(id, authority.enroll(id));
    await broker.syncDevices!(authority.entries());
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.mqtt.endAsync(true);
  });

  async function device(id: string, clean = false): Promise<TestClient> {
    const client = await connectEventually(mosquitto.deviceUrl, id, secrets.get(id)!, clean);
    clients.push(client);
    return client;
  }

  it('accepts the $7$ hashes syncDevices installs, ingests a device message and serves a retained desired', async () => {
    expect(fs.statSync(mosquitto.passwordFile).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(mosquitto.passwordFile, 'utf8')).toMatch(/^dev-A:\$7\$/m);
    const a = await device('dev-A');
    await a.mqtt.publishAsync(topicFor('dev-A', 'telemetry'), '{"seq":1}', { qos: 1 });
    await waitFor('dev-A telemetry at the fleet', () => fleetInbox.find((m) => m.topic === topicFor('dev-A', 'telemetry')));
    await fleet.publish(topicFor('dev-B', 'desired'), 'desired for B', { retain: true });
    const b = await device('dev-B');
    await b.mqtt.subscribeAsync(topicFor('dev-B', 'desired'), { qos: 1 });
    await waitFor('retained desired at dev-B', () => b.received.find((m) => m.payload === 'desired for B'));
  });

  it('M1: the fleet receives nothing a device publishes outside its own root', async () => {
    for (const topic of [topicFor('dev-B', 'telemetry'), topicFor('dev-B', 'state'), topicFor('dev-A', 'desired')]) {
      const a = await device('dev-A', true);
      // Mosquitto 2.0.11 answers a denied QoS 1 PUBLISH with an MQTT 5-style PUBACK (reason 0x87) that a 3.1.1
      // client may treat as malformed and close on; either way Mosquitto has handled the PUBLISH by then.
      await Promise.race([a.mqtt.publishAsync(topic, 'forged', { qos: 1 }), waitFor('close', () => a.closes > 0)]);
    }
    const a = await device('dev-A', true);
    await a.mqtt.publishAsync(topicFor('dev-A', 'telemetry'), 'legit', { qos: 1 });
    await waitFor('legit telemetry at the fleet (barrier)', () => fleetInbox.find((m) => m.payload === 'legit'));
    expect(fleetInbox.filter((m) => m.payload === 'forged')).toEqual([]);
  });

  it('a last will on another device\'s state is never delivered', async () => {
    // Mosquitto accepts the CONNECT (the embedded broker refuses it) and checks the write ACL when it sends the will.
    const a = await connectClient(mosquitto.deviceUrl, {
      clientId: 'dev-A', username: 'dev-A', password: secrets.get('dev-A')!, clean: true,
      will: { topic: topicFor('dev-B', 'state'), payload: Buffer.from('forged will'), qos: 1, retain: true },
    });
    a.mqtt.stream.destroy(); // no DISCONNECT: the broker sends the will now
    await waitFor('dev-A gone', () => a.closes > 0);
    const again = await device('dev-A', true);
    await again.mqtt.publishAsync(topicFor('dev-A', 'events'), 'after will', { qos: 1 });
    await waitFor('later dev-A event at the fleet (barrier)', () => fleetInbox.find((m) => m.payload === 'after will'));
    expect(fleetInbox.filter((m) => m.payload === 'forged will')).toEqual([]);
  });

  it("M2: a device's wildcard and foreign subscriptions deliver nothing of other devices", async () => {
    const a = await device('dev-A');
    // Mosquitto 2.0.11 grants these in the SUBACK of a 3.1.1 client and filters at delivery by the read ACL
    // (the embedded broker answers 0x80); what matters to the fleet is that nothing is delivered.
    await subscribeCodes(a.mqtt, ['#', 'outpost/v1/+/desired', topicFor('dev-B', 'desired'), topicFor('dev-B', 'cmd'), topicFor('dev-A', 'desired')]);
    const b = await device('dev-B');
    await fleet.publish(topicFor('dev-B', 'desired'), 'for B', { retain: true });
    await fleet.publish(topicFor('dev-B', 'cmd'), 'cmd for B', { retain: false });
    await b.mqtt.publishAsync(topicFor('dev-B', 'telemetry'), 'B telemetry', { qos: 1 });
    await waitFor('B telemetry at the fleet', () => fleetInbox.find((m) => m.payload === 'B telemetry'));
    await fleet.publish(topicFor('dev-A', 'desired'), 'for A', { retain: false });
    await waitFor('A receives its own desired (barrier)', () => a.received.find((m) => m.payload === 'for A'));
    expect(a.received.map((m) => m.payload)).toEqual(['for A']);
  });

  it('refuses unknown devices and wrong secrets, and devices on the fleet listener', async () => {
    await device('dev-A'); // the password file is live
    const refused = [
      await connackRefusal(mosquitto.deviceUrl, { clientId: 'dev-X', username: 'dev-X', password: 'anything' }),
      await connackRefusal(mosquitto.deviceUrl, { clientId: 'dev-A', username: 'dev-A', password: 'wrong' }),
      await connackRefusal(mosquitto.deviceUrl, { clientId: 'dev-A' }),
      // per_listener_settings: the fleet listener has its own password file without devices
      await connackRefusal(mosquitto.fleetUrl, { clientId: 'dev-A', username: 'dev-A', password: secrets.get('dev-A')! }),
    ];
    for (const code of refused) expect([4, 5]).toContain(code);
  });

  it('revocation: syncDevices without a device kicks its live connection; disconnect(id) kicks another', async () => {
    const a = await device('dev-A');
    const b = await device('dev-B');
    authority.revoke('dev-A');
    await broker.syncDevices!(authority.entries());
    await waitFor('revoked dev-A kicked by the reload', () => a.closes > 0);
    expect([4, 5]).toContain(await connackRefusal(mosquitto.deviceUrl, { clientId: 'dev-A', username: 'dev-A', password: secrets.get('dev-A')! }));
    expect(b.closes).toBe(0);

    await broker.disconnect('dev-B');
    await waitFor('dev-B kicked by disconnect()', () => b.closes > 0);
    expect(fs.readFileSync(mosquitto.passwordFile, 'utf8')).not.toMatch(/^dev-B:/m);
  });

  it("M3: A's credentials under B's client id never kick B (use_username_as_clientid)", async () => {
    const b = await device('dev-B');
    await b.mqtt.subscribeAsync(topicFor('dev-B', 'desired'), { qos: 1 });
    // Mosquitto accepts the connection but as client `dev-A`: the username replaces the claimed client id.
    const intruder = await connectClient(mosquitto.deviceUrl, { clientId: 'dev-B', username: 'dev-A', password: secrets.get('dev-A')!, clean: true });
    clients.push(intruder);
    await subscribeCodes(intruder.mqtt, [topicFor('dev-B', 'desired')]);
    await fleet.publish(topicFor('dev-B', 'desired'), 'still yours', { retain: false });
    await waitFor('B keeps receiving', () => b.received.find((m) => m.payload === 'still yours'));
    expect(b.closes).toBe(0);
    expect(intruder.received.filter((m) => m.payload === 'still yours')).toEqual([]);
  });

  it('M4: a 256 MB packet header (max_packet_size) or garbage closes that connection only', async () => {
    const b = await device('dev-B');
    await b.mqtt.subscribeAsync(topicFor('dev-B', 'desired'), { qos: 1 });
    const oversized = await openRaw(mosquitto.devicePort);
    const garbage = await openRaw(mosquitto.devicePort);
    try {
      oversized.socket.write(rawConnect('dev-A', 'dev-A', secrets.get('dev-A')!));
      await oversized.connack();
      oversized.socket.write(rawPublishHeader(268_435_455));
      oversized.socket.write(Buffer.alloc(1024 * 1024));
      await waitFor('mosquitto closes the oversized connection', () => oversized.isClosed(), 3000);
      garbage.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor('mosquitto closes the garbage connection', () => garbage.isClosed(), 3000);
    } finally {
      oversized.socket.destroy();
      garbage.socket.destroy();
    }
    await fleet.publish(topicFor('dev-B', 'desired'), 'after oversized', { retain: false });
    await waitFor('B unaffected', () => b.received.find((m) => m.payload === 'after oversized'));
  });

  it('two fleet servers in a $share group split the ingest, each message delivered once', async () => {
    const inboxes: string[][] = [[], []];
    const shared = await Promise.all([0, 1].map((i) => connectFleetClient({
      url: broker.internalUrl, ...broker.internalCredentials, clientId: `outpost-fleet-${i}`, sharedGroup: 'ingest', log: silentLog,
      onMessage: (topic, payload) => void (topic.endsWith('/events') && inboxes[i]!.push(payload.toString())),
    })));
    try {
      const a = await device('dev-A');
      const sent = Array.from({ length: 40 }, (_, i) => `event-${i}`);
      for (const payload of sent) await a.mqtt.publishAsync(topicFor('dev-A', 'events'), payload, { qos: 1 });
      await waitFor('all 40 events across the group', () => inboxes[0]!.length + inboxes[1]!.length >= sent.length);
      expect([...inboxes[0]!, ...inboxes[1]!].sort()).toEqual([...sent].sort());
      expect(inboxes[0]!.length).toBeGreaterThan(0);
      expect(inboxes[1]!.length).toBeGreaterThan(0);
    } finally {
      for (const c of shared) await c.close();
    }
  });
});

describe.skipIf(!hasMosquitto)('external Mosquitto: delivery guarantees', () => {
  const authority = new MapAuthority();
  const secret = authority.enroll('dev-Q');

  /** One device publishes `count` QoS 1 messages as fast as it can; the fleet consumer is deliberately slow. */
  async function qos1Run(opts: { defaults: boolean; count: number }): Promise<number> {
    const dir = tempDir();
    const fleetPassword = await makeFleetAuth(dir);
    const mosquitto = await startMosquitto(dir, { device: await freePort(), fleet: await freePort() }, { defaults: opts.defaults });
    const broker = externalBroker({ url: mosquitto.fleetUrl, username: FLEET_USERNAME, password: fleetPassword, passwordFile: mosquitto.passwordFile, pidFile: mosquitto.pidFile, log: silentLog });
    const seen = new Set<string>();
    let markers = 0;
    let handled = 0;
    const fleet = await connectFleetClient({
      url: broker.internalUrl, ...broker.internalCredentials, log: silentLog,
      // A consumer slower than the publisher: every 100th message costs 10 ms (a slow SQLite commit).
      onMessage: async (_topic, payload) => {
        const text = payload.toString();
        if (text.startsWith('marker')) markers += 1;
        else seen.add(text);
        handled += 1;
        if (handled % 100 === 0) await delay(10);
      },
    });
    let device: TestClient | undefined;
    try {
      await broker.syncDevices!(authority.entries());
      device = await connectEventually(mosquitto.deviceUrl, 'dev-Q', secret);
      const topic = topicFor('dev-Q', 'telemetry');
      await Promise.all(Array.from({ length: opts.count }, (_, i) => device!.mqtt.publishAsync(topic, `m-${i}`, { qos: 1 })));
      // Barrier: Mosquitto keeps per-subscriber order, so once a marker published now arrives, everything it
      // was going to deliver before it has arrived. A marker can itself be dropped while the queue is full.
      for (let attempt = 0; attempt < 100 && markers === 0 && seen.size < opts.count; attempt++) {
        await device.mqtt.publishAsync(topic, `marker-${attempt}`, { qos: 1 });
        await waitFor('marker', () => markers > 0 || seen.size === opts.count, 300).catch(() => undefined);
      }
      return seen.size;
    } finally {
      await device?.mqtt.endAsync(true);
      await fleet.close();
      await mosquitto.stop();
    }
  }

  it('delivers 5,000 of 5,000 QoS 1 messages to a slow fleet consumer with the shipped queue settings', async () => {
    expect(await qos1Run({ defaults: false, count: 5000 })).toBe(5000);
  });

  it("loses QoS 1 messages with Mosquitto's default max_queued_messages/max_inflight_messages (the test can catch it)", async () => {
    expect(await qos1Run({ defaults: true, count: 5000 })).toBeLessThan(5000);
  });

  it('the fleet client resubscribes when the broker restarts without its session', async () => {
    const dir = tempDir();
    const fleetPassword = await makeFleetAuth(dir);
    const ports = { device: await freePort(), fleet: await freePort() };
    let mosquitto = await startMosquitto(dir, ports);
    const broker = externalBroker({ url: mosquitto.fleetUrl, username: FLEET_USERNAME, password: fleetPassword, passwordFile: mosquitto.passwordFile, pidFile: mosquitto.pidFile, log: silentLog });
    await broker.syncDevices!(authority.entries());
    const inbox: string[] = [];
    const fleet = await connectFleetClient({ url: broker.internalUrl, ...broker.internalCredentials, log: silentLog, onMessage: (_t, p) => void inbox.push(p.toString()) });
    let device: TestClient | undefined;
    try {
      await mosquitto.stop();
      fs.rmSync(path.join(dir, 'mosquitto.db'), { force: true }); // the broker forgets the fleet's session
      mosquitto = await startMosquitto(dir, ports);
      await waitFor('fleet client reconnected', () => fleet.connected, 10_000);
      device = await connectEventually(mosquitto.deviceUrl, 'dev-Q', secret, true);
      // The resubscription races the device's first publish, so publish until one arrives (bounded).
      for (let i = 0; i < 50 && inbox.length === 0; i++) {
        await device.mqtt.publishAsync(topicFor('dev-Q', 'state'), `after restart ${i}`, { qos: 1, retain: false });
        await waitFor('message after restart', () => inbox.length > 0, 100).catch(() => undefined);
      }
      expect(inbox[0]).toMatch(/^after restart/);
    } finally {
      await device?.mqtt.endAsync(true);
      await fleet.close();
      await mosquitto.stop();
    }
  });
});
