/**
 * A deliberately small, independent reference of the detector pre/post-processing (letterbox,
 * YOLO decode, class-wise NMS) so the demo-model tests check the models themselves, not the
 * agent's implementation of the same steps.
 *
 * Conventions follow /work/shared/models/README.md: letterbox centred, pad 114, sharp kernel
 * `linear`, RGB/255, NCHW; confidence ≥ 0.25, class-wise greedy NMS at IoU 0.45; boxes mapped back
 * to the original image's pixels.
 */
import sharp from 'sharp';

export interface Letterboxed {
  /** NCHW float32 for one image, RGB in 0..1. */
  data: Float32Array;
  width: number;
  height: number;
  scale: number;
  padX: number;
  padY: number;
}

export interface Detection {
  classId: number;
  score: number;
  box: { x1: number; y1: number; x2: number; y2: number };
}

export async function letterbox(image: Buffer, size = 640): Promise<Letterboxed> {
  const meta = await sharp(image).metadata();
  const width = meta.width;
  const height = meta.height;
  const scale = Math.min(size / width, size / height);
  const nw = Math.round(width * scale);
  const nh = Math.round(height * scale);
  const padX = Math.floor((size - nw) / 2);
  const padY = Math.floor((size - nh) / 2);
  const { data } = await sharp(image)
    .removeAlpha()
    .resize(nw, nh, { fit: 'fill', kernel: 'linear' })
    .extend({ left: padX, right: size - nw - padX, top: padY, bottom: size - nh - padY, background: { r: 114, g: 114, b: 114 } })
    .raw()
    .toBuffer({ resolveWithObject: true });
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) out[c * plane + i] = (data[i * 3 + c] as number) / 255;
  return { data: out, width, height, scale, padX, padY };
}

interface Candidate {
  classId: number;
  score: number;
  cx: number;
  cy: number;
  w: number;
  h: number;
}

/** Ultralytics YOLOv8 `[B, 4+C, N]`: rows cx, cy, w, h, then C class scores (no objectness). */
export function decodeYolov8(data: Float32Array, dims: readonly number[], batchIndex: number, confidence: number): Candidate[] {
  const [, rowsCount, n] = dims as [number, number, number];
  const base = batchIndex * rowsCount * n;
  const at = (row: number, i: number): number => data[base + row * n + i] as number;
  const out: Candidate[] = [];
  for (let i = 0; i < n; i++) {
    let best = -1;
    let score = -Infinity;
    for (let c = 0; c < rowsCount - 4; c++) if (at(4 + c, i) > score) [best, score] = [c, at(4 + c, i)];
    if (score >= confidence) out.push({ classId: best, score, cx: at(0, i), cy: at(1, i), w: at(2, i), h: at(3, i) });
  }
  return out;
}

/** YOLOv5/YOLOX `[B, N, 5+C]`: cx, cy, w, h, objectness, C class probabilities; score = obj × cls. */
export function decodeYolov5(data: Float32Array, dims: readonly number[], batchIndex: number, confidence: number): Candidate[] {
  const [, n, cols] = dims as [number, number, number];
  const out: Candidate[] = [];
  for (let i = 0; i < n; i++) {
    const row = (batchIndex * n + i) * cols;
    const at = (k: number): number => data[row + k] as number;
    let best = -1;
    let score = -Infinity;
    for (let c = 0; c < cols - 5; c++) if (at(4) * at(5 + c) > score) [best, score] = [c, at(4) * at(5 + c)];
    if (score >= confidence) out.push({ classId: best, score, cx: at(0), cy: at(1), w: at(2), h: at(3) });
  }
  return out;
}

function iou(a: Detection['box'], b: Detection['box']): number {
  const iw = Math.max(0, Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1));
  const ih = Math.max(0, Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1));
  const inter = iw * ih;
  const union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
  return union > 0 ? inter / union : 0;
}

/** Maps candidates to original-image pixels, then class-wise greedy NMS, highest score first. */
export function postprocess(candidates: Candidate[], lb: Letterboxed, iouThreshold = 0.45): Detection[] {
  const mapped = candidates
    .map((c) => ({
      classId: c.classId,
      score: c.score,
      box: {
        x1: Math.max(0, (c.cx - c.w / 2 - lb.padX) / lb.scale),
        y1: Math.max(0, (c.cy - c.h / 2 - lb.padY) / lb.scale),
        x2: Math.min(lb.width, (c.cx + c.w / 2 - lb.padX) / lb.scale),
        y2: Math.min(lb.height, (c.cy + c.h / 2 - lb.padY) / lb.scale),
      },
    }))
    .sort((a, b) => b.score - a.score);
  const kept: Detection[] = [];
  for (const d of mapped) {
    if (kept.some((k) => k.classId === d.classId && iou(k.box, d.box) > iouThreshold)) continue;
    kept.push(d);
  }
  return kept;
}
