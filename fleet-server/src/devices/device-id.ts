import { randomBytes } from 'node:crypto';

/** A new device id: `dev-` + 12 lowercase hex characters (48 random bits); valid as MQTT client id and topic level. */
export function newDeviceId(): string {
  return `dev-${randomBytes(6).toString('hex')}`;
}
