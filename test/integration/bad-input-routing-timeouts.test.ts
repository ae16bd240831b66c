/**
 * Refusals of unknown models, versions and routes, of a model that failed to load, and of requests that
 * run past a timeout (parameters.timeout_ms and limits.inferenceTimeoutMs), through real HTTP into a real
 * agent with real onnxruntime sessions (research note §5.6 H1, H2, H4). Each test asserts the status, the
 * catalog code and the JSON {error, code} shape, then that the agent still answers a valid request. Each
 * bad input is chosen so that without the check it guards, the request would get a different answer
 * (usually a 200, a 500 from onnxruntime or a crash), so the test fails if the check is removed.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { randomBytesSeeded } from '../helpers/bad-images.js';
import { expectStillServes, metadata, postBinaryRaw, postImage, startRefusalAgent, type ModelMeta, type RefusalAgent } from '../helpers/bad-input.js';
import { GENERATED_REPOSITORY } from '../helpers/paths.js';
import { expectRefusal, postJsonRaw, rawRequest } from '../helpers/raw-http.js';
import { VALID_SIMPLE } from '../helpers/simple-model.js';

describe('bad input: every refusal is a catalog error, and the agent keeps serving', () => {
  let agent: RunningAgent;
  let url: string;
  let slow: ModelMeta;
  let scene: Buffer;
  let infer: RefusalAgent['infer'];

  beforeAll(async () => {
    ({ agent, url, slow, scene, infer } = await startRefusalAgent());
  });
  afterAll(async () => {
    await agent?.stop();
  });

  describe('routing', () => {
    it('an unknown model → 404 AGENT_MODEL_NOT_FOUND', async () => {
      expectRefusal(await postJsonRaw(infer('no-such-model'), VALID_SIMPLE), 'AGENT_MODEL_NOT_FOUND');
      expectRefusal(await rawRequest(`${url}/v2/models/no-such-model`), 'AGENT_MODEL_NOT_FOUND');
      expectRefusal(await postImage(`${url}/v1/models/no-such-model/detect`, scene), 'AGENT_MODEL_NOT_FOUND');
      await expectStillServes(url);
    });

    it('an unknown version → 404 AGENT_VERSION_NOT_FOUND', async () => {
      for (const v of ['7', '0', 'abc', '01', '99999999999']) {
        expectRefusal(await postJsonRaw(`${url}/v2/models/simple/versions/${v}/infer`, VALID_SIMPLE), 'AGENT_VERSION_NOT_FOUND');
      }
      expectRefusal(await rawRequest(`${url}/v2/models/simple/versions/7/ready`), 'AGENT_VERSION_NOT_FOUND');
      await expectStillServes(url);
    });

    it('a malformed %-escape or an over-long path parameter → 400 AGENT_INVALID_REQUEST (the router\'s refusals in the catalog format too)', async () => {
      for (const p of ['/v2/models/%zz/infer', '/v2/models/simple/versions/%/infer', `/v2/models/${'a'.repeat(300)}/infer`, `/v1/models/${'b'.repeat(300)}/detect`]) {
        expectRefusal(await postJsonRaw(`${url}${p}`, VALID_SIMPLE), 'AGENT_INVALID_REQUEST');
      }
      await expectStillServes(url);
    });

    it('an unknown route → 404 AGENT_NOT_FOUND', async () => {
      expectRefusal(await rawRequest(`${url}/v2/modelz/simple/infer`, { method: 'POST', body: '{}' }), 'AGENT_NOT_FOUND');
      await expectStillServes(url);
    });
  });

  it('per-request timeout via parameters.timeout_ms → 504 AGENT_TIMEOUT', async () => {
    const x = slow.inputs[0]!;
    const n = 3072;
    const k = 1024;
    const data = new Float32Array(n * k).fill(0.5);
    const header = (timeout: number) => ({ parameters: { timeout_ms: timeout }, inputs: [{ name: x.name, shape: [n, k], datatype: 'FP32', parameters: { binary_data_size: data.byteLength } }] });
    const r = await postBinaryRaw(infer('slow'), header(50), [data]);
    expect(expectRefusal(r, 'AGENT_TIMEOUT')).toMatch(/50 ms/);
    await expectStillServes(url);
  });

  it('parameters.timeout_ms that is not a usable duration → 400 AGENT_INVALID_REQUEST; a huge one is not cut to 1 ms', async () => {
    for (const timeout of [0, -1, '100', true]) {
      expect(expectRefusal(await postJsonRaw(infer(), { ...VALID_SIMPLE, parameters: { timeout_ms: timeout } }), 'AGENT_INVALID_REQUEST')).toMatch(/timeout_ms/);
    }
    // Node's setTimeout turns anything over 2^31-1 ms into 1 ms; a client asking for "practically no limit"
    // must not get a 504 for it. The slow model with a 1024x1024 input runs for well over 1 ms (tens of ms).
    const x = slow.inputs[0]!;
    const data = new Float32Array(1024 * 1024).fill(0.5);
    for (const timeout of [2 ** 31, 1e12]) {
      const header = { parameters: { timeout_ms: timeout }, inputs: [{ name: x.name, shape: [1024, 1024], datatype: 'FP32', parameters: { binary_data_size: data.byteLength } }] };
      const r = await postBinaryRaw(infer('slow'), header, [data]);
      expect(r.status, `timeout_ms ${timeout}: ${r.body.toString().slice(0, 200)}`).toBe(200);
    }
    await expectStillServes(url);
  });
});

describe('a model that failed to load', () => {
  let agent: RunningAgent;
  let repository: string;

  beforeAll(async () => {
    repository = mkdtempSync(path.join(os.tmpdir(), 'outpost-bad-input-repo-'));
    cpSync(path.join(GENERATED_REPOSITORY, 'simple'), path.join(repository, 'simple'), { recursive: true });
    mkdirSync(path.join(repository, 'broken', '1'), { recursive: true });
    writeFileSync(path.join(repository, 'broken', '1', 'model.onnx'), randomBytesSeeded(4096, 3));
    agent = await startAgent({ repository });
  });
  afterAll(async () => {
    await agent?.stop();
    if (repository) rmSync(repository, { recursive: true, force: true });
  });

  it('→ 503 AGENT_MODEL_NOT_READY on infer, while the other models serve', async () => {
    const ready = await rawRequest(`${agent.url}/v2/models/broken/ready`);
    expect(ready.status).toBe(503);
    expect(ready.json).toMatchObject({ ready: false, state: 'failed' });
    const message = expectRefusal(await postJsonRaw(`${agent.url}/v2/models/broken/infer`, VALID_SIMPLE), 'AGENT_MODEL_NOT_READY', 503);
    expect(message).toMatch(/failed/);
    expectRefusal(await postJsonRaw(`${agent.url}/v2/models/broken/versions/1/infer`, VALID_SIMPLE), 'AGENT_MODEL_NOT_READY', 503);
    await expectStillServes(agent.url);
  });
});

describe('limits.inferenceTimeoutMs = 50 on a slow model → 504 AGENT_TIMEOUT', () => {
  let agent: RunningAgent;

  beforeAll(async () => {
    agent = await startAgent({ models: ['simple', 'slow'], config: { limits: { inferenceTimeoutMs: 50 } } });
  });
  afterAll(async () => {
    await agent?.stop();
  });

  it('an input measured to take far longer than 50 ms is answered 504 AGENT_TIMEOUT at the deadline', async () => {
    const x = (await metadata(agent.url, 'slow')).inputs[0]!;
    const request = (n: number, k: number, parameters?: Record<string, unknown>) => {
      const data = new Float32Array(n * k).fill(0.5);
      const header = { ...(parameters ? { parameters } : {}), inputs: [{ name: x.name, shape: [n, k], datatype: 'FP32', parameters: { binary_data_size: data.byteLength } }] };
      return postBinaryRaw(`${agent.url}/v2/models/slow/infer`, header, [data]);
    };
    // Measure: grow the input until one run takes ≥ 6× the limit (bounded: four sizes).
    let size: [number, number] | undefined;
    let measuredMs = 0;
    for (const [n, k] of [[1024, 1024], [2048, 1024], [3072, 1024], [4096, 1024]] as [number, number][]) {
      const r = await request(n, k, { timeout_ms: 60_000 });
      expect(r.status, r.body.toString().slice(0, 200)).toBe(200);
      measuredMs = r.ms;
      if (r.ms >= 300) {
        size = [n, k];
        break;
      }
    }
    expect(size, `the slow model never took 300 ms (last ${measuredMs.toFixed(0)} ms); the timeout test would prove nothing`).toBeDefined();
    const r = await request(...size!);
    expect(expectRefusal(r, 'AGENT_TIMEOUT', 504)).toMatch(/50 ms/);
    console.info(`[timeout] slow ${size!.join('x')} takes ${measuredMs.toFixed(0)} ms; refused with 504 after ${r.ms.toFixed(0)} ms`);
    // The refusal comes at the deadline, not when the run ends (sessions run off the event loop's thread);
    // r.ms also includes sending the body, which the measured run paid too.
    expect(r.ms).toBeLessThan(measuredMs);
    // A valid request still succeeds (with its own, longer, timeout: the 50 ms default is the point of this agent).
    await expectStillServes(agent.url, { timeout_ms: 30_000 });
  });
});
