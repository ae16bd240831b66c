/**
 * The project's own models, generated into a temp dir and run with real onnxruntime sessions:
 * what a user of the demo would notice (the drawn rectangles are found, the colour is named, the
 * raw models compute what their manifests say, every datatype round-trips).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IDENTITY_DATATYPES, type IdentityDatatype } from '../../models/identity.js';
import { findRepoRoot, makeModels, type MakeModelsResult } from '../../models/make-models.js';
import type { ModelManifest } from '../../models/manifest.js';
import type { Scene } from '../../models/samples.js';
import { parseUltralyticsImgsz, parseUltralyticsNames, readOnnxMetadata } from '../../shared/src/onnx/model-metadata.js';
import { decodeYolov5, decodeYolov8, letterbox, postprocess, type Detection, type Letterboxed } from './support/yolo-reference.js';

const ULTRALYTICS_MODEL = path.resolve(findRepoRoot(), '../shared/models/detect/yolov8n-int8-640.onnx');
const HAVE_ULTRALYTICS = existsSync(ULTRALYTICS_MODEL);

let dir: string;
let made: MakeModelsResult;
const sessions = new Map<string, ort.InferenceSession>();

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'outpost-demo-models-'));
  made = await makeModels({ repositoryDir: path.join(dir, 'repository'), samplesDir: path.join(dir, 'samples') });
});

afterAll(async () => {
  await Promise.all([...sessions.values()].map((s) => s.release()));
  await rm(dir, { recursive: true, force: true });
});

const modelPath = (name: string, version = 1): string => path.join(dir, 'repository', name, String(version), 'model.onnx');
const sample = (file: string): Promise<Buffer> => readFile(path.join(dir, 'samples', file));

async function session(name: string, version = 1): Promise<ort.InferenceSession> {
  const key = `${name}/${version}`;
  let s = sessions.get(key);
  if (!s) {
    s = await ort.InferenceSession.create(modelPath(name, version));
    sessions.set(key, s);
  }
  return s;
}

/** Every drawn rectangle found once, right label, score ≥ 0.5, each edge within max(4 px, 3% of the side). */
function expectGroundTruth(detections: Detection[], scene: Scene, labels: readonly string[]): void {
  const found = detections.map((d) => ({ label: labels[d.classId], score: +d.score.toFixed(3), box: d.box }));
  expect(found, 'one detection per drawn rectangle').toHaveLength(scene.objects.length);
  for (const truth of scene.objects) {
    const { x1, y1, x2, y2 } = truth.box;
    const tolX = Math.max(4, 0.03 * (x2 - x1));
    const tolY = Math.max(4, 0.03 * (y2 - y1));
    const match = found.find(
      (d) => d.label === truth.label && Math.abs(d.box.x1 - x1) <= tolX && Math.abs(d.box.x2 - x2) <= tolX && Math.abs(d.box.y1 - y1) <= tolY && Math.abs(d.box.y2 - y2) <= tolY,
    );
    expect(match, `${truth.label} ${JSON.stringify(truth.box)} among ${JSON.stringify(found)}`).toBeDefined();
    expect(match?.score).toBeGreaterThanOrEqual(0.5);
  }
}

const SAMPLES = [
  { image: 'shapes.jpg', truth: 'shapes.json' },
  { image: 'shapes-1080p.jpg', truth: 'shapes-1080p.json' },
  { image: 'shapes.png', truth: 'shapes.json' },
];

async function runDetector(name: string, images: Letterboxed[]): Promise<Detection[][]> {
  const s = await session(name);
  const batch = new Float32Array(images.length * 3 * 640 * 640);
  images.forEach((lb, i) => batch.set(lb.data, i * lb.data.length));
  const out = await s.run({ images: new ort.Tensor('float32', batch, [images.length, 3, 640, 640]) });
  const tensor = out.output0 as ort.Tensor;
  const decode = name === 'demo-shapes' ? decodeYolov8 : decodeYolov5;
  return images.map((lb, i) => postprocess(decode(tensor.data as Float32Array, tensor.dims, i, 0.25), lb));
}

describe('make-models', () => {
  it('writes every model version with a manifest whose sha256 matches the file', async () => {
    expect(made.models.map((m) => `${m.name}/${m.version}`)).toEqual([
      'demo-shapes/1', 'demo-shapes-v5/1', 'demo-color/1', 'simple/1', 'simple/2', 'identity/1', 'slow/1',
    ]);
    for (const m of made.models) {
      const manifest = JSON.parse(await readFile(path.join(path.dirname(m.path), 'manifest.json'), 'utf8')) as ModelManifest;
      expect([manifest.name, manifest.version]).toEqual([m.name, m.version]);
      expect(manifest.sha256).toBe(createHash('sha256').update(await readFile(m.path)).digest('hex'));
    }
  });

  it('is deterministic and idempotent: a second run into the same dirs changes no file', async () => {
    const again = await makeModels({ repositoryDir: path.join(dir, 'repository'), samplesDir: path.join(dir, 'samples') });
    expect(again.written).toEqual([]);
    expect(again.models.map((m) => m.sha256)).toEqual(made.models.map((m) => m.sha256));
  });

  it('writes a KServe v2 request for simple that the model answers', async () => {
    const request = JSON.parse((await sample('request.json')).toString('utf8')) as { inputs: { name: string; shape: number[]; data: number[] }[] };
    const feeds = Object.fromEntries(request.inputs.map((t) => [t.name, new ort.Tensor('int32', Int32Array.from(t.data), t.shape)]));
    const out = await (await session('simple')).run(feeds);
    expect(Array.from(out.OUTPUT0!.data as Int32Array)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
  });
});

describe.each(['demo-shapes', 'demo-shapes-v5'])('%s finds the drawn rectangles', (name) => {
  it.each(SAMPLES)('in $image', async ({ image, truth }) => {
    const scene = JSON.parse((await sample(truth)).toString('utf8')) as Scene;
    const [detections] = await runDetector(name, [await letterbox(await sample(image))]);
    expectGroundTruth(detections!, scene, ['red', 'green', 'blue']);
  });

  it('in a batch of 3 images of different sizes (dynamic batch)', async () => {
    const images = await Promise.all(SAMPLES.map(async (s) => letterbox(await sample(s.image))));
    const results = await runDetector(name, images);
    for (const [i, s] of SAMPLES.entries()) {
      expectGroundTruth(results[i]!, JSON.parse((await sample(s.truth)).toString('utf8')) as Scene, ['red', 'green', 'blue']);
    }
  });

  it('finds nothing in a plain grey image', async () => {
    const grey = await sharp({ create: { width: 800, height: 600, channels: 3, background: { r: 128, g: 128, b: 128 } } }).jpeg().toBuffer();
    const [detections] = await runDetector(name, [await letterbox(grey)]);
    expect(detections).toEqual([]);
  });
});

describe('demo-color', () => {
  it.each([
    ['red', { r: 220, g: 30, b: 30 }],
    ['blue', { r: 30, g: 60, b: 220 }],
    ['green', { r: 30, g: 190, b: 30 }],
    ['grey', { r: 128, g: 128, b: 128 }],
  ] as const)('calls a solid %s image %s', async (label, colour) => {
    // What the server does per the manifest: stretch to 64x64, RGB/255, NCHW, softmax over the logits.
    const { data } = await sharp({ create: { width: 300, height: 200, channels: 3, background: colour } })
      .resize(64, 64, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true });
    const input = new Float32Array(3 * 64 * 64);
    for (let i = 0; i < 64 * 64; i++) for (let c = 0; c < 3; c++) input[c * 4096 + i] = data[i * 3 + c]! / 255;
    const out = await (await session('demo-color')).run({ input: new ort.Tensor('float32', input, [1, 3, 64, 64]) });
    const logits = Array.from(out.logits!.data as Float32Array);
    expect(out.logits!.dims).toEqual([1, 4]);
    const exp = logits.map((v) => Math.exp(v - Math.max(...logits)));
    const probs = exp.map((v) => v / exp.reduce((a, b) => a + b));
    const best = probs.indexOf(Math.max(...probs));
    expect(['red', 'green', 'blue', 'grey'][best]).toBe(label);
    expect(probs[best]).toBeGreaterThan(0.8);
  });
});

describe('simple', () => {
  const a = Int32Array.from({ length: 32 }, (_, i) => i * 3 - 40);
  const b = Int32Array.from({ length: 32 }, (_, i) => 7 - i);
  const feeds = { INPUT0: new ort.Tensor('int32', a, [2, 16]), INPUT1: new ort.Tensor('int32', b, [2, 16]) };

  it('version 1 returns the sum and the difference for a batch of 2', async () => {
    const out = await (await session('simple', 1)).run(feeds);
    expect(out.OUTPUT0!.dims).toEqual([2, 16]);
    expect(Array.from(out.OUTPUT0!.data as Int32Array)).toEqual(Array.from(a, (v, i) => v + b[i]!));
    expect(Array.from(out.OUTPUT1!.data as Int32Array)).toEqual(Array.from(a, (v, i) => v - b[i]!));
  });

  it('version 2 adds 1000 to the sum, so clients can tell the versions apart', async () => {
    const out = await (await session('simple', 2)).run(feeds);
    expect(Array.from(out.OUTPUT0!.data as Int32Array)).toEqual(Array.from(a, (v, i) => v + b[i]! + 1000));
    expect(Array.from(out.OUTPUT1!.data as Int32Array)).toEqual(Array.from(a, (v, i) => v - b[i]!));
  });
});

describe('identity', () => {
  const values: Record<IdentityDatatype, [ort.Tensor.Type, ort.Tensor.DataType]> = {
    FP32: ['float32', Float32Array.from([0, -1.5, 3.4e38, 1e-30, -0, 42])],
    FP64: ['float64', Float64Array.from([0, -1.5, 1.7e308, 5e-324, Math.PI, 42])],
    FP16: ['float16', Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00])], // 1, -2, max, min subnormal, -0, +inf
    INT8: ['int8', Int8Array.from([-128, 127, 0, -1, 1, 42])],
    INT16: ['int16', Int16Array.from([-32768, 32767, 0, -1, 1, 42])],
    INT32: ['int32', Int32Array.from([-(2 ** 31), 2 ** 31 - 1, 0, -1, 1, 42])],
    INT64: ['int64', BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 0n, -1n, 2n ** 53n + 1n, 42n])],
    UINT8: ['uint8', Uint8Array.from([0, 255, 1, 128, 7, 42])],
    UINT16: ['uint16', Uint16Array.from([0, 65535, 1, 32768, 7, 42])],
    UINT32: ['uint32', Uint32Array.from([0, 2 ** 32 - 1, 1, 2 ** 31, 7, 42])],
    UINT64: ['uint64', BigUint64Array.from([0n, 2n ** 64n - 1n, 1n, 2n ** 63n, 2n ** 53n + 1n, 42n])],
    BOOL: ['bool', Uint8Array.from([1, 0, 0, 1, 1, 0])],
  };

  it('round-trips every datatype bit for bit, each input with its own shape', async () => {
    const types = Object.keys(IDENTITY_DATATYPES) as IdentityDatatype[];
    expect(types).toHaveLength(12);
    const feeds: Record<string, ort.Tensor> = {};
    types.forEach((dt, i) => {
      const [type, data] = values[dt];
      feeds[`x_${dt.toLowerCase()}`] = new ort.Tensor(type, data, i % 2 ? [2, 3] : [6, 1]);
    });
    const out = await (await session('identity')).run(feeds);
    types.forEach((dt, i) => {
      const y = out[`y_${dt.toLowerCase()}`]!;
      expect(y.type, dt).toBe(values[dt][0]);
      expect(y.dims, dt).toEqual(i % 2 ? [2, 3] : [6, 1]);
      expect(Array.from(y.data as ArrayLike<number | bigint>), dt).toEqual(Array.from(values[dt][1] as ArrayLike<number | bigint>));
    });
  });
});

describe('slow', () => {
  it('returns sum(x · xT): n²·m for a matrix of ones', async () => {
    const [n, m] = [30, 7];
    const out = await (await session('slow')).run({ x: new ort.Tensor('float32', new Float32Array(n * m).fill(1), [n, m]) });
    expect(out.y!.dims).toEqual([1]);
    expect((out.y!.data as Float32Array)[0]).toBe(n * n * m);
  });
});

describe('readOnnxMetadata', () => {
  it('reads the Ultralytics-style metadata of the demo detector', async () => {
    const meta = readOnnxMetadata(await readFile(modelPath('demo-shapes')));
    expect(meta.irVersion).toBe(8);
    expect(meta.opsets).toEqual({ 'ai.onnx': 17 });
    expect(parseUltralyticsNames(meta.metadataProps.names!)).toEqual(['red', 'green', 'blue']);
    expect(parseUltralyticsImgsz(meta.metadataProps.imgsz!)).toEqual([640, 640]);
    expect(meta.metadataProps).toMatchObject({ task: 'detect', stride: '32' });
    expect(meta.metadataProps.author).toMatch(/not trained/);
  });

  it.skipIf(!HAVE_ULTRALYTICS)(
    HAVE_ULTRALYTICS ? 'reads the 80 COCO names of a real Ultralytics export' : `reads a real Ultralytics export (skipped: ${ULTRALYTICS_MODEL} not found)`,
    async () => {
      const meta = readOnnxMetadata(await readFile(ULTRALYTICS_MODEL));
      expect(meta).toMatchObject({ irVersion: 7, producerName: 'onnx.quantize', opsets: { 'ai.onnx': 12 } });
      const names = parseUltralyticsNames(meta.metadataProps.names!);
      expect(names).toHaveLength(80);
      expect([names[0], names[77], names[79]]).toEqual(['person', 'teddy bear', 'toothbrush']);
      expect(parseUltralyticsImgsz(meta.metadataProps.imgsz!)).toEqual([640, 640]);
    },
  );
});
