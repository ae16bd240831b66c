/**
 * The convenience endpoints on the project's own demo models, against the samples' ground truth:
 * /v1/models/<detector>/detect returns exactly the drawn rectangles (labels and boxes, in the image's own
 * pixels), its query parameters change the result as docs/api.md says, the YOLOv5 layout and a bare
 * model.onnx without manifest give the same boxes, and /classify names a solid colour.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { encodeScene } from '../../models/samples.js';
import { GENERATED_REPOSITORY, GENERATED_SAMPLES } from '../helpers/paths.js';

interface Box { x1: number; y1: number; x2: number; y2: number }
interface Detection { label: string; class_id: number; score: number; box: Box }
interface DetectReply { model: string; version: string; width: number; height: number; detections: Detection[]; timing: Record<string, number> }
interface Scene { width: number; height: number; objects: { label: string; box: Box }[] }

/**
 * Box edges may differ from the drawn rectangle by this many model-input pixels (the detector sees the
 * image letterboxed to 640: ×0.5 for 1280x720, ×1/3 for 1920x1080), plus JPEG's blur of the edges.
 */
const EDGE_TOLERANCE_MODEL_PX = 1;

const SAMPLES: { file: string; type: string; truth: string }[] = [
  { file: 'shapes.jpg', type: 'image/jpeg', truth: 'shapes.json' },
  { file: 'shapes.png', type: 'image/png', truth: 'shapes.json' },
  { file: 'shapes-1080p.jpg', type: 'image/jpeg', truth: 'shapes-1080p.json' },
];

const sample = (file: string): Buffer => readFileSync(path.join(GENERATED_SAMPLES, file));
const truthOf = (file: string): Scene => JSON.parse(readFileSync(path.join(GENERATED_SAMPLES, file), 'utf8')) as Scene;

describe('demo models through /detect and /classify', () => {
  let agent: RunningAgent;
  let repository: string;

  beforeAll(async () => {
    repository = mkdtempSync(path.join(os.tmpdir(), 'outpost-demo-repo-'));
    for (const m of ['demo-shapes', 'demo-shapes-v5', 'demo-color', 'simple']) cpSync(path.join(GENERATED_REPOSITORY, m), path.join(repository, m), { recursive: true });
    // A bare copy: model.onnx alone, as someone would drop an Ultralytics export into the repository.
    mkdirSync(path.join(repository, 'bare-shapes', '1'), { recursive: true });
    cpSync(path.join(GENERATED_REPOSITORY, 'demo-shapes', '1', 'model.onnx'), path.join(repository, 'bare-shapes', '1', 'model.onnx'));
    agent = await startAgent({ repository });
  });
  afterAll(async () => {
    await agent?.stop();
    if (repository) rmSync(repository, { recursive: true, force: true });
  });

  async function detect(model: string, file: string, type: string, query = ''): Promise<DetectReply> {
    const res = await fetch(`${agent.url}/v1/models/${model}/detect${query}`, { method: 'POST', headers: { 'content-type': type }, body: sample(file) });
    const body = (await res.json()) as DetectReply;
    expect(res.status, JSON.stringify(body)).toBe(200);
    return body;
  }

  describe.each(SAMPLES)('demo-shapes on $file', ({ file, type, truth }) => {
    it('finds exactly the drawn rectangles, boxes in the image\'s pixels, with timings', async () => {
      const scene = truthOf(truth);
      const r = await detect('demo-shapes', file, type);
      expect(r).toMatchObject({ model: 'demo-shapes', version: '1', width: scene.width, height: scene.height });
      for (const key of ['decode_ms', 'queue_ms', 'infer_ms', 'post_ms', 'total_ms']) {
        expect(r.timing[key], key).toBeGreaterThanOrEqual(0);
      }
      expect(r.timing.total_ms).toBeGreaterThanOrEqual(r.timing.infer_ms!);
      expect(unmatched(r.detections, scene)).toEqual({ missed: [], extra: [] });
    });
  });

  describe('query parameters', () => {
    it('max_detections=1 keeps only the best box', async () => {
      const all = await detect('demo-shapes', 'shapes.jpg', 'image/jpeg');
      const one = await detect('demo-shapes', 'shapes.jpg', 'image/jpeg', '?max_detections=1');
      expect(one.detections).toHaveLength(1);
      expect(one.detections[0]).toEqual(all.detections[0]);
      expect(Math.max(...all.detections.map((d) => d.score))).toBe(one.detections[0]!.score);
    });

    it('confidence moves the score cut both ways (default 0.25 from the manifest)', async () => {
      // The demo detector scores a rectangle by its pixel count (presence = sigmoid((px − 64) / 8) in model
      // pixels): an 18 px square at ×0.5 letterbox scores ≈0.89, a 12 px one ≈0.03; the big one scores ≈1.
      const big = { label: 'red' as const, box: { x1: 100, y1: 100, x2: 300, y2: 250 } };
      const square = (side: number) => ({ label: 'blue' as const, box: { x1: 600, y1: 300, x2: 600 + side, y2: 300 + side } });
      const post = async (side: number, query: string) => {
        const png = await encodeScene({ width: 1280, height: 720, objects: [big, square(side)] }, 'png');
        const res = await fetch(`${agent.url}/v1/models/demo-shapes/detect${query}`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
        expect(res.status).toBe(200);
        return ((await res.json()) as DetectReply).detections.map((d) => d.label).sort();
      };
      expect(await post(18, '')).toEqual(['blue', 'red']);
      expect(await post(18, '?confidence=0.99')).toEqual(['red']);
      expect(await post(12, '')).toEqual(['red']);
      expect(await post(12, '?confidence=0.01')).toEqual(['blue', 'red']);
    });

    it('iou=1 turns NMS off, so the duplicate boxes of neighbouring cells come back', async () => {
      const all = await detect('demo-shapes', 'shapes.jpg', 'image/jpeg');
      const noNms = await detect('demo-shapes', 'shapes.jpg', 'image/jpeg', '?iou=1');
      expect(noNms.detections.length).toBeGreaterThan(all.detections.length);
      // Every extra box is a duplicate of a kept one (same class, heavily overlapping).
      for (const d of noNms.detections) expect(all.detections.some((k) => k.label === d.label && iou(k.box, d.box) > 0.5), JSON.stringify(d)).toBe(true);
    });

    it('refuses out-of-range values with 400 AGENT_BAD_QUERY', async () => {
      for (const q of ['?confidence=1.5', '?iou=-0.1', '?max_detections=0', '?max_detections=2.5', '?confidence=abc']) {
        const res = await fetch(`${agent.url}/v1/models/demo-shapes/detect${q}`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: sample('shapes.jpg') });
        expect(res.status, q).toBe(400);
        expect(((await res.json()) as { code: string }).code, q).toBe('AGENT_BAD_QUERY');
      }
    });
  });

  it('demo-shapes-v5 (YOLOv5 layout [B, N, 5+C]) gives the same boxes as the YOLOv8 layout', async () => {
    for (const { file, type } of SAMPLES) {
      const v8 = await detect('demo-shapes', file, type);
      const v5 = await detect('demo-shapes-v5', file, type);
      expect(comparable(v5.detections), file).toEqual(comparable(v8.detections));
    }
  });

  it('a bare model.onnx without manifest detects with labels, size and task from its ONNX metadata', async () => {
    const meta = (await (await fetch(`${agent.url}/v2/models/bare-shapes`)).json()) as { parameters: Record<string, unknown> };
    expect(meta.parameters).toMatchObject({ task: 'detect', source: 'onnx-metadata', labels: 3, image_size: [640, 640], detector_format: 'yolov8' });
    const scene = truthOf('shapes.json');
    const bare = await detect('bare-shapes', 'shapes.jpg', 'image/jpeg');
    expect(unmatched(bare.detections, scene)).toEqual({ missed: [], extra: [] });
    expect(comparable(bare.detections)).toEqual(comparable((await detect('demo-shapes', 'shapes.jpg', 'image/jpeg')).detections));
  });

  it('/classify on demo-color names the colour of a solid PNG', async () => {
    const colours: [string, { r: number; g: number; b: number }][] = [
      ['red', { r: 215, g: 40, b: 40 }],
      ['green', { r: 30, g: 190, b: 30 }],
      ['blue', { r: 35, g: 65, b: 215 }],
      ['grey', { r: 128, g: 128, b: 128 }],
    ];
    for (const [label, background] of colours) {
      const png = await sharp({ create: { width: 100, height: 80, channels: 3, background } }).png().toBuffer();
      const res = await fetch(`${agent.url}/v1/models/demo-color/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
      const body = (await res.json()) as { model: string; classes: { label: string; score: number }[]; timing: Record<string, number> };
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(body.classes[0]!.label, label).toBe(label);
      // Grey wins by a constant logit (≈0.87 after softmax), the colours by their contrast (≈1).
      expect(body.classes[0]!.score, label).toBeGreaterThan(0.8);
      expect(body.classes.map((c) => c.label).sort()).toEqual(['blue', 'green', 'grey', 'red']); // top_k = 4 in its manifest
      expect(body.timing.total_ms).toBeGreaterThanOrEqual(0);
    }
  });

  it('answers /detect on a classifier, /classify on a detector and /detect on a raw model with 400 AGENT_TASK_MISMATCH', async () => {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 0, b: 0 } } }).png().toBuffer();
    for (const url of ['/v1/models/demo-color/detect', '/v1/models/demo-shapes/classify', '/v1/models/simple/detect']) {
      const res = await fetch(`${agent.url}${url}`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
      expect(res.status, url).toBe(400);
      expect(((await res.json()) as { code: string }).code, url).toBe('AGENT_TASK_MISMATCH');
    }
  });
});

function iou(a: Box, b: Box): number {
  const w = Math.max(0, Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1));
  const h = Math.max(0, Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1));
  const inter = w * h;
  return inter / ((a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter);
}

/** Ground-truth objects with no detection of their label within tolerance, and detections matching none. */
function unmatched(detections: Detection[], scene: Scene): { missed: string[]; extra: string[] } {
  const tolerance = EDGE_TOLERANCE_MODEL_PX / Math.min(640 / scene.width, 640 / scene.height);
  const left = [...detections];
  const missed: string[] = [];
  for (const o of scene.objects) {
    const at = left.findIndex((d) => d.label === o.label && (['x1', 'y1', 'x2', 'y2'] as const).every((k) => Math.abs(d.box[k] - o.box[k]) <= tolerance));
    if (at < 0) missed.push(`${o.label} ${JSON.stringify(o.box)}`);
    else left.splice(at, 1);
  }
  return { missed, extra: left.map((d) => `${d.label} ${d.score} ${JSON.stringify(d.box)}`) };
}

/** Label and box to 0.5 px, sorted: for comparing two detectors that should agree. */
function comparable(ds: Detection[]): string[] {
  const r = (v: number) => Math.round(v * 2) / 2;
  return ds.map((d) => `${d.label} ${r(d.box.x1)} ${r(d.box.y1)} ${r(d.box.x2)} ${r(d.box.y2)}`).sort();
}
