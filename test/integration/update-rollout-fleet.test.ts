import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dirBytes } from '../../agent/src/update/disk.js';
import { runCli } from '../../fleet-server/src/cli/main.js';
import { buildSimpleHeavy } from '../../models/simple-variants.js';
import { eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';
import { activeVersion, inferSimple, pushVersion, simpleBytes, startEnrolledAgent, updateReaches, type EnrolledAgent } from '../helpers/updates.js';

/**
 * Rollouts across 20 real in-process agents (each its own data dir, SQLite file, HTTP port and MQTT client) on
 * one real fleet: a bad version halts in its first stage and every touched box returns to the old version
 * while cameras keep getting answers; an offline box converges when it comes back; `outpost rollouts watch`
 * follows a real rollout to its end.
 */

const DEVICES = 20;
/** Boxes whose disk budget leaves no room for v2 (30 %). */
const SMALL_BUDGET = 6;
/** update.diskBudgetBytes may not go below 1 MiB (agent/src/config/schema.ts), so v2 must be larger than that. */
const BUDGET_FLOOR = 1024 * 1024;
/** Room for v1's manifest.json beside its model.onnx. */
const MANIFEST_ROOM = 64 * 1024;
const PROBATION_SECONDS = 2;
/** OUTPUT0[0] of the standard request: v1 adds nothing, v2 (the heavy one) and v3 add 1000. */
const V1_ANSWER = 1;
const V2_ANSWER = 1001;

type View = { id: string; state: string; reason: string | null; currentStage: number; devices: { deviceId: string; stage: number; state: string; reason: string | null }[] };

describe('rollouts across 20 real agents', () => {
  let f: RunningFleet;
  let agents: EnrolledAgent[] = [];
  /** Device ids started with the small disk budget. */
  const smallBudget = new Set<string>();
  let budget = 0;
  let v2Size = 0;
  /** Non-failing devices the v2 rollout never reached (stage 2), for the offline test. */
  let untouched: string[] = [];
  /** The inference clients of the v2 test, stopped in afterAll too when an assertion failed first. */
  let cameras: ReturnType<typeof startCameras> | undefined;

  const byId = (id: string) => agents.find((a) => a.device.deviceId === id)!;
  const rollout = async (id: string): Promise<View> => (await f.api('GET', `/api/v1/rollouts/${id}`)).body as View;
  const until = (id: string, state: string, timeoutMs: number) =>
    eventually(async () => {
      const v = await rollout(id);
      return v.state === state ? v : undefined;
    }, `rollout ${id} ${state}`, timeoutMs);

  beforeAll(async () => {
    f = await startFleet({ config: { rollouts: { tickMs: 100 } } });
    const v1 = await pushVersion(f, 'simple', 1, simpleBytes(1));
    v2Size = (await pushVersion(f, 'simple', 2, buildSimpleHeavy({ width: 640, layers: 1, offset: 1000 }))).size;
    await pushVersion(f, 'simple', 3, simpleBytes(2));
    budget = Math.max(BUDGET_FLOOR, v1.size + MANIFEST_ROOM);
    expect(v2Size, 'v2 must not fit a budget that holds v1').toBeGreaterThan(budget);
    const started = Date.now();
    agents = await Promise.all(
      Array.from({ length: DEVICES }, (_, i) =>
        startEnrolledAgent(f, { tags: { line: '3' }, ...(i < SMALL_BUDGET ? { config: { update: { diskBudgetBytes: budget } } } : {}) }),
      ),
    );
    for (const a of agents.slice(0, SMALL_BUDGET)) smallBudget.add(a.device.deviceId);
    await eventually(async () => {
      const list = (await f.api('GET', '/api/v1/devices')).body as { devices: { id: string; online: boolean }[] };
      return list.devices.filter((d) => d.online).length === DEVICES;
    }, 'all 20 devices online', 15_000);
    console.log(`[rollout-fleet] ${DEVICES} agents started and online in ${Date.now() - started} ms; v1 ${v1.size} B, v2 ${v2Size} B, small budget ${budget} B`);
  });

  afterAll(async () => {
    await cameras?.stop();
    await Promise.all(agents.map((a) => a.stop().catch(() => undefined)));
    await Promise.all(agents.map((a) => a.cleanup()));
    await f?.stop();
  });

  it('rolls v1 out to all 20 devices of line 3', async () => {
    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 1, selector: { line: '3' }, stages: [100], probationSeconds: 1 });
    expect(created.status).toBe(201);
    expect(created.body.devices).toHaveLength(DEVICES);
    const done = await until(created.body.id, 'completed', 30_000);
    expect(done.devices.every((d) => d.state === 'committed')).toBe(true);
    for (const a of agents) expect(a.agent.models.active('simple')?.version).toBe(1);
    // The small budget holds v1 with room to spare, but not v2 beside it.
    const small = agents[0]!;
    const used = dirBytes(small.agent.config.modelRepository) + dirBytes(path.join(small.dataDir, 'staging'));
    expect(used).toBeLessThanOrEqual(budget);
    expect(used + v2Size).toBeGreaterThan(budget);
  });

  it('halts a bad v2 in its first stage and brings every touched device back to v1 while cameras keep working', async () => {
    // Which devices stage 1 takes depends on a hash of the (random) rollout id. A scheduled rollout shows its
    // plan before it touches anything; the engine recomputes the same order at the start (same id, same
    // online set), so a plan with ≥ 3 small-budget devices among stage 1's 10 (> 20 %) is kept, others aborted.
    let view: View | undefined;
    let drafts = 0;
    for (; drafts < 40 && !view; drafts++) {
      const at = new Date(Date.now() + 3000);
      const schedule = `${at.getSeconds()} ${at.getMinutes()} ${at.getHours()} ${at.getDate()} ${at.getMonth() + 1} *`;
      const created = await f.api('POST', '/api/v1/rollouts', {
        model: 'simple', version: 2, selector: { line: '3' }, stages: [50, 100], maxFailurePct: 20, probationSeconds: PROBATION_SECONDS, schedule,
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const draft = created.body as View;
      expect(draft.state).toBe('scheduled');
      const planned = draft.devices.filter((d) => d.stage === 0).map((d) => d.deviceId);
      if (planned.filter((id) => smallBudget.has(id)).length >= 3) view = draft;
      else expect((await f.api('POST', `/api/v1/rollouts/${draft.id}/abort`)).status).toBe(200);
    }
    if (!view) throw new Error('no plan with 3 small-budget devices in stage 1 after 40 drafts');
    const id = view.id;
    const stage1 = view.devices.filter((d) => d.stage === 0).map((d) => d.deviceId).sort();
    const stage2 = view.devices.filter((d) => d.stage === 1).map((d) => d.deviceId).sort();
    const failingInStage1 = stage1.filter((d) => smallBudget.has(d));
    expect(stage1).toHaveLength(10);
    untouched = stage2.filter((d) => !smallBudget.has(d));

    // Cameras: two clients cycling over small-budget and good devices of stage 1 and one of stage 2.
    const goodInStage1 = stage1.filter((d) => !smallBudget.has(d));
    const targets = [failingInStage1[0]!, goodInStage1[0]!, goodInStage1[1]!, untouched[0]!].map((d) => byId(d).url);
    cameras = startCameras(targets, 2);

    const running = await until(id, 'running', 10_000);
    expect(running.devices.filter((d) => d.state !== 'waiting').map((d) => d.deviceId).sort(), 'the started stage is the planned one').toEqual(stage1);

    const seen: string[] = [];
    let haltAt = 0;
    const final = await eventually(async () => {
      const v = await rollout(id);
      if (seen.at(-1) !== v.state) seen.push(v.state);
      if (haltAt === 0 && v.state !== 'running') haltAt = Date.now();
      return v.state === 'rolled_back' || v.state === 'completed' ? v : undefined;
    }, `rollout ${id} rolled back`, 30_000);
    expect(final.state).toBe('rolled_back');
    expect(seen.filter((s) => s !== 'running' && s !== 'halted' && s !== 'rolled_back')).toEqual([]);
    expect(seen.indexOf('halted') < seen.indexOf('rolled_back')).toBe(true);
    const m = /^stage 0: (\d+) of 10 devices failed/.exec(final.reason ?? '');
    expect(m, `halt reason: ${final.reason}`).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(3);
    expect(final.currentStage).toBe(0);

    // Every touched device is back on v1: on the agent and in its answers.
    await eventually(async () => {
      for (const d of stage1) {
        const a = byId(d);
        if (a.agent.models.active('simple')?.version !== 1) return false;
        if ((await inferSimple(a.url)).first !== V1_ANSWER) return false;
      }
      return true;
    }, 'every stage-1 device on v1 again', PROBATION_SECONDS * 1000 + 30_000);
    const backMs = Date.now() - haltAt;
    const camerasResult = await cameras.stop();

    const rows = (a: EnrolledAgent) => a.agent.updater.store.recent(100).filter((r) => r.model === 'simple' && r.version === 2);
    const activated = stage1.filter((d) => rows(byId(d)).some((r) => r.state === 'rolled_back'));
    console.log(
      `[rollout-fleet] v2 halted: ${final.reason}; states seen ${seen.join(' → ')}; ${stage1.length} touched devices back on v1 ` +
        `${backMs} ms after the halt (limit ${PROBATION_SECONDS * 1000 + 30_000} ms); ${activated.length} of them had activated v2; ` +
        `cameras: ${camerasResult.ok} answers (${camerasResult.v2} from v2), ${camerasResult.bad.length} failures; ${drafts} plan draft(s)`,
    );
    expect(backMs).toBeLessThanOrEqual(PROBATION_SECONDS * 1000 + 30_000);
    expect(camerasResult.bad, 'non-2xx answers to the cameras').toEqual([]);
    expect(camerasResult.ok).toBeGreaterThan(0);

    for (const d of final.devices) {
      if (d.stage === 0) expect(d.state, d.deviceId).toBe('rolled_back');
      else expect(d.state, `${d.deviceId} is in stage 2 and must never be touched`).toBe('waiting');
    }
    for (const d of failingInStage1) {
      expect(rows(byId(d)).map((r) => [r.state, r.reason])).toEqual([['failed', 'disk_budget']]);
    }
    for (const d of stage2) {
      expect(rows(byId(d)), `${d} (stage 2) must never have received v2`).toEqual([]);
      expect(byId(d).agent.models.active('simple')?.version).toBe(1);
    }
  });

  it('an offline device converges on a new version when it comes back; `outpost rollouts watch` follows the rollout to its end', async () => {
    expect(untouched.length).toBeGreaterThanOrEqual(4);
    const [offId, ...online] = untouched.slice(0, 4) as [string, ...string[]];
    const off = byId(offId);
    await off.stop();
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${offId}`)).body.online === false, `${offId} offline on the fleet`);

    const created = await f.api('POST', '/api/v1/rollouts', { model: 'simple', version: 3, deviceIds: [offId, ...online], probationSeconds: 1 });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const id = created.body.id as string;
    const watch = watchWithCli(id);

    // The online devices commit; the offline one shows pending, and (engine.ts) keeps the rollout open.
    const partial = await eventually(async () => {
      const v = await rollout(id);
      return online.every((d) => v.devices.find((x) => x.deviceId === d)?.state === 'committed') ? v : undefined;
    }, `the online devices of ${id} committed`, 15_000);
    expect(partial.devices.find((d) => d.deviceId === offId)).toMatchObject({ state: 'pending', reason: 'offline-at-start' });
    expect(partial.state).toBe('running');
    for (const d of online) expect((await inferSimple(byId(d).url)).first).toBe(V2_ANSWER);

    // Back online: the retained desired state brings v3, and the rollout's row for it follows.
    const restartedAt = Date.now();
    const back = await off.restart();
    agents = agents.map((a) => (a === off ? back : a));
    await activeVersion(back, 'simple', 3, 20_000);
    await updateReaches(back, 'simple', ['committed'], 20_000);
    expect((await inferSimple(back.url)).first).toBe(V2_ANSWER);
    const done = await until(id, 'completed', 10_000);
    for (const d of done.devices) expect(d.state, d.deviceId).toBe('committed');
    const convergedMs = Date.now() - restartedAt;

    const { code, text, err } = await watch;
    console.log(`[rollout-fleet] offline device committed v3 ${convergedMs} ms after its restart; outpost rollouts watch (exit ${code}):\n${text}${err}`);
    expect(code, err).toBe(0);
    for (const d of online) expect(text).toMatch(new RegExp(`${d}  stage 1  \\S+ → committed`));
    expect(text).toMatch(new RegExp(`${offId}  stage 1  - → pending  \\(offline-at-start\\)`));
    expect(text).toMatch(new RegExp(`${offId}  stage 1  \\S+ → committed`));
    expect(text).toMatch(new RegExp(`rollout ${id}  running → completed`));
  });

  /** `outpost rollouts watch <id>` in-process against the real server, as a pipe would see it (one line per change). */
  async function watchWithCli(id: string): Promise<{ code: number; text: string; err: string }> {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(['rollouts', 'watch', id, '--interval', '200ms', '--timeout', '40s'], {
      stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) },
      env: { OUTPOST_FLEET_URL: f.httpUrl, OUTPOST_TOKEN: f.adminToken }, cwd: os.tmpdir(),
    });
    return { code, text: out.join(''), err: err.join('') };
  }
});

/** `clients` loops, each sending inferSimple to `urls` in turn until stop(); counts answers by version and failures. */
function startCameras(urls: string[], clients: number) {
  let running = true;
  const result = { ok: 0, v2: 0, bad: [] as string[] };
  const loops = Array.from({ length: clients }, async (_, c) => {
    for (let i = c; running; i++) {
      const url = urls[i % urls.length]!;
      try {
        const r = await inferSimple(url);
        if (r.status >= 200 && r.status < 300) {
          result.ok++;
          if (r.first === V2_ANSWER) result.v2++;
        } else result.bad.push(`${url}: HTTP ${r.status}`);
      } catch (e) {
        result.bad.push(`${url}: ${(e as Error).message}`);
      }
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return result;
    },
  };
}
