import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import pino from 'pino';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../fleet-server/src/broker/embedded.js';
import { FLEET_USERNAME } from '../../fleet-server/src/broker/types.js';
import { decodeMessage } from '../../shared/src/mqtt/messages.js';
import { parseTopic, type TopicKind } from '../../shared/src/mqtt/topics.js';

/**
 * Shared by the agent-link integration tests: the fleet's real embedded broker (aedes) on 127.0.0.1:0 that
 * knows one device, and a "fleet" MQTT client that records every device message, validated with the shared
 * schemas as the fleet ingest does.
 */
export const log = pino({ level: process.env.OUTPOST_TEST_LOG ?? 'silent' });

export const DEVICE = { deviceId: 'box-7', secret: 'test-secret-of-box-7-0123456789' };

export async function startBroker(options: { maxPacketBytes?: number; tls?: { certFile: string; keyFile: string } } = {}): Promise<EmbeddedBroker> {
  return startEmbeddedBroker({
    host: '127.0.0.1',
    port: 0,
    ...(options.tls ? { tls: { port: 0, ...options.tls } } : {}),
    maxPacketBytes: options.maxPacketBytes ?? 1024 * 1024,
    authority: { verify: (id, secret) => id === DEVICE.deviceId && secret === DEVICE.secret },
    log,
  });
}

export interface Received {
  topic: string;
  kind: TopicKind;
  retain: boolean;
  /** The decoded message, or undefined when it failed the shared schema (a test bug or an agent bug). */
  message: Record<string, unknown> | undefined;
  invalid?: string;
}

/** The fleet side: subscribes to every device topic and records what arrives, in arrival order. */
export class FleetObserver {
  readonly received: Received[] = [];
  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      const t = parseTopic(topic);
      if (!t) return;
      const d = decodeMessage(t.kind, payload, t.deviceId);
      this.received.push({ topic, kind: t.kind, retain: packet.retain, message: d.ok ? (d.message as Record<string, unknown>) : undefined, ...(d.ok ? {} : { invalid: `${d.reason}: ${d.detail}` }) });
    });
  }

  static async connect(broker: EmbeddedBroker): Promise<FleetObserver> {
    const client = await mqtt.connectAsync(broker.internalUrl, {
      protocolVersion: 4,
      clientId: FLEET_USERNAME,
      username: broker.internalCredentials.username,
      password: broker.internalCredentials.password,
      reconnectPeriod: 0,
    });
    await client.subscribeAsync('outpost/v1/#', { qos: 1 });
    return new FleetObserver(client);
  }

  of(kind: TopicKind): Received[] {
    return this.received.filter((r) => r.kind === kind);
  }

  /** seq of each valid agent message of that kind, in arrival order (duplicates kept). */
  seqs(kind: TopicKind): number[] {
    return this.of(kind).map((r) => r.message?.seq as number);
  }

  async publish(deviceId: string, kind: 'desired' | 'cmd', payload: string | Buffer, retain = false): Promise<void> {
    await this.client.publishAsync(`outpost/v1/${deviceId}/${kind}`, payload, { qos: 1, retain });
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}

/**
 * Polls `check` until it returns true, at most `timeoutMs`; throws with `what` and the last value otherwise.
 * Used where no event exists to await (e.g. "the subscriber has all rows").
 */
export async function until(what: string, check: () => boolean, timeoutMs = 10_000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A self-signed certificate for 127.0.0.1 (openssl), or undefined when openssl is not installed. */
export function selfSignedCert(dir: string): { certFile: string; keyFile: string } | undefined {
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0 ? { certFile, keyFile } : undefined;
}

export function tempDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
