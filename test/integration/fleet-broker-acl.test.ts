/**
 * The embedded fleet broker's security model (DESIGN §4, research §5.5 M1–M4) against a real aedes on
 * 127.0.0.1 port 0, real mqtt.js devices and the fleet's own client, and raw sockets for bytes no client
 * library sends: who may connect, publish and subscribe; that a refused client-id takeover never kicks the
 * victim; that oversized and malformed packets close only their own connection.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../fleet-server/src/broker/embedded.js';
import { connectFleetClient } from '../../fleet-server/src/broker/fleet-client.js';
import type { FleetClient } from '../../fleet-server/src/broker/types.js';
import { topicFor } from '../../shared/src/mqtt/topics.js';
import {
  MapAuthority, RecordingMetrics, connackRefusal, connectClient, openRaw, rawConnect, rawPacket, rawPublishHeader, rawPublishQos1,
  silentLog, subscribeCodes, waitFor, type RawSocket, type Received, type TestClient,
} from './support/fleet-broker-fixtures.js';

const MAX_PACKET_BYTES = 64 * 1024;
const MB = 1024 * 1024;
// The largest remaining length MQTT can express (4 bytes of varint): 256 MB - 1.
const MAX_REMAINING_LENGTH = 268_435_455;

let authority: MapAuthority;
let metrics: RecordingMetrics;
let broker: EmbeddedBroker;
let fleet: FleetClient;
let fleetInbox: Received[];
const secrets = new Map<string, string>();
const clients: TestClient[] = [];
const raws: RawSocket[] = [];
const extraBrokers: EmbeddedBroker[] = [];

beforeEach(async () => {
  authority = new MapAuthority();
  metrics = new RecordingMetrics();
  for (const id of ['dev-A', 'dev-B']) secrets.set(id, authority.enroll(id));
  broker = await startEmbeddedBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: MAX_PACKET_BYTES, authority, metrics, log: silentLog });
  fleetInbox = [];
  fleet = await connectFleetClient({
    url: broker.internalUrl,
    ...broker.internalCredentials,
    log: silentLog,
    onMessage: (topic, payload) => void fleetInbox.push({ topic, payload: payload.toString() }),
  });
});

afterEach(async () => {
  for (const c of clients.splice(0)) await c.mqtt.endAsync(true);
  for (const r of raws.splice(0)) r.socket.destroy();
  await fleet.close();
  for (const b of [broker, ...extraBrokers.splice(0)]) await b.close();
});

async function device(id: string, opts: { clean?: boolean; url?: string; ca?: Buffer } = {}): Promise<TestClient> {
  const client = await connectClient(opts.url ?? broker.internalUrl, {
    clientId: id, username: id, password: secrets.get(id)!, clean: opts.clean ?? false, ...(opts.ca ? { ca: opts.ca } : {}),
  });
  clients.push(client);
  return client;
}

async function raw(): Promise<RawSocket> {
  const r = await openRaw(broker.port);
  raws.push(r);
  return r;
}

/** A round trip through the broker for dev-B: fleet → B's desired → B. Proves B and the broker still work. */
async function roundTripToB(b: TestClient, marker: string): Promise<void> {
  await fleet.publish(topicFor('dev-B', 'desired'), marker, { retain: false });
  await waitFor(`dev-B to receive ${marker}`, () => b.received.some((m) => m.payload === marker));
}

async function closedWithin(r: RawSocket, what: string, timeoutMs = 3000): Promise<void> {
  await waitFor(`${what}: broker closes the connection`, () => r.isClosed(), timeoutMs);
}

describe('legitimate traffic', () => {
  it('delivers a device message to the fleet and a retained desired to a device that subscribes later', async () => {
    const a = await device('dev-A');
    expect(broker.connectedCount()).toBe(1);
    expect(metrics.online).toBe(1);
    await a.mqtt.publishAsync(topicFor('dev-A', 'telemetry'), '{"seq":1}', { qos: 1 });
    await waitFor('fleet ingest of dev-A telemetry', () => fleetInbox.find((m) => m.topic === topicFor('dev-A', 'telemetry')));

    await fleet.publish(topicFor('dev-B', 'desired'), '{"models":[]}', { retain: true });
    const b = await device('dev-B');
    const granted = await b.mqtt.subscribeAsync(topicFor('dev-B', 'desired'), { qos: 1 });
    expect(granted[0]!.qos).toBe(1);
    await waitFor('retained desired at dev-B', () => b.received.find((m) => m.payload === '{"models":[]}'));
    expect(broker.connectedCount()).toBe(2);
    expect(metrics.denials).toEqual([]);
  });
});

describe('M1: a device publishes only under its own root', () => {
  it('drops and counts publishes elsewhere, closes that connection, and the fleet receives none of them', async () => {
    const forbidden = [
      topicFor('dev-B', 'telemetry'),
      topicFor('dev-B', 'state'),
      topicFor('dev-A', 'desired'), // fleet → agent kinds are the fleet's to publish
      topicFor('dev-A', 'cmd'),
      'outpost/v1/dev-A/extra',
      'elsewhere/topic',
    ];
    for (const topic of forbidden) {
      const a = await device('dev-A', { clean: true });
      a.mqtt.publish(topic, 'forged', { qos: 1 });
      await waitFor(`connection closed after publishing to ${topic}`, () => a.closes > 0);
    }
    // Barrier instead of a sleep: a later legitimate message from dev-A arrives, so anything forged before it
    // would have arrived first.
    const a = await device('dev-A', { clean: true });
    await a.mqtt.publishAsync(topicFor('dev-A', 'telemetry'), 'legit', { qos: 1 });
    await waitFor('legit dev-A telemetry at the fleet', () => fleetInbox.find((m) => m.payload === 'legit'));
    expect(fleetInbox.filter((m) => m.payload === 'forged')).toEqual([]);
    expect(metrics.count('publish')).toBe(forbidden.length);
  });
});

describe('M2: a device subscribes only to its own desired and cmd', () => {
  it('answers SUBACK 0x80 for wildcards and other devices and delivers none of their messages', async () => {
    const a = await device('dev-A');
    const filters = ['#', 'outpost/v1/+/desired', topicFor('dev-B', 'desired'), topicFor('dev-B', 'cmd'), 'outpost/v1/dev-A/#', topicFor('dev-A', 'desired')];
    expect(await subscribeCodes(a.mqtt, filters)).toEqual([128, 128, 128, 128, 128, 1]);
    expect(metrics.count('subscribe')).toBe(5);

    const b = await device('dev-B');
    await fleet.publish(topicFor('dev-B', 'desired'), 'for B', { retain: true });
    await fleet.publish(topicFor('dev-B', 'cmd'), 'cmd for B', { retain: false });
    await b.mqtt.publishAsync(topicFor('dev-B', 'telemetry'), 'B telemetry', { qos: 1 });
    await waitFor('B telemetry at the fleet', () => fleetInbox.find((m) => m.payload === 'B telemetry'));
    await fleet.publish(topicFor('dev-A', 'desired'), 'for A', { retain: false });
    await waitFor('A receives its own desired', () => a.received.find((m) => m.payload === 'for A'));
    expect(a.received).toEqual([{ topic: topicFor('dev-A', 'desired'), payload: 'for A' }]);
    expect(a.closes).toBe(0);
  });
});

describe('authentication', () => {
  it('refuses unknown devices, wrong secrets, non-device usernames, a guessed fleet password and a foreign will', async () => {
    const url = broker.internalUrl;
    const secretA = secrets.get('dev-A')!;
    expect(await connackRefusal(url, { clientId: 'dev-X', username: 'dev-X', password: 'anything' })).toBe(4);
    expect(await connackRefusal(url, { clientId: 'dev-A', username: 'dev-A', password: 'wrong' })).toBe(4);
    expect(await connackRefusal(url, { clientId: 'dev-A' })).toBe(4);
    expect(await connackRefusal(url, { clientId: 'a/#', username: 'a/#', password: secretA })).toBe(4);
    expect(await connackRefusal(url, { clientId: 'outpost-fleet', username: 'outpost-fleet', password: 'guess' })).toBe(4);
    const foreignWill = { topic: topicFor('dev-B', 'state'), payload: Buffer.from('{"online":false}'), qos: 1 as const, retain: true };
    expect(await connackRefusal(url, { clientId: 'dev-A', username: 'dev-A', password: secretA, will: foreignWill })).toBe(5);
    expect(metrics.count('connect')).toBe(6);
    expect(broker.connectedCount()).toBe(0);
  });

  it("fails the fleet's own client fast on a wrong password instead of retrying forever", async () => {
    // Retrying would end in the 30 s first-connect timeout error, which carries no CONNACK code.
    const attempt = connectFleetClient({ url: broker.internalUrl, username: 'outpost-fleet', password: 'not the boot password', log: silentLog, onMessage: () => undefined });
    await expect(attempt).rejects.toMatchObject({ code: 4 });
  });

  it('refuses a revoked device, and disconnect(id) kicks its live connection and publishes its will', async () => {
    const stateA = topicFor('dev-A', 'state');
    const a = await connectClient(broker.internalUrl, {
      clientId: 'dev-A', username: 'dev-A', password: secrets.get('dev-A')!, clean: false,
      will: { topic: stateA, payload: Buffer.from('{"online":false}'), qos: 1, retain: true },
    });
    clients.push(a);
    authority.revoke('dev-A');
    expect(await connackRefusal(broker.internalUrl, { clientId: 'dev-A', username: 'dev-A', password: secrets.get('dev-A')! })).toBe(4);
    expect(a.closes).toBe(0); // a refused attempt under A's own id does not kick A either

    await broker.disconnect('dev-A');
    await waitFor('dev-A connection closed', () => a.closes > 0);
    await waitFor('dev-A will at the fleet', () => fleetInbox.find((m) => m.topic === stateA && m.payload === '{"online":false}'));
    expect(broker.connectedCount()).toBe(0);
    expect(metrics.online).toBe(0);
  });
});

describe('M3: client-id takeover', () => {
  it("refuses A's credentials under B's client id and never kicks B", async () => {
    const b = await device('dev-B');
    await b.mqtt.subscribeAsync(topicFor('dev-B', 'desired'), { qos: 1 });
    const secretA = secrets.get('dev-A')!;
    expect(await connackRefusal(broker.internalUrl, { clientId: 'dev-B', username: 'dev-A', password: secretA, clean: true })).toBe(5);
    expect(await connackRefusal(broker.internalUrl, { clientId: 'dev-B', username: 'dev-A', password: secretA, clean: false })).toBe(5);
    expect(await connackRefusal(broker.internalUrl, { clientId: 'dev-B', username: 'dev-B', password: 'guessed', clean: true })).toBe(4);

    await roundTripToB(b, 'still yours');
    expect(b.closes).toBe(0);
    expect(b.mqtt.connected).toBe(true);
    expect(broker.connectedCount()).toBe(1);
  });
});

describe('M4: oversized and malformed packets close only their own connection', () => {
  it('closes a connection whose packet header declares 256 MB, before or after CONNECT, and keeps memory bounded', async () => {
    const b = await device('dev-B');
    await b.mqtt.subscribeAsync(topicFor('dev-B', 'desired'), { qos: 1 });
    const rssBefore = process.memoryUsage().rss;

    const before = await raw();
    before.socket.write(rawPublishHeader(MAX_REMAINING_LENGTH));
    before.socket.write(Buffer.alloc(MB)); // the start of the body it promised
    await closedWithin(before, '256 MB PUBLISH before CONNECT');

    const after = await raw();
    after.socket.write(rawConnect('dev-A', 'dev-A', secrets.get('dev-A')!));
    await after.connack();
    after.socket.write(rawPublishHeader(MAX_REMAINING_LENGTH));
    after.socket.write(Buffer.alloc(MB));
    await closedWithin(after, '256 MB PUBLISH after CONNECT');

    expect(metrics.protocolErrors).toEqual(['oversized', 'oversized']);
    await roundTripToB(b, 'after oversized');
    expect(b.closes).toBe(0);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 * MB);
  });

  it('accepts a packet of exactly maxPacketBytes and closes the connection at one byte more', async () => {
    const a = await device('dev-A', { clean: true });
    const topic = topicFor('dev-A', 'telemetry');
    // PUBLISH QoS 1 = 1 header byte + 3 remaining-length bytes (16 KiB..2 MiB) + 2 + topic + 2 (message id) + payload.
    const payloadBytes = MAX_PACKET_BYTES - (1 + 3 + 2 + topic.length + 2);
    await a.mqtt.publishAsync(topic, Buffer.alloc(payloadBytes, 0x61), { qos: 1 });
    await waitFor('max-size message at the fleet', () => fleetInbox.find((m) => m.payload.length === payloadBytes));

    a.mqtt.publish(topic, Buffer.alloc(payloadBytes + 1, 0x62), { qos: 1 });
    await waitFor('connection closed at one byte over', () => a.closes > 0);
    expect(fleetInbox.some((m) => m.payload.length === payloadBytes + 1)).toBe(false);
  });

  it('closes connections sending QoS 3, garbage, ill-formed UTF-8 topics, a second CONNECT or a 5-byte length', async () => {
    const b = await device('dev-B');
    await b.mqtt.subscribeAsync(topicFor('dev-B', 'desired'), { qos: 1 });
    const connect = rawConnect('dev-A', 'dev-A', secrets.get('dev-A')!);
    const illFormedTopic = Buffer.concat([Buffer.from('outpost/v1/dev-A/'), Buffer.from([0xff, 0xfe, 0x80])]);
    const cases: { name: string; afterConnect: boolean; bytes: Buffer }[] = [
      { name: 'PUBLISH with QoS 3', afterConnect: true, bytes: rawPacket(0x36, Buffer.from([0, 1, 0x61, 0, 1, 0x7b, 0x7d])) },
      { name: 'HTTP request instead of MQTT', afterConnect: false, bytes: Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n') },
      { name: '0xff garbage', afterConnect: false, bytes: Buffer.alloc(32, 0xff) },
      { name: 'garbage after CONNECT', afterConnect: true, bytes: Buffer.from([0x00, 0x00, 0x00, 0x00]) },
      { name: 'ill-formed UTF-8 topic', afterConnect: true, bytes: rawPublishQos1(illFormedTopic, Buffer.from('{}')) },
      { name: 'second CONNECT', afterConnect: true, bytes: connect },
      { name: 'remaining length with a 5th byte', afterConnect: false, bytes: Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01]) },
    ];
    for (const c of cases) {
      const r = await raw();
      if (c.afterConnect) {
        r.socket.write(connect);
        await r.connack();
      }
      r.socket.write(c.bytes);
      await closedWithin(r, c.name);
    }
    expect(metrics.denials).toContainEqual({ action: 'publish', reason: 'ill-formed UTF-8 topic' });
    expect(fleetInbox).toEqual([]);
    await roundTripToB(b, 'after malformed');
    expect(b.closes).toBe(0);
    const a = await device('dev-A', { clean: true });
    await a.mqtt.publishAsync(topicFor('dev-A', 'events'), 'still works', { qos: 1 });
    await waitFor('new connection still served', () => fleetInbox.find((m) => m.payload === 'still works'));
  });
});

const hasOpenssl = fs.existsSync('/usr/bin/openssl');

describe.skipIf(!hasOpenssl)('TLS listener (needs /usr/bin/openssl to make a test certificate)', () => {
  it('serves devices over TLS with the same credentials and ACL', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-broker-tls-'));
    try {
      const certFile = path.join(dir, 'cert.pem');
      const keyFile = path.join(dir, 'key.pem');
      execFileSync('/usr/bin/openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' });
      const secure = await startEmbeddedBroker({
        host: '127.0.0.1', port: 0, tls: { port: 0, certFile, keyFile }, maxPacketBytes: MAX_PACKET_BYTES, authority, metrics, log: silentLog,
      });
      extraBrokers.push(secure);
      expect(secure.tlsPort).toBeGreaterThan(0);
      const ca = fs.readFileSync(certFile);
      const a = await device('dev-A', { url: `mqtts://127.0.0.1:${secure.tlsPort}`, ca });
      expect(await subscribeCodes(a.mqtt, ['#', topicFor('dev-A', 'desired')])).toEqual([128, 1]);
      expect(await connackRefusal(`mqtts://127.0.0.1:${secure.tlsPort}`, { clientId: 'dev-B', username: 'dev-A', password: secrets.get('dev-A')!, ca })).toBe(5);
      expect(secure.connectedCount()).toBe(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
