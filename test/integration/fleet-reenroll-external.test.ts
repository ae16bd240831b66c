import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { externalBroker } from '../../fleet-server/src/broker/external.js';
import { brokerConnections } from '../../fleet-server/src/devices/connections.js';
import { Enrollment } from '../../fleet-server/src/devices/enrollment.js';
import { verifySecret } from '../../fleet-server/src/devices/secret-hash.js';
import { createFleetMetrics } from '../../fleet-server/src/metrics/fleet-metrics.js';
import { systemClock } from '../../fleet-server/src/storage/clock.js';
import { openFleetStore, type FleetStore } from '../../fleet-server/src/storage/fleet-store.js';

// With an external Mosquitto the fleet manages device logins through its password_file. Re-enrolling a
// device must leave the device's NEW secret in that file: kicking the old connection removes the line, so
// the order of kick and sync decides whether the box can ever log in again.
let dir: string;
let store: FleetStore | undefined;
afterEach(() => {
  store?.close();
  store = undefined;
  rmSync(dir, { recursive: true, force: true });
});

function passwordFileEntry(file: string, deviceId: string): string | undefined {
  const line = readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith(`${deviceId}:`));
  return line?.slice(deviceId.length + 1);
}

describe('re-enrollment with an external broker', () => {
  it('leaves the new secret (and only it) in the password file', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-reenroll-'));
    store = openFleetStore(path.join(dir, 'fleet'));
    const log = pino({ level: 'silent' });
    const passwordFile = path.join(dir, 'passwd');
    const broker = externalBroker({ url: 'mqtt://127.0.0.1:1', username: 'outpost-fleet', password: 'x', passwordFile, log });
    const connections = brokerConnections(() => broker, store.devices, log);
    await connections.sync();
    const enrollment = new Enrollment({
      devices: store.devices, tokens: store.tokens, connections, clock: systemClock, metrics: createFleetMetrics(), log,
      config: { defaultTtlSeconds: 60, maxTtlSeconds: 600 },
    });

    const first = await enrollment.enroll(enrollment.createToken({}).token);
    expect(verifySecret(first.secret, passwordFileEntry(passwordFile, first.deviceId)!)).toBe(true);

    const again = await enrollment.enroll(enrollment.createToken({ deviceId: first.deviceId }).token);
    expect(again.reenrolled).toBe(true);
    const entry = passwordFileEntry(passwordFile, first.deviceId);
    expect(entry, 'the re-enrolled device lost its login').toBeDefined();
    expect(verifySecret(again.secret, entry!)).toBe(true);
    expect(verifySecret(first.secret, entry!)).toBe(false);

    await enrollment.revoke(first.deviceId);
    expect(passwordFileEntry(passwordFile, first.deviceId)).toBeUndefined();
  });
});
