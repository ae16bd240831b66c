/**
 * The rollout engine on a real fleet (SQLite file, embedded aedes, HTTP on 127.0.0.1): raw mqtt.js devices play
 * the agent (they verify their signed desired state and report update.transition events), and the rollout is
 * driven and read through the REST API. A manual clock lets the scheduled start happen without waiting.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { manualClock } from '../../fleet-server/src/storage/clock.js';
import { FakeUpdater, pushModel, type Behavior } from '../helpers/fake-updater.js';
import { deviceAuth, enrollDevice, eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';

const clock = manualClock(Date.now());
let f: RunningFleet;
const updaters: FakeUpdater[] = [];

/** `n` enrolled devices tagged {group}, reporting simple@1 as active (connected unless `offline`). */
async function group(fleet: RunningFleet, name: string, n: number, opts: { behavior?: Behavior; offline?: number } = {}): Promise<FakeUpdater[]> {
  const out: FakeUpdater[] = [];
  for (let i = 0; i < n; i++) {
    const u = new FakeUpdater(fleet.mqttUrl, await enrollDevice(fleet, { tags: { group: name } }), opts.behavior ?? 'manual', { simple: 1 });
    updaters.push(u);
    out.push(u);
    if (i < n - (opts.offline ?? 0)) await u.connect();
  }
  // previousVersion comes from the reported state, so wait until the fleet has stored it.
  await eventually(() => out.slice(0, n - (opts.offline ?? 0)).every((u) => fleet.fleet.store.devices.get(u.id)?.online), `${name}: devices online`);
  return out;
}

async function rollout(fleet: RunningFleet, id: string): Promise<any> {
  const r = await fleet.api('GET', `/api/v1/rollouts/${id}`);
  expect(r.status).toBe(200);
  return r.body;
}

const stateOf = (r: any, deviceId: string): string => r.devices.find((d: any) => d.deviceId === deviceId).state;
const inStage = (r: any, stage: number): string[] => r.devices.filter((d: any) => d.stage === stage).map((d: any) => d.deviceId);
const byId = (us: FakeUpdater[], id: string): FakeUpdater => us.find((u) => u.id === id)!;

beforeAll(async () => {
  f = await startFleet({ clock, config: { rollouts: { tickMs: 50 } } });
  await pushModel(f, 'simple', 1);
  await pushModel(f, 'simple', 2);
});

afterEach(async () => {
  for (const u of updaters.splice(0)) await u.close();
});

afterAll(async () => {
  await f?.stop();
});

describe('rollouts', () => {
  it('a 3-stage rollout over 10 devices advances only when every device of the stage committed', async () => {
    const us = await group(f, 'staged', 10);
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, selector: { group: 'staged' }, stages: [10, 50, 100], probationSeconds: 30 });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect(created.body).toMatchObject({ state: 'running', currentStage: 0, thresholds: { probationSeconds: 30 } });
    expect(created.body.stages.map((s: any) => s.devices)).toEqual([1, 4, 5]);
    expect(created.body.devices.every((d: any) => d.previousVersion === 1)).toBe(true);

    let stage: string[] = [];
    for (const [index, size] of [[0, 1], [1, 4], [2, 5]] as const) {
      const r = await eventually(async () => {
        const x = await rollout(f, id);
        return x.currentStage === index && x;
      }, `stage ${index}`);
      stage = inStage(r, index);
      expect(stage).toHaveLength(size);
      expect(stage.every((d) => stateOf(r, d) === 'pending')).toBe(true);
      await eventually(() => stage.every((d) => byId(us, d).entry('simple')?.version === 2), `stage ${index}: desired version 2`);
      // Devices of later stages have received nothing yet.
      await f.fleet.deployer.idle();
      const later = r.devices.filter((d: any) => d.stage > index).map((d: any) => d.deviceId);
      expect(later.every((d: string) => byId(us, d).received.length === 0)).toBe(true);
      // All but one commit; the last one only reaches probation: the stage must wait for it.
      const [last, ...rest] = stage;
      await Promise.all(rest.map((d) => byId(us, d).walk('simple')));
      const u = byId(us, last!);
      const e = u.entry('simple')!;
      expect(e.rollout).toBe(id);
      for (const to of ['downloading', 'verifying', 'staging', 'activating', 'probation'] as const) await u.transition(e, to);
      await eventually(async () => stateOf(await rollout(f, id), last!) === 'probation', 'probation recorded');
      f.fleet.rollouts.tick();
      expect((await rollout(f, id)).currentStage).toBe(index);
      await u.transition(e, 'committed');
    }
    const done = await eventually(async () => {
      const x = await rollout(f, id);
      return x.state === 'completed' && x;
    }, 'completion');
    expect(done.stages.map((s: any) => s.counts.committed)).toEqual([1, 4, 5]);
    expect(done.finishedAt).not.toBeNull();
    for (const u of us) {
      expect(u.badSignatures).toEqual([]);
      expect(u.running.get('simple')).toBe(2);
    }
    const list = await f.api('GET', '/api/v1/rollouts');
    expect(list.body.rollouts.find((x: any) => x.id === id)).toMatchObject({ state: 'completed', deviceCount: 10, counts: { committed: 10 } });
    expect((await f.api('GET', '/metrics', undefined, null)).body).toMatch(/outpost_fleet_rollouts\{state="completed"\} [1-9]/);
  });

  it('a failure above maxFailurePct halts the rollout and rolls every touched device back to its previous version', async () => {
    const us = await group(f, 'halt', 6);
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, selector: { group: 'halt' }, stages: [50, 100], maxFailurePct: 20 });
    const id = created.body.id as string;
    const [a, b, c] = inStage(created.body, 0).map((d) => byId(us, d));
    const untouched = inStage(created.body, 1).map((d) => byId(us, d));
    await eventually(() => [a, b, c].every((u) => u!.entry('simple')?.version === 2), 'stage 0 desired');
    const v2Deployment = a!.entry('simple')!.deployment;
    await Promise.all([a!.walk('simple'), b!.walk('simple')]);
    await eventually(async () => {
      const r = await rollout(f, id);
      return stateOf(r, a!.id) === 'committed' && stateOf(r, b!.id) === 'committed';
    }, 'two committed');
    // From now on the devices follow their desired state by themselves (the rollback points them at v1).
    for (const u of us) u.behavior = 'commit';
    await c!.walk('simple', 'fail');

    const r = await eventually(async () => {
      const x = await rollout(f, id);
      return x.state === 'rolled_back' && x;
    }, 'the rollout to be rolled back');
    expect(r.reason).toMatch(/stage 0: 1 of 3 devices failed/);
    expect([a, b, c].map((u) => stateOf(r, u!.id))).toEqual(['rolled_back', 'rolled_back', 'rolled_back']);
    expect(r.devices.find((d: any) => d.deviceId === c!.id).reason).toBe('SHA256_MISMATCH');
    for (const u of [a, b, c]) {
      const e = u!.entry('simple')!;
      expect(e).toMatchObject({ version: 1, rollout: id });
      expect(e.deployment).toBeGreaterThan(v2Deployment);
      expect(u!.running.get('simple')).toBe(1);
      expect(u!.badSignatures).toEqual([]);
    }
    for (const u of untouched) expect(stateOf(r, u.id)).toBe('waiting');
    expect(untouched.every((u) => u.received.length === 0)).toBe(true);
  });

  it('pause holds the next stage, resume continues, abort stops without rollback; actions outside their states are 409', async () => {
    const us = await group(f, 'pause', 4);
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, deviceIds: us.map((u) => u.id), stages: [25, 50, 100] });
    const id = created.body.id as string;
    expect((await f.api('POST', `/api/v1/rollouts/${id}/pause`)).body.state).toBe('paused');
    const again = await f.api('POST', `/api/v1/rollouts/${id}/pause`);
    expect([again.status, again.body.code]).toEqual([409, 'FLEET_ROLLOUT_STATE']);

    const first = byId(us, inStage(created.body, 0)[0]!);
    await eventually(() => first.entry('simple'), 'stage 0 desired');
    await first.walk('simple');
    await eventually(async () => stateOf(await rollout(f, id), first.id) === 'committed', 'committed while paused');
    f.fleet.rollouts.tick();
    expect(await rollout(f, id)).toMatchObject({ state: 'paused', currentStage: 0 });

    const resumed = await f.api('POST', `/api/v1/rollouts/${id}/resume`);
    expect(resumed.body).toMatchObject({ state: 'running', currentStage: 1 });
    const second = byId(us, inStage(resumed.body, 1)[0]!);
    await eventually(() => second.entry('simple'), 'stage 1 desired');
    expect((await f.api('POST', `/api/v1/rollouts/${id}/abort`)).body.state).toBe('aborted');
    await second.walk('simple');
    await eventually(async () => stateOf(await rollout(f, id), second.id) === 'committed', 'a late transition is still recorded');
    f.fleet.rollouts.tick();
    const r = await rollout(f, id);
    expect(r).toMatchObject({ state: 'aborted', currentStage: 1 });
    expect(first.entry('simple')!.version).toBe(2); // no rollback
    for (const d of inStage(r, 2)) expect(byId(us, d).received).toEqual([]);
    for (const action of ['resume', 'pause', 'abort', 'rollback']) {
      expect((await f.api('POST', `/api/v1/rollouts/${id}/${action}`)).status).toBe(409);
    }
  });

  it('an operator rollback of a completed rollout returns its devices to the previous version', async () => {
    const us = await group(f, 'manual-rb', 2, { behavior: 'commit' });
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, selector: { group: 'manual-rb' } });
    const id = created.body.id as string;
    await eventually(async () => (await rollout(f, id)).state === 'completed', 'completion');
    const rb = await f.api('POST', `/api/v1/rollouts/${id}/rollback`);
    expect(rb.status).toBe(200);
    expect(['halted', 'rolled_back']).toContain(rb.body.state);
    await eventually(async () => (await rollout(f, id)).state === 'rolled_back', 'rolled back');
    for (const u of us) expect(u.running.get('simple')).toBe(1);
  });

  it('a scheduled rollout waits for its cron fire time', async () => {
    const us = await group(f, 'sched', 2);
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, selector: { group: 'sched' }, schedule: '0 3 * * *' });
    expect(created.body).toMatchObject({ state: 'scheduled', startedAt: null });
    const startsAt = Date.parse(created.body.startsAt);
    expect(startsAt).toBeGreaterThan(clock.now());
    f.fleet.rollouts.tick();
    await f.fleet.deployer.idle();
    expect((await rollout(f, created.body.id)).state).toBe('scheduled');
    expect(us.every((u) => u.received.length === 0)).toBe(true);
    clock.set(startsAt + 1000);
    await eventually(async () => (await rollout(f, created.body.id)).state === 'running', 'the scheduled start');
    await eventually(() => us.every((u) => u.entry('simple')?.version === 2), 'desired version 2');
  });

  it('offline devices are picked last, do not hold a stage back, and the rollout completes once they connect and commit', async () => {
    const us = await group(f, 'offline', 3, { behavior: 'commit', offline: 1 });
    const offline = us[2]!;
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, selector: { group: 'offline' }, stages: [50, 100] });
    const id = created.body.id as string;
    expect(inStage(created.body, 0).sort()).toEqual([us[0]!.id, us[1]!.id].sort());
    // Stage 2 starts and the online devices commit; the offline one keeps the rollout running, shown pending.
    const r = await eventually(async () => {
      const x = await rollout(f, id);
      return x.currentStage === 1 && stateOf(x, us[0]!.id) === 'committed' && stateOf(x, us[1]!.id) === 'committed' && x;
    }, 'stage 2 reached with the online devices committed');
    expect(r.state).toBe('running');
    expect(stateOf(r, offline.id)).toBe('pending');
    await offline.connect();
    const done = await eventually(async () => {
      const x = await rollout(f, id);
      return x.state === 'completed' && x;
    }, 'completion once the late device committed');
    expect(stateOf(done, offline.id)).toBe('committed');
    expect(offline.running.get('simple')).toBe(2);
  });

  it('refuses invalid rollouts with catalog codes', async () => {
    const us = await group(f, 'invalid', 1);
    const post = async (body: unknown, auth?: string | null) => {
      const r = await f.api('POST', '/api/v1/rollouts', body, auth);
      return [r.status, r.body.code];
    };
    const ok = { model: 'simple', version: 2, deviceIds: [us[0]!.id] };
    expect(await post({ ...ok, version: 9 })).toEqual([404, 'FLEET_MODEL_NOT_FOUND']);
    expect(await post({ ...ok, stages: [50, 40, 100] })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post({ ...ok, stages: [50] })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post({ ...ok, stages: [0, 100] })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post({ ...ok, maxFailurePct: 101 })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post({ ...ok, schedule: 'every day' })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post({ ...ok, colour: 'red' })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post({ model: 'simple', version: 2 })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post({ model: 'simple', version: 2, selector: { group: 'nobody' } })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post({ model: 'simple', version: 2, deviceIds: ['dev-unknown'] })).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(await post(ok, null)).toEqual([401, 'FLEET_UNAUTHORIZED']);
    expect(await post(ok, deviceAuth(us[0]!.device))).toEqual([403, 'FLEET_FORBIDDEN']);
    expect((await post({ ...ok, schedule: '0 3 * * *' }))[0]).toBe(201);
    expect(await post(ok)).toEqual([409, 'FLEET_ROLLOUT_CONFLICT']);
    const missing = await f.api('GET', '/api/v1/rollouts/ro-000000000000');
    expect([missing.status, missing.body.code]).toEqual([404, 'FLEET_ROLLOUT_NOT_FOUND']);
    expect((await f.api('POST', '/api/v1/rollouts/ro-000000000000/pause')).body.code).toBe('FLEET_ROLLOUT_NOT_FOUND');
  });
});

describe('rollouts across a fleet restart', () => {
  it('a running rollout continues from the database, and devices get their desired state again from the new broker', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'outpost-rollout-restart-'));
    let fleet = await startFleet({ dataDir, config: { rollouts: { tickMs: 50 } } });
    try {
      await pushModel(fleet, 'simple', 1);
      await pushModel(fleet, 'simple', 2);
      const us = await group(fleet, 'restart', 2);
      const created = await fleet.api('POST', '/api/v1/rollouts', { model: 'simple', version: 2, selector: { group: 'restart' }, stages: [50, 100] });
      const id = created.body.id as string;
      const [first] = inStage(created.body, 0).map((d) => byId(us, d));
      const [second] = inStage(created.body, 1).map((d) => byId(us, d));
      await eventually(() => first!.entry('simple'), 'stage 0 desired');
      for (const u of us) await u.close();
      await fleet.stop();

      fleet = await startFleet({ dataDir, config: { rollouts: { tickMs: 50 } } });
      for (const u of us) {
        u.received.length = 0;
        await u.connect(fleet.mqttUrl);
      }
      // The embedded broker lost its retained messages; the fleet publishes every desired state again.
      await eventually(() => first!.entry('simple')?.version === 2, 'desired republished after restart');
      expect(second!.received).toEqual([]);
      await first!.walk('simple');
      await eventually(() => second!.entry('simple')?.version === 2, 'stage 1 started by the restarted engine');
      await second!.walk('simple');
      await eventually(async () => (await rollout(fleet, id)).state === 'completed', 'completion after restart');
    } finally {
      for (const u of updaters.splice(0)) await u.close();
      await fleet.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
