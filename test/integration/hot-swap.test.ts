/**
 * Hot swap in the agent's ModelManager (issue 5): stage → activate → retire under load with no failed request,
 * the golden-input check at staging, refused stages leaving the active version serving, and the boot-time
 * selection. Real agent, real HTTP on 127.0.0.1, real onnxruntime sessions on the project's own models.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../agent/src/config/load.js';
import { ModelManager, StageError, type ServedVersion } from '../../agent/src/inference/model-manager.js';
import { readRuntimeInfo, realHardwareProbe } from '../../agent/src/inference/providers.js';
import type { HostTensor } from '../../agent/src/inference/tensor.js';
import { createAgentMetrics } from '../../agent/src/metrics/agent-metrics.js';
import { scanRepository, type VersionDir } from '../../agent/src/repository/scan.js';
import { AgentStateStore } from '../../agent/src/storage/agent-state.js';
import { openDatabase } from '../../agent/src/storage/database.js';
import { computeGolden } from '../../fleet-server/src/cli/golden.js';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { eventually } from '../helpers/fleet.js';
import { GENERATED_REPOSITORY, GENERATED_SAMPLES } from '../helpers/paths.js';
import { samples, scrape } from '../helpers/prom-text.js';
import { postJsonRaw, rawRequest } from '../helpers/raw-http.js';
import { isSimpleAnswer, simpleRequest } from '../helpers/simple-model.js';

const IMAGE = readFileSync(path.join(GENERATED_SAMPLES, 'shapes.jpg'));
const BIG_IMAGE = readFileSync(path.join(GENERATED_SAMPLES, 'shapes-1080p.jpg'));

/** simple 1 and 2, and demo-shapes 1 plus a copy as version 2 (same weights), so the detector can be swapped too. */
function makeRepository(): string {
  const repo = mkdtempSync(path.join(os.tmpdir(), 'outpost-hot-swap-repo-'));
  for (const m of ['simple', 'demo-shapes']) cpSync(path.join(GENERATED_REPOSITORY, m), path.join(repo, m), { recursive: true });
  cpSync(path.join(repo, 'demo-shapes', '1'), path.join(repo, 'demo-shapes', '2'), { recursive: true });
  const manifestPath = path.join(repo, 'demo-shapes', '2', 'manifest.json');
  writeFileSync(manifestPath, JSON.stringify({ ...JSON.parse(readFileSync(manifestPath, 'utf8')), version: 2 }));
  return repo;
}

function dirOf(repo: string, name: string, version: number): VersionDir {
  const dir = scanRepository(repo).models.find((m) => m.name === name)?.versions.find((v) => v.version === version);
  if (!dir) throw new Error(`${name}/${version} is not in ${repo}`);
  return dir;
}

const simpleFeeds = (): Record<string, HostTensor> => ({
  INPUT0: { datatype: 'INT32', dims: [1, 16], data: new Int32Array(16) },
  INPUT1: { datatype: 'INT32', dims: [1, 16], data: new Int32Array(16) },
});

describe('hot swap under load', () => {
  let agent: RunningAgent;
  let repo: string;
  beforeAll(async () => {
    repo = makeRepository();
    agent = await startAgent({ repository: repo, config: { models: { pinned: { simple: [1], 'demo-shapes': [1] } } } });
  });
  afterAll(async () => {
    await agent?.stop();
    if (repo) rmSync(repo, { recursive: true, force: true });
  });

  it('answers every request through 6 swaps and rollbacks of two models, each flip seen by the clients, old sessions released', async () => {
    const models = agent.agent.models;
    expect(models.active('simple')?.version).toBe(1);
    // Version serving unversioned requests in each phase; phase p starts when the test's p-th activate() returns.
    const expected = [1];
    let phase = 0;
    let stopped = false;
    const failures: string[] = [];
    // `phase` when the request was sent and `until` when its answer arrived: one of them is the phase it was resolved in.
    const seen: { kind: 'simple' | 'detect'; phase: number; until: number; version: number }[] = [];
    const keepAlive = Array.from({ length: 5 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));

    const hammerSimple = async (client: number) => {
      for (let k = 0; !stopped; k++) {
        const sentIn = phase;
        const offset = client * 1000 + (k % 500);
        const reply = await postJsonRaw(`${agent.url}/v2/models/simple/infer`, simpleRequest(offset), { agent: keepAlive[client], timeoutMs: 10_000 });
        const version = Number((reply.json as { model_version?: string } | undefined)?.model_version);
        if (!isSimpleAnswer(reply, offset)) failures.push(`simple: ${reply.status} ${reply.body.subarray(0, 200).toString()}`);
        seen.push({ kind: 'simple', phase: sentIn, until: phase, version });
      }
    };
    const hammerDetect = async () => {
      while (!stopped) {
        const sentIn = phase;
        const reply = await rawRequest(`${agent.url}/v1/models/demo-shapes/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: IMAGE, agent: keepAlive[4], timeoutMs: 10_000 });
        const body = reply.json as { version?: string; detections?: unknown[] } | undefined;
        if (reply.status !== 200 || !body?.detections?.length) failures.push(`detect: ${reply.status} ${reply.body.subarray(0, 200).toString()}`);
        seen.push({ kind: 'detect', phase: sentIn, until: phase, version: Number(body?.version) });
      }
    };
    const clients = [0, 1, 2, 3].map(hammerSimple).concat(hammerDetect());

    try {
      await eventually(() => seen.length >= 20, 'the clients to get going');
      for (let swap = 0; swap < 6; swap++) {
        const from = expected[phase]!;
        const to = 3 - from;
        const staged = await Promise.all(['simple', 'demo-shapes'].map((name) => models.stage(name, dirOf(repo, name, to))));
        // Staged, ready, answering its own version's URL, and not yet the target of unversioned requests.
        expect(staged.map((v) => [v.state, v.staged])).toEqual([['ready', true], ['ready', true]]);
        expect(models.resolve('simple').version).toBe(from);
        expect((await rawRequest(`${agent.url}/v2/models/simple/ready`)).json).toMatchObject({ version: String(from), ready: true });
        const explicit = await postJsonRaw(`${agent.url}/v2/models/simple/versions/${to}/infer`, simpleRequest(7));
        expect(isSimpleAnswer(explicit, 7)).toBe(true);

        const old = ['simple', 'demo-shapes'].map((name) => models.active(name)!);
        const oldSessions = old.flatMap((v) => v.sessions);
        expect(oldSessions.length).toBeGreaterThan(0);
        for (const name of ['simple', 'demo-shapes']) expect(models.activate(name, to).previous?.version).toBe(from);
        expected.push(to);
        phase++;
        const flipped = phase;
        // Every client sees the new version before the old one goes: the flip reached live keep-alive connections.
        const after = (kind: string) => seen.some((s) => s.kind === kind && s.phase === flipped && s.version === to);
        await eventually(() => after('simple') && after('detect'), `swap ${swap}: answers sent after the flip`);
        await Promise.all(['simple', 'demo-shapes'].map((name) => models.retire(name, from)));

        expect(models.versionsOf('simple')!.map((v) => v.version)).toEqual([to]);
        expect(old.map((v) => v.sessions.length)).toEqual([0, 0]);
        // Released means the inference threads are gone: a run on an old session is refused for that reason.
        for (const s of oldSessions) await expect(s.run(simpleFeeds(), ['OUTPUT0'])).rejects.toThrow(/inference thread exited/);
        const retiredUrl = await postJsonRaw(`${agent.url}/v2/models/simple/versions/${from}/infer`, simpleRequest(0));
        expect(retiredUrl.status).toBe(404);
      }
    } finally {
      stopped = true;
      await Promise.all(clients);
      for (const a of keepAlive) a.destroy();
    }

    expect(failures).toEqual([]);
    // A request sent after an activate() returned is answered by the activated version, never the previous one
    // (or by a later one when the next activate() came while it was on its way: then `until` is past `phase`).
    const wrong = seen.filter((s) => s.phase > 0 && !expected.slice(s.phase, s.until + 1).includes(s.version));
    expect(seen.filter((s) => s.phase > 0 && s.phase === s.until).length).toBeGreaterThan(100);
    expect(wrong).toEqual([]);
    for (const kind of ['simple', 'detect'] as const) {
      for (let p = 0; p <= 6; p++) expect(seen.some((s) => s.kind === kind && s.phase === p && s.until === p && s.version === expected[p]), `${kind} phase ${p}`).toBe(true);
    }
    expect(new Set(seen.map((s) => s.version))).toEqual(new Set([1, 2]));

    // /status marks the active version; /metrics lists only the versions still served.
    const status = agent.agent.status() as { models: { name: string; version: number; active: boolean }[] };
    expect(status.models.filter((m) => m.name === 'simple')).toMatchObject([{ version: 1, active: true }]);
    const ready = samples((await scrape(agent.url)).samples, 'outpost_model_ready', { model: 'simple' });
    expect(ready.map((s) => [s.labels.version, s.value])).toEqual([['1', 1]]);
  });

  it('keeps a retiring version\'s sessions until a request still being preprocessed on it has answered', async () => {
    const models = agent.agent.models;
    const from = models.active('demo-shapes')!.version;
    const to = 3 - from;
    await models.stage('demo-shapes', dirOf(repo, 'demo-shapes', to));
    models.activate('demo-shapes', to);
    const old = models.versionsOf('demo-shapes')!.find((v) => v.version === from)!;
    const answer = rawRequest(`${agent.url}/v1/models/demo-shapes/versions/${from}/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: BIG_IMAGE, timeoutMs: 10_000 });
    // Catch the request while its 1080p image is being decoded: resolved, counted, not yet in the queue.
    await waitTicks(() => (old.inFlight?.count ?? 0) === 1 && old.batcher!.pending === 0, 'the request to be preprocessing');
    let retired = false;
    const retiring = models.retire('demo-shapes', from).then(() => (retired = true));
    expect(models.versionsOf('demo-shapes')!.map((v) => v.version)).toEqual([to]); // not resolvable at once
    const reply = await answer;
    expect(reply.status, reply.body.toString().slice(0, 300)).toBe(200);
    expect((reply.json as { version: string }).version).toBe(String(from));
    await retiring;
    expect(retired).toBe(true);
    expect(old.sessions).toEqual([]);
  });

  it('refuses to retire the active version and to activate one that is not loaded', async () => {
    const models = agent.agent.models;
    const active = models.active('simple')!.version;
    await expect(models.retire('simple', active)).rejects.toMatchObject({ code: 'retire_active' });
    expect(() => models.activate('simple', 9)).toThrow(expect.objectContaining({ code: 'unknown_version' }));
    expect(models.resolve('simple').version).toBe(active);
  });
});

/** Polls on every turn of the event loop (setImmediate), for states that last only milliseconds. */
async function waitTicks(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('staging checks', () => {
  let agent: RunningAgent;
  let repo: string;
  beforeAll(async () => {
    repo = makeRepository();
    agent = await startAgent({ repository: repo, config: { models: { pinned: { simple: [1], 'demo-shapes': [1] } } } });
  });
  afterAll(async () => {
    await agent?.stop();
    if (repo) rmSync(repo, { recursive: true, force: true });
  });

  const stageError = async (run: Promise<unknown>): Promise<StageError> => {
    const err = await run.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(StageError);
    return err as StageError;
  };

  async function expectV1Serving(): Promise<void> {
    const reply = await postJsonRaw(`${agent.url}/v2/models/simple/infer`, simpleRequest(3));
    expect(isSimpleAnswer(reply, 3)).toBe(true);
    expect((reply.json as { model_version: string }).model_version).toBe('1');
    expect((await rawRequest(`${agent.url}/v2/health/ready`)).status).toBe(200);
  }

  it('passes a golden computed by computeGolden from the same model file and manifest', async () => {
    const dir = dirOf(repo, 'simple', 2);
    const golden = await computeGolden(readFileSync(dir.modelPath), JSON.parse(readFileSync(dir.manifestPath!, 'utf8')) as Record<string, unknown>, { seed: 5 });
    expect(Object.keys(golden.inputs).sort()).toEqual(['INPUT0', 'INPUT1']);
    expect(golden.inputs.INPUT0).toEqual({ datatype: 'INT32', dims: [1, 16], fill: { seed: 5 } });
    expect(Object.keys(golden.outputs).sort()).toEqual(['OUTPUT0', 'OUTPUT1']);
    const v2 = await agent.agent.models.stage('simple', dir, { golden });
    expect(v2).toMatchObject({ version: 2, state: 'ready', staged: true });
    await expectV1Serving();
    await agent.agent.models.retire('simple', 2);
  });

  it('builds an image model\'s golden input at its preprocessing size, and the staged detector passes it', async () => {
    const dir = dirOf(repo, 'demo-shapes', 2);
    const manifest = JSON.parse(readFileSync(dir.manifestPath!, 'utf8')) as { preprocessing: { size: [number, number] } } & Record<string, unknown>;
    const golden = await computeGolden(readFileSync(dir.modelPath), manifest);
    expect(golden.inputs.images).toEqual({ datatype: 'FP32', dims: [1, 3, ...manifest.preprocessing.size], fill: { seed: 1 } });
    const staged = await agent.agent.models.stage('demo-shapes', dir, { golden });
    expect(staged.state).toBe('ready');
    expect(agent.agent.models.resolve('demo-shapes').version).toBe(1);
    await agent.agent.models.retire('demo-shapes', 2);
  });

  it('refuses a version whose answers differ from its golden (v1\'s golden for v2), releasing it; v1 keeps serving', async () => {
    const v1 = dirOf(repo, 'simple', 1);
    const golden = await computeGolden(readFileSync(v1.modelPath), null);
    const err = await stageError(agent.agent.models.stage('simple', dirOf(repo, 'simple', 2), { golden }));
    expect(err.code).toBe('golden_mismatch');
    expect(err.message).toMatch(/OUTPUT0/);
    expect(err.problems.every((p) => !p.includes('OUTPUT1'))).toBe(true); // v2 differs from v1 in OUTPUT0 only
    expect(agent.agent.models.versionsOf('simple')!.map((v) => v.version)).toEqual([1]);
    expect((await postJsonRaw(`${agent.url}/v2/models/simple/versions/2/infer`, simpleRequest(0))).status).toBe(404);
    await expectV1Serving();
  });

  it('runs the golden in the version\'s own manifest when none is given', async () => {
    const dir = dirOf(repo, 'simple', 2);
    const wrong = await computeGolden(readFileSync(dirOf(repo, 'simple', 1).modelPath), null);
    const manifest = JSON.parse(readFileSync(dir.manifestPath!, 'utf8')) as Record<string, unknown>;
    writeFileSync(dir.manifestPath!, JSON.stringify({ ...manifest, golden: wrong }));
    try {
      expect((await stageError(agent.agent.models.stage('simple', dir))).code).toBe('golden_mismatch');
    } finally {
      writeFileSync(dir.manifestPath!, JSON.stringify(manifest));
    }
    await expectV1Serving();
  });

  it('refuses a corrupt model file with load_failed; v1 keeps serving', async () => {
    mkdirSync(path.join(repo, 'simple', '3'), { recursive: true });
    writeFileSync(path.join(repo, 'simple', '3', 'model.onnx'), Buffer.from('this is not an onnx model'));
    const err = await stageError(agent.agent.models.stage('simple', dirOf(repo, 'simple', 3)));
    expect(err.code).toBe('load_failed');
    expect(err.message).toMatch(/simple version 3/);
    expect(agent.agent.models.versionsOf('simple')!.map((v) => v.version)).toEqual([1]);
    await expectV1Serving();
  });
});

describe('boot-time selection', () => {
  it('loads exactly the selected active and kept versions, serves the active one, and leaves other models to the policy', async () => {
    const repo = makeRepository();
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'outpost-hot-swap-boot-'));
    const config = loadConfig({ env: {}, flags: { dataDir, modelRepository: repo } });
    const db = openDatabase(path.join(dataDir, 'agent.db'));
    const models = new ModelManager({
      config, metrics: createAgentMetrics(), state: new AgentStateStore(db), log: pino({ level: 'silent' }),
      runtime: readRuntimeInfo(config.inference.runtimeLibraryPath), hardware: realHardwareProbe,
      // Under the default 'latest' policy simple would load 2 alone and serve it.
      selection: (name) => (name === 'simple' ? { active: 1, keep: [2] } : undefined),
    });
    try {
      await models.loadRepository();
      const list = (vs: ServedVersion[] | undefined) => vs?.map((v) => [v.version, v.state]);
      expect(list(models.versionsOf('simple'))).toEqual([[1, 'ready'], [2, 'ready']]);
      expect(models.active('simple')?.version).toBe(1);
      expect(models.resolve('simple').version).toBe(1);
      expect(models.resolve('simple', '2').version).toBe(2);
      expect(list(models.versionsOf('demo-shapes'))).toEqual([[2, 'ready']]);
      expect(models.active('demo-shapes')?.version).toBe(2);
    } finally {
      await models.close();
      db.close();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(repo, { recursive: true, force: true });
    }
  });
});
