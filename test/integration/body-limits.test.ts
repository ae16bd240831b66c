/**
 * Bodies over limits.maxBodyBytes, through real HTTP into a real agent (research note §5.6 H1, H2): a
 * declared Content-Length, a chunked stream and an image over the cap are refused with 413
 * AGENT_BODY_TOO_LARGE before the body is buffered, a body of exactly the cap is accepted, and the agent
 * keeps serving.
 */
import http from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../helpers/agent.js';
import { cameraFrameJpeg } from '../helpers/bad-images.js';
import { expectStillServes, postImage } from '../helpers/bad-input.js';
import { expectRefusal, postJsonRaw, type RawReply } from '../helpers/raw-http.js';
import { VALID_SIMPLE } from '../helpers/simple-model.js';

describe('body over limits.maxBodyBytes (64 KiB) → 413 AGENT_BODY_TOO_LARGE before it is buffered', () => {
  const LIMIT = 64 * 1024;
  const TOTAL = 10 * 1024 * 1024;
  let agent: RunningAgent;

  beforeAll(async () => {
    agent = await startAgent({ models: ['simple', 'demo-shapes'], config: { limits: { maxBodyBytes: LIMIT } } });
  });
  afterAll(async () => {
    await agent?.stop();
  });

  /**
   * Streams up to TOTAL bytes (64 KiB chunks, with backpressure) and stops at the first response byte.
   * Returns the response and how many bytes the stream had handed to the socket by then.
   */
  function streamBody(target: string, headers: Record<string, string>): Promise<{ reply: RawReply; sentAtResponse: number }> {
    let sent = 0;
    let responded = false;
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const body = new Readable({
      read() {
        if (responded || sent >= TOTAL) this.push(null);
        else {
          sent += chunk.length;
          this.push(chunk);
        }
      },
    });
    return new Promise((resolve, reject) => {
      const req = http.request(target, { method: 'POST', headers, agent: false });
      const timer = setTimeout(() => req.destroy(new Error('no response within 20 s')), 20_000);
      req.on('error', (err) => {
        clearTimeout(timer);
        // The server may close its side right after the 413; that is only an error if no response came.
        if (!responded) reject(err);
      });
      req.on('response', (res) => {
        responded = true;
        const sentAtResponse = sent;
        body.unpipe(req);
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const raw = Buffer.concat(chunks);
          let json: unknown;
          try {
            json = JSON.parse(raw.toString());
          } catch {
            json = undefined;
          }
          req.destroy();
          resolve({ reply: { status: res.statusCode ?? 0, headers: res.headers, body: raw, json, ms: 0 }, sentAtResponse });
        });
      });
      body.pipe(req);
    });
  }

  it('with Content-Length (10 MB declared): refused before the body is sent', async () => {
    const { reply, sentAtResponse } = await streamBody(`${agent.url}/v2/models/simple/infer`, { 'content-type': 'application/json', 'content-length': String(TOTAL) });
    console.info(`[413] Content-Length: ${sentAtResponse} of ${TOTAL} bytes handed to the socket when the 413 arrived`);
    expectRefusal(reply, 'AGENT_BODY_TOO_LARGE', 413);
    // What was sent by then sits in the kernel's socket buffers (a few MB on loopback), not in the agent.
    expect(sentAtResponse).toBeLessThan(TOTAL);
    await expectStillServes(agent.url);
  });

  it('chunked, without Content-Length: refused while streaming, before the whole 10 MB is sent', async () => {
    const { reply, sentAtResponse } = await streamBody(`${agent.url}/v2/models/simple/infer`, { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' });
    console.info(`[413] chunked: ${sentAtResponse} of ${TOTAL} bytes handed to the socket when the 413 arrived`);
    expectRefusal(reply, 'AGENT_BODY_TOO_LARGE', 413);
    expect(sentAtResponse).toBeLessThan(TOTAL);
    await expectStillServes(agent.url);
  });

  it('an image over the limit on /detect, and a JSON body one byte over it', async () => {
    expectRefusal(await postImage(`${agent.url}/v1/models/demo-shapes/detect`, await cameraFrameJpeg()), 'AGENT_BODY_TOO_LARGE', 413);
    const padded = JSON.stringify(VALID_SIMPLE);
    const atLimit = padded + ' '.repeat(LIMIT - padded.length);
    const ok = await postJsonRaw(`${agent.url}/v2/models/simple/infer`, atLimit);
    expect(ok.status, 'a body of exactly maxBodyBytes is accepted').toBe(200);
    expectRefusal(await postJsonRaw(`${agent.url}/v2/models/simple/infer`, `${atLimit} `), 'AGENT_BODY_TOO_LARGE', 413);
    await expectStillServes(agent.url);
  });
});
