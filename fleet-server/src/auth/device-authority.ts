import { verifySecret } from '../devices/secret-hash.js';
import type { DeviceStore } from '../storage/fleet-store.js';

/** Decides whether a device id + secret may connect (MQTT) or call REST: enrolled, not revoked, secret matches. */
export interface DeviceAuthority {
  verify(deviceId: string, secret: string): boolean;
}

export function createDeviceAuthority(devices: DeviceStore): DeviceAuthority {
  return {
    verify(deviceId, secret) {
      if (typeof deviceId !== 'string' || typeof secret !== 'string' || secret.length === 0 || secret.length > 512) return false;
      const device = devices.get(deviceId);
      if (!device || device.revokedAt !== null) return false;
      return verifySecret(secret, device.secretHash);
    },
  };
}
