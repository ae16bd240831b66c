import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { checkDiskBudget, DiskBudgetError, dirBytes } from '../../agent/src/update/disk.js';
import { DownloadError, downloadArtifact, type DownloadRequest } from '../../agent/src/update/download.js';
import { verifyArtifact } from '../../agent/src/update/verify.js';
import { eventually } from '../helpers/fleet.js';

/**
 * A real HTTP server on 127.0.0.1 that serves one artifact like the fleet does (strong ETag = quoted sha256,
 * Range honoured only when If-Range matches), plus fault modes a flaky uplink or a hostile server produces.
 */
const BODY = randomBytes(512 * 1024 + 123);
const SHA = createHash('sha256').update(BODY).digest('hex');
const sha256Of = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');

type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;
interface Seen { range: string | undefined; ifRange: string | undefined; authorization: string | undefined }

let server: http.Server;
let base: string;
const sockets = new Set<Socket>();
const seen: Seen[] = [];
/** Handlers for the next requests, in order; then `serve` (honest). */
let plan: Handler[] = [];
const root = mkdtempSync(path.join(os.tmpdir(), 'outpost-download-'));
let n = 0;
const partFile = () => path.join(root, `a-${++n}.part`);

/** Serves `body` with `etag`, honouring Range/If-Range like the fleet (fleet-server/src/registry/download.ts). */
function serve(req: IncomingMessage, res: ServerResponse, o: { body?: Buffer; etag?: string; ignoreRange?: boolean } = {}): void {
  const body = o.body ?? BODY;
  const etag = o.etag ?? `"${sha256Of(body)}"`;
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const ifRange = req.headers['if-range'];
  const rangeOk = m && !o.ignoreRange && (ifRange === undefined || ifRange === etag);
  if (!rangeOk) {
    res.writeHead(200, { etag, 'content-length': body.length, 'accept-ranges': 'bytes' }).end(body);
    return;
  }
  const start = Number(m[1]);
  if (start >= body.length) {
    res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
    return;
  }
  res.writeHead(206, { etag, 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` }).end(body.subarray(start));
}

/** Sends the first k bytes of a 200 (full Content-Length), waits until the client has them on disk, then cuts. */
const cutAfter = (k: number, file: string): Handler => async (_req, res) => {
  res.writeHead(200, { etag: `"${SHA}"`, 'content-length': BODY.length });
  res.write(BODY.subarray(0, k));
  await eventually(() => existsSync(file) && statSync(file).size === k, `${k} bytes on disk`);
  res.socket?.destroy();
};

/** Headers and k bytes, then silence (the connection stays open until the client gives up). */
const stallAfter = (k: number): Handler => (_req, res) => {
  res.writeHead(200, { etag: `"${SHA}"`, 'content-length': BODY.length });
  res.write(BODY.subarray(0, k));
};

const status = (code: number, headers: Record<string, string> = {}): Handler => (_req, res) => {
  res.writeHead(code, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ code: `TEST_${code}` }));
};

function request(file: string, extra: Partial<DownloadRequest> = {}): DownloadRequest {
  return {
    url: `${base}/api/v1/models/m/versions/1/artifact`, file, size: BODY.length, sha256: SHA,
    attempts: 4, backoffMinMs: 5, backoffMaxMs: 20, stallTimeoutMs: 2_000, ...extra,
  };
}

async function failure(p: Promise<unknown>): Promise<DownloadError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(DownloadError);
  return err as DownloadError;
}

beforeAll(async () => {
  server = http.createServer((req, res) => {
    seen.push({ range: req.headers.range, ifRange: String(req.headers['if-range'] ?? '') || undefined, authorization: req.headers.authorization });
    const handler = plan.shift();
    void Promise.resolve(handler ? handler(req, res) : serve(req, res)).catch((err: unknown) => res.destroy(err as Error));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  // The client closes every connection on every path: none is left open on the server's side.
  await eventually(() => sockets.size === 0, 'the client to close its connections', 2_000);
  plan = [];
  seen.length = 0;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(root, { recursive: true, force: true });
});

describe('downloadArtifact', () => {
  it('downloads the whole artifact, fsynced, with throttled progress ending at (size, size)', async () => {
    const file = partFile();
    const calls: Array<[number, number]> = [];
    const r = await downloadArtifact(request(file, { onProgress: (a, b) => calls.push([a, b]) }));
    expect(r).toEqual({ bytes: BODY.length, resumedFrom: 0, attempts: 1, restarts: 0 });
    expect(sha256Of(readFileSync(file))).toBe(SHA);
    expect(seen).toEqual([{ range: undefined, ifRange: undefined, authorization: undefined }]);
    expect(calls.at(-1)).toEqual([BODY.length, BODY.length]);
    expect(calls.length).toBeLessThanOrEqual(3); // one early call, maybe one more, the final one (not one per chunk)
  });

  it('sends HTTP Basic credentials; a 401 is permanent after one attempt', async () => {
    const file = partFile();
    await downloadArtifact(request(file, { auth: { username: 'dev-1', password: 's3cret' } }));
    expect(seen[0]!.authorization).toBe(`Basic ${Buffer.from('dev-1:s3cret').toString('base64')}`);
    plan = [status(401)];
    const err = await failure(downloadArtifact(request(partFile())));
    expect(err).toMatchObject({ code: 'http_status', status: 401, permanent: true, attempts: 1 });
  });

  it('resumes after a cut connection: the next request carries Range: bytes=K- and If-Range, the file is whole', async () => {
    const file = partFile();
    const K = 100_000;
    plan = [cutAfter(K, file)];
    const r = await downloadArtifact(request(file));
    expect(r).toMatchObject({ attempts: 2, resumedFrom: 0, restarts: 0 });
    expect(seen[1]).toMatchObject({ range: `bytes=${K}-`, ifRange: `"${SHA}"` });
    expect(sha256Of(readFileSync(file))).toBe(SHA);
  });

  it('resumes a .part left by an earlier run (206 appends) and is done on 416 when it is complete', async () => {
    const file = partFile();
    writeFileSync(file, BODY.subarray(0, 4096));
    expect(await downloadArtifact(request(file))).toMatchObject({ resumedFrom: 4096, attempts: 1, restarts: 0 });
    expect(seen[0]!.range).toBe('bytes=4096-');
    expect(sha256Of(readFileSync(file))).toBe(SHA);

    seen.length = 0;
    expect(await downloadArtifact(request(file))).toMatchObject({ resumedFrom: BODY.length, attempts: 1 });
    expect(seen[0]!.range).toBe(`bytes=${BODY.length}-`);
    expect(sha256Of(readFileSync(file))).toBe(SHA);
  });

  it('a server that ignores Range (200) makes it start over from byte 0, not append', async () => {
    const file = partFile();
    writeFileSync(file, BODY.subarray(0, 50_000));
    plan = [(req, res) => serve(req, res, { ignoreRange: true })];
    const r = await downloadArtifact(request(file));
    expect(r).toMatchObject({ resumedFrom: 50_000, attempts: 1, restarts: 1 });
    expect(statSync(file).size).toBe(BODY.length);
    expect(sha256Of(readFileSync(file))).toBe(SHA);
  });

  it('a stale If-Range (the server holds other bytes) gets the full body: never a mix of two artifacts', async () => {
    const file = partFile();
    writeFileSync(file, BODY.subarray(0, 50_000));
    const other = randomBytes(BODY.length);
    plan = [(req, res) => serve(req, res, { body: other })];
    const r = await downloadArtifact(request(file));
    expect(r).toMatchObject({ attempts: 1, restarts: 1 });
    expect(seen[0]!.ifRange).toBe(`"${SHA}"`);
    expect(readFileSync(file).equals(other)).toBe(true);
    // The signed hash then refuses it (the next step of the update).
    await expect(verifyArtifact(file, { size: BODY.length, sha256: SHA })).rejects.toMatchObject({ code: 'hash_mismatch' });
  });

  it('an endless body is cut at the declared size: too_long, permanent, the file never larger than size', async () => {
    const file = partFile();
    let sent = 0;
    plan = [(_req, res) => {
      res.writeHead(200, { etag: `"${SHA}"` }); // chunked, no length: only counting catches it
      const chunk = randomBytes(16 * 1024);
      const pump = () => {
        while (!res.destroyed && sent < 64 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      res.on('close', () => res.removeAllListeners('drain'));
      pump();
    }];
    const err = await failure(downloadArtifact(request(file)));
    expect(err).toMatchObject({ code: 'too_long', permanent: true, attempts: 1 });
    expect(statSync(file).size).toBeLessThanOrEqual(BODY.length);
    expect(sent).toBeLessThan(8 * 1024 * 1024); // it stopped reading, not after draining 64 MB

    // Announcing more than the signed size is refused before a byte is written.
    const file2 = partFile();
    plan = [(_req, res) => void res.writeHead(200, { 'content-length': BODY.length + 1 }).end(Buffer.concat([BODY, Buffer.from([1])]))];
    expect(await failure(downloadArtifact(request(file2)))).toMatchObject({ code: 'too_long', permanent: true });
    expect(existsSync(file2) ? statSync(file2).size : 0).toBe(0);
  });

  it('a 404 is permanent: one attempt, the status and the server\'s error in the message', async () => {
    plan = [status(404)];
    const err = await failure(downloadArtifact(request(partFile())));
    expect(err).toMatchObject({ code: 'http_status', status: 404, permanent: true, attempts: 1 });
    expect(err.message).toContain('TEST_404');
    expect(seen).toHaveLength(1);
  });

  it('retries 503 twice then succeeds (attempts counted); gives up after `attempts` 503s', async () => {
    const file = partFile();
    plan = [status(503), status(503)];
    expect(await downloadArtifact(request(file))).toMatchObject({ attempts: 3 });
    expect(sha256Of(readFileSync(file))).toBe(SHA);

    seen.length = 0;
    plan = [status(503), status(502), status(500)];
    const err = await failure(downloadArtifact(request(partFile(), { attempts: 3 })));
    expect(err).toMatchObject({ code: 'http_status', status: 500, permanent: false, attempts: 3 });
    expect(err.message).toMatch(/gave up after 3 attempts/);
    expect(seen).toHaveLength(3);
  });

  it('abandons a stalled response after stallTimeoutMs and resumes; all stalls → stalled', async () => {
    const file = partFile();
    plan = [stallAfter(10_000)];
    const started = Date.now();
    expect(await downloadArtifact(request(file, { stallTimeoutMs: 200 }))).toMatchObject({ attempts: 2 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(seen[1]!.range).toBe('bytes=10000-');
    expect(sha256Of(readFileSync(file))).toBe(SHA);

    plan = [stallAfter(0), stallAfter(0)];
    const err = await failure(downloadArtifact(request(partFile(), { stallTimeoutMs: 150, attempts: 2 })));
    expect(err).toMatchObject({ code: 'stalled', permanent: false, attempts: 2 });
  });

  it('aborts mid-download through the signal, and during the backoff wait', async () => {
    const controller = new AbortController();
    plan = [stallAfter(20_000)];
    const p = downloadArtifact(request(partFile(), { signal: controller.signal, stallTimeoutMs: 30_000, onProgress: () => controller.abort() }));
    const err = await failure(p);
    expect(err).toMatchObject({ code: 'aborted', permanent: true, attempts: 1 });

    const c2 = new AbortController();
    plan = [(_req, res) => {
      status(503)(_req, res);
      setTimeout(() => c2.abort(), 50);
    }];
    const started = Date.now();
    const err2 = await failure(downloadArtifact(request(partFile(), { signal: c2.signal, backoffMinMs: 5_000, backoffMaxMs: 10_000 })));
    expect(err2).toMatchObject({ code: 'aborted', attempts: 1 });
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('a network error (connection refused) is retried, then reported as network', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const err = await failure(downloadArtifact(request(partFile(), { url: `http://127.0.0.1:${port}/x`, attempts: 2 })));
    expect(err).toMatchObject({ code: 'network', permanent: false, attempts: 2 });
    expect(err.message).toMatch(/ECONNREFUSED/);
  });
});

describe('checkDiskBudget', () => {
  const dir = path.join(root, 'budget');
  const repo = path.join(dir, 'repo');
  const staging = path.join(dir, 'staging');
  beforeAll(() => {
    mkdirSync(path.join(repo, 'm', '1'), { recursive: true });
    mkdirSync(staging, { recursive: true });
    writeFileSync(path.join(repo, 'm', '1', 'model.onnx'), Buffer.alloc(1000));
    writeFileSync(path.join(staging, 'm-2-abcdef01.part'), Buffer.alloc(500));
    symlinkSync('/usr', path.join(repo, 'link-to-usr')); // not followed
  });

  it('counts the bytes under both directories (missing = 0, symlinks not followed)', () => {
    expect(dirBytes(repo)).toBe(1000);
    expect(dirBytes(staging)).toBe(500);
    expect(dirBytes(path.join(dir, 'nope'))).toBe(0);
  });

  it("refuses with 'disk_budget' when held + needed bytes pass the budget, saying the numbers", () => {
    expect(() => checkDiskBudget({ repositoryDir: repo, stagingDir: staging, needBytes: 500, budgetBytes: 2000, minFreeBytes: 0 })).not.toThrow();
    let err: unknown;
    try {
      checkDiskBudget({ repositoryDir: repo, stagingDir: staging, needBytes: 501, budgetBytes: 2000, minFreeBytes: 0 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DiskBudgetError);
    expect(err).toMatchObject({ code: 'disk_budget' });
    expect((err as Error).message).toMatch(/1500 bytes.*2001 > update.diskBudgetBytes 2000/);
  });

  it("refuses with 'disk_full' when the filesystem would keep less than minFreeBytes (staging not created yet)", () => {
    const st = statfsSync(dir);
    const free = st.bavail * st.bsize;
    const o = { repositoryDir: repo, stagingDir: path.join(dir, 'not-yet', 'staging'), budgetBytes: Number.MAX_SAFE_INTEGER, minFreeBytes: 0 };
    expect(() => checkDiskBudget({ ...o, needBytes: 1000 })).not.toThrow();
    expect(() => checkDiskBudget({ ...o, needBytes: free + 4096 * 1024 })).toThrow(expect.objectContaining({ code: 'disk_full', message: expect.stringMatching(/< update.minFreeBytes 0/) }));
    expect(() => checkDiskBudget({ ...o, needBytes: 1000, minFreeBytes: free + 4096 * 1024 })).toThrow(expect.objectContaining({ code: 'disk_full' }));
  });
});

describe('a really full disk (2 MiB tmpfs)', () => {
  const mnt = path.join(root, 'tmpfs');
  let mounted = false;
  let why = '';
  beforeAll(() => {
    mkdirSync(mnt, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { stdio: 'pipe' });
      mounted = true;
    } catch (err) {
      why = `mounting a tmpfs is not permitted here (${String((err as { stderr?: Buffer }).stderr ?? err).trim()}); the ENOSPC test is skipped`;
    }
  });
  afterAll(() => {
    if (mounted) execFileSync('umount', [mnt]);
  });

  it("a write that hits ENOSPC fails at once with 'disk_full' (permanent); checkDiskBudget would have refused it", async (t) => {
    if (!mounted) {
      console.warn(why);
      t.skip(why);
      return;
    }
    const big = randomBytes(3 * 1024 * 1024);
    const file = path.join(mnt, 'big.part');
    expect(() => checkDiskBudget({ repositoryDir: path.join(mnt, 'repo'), stagingDir: mnt, needBytes: big.length, budgetBytes: 1e12, minFreeBytes: 0 }))
      .toThrow(expect.objectContaining({ code: 'disk_full' }));
    plan = [(req, res) => serve(req, res, { body: big })];
    const err = await failure(downloadArtifact(request(file, { size: big.length, sha256: sha256Of(big) })));
    expect(err).toMatchObject({ code: 'disk_full', permanent: true, attempts: 1 });
    expect(statSync(file).size).toBeLessThanOrEqual(2 * 1024 * 1024);
  });
});
