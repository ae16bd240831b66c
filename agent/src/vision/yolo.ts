import type { HostTensor } from '../inference/tensor.js';
import type { ImageTransform } from './preprocess.js';
import type { Candidate } from './nms.js';

/** Pre-NMS cap: more candidates than this are cut to the best ones (NMS is quadratic in them, on the event loop). */
export const MAX_CANDIDATES = 3_000;

export type YoloFormat = 'yolov8' | 'yolov5' | 'yolox';

/** The number of classes an output of this layout carries, or undefined when the shape does not fit it. */
export function yoloClassCount(dims: readonly number[], format: YoloFormat): number | undefined {
  if (dims.length !== 3) return undefined;
  const c = format === 'yolov8' ? dims[1]! - 4 : dims[2]! - 5;
  return c >= 1 ? c : undefined;
}

/**
 * Candidates of image `b` of a YOLO output, with boxes in model-input pixels and score ≥ `confidence`.
 * yolov8: [B, 4+C, N] rows cx, cy, w, h, class scores (Ultralytics YOLOv8/YOLO11).
 * yolov5: [B, N, 5+C] columns cx, cy, w, h, objectness, class probabilities; score = obj × class.
 * yolox: the same columns from YOLOX's raw head (exported with decode_in_inference off): rows walk the
 *   stride 8, 16, 32 grids of the `inputSize` [h, w] and cx = (dx + gx)·stride, w = exp(lw)·stride.
 */
export function decodeYolo(output: HostTensor, b: number, format: YoloFormat, confidence: number, inputSize?: readonly [number, number]): Candidate[] {
  const data = output.data as Float32Array;
  const out: Candidate[] = [];
  if (format === 'yolov8') {
    const [, rows, n] = output.dims as [number, number, number];
    const base = b * rows * n;
    const classes = rows - 4;
    // Class-major walk: each class row is contiguous, so this reads memory in order.
    const best = new Float32Array(n);
    const bestClass = new Int32Array(n);
    for (let c = 0; c < classes; c++) {
      const row = base + (4 + c) * n;
      for (let i = 0; i < n; i++) {
        const s = data[row + i]!;
        if (s > best[i]!) {
          best[i] = s;
          bestClass[i] = c;
        }
      }
    }
    for (let i = 0; i < n; i++) {
      const score = best[i]!;
      if (score < confidence) continue;
      out.push(candidate(data[base + i]!, data[base + n + i]!, data[base + 2 * n + i]!, data[base + 3 * n + i]!, score, bestClass[i]!));
    }
  } else {
    const [, n, cols] = output.dims as [number, number, number];
    const base = b * n * cols;
    const grid = format === 'yolox' ? yoloxGrid(n, inputSize) : undefined;
    for (let i = 0; i < n; i++) {
      const at = base + i * cols;
      const obj = data[at + 4]!;
      if (obj < confidence) continue;
      let bestScore = -Infinity;
      let bestClass = 0;
      for (let c = 5; c < cols; c++) {
        if (data[at + c]! > bestScore) {
          bestScore = data[at + c]!;
          bestClass = c - 5;
        }
      }
      const score = obj * bestScore;
      if (score < confidence) continue;
      if (grid) {
        const s = grid.stride[i]!;
        out.push(candidate((data[at]! + grid.x[i]!) * s, (data[at + 1]! + grid.y[i]!) * s, Math.exp(data[at + 2]!) * s, Math.exp(data[at + 3]!) * s, score, bestClass));
      } else out.push(candidate(data[at]!, data[at + 1]!, data[at + 2]!, data[at + 3]!, score, bestClass));
    }
  }
  if (out.length > MAX_CANDIDATES) {
    out.sort((a, b2) => b2.score - a.score);
    out.length = MAX_CANDIDATES;
  }
  return out;
}

function candidate(cx: number, cy: number, w: number, h: number, score: number, classId: number): Candidate {
  return { box: { x1: cx - w / 2, y1: cy - h / 2, x2: cx + w / 2, y2: cy + h / 2 }, score, classId };
}

/** Maps a box from model-input pixels back to the original image (undoes the letterbox), clamped to it. */
export function toImagePixels(c: Candidate, t: ImageTransform): Candidate {
  const clampX = (x: number) => Math.min(t.width, Math.max(0, (x - t.padX) / t.scaleX));
  const clampY = (y: number) => Math.min(t.height, Math.max(0, (y - t.padY) / t.scaleY));
  return { ...c, box: { x1: clampX(c.box.x1), y1: clampY(c.box.y1), x2: clampX(c.box.x2), y2: clampY(c.box.y2) } };
}

const gridCache = new Map<string, { x: Int32Array; y: Int32Array; stride: Int32Array }>();

/** Cell offsets and strides of YOLOX's three heads (8, 16, 32), row-major per head, as its exporter lays them out. */
function yoloxGrid(n: number, inputSize: readonly [number, number] | undefined): { x: Int32Array; y: Int32Array; stride: Int32Array } {
  if (!inputSize) throw new Error('yolox decoding needs the input size');
  const key = `${inputSize[0]}x${inputSize[1]}`;
  // Checked on every call, cached or not: a row count that differs from the grid would decode garbage boxes.
  const cells = [8, 16, 32].reduce((sum, s) => sum + Math.floor(inputSize[0] / s) * Math.floor(inputSize[1] / s), 0);
  if (cells !== n) throw new Error(`yolox output has ${n} rows but a ${key} input gives ${cells} grid cells`);
  const cached = gridCache.get(key);
  if (cached) return cached;
  const x = new Int32Array(n);
  const y = new Int32Array(n);
  const stride = new Int32Array(n);
  let i = 0;
  for (const s of [8, 16, 32]) {
    const gh = Math.floor(inputSize[0] / s);
    const gw = Math.floor(inputSize[1] / s);
    for (let gy = 0; gy < gh; gy++) {
      for (let gx = 0; gx < gw; gx++, i++) {
        x[i] = gx;
        y[i] = gy;
        stride[i] = s;
      }
    }
  }
  const grid = { x, y, stride };
  gridCache.set(key, grid);
  return grid;
}
