/**
 * Every refusal of the agent's HTTP API, one test each, through real HTTP into a real agent with real
 * onnxruntime sessions (research note §5.6 H1, H2, H4). Each test asserts the status, the catalog code
 * and the JSON {error, code} shape, then that the agent still answers a valid request. Each bad input is
 * chosen so that without the check it guards, the request would get a different answer (usually a 200,
 * a 500 from onnxruntime or a crash), so the test fails if the check is removed.
 */
import sharp from 'sharp';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeScene, SHAPES_720P } from '../../models/samples.js';
import { SIMPLE_V2_OFFSET } from '../../models/simple.js';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { CAMERA_FRAME, cameraFrameJpeg, pixelBombPng, randomBytesSeeded, truncatedJpeg } from '../helpers/bad-images.js';
import { expectRefusal, postJsonRaw, rawRequest, type RawReply } from '../helpers/raw-http.js';
import { GENERATED_REPOSITORY, SHARED_MISSING, sharedModel } from '../helpers/paths.js';

interface TensorMeta { name: string; datatype: string; shape: number[] }
interface ModelMeta { name: string; inputs: TensorMeta[]; outputs: TensorMeta[]; parameters: Record<string, unknown> }
interface Detection { label: string; score: number; box: { x1: number; y1: number; x2: number; y2: number } }

const GIANT = sharedModel('images/giant-image.jpg');
const TRUNCATED = sharedModel('images/bus_truncated.jpg');

/**
 * The `simple` model's contract: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 − INPUT1, INT32 [-1,16];
 * version 2 (the one served under the default 'latest' policy) adds SIMPLE_V2_OFFSET to OUTPUT0.
 */
const A = Array.from({ length: 16 }, (_, i) => i);
const B = Array.from({ length: 16 }, () => 1);
const simpleInput = (name: string, extra: Record<string, unknown> = {}) => ({ name, shape: [1, 16], datatype: 'INT32', data: name === 'INPUT0' ? A : B, ...extra });
const VALID_SIMPLE = { inputs: [simpleInput('INPUT0'), simpleInput('INPUT1')] };

/** A binary-extension body: JSON header then raw bytes; returns the body and the header's length. */
function binaryBody(header: unknown, ...parts: ArrayBufferView[]): { body: Buffer; headerLength: number } {
  const head = Buffer.from(JSON.stringify(header));
  return { body: Buffer.concat([head, ...parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))]), headerLength: head.length };
}

function postBinaryRaw(url: string, header: unknown, parts: ArrayBufferView[], headerLength?: string): Promise<RawReply> {
  const b = binaryBody(header, ...parts);
  return rawRequest(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': headerLength ?? String(b.headerLength) }, body: b.body });
}

/** A valid request right after a refusal gets the right answer: the refusal left nothing broken behind. */
async function expectStillServes(baseUrl: string, parameters?: Record<string, unknown>): Promise<void> {
  const r = await postJsonRaw(`${baseUrl}/v2/models/simple/infer`, { ...VALID_SIMPLE, ...(parameters ? { parameters } : {}) });
  expect(r.status, r.body.toString().slice(0, 300)).toBe(200);
  const { model_version: version, outputs } = r.json as { model_version: string; outputs: { name: string; data: number[] }[] };
  const offset = version === '2' ? SIMPLE_V2_OFFSET : 0;
  expect(outputs.find((o) => o.name === 'OUTPUT0')?.data).toEqual(A.map((v) => v + 1 + offset));
  expect(outputs.find((o) => o.name === 'OUTPUT1')?.data).toEqual(A.map((v) => v - 1));
}

async function metadata(baseUrl: string, model: string): Promise<ModelMeta> {
  const r = await rawRequest(`${baseUrl}/v2/models/${model}`);
  expect(r.status).toBe(200);
  return r.json as ModelMeta;
}

function postImage(url: string, bytes: Uint8Array, type = 'image/jpeg'): Promise<RawReply> {
  return rawRequest(url, { method: 'POST', headers: { 'content-type': type }, body: bytes });
}

describe('bad input: every refusal is a catalog error, and the agent keeps serving', () => {
  let agent: RunningAgent;
  let url: string;
  let slow: ModelMeta;
  let shapes: ModelMeta;
  let scene: Buffer;

  beforeAll(async () => {
    agent = await startAgent({ models: ['simple', 'slow', 'identity', 'demo-shapes', 'demo-color'] });
    url = agent.url;
    slow = await metadata(url, 'slow');
    shapes = await metadata(url, 'demo-shapes');
    scene = await encodeScene(SHAPES_720P, 'jpeg');
    await expectStillServes(url);
  });
  afterAll(async () => {
    await agent?.stop();
  });

  const infer = (model = 'simple') => `${url}/v2/models/${model}/infer`;
  const detect = (query = '') => `${url}/v1/models/demo-shapes/detect${query}`;

  describe('JSON body', () => {
    it('malformed JSON → 400 AGENT_MALFORMED_JSON', async () => {
      expectRefusal(await postJsonRaw(infer(), '{"inputs": [{"name": "INPUT0", "shape": [1, 16],'), 'AGENT_MALFORMED_JSON');
      expectRefusal(await postJsonRaw(infer(), '{"inputs": [] } trailing'), 'AGENT_MALFORMED_JSON');
      await expectStillServes(url);
    });

    it('JSON nested 100 000 deep (inside an otherwise valid request) → 400 AGENT_JSON_TOO_DEEP, no stack overflow', async () => {
      const deep = '['.repeat(100_000) + ']'.repeat(100_000);
      const body = `{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":${deep}},${JSON.stringify(simpleInput('INPUT1'))}]}`;
      const message = expectRefusal(await postJsonRaw(infer(), body), 'AGENT_JSON_TOO_DEEP');
      expect(message).toMatch(/maxJsonDepth/);
      // Brackets inside strings are not nesting: a deep-looking string value is only a (wrong) name.
      expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0'), simpleInput('INPUT1'), simpleInput('['.repeat(200))] }), 'AGENT_UNKNOWN_INPUT');
      await expectStillServes(url);
    });

    it('a __proto__ key (and constructor.prototype) → 400 AGENT_FORBIDDEN_KEY', async () => {
      // Without the check this request is valid (JSON.parse makes __proto__ an own key, the schema strips it) and gets a 200.
      const proto = `{"__proto__": {"polluted": true}, ${JSON.stringify(VALID_SIMPLE).slice(1)}`;
      expectRefusal(await postJsonRaw(infer(), proto), 'AGENT_FORBIDDEN_KEY');
      const ctor = `{"constructor": {"prototype": {"polluted": true}}, ${JSON.stringify(VALID_SIMPLE).slice(1)}`;
      expectRefusal(await postJsonRaw(infer(), ctor), 'AGENT_FORBIDDEN_KEY');
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      await expectStillServes(url);
    });

    it('schema violations (no inputs; shape not an array; empty inputs) → 400 AGENT_INVALID_REQUEST', async () => {
      expect(expectRefusal(await postJsonRaw(infer(), {}), 'AGENT_INVALID_REQUEST')).toMatch(/inputs/);
      expect(expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0', { shape: '1,16' }), simpleInput('INPUT1')] }), 'AGENT_INVALID_REQUEST')).toMatch(/shape/);
      expectRefusal(await postJsonRaw(infer(), { inputs: [] }), 'AGENT_INVALID_REQUEST');
      expectRefusal(await postJsonRaw(infer(), '[1, 2, 3]'), 'AGENT_INVALID_REQUEST');
      await expectStillServes(url);
    });
  });

  describe('tensors against the model', () => {
    it('an input the model does not have → 400 AGENT_UNKNOWN_INPUT', async () => {
      const message = expectRefusal(await postJsonRaw(infer(), { inputs: [...VALID_SIMPLE.inputs, simpleInput('INPUT2')] }), 'AGENT_UNKNOWN_INPUT');
      expect(message).toMatch(/INPUT2/);
      await expectStillServes(url);
    });

    it('inputs that disagree on the batch dimension → 400 AGENT_WRONG_SHAPE, so they cannot mis-slice a batch', async () => {
      const two = { shape: [2, 16], data: Array.from({ length: 32 }, (_, i) => i) };
      const message = expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0'), simpleInput('INPUT1', two)] }), 'AGENT_WRONG_SHAPE');
      expect(message).toMatch(/batch dimension/);
      await expectStillServes(url);
    });

    it('a model input not sent → 400 AGENT_MISSING_INPUT', async () => {
      expect(expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0')] }), 'AGENT_MISSING_INPUT')).toMatch(/INPUT1/);
      await expectStillServes(url);
    });

    it('wrong datatype (a real but different one, and a made-up one) → 400 AGENT_WRONG_DATATYPE', async () => {
      // INT64 values that would convert to INT32 fine: only the datatype check stands between this and a 200.
      const message = expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0', { datatype: 'INT64' }), simpleInput('INPUT1')] }), 'AGENT_WRONG_DATATYPE');
      expect(message).toMatch(/INT64.*INT32/);
      expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0', { datatype: 'FLOAT32' }), simpleInput('INPUT1')] }), 'AGENT_WRONG_DATATYPE');
      await expectStillServes(url);
    });

    it('wrong shape: rank, and a fixed dimension → 400 AGENT_WRONG_SHAPE (not onnxruntime failing)', async () => {
      expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0', { shape: [16] }), simpleInput('INPUT1', { shape: [16] })] }), 'AGENT_WRONG_SHAPE');
      expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0', { shape: [1, 1, 16] }), simpleInput('INPUT1')] }), 'AGENT_WRONG_SHAPE');
      const message = expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0', { shape: [2, 8] }), simpleInput('INPUT1', { shape: [2, 8] })] }), 'AGENT_WRONG_SHAPE');
      expect(message).toMatch(/16/);
      await expectStillServes(url);
    });

    it('data count ≠ shape product (JSON values and binary bytes) → 400 AGENT_DATA_SIZE_MISMATCH', async () => {
      expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0', { data: A.slice(0, 15) }), simpleInput('INPUT1')] }), 'AGENT_DATA_SIZE_MISMATCH');
      expectRefusal(await postJsonRaw(infer(), { inputs: [simpleInput('INPUT0', { shape: [2, 16] }), simpleInput('INPUT1', { shape: [2, 16] })] }), 'AGENT_DATA_SIZE_MISMATCH');
      const int32 = new Int32Array(15);
      const header = { inputs: [{ name: 'INPUT0', shape: [1, 16], datatype: 'INT32', parameters: { binary_data_size: int32.byteLength } }, simpleInput('INPUT1')] };
      expectRefusal(await postBinaryRaw(infer(), header, [int32]), 'AGENT_DATA_SIZE_MISMATCH');
      await expectStillServes(url);
    });

    it('shape product overflow [2^31, 2^31] on a model with free dims → 400 AGENT_TOO_MANY_ELEMENTS', async () => {
      const x = slow.inputs[0]!;
      expect(x.shape.every((d) => d === -1), `slow's input is expected to be fully dynamic, got ${JSON.stringify(x.shape)}`).toBe(true);
      const huge = x.shape.map(() => 2147483648);
      const message = expectRefusal(await postJsonRaw(infer('slow'), { inputs: [{ name: x.name, shape: huge, datatype: x.datatype, data: [1, 2, 3, 4] }] }), 'AGENT_TOO_MANY_ELEMENTS');
      expect(message).toMatch(/maxTensorElements/);
      // Just over the default cap of 16 Mi elements, without any data sent.
      expectRefusal(await postJsonRaw(infer('slow'), { inputs: [{ name: x.name, shape: [4097, 4096], datatype: x.datatype, data: [] }] }), 'AGENT_TOO_MANY_ELEMENTS');
      await expectStillServes(url);
    });

    it('NaN and ±Infinity in FP32 via the binary extension → 400 AGENT_NON_FINITE', async () => {
      const x = slow.inputs[0]!;
      expect(x.datatype).toBe('FP32');
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const data = new Float32Array([1, 2, 3, bad, 5, 6]);
        const header = { inputs: [{ name: x.name, shape: [2, 3], datatype: 'FP32', parameters: { binary_data_size: data.byteLength } }] };
        expect(expectRefusal(await postBinaryRaw(infer('slow'), header, [data]), 'AGENT_NON_FINITE')).toMatch(/element 3/);
      }
      // The same request with finite values is answered (so it is the NaN that was refused).
      const ok = new Float32Array([1, 2, 3, 4, 5, 6]);
      const r = await postBinaryRaw(infer('slow'), { inputs: [{ name: x.name, shape: [2, 3], datatype: 'FP32', parameters: { binary_data_size: ok.byteLength } }] }, [ok]);
      expect(r.status, r.body.toString().slice(0, 200)).toBe(200);
      await expectStillServes(url);
    });

    it('BYTES to a model that takes no images → 400 AGENT_WRONG_DATATYPE naming both types', async () => {
      const message = expectRefusal(await postJsonRaw(infer(), { inputs: [{ name: 'INPUT0', shape: [1], datatype: 'BYTES', data: [scene.toString('base64')] }, simpleInput('INPUT1')] }), 'AGENT_WRONG_DATATYPE');
      expect(message).toMatch(/BYTES/);
      expect(message).toMatch(/INT32/);
      await expectStillServes(url);
    });

    it('a batch larger than max_batch_size → 400 AGENT_BATCH_TOO_LARGE (tensors and images)', async () => {
      const simple = await metadata(url, 'simple');
      const max = Number(simple.parameters.max_batch_size);
      expect(max).toBeGreaterThan(1);
      const rows = max + 1;
      const big = (name: string) => ({ name, shape: [rows, 16], datatype: 'INT32', data: Array.from({ length: rows * 16 }, (_, i) => i % 7) });
      expect(expectRefusal(await postJsonRaw(infer(), { inputs: [big('INPUT0'), big('INPUT1')] }), 'AGENT_BATCH_TOO_LARGE')).toMatch(String(max));
      // The image model takes max(max_batch_size, 1) images per request; one more is refused before decoding.
      const imageInput = String(shapes.parameters.image_input);
      const images = Math.max(Number(shapes.parameters.max_batch_size), 1) + 1;
      const body = { inputs: [{ name: imageInput, shape: [images], datatype: 'BYTES', data: Array.from({ length: images }, () => scene.toString('base64')) }] };
      expectRefusal(await postJsonRaw(infer('demo-shapes'), body), 'AGENT_BATCH_TOO_LARGE');
      await expectStillServes(url);
    });

    it('an output the model does not have → 400 AGENT_UNKNOWN_OUTPUT', async () => {
      const message = expectRefusal(await postJsonRaw(infer(), { ...VALID_SIMPLE, outputs: [{ name: 'OUTPUT0' }, { name: 'OUTPUT9' }] }), 'AGENT_UNKNOWN_OUTPUT');
      expect(message).toMatch(/OUTPUT9/);
      await expectStillServes(url);
    });
  });

  describe('binary tensor extension framing', () => {
    const header = () => ({ inputs: [{ name: 'INPUT0', shape: [1, 16], datatype: 'INT32', parameters: { binary_data_size: 64 } }, simpleInput('INPUT1')] });
    const int32 = new Int32Array(A);

    it('a bad Inference-Header-Content-Length → 400 AGENT_BAD_BINARY_HEADER', async () => {
      // Not a number: without the check the JSON part would be empty (AGENT_EMPTY_BODY).
      expectRefusal(await postBinaryRaw(infer(), header(), [int32], 'abc'), 'AGENT_BAD_BINARY_HEADER');
      expectRefusal(await postBinaryRaw(infer(), header(), [int32], '-5'), 'AGENT_BAD_BINARY_HEADER');
      // Longer than the body: a plain JSON request declaring 10 bytes too many would otherwise be served.
      const json = Buffer.from(JSON.stringify(VALID_SIMPLE));
      const r = await rawRequest(infer(), { method: 'POST', headers: { 'content-type': 'application/json', 'inference-header-content-length': String(json.length + 10) }, body: json });
      expectRefusal(r, 'AGENT_BAD_BINARY_HEADER');
      // The same framing with the right length is served.
      const ok = await postBinaryRaw(infer(), header(), [int32]);
      expect(ok.status, ok.body.toString().slice(0, 200)).toBe(200);
      await expectStillServes(url);
    });

    it('binary_data_size that does not add up to the bytes after the header → 400 AGENT_BAD_BINARY_HEADER', async () => {
      // Four bytes too many: without the final check they would be silently ignored and the request served.
      expectRefusal(await postBinaryRaw(infer(), header(), [int32, new Uint8Array(4)]), 'AGENT_BAD_BINARY_HEADER');
      // Claims more than is there.
      expectRefusal(await postBinaryRaw(infer(), header(), [int32.subarray(0, 8)]), 'AGENT_BAD_BINARY_HEADER');
      // Not a size.
      const negative = { inputs: [{ name: 'INPUT0', shape: [1, 16], datatype: 'INT32', parameters: { binary_data_size: -64 } }, simpleInput('INPUT1')] };
      expectRefusal(await postBinaryRaw(infer(), negative, [int32]), 'AGENT_BAD_BINARY_HEADER');
      await expectStillServes(url);
    });
  });

  describe('images', () => {
    it('a 20 MP camera frame (5472x3648) is accepted by /detect with default limits, and its object found', async () => {
      const frame = await cameraFrameJpeg();
      const r = await postImage(detect(), frame);
      expect(r.status, r.body.toString().slice(0, 300)).toBe(200);
      const reply = r.json as { width: number; height: number; detections: Detection[] };
      expect([reply.width, reply.height]).toEqual([CAMERA_FRAME.width, CAMERA_FRAME.height]);
      const red = reply.detections.filter((d) => d.label === 'red' && d.score >= 0.5);
      expect(red, JSON.stringify(reply.detections)).toHaveLength(1);
      const tol = 0.03 * CAMERA_FRAME.width;
      for (const k of ['x1', 'y1', 'x2', 'y2'] as const) expect(Math.abs(red[0]!.box[k] - CAMERA_FRAME.red[k])).toBeLessThan(tol);
    });

    it('a generated decompression bomb (8000x8000 flat PNG, 64 MP in ~200 KB) → 400 AGENT_IMAGE_TOO_LARGE', async () => {
      const bomb = await pixelBombPng();
      expect(bomb.length).toBeLessThan(1024 * 1024);
      expect(expectRefusal(await postImage(detect(), bomb, 'image/png'), 'AGENT_IMAGE_TOO_LARGE')).toMatch(/8000x8000/);
      // The same bytes inside a KServe BYTES input take the same path.
      const body = { inputs: [{ name: String(shapes.parameters.image_input), shape: [1], datatype: 'BYTES', data: [bomb.toString('base64')] }] };
      expectRefusal(await postJsonRaw(infer('demo-shapes'), body), 'AGENT_IMAGE_TOO_LARGE');
      await expectStillServes(url);
    });

    it.skipIf(!GIANT)(`giant-image.jpg (20000x14000, 280 MP) → 400 AGENT_IMAGE_TOO_LARGE${GIANT ? '' : ` (skipped: ${SHARED_MISSING})`}`, async () => {
      expectRefusal(await postImage(detect(), readFileSync(GIANT!)), 'AGENT_IMAGE_TOO_LARGE');
      await expectStillServes(url);
    });

    it('an image format other than JPEG/PNG/WebP (SVG, GIF) → 400 AGENT_IMAGE_DECODE_FAILED, though libvips could read it', async () => {
      const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480"><rect x="10" y="10" width="80" height="80" fill="red"/></svg>');
      expect(expectRefusal(await postImage(detect(), svg, 'application/octet-stream'), 'AGENT_IMAGE_DECODE_FAILED')).toMatch(/svg/);
      const gif = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 255, g: 0, b: 0 } } }).gif().toBuffer();
      expect(expectRefusal(await postImage(detect(), gif, 'application/octet-stream'), 'AGENT_IMAGE_DECODE_FAILED')).toMatch(/gif/);
      await expectStillServes(url);
    });

    it('a generated truncated JPEG and random bytes → 400 AGENT_IMAGE_DECODE_FAILED', async () => {
      expectRefusal(await postImage(detect(), await truncatedJpeg()), 'AGENT_IMAGE_DECODE_FAILED');
      expectRefusal(await postImage(detect(), randomBytesSeeded(50_000, 7)), 'AGENT_IMAGE_DECODE_FAILED');
      expectRefusal(await postImage(detect(), randomBytesSeeded(50_000, 8), 'application/octet-stream'), 'AGENT_IMAGE_DECODE_FAILED');
      expectRefusal(await postImage(`${url}/v1/models/demo-color/classify`, randomBytesSeeded(3_000, 9), 'image/png'), 'AGENT_IMAGE_DECODE_FAILED');
      await expectStillServes(url);
    });

    it.skipIf(!TRUNCATED)(`bus_truncated.jpg → 400 AGENT_IMAGE_DECODE_FAILED${TRUNCATED ? '' : ` (skipped: ${SHARED_MISSING})`}`, async () => {
      expectRefusal(await postImage(detect(), readFileSync(TRUNCATED!)), 'AGENT_IMAGE_DECODE_FAILED');
      await expectStillServes(url);
    });

    it('an unsupported Content-Type on /detect (text/plain, even with JPEG bytes) → 415 AGENT_UNSUPPORTED_MEDIA_TYPE', async () => {
      expectRefusal(await postImage(detect(), scene, 'text/plain'), 'AGENT_UNSUPPORTED_MEDIA_TYPE', 415);
      expectRefusal(await postImage(detect(), scene, 'application/json'), 'AGENT_UNSUPPORTED_MEDIA_TYPE', 415);
      // The same bytes as image/jpeg are served.
      const ok = await postImage(detect(), scene);
      expect(ok.status).toBe(200);
      expect((ok.json as { detections: Detection[] }).detections.length).toBeGreaterThan(0);
      await expectStillServes(url);
    });

    it('an empty body → 400 AGENT_EMPTY_BODY (on /detect and on infer)', async () => {
      expectRefusal(await postImage(detect(), new Uint8Array(0)), 'AGENT_EMPTY_BODY');
      expectRefusal(await rawRequest(infer(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '' }), 'AGENT_EMPTY_BODY');
      expectRefusal(await rawRequest(infer(), { method: 'POST' }), 'AGENT_EMPTY_BODY');
      await expectStillServes(url);
    });

    it('a query parameter out of range (confidence=2, iou=-1, max_detections=0.5, top_k=abc) → 400 AGENT_BAD_QUERY', async () => {
      expect(expectRefusal(await postImage(detect('?confidence=2'), scene), 'AGENT_BAD_QUERY')).toMatch(/confidence/);
      expectRefusal(await postImage(detect('?iou=-1'), scene), 'AGENT_BAD_QUERY');
      expectRefusal(await postImage(detect('?max_detections=0.5'), scene), 'AGENT_BAD_QUERY');
      expectRefusal(await postImage(`${url}/v1/models/demo-color/classify?top_k=abc`, scene), 'AGENT_BAD_QUERY');
      const ok = await postImage(detect('?confidence=0.5'), scene);
      expect(ok.status).toBe(200);
      await expectStillServes(url);
    });

    it('a malformed multipart/form-data upload (no boundary; cut before its closing boundary) → 400 AGENT_INVALID_REQUEST', async () => {
      const part = (closing: boolean) => Buffer.concat([
        Buffer.from('--xyz\r\nContent-Disposition: form-data; name="image"; filename="scene.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'),
        scene,
        Buffer.from(closing ? '\r\n--xyz--\r\n' : ''),
      ]);
      expect(expectRefusal(await postImage(detect(), part(true), 'multipart/form-data'), 'AGENT_INVALID_REQUEST')).toMatch(/multipart/);
      expectRefusal(await postImage(detect(), part(false), 'multipart/form-data; boundary=xyz'), 'AGENT_INVALID_REQUEST');
      // The same upload, well formed, is served.
      const ok = await postImage(detect(), part(true), 'multipart/form-data; boundary=xyz');
      expect(ok.status, ok.body.toString().slice(0, 200)).toBe(200);
      expect((ok.json as { detections: Detection[] }).detections.length).toBeGreaterThan(0);
      await expectStillServes(url);
    });

    it('/detect on a model that is not a detector → 400 AGENT_TASK_MISMATCH', async () => {
      expectRefusal(await postImage(`${url}/v1/models/simple/detect`, scene), 'AGENT_TASK_MISMATCH');
      expectRefusal(await postImage(`${url}/v1/models/demo-shapes/classify`, scene), 'AGENT_TASK_MISMATCH');
      await expectStillServes(url);
    });
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
    // must not get a 504 for it (simple waits max_queue_delay_ms in its queue first, longer than 1 ms).
    for (const timeout of [2 ** 31, 1e12]) {
      const r = await postJsonRaw(infer(), { ...VALID_SIMPLE, parameters: { timeout_ms: timeout } });
      expect(r.status, `timeout_ms ${timeout}: ${r.body.toString().slice(0, 200)}`).toBe(200);
    }
    await expectStillServes(url);
  });
});

describe('body over limits.maxBodyBytes (64 KiB) → 413 AGENT_BODY_TOO_LARGE before it is buffered', () => {
  const LIMIT = 64 * 1024;
  const TOTAL = 10 * 1024 * 1024;
  let agent: RunningAgent;

  beforeAll(async () => {
    agent = await startAgent({ models: ['simple', 'demo-shapes'], config: { limits: { maxBodyBytes: LIMIT } } });
  });
  afterAll(async () => {
    await agent?.stop();
  });

  /**
   * Streams up to TOTAL bytes (64 KiB chunks, with backpressure) and stops at the first response byte.
   * Returns the response and how many bytes the stream had handed to the socket by then.
   */
  function streamBody(target: string, headers: Record<string, string>): Promise<{ reply: RawReply; sentAtResponse: number }> {
    let sent = 0;
    let responded = false;
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const body = new Readable({
      read() {
        if (responded || sent >= TOTAL) this.push(null);
        else {
          sent += chunk.length;
          this.push(chunk);
        }
      },
    });
    return new Promise((resolve, reject) => {
      const req = http.request(target, { method: 'POST', headers, agent: false });
      const timer = setTimeout(() => req.destroy(new Error('no response within 20 s')), 20_000);
      req.on('error', (err) => {
        clearTimeout(timer);
        // The server may close its side right after the 413; that is only an error if no response came.
        if (!responded) reject(err);
      });
      req.on('response', (res) => {
        responded = true;
        const sentAtResponse = sent;
        body.unpipe(req);
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const raw = Buffer.concat(chunks);
          let json: unknown;
          try {
            json = JSON.parse(raw.toString());
          } catch {
            json = undefined;
          }
          req.destroy();
          resolve({ reply: { status: res.statusCode ?? 0, headers: res.headers, body: raw, json, ms: 0 }, sentAtResponse });
        });
      });
      body.pipe(req);
    });
  }

  it('with Content-Length (10 MB declared): refused before the body is sent', async () => {
    const { reply, sentAtResponse } = await streamBody(`${agent.url}/v2/models/simple/infer`, { 'content-type': 'application/json', 'content-length': String(TOTAL) });
    console.info(`[413] Content-Length: ${sentAtResponse} of ${TOTAL} bytes handed to the socket when the 413 arrived`);
    expectRefusal(reply, 'AGENT_BODY_TOO_LARGE', 413);
    // What was sent by then sits in the kernel's socket buffers (a few MB on loopback), not in the agent.
    expect(sentAtResponse).toBeLessThan(TOTAL);
    await expectStillServes(agent.url);
  });

  it('chunked, without Content-Length: refused while streaming, before the whole 10 MB is sent', async () => {
    const { reply, sentAtResponse } = await streamBody(`${agent.url}/v2/models/simple/infer`, { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' });
    console.info(`[413] chunked: ${sentAtResponse} of ${TOTAL} bytes handed to the socket when the 413 arrived`);
    expectRefusal(reply, 'AGENT_BODY_TOO_LARGE', 413);
    expect(sentAtResponse).toBeLessThan(TOTAL);
    await expectStillServes(agent.url);
  });

  it('an image over the limit on /detect, and a JSON body one byte over it', async () => {
    expectRefusal(await postImage(`${agent.url}/v1/models/demo-shapes/detect`, await cameraFrameJpeg()), 'AGENT_BODY_TOO_LARGE', 413);
    const padded = JSON.stringify(VALID_SIMPLE);
    const atLimit = padded + ' '.repeat(LIMIT - padded.length);
    const ok = await postJsonRaw(`${agent.url}/v2/models/simple/infer`, atLimit);
    expect(ok.status, 'a body of exactly maxBodyBytes is accepted').toBe(200);
    expectRefusal(await postJsonRaw(`${agent.url}/v2/models/simple/infer`, `${atLimit} `), 'AGENT_BODY_TOO_LARGE', 413);
    await expectStillServes(agent.url);
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
