/**
 * The per-model queue under concurrent load (dynamic batching, fixed-batch models, the queue bound and its
 * 503s), what /metrics and /status say about it, lifetime counters in the SQLite file across a restart, and
 * models that fail to load beside ones that serve. Real agents, real HTTP, real onnxruntime sessions.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { bytesOf, postBinary, postJson, type InferReply } from '../helpers/kserve-wire.js';
import { GENERATED_REPOSITORY } from '../helpers/paths.js';
import { samples, scrape, value, type Sample } from '../helpers/prom-text.js';

const SIMPLE = { model: 'simple', version: '2' };
const WIDTH = 16;

/** Request k of a burst: its own INPUT0/INPUT1 so a mixed-up batch slice would show. */
function simpleRequest(k: number) {
  const a = Array.from({ length: WIDTH }, (_, i) => k * 100 + i);
  const b = Array.from({ length: WIDTH }, (_, i) => i * i - k);
  return {
    body: { id: `req-${k}`, inputs: [{ name: 'INPUT0', datatype: 'INT32', shape: [1, WIDTH], data: a }, { name: 'INPUT1', datatype: 'INT32', shape: [1, WIDTH], data: b }] },
    sum: a.map((v, i) => v + b[i]! + 1000), // version 2 adds 1000
    diff: a.map((v, i) => v - b[i]!),
  };
}

/** Fires `n` simple requests at once and checks every answer is its own. */
async function burst(url: string, n: number): Promise<void> {
  const requests = Array.from({ length: n }, (_, k) => simpleRequest(k));
  const replies = await Promise.all(requests.map((r) => postJson(`${url}/v2/models/simple/infer`, r.body)));
  replies.forEach((reply, k) => {
    expect(reply.status, JSON.stringify(reply.json)).toBe(200);
    expect(reply.json.id).toBe(`req-${k}`);
    expect(reply.outputs.OUTPUT0!.data, `request ${k}`).toEqual(requests[k]!.sum);
    expect(reply.outputs.OUTPUT1!.data, `request ${k}`).toEqual(requests[k]!.diff);
  });
}

/** Observations and summed value of the batch-size histogram (rows per session.run) of a model version. */
async function batchSizes(url: string, labels: Record<string, string>): Promise<{ runs: number; rows: number }> {
  const m = (await scrape(url)).samples;
  const pick = (name: string) => samples(m, name, labels)[0]?.value ?? 0;
  return { runs: pick('outpost_inference_batch_size_count'), rows: pick('outpost_inference_batch_size_sum') };
}

const sinceThen = (before: { runs: number; rows: number }, after: { runs: number; rows: number }) => ({ runs: after.runs - before.runs, rows: after.rows - before.rows });

describe('dynamic batching, /metrics and /status', () => {
  let agent: RunningAgent;
  beforeAll(async () => {
    // A 20 ms queue delay: `simple` runs in microseconds, so without one a burst could drain request by request
    // (the default 0 batches only what queued while a run was in flight).
    agent = await startAgent({ models: ['simple', 'demo-color'], config: { batching: { maxQueueDelayMs: 20 } } });
  });
  afterAll(() => agent?.stop());

  it('batches a burst of 16 requests to simple, and every response carries its own sums', async () => {
    const before = await batchSizes(agent.url, SIMPLE);
    await burst(agent.url, 16);
    const runs = sinceThen(before, await batchSizes(agent.url, SIMPLE));
    // Every row ran exactly once; fewer runs than requests means some runs carried several requests.
    expect(runs.rows).toBe(16);
    expect(runs.runs).toBeLessThan(16);
    expect(runs.rows / runs.runs).toBeGreaterThan(1);
  });

  it('runs the fixed-batch demo-color one request at a time, all of a concurrent burst succeeding', async () => {
    const colours: [string, { r: number; g: number; b: number }][] = [
      ['red', { r: 215, g: 40, b: 40 }], ['green', { r: 30, g: 190, b: 30 }], ['blue', { r: 35, g: 65, b: 215 }], ['grey', { r: 128, g: 128, b: 128 }],
    ];
    const images = await Promise.all([...colours, ...colours].map(async ([label, background]) => ({ label, png: await sharp({ create: { width: 32, height: 32, channels: 3, background } }).png().toBuffer() })));
    const labels = { model: 'demo-color', version: '1' };
    const before = await batchSizes(agent.url, labels);
    const replies = await Promise.all(images.map(async ({ png }) => {
      const res = await fetch(`${agent.url}/v1/models/demo-color/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
      return { status: res.status, body: (await res.json()) as { classes: { label: string }[] } };
    }));
    replies.forEach((r, i) => {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.classes[0]!.label).toBe(images[i]!.label);
    });
    expect(sinceThen(before, await batchSizes(agent.url, labels))).toEqual({ runs: images.length, rows: images.length });
  });

  it('/metrics carries counters, labelled histograms, the pending gauge, load times and process metrics', async () => {
    await burst(agent.url, 4);
    const wrong = await postJson(`${agent.url}/v2/models/simple/infer`, { inputs: [{ name: 'INPUT0', datatype: 'INT32', shape: [1, 3], data: [1, 2, 3] }, { name: 'INPUT1', datatype: 'INT32', shape: [1, 3], data: [1, 2, 3] }] });
    expect(wrong.json.code).toBe('AGENT_WRONG_SHAPE');

    const { text, samples: m } = await scrape(agent.url);
    const requests = value(m, 'outpost_inference_requests_total', SIMPLE);
    expect(requests).toBeGreaterThanOrEqual(21);
    expect(value(m, 'outpost_inference_success_total', SIMPLE)).toBe(requests - 1);
    expect(value(m, 'outpost_inference_failures_total', { ...SIMPLE, code: 'AGENT_WRONG_SHAPE' })).toBe(1);
    for (const h of ['outpost_inference_request_duration_seconds', 'outpost_inference_queue_duration_seconds', 'outpost_inference_compute_duration_seconds']) {
      expect(samples(m, `${h}_bucket`, SIMPLE).length, h).toBeGreaterThan(5);
      expect(value(m, `${h}_bucket`, { ...SIMPLE, le: '+Inf' }), h).toBe(value(m, `${h}_count`, SIMPLE));
      expect(value(m, `${h}_sum`, SIMPLE), h).toBeGreaterThan(0);
    }
    // Every request is timed; queue and compute only for those that reached the queue (not the wrong shape).
    expect(value(m, 'outpost_inference_request_duration_seconds_count', SIMPLE)).toBe(requests);
    expect(value(m, 'outpost_inference_compute_duration_seconds_count', SIMPLE)).toBe(requests - 1);
    expect(value(m, 'outpost_inference_pending_requests', SIMPLE)).toBe(0);
    expect(value(m, 'outpost_model_load_duration_seconds', SIMPLE)).toBeGreaterThan(0);
    expect(value(m, 'outpost_model_ready', SIMPLE)).toBe(1);
    expect(value(m, 'outpost_model_ready', { model: 'demo-color', version: '1' })).toBe(1);
    expect(value(m, 'outpost_http_refused_requests_total', { code: 'AGENT_WRONG_SHAPE' })).toBe(1);
    for (const p of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
      expect(samples(m, p).length, p).toBeGreaterThan(0);
    }
    expect(text).toMatch(/^# TYPE outpost_inference_batch_size histogram$/m);
    expect(text).toMatch(/^# HELP outpost_inference_requests_total \S/m);
  });

  const promtool = process.env.PATH?.split(path.delimiter).map((d) => path.join(d, 'promtool')).find((p) => existsSync(p));
  it.skipIf(!promtool)(`promtool check metrics finds nothing to complain about${promtool ? '' : ' (skipped: promtool not on PATH; Debian package "prometheus")'}`, async () => {
    await burst(agent.url, 2);
    const { text } = await scrape(agent.url);
    const r = spawnSync(promtool!, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({ status: 0, stdout: '', stderr: '' });
  });

  it('/status reports the execution provider, the models and request counters that agree with /metrics', async () => {
    const status = (await (await fetch(`${agent.url}/status`)).json()) as {
      executionProviders: { candidates: string[] };
      models: { name: string; version: number; state: string; provider: string; task: string }[];
      requests: { name: string; version: number; requests: number; failures: number }[];
    };
    const m = (await scrape(agent.url)).samples;
    expect(status.executionProviders.candidates).toEqual(['cpu']);
    expect(status.models.map(({ name, version, state, provider, task }) => ({ name, version, state, provider, task }))).toEqual([
      { name: 'demo-color', version: 1, state: 'ready', provider: 'cpu', task: 'classify' },
      { name: 'simple', version: 2, state: 'ready', provider: 'cpu', task: 'raw' },
    ]);
    const simple = status.requests.find((r) => r.name === 'simple' && r.version === 2)!;
    expect(simple.requests).toBe(value(m, 'outpost_inference_requests_total', SIMPLE));
    expect(simple.failures).toBe(samples(m, 'outpost_inference_failures_total', SIMPLE).reduce((n, s) => n + s.value, 0));
    expect(simple.failures).toBeGreaterThanOrEqual(1);
  });
});

describe('batching.enabled: false', () => {
  it('runs every request alone, still answering each correctly', async () => {
    const agent = await startAgent({ models: ['simple'], config: { batching: { enabled: false } } });
    try {
      const meta = (await (await fetch(`${agent.url}/v2/models/simple`)).json()) as { parameters: Record<string, unknown> };
      expect(meta.parameters).toMatchObject({ dynamic_batch: true, max_batch_size: 1 });
      await burst(agent.url, 16);
      expect(await batchSizes(agent.url, SIMPLE)).toEqual({ runs: 16, rows: 16 });
    } finally {
      await agent.stop();
    }
  });
});

describe('queue bound (batching.maxQueueSize)', () => {
  let agent: RunningAgent;
  let repository: string;
  // x [5000, 8] FP32: a 160 kB body but a 5000x5000 Gram matrix. Timed when this was written: ≈40 ms a run on an
  // idle two-core box (more under load), while a burst of such small bodies arrives within a few ms, before the
  // first run ends; of 8, typically 3 are admitted and 5 shed. (A 1500x1500 input works too, but sends 9 MB a request.)
  const N = 5000;
  const M = 8;
  const x = new Float32Array(N * M).fill(0.01);
  const expectedY = M * (N * 0.01) ** 2; // Σ_ij (x·xᵀ)_ij = Σ_k (Σ_i x_ik)²

  beforeAll(async () => {
    // The slow model's generated manifest sets its own max_queue_size (16), which takes precedence over the
    // config (docs/api.md); without a batching section the config's batching.maxQueueSize applies.
    repository = mkdtempSync(path.join(os.tmpdir(), 'outpost-queue-repo-'));
    cpSync(path.join(GENERATED_REPOSITORY, 'slow'), path.join(repository, 'slow'), { recursive: true });
    const manifestPath = path.join(repository, 'slow', '1', 'manifest.json');
    const { batching: _dropped, ...manifest } = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(manifestPath, JSON.stringify(manifest));
    agent = await startAgent({ repository, config: { batching: { maxQueueSize: 2 } } });
  });
  afterAll(async () => {
    await agent?.stop();
    if (repository) rmSync(repository, { recursive: true, force: true });
  });

  const infer = (): Promise<InferReply> =>
    postBinary(`${agent.url}/v2/models/slow/infer`, { inputs: [{ name: 'x', datatype: 'FP32', shape: [N, M], parameters: { binary_data_size: x.byteLength } }] }, [bytesOf(x)]);

  it('refuses requests beyond the bound with 503 AGENT_OVERLOADED and Retry-After, while admitted ones succeed', async () => {
    const replies = await Promise.all(Array.from({ length: 8 }, infer));
    const ok = replies.filter((r) => r.status === 200);
    const shed = replies.filter((r) => r.status === 503);
    expect(ok.length + shed.length, JSON.stringify(replies.map((r) => [r.status, r.json]))).toBe(8);
    // The first three to arrive are always admitted (one running, two waiting); the burst overflows the rest.
    expect(ok.length).toBeGreaterThanOrEqual(3);
    expect(shed.length).toBeGreaterThanOrEqual(1);
    for (const r of ok) {
      const y = r.outputs.y!.data as number[];
      expect(y).toHaveLength(1);
      // A float32 reduction over 25 million terms: right to within a percent, not to the last digit.
      expect(Math.abs(y[0]! - expectedY) / expectedY).toBeLessThan(1e-2);
    }
    for (const r of shed) {
      expect(r.json).toMatchObject({ code: 'AGENT_OVERLOADED' });
      expect(r.headers.get('retry-after')).toBe('1');
    }
    const m = (await scrape(agent.url)).samples;
    expect(value(m, 'outpost_inference_failures_total', { model: 'slow', version: '1', code: 'AGENT_OVERLOADED' })).toBe(shed.length);
    expect(value(m, 'outpost_inference_pending_requests', { model: 'slow', version: '1' })).toBe(0);
    // Shedding is momentary: once the queue has drained, the model serves again.
    expect((await infer()).status).toBe(200);
  });
});

describe('lifetime request counters', () => {
  it('survive a restart on the same data directory', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'outpost-counters-'));
    try {
      const first = await startAgent({ models: ['simple'], config: { dataDir } });
      try {
        for (let k = 0; k < 5; k++) expect((await postJson(`${first.url}/v2/models/simple/infer`, simpleRequest(k).body)).status).toBe(200);
        const bad = await postJson(`${first.url}/v2/models/simple/infer`, { inputs: [{ name: 'INPUT0', datatype: 'INT32', shape: [1, WIDTH], data: Array(WIDTH).fill(0) }] });
        expect(bad.json.code).toBe('AGENT_MISSING_INPUT');
      } finally {
        await first.stop();
      }
      expect(existsSync(path.join(dataDir, 'agent.db'))).toBe(true);

      const second = await startAgent({ models: ['simple'], config: { dataDir } });
      try {
        const counters = async () => ((await (await fetch(`${second.url}/status`)).json()) as { requests: unknown[] }).requests;
        expect(await counters()).toEqual([{ name: 'simple', version: 2, requests: 6, failures: 1 }]);
        // A new process starts its Prometheus counters at zero; the lifetime ones continue.
        expect(samples((await scrape(second.url)).samples, 'outpost_inference_requests_total', SIMPLE)).toEqual([]);
        expect((await postJson(`${second.url}/v2/models/simple/infer`, simpleRequest(9).body)).status).toBe(200);
        expect(await counters()).toEqual([{ name: 'simple', version: 2, requests: 7, failures: 1 }]);
      } finally {
        await second.stop();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('models that fail to load', () => {
  let agent: RunningAgent;
  let repository: string;
  let m: Sample[];

  beforeAll(async () => {
    repository = mkdtempSync(path.join(os.tmpdir(), 'outpost-broken-repo-'));
    cpSync(path.join(GENERATED_REPOSITORY, 'simple'), path.join(repository, 'simple'), { recursive: true });
    const simpleManifest = JSON.parse(readFileSync(path.join(GENERATED_REPOSITORY, 'simple', '2', 'manifest.json'), 'utf8')) as Record<string, unknown>;

    // broken: garbage bytes where the ONNX file should be, with a manifest that vouches for exactly those
    // bytes, so the failure is onnxruntime's (a file corrupted before it was published), not the checksum's.
    cpSync(path.join(GENERATED_REPOSITORY, 'simple', '2'), path.join(repository, 'broken', '1'), { recursive: true });
    const garbage = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) % 256));
    writeFileSync(path.join(repository, 'broken', '1', 'model.onnx'), garbage);
    writeFileSync(path.join(repository, 'broken', '1', 'manifest.json'), JSON.stringify({ ...simpleManifest, name: 'broken', version: 1, sha256: createHash('sha256').update(garbage).digest('hex') }));

    // tampered: a good model whose manifest promises different bytes.
    cpSync(path.join(GENERATED_REPOSITORY, 'simple', '2'), path.join(repository, 'tampered', '1'), { recursive: true });
    writeFileSync(path.join(repository, 'tampered', '1', 'manifest.json'), JSON.stringify({ ...simpleManifest, name: 'tampered', version: 1, sha256: 'ab'.repeat(32) }));

    agent = await startAgent({ repository });
    m = (await scrape(agent.url)).samples;
  });
  afterAll(async () => {
    await agent?.stop();
    if (repository) rmSync(repository, { recursive: true, force: true });
  });

  it('a corrupt model.onnx is not ready (503 with the error) and counted as a failed load, while the others serve', async () => {
    const res = await fetch(`${agent.url}/v2/models/broken/ready`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ name: 'broken', version: '1', ready: false, state: 'failed', error: expect.stringMatching(/ONNX/) });
    expect(value(m, 'outpost_model_ready', { model: 'broken', version: '1' })).toBe(0);
    expect(value(m, 'outpost_model_load_failures_total', { model: 'broken', version: '1' })).toBe(1);

    const infer = await postJson(`${agent.url}/v2/models/broken/infer`, simpleRequest(0).body);
    expect(infer.status).toBe(503);
    expect(infer.json.code).toBe('AGENT_MODEL_NOT_READY');

    expect(value(m, 'outpost_model_ready', SIMPLE)).toBe(1);
    expect(samples(m, 'outpost_model_load_failures_total', SIMPLE)).toEqual([]);
    const ok = await postJson(`${agent.url}/v2/models/simple/infer`, simpleRequest(3).body);
    expect(ok.status).toBe(200);
    expect(ok.outputs.OUTPUT0!.data).toEqual(simpleRequest(3).sum);
  });

  it('a manifest whose sha256 does not match model.onnx keeps the version from serving', async () => {
    const res = await fetch(`${agent.url}/v2/models/tampered/ready`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ ready: false, state: 'failed', error: expect.stringContaining('sha256') });
    expect(value(m, 'outpost_model_ready', { model: 'tampered', version: '1' })).toBe(0);
    expect(value(m, 'outpost_model_load_failures_total', { model: 'tampered', version: '1' })).toBe(1);

    const status = (await (await fetch(`${agent.url}/status`)).json()) as { models: { name: string; state: string; error: string | null }[] };
    expect(status.models.map((x) => [x.name, x.state])).toEqual([['broken', 'failed'], ['simple', 'ready'], ['tampered', 'failed']]);
  });
});
