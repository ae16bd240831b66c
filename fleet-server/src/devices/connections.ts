import type { Logger } from 'pino';
import type { DeviceStore } from '../storage/fleet-store.js';

/** The broker-side effects of enrolling and revoking: kick a live connection, refresh an external broker's logins. */
export interface DeviceConnections {
  /** Closes the device's live MQTT connection, if any (after re-enrollment or revocation). */
  kick(deviceId: string): Promise<void>;
  /** Tells an external broker the current set of device logins (no-op for the embedded broker). */
  sync(): Promise<void>;
}

/** The subset of the broker (fleet-server/src/broker) these effects need. */
export interface BrokerControl {
  disconnect(deviceId: string): Promise<void>;
  syncDevices?(entries: { deviceId: string; secretHash: string }[]): Promise<void>;
}

/**
 * DeviceConnections over a broker that exists only after start(): before it (or after stop) there is no
 * connection to kick and nothing to sync, and the external broker is synced once at start anyway.
 * Failures are logged, not thrown: the database change already happened and is what the broker checks.
 */
export function brokerConnections(current: () => BrokerControl | undefined, devices: DeviceStore, log: Logger): DeviceConnections {
  return {
    async kick(deviceId) {
      try {
        await current()?.disconnect(deviceId);
      } catch (err) {
        log.warn({ deviceId, err: (err as Error).message }, 'cannot close the device\'s MQTT connection');
      }
    },
    async sync() {
      const broker = current();
      if (!broker?.syncDevices) return;
      try {
        await broker.syncDevices(devices.credentials());
      } catch (err) {
        log.error({ err: (err as Error).message }, 'cannot update the external broker\'s device logins');
      }
    },
  };
}
