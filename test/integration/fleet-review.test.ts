/**
 * Review findings (notes/review-fleet.md) proven on a real fleet: SQLite file, embedded broker, HTTP on 127.0.0.1.
 * Each test states the behaviour docs/updates.md promises and fails while the bug is there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpdater, pushModel } from '../helpers/fake-updater.js';
import { enrollDevice, eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';

const fleets: RunningFleet[] = [];
const updaters: FakeUpdater[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const u of updaters.splice(0)) await u.close();
  for (const f of fleets.splice(0)) await f.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function fleetOn(dataDir?: string): Promise<RunningFleet> {
  const f = await startFleet({ config: { rollouts: { tickMs: 50 } }, ...(dataDir ? { dataDir } : {}) });
  fleets.push(f);
  return f;
}

async function device(f: RunningFleet, running: Record<string, number>): Promise<FakeUpdater> {
  const u = new FakeUpdater(f.mqttUrl, await enrollDevice(f), 'manual', running);
  updaters.push(u);
  await u.connect();
  await eventually(() => f.fleet.store.devices.get(u.id)?.online, 'device online');
  return u;
}

describe('fleet review', () => {
  it('a transition stored while the fleet is stopping still moves its rollout (else the rollout stays running forever)', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'outpost-review-'));
    dirs.push(dataDir);
    const f = await fleetOn(dataDir);
    await pushModel(f, 'simple', 1);
    await pushModel(f, 'simple', 2);
    const u = await device(f, { simple: 1 });
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, deviceIds: [u.id] });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    await eventually(() => u.entry('simple')?.version === 2, 'desired v2');
    const e = u.entry('simple')!;
    for (const to of ['downloading', 'verifying', 'staging', 'activating', 'probation'] as const) await u.transition(e, to);
    await eventually(async () => (await f.api('GET', `/api/v1/rollouts/${id}`)).body.devices[0].state === 'probation', 'device in probation');

    // fleet.stop() stops the engine first, while devices stay connected (HTTP close, deployer drain come before
    // broker.closeDevices). A transition arriving in that window is stored and PUBACKed, so the agent's outbox
    // never sends it again.
    f.fleet.rollouts.stop();
    await u.transition(e, 'committed'); // resolves on PUBACK: the fleet stored it
    await u.close();
    updaters.splice(updaters.indexOf(u), 1);
    await f.stop();
    fleets.splice(fleets.indexOf(f), 1);

    const g = await fleetOn(dataDir);
    const r = await eventually(async () => {
      const x = (await g.api('GET', `/api/v1/rollouts/${id}`)).body;
      return x.state === 'completed' && x;
    }, 'rollout completed after the restart', 2_000).catch(async () => (await g.api('GET', `/api/v1/rollouts/${id}`)).body);
    expect({ state: r.state, device: r.devices[0].state }).toEqual({ state: 'completed', device: 'committed' });
  });

  it('the device rollback route does not treat a removal tombstone as the current version', async () => {
    const f = await fleetOn();
    await pushModel(f, 'simple', 1);
    await pushModel(f, 'simple', 2);
    const u = await device(f, {}); // never had the model
    u.behavior = 'commit';
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, deviceIds: [u.id] });
    const id = created.body.id as string;
    await eventually(async () => (await f.api('GET', `/api/v1/rollouts/${id}`)).body.state === 'completed', 'completed');
    expect((await f.api('POST', `/api/v1/rollouts/${id}/rollback`)).status).toBe(200);
    await eventually(() => u.entry('simple')?.remove === true, 'tombstone received');
    expect(f.fleet.deployer.entry(u.id, 'simple')).toMatchObject({ removed: true, version: 2 });

    // The box has no model now: there is nothing to roll back to. The route takes the tombstone's version (2) as
    // "current" and the registry's next lower one (1) as "previous", deploying a version the box never ran.
    const rb = await f.api('POST', `/api/v1/devices/${u.id}/rollback`, { model: 'simple' });
    expect(rb.status).toBe(400);
  });
});
