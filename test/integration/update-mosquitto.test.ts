import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writePasswordFile } from '../../fleet-server/src/broker/password-file.js';
import { FLEET_USERNAME } from '../../fleet-server/src/broker/types.js';
import { hashSecret, newSecret } from '../../fleet-server/src/devices/secret-hash.js';
import { eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';
import { freePort, MOSQUITTO, ProcessGroup, startMosquitto } from '../helpers/processes.js';
import { activeVersion, inferSimple, pushVersion, simpleBytes, startEnrolledAgent, type EnrolledAgent } from '../helpers/updates.js';

/**
 * Safe updates through an external Mosquitto (the scale-out broker, DESIGN §4 broker.url), started from the shipped
 * fleet-server/mosquitto/outpost.conf: the fleet publishes the retained desired state through its client, the agent
 * receives it from Mosquitto, and its update.transition events reach the rollout engine through Mosquitto. The
 * retained desired state lives in Mosquitto, so a fleet restart in the middle of a rollout loses nothing.
 */
const hasMosquitto = existsSync(MOSQUITTO);
if (!hasMosquitto) console.warn(`update-mosquitto: skipped, ${MOSQUITTO} is not installed (Debian: apt-get install mosquitto)`);

describe.skipIf(!hasMosquitto)('rollouts through an external Mosquitto', () => {
  const procs = new ProcessGroup();
  let dir: string;
  let f: RunningFleet | undefined;
  let a: EnrolledAgent | undefined;
  let config: Record<string, unknown>;
  let dataDir: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-update-mosq-'));
    const fleetPassword = newSecret();
    await writePasswordFile(path.join(dir, 'fleet.passwd'), [{ username: FLEET_USERNAME, secretHash: hashSecret(fleetPassword) }]);
    const mosquitto = await startMosquitto(procs, dir, { device: await freePort(), fleet: await freePort() });
    dataDir = path.join(dir, 'fleet');
    mkdirSync(dataDir);
    config = {
      broker: {
        url: mosquitto.fleetUrl, username: FLEET_USERNAME, password: fleetPassword,
        passwordFile: mosquitto.passwordFile, pidFile: mosquitto.pidFile, publicUrl: `mqtt://127.0.0.1:${mosquitto.devicePort}`,
      },
    };
    f = await startFleet({ dataDir, config });
    await pushVersion(f, 'simple', 1, simpleBytes(1));
    await pushVersion(f, 'simple', 2, simpleBytes(2));
    a = await startEnrolledAgent(f);
    // Mosquitto applies the password file the enrollment rewrote on its SIGHUP; the link retries until then.
    await eventually(() => a!.agent.link?.connected === true, 'the agent connected through Mosquitto', 10_000);
    await eventually(async () => (await f!.api('GET', `/api/v1/devices/${a!.device.deviceId}`)).body.online === true, 'the fleet sees it online');
  });
  afterAll(async () => {
    await a?.stop();
    await a?.cleanup();
    await f?.stop();
    await procs.killAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('deploys v1, then v2 across a fleet restart in the middle of the rollout', async () => {
    const first = await f!.api('POST', '/api/v1/rollouts', { model: 'simple', version: 1, deviceIds: [a!.device.deviceId], probationSeconds: 1 });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    await eventually(async () => (await f!.api('GET', `/api/v1/rollouts/${first.body.id}`)).body.state === 'completed', 'v1 rollout completed', 15_000);
    expect((await inferSimple(a!.url)).first).toBe(1);

    const second = await f!.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, deviceIds: [a!.device.deviceId], probationSeconds: 2 });
    expect(second.status).toBe(201);
    await activeVersion(a!, 'simple', 2); // on probation now
    // The fleet goes away during probation; the commit event waits in the agent's outbox / Mosquitto's session.
    await f!.stop();
    f = await startFleet({ dataDir, config });
    await eventually(async () => (await f!.api('GET', `/api/v1/rollouts/${second.body.id}`)).body.state === 'completed', 'v2 rollout completed after the restart', 20_000);
    expect((await inferSimple(a!.url)).first).toBe(1001);
  });
});
