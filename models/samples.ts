/**
 * Sample images for the demo detector, with their ground truth.
 *
 * Drawn pixel by pixel into a raw RGB buffer (deterministic PRNG, no randomness from the clock)
 * and encoded with sharp, so the same source always gives the same scene; the agent's demo posts
 * them and the tests check detections against the .json next to each image.
 */
import sharp from 'sharp';

export type ShapeLabel = 'red' | 'green' | 'blue';

/** Pixel-edge coordinates: the rectangle covers columns x1..x2-1 and rows y1..y2-1. */
export interface Box {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface SceneObject {
  label: ShapeLabel;
  box: Box;
}

export interface Scene {
  width: number;
  height: number;
  objects: SceneObject[];
}

/**
 * Fill colours. Each has a contrast (its channel minus the mean of the other two) of ≈0.63–0.65,
 * the value the demo detector's mask ramp is centred for; see demo-shapes.ts.
 */
export const SHAPE_COLOURS: Record<ShapeLabel, readonly [number, number, number]> = {
  red: [215, 40, 40],
  green: [30, 190, 30],
  blue: [35, 65, 215],
};
/** Neutral mid-grey background; any grey has zero colour contrast. */
export const BACKGROUND_GREY = 128;

/** 1280x720 (letterboxed ×0.5): a wide, a tall, a square, two small, one 10 px from the right edge. */
export const SHAPES_720P: Scene = {
  width: 1280,
  height: 720,
  objects: [
    { label: 'red', box: { x1: 120, y1: 110, x2: 340, y2: 240 } },
    { label: 'green', box: { x1: 520, y1: 360, x2: 610, y2: 540 } },
    { label: 'blue', box: { x1: 820, y1: 140, x2: 970, y2: 290 } },
    { label: 'red', box: { x1: 990, y1: 520, x2: 1050, y2: 580 } },
    { label: 'blue', box: { x1: 1216, y1: 420, x2: 1270, y2: 500 } },
    { label: 'green', box: { x1: 250, y1: 560, x2: 300, y2: 610 } },
  ],
};

/** 1920x1080 (letterboxed ×1/3, so the 50 px square is ~17 px in the model input). */
export const SHAPES_1080P: Scene = {
  width: 1920,
  height: 1080,
  objects: [
    { label: 'blue', box: { x1: 300, y1: 200, x2: 520, y2: 320 } },
    { label: 'red', box: { x1: 900, y1: 600, x2: 1080, y2: 780 } },
    { label: 'green', box: { x1: 1400, y1: 150, x2: 1470, y2: 260 } },
    { label: 'red', box: { x1: 200, y1: 850, x2: 250, y2: 900 } },
    { label: 'green', box: { x1: 1600, y1: 1010, x2: 1700, y2: 1072 } },
    { label: 'blue', box: { x1: 1250, y1: 700, x2: 1310, y2: 760 } },
  ],
};

/** mulberry32: a tiny seeded PRNG, so the noise (and thus the JPEG bytes) never changes. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const clampByte = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

/**
 * Raw RGB pixels: grey with a faint diagonal texture and ±3 levels of noise (so the image is not
 * trivially flat and JPEG has something to do), rectangles in their solid colour with the same noise.
 */
export function renderScene(scene: Scene, seed = 1): Buffer {
  const { width, height } = scene;
  const rand = prng(seed);
  const pixels = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const texture = 2.5 * Math.sin(x / 23 + y / 37) + 1.5 * Math.sin(y / 11 - x / 53);
      const i = (y * width + x) * 3;
      for (let ch = 0; ch < 3; ch++) pixels[i + ch] = clampByte(BACKGROUND_GREY + texture + (rand() - 0.5) * 6);
    }
  }
  for (const { label, box } of scene.objects) {
    const colour = SHAPE_COLOURS[label];
    for (let y = box.y1; y < box.y2; y++) {
      for (let x = box.x1; x < box.x2; x++) {
        const i = (y * width + x) * 3;
        for (let ch = 0; ch < 3; ch++) pixels[i + ch] = clampByte((colour[ch] as number) + (rand() - 0.5) * 6);
      }
    }
  }
  return pixels;
}

export async function encodeScene(scene: Scene, format: 'jpeg' | 'png', seed = 1): Promise<Buffer> {
  const image = sharp(renderScene(scene, seed), { raw: { width: scene.width, height: scene.height, channels: 3 } });
  return format === 'jpeg' ? image.jpeg({ quality: 90 }).toBuffer() : image.png().toBuffer();
}
