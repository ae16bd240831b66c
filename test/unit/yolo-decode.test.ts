import { describe, expect, it } from 'vitest';
import type { HostTensor } from '../../agent/src/inference/tensor.js';
import type { Candidate } from '../../agent/src/vision/nms.js';
import type { ImageTransform } from '../../agent/src/vision/preprocess.js';
import { decodeYolo, toImagePixels, yoloClassCount, MAX_CANDIDATES } from '../../agent/src/vision/yolo.js';

const fp32 = (dims: number[], values: number[]): HostTensor => ({ datatype: 'FP32', dims, data: Float32Array.from(values) });

/** Rounds a candidate's floats (stored as float32) so expectations can be written as exact numbers. */
const plain = (c: Candidate) => ({
  classId: c.classId,
  score: Math.round(c.score * 1e4) / 1e4,
  box: { x1: Math.round(c.box.x1 * 1e3) / 1e3, y1: Math.round(c.box.y1 * 1e3) / 1e3, x2: Math.round(c.box.x2 * 1e3) / 1e3, y2: Math.round(c.box.y2 * 1e3) / 1e3 },
});

/** A [B, 4+C, N] tensor from per-anchor columns [cx, cy, w, h, ...classScores], one list per image. */
function yolov8(images: number[][][]): HostTensor {
  const rows = images[0]![0]!.length;
  const n = images[0]!.length;
  const values: number[] = [];
  for (const anchors of images) for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) values.push(anchors[i]![r]!);
  return fp32([images.length, rows, n], values);
}

describe('decodeYolo yolov8 [B, 4+C, N]', () => {
  const anchors = [
    [50, 60, 20, 10, 0.9, 0.1], // class 0
    [100, 100, 40, 40, 0.2, 0.6], // class 1
    [10, 10, 4, 4, 0.1, 0.05], // below confidence
  ];

  it('decodes centre/size columns into corner boxes with the best class and its score', () => {
    const out = decodeYolo(yolov8([anchors]), 0, 'yolov8', 0.25).map(plain);
    expect(out).toEqual([
      { classId: 0, score: 0.9, box: { x1: 40, y1: 55, x2: 60, y2: 65 } },
      { classId: 1, score: 0.6, box: { x1: 80, y1: 80, x2: 120, y2: 120 } },
    ]);
  });

  it('drops candidates under the confidence threshold', () => {
    expect(decodeYolo(yolov8([anchors]), 0, 'yolov8', 0.7).map((c) => c.classId)).toEqual([0]);
    expect(decodeYolo(yolov8([anchors]), 0, 'yolov8', 0.95)).toEqual([]);
    expect(decodeYolo(yolov8([anchors]), 0, 'yolov8', 0.05)).toHaveLength(3);
  });

  it('reads image b of a batch from its own slice', () => {
    const second = [
      [30, 30, 10, 10, 0.1, 0.8],
      [0, 0, 1, 1, 0, 0],
      [0, 0, 1, 1, 0, 0],
    ];
    const t = yolov8([anchors, second]);
    expect(decodeYolo(t, 1, 'yolov8', 0.25).map(plain)).toEqual([{ classId: 1, score: 0.8, box: { x1: 25, y1: 25, x2: 35, y2: 35 } }]);
    expect(decodeYolo(t, 0, 'yolov8', 0.25)).toHaveLength(2);
  });

  it(`cuts more than MAX_CANDIDATES (${MAX_CANDIDATES}) candidates to the best-scoring ones`, () => {
    const n = MAX_CANDIDATES + 5;
    const values = new Float32Array(5 * n);
    for (let i = 0; i < n; i++) {
      values[2 * n + i] = 2; // w
      values[3 * n + i] = 2; // h
      values[4 * n + i] = 0.5 + (i / n) * 0.4; // rising scores: the first 5 anchors are the worst
    }
    const out = decodeYolo({ datatype: 'FP32', dims: [1, 5, n], data: values }, 0, 'yolov8', 0.25);
    expect(out).toHaveLength(MAX_CANDIDATES);
    expect(Math.min(...out.map((c) => c.score))).toBeCloseTo(0.5 + (5 / n) * 0.4, 5);
  });
});

describe('decodeYolo yolov5 [B, N, 5+C]', () => {
  const rows = [
    [50, 50, 20, 20, 0.8, 0.5, 0.9], // score 0.8 × 0.9 = 0.72, class 1
    [10, 10, 4, 4, 0.2, 1.0, 0.0], // objectness under threshold
    [70, 70, 10, 10, 0.5, 0.4, 0.3], // 0.5 × 0.4 = 0.2 under threshold
    [30, 40, 10, 20, 0.9, 1.0, 0.1], // 0.9, class 0
  ];
  const t = fp32([1, rows.length, 7], rows.flat());

  it('scores are objectness × best class probability, filtered by confidence', () => {
    expect(decodeYolo(t, 0, 'yolov5', 0.25).map(plain)).toEqual([
      { classId: 1, score: 0.72, box: { x1: 40, y1: 40, x2: 60, y2: 60 } },
      { classId: 0, score: 0.9, box: { x1: 25, y1: 30, x2: 35, y2: 50 } },
    ]);
  });

  it('a low class probability filters even a confident object', () => {
    expect(decodeYolo(t, 0, 'yolov5', 0.1).map((c) => Math.round(c.score * 100))).toEqual([72, 20, 20, 90]);
    expect(decodeYolo(t, 0, 'yolov5', 0.8).map((c) => c.classId)).toEqual([0]);
  });
});

describe('decodeYolo yolox (raw head over stride 8/16/32 grids)', () => {
  // A 32×32 input: stride 8 → 4×4 cells (rows 0–15), 16 → 2×2 (16–19), 32 → 1×1 (20). 21 rows, 1 class.
  const n = 21;
  const raw = (edits: Record<number, number[]>): HostTensor => {
    const values = new Array<number>(n * 6).fill(0);
    for (const [row, cols] of Object.entries(edits)) cols.forEach((v, c) => (values[Number(row) * 6 + c] = v));
    return fp32([1, n, 6], values);
  };

  it('adds the cell offset and multiplies by the stride; sizes are exp(log size) × stride', () => {
    const t = raw({
      6: [0.5, 0.25, Math.log(2), 0, 0.9, 1], // stride 8, gx 2, gy 1 → centre (20, 10), size 16×8
      17: [0, 0, 0, 0, 0.8, 1], // stride 16, gx 1, gy 0 → centre (16, 0), size 16×16
      20: [0.5, 0.5, 0, 0, 0.7, 1], // stride 32, the single cell → centre (16, 16), size 32×32
    });
    expect(decodeYolo(t, 0, 'yolox', 0.25, [32, 32]).map(plain)).toEqual([
      { classId: 0, score: 0.9, box: { x1: 12, y1: 6, x2: 28, y2: 14 } },
      { classId: 0, score: 0.8, box: { x1: 8, y1: -8, x2: 24, y2: 8 } },
      { classId: 0, score: 0.7, box: { x1: 0, y1: 0, x2: 32, y2: 32 } },
    ]);
  });

  it('walks a non-square input row by row (width cells per row)', () => {
    // 16 high × 32 wide: stride 8 → 2 rows × 4 cols (8 cells), 16 → 1×2 (2), 32 → 0×1 (0) = 10 rows.
    const values = new Array<number>(10 * 6).fill(0);
    values.splice(5 * 6, 6, 0, 0, 0, 0, 0.9, 1); // row 5 = stride 8, gy 1, gx 1 → centre (8, 8)
    const out = decodeYolo(fp32([1, 10, 6], values), 0, 'yolox', 0.25, [16, 32]).map(plain);
    expect(out).toEqual([{ classId: 0, score: 0.9, box: { x1: 4, y1: 4, x2: 12, y2: 12 } }]);
  });

  it('refuses an output whose row count does not match the input grid', () => {
    expect(() => decodeYolo(fp32([1, n + 1, 6], new Array((n + 1) * 6).fill(0)), 0, 'yolox', 0.25, [32, 32])).toThrow(/grid cells/);
    expect(() => decodeYolo(fp32([1, n - 1, 6], new Array((n - 1) * 6).fill(0)), 0, 'yolox', 0.25, [32, 32])).toThrow(/grid cells/);
  });

  it('needs the input size', () => {
    expect(() => decodeYolo(raw({ 0: [0, 0, 0, 0, 0.9, 1] }), 0, 'yolox', 0.25)).toThrow(/input size/);
  });
});

describe('yoloClassCount', () => {
  it('reads the class count from the layout, or undefined when the shape does not fit', () => {
    expect(yoloClassCount([1, 84, 8400], 'yolov8')).toBe(80);
    expect(yoloClassCount([1, 25200, 85], 'yolov5')).toBe(80);
    expect(yoloClassCount([1, 8400, 85], 'yolox')).toBe(80);
    expect(yoloClassCount([1, 4, 8400], 'yolov8')).toBeUndefined();
    expect(yoloClassCount([84, 8400], 'yolov8')).toBeUndefined();
  });
});

describe('toImagePixels', () => {
  // A 200×100 image letterboxed into 64×64: scale 0.32 → 64×32, padded 16 px above and below.
  const t: ImageTransform = { width: 200, height: 100, scaleX: 0.32, scaleY: 0.32, padX: 0, padY: 16 };

  it('removes the padding and the scale, keeping score and class', () => {
    const mapped = toImagePixels({ box: { x1: 16, y1: 24, x2: 48, y2: 40 }, score: 0.5, classId: 3 }, t);
    expect(mapped.score).toBe(0.5);
    expect(mapped.classId).toBe(3);
    expect(mapped.box.x1).toBeCloseTo(50, 6);
    expect(mapped.box.y1).toBeCloseTo(25, 6);
    expect(mapped.box.x2).toBeCloseTo(150, 6);
    expect(mapped.box.y2).toBeCloseTo(75, 6);
  });

  it('uses separate x and y scales and horizontal padding', () => {
    const stretch: ImageTransform = { width: 100, height: 50, scaleX: 2, scaleY: 4, padX: 10, padY: 0 };
    const mapped = toImagePixels({ box: { x1: 30, y1: 40, x2: 110, y2: 200 }, score: 1, classId: 0 }, stretch);
    expect(mapped.box).toEqual({ x1: 10, y1: 10, x2: 50, y2: 50 });
  });

  it('clamps boxes that reach into the padding or past the edge to the image', () => {
    const mapped = toImagePixels({ box: { x1: -10, y1: 0, x2: 70, y2: 60 }, score: 1, classId: 0 }, t);
    expect(mapped.box).toEqual({ x1: 0, y1: 0, x2: 200, y2: 100 });
  });
});
