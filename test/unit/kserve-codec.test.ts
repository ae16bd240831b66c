import { describe, expect, it } from 'vitest';
import { isAgentError } from '../../agent/src/errors.js';
import { decodeInferRequest, encodeInferResponse } from '../../agent/src/http/kserve-codec.js';
import type { HostTensor } from '../../agent/src/inference/tensor.js';

const DEPTH = 32;

/** A Triton binary-extension body: the JSON header, then each chunk in order; returns the body and header length. */
function binaryBody(header: unknown, ...chunks: Uint8Array[]): { body: Buffer; headerLength: string } {
  const json = Buffer.from(JSON.stringify(header));
  return { body: Buffer.concat([json, ...chunks]), headerLength: String(json.length) };
}

const jsonBody = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const le = (t: Float32Array | Int32Array | BigInt64Array): Uint8Array => new Uint8Array(t.buffer, t.byteOffset, t.byteLength);

/** Length-prefixed BYTES elements: a 4-byte little-endian length, then the bytes, for each element. */
function lengthPrefixed(...elements: string[]): Uint8Array {
  return Buffer.concat(elements.flatMap((e) => {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(Buffer.byteLength(e));
    return [len, Buffer.from(e)];
  }));
}

function refusal(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    expect(isAgentError(err), `expected a catalog error, got ${String(err)}`).toBe(true);
    return (err as { code: string }).code;
  }
  throw new Error('expected the request to be refused');
}

describe('decodeInferRequest (JSON)', () => {
  it('decodes inputs, flattening nested data in row-major order', () => {
    const req = decodeInferRequest(jsonBody({
      id: 'req-1',
      inputs: [
        { name: 'x', shape: [2, 2], datatype: 'FP32', data: [[1, 2], [3, 4]] },
        { name: 'flat', shape: [3], datatype: 'INT32', data: [5, 6, 7] },
        { name: 'deep', shape: [2, 1, 2], datatype: 'UINT8', data: [[[1, 2]], [[3, 4]]] },
      ],
    }), undefined, DEPTH);
    expect(req.id).toBe('req-1');
    expect(req.inputs).toEqual([
      { name: 'x', datatype: 'FP32', shape: [2, 2], payload: { kind: 'json', values: [1, 2, 3, 4] } },
      { name: 'flat', datatype: 'INT32', shape: [3], payload: { kind: 'json', values: [5, 6, 7] } },
      { name: 'deep', datatype: 'UINT8', shape: [2, 1, 2], payload: { kind: 'json', values: [1, 2, 3, 4] } },
    ]);
    expect(req.outputs).toBeUndefined();
    expect(req.binaryByDefault).toBe(false);
    expect(req.timeoutMs).toBeUndefined();
  });

  it('decodes BYTES data as base64 strings or {"b64": …} objects', () => {
    const req = decodeInferRequest(jsonBody({
      inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: [Buffer.from('jpeg-1').toString('base64'), { b64: Buffer.from('png-2').toString('base64') }] }],
    }), undefined, DEPTH);
    const payload = req.inputs[0]!.payload;
    expect(payload.kind).toBe('images');
    if (payload.kind !== 'images') return;
    expect(payload.images.map((b) => Buffer.from(b).toString())).toEqual(['jpeg-1', 'png-2']);
  });

  it('refuses BYTES elements that are not base64', () => {
    const code = refusal(() => decodeInferRequest(jsonBody({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: ['not base64!'] }] }), undefined, DEPTH));
    expect(code).toBe('AGENT_WRONG_DATATYPE');
    expect(refusal(() => decodeInferRequest(jsonBody({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [42] }] }), undefined, DEPTH))).toBe('AGENT_WRONG_DATATYPE');
  });

  it('refuses an unknown datatype with AGENT_WRONG_DATATYPE, naming the input', () => {
    const run = () => decodeInferRequest(jsonBody({ inputs: [{ name: 'x', shape: [1], datatype: 'FLOAT32', data: [1] }] }), undefined, DEPTH);
    expect(refusal(run)).toBe('AGENT_WRONG_DATATYPE');
    expect(run).toThrow(/'x'.*FLOAT32/);
  });

  it('refuses requests that do not match the KServe schema with AGENT_INVALID_REQUEST', () => {
    const invalid = [
      {},
      { inputs: [] },
      { inputs: [{ name: 'x', shape: [-1], datatype: 'FP32', data: [1] }] },
      { inputs: [{ name: 'x', shape: [1.5], datatype: 'FP32', data: [1] }] },
      { inputs: [{ name: 'x', shape: [1], datatype: 'FP32' }] }, // neither data nor binary_data_size
      { inputs: [{ name: 'x', shape: 'big', datatype: 'FP32', data: [1] }] },
      { inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }], parameters: { timeout_ms: 0 } },
      { inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }], parameters: { timeout_ms: 'soon' } },
    ];
    for (const body of invalid) expect(refusal(() => decodeInferRequest(jsonBody(body), undefined, DEPTH)), JSON.stringify(body)).toBe('AGENT_INVALID_REQUEST');
  });

  it('passes a positive timeout_ms through', () => {
    const req = decodeInferRequest(jsonBody({ inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }], parameters: { timeout_ms: 250 } }), undefined, DEPTH);
    expect(req.timeoutMs).toBe(250);
  });

  it('applies the JSON guards to the body', () => {
    expect(refusal(() => decodeInferRequest(Buffer.from('{"inputs": ['), undefined, DEPTH))).toBe('AGENT_MALFORMED_JSON');
    expect(refusal(() => decodeInferRequest(Buffer.from('{"inputs": [{"data": [[[[[1]]]]]}]}'), undefined, 6))).toBe('AGENT_JSON_TOO_DEEP');
    expect(refusal(() => decodeInferRequest(Buffer.from('{"__proto__": {}, "inputs": []}'), undefined, DEPTH))).toBe('AGENT_FORBIDDEN_KEY');
  });
});

describe('decodeInferRequest (binary extension)', () => {
  const a = Float32Array.from([1.5, -2, 3.25]);
  const b = Int32Array.from([7, -8]);
  const header = {
    inputs: [
      { name: 'a', shape: [3], datatype: 'FP32', parameters: { binary_data_size: 12 } },
      { name: 'json', shape: [1], datatype: 'FP32', data: [9] },
      { name: 'b', shape: [2], datatype: 'INT32', parameters: { binary_data_size: 8 } },
    ],
  };

  it('slices the bytes after the JSON header by binary_data_size, in input order', () => {
    const { body, headerLength } = binaryBody(header, le(a), le(b));
    const req = decodeInferRequest(body, headerLength, DEPTH);
    const [ia, ij, ib] = req.inputs;
    expect(ia!.payload.kind).toBe('binary');
    expect(ib!.payload.kind).toBe('binary');
    if (ia!.payload.kind !== 'binary' || ib!.payload.kind !== 'binary') return;
    expect(Array.from(ia!.payload.bytes)).toEqual(Array.from(le(a)));
    expect(Array.from(ib!.payload.bytes)).toEqual(Array.from(le(b)));
    expect(ij!.payload).toEqual({ kind: 'json', values: [9] });
  });

  it('refuses binary_data_size values that do not add up to the bytes that follow', () => {
    const extra = binaryBody(header, le(a), le(b), Uint8Array.from([0]));
    expect(refusal(() => decodeInferRequest(extra.body, extra.headerLength, DEPTH))).toBe('AGENT_BAD_BINARY_HEADER');
    const short = binaryBody(header, le(a), le(b).subarray(0, 4));
    expect(refusal(() => decodeInferRequest(short.body, short.headerLength, DEPTH))).toBe('AGENT_BAD_BINARY_HEADER');
  });

  it('refuses bytes after the JSON when no input claims them', () => {
    const { body, headerLength } = binaryBody({ inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] }, Uint8Array.from([1, 2, 3, 4]));
    expect(refusal(() => decodeInferRequest(body, headerLength, DEPTH))).toBe('AGENT_BAD_BINARY_HEADER');
  });

  it('refuses binary_data_size without the header length (no binary part)', () => {
    expect(refusal(() => decodeInferRequest(jsonBody(header), undefined, DEPTH))).toBe('AGENT_BAD_BINARY_HEADER');
  });

  it('refuses a header length past the body, or one that is not a byte count', () => {
    const { body } = binaryBody(header, le(a), le(b));
    for (const bad of [String(body.length + 1), '-1', '12abc', '', '1e3', '99999999999999999']) {
      expect(refusal(() => decodeInferRequest(body, bad, DEPTH)), bad).toBe('AGENT_BAD_BINARY_HEADER');
    }
  });

  it('a header length that cuts the JSON short is malformed JSON', () => {
    const { body, headerLength } = binaryBody(header, le(a), le(b));
    expect(refusal(() => decodeInferRequest(body, String(Number(headerLength) - 1), DEPTH))).toBe('AGENT_MALFORMED_JSON');
  });

  it('refuses a negative or fractional binary_data_size', () => {
    for (const size of [-4, 1.5, '12']) {
      const { body, headerLength } = binaryBody({ inputs: [{ name: 'a', shape: [3], datatype: 'FP32', parameters: { binary_data_size: size } }] }, le(a));
      expect(refusal(() => decodeInferRequest(body, headerLength, DEPTH)), String(size)).toBe('AGENT_BAD_BINARY_HEADER');
    }
  });

  it('refuses an input with both data and binary_data_size', () => {
    const { body, headerLength } = binaryBody({ inputs: [{ name: 'a', shape: [3], datatype: 'FP32', data: [1, 2, 3], parameters: { binary_data_size: 12 } }] }, le(a));
    expect(refusal(() => decodeInferRequest(body, headerLength, DEPTH))).toBe('AGENT_INVALID_REQUEST');
  });

  it('splits BYTES binary data into length-prefixed elements', () => {
    const images = lengthPrefixed('first-image', '', 'third');
    const { body, headerLength } = binaryBody({ inputs: [{ name: 'image', shape: [3], datatype: 'BYTES', parameters: { binary_data_size: images.length } }] }, images);
    const payload = decodeInferRequest(body, headerLength, DEPTH).inputs[0]!.payload;
    expect(payload.kind).toBe('images');
    if (payload.kind !== 'images') return;
    expect(payload.images.map((i) => Buffer.from(i).toString())).toEqual(['first-image', '', 'third']);
  });

  it('refuses BYTES elements whose length prefix is cut off or claims more than follows', () => {
    const cutPrefix = Buffer.concat([lengthPrefixed('ok'), Uint8Array.from([1, 0])]);
    const overLong = Buffer.concat([Uint8Array.from([10, 0, 0, 0]), Buffer.from('short')]);
    for (const bytes of [cutPrefix, overLong]) {
      const { body, headerLength } = binaryBody({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: bytes.length } }] }, bytes);
      expect(refusal(() => decodeInferRequest(body, headerLength, DEPTH))).toBe('AGENT_BAD_BINARY_HEADER');
    }
  });
});

describe('decodeInferRequest requested outputs', () => {
  const inputs = [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }];

  it('binary_data per output, defaulting to the request-level binary_data_output', () => {
    const req = decodeInferRequest(jsonBody({
      inputs,
      parameters: { binary_data_output: true },
      outputs: [{ name: 'boxes' }, { name: 'scores', parameters: { binary_data: false } }, { name: 'classes', parameters: { binary_data: true } }],
    }), undefined, DEPTH);
    expect(req.binaryByDefault).toBe(true);
    expect(req.outputs).toEqual([
      { name: 'boxes', binary: true },
      { name: 'scores', binary: false },
      { name: 'classes', binary: true },
    ]);
  });

  it('outputs are JSON unless asked for as binary', () => {
    const req = decodeInferRequest(jsonBody({ inputs, outputs: [{ name: 'boxes' }, { name: 'scores', parameters: { binary_data: true } }] }), undefined, DEPTH);
    expect(req.binaryByDefault).toBe(false);
    expect(req.outputs).toEqual([{ name: 'boxes', binary: false }, { name: 'scores', binary: true }]);
  });
});

describe('encodeInferResponse', () => {
  const outputs: Record<string, HostTensor> = {
    boxes: { datatype: 'FP32', dims: [1, 2], data: Float32Array.from([1.5, -2]) },
    ids: { datatype: 'INT64', dims: [2], data: BigInt64Array.from([7n, -1n]) },
    mask: { datatype: 'BOOL', dims: [2], data: Uint8Array.from([1, 0]) },
  };

  it('all-JSON outputs give a JSON object with data', () => {
    const res = encodeInferResponse({ name: 'm', version: 3 }, 'r1', outputs, [{ name: 'ids', binary: false }, { name: 'mask', binary: false }]);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.headers['inference-header-content-length']).toBeUndefined();
    expect(res.body).toEqual({
      model_name: 'm', model_version: '3', id: 'r1',
      outputs: [
        { name: 'ids', datatype: 'INT64', shape: [2], data: [7, -1] },
        { name: 'mask', datatype: 'BOOL', shape: [2], data: [true, false] },
      ],
    });
  });

  it('binary outputs follow a JSON header of Inference-Header-Content-Length bytes, as raw little-endian bytes', () => {
    const res = encodeInferResponse({ name: 'm', version: 1 }, undefined, outputs, [{ name: 'boxes', binary: true }, { name: 'mask', binary: false }, { name: 'ids', binary: true }]);
    expect(res.headers['content-type']).toBe('application/octet-stream');
    expect(Buffer.isBuffer(res.body)).toBe(true);
    const body = res.body as Buffer;
    const n = Number(res.headers['inference-header-content-length']);
    const header = JSON.parse(body.subarray(0, n).toString('utf8'));
    expect(header).toEqual({
      model_name: 'm', model_version: '1',
      outputs: [
        { name: 'boxes', datatype: 'FP32', shape: [1, 2], parameters: { binary_data_size: 8 } },
        { name: 'mask', datatype: 'BOOL', shape: [2], data: [true, false] },
        { name: 'ids', datatype: 'INT64', shape: [2], parameters: { binary_data_size: 16 } },
      ],
    });
    const rest = body.subarray(n);
    expect(rest.length).toBe(8 + 16);
    expect(rest.readFloatLE(0)).toBe(1.5);
    expect(rest.readFloatLE(4)).toBe(-2);
    expect(rest.readBigInt64LE(8)).toBe(7n);
    expect(rest.readBigInt64LE(16)).toBe(-1n);
  });

  it('writes only the bytes of an output that is a view into a larger buffer (a batch slice)', () => {
    const batch = Float32Array.from([10, 11, 12, 13]);
    const mine: HostTensor = { datatype: 'FP32', dims: [1, 2], data: batch.subarray(2, 4) };
    const res = encodeInferResponse({ name: 'm', version: 1 }, undefined, { y: mine }, [{ name: 'y', binary: true }]);
    const body = res.body as Buffer;
    const rest = body.subarray(Number(res.headers['inference-header-content-length']));
    expect(rest.length).toBe(8);
    expect([rest.readFloatLE(0), rest.readFloatLE(4)]).toEqual([12, 13]);
  });
});
