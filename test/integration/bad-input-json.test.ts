/**
 * Refusals of malformed JSON bodies, of tensors that do not fit the model, and of bad binary-extension
 * framing, through real HTTP into a real agent with real onnxruntime sessions (research note §5.6 H1, H2,
 * H4). Each test asserts the status, the catalog code and the JSON {error, code} shape, then that the agent
 * still answers a valid request. Each bad input is chosen so that without the check it guards, the request
 * would get a different answer (usually a 200, a 500 from onnxruntime or a crash), so the test fails if
 * the check is removed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningAgent } from '../helpers/agent.js';
import { expectStillServes, metadata, postBinaryRaw, startRefusalAgent, type ModelMeta, type RefusalAgent } from '../helpers/bad-input.js';
import { expectRefusal, postJsonRaw, rawRequest } from '../helpers/raw-http.js';
import { A, simpleInput, VALID_SIMPLE } from '../helpers/simple-model.js';

describe('bad input: every refusal is a catalog error, and the agent keeps serving', () => {
  let agent: RunningAgent;
  let url: string;
  let slow: ModelMeta;
  let shapes: ModelMeta;
  let scene: Buffer;
  let infer: RefusalAgent['infer'];

  beforeAll(async () => {
    ({ agent, url, slow, shapes, scene, infer } = await startRefusalAgent());
  });
  afterAll(async () => {
    await agent?.stop();
  });

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
});
