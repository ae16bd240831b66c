/**
 * The broker layer's contracts (DESIGN §4, §5). The fleet server talks MQTT 3.1.1 either through its embedded
 * aedes broker or through an external Mosquitto. Where device messages are ingested differs, because the
 * PUBACK must mean "stored" (the agent deletes an outbox row on PUBACK):
 * - embedded: inside aedes' authorizePublish hook, before aedes writes the PUBACK (DeviceMessageSink);
 * - external: Mosquitto acks the device after queueing the message in the fleet's persistent session; the
 *   fleet's mqtt.js client (fleet-client.ts) acks Mosquitto only after the ingest returned.
 * Publishing (desired, cmd) always goes through the fleet's own client.
 */

/** Username (and, on the embedded broker, client id) of the fleet server's own MQTT client. */
export const FLEET_USERNAME = 'outpost-fleet';

/** Implemented by the devices module over SQLite; the broker only asks it yes/no questions. */
export interface DeviceAuthority {
  /** True when deviceId is enrolled, not revoked, and secret matches its stored hash (verifySecret). */
  verify(deviceId: string, secret: string): boolean;
}

/**
 * Embedded broker: stores one message a device published and calls `done` once it is committed, before aedes
 * acknowledges it (fleet.ts batches messages into one commit: telemetry/batched-ingest.ts). `done(false)` when
 * it could not be stored (database failure): the broker then closes that connection without a PUBACK, so the
 * device keeps the message and resends it. Garbage gives `done(true)` (dropped, counted and acknowledged: it
 * will never become valid).
 */
export type DeviceMessageSink = (topic: string, payload: Buffer, done: (stored: boolean) => void) => void;

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
  /**
   * Embedded broker: stop accepting connections and close every device's one (their last wills are ingested),
   * leaving the fleet's own client connected. The first step of shutdown. Absent for an external broker.
   */
  closeDevices?(): Promise<void>;
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
