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
 * 3. Three heads slide windows of W = 96, 192, 384 px in steps of W/6 (16, 32, 64 px; the pads
 *    centre the windows on the step grid). AveragePool with count_include_pad=1, run separably
 *    (a k×1 then a 1×k pass, O(k) instead of O(k²) per output), sums the moments over each window,
 *    and m alone over the window shrunk by a border ring of W/24 px. From the sums: centroid =
 *    Σm·X/Σm, width = sqrt(12·var_x) (exact for a uniform rectangle), height likewise.
 * 4. score = presence · edge · rect:
 *    - presence = sigmoid((Σm − 64 px)/8) ignores specks;
 *    - edge = clip(1 − 32·Σm_ring/Σm): a window that cuts an object has object pixels in its border
 *      ring (at least ring/visible ≥ (W/24)/W = 1/24 of its mass, which scores 0), one that
 *      holds it wholly has none. Why a border ring rather than comparing with a bigger concentric
 *      window: the ring only looks inside the window, so a same-colour object nearby does not
 *      suppress a correct box;
 *    - rect ramps from 0 to 1 as fill = Σm/(w·h) goes from 0.85 to 0.95: a solid rectangle has
 *      fill ≈ 1 (0.993 for the smallest sample object), while two separate same-colour objects in
 *      one window have much less, and their merged moments would be one wrong box.
 * 5. Every (class, window) is one YOLO "anchor" whose class-score vector is one-hot; heads are
 *    concatenated along N (3·(40² + 20² + 10² + 1) = 6303 anchors). An object up to
 *    W − step − 2·ring (72, 144, 288 px, less ~2 px of blur) always fits in some window clear of its
 *    ring; a last whole-image head catches bigger ones when they are the only object of their
 *    colour. Duplicates from overlapping windows and heads have the same box; NMS removes them.
 *    Known limit: two same-colour objects so close that no window holds one without touching the
 *    other are missed.
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
/** Window sizes of the grid heads, input px; each steps by a sixth of its size and has a ring of a 24th. */
const HEAD_WINDOWS = [96, 192, 384] as const;
/** A window needs this many object pixels to count as a detection (the 1080p sample's smallest object has ~280). */
const MIN_PIXELS = 64;
const PRESENCE_SOFTNESS_PX = 8;
/** edge = 1 − EDGE_GAIN·(ring mass / window mass): 1/24 of the mass in the ring already scores 0. */
const EDGE_GAIN = 32;
/** fill = Σm/(w·h) below FILL_LOW scores 0, above FILL_HIGH scores fully. */
const FILL_LOW = 0.85;
const FILL_HIGH = 0.95;
/** Keeps divisions finite in empty windows (Σm is exactly 0 there). */
const EPS = 1e-3;

interface HeadMoments {
  cx: string;
  cy: string;
  w: string;
  h: string;
  score: string;
  /** Windows per side of this head's grid. */
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
function windowSums(g: GraphBuilder, cells: string, windowPx: number, stepPx: number, centreOffsetPx: number): string {
  const k = windowPx / CELL;
  const pad = (windowPx / 2 - centreOffsetPx) / CELL;
  const step = stepPx / CELL;
  // Separable: rows then columns. ORT's AveragePool is a direct loop over the kernel, so one k×k pass costs k² per output.
  const rowSums = g.op('AveragePool', [cells], {
    kernel_shape: attr.ints([k, 1]),
    strides: attr.ints([step, 1]),
    pads: attr.ints([pad, 0, pad, 0]),
    count_include_pad: attr.int(1),
  });
  const mean = g.op('AveragePool', [rowSums], {
    kernel_shape: attr.ints([1, k]),
    strides: attr.ints([1, step]),
    pads: attr.ints([0, pad, 0, pad]),
    count_include_pad: attr.int(1),
  });
  // Mean over k² cells, each a mean over CELL² pixels → multiply back to a sum over pixels.
  return g.op('Mul', [mean, g.scalar(k * k * CELL * CELL)]);
}

/** A grid head: windows of `windowPx` centred on step·j + step/2, step = windowPx/6. */
function gridHead(g: GraphBuilder, moments: string, massCells: string, windowPx: number): HeadMoments {
  const step = windowPx / 6;
  const ring = windowPx / 24; // a multiple of CELL for every head window
  const window = windowSums(g, moments, windowPx, step, step / 2);
  const innerMass = windowSums(g, massCells, windowPx - 2 * ring, step, step / 2);
  return head(g, window, innerMass, DEMO_SHAPES_SIZE / step);
}

/**
 * The whole-image head: one window that cannot cut anything the image contains, so it catches
 * objects too big for the grid heads. It has no border ring (inner mass = mass, edge = 1); a class
 * with several objects gives a merged box whose low fill scores it 0.
 */
function wholeImageHead(g: GraphBuilder, moments: string): HeadMoments {
  const cells = DEMO_SHAPES_SIZE / CELL;
  const sums = g.op('Mul', [g.op('GlobalAveragePool', [moments]), g.scalar(cells * cells * CELL * CELL)]);
  const mass = g.op('Slice', [sums, g.ints64([0]), g.ints64([C]), g.ints64([1])]);
  return head(g, sums, mass, 1);
}

/** Boxes and scores of an n×n grid from window sums: `window` [B, 5C, n, n], `innerMass` [B, C, n, n]. */
function head(g: GraphBuilder, window: string, innerMass: string, n: number): HeadMoments {
  const [m, mx, my, mxx, myy] = g.node('Split', [window, g.ints64([C, C, C, C, C])], { axis: attr.int(1) }, 5) as [string, string, string, string, string];

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
  const ringShare = g.op('Div', [g.op('Sub', [m, innerMass]), denom]);
  const edge = g.op('Clip', [g.op('Sub', [g.scalar(1), g.op('Mul', [ringShare, g.scalar(EDGE_GAIN)])]), g.scalar(0), g.scalar(1)]);
  const fill = g.op('Div', [m, g.op('Add', [g.op('Mul', [w, h]), g.scalar(EPS)])]);
  const rampScale = 1 / (FILL_HIGH - FILL_LOW);
  const rect = g.op('Clip', [g.op('Sub', [g.op('Mul', [fill, g.scalar(rampScale)]), g.scalar(FILL_LOW * rampScale)]), g.scalar(0), g.scalar(1)]);
  const score = g.op('Mul', [g.op('Mul', [presence, edge]), rect]);

  const half = g.scalar(DEMO_SHAPES_SIZE / 2);
  return { cx: g.op('Add', [meanX, half]), cy: g.op('Add', [meanY, half]), w, h, score, n };
}

/** [B, k, C·n²] rows from k tensors of [B, C, n, n], flattened in (class, y, x) anchor order. */
function rows(g: GraphBuilder, tensors: string[]): string {
  const stacked = tensors.map((t) => g.op('Unsqueeze', [t, g.ints64([1])]));
  const cat = stacked.length === 1 ? (stacked[0] as string) : g.op('Concat', stacked, { axis: attr.int(1) });
  return g.op('Reshape', [cat, g.ints64([0, tensors.length, -1])]);
}

/** [1, C, C, 1] identity: broadcasting against [B, 1, C, cells] puts class c's values in row c only. */
function identityMatrix(g: GraphBuilder): string {
  return g.float32('class_one_hot', [1, C, C, 1], Array.from({ length: C * C }, (_, i) => (Math.floor(i / C) === i % C ? 1 : 0)));
}

/** One-hot class rows [B, C, C·n²]: row c holds `perClass` [B, C, n, n] on class c's anchors, 0 elsewhere. */
function oneHotRows(g: GraphBuilder, perClass: string, eye: string, n: number): string {
  const flat = g.op('Reshape', [perClass, g.ints64([0, 1, C, n * n])]);
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
  const heads = [...HEAD_WINDOWS.map((w) => gridHead(g, moments, massCells, w)), wholeImageHead(g, moments)];
  const eye = identityMatrix(g);

  if (layout === 'yolov8') {
    // What Ultralytics writes into its exports, so the "bare model.onnx" path (labels and input size
    // read from the file) is exercised by this model too. Values are Python reprs, as Ultralytics writes them.
    g.meta('names', `{${DEMO_SHAPES_LABELS.map((label, i) => `${i}: '${label}'`).join(', ')}}`);
    g.meta('imgsz', `[${DEMO_SHAPES_SIZE}, ${DEMO_SHAPES_SIZE}]`);
    g.meta('task', 'detect');
    g.meta('stride', '32');
    g.meta('author', 'Outpost demo (hand-set weights, not trained)');
    g.meta('description', 'Outpost demo detector: solid red, green and blue rectangles on a grey background; YOLOv8 output layout');
    g.meta('license', 'Apache-2.0');
    const perHead = heads.map((hd) => g.op('Concat', [rows(g, [hd.cx, hd.cy, hd.w, hd.h]), oneHotRows(g, hd.score, eye, hd.n)], { axis: attr.int(1) }));
    g.op('Concat', perHead, { axis: attr.int(2) }, 'output0');
    g.output('output0', 'FLOAT', ['batch', 4 + C, 'anchors']);
  } else {
    // YOLOv5/YOLOX rows: cx, cy, w, h, objectness, C class probabilities; score = obj × cls, so
    // objectness carries the score and the class probabilities are the bare one-hot vector.
    const batch = g.op('Shape', [images], { start: attr.int(0), end: attr.int(1) });
    const perHead = heads.map((hd) => {
      const shape = g.op('Concat', [batch, g.ints64([1, 1, hd.n * hd.n])], { axis: attr.int(0) });
      const cls = g.op('Reshape', [g.op('Expand', [eye, shape]), g.ints64([0, C, -1])]);
      return g.op('Concat', [rows(g, [hd.cx, hd.cy, hd.w, hd.h, hd.score]), cls], { axis: attr.int(1) });
    });
    const all = g.op('Concat', perHead, { axis: attr.int(2) });
    g.op('Transpose', [all], { perm: attr.ints([0, 2, 1]) }, 'output0');
    g.output('output0', 'FLOAT', ['batch', 'anchors', 5 + C]);
  }
  return g.encode();
}
