import { readFileSync } from 'node:fs';
import type { IClientOptions } from 'mqtt';
import { PROTOCOL_VERSION } from '../../../shared/src/mqtt/messages.js';
import { topicFor } from '../../../shared/src/mqtt/topics.js';
import type { AgentConfig } from '../config/schema.js';
import type { Credentials } from './credentials.js';

/**
 * mqtt.js options for one connection attempt (DESIGN §3.5, §4): MQTT 3.1.1 (aedes speaks nothing newer),
 * client id = username = device id (the broker refuses any other pairing), password = the enrollment secret,
 * persistent session (clean: false) so QoS 1 `desired`/`cmd` queued while offline are delivered on return,
 * and a last will on the device's own retained state topic.
 */
export function mqttClientOptions(credentials: Pick<Credentials, 'deviceId' | 'secret' | 'mqttUrl'>, fleet: AgentConfig['fleet']): IClientOptions {
  const { deviceId } = credentials;
  const tls = credentials.mqttUrl.startsWith('mqtts:') || credentials.mqttUrl.startsWith('wss:');
  return {
    protocolVersion: 4,
    clientId: deviceId,
    username: deviceId,
    password: credentials.secret,
    clean: false,
    keepalive: fleet.keepaliveSeconds,
    connectTimeout: fleet.connectTimeoutMs,
    // The link runs its own reconnect loop (jitter, reset policy, abortable); mqtt.js' fixed period would sync a fleet.
    reconnectPeriod: 0,
    // Subscriptions are made on every connect by the link; mqtt.js must not replay its own copy.
    resubscribe: false,
    queueQoSZero: false,
    // Read per attempt, so a rotated CA file is picked up without a restart.
    ...(tls && fleet.caFile ? { ca: readFileSync(fleet.caFile) } : {}),
    will: {
      topic: topicFor(deviceId, 'state'),
      // Fixed at CONNECT time, so it carries no seq (StateMessageSchema's third form); the fleet never stores it as a message.
      payload: Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, deviceId, online: false, reason: 'connection-lost', ts: new Date().toISOString() })),
      qos: 1,
      retain: true,
    },
  };
}
