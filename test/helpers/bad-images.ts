/**
 * Hostile and borderline images generated with sharp, so the image-abuse tests run without the
 * third-party files in ../shared/models: a decompression bomb (huge declared size, flat colour, tiny
 * file), a truncated JPEG, a 20 MP camera-sized frame, and seeded random bytes.
 */
import sharp from 'sharp';
import { prng } from '../../models/samples.js';

/** A PNG of width×height flat grey: 8000×8000 = 64 MP decodes to 192 MB of RGB but compresses to ~200 KB. */
export function pixelBombPng(width = 8000, height = 8000): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: { r: 128, g: 128, b: 128 } } }).png({ compressionLevel: 9 }).toBuffer();
}

/** Where the red rectangle of `cameraFrameJpeg` is, in the frame's own pixels. */
export const CAMERA_FRAME = { width: 5472, height: 3648, red: { x1: 2000, y1: 1500, x2: 3200, y2: 2400 } } as const;

/**
 * A 20 MP (5472×3648, a common 1" sensor) JPEG: grey with one solid red rectangle the demo detector
 * finds, so "accepted" can be checked as a right answer, not only a 200.
 */
export function cameraFrameJpeg(): Promise<Buffer> {
  const { width, height, red } = CAMERA_FRAME;
  return sharp({ create: { width, height, channels: 3, background: { r: 128, g: 128, b: 128 } } })
    .composite([{ input: { create: { width: red.x2 - red.x1, height: red.y2 - red.y1, channels: 3, background: { r: 215, g: 40, b: 40 } } }, left: red.x1, top: red.y1 }])
    .jpeg({ quality: 85 })
    .toBuffer();
}

/** A real JPEG (a gradient, so the entropy-coded data is long) cut to its first half: the header parses, the scan data ends early. */
export async function truncatedJpeg(): Promise<Buffer> {
  const width = 640;
  const height = 480;
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      raw[i] = x & 255;
      raw[i + 1] = y & 255;
      raw[i + 2] = (x * y) & 255;
    }
  }
  const full = await sharp(raw, { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  return full.subarray(0, Math.floor(full.length / 2));
}

/** `n` seeded random bytes. */
export function randomBytesSeeded(n: number, seed: number): Buffer {
  const rand = prng(seed);
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256);
  return out;
}
