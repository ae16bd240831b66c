/**
 * HTTP abuse against a real agent (research note §5.6): slowloris and slow bodies cut by the server's own
 * timeouts (H3), a request flood shed by the bounded queue (H5), and a seeded fuzz run of malformed
 * requests across every endpoint (H2/H4; Triton's L0_http_fuzz criterion: no crash, no dropped
 * connection, every refusal a documented error).
 */
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_ERRORS } from '../../agent/src/errors.js';
import { KSERVE_DATATYPES } from '../../shared/src/manifest.js';
import { encodeScene, SHAPES_720P } from '../../models/samples.js';
import { SIMPLE_V2_OFFSET } from '../../models/simple.js';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { GENERATED_REPOSITORY } from '../helpers/paths.js';
import { expectRefusal, postJsonRaw, rawRequest, refusalOf, type RawReply } from '../helpers/raw-http.js';

const A = Array.from({ length: 16 }, (_, i) => i);
const simpleRequest = (offset = 0) => ({
  inputs: [
    { name: 'INPUT0', shape: [1, 16], datatype: 'INT32', data: A.map((v) => v + offset) },
    { name: 'INPUT1', shape: [1, 16], datatype: 'INT32', data: A.map(() => 1) },
  ],
});

/**
 * True when `reply` is the `simple` model's right answer to simpleRequest(offset): OUTPUT0 = INPUT0 + INPUT1
 * (+ SIMPLE_V2_OFFSET from version 2, the one served under the default 'latest' policy), OUTPUT1 = INPUT0 − INPUT1.
 */
function isSimpleAnswer(reply: RawReply, offset: number): boolean {
  const json = reply.json as { model_version?: string; outputs?: { name: string; data: number[] }[] } | undefined;
  const o0 = json?.outputs?.find((o) => o.name === 'OUTPUT0')?.data;
  const o1 = json?.outputs?.find((o) => o.name === 'OUTPUT1')?.data;
  const v2 = json?.model_version === '2' ? SIMPLE_V2_OFFSET : 0;
  return reply.status === 200 && JSON.stringify(o0) === JSON.stringify(A.map((v) => v + offset + 1 + v2)) && JSON.stringify(o1) === JSON.stringify(A.map((v) => v + offset - 1));
}

async function expectStillServes(baseUrl: string): Promise<void> {
  const r = await postJsonRaw(`${baseUrl}/v2/models/simple/infer`, simpleRequest(5));
  expect(isSimpleAnswer(r, 5), `${r.status} ${r.body.toString().slice(0, 300)}`).toBe(true);
  const live = await rawRequest(`${baseUrl}/v2/health/live`);
  expect(live.status).toBe(200);
}

/** Nearest-rank percentile. */
function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

describe('slowloris and slow bodies (H3) are cut by the server', () => {
  const HEADERS_TIMEOUT_MS = 2000;
  const REQUEST_TIMEOUT_MS = 3000;
  /** Node checks for expired requests on an interval; the agent keeps it well under the timeouts. */
  const CUT_SLACK_MS = 2500;
  /** The client gives up on its own only after this, so a close before it is the server's doing. */
  const CLIENT_CAP_MS = 15_000;
  let agent: RunningAgent;
  let port: number;

  beforeAll(async () => {
    agent = await startAgent({ models: ['simple'], config: { http: { headersTimeoutMs: HEADERS_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS } } });
    port = Number(new URL(agent.url).port);
  });
  afterAll(async () => {
    await agent?.stop();
  });

  interface Trickle {
    connected: Promise<void>;
    closed: Promise<{ ms: number; received: string; byServer: boolean }>;
    isClosed(): boolean;
  }

  /** A raw socket that sends `opening`, then one `drip` every `everyMs`, until the server closes it. */
  function trickle(opening: string, drip: string, everyMs: number): Trickle {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    let closed = false;
    let capped = false;
    let openedAt = 0;
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', () => undefined);
    const connected = new Promise<void>((resolve) => socket.once('connect', () => {
      openedAt = performance.now();
      socket.write(opening);
      resolve();
    }));
    const dripTimer = setInterval(() => {
      if (!socket.destroyed && socket.writable) socket.write(drip);
    }, everyMs);
    const cap = setTimeout(() => {
      capped = true;
      socket.destroy();
    }, CLIENT_CAP_MS);
    const done = new Promise<{ ms: number; received: string; byServer: boolean }>((resolve) => socket.once('close', () => {
      closed = true;
      clearInterval(dripTimer);
      clearTimeout(cap);
      resolve({ ms: performance.now() - openedAt, received, byServer: !capped });
    }));
    return { connected, closed: done, isClosed: () => closed };
  }

  /** The refusal the server wrote before closing: status and the catalog JSON body. */
  function parseRaw(received: string): { status: number; json: unknown } {
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0);
    const body = received.slice(received.indexOf('\r\n\r\n') + 4);
    try {
      return { status, json: JSON.parse(body) };
    } catch {
      return { status, json: undefined };
    }
  }

  /** `n` sequential valid requests on one keep-alive socket; their latencies in ms. */
  async function wellBehaved(n: number, keepAlive: http.Agent): Promise<number[]> {
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const r = await postJsonRaw(`${agent.url}/v2/models/simple/infer`, simpleRequest(i), { agent: keepAlive, timeoutMs: 10_000 });
      expect(isSimpleAnswer(r, i), r.body.toString().slice(0, 200)).toBe(true);
      ms.push(r.ms);
    }
    return ms;
  }

  it('50 sockets trickling their headers are closed at headersTimeoutMs with 408, while a well-behaved client keeps its latency', async () => {
    const fdsBefore = openFds();
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      await wellBehaved(10, keepAlive); // warm-up: JIT, the session's first runs
      const baseline = await wellBehaved(30, keepAlive);

      const attackers = Array.from({ length: 50 }, () =>
        trickle('POST /v2/models/simple/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: ', 'a', 200),
      );
      await Promise.all(attackers.map((a) => a.connected));
      const during = await wellBehaved(30, keepAlive);
      const stillOpen = attackers.filter((a) => !a.isClosed()).length;
      const results = await Promise.all(attackers.map((a) => a.closed));

      const p99Baseline = percentile(baseline, 99);
      const p99During = percentile(during, 99);
      // A floor on the baseline: single sub-millisecond requests on a shared 2-core box jitter by a few ms
      // from scheduling alone, which says nothing about the attack.
      const ratio = p99During / Math.max(p99Baseline, 5);
      console.info(`[slowloris] well-behaved p99 baseline ${p99Baseline.toFixed(2)} ms, during attack ${p99During.toFixed(2)} ms (ratio ${ratio.toFixed(2)}); attackers closed after ${Math.min(...results.map((r) => r.ms)).toFixed(0)}–${Math.max(...results.map((r) => r.ms)).toFixed(0)} ms`);

      // The measurement overlapped the attack: every attacker was still connected when it ended.
      expect(stillOpen).toBe(50);
      expect(ratio, `latencies (ms) baseline ${baseline.map((v) => v.toFixed(1)).join(' ')} | during ${during.map((v) => v.toFixed(1)).join(' ')}`).toBeLessThan(3);
      for (const r of results) {
        expect(r.byServer, 'socket still open when the client gave up: the server did not enforce headersTimeoutMs').toBe(true);
        expect(r.ms).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS * 0.9);
        expect(r.ms).toBeLessThan(HEADERS_TIMEOUT_MS + CUT_SLACK_MS);
        const { status, json } = parseRaw(r.received);
        expect(status, r.received.slice(0, 200)).toBe(408);
        expect(json).toMatchObject({ code: 'AGENT_REQUEST_TIMEOUT' });
        expect(typeof (json as { error: unknown }).error).toBe('string');
      }
      const fdsAfter = openFds();
      if (fdsBefore !== undefined && fdsAfter !== undefined) expect(fdsAfter).toBeLessThanOrEqual(fdsBefore + 5);
    } finally {
      keepAlive.destroy();
    }
    await expectStillServes(agent.url);
  });

  it('a body trickled after complete headers is cut at requestTimeoutMs with 408 AGENT_REQUEST_TIMEOUT', async () => {
    const attackers = Array.from({ length: 10 }, () =>
      trickle('POST /v2/models/simple/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"inputs": [', ' ', 100),
    );
    await Promise.all(attackers.map((a) => a.connected));
    // The agent answers others while the bodies trickle.
    await expectStillServes(agent.url);
    const results = await Promise.all(attackers.map((a) => a.closed));
    for (const r of results) {
      expect(r.byServer, 'socket still open when the client gave up: the server did not enforce requestTimeoutMs').toBe(true);
      expect(r.ms).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS * 0.9);
      expect(r.ms).toBeLessThan(REQUEST_TIMEOUT_MS + CUT_SLACK_MS);
      const { status, json } = parseRaw(r.received);
      expect(status, r.received.slice(0, 200)).toBe(408);
      expect(json).toMatchObject({ code: 'AGENT_REQUEST_TIMEOUT' });
    }
    await expectStillServes(agent.url);
  });
});

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

describe('fuzz (H2/H4): seeded malformed requests across every endpoint', () => {
  const SEED = 20261122;
  const RUNS = 3200;
  const CONCURRENCY = 6;
  let agent: RunningAgent;
  let images: { jpeg: Buffer; png: Buffer };
  const MODEL_INPUTS: Record<string, { name: string; datatype: string; shape: number[] }[]> = {};

  beforeAll(async () => {
    agent = await startAgent({ models: ['simple', 'slow', 'identity', 'demo-shapes', 'demo-color'], config: { limits: { maxBodyBytes: 1024 * 1024 } } });
    for (const m of ['simple', 'slow', 'identity', 'demo-shapes', 'demo-color']) {
      MODEL_INPUTS[m] = ((await rawRequest(`${agent.url}/v2/models/${m}`)).json as { inputs: { name: string; datatype: string; shape: number[] }[] }).inputs;
    }
    const scene = await encodeScene(SHAPES_720P, 'jpeg');
    images = {
      jpeg: await sharp(scene).resize(160, 90).jpeg({ quality: 80 }).toBuffer(),
      png: await sharp(scene).resize(160, 90).png().toBuffer(),
    };
  });
  afterAll(async () => {
    await agent?.stop();
  });

  interface Case {
    kind: string;
    method: string;
    path: string;
    headers: Record<string, string>;
    body: Buffer | undefined;
  }

  const MODELS = ['simple', 'slow', 'identity', 'demo-shapes', 'demo-color'];
  const ANY_MODEL = fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...MODELS) },
    { weight: 1, arbitrary: fc.constantFrom('nope', 'SIMPLE', 'simple ', '..', '.hidden', 'a'.repeat(300), '%2e%2e', '%00', 'simple%2Finfer', '%zz', '%', '%E0%A4%A', encodeURIComponent('😀')) },
    { weight: 1, arbitrary: fc.string({ maxLength: 20 }).map((s) => encodeURIComponent(s)) },
  );
  const VERSION = fc.oneof(
    fc.constantFrom('1', '2', '0', '-1', '01', 'abc', '99999999999', '1.5', '%20', '1e3', '0x1', '4294967297'),
    fc.integer({ min: 0, max: 1_000_000 }).map(String),
  );
  const CONTENT_TYPE = fc.constantFrom(
    'application/json', 'application/octet-stream', 'image/jpeg', 'image/png', 'image/webp', 'text/plain', 'multipart/form-data',
    'multipart/form-data; boundary=xyz', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', '*/*', 'image/gif',
    'application/json; charset=latin1', 'image/jpeg; q=0.5', 'APPLICATION/JSON', 'x', '',
  );
  const DATATYPE = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...KSERVE_DATATYPES) }, { weight: 1, arbitrary: fc.constantFrom('FLOAT', 'int32', '', 'FP8', 'BYTES ', 'STRING') });
  const DIM = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 20 }) },
    { weight: 1, arbitrary: fc.constantFrom(-1, -2, 16, 2 ** 31, 2 ** 32 + 16, 2 ** 53, 1e300, 0.5, 3.0000001) },
  );
  const SCALAR = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: -300, max: 300 }) },
    { weight: 2, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
    { weight: 1, arbitrary: fc.constantFrom(null, true, false, 'x', '1', 1e308, -1e308, 2 ** 63, -(2 ** 31) - 1, 4294967296, [], {}, [1, [2]]) },
  );
  const PARAMS = fc.dictionary(
    fc.constantFrom('binary_data_size', 'binary_data_output', 'binary_data', 'timeout_ms', 'x'),
    fc.oneof(fc.integer({ min: -5, max: 5000 }), fc.boolean(), fc.constantFrom('1', 1e12, 0.5, null)),
    { maxKeys: 3 },
  );

  /** A structured KServe request with random names, shapes, datatypes, data, parameters and outputs. */
  const structuredInfer = fc
    .record({
      model: ANY_MODEL,
      version: fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: VERSION }),
      inputs: fc.array(
        fc.record(
          {
            name: fc.oneof(fc.constantFrom('INPUT0', 'INPUT1', 'x', 'images', 'input', 'x_fp32'), fc.string({ maxLength: 8 })),
            shape: fc.oneof({ weight: 5, arbitrary: fc.array(DIM, { maxLength: 4 }) }, { weight: 1, arbitrary: SCALAR }),
            datatype: DATATYPE,
            data: fc.oneof({ weight: 4, arbitrary: fc.array(SCALAR, { maxLength: 40 }) }, { weight: 1, arbitrary: SCALAR }),
            parameters: PARAMS,
          },
          { requiredKeys: ['name'] },
        ),
        { maxLength: 4 },
      ),
      outputs: fc.option(fc.array(fc.record({ name: fc.oneof(fc.constantFrom('OUTPUT0', 'OUTPUT1', 'y', 'output0'), fc.string({ maxLength: 6 })), parameters: PARAMS }), { maxLength: 3 }), { nil: undefined }),
      parameters: fc.option(PARAMS, { nil: undefined }),
      id: fc.option(fc.oneof(fc.string({ maxLength: 10 }), fc.integer()), { nil: undefined }),
    })
    .map(({ model, version, inputs, outputs, parameters, id }): Case => ({
      kind: 'structured',
      method: 'POST',
      path: `/v2/models/${model}${version !== undefined ? `/versions/${version}` : ''}/infer`,
      headers: { 'content-type': 'application/json' },
      body: Buffer.from(JSON.stringify({ ...(id !== undefined ? { id } : {}), inputs, ...(outputs ? { outputs } : {}), ...(parameters ? { parameters } : {}) })),
    }));

  /** A request for the model's real inputs with consistent shapes and data, so mutations land deep in validation. */
  function validRequestFor(model: string, rows: number): Record<string, unknown> {
    return {
      inputs: MODEL_INPUTS[model]!.map((i) => {
        const shape = i.shape.map((d, at) => (d >= 0 ? d : at === 0 ? rows : 3));
        const count = shape.reduce((a, b) => a * b, 1);
        if (count > 4096) return { name: i.name, shape: [1], datatype: 'BYTES', data: [images.jpeg.toString('base64')] };
        return { name: i.name, shape, datatype: i.datatype, data: Array.from({ length: count }, (_, j) => (i.datatype === 'BOOL' ? j % 2 === 0 : j % 5)) };
      }),
    };
  }

  /** Text mutations of a valid request: cut, insert, replace, duplicate. */
  const mutatedJson = fc
    .record({
      model: fc.constantFrom(...MODELS),
      rows: fc.integer({ min: 1, max: 3 }),
      edits: fc.array(
        fc.record({
          op: fc.constantFrom('delete', 'insert', 'replace', 'duplicate'),
          at: fc.double({ min: 0, max: 1, noNaN: true }),
          len: fc.integer({ min: 1, max: 12 }),
          text: fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('"', '[', ']', '{', '}', ',', ':', '-', '1e999', 'null', '"__proto__":{}', 'NaN', '\\u0000', '[[[[[[[[')),
        }),
        { minLength: 1, maxLength: 4 },
      ),
      contentType: CONTENT_TYPE,
    })
    .map(({ model, rows, edits, contentType }): Case => {
      let text = JSON.stringify(validRequestFor(model, rows));
      for (const e of edits) {
        const at = Math.floor(e.at * text.length);
        if (e.op === 'delete') text = text.slice(0, at) + text.slice(at + e.len);
        else if (e.op === 'insert') text = text.slice(0, at) + e.text + text.slice(at);
        else if (e.op === 'replace') text = text.slice(0, at) + e.text + text.slice(at + e.text.length);
        else text = text.slice(0, at) + text.slice(at, at + e.len * 4) + text.slice(at);
      }
      return { kind: 'mutated-json', method: 'POST', path: `/v2/models/${model}/infer`, headers: { 'content-type': contentType }, body: Buffer.from(text) };
    });

  /** Binary-extension framing with random sizes, header lengths and payload bytes. */
  const binaryFrames = fc
    .record({
      model: fc.constantFrom(...MODELS),
      sizes: fc.array(fc.oneof(fc.integer({ min: 0, max: 256 }), fc.constantFrom(-1, 64, 2 ** 40, 0.5)), { minLength: 1, maxLength: 3 }),
      datatype: DATATYPE,
      shape: fc.array(DIM, { maxLength: 3 }),
      payload: fc.uint8Array({ maxLength: 300 }),
      headerDelta: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -40, max: 400 }) }),
      headerJunk: fc.option(fc.constantFrom('abc', '', ' 12', '1e2', '-0', '999999999999999', '0x10'), { nil: undefined }),
    })
    .map(({ model, sizes, datatype, shape, payload, headerDelta, headerJunk }): Case => {
      const names = MODEL_INPUTS[model]!.map((i) => i.name);
      const head = Buffer.from(JSON.stringify({ inputs: sizes.map((s, i) => ({ name: names[i % names.length], shape, datatype, parameters: { binary_data_size: s } })) }));
      return {
        kind: 'binary',
        method: 'POST',
        path: `/v2/models/${model}/infer`,
        headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': headerJunk ?? String(head.length + headerDelta) },
        body: Buffer.concat([head, Buffer.from(payload)]),
      };
    });

  /** Images: mutated or truncated real JPEG/PNG, or random bytes, to detect/classify, with random queries and types. */
  const imageBodies = fc
    .record({
      base: fc.constantFrom('jpeg', 'png', 'random'),
      flips: fc.array(fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true }), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 6 }),
      cut: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
      random: fc.uint8Array({ maxLength: 2000 }),
      endpoint: fc.constantFrom('detect', 'classify'),
      model: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('demo-shapes', 'demo-color') }, { weight: 1, arbitrary: ANY_MODEL }),
      contentType: fc.oneof({ weight: 3, arbitrary: fc.constantFrom('image/jpeg', 'image/png', 'application/octet-stream', 'image/webp') }, { weight: 1, arbitrary: CONTENT_TYPE }),
      query: fc.option(
        fc.tuple(fc.constantFrom('confidence', 'iou', 'max_detections', 'top_k', 'x'), fc.oneof(fc.constantFrom('0', '1', '2', '-1', 'NaN', '', 'Infinity', '1e-9', '0.5', '10000', '10001', '%00'), fc.string({ maxLength: 4 }).map(encodeURIComponent))),
        { nil: undefined },
      ),
    })
    .map(({ base, flips, cut, random, endpoint, model, contentType, query }): Case => {
      let bytes = base === 'random' ? Buffer.from(random) : Buffer.from(base === 'jpeg' ? images.jpeg : images.png);
      for (const f of flips) if (bytes.length > 0) bytes[Math.floor(f.at * (bytes.length - 1))] = f.value;
      if (cut !== undefined) bytes = bytes.subarray(0, Math.floor(cut * bytes.length));
      return {
        kind: 'image',
        method: 'POST',
        path: `/v1/models/${model}/${endpoint}${query ? `?${query[0]}=${query[1]}` : ''}`,
        headers: contentType === '' ? {} : { 'content-type': contentType },
        body: bytes,
      };
    });

  /** Random bytes with a random content type to any POST endpoint. */
  const randomBytes = fc
    .record({
      path: fc.constantFrom('/v2/models/simple/infer', '/v2/models/slow/infer', '/v2/models/demo-shapes/infer', '/v1/models/demo-shapes/detect', '/v1/models/demo-color/classify', '/v2/models/identity/versions/1/infer'),
      contentType: CONTENT_TYPE,
      body: fc.uint8Array({ maxLength: 3000 }),
      ihcl: fc.option(fc.oneof(fc.integer({ min: 0, max: 3000 }).map(String), fc.constantFrom('x', '-1', '')), { nil: undefined }),
    })
    .map(({ path, contentType, body, ihcl }): Case => ({
      kind: 'random-bytes',
      method: 'POST',
      path,
      headers: { ...(contentType === '' ? {} : { 'content-type': contentType }), ...(ihcl !== undefined ? { 'inference-header-content-length': ihcl } : {}) },
      body: Buffer.from(body),
    }));

  /** Random URLs, versions and methods over the whole route table. */
  const randomUrls = fc
    .record({
      method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'),
      route: fc.constantFrom('infer', 'ready', 'meta', 'detect', 'classify', 'health', 'v2', 'metrics', 'status', 'random'),
      model: ANY_MODEL,
      version: fc.option(VERSION, { nil: undefined }),
      junk: fc.array(fc.string({ maxLength: 8 }).map(encodeURIComponent), { maxLength: 4 }),
      query: fc.option(fc.string({ maxLength: 12 }).map((s) => encodeURIComponent(s).replace(/%3D/g, '=')), { nil: undefined }),
      body: fc.option(fc.uint8Array({ maxLength: 64 }), { nil: undefined }),
    })
    .map(({ method, route, model, version, junk, query, body }): Case => {
      const v = version !== undefined ? `/versions/${version}` : '';
      const paths: Record<string, string> = {
        infer: `/v2/models/${model}${v}/infer`, ready: `/v2/models/${model}${v}/ready`, meta: `/v2/models/${model}${v}`,
        detect: `/v1/models/${model}${v}/detect`, classify: `/v1/models/${model}${v}/classify`, health: `/v2/health/${junk[0] ?? 'live'}`,
        v2: '/v2', metrics: '/metrics', status: '/status', random: `/${junk.join('/')}`,
      };
      const sendBody = body !== undefined && method !== 'GET' && method !== 'OPTIONS';
      return { kind: 'url', method, path: paths[route]! + (query ? `?${query}` : ''), headers: sendBody ? { 'content-type': 'application/json' } : {}, body: sendBody ? Buffer.from(body) : undefined };
    });

  /** Little-endian encoders for the binary extension (the datatypes a test can fill from JS numbers). */
  const BINARY: Record<string, (values: number[]) => ArrayBufferView> = {
    FP32: (v) => new Float32Array(v), FP64: (v) => new Float64Array(v), INT32: (v) => new Int32Array(v), INT16: (v) => new Int16Array(v),
    INT8: (v) => new Int8Array(v), UINT8: (v) => new Uint8Array(v), UINT16: (v) => new Uint16Array(v), UINT32: (v) => new Uint32Array(v),
  };

  /**
   * Near-valid requests: a correct request for the model's real inputs with 0–3 targeted perturbations, optionally
   * re-encoded with the binary extension (sizes sometimes off, a NaN sometimes slipped in), so most cases get past
   * the JSON and schema checks and land in the per-tensor validation and the session.
   */
  const perturbed = fc
    .record({
      model: fc.constantFrom(...MODELS),
      rows: fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.integer({ min: 4, max: 12 }) }),
      edits: fc.array(
        fc.record({
          op: fc.constantFrom('datatype', 'dim', 'rank+', 'rank-', 'data+', 'data-', 'value', 'rename', 'drop', 'duplicate', 'outputs', 'parameters', 'image'),
          which: fc.nat(),
          at: fc.nat(),
          datatype: DATATYPE,
          dim: DIM,
          value: SCALAR,
          name: fc.oneof(fc.constantFrom('INPUT0', 'INPUT1', 'x', 'images', 'input', 'x_fp32', 'x_int64', 'x_bool'), fc.string({ maxLength: 6 })),
          outputs: fc.array(fc.record({ name: fc.constantFrom('OUTPUT0', 'OUTPUT1', 'y', 'output0', 'logits', 'y_fp16', 'nope'), parameters: PARAMS }), { maxLength: 3 }),
          parameters: PARAMS,
          image: fc.oneof(fc.constant(''), fc.constant('!!!'), fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString('base64'))),
        }),
        { maxLength: 3 },
      ),
      binary: fc.oneof(
        { weight: 2, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: fc.record({ delta: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }) }), nan: fc.boolean() }) },
      ),
    })
    .map(({ model, rows, edits, binary }): Case => {
      const req = validRequestFor(model, rows) as { inputs: Record<string, unknown>[]; outputs?: unknown; parameters?: unknown };
      for (const e of edits) {
        const input = req.inputs[e.which % Math.max(1, req.inputs.length)];
        const shape = input?.shape as number[] | undefined;
        const data = input?.data as unknown[] | undefined;
        if (e.op === 'outputs') req.outputs = e.outputs;
        else if (e.op === 'parameters') req.parameters = e.parameters;
        else if (!input) continue;
        else if (e.op === 'datatype') input.datatype = e.datatype;
        else if (e.op === 'dim' && shape && shape.length > 0) shape[e.at % shape.length] = e.dim;
        else if (e.op === 'rank+' && shape) shape.push(1);
        else if (e.op === 'rank-' && shape) shape.pop();
        else if (e.op === 'data+' && data) data.push(e.value);
        else if (e.op === 'data-' && data) data.pop();
        else if (e.op === 'value' && data && data.length > 0) data[e.at % data.length] = e.value;
        else if (e.op === 'rename') input.name = e.name;
        else if (e.op === 'drop') req.inputs.splice(req.inputs.indexOf(input), 1);
        else if (e.op === 'duplicate') req.inputs.push({ ...input });
        else if (e.op === 'image' && input.datatype === 'BYTES' && data && data.length > 0) data[e.at % data.length] = e.image;
      }
      if (binary) {
        const parts: Buffer[] = [];
        for (const input of req.inputs) {
          const encode = BINARY[String(input.datatype)];
          const values = input.data as unknown[] | undefined;
          if (!encode || !Array.isArray(values) || !values.every((v) => typeof v === 'number')) continue;
          const numbers = values as number[];
          if (binary.nan && numbers.length > 0 && String(input.datatype).startsWith('FP')) numbers[0] = Number.NaN;
          const view = encode(numbers);
          const bytes = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
          parts.push(bytes);
          delete input.data;
          input.parameters = { binary_data_size: bytes.length + binary.delta };
        }
        const head = Buffer.from(JSON.stringify(req));
        return {
          kind: 'perturbed-binary',
          method: 'POST',
          path: `/v2/models/${model}/infer`,
          headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) },
          body: Buffer.concat([head, ...parts]),
        };
      }
      return { kind: 'perturbed', method: 'POST', path: `/v2/models/${model}/infer`, headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify(req)) };
    });

  const anyCase = fc.oneof(
    { weight: 6, arbitrary: perturbed },
    { weight: 4, arbitrary: structuredInfer },
    { weight: 4, arbitrary: mutatedJson },
    { weight: 2, arbitrary: binaryFrames },
    { weight: 2, arbitrary: imageBodies },
    { weight: 2, arbitrary: randomBytes },
    { weight: 2, arbitrary: randomUrls },
  );

  /** Why an answer breaks the contract, or undefined when it keeps it. */
  function violation(r: RawReply): string | undefined {
    if (r.status === 200) return undefined;
    if (r.status < 400 || r.status > 599) return `status ${r.status}`;
    const refusal = refusalOf(r);
    if (!refusal) return `not a JSON {error, code} body: ${r.body.subarray(0, 160).toString()}`;
    if (!Object.hasOwn(AGENT_ERRORS, refusal.code)) return `code ${refusal.code} is not in the catalog`;
    const spec = AGENT_ERRORS[refusal.code as keyof typeof AGENT_ERRORS];
    if (spec.httpStatus !== r.status) return `${refusal.code} sent with ${r.status}, catalog says ${spec.httpStatus}`;
    // Validation must catch what onnxruntime would refuse: a 500 means a check is missing.
    if (refusal.code === 'AGENT_INTERNAL' || refusal.code === 'AGENT_INFERENCE_FAILED') return `${refusal.code}: ${refusal.error}`;
    return undefined;
  }

  it(`${RUNS} seeded malformed requests: every answer is a 200 or a catalog refusal, never a dropped connection or a 500`, async () => {
    const cases = fc.sample(anyCase, { seed: SEED, numRuns: RUNS });
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const failures: string[] = [];
    const codes = new Map<string, number>();
    let ok = 0;
    let next = 0;
    const started = performance.now();
    const describeCase = (i: number, c: Case) => `#${i} ${c.kind} ${c.method} ${c.path.slice(0, 120)} ${JSON.stringify(c.headers)} body[${c.body?.length ?? 0}]=${JSON.stringify(c.body?.subarray(0, 120).toString('latin1') ?? '')}`;
    try {
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < cases.length && performance.now() - started < 120_000) {
            const i = next++;
            const c = cases[i]!;
            try {
              const r = await rawRequest(`${agent.url}${c.path}`, { method: c.method, headers: c.headers, body: c.body, agent: keepAlive, timeoutMs: 20_000 });
              const bad = violation(r);
              if (bad) failures.push(`${describeCase(i, c)} → ${bad}`);
              else if (r.status === 200) ok++;
              else {
                const code = refusalOf(r)!.code;
                codes.set(code, (codes.get(code) ?? 0) + 1);
              }
            } catch (err) {
              failures.push(`${describeCase(i, c)} → ${(err as Error).message}`);
            }
          }
        }),
      );
    } finally {
      keepAlive.destroy();
    }
    const elapsedMs = performance.now() - started;
    console.info(`[fuzz] ${next} requests in ${(elapsedMs / 1000).toFixed(1)} s: ${ok} × 200; ${[...codes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`).join(', ')}`);
    // One example per distinct reason, so a flood of one bug does not hide another.
    const byReason = new Map<string, string>();
    for (const f of failures) {
      const reason = f.slice(f.lastIndexOf(' → ') + 3).replace(/\d+/g, 'N').slice(0, 80);
      if (!byReason.has(reason)) byReason.set(reason, f);
    }
    expect([...byReason.values()].slice(0, 10), `${failures.length} failing requests`).toEqual([]);
    expect(next, 'every case was sent within the time bound').toBe(RUNS);
    // The generator reaches deep (the per-tensor checks, not only the JSON parser), and some cases are valid.
    const deep = ['AGENT_WRONG_SHAPE', 'AGENT_WRONG_DATATYPE', 'AGENT_DATA_SIZE_MISMATCH', 'AGENT_UNKNOWN_INPUT', 'AGENT_MISSING_INPUT', 'AGENT_NON_FINITE', 'AGENT_UNKNOWN_OUTPUT', 'AGENT_BAD_BINARY_HEADER', 'AGENT_IMAGE_DECODE_FAILED'];
    expect(deep.filter((c) => !codes.has(c))).toEqual([]);
    expect(codes.size).toBeGreaterThanOrEqual(16);
    expect(ok).toBeGreaterThan(100);
    await expectStillServes(agent.url);
    const ready = await rawRequest(`${agent.url}/v2/health/ready`);
    expect(ready.status).toBe(200);
    expectRefusal(await postJsonRaw(`${agent.url}/v2/models/simple/infer`, '{'), 'AGENT_MALFORMED_JSON');
  });
});
