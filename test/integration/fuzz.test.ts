/**
 * A seeded fuzz run of malformed requests across every endpoint of a real agent (research note §5.6,
 * H2/H4; Triton's L0_http_fuzz criterion: no crash, no dropped connection, every refusal a documented
 * error). The case generators are in ../helpers/fuzz-cases.ts.
 */
import http from 'node:http';
import fc from 'fast-check';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_ERRORS } from '../../agent/src/errors.js';
import { encodeScene, SHAPES_720P } from '../../models/samples.js';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { expectStillServes } from '../helpers/abuse.js';
import { fuzzCases, type Case } from '../helpers/fuzz-cases.js';
import { expectRefusal, postJsonRaw, rawRequest, refusalOf, type RawReply } from '../helpers/raw-http.js';

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
    const cases = fc.sample(fuzzCases(MODEL_INPUTS, images), { seed: SEED, numRuns: RUNS });
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
