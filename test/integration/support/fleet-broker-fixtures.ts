/**
 * Fixtures for the fleet broker tests (embedded aedes and external Mosquitto): a tiny real DeviceAuthority over
 * a Map of hashSecret() values, recording metrics, mqtt.js device clients that keep what they receive, raw
 * MQTT bytes for the malformed-packet cases, and a bounded wait helper.
 */
import net from 'node:net';
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';
import pino from 'pino';
import { hashSecret, newSecret, verifySecret } from '../../../fleet-server/src/devices/secret-hash.js';
import type { BrokerMetrics, DeviceAuthority } from '../../../fleet-server/src/broker/types.js';

export const silentLog = pino({ level: 'silent' });

/** The devices module in miniature: enroll stores only the $7$ hash, revoke forgets it. */
export class MapAuthority implements DeviceAuthority {
  readonly hashes = new Map<string, string>();

  enroll(deviceId: string): string {
    const secret = newSecret();
    this.hashes.set(deviceId, hashSecret(secret));
    return secret;
  }

  revoke(deviceId: string): void {
    this.hashes.delete(deviceId);
  }

  verify(deviceId: string, secret: string): boolean {
    const stored = this.hashes.get(deviceId);
    return stored !== undefined && verifySecret(secret, stored);
  }

  entries(): { deviceId: string; secretHash: string }[] {
    return [...this.hashes].map(([deviceId, secretHash]) => ({ deviceId, secretHash }));
  }
}

export class RecordingMetrics implements BrokerMetrics {
  readonly denials: { action: string; reason: string }[] = [];
  readonly protocolErrors: string[] = [];
  online = 0;

  denied(action: 'connect' | 'publish' | 'subscribe', reason: string): void {
    this.denials.push({ action, reason });
  }

  connected(delta: 1 | -1): void {
    this.online += delta;
  }

  protocolError(reason: string): void {
    this.protocolErrors.push(reason);
  }

  count(action: string): number {
    return this.denials.filter((d) => d.action === action).length;
  }
}

/** Polls `check` until it returns a truthy value; fails with `what` after timeoutMs. Bounded in time. */
export async function waitFor<T>(what: string, check: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export interface Received {
  topic: string;
  payload: string;
}

export interface TestClient {
  mqtt: MqttClient;
  received: Received[];
  closes: number;
}

/** A device-like mqtt.js client (MQTT 3.1.1, QoS 1) that records messages and closes; no reconnects. */
export async function connectClient(url: string, opts: IClientOptions): Promise<TestClient> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  const tc: TestClient = { mqtt: client, received: [], closes: 0 };
  client.on('message', (topic, payload) => tc.received.push({ topic, payload: payload.toString() }));
  client.on('close', () => (tc.closes += 1));
  return tc;
}

/** SUBACK return codes per filter (1 granted QoS 1, 128 failure); mqtt.js rejects on any failure, so unpack it. */
export async function subscribeCodes(client: MqttClient, filters: string[]): Promise<number[]> {
  try {
    return (await client.subscribeAsync(filters, { qos: 1 })).map((g) => g.qos);
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted;
    if (granted) return granted;
    throw err;
  }
}

/** The CONNACK return code a refused connection got (4 bad username or password, 5 not authorized). */
export async function connackRefusal(url: string, opts: IClientOptions): Promise<number | 'connected'> {
  try {
    const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
    await client.endAsync(true);
    return 'connected';
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

/** Free TCP port on 127.0.0.1 (for processes that cannot take port 0). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ---- raw MQTT 3.1.1 bytes, for packets no well-behaved client sends ----

function varint(n: number): Buffer {
  const bytes: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    bytes.push(byte);
  } while (n > 0);
  return Buffer.from(bytes);
}

function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

/** A whole packet: fixed-header byte, remaining length, body. */
export function rawPacket(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), varint(body.length), body]);
}

export function rawConnect(clientId: string, username: string, password: string): Buffer {
  const flags = 0x80 | 0x40 | 0x02; // username, password, clean session
  const header = Buffer.concat([str('MQTT'), Buffer.from([4, flags, 0, 60])]);
  return rawPacket(0x10, Buffer.concat([header, str(clientId), str(username), str(password)]));
}

/** PUBLISH QoS 1 (message id 1); `topic` may be raw bytes to carry ill-formed UTF-8. */
export function rawPublishQos1(topic: string | Buffer, payload: Buffer): Buffer {
  return rawPacket(0x32, Buffer.concat([str(topic), Buffer.from([0, 1]), payload]));
}

/** Only the fixed header of a PUBLISH declaring `remainingLength` bytes; the body never needs to follow. */
export function rawPublishHeader(remainingLength: number): Buffer {
  return Buffer.concat([Buffer.from([0x30]), varint(remainingLength)]);
}

export interface RawSocket {
  socket: net.Socket;
  closed: Promise<void>;
  isClosed(): boolean;
  /** Resolves once the broker has sent a successful CONNACK (0x20 0x02 _ 0x00). */
  connack(): Promise<void>;
}

export async function openRaw(port: number): Promise<RawSocket> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let closed = false;
  let inbound = Buffer.alloc(0);
  socket.on('error', () => undefined); // ECONNRESET/EPIPE after the broker closes is the expected outcome
  socket.on('data', (d: Buffer) => (inbound = Buffer.concat([inbound, d])));
  const closedPromise = new Promise<void>((resolve) => socket.once('close', () => ((closed = true), resolve())));
  return {
    socket,
    closed: closedPromise,
    isClosed: () => closed,
    connack: () => waitFor('CONNACK accepted', () => inbound.length >= 4 && inbound[0] === 0x20 && inbound[3] === 0).then(() => undefined),
  };
}
