import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';
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
