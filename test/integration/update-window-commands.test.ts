import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';
import { activeVersion, inferSimple, latestUpdate, pushVersion, simpleBytes, startEnrolledAgent, updateReaches, type EnrolledAgent } from '../helpers/updates.js';

/**
 * Maintenance windows and operator commands, end to end: a real fleet (REST, embedded broker, rollout engine) and a
 * real agent (its update machine, MQTT link and outbox).
 */
describe('maintenance windows and commands', () => {
  let f: RunningFleet;
  let a: EnrolledAgent;
  const rollout = async (version: number) => {
    const r = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version, deviceIds: [a.device.deviceId], probationSeconds: 1 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body.id as string;
  };
  const completed = (id: string) => eventually(async () => (await f.api('GET', `/api/v1/rollouts/${id}`)).body.state === 'completed', `rollout ${id} completed`, 15_000);

  beforeAll(async () => {
    f = await startFleet();
    await pushVersion(f, 'simple', 1, simpleBytes(1));
    await pushVersion(f, 'simple', 2, simpleBytes(2));
    a = await startEnrolledAgent(f, { tags: { site: 'night-only' } });
    await completed(await rollout(1));
    await activeVersion(a, 'simple', 1);
  });
  afterAll(async () => {
    await a?.stop();
    await a?.cleanup();
    await f?.stop();
  });

  it('a staged version waits for its maintenance window while the old one serves, and activates when the window is lifted', async () => {
    // A window that opens once a year (1 January, 03:00): closed now, whatever the date.
    const closed = await f.api('PUT', '/api/v1/maintenance-windows', { windows: [{ tag: { key: 'site', value: 'night-only' }, cron: '0 3 1 1 *', durationMinutes: 60 }] });
    expect(closed.status, JSON.stringify(closed.body)).toBe(200);
    await eventually(() => a.agent.updater.desired?.maintenanceWindow?.cron === '0 3 1 1 *', 'the window reached the agent');

    const id = await rollout(2);
    const waiting = await eventually(() => {
      const s = a.agent.status().update as { models: { simple: { update?: { state: string; waitingFor?: string } } } };
      const u = s.models.simple.update;
      return u?.state === 'staging' && u.waitingFor ? u : undefined;
    }, 'v2 staged and waiting for the window');
    expect(waiting.waitingFor).toMatch(/maintenance window/);
    // Staged and checked, but the cameras still get v1 until the window opens.
    expect((await inferSimple(a.url)).first).toBe(1);
    expect(a.agent.models.active('simple')?.version).toBe(1);

    const lifted = await f.api('PUT', '/api/v1/maintenance-windows', { windows: [] });
    expect(lifted.status).toBe(200);
    await activeVersion(a, 'simple', 2);
    expect((await inferSimple(a.url)).first).toBe(1001);
    await updateReaches(a, 'simple', ['committed']);
    await completed(id);
  });

  it('diagnostics, rollback and reload commands are answered by the agent and stored by the fleet', async () => {
    const send = async (kind: string, args: Record<string, unknown> = {}) => {
      const r = await f.api('POST', `/api/v1/devices/${a.device.deviceId}/commands`, { kind, args, timeoutMs: 10_000 });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      return eventually(async () => {
        const c = await f.api('GET', `/api/v1/devices/${a.device.deviceId}/commands/${r.body.id}`);
        return c.body.state !== 'sent' ? c.body : undefined;
      }, `command ${kind} answered`);
    };

    const diag = await send('diagnostics');
    expect(diag.state).toBe('ok');
    expect(diag.result).toMatchObject({ update: { models: { simple: { active: 2, previous: 1 } } } });
    expect(diag.result.recentDeployments[0]).toMatchObject({ model: 'simple', version: 2, state: 'committed' });

    // v2 is committed, v1 kept on disk: the operator's rollback brings v1 back without a download.
    const rb = await send('rollback', { model: 'simple' });
    expect(rb).toMatchObject({ state: 'ok', result: { model: 'simple', from: 2, to: 1 } });
    expect(a.agent.models.active('simple')?.version).toBe(1);
    expect((await inferSimple(a.url)).first).toBe(1);
    // The rollback swapped the kept versions: a second one rolls forward again.
    expect(a.agent.updater.store.pointer('simple')).toMatchObject({ active: 1, previous: 2 });

    const missing = await send('rollback', {});
    expect(missing).toMatchObject({ state: 'failed', error: { code: 'AGENT_CMD_BAD_ARGS' } });

    const reload = await send('reload');
    expect(reload).toMatchObject({ state: 'ok', result: { retried: 0 } });
    // Nothing failed transiently, so nothing was redeployed: v1 still serves.
    expect(latestUpdate(a, 'simple')?.state).toBe('committed');
    expect(a.agent.models.active('simple')?.version).toBe(1);
  });
});
