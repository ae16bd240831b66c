import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { sha256Hex } from '../auth/operator-tokens.js';
import type { FleetConfig } from '../config/schema.js';
import { fail } from '../errors.js';
import type { FleetMetrics } from '../metrics/fleet-metrics.js';
import { isoAt, type Clock } from '../storage/clock.js';
import type { DeviceStore, TokenStore } from '../storage/fleet-store.js';
import type { DeviceConnections } from './connections.js';
import { newDeviceId } from './device-id.js';
import { hashSecret, newSecret } from './secret-hash.js';

export interface CreatedEnrollmentToken {
  token: string;
  expiresAt: string;
  tags: Record<string, string>;
  deviceId: string | null;
}

export interface Enrolled {
  deviceId: string;
  /** Shown once; only its hash is stored. */
  secret: string;
  tags: Record<string, string>;
  reenrolled: boolean;
}

export interface EnrollmentDeps {
  devices: DeviceStore;
  tokens: TokenStore;
  connections: DeviceConnections;
  config: FleetConfig['enrollment'];
  clock: Clock;
  metrics: FleetMetrics;
  log: Logger;
}

/**
 * Enrollment (DESIGN §4 "Auth"): an operator creates a one-time, expiring token; a device trades it for an id
 * and a secret. A token that names a device id re-enrolls that device (new secret, revocation cleared, the
 * old connection closed) or, if no such device exists yet, gives the new device that id.
 */
export class Enrollment {
  constructor(private readonly deps: EnrollmentDeps) {}

  createToken(input: { tags?: Record<string, string>; ttlSeconds?: number; deviceId?: string }): CreatedEnrollmentToken {
    const { config, clock, tokens } = this.deps;
    const ttlSeconds = input.ttlSeconds ?? config.defaultTtlSeconds;
    if (ttlSeconds > config.maxTtlSeconds) throw fail('FLEET_BAD_REQUEST', `ttlSeconds ${ttlSeconds} is above enrollment.maxTtlSeconds (${config.maxTtlSeconds})`);
    const now = clock.now();
    const token = `oet_${randomBytes(32).toString('base64url')}`;
    const created: CreatedEnrollmentToken = { token, expiresAt: isoAt(now + ttlSeconds * 1000), tags: input.tags ?? {}, deviceId: input.deviceId ?? null };
    tokens.createEnrollmentToken({ tokenHash: sha256Hex(token), tags: created.tags, createdAt: isoAt(now), expiresAt: created.expiresAt, deviceId: created.deviceId });
    this.deps.log.info({ deviceId: created.deviceId, expiresAt: created.expiresAt, tags: created.tags }, 'enrollment token created');
    return created;
  }

  async enroll(token: string): Promise<Enrolled> {
    const { devices, connections, clock, metrics, log } = this.deps;
    const secret = newSecret();
    // Hashing (PBKDF2) happens before the transaction, which then only reads and writes rows.
    const outcome = devices.enroll({ tokenHash: sha256Hex(token), now: isoAt(clock.now()), secretHash: hashSecret(secret), newId: newDeviceId });
    if (!outcome.ok) {
      const why = { unknown: 'is not known', used: 'was already used', expired: 'has expired' }[outcome.reason];
      throw fail('FLEET_ENROLLMENT_TOKEN_INVALID', `the enrollment token ${why}; ask an operator for a new one`);
    }
    const { device, reenrolled } = outcome;
    metrics.enrollments.inc({ kind: reenrolled ? 'reenrolled' : 'new' });
    log.info({ deviceId: device.id, reenrolled, tags: device.tags }, 'device enrolled');
    // Kick, then sync: an external broker's disconnect() removes the device's login to force the old
    // connection off, so the sync that follows must be the last word and install the new secret's hash.
    if (reenrolled) await connections.kick(device.id);
    await connections.sync();
    return { deviceId: device.id, secret, tags: device.tags, reenrolled };
  }

  async revoke(deviceId: string): Promise<{ id: string; revokedAt: string }> {
    const { devices, connections, clock, log } = this.deps;
    const revoked = devices.revoke(deviceId, isoAt(clock.now()));
    if (!revoked) throw fail('FLEET_NOT_FOUND', `no device ${deviceId}`);
    log.info({ deviceId }, 'device revoked');
    await connections.sync();
    await connections.kick(deviceId);
    return revoked;
  }
}
