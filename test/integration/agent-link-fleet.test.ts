import { cpSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgent } from '../../agent/src/agent.js';
import { loadConfig } from '../../agent/src/config/load.js';
import { ENROLL_EXIT, runEnrollCommand } from '../../agent/src/link/enroll-command.js';
import { eventually, startFleet } from '../helpers/fleet.js';
import { GENERATED_REPOSITORY } from '../helpers/paths.js';
import { log, tempDir } from './agent-link-support.js';

/**
 * The agent against the real fleet server (REST enrollment, embedded broker with its ACLs, ingest): a box
 * enrolled with `outpost-agent enroll` shows up online with its models and events, and offline after stop.
 */
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('agent ↔ real fleet server', () => {
  it('enrolls with a one-time token, reports online with its models and events, and goes offline on stop', async () => {
    const f = await startFleet();
    cleanups.push(() => f.stop());
    const tmp = tempDir('outpost-agent-fleet-');
    cleanups.push(() => tmp.remove());

    const created = await f.api('POST', '/api/v1/enrollment-tokens', { tags: { site: 'plant-9' } });
    expect(created.status).toBe(201);
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l) };
    const code = await runEnrollCommand({ fleet: f.httpUrl, token: created.body.token, dataDir: tmp.dir, env: {} }, io);
    expect({ code, err }).toEqual({ code: ENROLL_EXIT.ok, err: [] });
    const deviceId = /enrolled as device (\S+)/.exec(out.join('\n'))![1]!;

    // The token was single-use: a second enrollment with it is refused with the fleet's reason (exit 3).
    const again = await runEnrollCommand({ fleet: f.httpUrl, token: created.body.token, dataDir: tmp.dir, env: {}, force: true }, { out: () => undefined, err: (l) => err.push(l) });
    expect(again).toBe(ENROLL_EXIT.tokenRefused);
    expect(err.join('\n')).toContain('FLEET_ENROLLMENT_TOKEN_INVALID');

    const repository = path.join(tmp.dir, 'models');
    cpSync(path.join(GENERATED_REPOSITORY, 'identity'), path.join(repository, 'identity'), { recursive: true });
    const config = loadConfig({ env: {}, flags: { dataDir: tmp.dir, modelRepository: repository, http: { host: '127.0.0.1', port: 0 }, telemetry: { system: false } } });
    const agent = await createAgent(config, { log });
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) await agent.stop();
    });
    await agent.start();

    const device = await eventually(async () => {
      const r = await f.api('GET', `/api/v1/devices/${deviceId}`);
      return r.status === 200 && r.body.online && r.body.models.some((m: { state: string }) => m.state === 'ready') ? r.body : undefined;
    }, 'the device online with a ready model', 10_000);
    expect(device).toMatchObject({ id: deviceId, tags: { site: 'plant-9' }, provider: 'cpu', models: [{ name: 'identity', version: 1, state: 'ready' }] });
    const events = await eventually(async () => {
      const r = await f.api('GET', `/api/v1/devices/${deviceId}/events`);
      const list = (r.body.events ?? r.body) as { kind: string }[];
      return Array.isArray(list) && list.some((e) => e.kind === 'model.loaded') ? list : undefined;
    }, 'the model.loaded event at the fleet', 10_000);
    expect(events.some((e) => e.kind === 'model.loaded')).toBe(true);

    stopped = true;
    await agent.stop();
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${deviceId}`)).body.online === false, 'the device offline after stop', 10_000);
  });
});
