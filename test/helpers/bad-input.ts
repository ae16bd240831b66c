/**
 * Shared by the bad-input tests (bad-input-json, bad-input-images, bad-input-routing-timeouts,
 * body-limits): model metadata types, binary-extension and image posts, the check that a refusal left
 * the agent serving, and the five-model agent the per-refusal tests share.
 */
import { expect } from 'vitest';
import { encodeScene, SHAPES_720P } from '../../models/samples.js';
import { SIMPLE_V2_OFFSET } from '../../models/simple.js';
import { startAgent, type RunningAgent } from './agent.js';
import { postJsonRaw, rawRequest, type RawReply } from './raw-http.js';
import { A, VALID_SIMPLE } from './simple-model.js';

export interface TensorMeta { name: string; datatype: string; shape: number[] }
export interface ModelMeta { name: string; inputs: TensorMeta[]; outputs: TensorMeta[]; parameters: Record<string, unknown> }
export interface Detection { label: string; score: number; box: { x1: number; y1: number; x2: number; y2: number } }

/** A binary-extension body: JSON header then raw bytes; returns the body and the header's length. */
export function binaryBody(header: unknown, ...parts: ArrayBufferView[]): { body: Buffer; headerLength: number } {
  const head = Buffer.from(JSON.stringify(header));
  return { body: Buffer.concat([head, ...parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))]), headerLength: head.length };
}

export function postBinaryRaw(url: string, header: unknown, parts: ArrayBufferView[], headerLength?: string): Promise<RawReply> {
  const b = binaryBody(header, ...parts);
  return rawRequest(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': headerLength ?? String(b.headerLength) }, body: b.body });
}

/** A valid request right after a refusal gets the right answer: the refusal left nothing broken behind. */
export async function expectStillServes(baseUrl: string, parameters?: Record<string, unknown>): Promise<void> {
  const r = await postJsonRaw(`${baseUrl}/v2/models/simple/infer`, { ...VALID_SIMPLE, ...(parameters ? { parameters } : {}) });
  expect(r.status, r.body.toString().slice(0, 300)).toBe(200);
  const { model_version: version, outputs } = r.json as { model_version: string; outputs: { name: string; data: number[] }[] };
  const offset = version === '2' ? SIMPLE_V2_OFFSET : 0;
  expect(outputs.find((o) => o.name === 'OUTPUT0')?.data).toEqual(A.map((v) => v + 1 + offset));
  expect(outputs.find((o) => o.name === 'OUTPUT1')?.data).toEqual(A.map((v) => v - 1));
}

export async function metadata(baseUrl: string, model: string): Promise<ModelMeta> {
  const r = await rawRequest(`${baseUrl}/v2/models/${model}`);
  expect(r.status).toBe(200);
  return r.json as ModelMeta;
}

export function postImage(url: string, bytes: Uint8Array, type = 'image/jpeg'): Promise<RawReply> {
  return rawRequest(url, { method: 'POST', headers: { 'content-type': type }, body: bytes });
}

/** The agent the per-refusal tests share, what they read from it, and its endpoint URLs. */
export interface RefusalAgent {
  agent: RunningAgent;
  url: string;
  slow: ModelMeta;
  shapes: ModelMeta;
  scene: Buffer;
  infer: (model?: string) => string;
  detect: (query?: string) => string;
}

/** Starts the agent with every demo model, reads slow's and demo-shapes' metadata, and checks it serves. */
export async function startRefusalAgent(): Promise<RefusalAgent> {
  const agent = await startAgent({ models: ['simple', 'slow', 'identity', 'demo-shapes', 'demo-color'] });
  try {
    const url = agent.url;
    const slow = await metadata(url, 'slow');
    const shapes = await metadata(url, 'demo-shapes');
    const scene = await encodeScene(SHAPES_720P, 'jpeg');
    await expectStillServes(url);
    return {
      agent,
      url,
      slow,
      shapes,
      scene,
      infer: (model = 'simple') => `${url}/v2/models/${model}/infer`,
      detect: (query = '') => `${url}/v1/models/demo-shapes/detect${query}`,
    };
  } catch (err) {
    await agent.stop();
    throw err;
  }
}
