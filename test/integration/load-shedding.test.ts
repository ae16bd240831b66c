/**
 * A request flood against a real agent (research note §5.6, H5): hundreds of concurrent requests on two
 * models against a bounded queue are each either a right answer or a 503 AGENT_OVERLOADED with
 * Retry-After, memory stays bounded, and the queues drain.
 */
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { expectStillServes } from '../helpers/abuse.js';
import { GENERATED_REPOSITORY } from '../helpers/paths.js';
import { postJsonRaw, rawRequest, refusalOf, type RawReply } from '../helpers/raw-http.js';
import { isSimpleAnswer, simpleRequest } from '../helpers/simple-model.js';

describe('request flood (H5): a bounded queue sheds load', () => {
  const QUEUE = 4;
  const CONCURRENT = 200;
  let agent: RunningAgent;
  let repository: string;

  beforeAll(async () => {
    // The generated manifests set their own max_queue_size (it wins over the config); drop it so the
    // agent's batching.maxQueueSize is what bounds the queues.
    repository = mkdtempSync(path.join(os.tmpdir(), 'outpost-flood-repo-'));
    for (const model of ['simple', 'slow']) {
      cpSync(path.join(GENERATED_REPOSITORY, model), path.join(repository, model), { recursive: true });
      for (const version of readdirSync(path.join(repository, model))) {
        const file = path.join(repository, model, version, 'manifest.json');
        const manifest = JSON.parse(readFileSync(file, 'utf8')) as { batching?: Record<string, unknown> };
        delete manifest.batching?.max_queue_size;
        writeFileSync(file, JSON.stringify(manifest));
      }
    }
    agent = await startAgent({ repository, config: { batching: { maxQueueSize: QUEUE } } });
  });
  afterAll(async () => {
    await agent?.stop();
    if (repository) rmSync(repository, { recursive: true, force: true });
  });

  it(`${CONCURRENT} concurrent requests on each of two models, queue ${QUEUE}: each is a right answer or 503 AGENT_OVERLOADED with Retry-After`, async () => {
    const meta = (await rawRequest(`${agent.url}/v2/models/slow`)).json as { inputs: { name: string }[]; outputs: { name: string }[] };
    const x = meta.inputs[0]!.name;
    const y = meta.outputs[0]!.name;
    // slow computes ReduceSum(x·xᵀ) = Σ_c (Σ_i x[i][c])². A tall, thin x costs n²·k of compute (an n×n
    // product, a few ms) for a small body (64 KiB), so requests arrive faster than they are served.
    const n = 2048;
    const k = 8;
    const data = new Float32Array(n * k).map((_, i) => ((i % 7) + 1) / 8);
    const colSums = new Float64Array(k);
    for (let i = 0; i < n * k; i++) colSums[i % k]! += data[i]!;
    const expected = colSums.reduce((s, v) => s + v * v, 0);
    const head = Buffer.from(JSON.stringify({ inputs: [{ name: x, shape: [n, k], datatype: 'FP32', parameters: { binary_data_size: data.byteLength } }] }));
    const slowBody = Buffer.concat([head, Buffer.from(data.buffer)]);

    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 2 * CONCURRENT });
    type Outcome = { model: string; kind: 'ok' | 'shed' | 'wrong'; detail: string };
    const classify = (model: string, r: RawReply, right: boolean): Outcome => {
      if (r.status === 200 && right) return { model, kind: 'ok', detail: '' };
      const refusal = refusalOf(r);
      if (r.status === 503 && refusal?.code === 'AGENT_OVERLOADED' && Number(r.headers['retry-after']) > 0) return { model, kind: 'shed', detail: '' };
      return { model, kind: 'wrong', detail: `${r.status} ${JSON.stringify(r.headers['retry-after'])} ${r.body.toString().slice(0, 200)}` };
    };
    const guard = (model: string, p: Promise<Outcome>) => p.catch((err: Error) => ({ model, kind: 'wrong' as const, detail: `no answer: ${err.message}` }));
    try {
      // Warm-up, so the sessions' first-run costs are not counted as growth.
      expect(isSimpleAnswer(await postJsonRaw(`${agent.url}/v2/models/simple/infer`, simpleRequest(0), { agent: keepAlive }), 0)).toBe(true);
      const rssBefore = process.memoryUsage().rss;
      const started = performance.now();
      const outcomes = await Promise.all([
        ...Array.from({ length: CONCURRENT }, (_, r) =>
          guard('simple', postJsonRaw(`${agent.url}/v2/models/simple/infer`, simpleRequest(r), { agent: keepAlive, timeoutMs: 30_000 }).then((res) => classify('simple', res, isSimpleAnswer(res, r)))),
        ),
        ...Array.from({ length: CONCURRENT }, () =>
          guard('slow', rawRequest(`${agent.url}/v2/models/slow/infer`, { method: 'POST', agent: keepAlive, timeoutMs: 30_000, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) }, body: slowBody })
            .then((res) => {
              const out = (res.json as { outputs?: { name: string; data: number[] }[] } | undefined)?.outputs?.find((o) => o.name === y)?.data?.[0];
              return classify('slow', res, out !== undefined && Math.abs(out - expected) <= 1e-3 * expected);
            })),
        ),
      ]);
      const elapsedMs = performance.now() - started;
      const rssGrowthMb = (process.memoryUsage().rss - rssBefore) / 1e6;
      const count = (model: string, kind: Outcome['kind']) => outcomes.filter((o) => o.model === model && o.kind === kind).length;
      console.info(`[flood] ${elapsedMs.toFixed(0)} ms; simple ${count('simple', 'ok')} ok / ${count('simple', 'shed')} shed; slow ${count('slow', 'ok')} ok / ${count('slow', 'shed')} shed; RSS growth ${rssGrowthMb.toFixed(1)} MB`);

      expect(outcomes.filter((o) => o.kind === 'wrong').slice(0, 5)).toEqual([]);
      for (const model of ['simple', 'slow']) {
        expect(count(model, 'ok'), `${model}: some requests are admitted and answered`).toBeGreaterThan(0);
        expect(count(model, 'shed'), `${model}: ${CONCURRENT} at once against a queue of ${QUEUE} must shed`).toBeGreaterThan(0);
      }
      expect(elapsedMs).toBeLessThan(30_000);
      expect(rssGrowthMb).toBeLessThan(200);
      // The queues drained: nothing is left pending once every answer is in.
      const status = (await rawRequest(`${agent.url}/status`)).json as { models: { name: string; pending: number }[] };
      expect(status.models.map((m) => [m.name, m.pending])).toEqual([['simple', 0], ['slow', 0]]);
    } finally {
      keepAlive.destroy();
    }
    await expectStillServes(agent.url);
  });
});
