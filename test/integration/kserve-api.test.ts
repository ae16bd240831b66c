/**
 * The KServe v2 (Open Inference Protocol) REST surface on the project's generated models, over real HTTP
 * to a real agent: health, server and model metadata, version policy, JSON and binary-extension
 * inference (Triton's binary tensor data), every datatype through `identity`, and the 404s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { bytesOf, numbersOf, postBinary, postJson, typedFromBytes, type NumericWireType } from '../helpers/kserve-wire.js';

interface TensorMeta { name: string; datatype: string; shape: number[] }
interface ModelMeta { name: string; versions: string[]; platform: string; inputs: TensorMeta[]; outputs: TensorMeta[]; parameters: Record<string, unknown> }

async function get(url: string): Promise<{ status: number; body: Record<string, unknown>; type: string | null }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, type: res.headers.get('content-type') };
}

/** Concrete shape for a model's dims: variable dimensions become `rows` (the first) or `width`. */
function concrete(dims: number[], rows = 1, width = 2): number[] {
  return dims.map((d, i) => (d >= 0 ? d : i === 0 ? rows : width));
}

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** `simple` inputs for a request: INPUT0 = 0..n-1, INPUT1 = 3·i − 7 (negative too, so OUTPUT1 is not trivial). */
function simpleInputs(meta: ModelMeta, rows = 1) {
  const shape = concrete(meta.inputs[0]!.shape, rows);
  const a = Array.from({ length: count(shape) }, (_, i) => i);
  const b = a.map((i) => 3 * i - 7);
  return { shape, a, b, sum: a.map((v, i) => v + b[i]!), diff: a.map((v, i) => v - b[i]!) };
}

function simpleRequest(x: ReturnType<typeof simpleInputs>, extra: Record<string, unknown> = {}) {
  return {
    ...extra,
    inputs: [
      { name: 'INPUT0', datatype: 'INT32', shape: x.shape, data: x.a },
      { name: 'INPUT1', datatype: 'INT32', shape: x.shape, data: x.b },
    ],
  };
}

describe('KServe v2 API (version policy latest)', () => {
  let agent: RunningAgent;
  let simple: ModelMeta;

  beforeAll(async () => {
    agent = await startAgent({ models: ['simple', 'identity'] });
    simple = (await get(`${agent.url}/v2/models/simple`)).body as unknown as ModelMeta;
  });
  afterAll(() => agent?.stop());

  it('reports live and ready once the repository is loaded', async () => {
    expect(await get(`${agent.url}/v2/health/live`)).toMatchObject({ status: 200, body: { live: true } });
    expect(await get(`${agent.url}/v2/health/ready`)).toMatchObject({ status: 200, body: { ready: true } });
    expect(await get(`${agent.url}/v2/models/simple/ready`)).toMatchObject({ status: 200, body: { name: 'simple', version: '2', ready: true } });
  });

  it('server metadata names the binary tensor extension', async () => {
    const { status, body } = await get(`${agent.url}/v2`);
    expect(status).toBe(200);
    expect(body).toMatchObject({ name: 'outpost-agent', version: expect.any(String) });
    expect(body.extensions).toContain('binary_tensor_data');
  });

  it('model metadata lists inputs, outputs, datatypes, shapes and the execution provider', async () => {
    expect(simple.name).toBe('simple');
    expect(simple.versions).toEqual(['2']); // latest: only the highest version is served
    expect(simple.platform).toBe('onnxruntime_onnx');
    expect(simple.inputs.map((i) => [i.name, i.datatype])).toEqual([['INPUT0', 'INT32'], ['INPUT1', 'INT32']]);
    expect(simple.outputs.map((o) => [o.name, o.datatype])).toEqual([['OUTPUT0', 'INT32'], ['OUTPUT1', 'INT32']]);
    for (const t of [...simple.inputs, ...simple.outputs]) {
      expect(t.shape[0], `${t.name} has a dynamic batch dimension`).toBe(-1);
      expect(t.shape).toEqual(simple.inputs[0]!.shape);
    }
    expect(simple.parameters).toMatchObject({ version: '2', execution_provider: 'cpu', dynamic_batch: true, task: 'raw' });
    expect(simple.parameters.max_batch_size).toBeGreaterThan(1);

    const v2 = await get(`${agent.url}/v2/models/simple/versions/2`);
    expect(v2.status).toBe(200);
    expect(v2.body).toMatchObject({ name: 'simple', parameters: { version: '2' }, inputs: simple.inputs, outputs: simple.outputs });
  });

  it('does not serve version 1 under the default policy: 404 AGENT_VERSION_NOT_FOUND', async () => {
    expect(await get(`${agent.url}/v2/models/simple/versions/1`)).toMatchObject({ status: 404, body: { code: 'AGENT_VERSION_NOT_FOUND' } });
    const r = await postJson(`${agent.url}/v2/models/simple/versions/1/infer`, simpleRequest(simpleInputs(simple)));
    expect(r.status).toBe(404);
    expect(r.json.code).toBe('AGENT_VERSION_NOT_FOUND');
  });

  it('infers over JSON, echoing the id, returning only the requested output', async () => {
    const x = simpleInputs(simple);
    const all = await postJson(`${agent.url}/v2/models/simple/infer`, simpleRequest(x, { id: 'req-1' }));
    expect(all.status, JSON.stringify(all.json)).toBe(200);
    expect(all.json).toMatchObject({ model_name: 'simple', model_version: '2', id: 'req-1' });
    expect(Object.keys(all.outputs).sort()).toEqual(['OUTPUT0', 'OUTPUT1']);
    expect(all.outputs.OUTPUT0).toMatchObject({ datatype: 'INT32', shape: x.shape });
    expect(all.outputs.OUTPUT0!.data).toEqual(x.sum.map((v) => v + 1000)); // version 2 adds 1000
    expect(all.outputs.OUTPUT1!.data).toEqual(x.diff);

    const subset = await postJson(`${agent.url}/v2/models/simple/infer`, simpleRequest(x, { outputs: [{ name: 'OUTPUT1' }] }));
    expect(subset.status).toBe(200);
    expect((subset.json.outputs as TensorMeta[]).map((o) => o.name)).toEqual(['OUTPUT1']);
    expect(subset.outputs.OUTPUT1!.data).toEqual(x.diff);
  });

  it('takes binary inputs and returns binary outputs after the JSON header (Inference-Header-Content-Length)', async () => {
    const x = simpleInputs(simple, 2);
    const a = Int32Array.from(x.a);
    const b = Int32Array.from(x.b);
    const r = await postBinary(
      `${agent.url}/v2/models/simple/infer`,
      {
        inputs: [
          { name: 'INPUT0', datatype: 'INT32', shape: x.shape, parameters: { binary_data_size: a.byteLength } },
          { name: 'INPUT1', datatype: 'INT32', shape: x.shape, parameters: { binary_data_size: b.byteLength } },
        ],
        outputs: [{ name: 'OUTPUT0', parameters: { binary_data: true } }, { name: 'OUTPUT1', parameters: { binary_data: true } }],
      },
      [bytesOf(a), bytesOf(b)],
    );
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/octet-stream');
    const headerLength = Number(r.headers.get('inference-header-content-length'));
    expect(headerLength).toBeGreaterThan(0);
    // The header is exactly the JSON; the rest is the outputs' bytes in order.
    expect(r.json).toMatchObject({ model_name: 'simple', model_version: '2' });
    expect(r.outputs.OUTPUT0).toMatchObject({ datatype: 'INT32', shape: x.shape, parameters: { binary_data_size: a.byteLength } });
    expect(Array.from(typedFromBytes('INT32', r.outputs.OUTPUT0!.bytes!))).toEqual(x.sum.map((v) => v + 1000));
    expect(Array.from(typedFromBytes('INT32', r.outputs.OUTPUT1!.bytes!))).toEqual(x.diff);
  });

  it('binary_data_output makes every output binary unless an output says otherwise', async () => {
    const x = simpleInputs(simple);
    const allBinary = await postJson(`${agent.url}/v2/models/simple/infer`, simpleRequest(x, { parameters: { binary_data_output: true } }));
    expect(allBinary.status).toBe(200);
    expect(allBinary.headers.get('inference-header-content-length')).not.toBeNull();
    expect(allBinary.outputs.OUTPUT0!.bytes).toBeDefined();
    expect(allBinary.outputs.OUTPUT1!.bytes).toBeDefined();
    expect(numbersOf(allBinary.outputs.OUTPUT0!)).toEqual(x.sum.map((v) => v + 1000));

    const mixed = await postJson(
      `${agent.url}/v2/models/simple/infer`,
      simpleRequest(x, { parameters: { binary_data_output: true }, outputs: [{ name: 'OUTPUT0', parameters: { binary_data: false } }, { name: 'OUTPUT1' }] }),
    );
    expect(mixed.status).toBe(200);
    expect(mixed.outputs.OUTPUT0!.data).toEqual(x.sum.map((v) => v + 1000));
    expect(mixed.outputs.OUTPUT1!.bytes).toBeDefined();
    expect(numbersOf(mixed.outputs.OUTPUT1!)).toEqual(x.diff);

    const plain = await postJson(`${agent.url}/v2/models/simple/infer`, simpleRequest(x));
    expect(plain.headers.get('inference-header-content-length')).toBeNull();
    expect(plain.headers.get('content-type')).toMatch(/^application\/json/);
  });

  describe('identity: every datatype round-trips', () => {
    let identity: ModelMeta;
    beforeAll(async () => {
      identity = (await get(`${agent.url}/v2/models/identity`)).body as unknown as ModelMeta;
    });

    it('has one x_<dt> → y_<dt> pair per numeric datatype', () => {
      const dts = identity.inputs.map((i) => i.datatype).sort();
      expect(dts).toEqual(Object.keys(SAMPLES).sort());
      for (const i of identity.inputs) {
        expect(i.name).toBe(`x_${i.datatype.toLowerCase()}`);
        expect(identity.outputs.find((o) => o.name === `y_${i.datatype.toLowerCase()}`)?.datatype).toBe(i.datatype);
      }
    });

    it('through JSON (FP16 as JSON numbers, BOOL as booleans)', async () => {
      const inputs = identity.inputs.map((i) => {
        const shape = concrete(i.shape, 2, 4);
        return { name: i.name, datatype: i.datatype, shape, data: SAMPLES[i.datatype as NumericWireType].json.slice(0, count(shape)) };
      });
      for (const i of inputs) expect(i.data.length, `${i.name} needs ${count(i.shape)} sample values`).toBe(count(i.shape));
      const r = await postJson(`${agent.url}/v2/models/identity/infer`, { inputs });
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      for (const i of inputs) {
        const out = r.outputs[i.name.replace(/^x_/, 'y_')]!;
        expect(out.datatype, i.name).toBe(i.datatype);
        expect(out.shape, i.name).toEqual(i.shape);
        expect(out.data, i.name).toEqual(i.data);
      }
    });

    it('through the binary extension, byte for byte (INT64/UINT64 beyond 2^53 included)', async () => {
      const inputs = identity.inputs.map((i) => {
        const shape = concrete(i.shape, 3, 5);
        const bytes = SAMPLES[i.datatype as NumericWireType].binary(count(shape));
        return { name: i.name, datatype: i.datatype, shape, bytes };
      });
      const r = await postBinary(
        `${agent.url}/v2/models/identity/infer`,
        {
          inputs: inputs.map((i) => ({ name: i.name, datatype: i.datatype, shape: i.shape, parameters: { binary_data_size: i.bytes.length } })),
          parameters: { binary_data_output: true },
        },
        inputs.map((i) => i.bytes),
      );
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      for (const i of inputs) {
        const out = r.outputs[i.name.replace(/^x_/, 'y_')]!;
        expect(out.datatype, i.name).toBe(i.datatype);
        expect(out.bytes?.equals(i.bytes), i.name).toBe(true);
      }
    });
  });

  it('answers an unknown model with 404 AGENT_MODEL_NOT_FOUND', async () => {
    expect(await get(`${agent.url}/v2/models/nope`)).toMatchObject({ status: 404, body: { code: 'AGENT_MODEL_NOT_FOUND' } });
    expect(await get(`${agent.url}/v2/models/nope/ready`)).toMatchObject({ status: 404, body: { code: 'AGENT_MODEL_NOT_FOUND' } });
    const r = await postJson(`${agent.url}/v2/models/nope/infer`, simpleRequest(simpleInputs(simple)));
    expect(r.status).toBe(404);
    expect(r.json).toMatchObject({ code: 'AGENT_MODEL_NOT_FOUND', error: expect.stringContaining('nope') });
  });

  it('answers an unknown route with a JSON 404', async () => {
    const r = await get(`${agent.url}/v2/nothing/here`);
    expect(r.status).toBe(404);
    expect(r.type).toMatch(/^application\/json/);
    expect(r.body).toMatchObject({ code: 'AGENT_NOT_FOUND', error: expect.any(String) });
  });
});

describe('KServe v2 version policy', () => {
  async function withAgent(models: Record<string, unknown>, check: (agent: RunningAgent, meta: ModelMeta) => Promise<void>): Promise<void> {
    const agent = await startAgent({ models: ['simple'], config: { models } });
    try {
      await check(agent, (await get(`${agent.url}/v2/models/simple`)).body as unknown as ModelMeta);
    } finally {
      await agent.stop();
    }
  }

  it("'all' serves both versions, which answer differently; the unversioned route takes the highest", async () => {
    await withAgent({ versionPolicy: 'all' }, async (agent, meta) => {
      expect(meta.versions).toEqual(['1', '2']);
      const x = simpleInputs(meta);
      const v1 = await postJson(`${agent.url}/v2/models/simple/versions/1/infer`, simpleRequest(x));
      const v2 = await postJson(`${agent.url}/v2/models/simple/versions/2/infer`, simpleRequest(x));
      const latest = await postJson(`${agent.url}/v2/models/simple/infer`, simpleRequest(x));
      expect([v1.status, v2.status, latest.status]).toEqual([200, 200, 200]);
      expect(v1.json.model_version).toBe('1');
      expect(v1.outputs.OUTPUT0!.data).toEqual(x.sum);
      expect(v2.outputs.OUTPUT0!.data).toEqual(x.sum.map((v) => v + 1000));
      expect(v1.outputs.OUTPUT1!.data).toEqual(v2.outputs.OUTPUT1!.data);
      expect(latest.json.model_version).toBe('2');
      expect((await get(`${agent.url}/v2/models/simple/versions/1/ready`)).body).toMatchObject({ ready: true, version: '1' });
    });
  });

  it('pinned {simple: [1]} serves version 1 only', async () => {
    await withAgent({ pinned: { simple: [1] } }, async (agent, meta) => {
      expect(meta.versions).toEqual(['1']);
      const x = simpleInputs(meta);
      const r = await postJson(`${agent.url}/v2/models/simple/infer`, simpleRequest(x));
      expect(r.status).toBe(200);
      expect(r.json.model_version).toBe('1');
      expect(r.outputs.OUTPUT0!.data).toEqual(x.sum);
      const v2 = await postJson(`${agent.url}/v2/models/simple/versions/2/infer`, simpleRequest(x));
      expect(v2.status).toBe(404);
      expect(v2.json.code).toBe('AGENT_VERSION_NOT_FOUND');
    });
  });
});

/** Per datatype: JSON values (exactly representable, FP16 included) and a binary payload of n elements. */
const SAMPLES: Record<NumericWireType, { json: (number | boolean)[]; binary: (n: number) => Buffer }> = {
  BOOL: { json: [true, false, true, true, false, false, true, false], binary: (n) => bytesOf(Uint8Array.from({ length: n }, (_, i) => i % 3 === 0 ? 1 : 0)) },
  UINT8: { json: [0, 1, 127, 128, 255, 42, 7, 200], binary: (n) => bytesOf(Uint8Array.from({ length: n }, (_, i) => (i * 37 + 255) % 256)) },
  UINT16: { json: [0, 1, 65535, 32768, 1000, 2, 3, 4], binary: (n) => bytesOf(Uint16Array.from({ length: n }, (_, i) => 65535 - i * 1013)) },
  UINT32: { json: [0, 1, 4294967295, 2147483648, 5, 6, 7, 8], binary: (n) => bytesOf(Uint32Array.from({ length: n }, (_, i) => 4294967295 - i * 977)) },
  UINT64: { json: [0, 1, Number.MAX_SAFE_INTEGER, 2 ** 40, 5, 6, 7, 8], binary: (n) => bytesOf(BigUint64Array.from({ length: n }, (_, i) => 2n ** 63n + BigInt(i) * 12345n)) },
  INT8: { json: [-128, 127, 0, -1, 1, 64, -64, 3], binary: (n) => bytesOf(Int8Array.from({ length: n }, (_, i) => ((i * 53) % 256) - 128)) },
  INT16: { json: [-32768, 32767, 0, -1, 1, 300, -300, 9], binary: (n) => bytesOf(Int16Array.from({ length: n }, (_, i) => -32768 + i * 4099)) },
  INT32: { json: [-2147483648, 2147483647, 0, -1, 1, 70000, -70000, 11], binary: (n) => bytesOf(Int32Array.from({ length: n }, (_, i) => -2147483648 + i * 65537)) },
  INT64: { json: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 0, -1, 1, 2 ** 40, -(2 ** 40), 13], binary: (n) => bytesOf(BigInt64Array.from({ length: n }, (_, i) => -(2n ** 62n) + BigInt(i) * 2n ** 60n)) },
  // Values exactly representable in the type (FP16: the smallest subnormal 2^-24 and the largest finite 65504),
  // so a round trip must give them back unchanged. No -0: JSON has no negative zero.
  FP16: { json: [0.5, -2, 65504, 2 ** -24, 0.0999755859375, -65504, 1024, 3.140625], binary: (n) => bytesOf(Uint16Array.from({ length: n }, (_, i) => [0x3c00, 0xc000, 0x7bff, 0x0001, 0x3555, 0x8000][i % 6]!)) },
  FP32: { json: [Math.fround(0.1), -2.5, 3.4028234663852886e38, 1.401298464324817e-45, 0, Math.fround(1e-10), 123456.7890625, -1], binary: (n) => bytesOf(Float32Array.from({ length: n }, (_, i) => Math.fround(Math.PI * (i - 2) ** 3))) },
  FP64: { json: [0.1, -2.5, Number.MAX_VALUE, Number.MIN_VALUE, 0, 1e-300, Math.PI, -1], binary: (n) => bytesOf(Float64Array.from({ length: n }, (_, i) => Math.E * (i - 3) ** 5)) },
};
