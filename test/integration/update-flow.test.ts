import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';
import { buildSimpleHeavy } from '../../models/simple-variants.js';
import { activeVersion, inferSimple, pushVersion, simpleBytes, startEnrolledAgent, updateReaches, type EnrolledAgent } from '../helpers/updates.js';

/** One agent, one fleet, the real rollout path: signed desired → download → verify → stage → activate → probation → commit. */
describe('update flow through a rollout', () => {
  let f: RunningFleet;
  let a: EnrolledAgent;
  beforeAll(async () => {
    f = await startFleet();
    await pushVersion(f, 'simple', 1, simpleBytes(1));
    await pushVersion(f, 'simple', 2, simpleBytes(2));
    a = await startEnrolledAgent(f);
  });
  afterAll(async () => {
    await a?.stop();
    await a?.cleanup();
    await f?.stop();
  });

  it('deploys v1 to an empty box, then v2, each committed after probation', async () => {
    const r1 = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 1, deviceIds: [a.device.deviceId], probationSeconds: 1 });
    expect(r1.status).toBe(201);
    await activeVersion(a, 'simple', 1);
    expect((await inferSimple(a.url)).first).toBe(1);
    await updateReaches(a, 'simple', ['committed']);
    await eventually(async () => (await f.api('GET', `/api/v1/rollouts/${r1.body.id}`)).body.state === 'completed', 'rollout 1 completed');

    const r2 = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, deviceIds: [a.device.deviceId], probationSeconds: 1 });
    expect(r2.status).toBe(201);
    await activeVersion(a, 'simple', 2);
    expect((await inferSimple(a.url)).first).toBe(1001);
    const row = await updateReaches(a, 'simple', ['committed']);
    expect(row.previousVersion).toBe(1);
    const view = await eventually(async () => {
      const r = await f.api('GET', `/api/v1/rollouts/${r2.body.id}`);
      return r.body.state === 'completed' ? r.body : undefined;
    }, 'rollout 2 completed');
    expect(view.devices[0].state).toBe('committed');
    expect(a.agent.status().update).toMatchObject({ models: { simple: { active: 2, previous: 1 } } });
  });
});

/** A halted rollout of a first install: a box that had no previous version gets a signed removal and ends clean. */
describe('a halted first install', () => {
  let f: RunningFleet;
  const agents: EnrolledAgent[] = [];
  beforeAll(async () => {
    f = await startFleet();
    // 1.4 MB: more than the 1 MiB disk budget the second box is given.
    await pushVersion(f, 'simple', 1, buildSimpleHeavy({ width: 640, layers: 1 }), { golden: 'none' });
  });
  afterAll(async () => {
    for (const a of agents) {
      await a.stop();
      await a.cleanup();
    }
    await f?.stop();
  });

  it('is removed from the boxes that installed it, and the rollout ends rolled_back', async () => {
    agents.push(await startEnrolledAgent(f, { config: { update: { probationSeconds: 600 } } }));
    agents.push(await startEnrolledAgent(f, { config: { update: { diskBudgetBytes: 1024 * 1024 } } }));
    const [ok, small] = agents as [EnrolledAgent, EnrolledAgent];
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${small.device.deviceId}`)).body.online === true, 'both online');
    const r = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 1, deviceIds: [ok.device.deviceId, small.device.deviceId], maxFailurePct: 0, probationSeconds: 600 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const end = await eventually(async () => {
      const v = (await f.api('GET', `/api/v1/rollouts/${r.body.id}`)).body;
      return v.state === 'rolled_back' ? v : undefined;
    }, 'the rollout rolled back', 20_000);
    expect(end.devices.find((d: { deviceId: string }) => d.deviceId === small.device.deviceId)).toMatchObject({ reason: 'disk_budget' });
    // The box that had installed it has nothing of it left, as before the rollout.
    await eventually(() => ok.agent.models.active('simple') === undefined, 'simple removed from the first box');
    expect((await inferSimple(ok.url)).status).toBe(404);
    expect(ok.agent.updater.store.pointer('simple')).toMatchObject({ active: null, previous: null });
  });

  it('an operator rollback of a completed first install removes the model, and the rollout ends rolled_back', async () => {
    const fresh = await startEnrolledAgent(f);
    agents.push(fresh);
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${fresh.device.deviceId}`)).body.online === true, 'online');
    const r = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 1, deviceIds: [fresh.device.deviceId], probationSeconds: 1 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    await eventually(async () => (await f.api('GET', `/api/v1/rollouts/${r.body.id}`)).body.state === 'completed', 'completed');
    expect((await inferSimple(fresh.url)).status).toBe(200);
    expect((await f.api('POST', `/api/v1/rollouts/${r.body.id}/rollback`)).status).toBe(200);
    await eventually(async () => (await f.api('GET', `/api/v1/rollouts/${r.body.id}`)).body.state === 'rolled_back', 'rolled back');
    await eventually(() => fresh.agent.models.active('simple') === undefined, 'simple removed');
    expect((await inferSimple(fresh.url)).status).toBe(404);
  });
});
