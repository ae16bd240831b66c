/**
 * The demo detector: finds solid red, green and blue rectangles on a neutral (grey) background
 * with hand-set weights — no training — and speaks the same output layouts as real YOLO exports,
 * so the agent's detector path (letterbox → session → decode → NMS) runs end to end on a model the
 * project can regenerate from source in milliseconds.
 *
 * How it works (all plain ONNX ops that onnxruntime's CPU provider runs):
 * 1. Per-pixel class masks m_c in [0,1]: a 1x1 Conv computes the colour contrast
 *    s_c = channel_c − mean(other two channels), which is 0 for any grey (including the letterbox
 *    pad) and ≈0.65 inside the sample colours; HardSigmoid maps it linearly onto [0,1] between
 *    20% and 80% of that contrast. A ramp (not a steep sigmoid) because background pixels must be
 *    EXACTLY 0: a sigmoid leaves ~1e-6 per pixel, which over a 384x384 window adds enough far-away
 *    mass to wreck the variance of a small object; and the linear middle keeps partly covered edge
 *    pixels proportional, giving sub-pixel box edges.
 * 2. Moment maps m, m·X, m·Y, m·X², m·Y² (X, Y = pixel-centre coordinates relative to the image
 *    centre, built in-graph with Range so the file stays tiny; centring halves the magnitudes that
 *    float32 has to carry). A 4x4 AveragePool shrinks them to 160x160 (sums are preserved ×1/16).
 * 3. For each head (stride S = 32, 64, 128 input px) an AveragePool with count_include_pad=1 sums
 *    the moments over a "small" window of 3S px and m alone over a concentric "big" window of 6S px,
 *    both centred on the stride-S grid (the pads centre them). From the sums: centroid = Σm·X/Σm,
 *    width = sqrt(12·var_x) (exact for a uniform rectangle), height likewise.
 * 4. score = presence · ratio⁴ · fill⁴ where presence = sigmoid((Σm − 64 px)/8) ignores specks,
 *    ratio = Σm_small/Σm_big is <1 when the small window cuts the object (or another same-colour
 *    object sits just outside it), and fill = Σm/(w·h) is <1 when the window holds two separate
 *    same-colour objects whose moments would merge into one wrong box.
 * 5. Every (class, cell) is one YOLO "anchor" whose class-score vector is one-hot; heads are
 *    concatenated along N. An object of size ≤ S·2 always fits wholly in some small window of the
 *    head; duplicates from neighbouring cells and heads have the same box and are removed by NMS.
 */
import { attr, GraphBuilder } from '../shared/src/onnx/graph-builder.js';

export const DEMO_SHAPES_LABELS = ['red', 'green', 'blue'] as const;
export const DEMO_SHAPES_SIZE = 640;

/** Output layouts: Ultralytics YOLOv8 `[B, 4+C, N]` or YOLOv5/YOLOX `[B, N, 5+C]` with objectness. */
export type DetectorLayout = 'yolov8' | 'yolov5';

const C = DEMO_SHAPES_LABELS.length;
/** Mask ramp, in units of colour contrast (channel − mean of the others, RGB in 0..1). */
const RAMP_LOW = 0.13;
const RAMP_HIGH = 0.52;
/** Cell size of the pre-pooled moment maps, input px. */
const CELL = 4;
const HEAD_STRIDES = [32, 64, 128] as const;
/** A window needs this many object pixels to count as a detection (the 1080p sample's smallest object has ~280). */
const MIN_PIXELS = 64;
const PRESENCE_SOFTNESS_PX = 8;
/** Keeps divisions finite in empty windows (Σm is exactly 0 there). */
const EPS = 1e-3;

interface HeadMoments {
  cx: string;
  cy: string;
  w: string;
  h: string;
  score: string;
  /** Cells per side of this head's grid. */
  n: number;
}

/** The per-class colour-contrast Conv folded with the ramp scale, so HardSigmoid(α=1, β=0) is the ramp. */
function colourMasks(g: GraphBuilder, images: string): string {
  const scale = 1 / (RAMP_HIGH - RAMP_LOW);
  const weights: number[] = [];
  for (let c = 0; c < C; c++) for (let k = 0; k < 3; k++) weights.push((k === c ? 1 : -0.5) * scale);
  const w = g.float32('mask_weight', [C, 3, 1, 1], weights);
  const b = g.float32('mask_bias', [C], Array.from({ length: C }, () => -RAMP_LOW * scale));
  const contrast = g.op('Conv', [images, w, b], { kernel_shape: attr.ints([1, 1]) });
  return g.op('HardSigmoid', [contrast], { alpha: attr.float(1), beta: attr.float(0) });
}

/** [B, 5C, 160, 160] block means of m, m·X, m·Y, m·X², m·Y² (channel blocks of C, in that order). */
function momentMaps(g: GraphBuilder, masks: string): string {
  const half = DEMO_SHAPES_SIZE / 2;
  const coords = g.op('Range', [g.scalar(0.5 - half), g.scalar(half), g.scalar(1)]);
  const x = g.op('Reshape', [coords, g.ints64([1, 1, 1, DEMO_SHAPES_SIZE])]);
  const y = g.op('Reshape', [coords, g.ints64([1, 1, DEMO_SHAPES_SIZE, 1])]);
  const mx = g.op('Mul', [masks, x]);
  const my = g.op('Mul', [masks, y]);
  const mxx = g.op('Mul', [mx, x]);
  const myy = g.op('Mul', [my, y]);
  const all = g.op('Concat', [masks, mx, my, mxx, myy], { axis: attr.int(1) });
  return g.op('AveragePool', [all], { kernel_shape: attr.ints([CELL, CELL]), strides: attr.ints([CELL, CELL]) });
}

/** Window sums in pixel units: AveragePool over k×k cells with pads that centre windows on the grid. */
function windowSums(g: GraphBuilder, cells: string, windowPx: number, stridePx: number, centreOffsetPx: number): string {
  const k = windowPx / CELL;
  const pad = (windowPx / 2 - centreOffsetPx) / CELL;
  const mean = g.op('AveragePool', [cells], {
    kernel_shape: attr.ints([k, k]),
    strides: attr.ints([stridePx / CELL, stridePx / CELL]),
    pads: attr.ints([pad, pad, pad, pad]),
    count_include_pad: attr.int(1),
  });
  // Mean over k² cells, each a mean over CELL² pixels → multiply back to a sum over pixels.
  return g.op('Mul', [mean, g.scalar(k * k * CELL * CELL)]);
}

function head(g: GraphBuilder, moments: string, massCells: string, stride: number): HeadMoments {
  const n = DEMO_SHAPES_SIZE / stride;
  // Windows are centred on cell centres stride·j + stride/2; small = 3 strides, big = 6 strides.
  const small = windowSums(g, moments, 3 * stride, stride, stride / 2);
  const bigMass = windowSums(g, massCells, 6 * stride, stride, stride / 2);
  const [m, mx, my, mxx, myy] = g.node('Split', [small, g.ints64([C, C, C, C, C])], { axis: attr.int(1) }, 5) as [string, string, string, string, string];

  const denom = g.op('Add', [m, g.scalar(EPS)]);
  const meanX = g.op('Div', [mx, denom]);
  const meanY = g.op('Div', [my, denom]);
  const side = (second: string, mean: string): string => {
    const variance = g.op('Sub', [g.op('Div', [second, denom]), g.op('Mul', [mean, mean])]);
    // Relu: float32 cancellation can make a tiny variance slightly negative; Sqrt of that is NaN.
    return g.op('Sqrt', [g.op('Mul', [g.op('Relu', [variance]), g.scalar(12)])]);
  };
  const w = side(mxx, meanX);
  const h = side(myy, meanY);

  const presence = g.op('Sigmoid', [g.op('Mul', [g.op('Sub', [m, g.scalar(MIN_PIXELS)]), g.scalar(1 / PRESENCE_SOFTNESS_PX)])]);
  const ratio = g.op('Div', [m, g.op('Add', [bigMass, g.scalar(EPS)])]);
  const fillRaw = g.op('Div', [m, g.op('Add', [g.op('Mul', [w, h]), g.scalar(EPS)])]);
  const fill = g.op('Clip', [fillRaw, g.scalar(0), g.scalar(1)]);
  const pow4 = (v: string): string => {
    const sq = g.op('Mul', [v, v]);
    return g.op('Mul', [sq, sq]);
  };
  const score = g.op('Mul', [g.op('Mul', [presence, pow4(ratio)]), pow4(fill)]);

  const half = g.scalar(DEMO_SHAPES_SIZE / 2);
  return { cx: g.op('Add', [meanX, half]), cy: g.op('Add', [meanY, half]), w, h, score, n };
}

/** [B, k, C·n²] rows from k tensors of [B, C, n, n], flattened in (class, y, x) anchor order. */
function rows(g: GraphBuilder, tensors: string[]): string {
  const stacked = tensors.map((t) => g.op('Unsqueeze', [t, g.ints64([1])]));
  const cat = stacked.length === 1 ? (stacked[0] as string) : g.op('Concat', stacked, { axis: attr.int(1) });
  return g.op('Reshape', [cat, g.ints64([0, tensors.length, -1])]);
}

/** One-hot class rows [B, C, C·n²]: row c is `values` on class c's anchors and 0 elsewhere. */
function oneHotRows(g: GraphBuilder, perClass: string, n: number): string {
  const flat = g.op('Reshape', [perClass, g.ints64([0, 1, C, n * n])]);
  const eye = g.float32(`eye_${n}`, [1, C, C, 1], Array.from({ length: C * C }, (_, i) => (Math.floor(i / C) === i % C ? 1 : 0)));
  return g.op('Reshape', [g.op('Mul', [flat, eye]), g.ints64([0, C, -1])]);
}

export function buildDemoShapes(layout: DetectorLayout): Uint8Array {
  const g = new GraphBuilder({
    name: layout === 'yolov8' ? 'demo_shapes' : 'demo_shapes_v5',
    opset: 17,
    producerName: 'outpost-make-models',
    docString: 'Outpost demo detector: hand-set weights (not trained) that find solid red/green/blue rectangles on grey.',
  });
  const images = g.input('images', 'FLOAT', ['batch', 3, DEMO_SHAPES_SIZE, DEMO_SHAPES_SIZE]);
  const masks = colourMasks(g, images);
  const moments = momentMaps(g, masks);
  const massCells = g.op('Slice', [moments, g.ints64([0]), g.ints64([C]), g.ints64([1])]);
  const heads = HEAD_STRIDES.map((s) => head(g, moments, massCells, s));

  if (layout === 'yolov8') {
    const perHead = heads.map((hd) => g.op('Concat', [rows(g, [hd.cx, hd.cy, hd.w, hd.h]), oneHotRows(g, hd.score, hd.n)], { axis: attr.int(1) }));
    g.op('Concat', perHead, { axis: attr.int(2) }, 'output0');
    g.output('output0', 'FLOAT', ['batch', 4 + C, 'anchors']);
  } else {
    // YOLOv5/YOLOX rows: cx, cy, w, h, objectness, C class probabilities; score = obj × cls, so the
    // class probabilities are the bare one-hot vector and objectness carries the score.
    const batch = g.op('Shape', [images], { start: attr.int(0), end: attr.int(1) });
    const perHead = heads.map((hd) => {
      const ones = g.op('Expand', [g.op('Mul', [hd.score, g.scalar(0)]), g.ints64([1])]);
      void batch;
      const cls = oneHotRows(g, g.op('Add', [ones, g.scalar(1)]), hd.n);
      return g.op('Concat', [rows(g, [hd.cx, hd.cy, hd.w, hd.h, hd.score]), cls], { axis: attr.int(1) });
    });
    const all = g.op('Concat', perHead, { axis: attr.int(2) });
    g.op('Transpose', [all], { perm: attr.ints([0, 2, 1]) }, 'output');
    g.output('output', 'FLOAT', ['batch', 'anchors', 5 + C]);
  }
  return g.encode();
}
