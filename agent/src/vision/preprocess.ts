import sharp, { type Metadata } from 'sharp';
import type { Preprocessing } from '../../../shared/src/manifest.js';
import { fail } from '../errors.js';

// libvips caches decoded images by default; a server sees each frame once, so the cache only costs memory.
sharp.cache(false);

const ACCEPTED_FORMATS = new Set(['jpeg', 'png', 'webp']);

/** How model-space pixels map back to the original (EXIF-rotated) image: x_orig = (x_model - padX) / scaleX. */
export interface ImageTransform {
  width: number;
  height: number;
  scaleX: number;
  scaleY: number;
  padX: number;
  padY: number;
}

export interface PreprocessedImage {
  /** One image, [3,H,W] (NCHW) or [H,W,3] (NHWC), in the input's datatype. */
  data: Float32Array | Uint8Array;
  transform: ImageTransform;
  decodeMs: number;
}

export interface PreprocessTarget {
  spec: Preprocessing;
  layout: 'NCHW' | 'NHWC';
  datatype: 'FP32' | 'UINT8';
  maxPixels: number;
}

/**
 * Decode + orient + resize/letterbox in libvips (on libuv's thread pool, off the event loop), then one
 * typed-array pass that moves HWC bytes into the input layout through per-channel lookup tables.
 */
export async function preprocessImage(bytes: Uint8Array, target: PreprocessTarget): Promise<PreprocessedImage> {
  const started = performance.now();
  if (bytes.length === 0) throw fail('AGENT_EMPTY_BODY', 'empty image');
  const { spec, maxPixels } = target;
  const [H, W] = spec.size;
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw decodeError(err);
  }
  if (!meta.width || !meta.height) throw fail('AGENT_IMAGE_DECODE_FAILED', 'image has no dimensions');
  // libvips reads many formats (SVG, TIFF, HEIF, GIF …); cameras send these three, and the rest is attack surface.
  if (!ACCEPTED_FORMATS.has(meta.format ?? '')) {
    throw fail('AGENT_IMAGE_DECODE_FAILED', `image format '${String(meta.format)}' is not accepted; send JPEG, PNG or WebP`);
  }
  if (meta.width * meta.height > maxPixels) {
    throw fail('AGENT_IMAGE_TOO_LARGE', `image is ${meta.width}x${meta.height} (${meta.width * meta.height} pixels), over limits.maxImagePixels ${maxPixels}`);
  }
  // EXIF orientations 5–8 swap width and height once applied.
  const rotated = (meta.orientation ?? 1) >= 5;
  const w = rotated ? meta.height : meta.width;
  const h = rotated ? meta.width : meta.height;

  let pipeline = sharp(bytes, { limitInputPixels: maxPixels, sequentialRead: true }).rotate();
  let transform: ImageTransform;
  if (spec.resize === 'stretch') {
    pipeline = pipeline.resize(W, H, { fit: 'fill', kernel: 'linear' });
    transform = { width: w, height: h, scaleX: W / w, scaleY: H / h, padX: 0, padY: 0 };
  } else if (spec.resize === 'center_crop') {
    // Resize so the image covers size/crop_fraction (e.g. short side 256 for a 224 crop at 0.875), then crop the centre.
    const r = Math.max(W / w, H / h) / spec.crop_fraction;
    const nw = Math.max(W, Math.round(w * r));
    const nh = Math.max(H, Math.round(h * r));
    const left = Math.floor((nw - W) / 2);
    const top = Math.floor((nh - H) / 2);
    pipeline = pipeline.resize(nw, nh, { fit: 'fill', kernel: 'linear' }).extract({ left, top, width: W, height: H });
    transform = { width: w, height: h, scaleX: nw / w, scaleY: nh / h, padX: -left, padY: -top };
  } else {
    const r = Math.min(W / w, H / h);
    const nw = Math.max(1, Math.round(w * r));
    const nh = Math.max(1, Math.round(h * r));
    // Same split of the padding as Ultralytics' LetterBox, so boxes match its reference output.
    const [left, top] = spec.pad_position === 'center' ? [Math.round((W - nw) / 2 - 0.1), Math.round((H - nh) / 2 - 0.1)] : [0, 0];
    const v = spec.pad_value;
    pipeline = pipeline
      .resize(nw, nh, { fit: 'fill', kernel: 'linear' })
      .extend({ left, top, right: W - nw - left, bottom: H - nh - top, background: { r: v, g: v, b: v, alpha: 1 } });
    transform = { width: w, height: h, scaleX: nw / w, scaleY: nh / h, padX: left, padY: top };
  }

  let pixels: Buffer;
  try {
    const out = await pipeline.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (out.info.width !== W || out.info.height !== H || out.info.channels !== 3) {
      throw new Error(`unexpected decode result ${out.info.width}x${out.info.height}x${out.info.channels}`);
    }
    pixels = out.data;
  } catch (err) {
    throw decodeError(err);
  }
  const data = target.datatype === 'UINT8' ? toLayoutBytes(pixels, W * H, target.layout, spec.color) : toLayoutFloat(pixels, W * H, target.layout, spec);
  return { data, transform, decodeMs: performance.now() - started };
}

function decodeError(err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  if (/pixel limit/i.test(message)) return fail('AGENT_IMAGE_TOO_LARGE', `image exceeds the pixel limit: ${message}`);
  return fail('AGENT_IMAGE_DECODE_FAILED', `cannot decode image: ${message.split('\n')[0]}`, { cause: err });
}

const lutCache = new WeakMap<Preprocessing, Float32Array[]>();

/** Per-channel lookup tables: value v → (v·scale − mean) / std; built once per model spec. */
function lookupTables(spec: Preprocessing): Float32Array[] {
  const cached = lutCache.get(spec);
  if (cached) return cached;
  const tables = [0, 1, 2].map((c) => {
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) lut[v] = (v * spec.scale - spec.mean[c]!) / spec.std[c]!;
    return lut;
  });
  lutCache.set(spec, tables);
  return tables;
}

function toLayoutFloat(px: Uint8Array, hw: number, layout: 'NCHW' | 'NHWC', spec: Preprocessing): Float32Array {
  const [l0, l1, l2] = lookupTables(spec) as [Float32Array, Float32Array, Float32Array];
  // Channel k of the model input reads source channel s[k]; BGR models read the source reversed.
  const [s0, s1, s2] = spec.color === 'BGR' ? [2, 1, 0] : [0, 1, 2];
  const out = new Float32Array(hw * 3);
  if (layout === 'NCHW') {
    for (let i = 0, p = 0; i < hw; i++, p += 3) {
      out[i] = l0[px[p + s0]!]!;
      out[hw + i] = l1[px[p + s1]!]!;
      out[2 * hw + i] = l2[px[p + s2]!]!;
    }
  } else {
    for (let p = 0; p < hw * 3; p += 3) {
      out[p] = l0[px[p + s0]!]!;
      out[p + 1] = l1[px[p + s1]!]!;
      out[p + 2] = l2[px[p + s2]!]!;
    }
  }
  return out;
}

function toLayoutBytes(px: Uint8Array, hw: number, layout: 'NCHW' | 'NHWC', color: 'RGB' | 'BGR'): Uint8Array {
  if (layout === 'NHWC' && color === 'RGB') return new Uint8Array(px); // own buffer: sessions move their inputs
  const [s0, s1, s2] = color === 'BGR' ? [2, 1, 0] : [0, 1, 2];
  const out = new Uint8Array(hw * 3);
  for (let i = 0, p = 0; i < hw; i++, p += 3) {
    if (layout === 'NCHW') {
      out[i] = px[p + s0]!;
      out[hw + i] = px[p + s1]!;
      out[2 * hw + i] = px[p + s2]!;
    } else {
      out[p] = px[p + s0]!;
      out[p + 1] = px[p + s1]!;
      out[p + 2] = px[p + s2]!;
    }
  }
  return out;
}
