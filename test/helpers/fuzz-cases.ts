/**
 * The fast-check generators of the fuzz test (../integration/fuzz.test.ts): structured KServe requests,
 * text mutations of valid ones, binary-extension framing, mutated images, random bytes and URLs, and
 * near-valid requests with targeted perturbations, mixed into one arbitrary of HTTP requests.
 */
import fc from 'fast-check';
import { KSERVE_DATATYPES } from '../../shared/src/manifest.js';

/** One request to send: what generated it, and the raw method, path, headers and body. */
export interface Case {
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
 * Every kind of case, weighted. `MODEL_INPUTS` (each model's inputs from its metadata) and `images` (a small
 * real JPEG and PNG) come from the running agent, so near-valid requests match the models it serves.
 */
export function fuzzCases(MODEL_INPUTS: Record<string, { name: string; datatype: string; shape: number[] }[]>, images: { jpeg: Buffer; png: Buffer }): fc.Arbitrary<Case> {
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

  return fc.oneof(
    { weight: 6, arbitrary: perturbed },
    { weight: 4, arbitrary: structuredInfer },
    { weight: 4, arbitrary: mutatedJson },
    { weight: 2, arbitrary: binaryFrames },
    { weight: 2, arbitrary: imageBodies },
    { weight: 2, arbitrary: randomBytes },
    { weight: 2, arbitrary: randomUrls },
  );
}
