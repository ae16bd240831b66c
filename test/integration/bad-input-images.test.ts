/**
 * Refusals of bad images on /detect, /classify and image inputs (decompression bombs, unsupported formats,
 * truncated files, random bytes, wrong content types, bad queries, malformed multipart), and a 20 MP
 * camera frame that must be accepted, through real HTTP into a real agent with real onnxruntime sessions
 * (research note §5.6 H1, H2, H4). Each test asserts the status, the catalog code and the JSON
 * {error, code} shape, then that the agent still answers a valid request. Each bad input is chosen so
 * that without the check it guards, the request would get a different answer (usually a 200, a 500 from
 * onnxruntime or a crash), so the test fails if the check is removed.
 */
import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningAgent } from '../helpers/agent.js';
import { CAMERA_FRAME, cameraFrameJpeg, pixelBombPng, randomBytesSeeded, truncatedJpeg } from '../helpers/bad-images.js';
import { expectStillServes, postImage, startRefusalAgent, type Detection, type ModelMeta, type RefusalAgent } from '../helpers/bad-input.js';
import { SHARED_MISSING, sharedModel } from '../helpers/paths.js';
import { expectRefusal, postJsonRaw, rawRequest } from '../helpers/raw-http.js';

const GIANT = sharedModel('images/giant-image.jpg');
const TRUNCATED = sharedModel('images/bus_truncated.jpg');

describe('bad input: every refusal is a catalog error, and the agent keeps serving', () => {
  let agent: RunningAgent;
  let url: string;
  let shapes: ModelMeta;
  let scene: Buffer;
  let infer: RefusalAgent['infer'];
  let detect: RefusalAgent['detect'];

  beforeAll(async () => {
    ({ agent, url, shapes, scene, infer, detect } = await startRefusalAgent());
  });
  afterAll(async () => {
    await agent?.stop();
  });

  describe('images', () => {
    it('a 20 MP camera frame (5472x3648) is accepted by /detect with default limits, and its object found', async () => {
      const frame = await cameraFrameJpeg();
      const r = await postImage(detect(), frame);
      expect(r.status, r.body.toString().slice(0, 300)).toBe(200);
      const reply = r.json as { width: number; height: number; detections: Detection[] };
      expect([reply.width, reply.height]).toEqual([CAMERA_FRAME.width, CAMERA_FRAME.height]);
      const red = reply.detections.filter((d) => d.label === 'red' && d.score >= 0.5);
      expect(red, JSON.stringify(reply.detections)).toHaveLength(1);
      const tol = 0.03 * CAMERA_FRAME.width;
      for (const k of ['x1', 'y1', 'x2', 'y2'] as const) expect(Math.abs(red[0]!.box[k] - CAMERA_FRAME.red[k])).toBeLessThan(tol);
    });

    it('a generated decompression bomb (8000x8000 flat PNG, 64 MP in ~200 KB) → 400 AGENT_IMAGE_TOO_LARGE', async () => {
      const bomb = await pixelBombPng();
      expect(bomb.length).toBeLessThan(1024 * 1024);
      expect(expectRefusal(await postImage(detect(), bomb, 'image/png'), 'AGENT_IMAGE_TOO_LARGE')).toMatch(/8000x8000/);
      // The same bytes inside a KServe BYTES input take the same path.
      const body = { inputs: [{ name: String(shapes.parameters.image_input), shape: [1], datatype: 'BYTES', data: [bomb.toString('base64')] }] };
      expectRefusal(await postJsonRaw(infer('demo-shapes'), body), 'AGENT_IMAGE_TOO_LARGE');
      await expectStillServes(url);
    });

    it.skipIf(!GIANT)(`giant-image.jpg (20000x14000, 280 MP) → 400 AGENT_IMAGE_TOO_LARGE${GIANT ? '' : ` (skipped: ${SHARED_MISSING})`}`, async () => {
      expectRefusal(await postImage(detect(), readFileSync(GIANT!)), 'AGENT_IMAGE_TOO_LARGE');
      await expectStillServes(url);
    });

    it('an image format other than JPEG/PNG/WebP (SVG, GIF) → 400 AGENT_IMAGE_DECODE_FAILED, though libvips could read it', async () => {
      const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480"><rect x="10" y="10" width="80" height="80" fill="red"/></svg>');
      expect(expectRefusal(await postImage(detect(), svg, 'application/octet-stream'), 'AGENT_IMAGE_DECODE_FAILED')).toMatch(/svg/);
      const gif = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 255, g: 0, b: 0 } } }).gif().toBuffer();
      expect(expectRefusal(await postImage(detect(), gif, 'application/octet-stream'), 'AGENT_IMAGE_DECODE_FAILED')).toMatch(/gif/);
      await expectStillServes(url);
    });

    it('a generated truncated JPEG and random bytes → 400 AGENT_IMAGE_DECODE_FAILED', async () => {
      expectRefusal(await postImage(detect(), await truncatedJpeg()), 'AGENT_IMAGE_DECODE_FAILED');
      expectRefusal(await postImage(detect(), randomBytesSeeded(50_000, 7)), 'AGENT_IMAGE_DECODE_FAILED');
      expectRefusal(await postImage(detect(), randomBytesSeeded(50_000, 8), 'application/octet-stream'), 'AGENT_IMAGE_DECODE_FAILED');
      expectRefusal(await postImage(`${url}/v1/models/demo-color/classify`, randomBytesSeeded(3_000, 9), 'image/png'), 'AGENT_IMAGE_DECODE_FAILED');
      await expectStillServes(url);
    });

    it.skipIf(!TRUNCATED)(`bus_truncated.jpg → 400 AGENT_IMAGE_DECODE_FAILED${TRUNCATED ? '' : ` (skipped: ${SHARED_MISSING})`}`, async () => {
      expectRefusal(await postImage(detect(), readFileSync(TRUNCATED!)), 'AGENT_IMAGE_DECODE_FAILED');
      await expectStillServes(url);
    });

    it('an unsupported Content-Type on /detect (text/plain, even with JPEG bytes) → 415 AGENT_UNSUPPORTED_MEDIA_TYPE', async () => {
      expectRefusal(await postImage(detect(), scene, 'text/plain'), 'AGENT_UNSUPPORTED_MEDIA_TYPE', 415);
      expectRefusal(await postImage(detect(), scene, 'application/json'), 'AGENT_UNSUPPORTED_MEDIA_TYPE', 415);
      // The same bytes as image/jpeg are served.
      const ok = await postImage(detect(), scene);
      expect(ok.status).toBe(200);
      expect((ok.json as { detections: Detection[] }).detections.length).toBeGreaterThan(0);
      await expectStillServes(url);
    });

    it('an empty body → 400 AGENT_EMPTY_BODY (on /detect and on infer)', async () => {
      expectRefusal(await postImage(detect(), new Uint8Array(0)), 'AGENT_EMPTY_BODY');
      expectRefusal(await rawRequest(infer(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '' }), 'AGENT_EMPTY_BODY');
      expectRefusal(await rawRequest(infer(), { method: 'POST' }), 'AGENT_EMPTY_BODY');
      await expectStillServes(url);
    });

    it('a query parameter out of range (confidence=2, iou=-1, max_detections=0.5, top_k=abc) → 400 AGENT_BAD_QUERY', async () => {
      expect(expectRefusal(await postImage(detect('?confidence=2'), scene), 'AGENT_BAD_QUERY')).toMatch(/confidence/);
      expectRefusal(await postImage(detect('?iou=-1'), scene), 'AGENT_BAD_QUERY');
      expectRefusal(await postImage(detect('?max_detections=0.5'), scene), 'AGENT_BAD_QUERY');
      expectRefusal(await postImage(`${url}/v1/models/demo-color/classify?top_k=abc`, scene), 'AGENT_BAD_QUERY');
      const ok = await postImage(detect('?confidence=0.5'), scene);
      expect(ok.status).toBe(200);
      await expectStillServes(url);
    });

    it('a malformed multipart/form-data upload (no boundary; cut before its closing boundary) → 400 AGENT_INVALID_REQUEST', async () => {
      const part = (closing: boolean) => Buffer.concat([
        Buffer.from('--xyz\r\nContent-Disposition: form-data; name="image"; filename="scene.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'),
        scene,
        Buffer.from(closing ? '\r\n--xyz--\r\n' : ''),
      ]);
      expect(expectRefusal(await postImage(detect(), part(true), 'multipart/form-data'), 'AGENT_INVALID_REQUEST')).toMatch(/multipart/);
      expectRefusal(await postImage(detect(), part(false), 'multipart/form-data; boundary=xyz'), 'AGENT_INVALID_REQUEST');
      // The same upload, well formed, is served.
      const ok = await postImage(detect(), part(true), 'multipart/form-data; boundary=xyz');
      expect(ok.status, ok.body.toString().slice(0, 200)).toBe(200);
      expect((ok.json as { detections: Detection[] }).detections.length).toBeGreaterThan(0);
      await expectStillServes(url);
    });

    it('/detect on a model that is not a detector → 400 AGENT_TASK_MISMATCH', async () => {
      expectRefusal(await postImage(`${url}/v1/models/simple/detect`, scene), 'AGENT_TASK_MISMATCH');
      expectRefusal(await postImage(`${url}/v1/models/demo-shapes/classify`, scene), 'AGENT_TASK_MISMATCH');
      await expectStillServes(url);
    });
  });
});
