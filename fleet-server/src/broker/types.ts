/**
 * The broker layer's contracts (DESIGN §4, §5). The fleet server talks MQTT 3.1.1 either through its embedded
 * aedes broker or through an external Mosquitto; in both cases its own ingest uses the same mqtt.js client
 * (fleet-client.ts), so nothing above this folder knows which broker runs.
 */

/** Username (and, on the embedded broker, client id) of the fleet server's own MQTT client. */
export const FLEET_USERNAME = 'outpost-fleet';

/** Implemented by the devices module over SQLite; the broker only asks it yes/no questions. */
export interface DeviceAuthority {
  /** True when deviceId is enrolled, not revoked, and secret matches its stored hash (verifySecret). */
  verify(deviceId: string, secret: string): boolean;
}

export type DeniedAction = 'connect' | 'publish' | 'subscribe';

export interface BrokerMetrics {
  /** One refused CONNECT, dropped PUBLISH or failed SUBSCRIBE; `reason` is a short stable label. */
  denied(action: DeniedAction, reason: string): void;
  /** A device connection opened (+1) or closed (-1). The fleet's own client is not counted. */
  connected(delta: 1 | -1): void;
  /** A connection closed for breaking the protocol: oversized or malformed packet. Optional. */
  protocolError?(reason: string): void;
}

export interface FleetBroker {
  /** URL the fleet's own client connects to, e.g. mqtt://127.0.0.1:1883 */
  readonly internalUrl: string;
  /** Credentials of the fleet's own client (embedded: random per boot, in memory; external: from config). */
  readonly internalCredentials: { username: string; password: string };
  /** Kick a device's live connection (revocation / re-enrollment). External broker: best effort (rewrite password file + SIGHUP). */
  disconnect(deviceId: string): Promise<void>;
  /** External mode: rewrite the Mosquitto password file from the authority's current device hashes (absent when embedded). */
  syncDevices?(entries: { deviceId: string; secretHash: string }[]): Promise<void>;
  /** Devices connected now. External mode: NaN, Mosquitto keeps that count ($SYS/broker/clients/connected). */
  connectedCount(): number;
  close(): Promise<void>;
}

export interface FleetClient {
  /** Resolves on PUBACK (QoS 1). While disconnected it waits for the reconnect, as mqtt.js queues it. */
  publish(topic: string, payload: string | Buffer, opts: { retain: boolean }): Promise<void>;
  close(): Promise<void>;
  readonly connected: boolean;
}
