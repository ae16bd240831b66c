import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { open, stat, truncate, type FileHandle } from 'node:fs/promises';
import { Backoff, sleep } from '../link/backoff.js';

/**
 * Resumable artifact download over a flaky uplink (DESIGN §3.4, docs/updates.md "Threat model" U5).
 *
 * Each attempt sends at most one `Range: bytes=N-` (N = bytes already in the .part file) with
 * `If-Range: "<sha256>"` — the fleet's strong ETag is the quoted content hash, so a Range is honoured only
 * while the server still holds the very artifact the .part started from:
 * - 206 → append at N (Content-Range must start at N);
 * - 200 → the server sends the whole file (Range ignored, or If-Range did not match): truncate, start at 0;
 * - 416 with a complete .part → done (nothing left to fetch); 416 otherwise → truncate and retry from 0.
 * Network errors, stalls, 429 and 5xx are retried with exponential backoff and full jitter (link/backoff.ts);
 * any other status and an oversized body are permanent. The file never grows past the signed size: the body is
 * counted as it arrives and the attempt is cut at the first byte beyond it (endless-data attack).
 * The bytes are not trusted here: verifyArtifact() checks size and sha256 afterwards.
 */
export interface DownloadRequest {
  url: string;               // absolute http(s) URL
  file: string;              // the .part file to write; if it exists with N bytes, resume from N
  size: number;              // declared size: never write more (endless-data attack U5: abort at size + 0 extra bytes)
  sha256: string;            // hex; sent as If-Range: "<sha256>" (the fleet's strong ETag is the quoted sha256)
  auth?: { username: string; password: string };   // HTTP Basic
  signal?: AbortSignal;
  onProgress?(received: number, total: number): void;   // throttle to at most ~4/s plus the final call
  attempts: number; backoffMinMs: number; backoffMaxMs: number; stallTimeoutMs: number;
  random?: () => number;     // for full-jitter backoff; default Math.random
}

export type DownloadErrorCode = 'too_long' | 'http_status' | 'network' | 'stalled' | 'aborted' | 'disk_full';

export class DownloadError extends Error {
  override readonly name = 'DownloadError';
  readonly code: DownloadErrorCode;
  /** True: retrying the same request cannot help (4xx, oversized body, disk full, aborted). */
  readonly permanent: boolean;
  /** The HTTP status, for code 'http_status'. */
  readonly status?: number;
  /** Requests made by the downloadArtifact() call that failed (set when it gives up). */
  attempts?: number;

  constructor(code: DownloadErrorCode, message: string, o: { permanent: boolean; status?: number; cause?: unknown }) {
    super(message, o.cause === undefined ? undefined : { cause: o.cause });
    this.code = code;
    this.permanent = o.permanent;
    if (o.status !== undefined) this.status = o.status;
  }
}

export interface DownloadResult {
  /** Bytes in the file now (= size). */
  bytes: number;
  /** Bytes the .part already held when the call started (the first request asked for the rest). */
  resumedFrom: number;
  /** HTTP requests made, the successful one included. */
  attempts: number;
  /** Times a 200 made the download start over from byte 0 after bytes had been written. */
  restarts: number;
}

const PROGRESS_INTERVAL_MS = 250;
const ERROR_SNIPPET_BYTES = 512;

/** An fs error on the .part file (kept apart from network errors, which are retried). */
class FileError extends Error {
  constructor(readonly fsError: NodeJS.ErrnoException) {
    super(fsError.message);
  }
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

async function fileOp<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw new FileError(err as NodeJS.ErrnoException);
  }
}

async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  // A write near a full disk may be short; the next write then reports ENOSPC.
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done);
    done += bytesWritten;
  }
}

function parseContentRange(v: string | undefined): { start: number; end: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(v?.trim() ?? '');
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? null : Number(m[3]) };
}

function retryAfterMs(res: IncomingMessage): number | null {
  const v = res.headers['retry-after'];
  if (typeof v !== 'string') return null;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

/** The start of an error body, for the message (the fleet answers JSON with a FLEET_* code). */
async function snippet(res: IncomingMessage): Promise<string> {
  let text = '';
  try {
    for await (const chunk of res) {
      text += (chunk as Buffer).toString('utf8');
      if (text.length >= ERROR_SNIPPET_BYTES) break;
    }
  } catch {
    // Best effort: the status alone decides.
  }
  return text.slice(0, ERROR_SNIPPET_BYTES).replace(/\s+/g, ' ').trim();
}

interface AttemptContext {
  req: DownloadRequest;
  url: URL;
  progress: (received: number, final: boolean) => void;
  /** Set by an attempt when a 200 replaced bytes that were already on disk. */
  restarted: boolean;
  /** A server-asked delay (Retry-After) for the next attempt. */
  retryAfterMs: number | null;
}

/** One HTTP request; resolves when the file holds exactly `size` bytes, throws otherwise. */
async function attemptOnce(ctx: AttemptContext): Promise<void> {
  const { req, url } = ctx;
  const offset = await fileOp(() => fileSize(req.file));
  const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'outpost-agent' };
  if (offset > 0) {
    headers['range'] = `bytes=${offset}-`;
    headers['if-range'] = `"${req.sha256}"`;
  }
  if (req.auth) headers['authorization'] = `Basic ${Buffer.from(`${req.auth.username}:${req.auth.password}`).toString('base64')}`;

  // agent: false → a connection of its own, closed with the response: nothing lingers in a keep-alive pool.
  const client = (url.protocol === 'https:' ? https : http).request(url, { method: 'GET', headers, agent: false });
  let res: IncomingMessage | undefined;
  let failure: DownloadError | undefined;
  let stallTimer: NodeJS.Timeout | undefined;
  let fh: FileHandle | undefined;

  const fail = (err: DownloadError) => {
    failure ??= err;
    res?.destroy(failure);
    client.destroy(failure);
  };
  const armStall = () => {
    clearTimeout(stallTimer);
    stallTimer = setTimeout(() => fail(new DownloadError('stalled', `no byte from ${url.host} for ${req.stallTimeoutMs} ms`, { permanent: false })), req.stallTimeoutMs);
  };
  const disarmStall = () => clearTimeout(stallTimer);
  const onAbort = () => fail(new DownloadError('aborted', 'download aborted', { permanent: true, cause: req.signal?.reason }));
  req.signal?.addEventListener('abort', onAbort, { once: true });
  // Errors after the response surface through `res`; this listener keeps a late socket error from being unhandled.
  client.on('error', () => {});

  try {
    // The signal may have fired while the file was stat'ed, before the listener existed.
    if (req.signal?.aborted) throw new DownloadError('aborted', 'download aborted', { permanent: true, cause: req.signal.reason });
    armStall();
    res = await new Promise<IncomingMessage>((resolve, reject) => {
      client.once('response', resolve);
      client.once('error', reject);
      client.end();
    });
    const status = res.statusCode ?? 0;

    if (status === 416) {
      if (offset === req.size) {
        // A previous run wrote everything; make it durable before anyone relies on it.
        await fileOp(async () => {
          const done = await open(req.file, 'r+');
          try {
            await done.sync();
          } finally {
            await done.close();
          }
        });
        ctx.progress(offset, true);
        return;
      }
      await fileOp(() => truncate(req.file, 0));
      throw new DownloadError('http_status', `416: the server refuses bytes=${offset}- of ${url.pathname} (its file is shorter); starting over`, { permanent: false, status });
    }
    if (status !== 200 && status !== 206) {
      const retryable = status === 429 || status >= 500;
      if (retryable) ctx.retryAfterMs = retryAfterMs(res);
      const body = await snippet(res);
      throw new DownloadError('http_status', `GET ${url.pathname} answered ${status} ${res.statusMessage ?? ''}${body ? `: ${body}` : ''}`.trim(), { permanent: !retryable, status });
    }

    let written: number;
    const declared = res.headers['content-length'] === undefined ? null : Number(res.headers['content-length']);
    if (status === 206) {
      const range = parseContentRange(res.headers['content-range']);
      if (range === null || range.start !== offset) {
        await fileOp(() => truncate(req.file, 0));
        throw new DownloadError('http_status', `206 with Content-Range ${JSON.stringify(res.headers['content-range'] ?? null)} for bytes=${offset}-; starting over`, { permanent: false, status });
      }
      if ((range.total ?? 0) > req.size || range.end >= req.size) {
        throw new DownloadError('too_long', `the server's artifact is ${range.total ?? `≥ ${range.end + 1}`} bytes, the signed size is ${req.size}`, { permanent: true, status });
      }
      if (range.total !== null && range.total < req.size) {
        throw new DownloadError('http_status', `the server's artifact is ${range.total} bytes, the signed size is ${req.size}`, { permanent: true, status });
      }
      written = offset;
      fh = await fileOp(() => open(req.file, 'a'));
    } else {
      if (declared !== null && declared > req.size) {
        throw new DownloadError('too_long', `the server announces ${declared} bytes, the signed size is ${req.size}`, { permanent: true, status });
      }
      if (declared !== null && declared < req.size) {
        throw new DownloadError('http_status', `the server's artifact is ${declared} bytes, the signed size is ${req.size}`, { permanent: true, status });
      }
      if (offset > 0) ctx.restarted = true;
      written = 0;
      fh = await fileOp(() => open(req.file, 'w'));
    }

    for await (const chunk of res) {
      const buf = chunk as Buffer;
      if (written + buf.length > req.size) {
        // Not one byte past the signed size reaches the disk.
        throw new DownloadError('too_long', `the body runs past the signed size of ${req.size} bytes (${written + buf.length} received)`, { permanent: true, status });
      }
      // The stall timer measures the network, not a slow flash write.
      disarmStall();
      await fileOp(() => writeAll(fh!, buf));
      written += buf.length;
      ctx.progress(written, false);
      armStall();
    }
    if (written < req.size) {
      throw new DownloadError('network', `the response ended after ${written} of ${req.size} bytes`, { permanent: false, status });
    }
    await fileOp(() => fh!.sync());
    ctx.progress(written, true);
  } catch (err) {
    // Whatever ended the attempt first (stall, abort) is the reason, not the socket error it caused.
    if (failure) throw failure;
    throw err;
  } finally {
    disarmStall();
    req.signal?.removeEventListener('abort', onAbort);
    res?.destroy();
    client.destroy();
    await fh?.close().catch(() => {});
  }
}

/** Maps what an attempt threw to a DownloadError; fs errors other than a full disk are rethrown as they are. */
function classify(err: unknown): DownloadError {
  if (err instanceof DownloadError) return err;
  if (err instanceof FileError) {
    const code = err.fsError.code;
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return new DownloadError('disk_full', `no space left to write the download (${code}): ${err.fsError.message}`, { permanent: true, cause: err.fsError });
    }
    throw err.fsError;
  }
  const e = err as NodeJS.ErrnoException;
  return new DownloadError('network', `network error: ${e?.code ? `${e.code} ` : ''}${e?.message ?? String(err)}`, { permanent: false, cause: err });
}

function validate(req: DownloadRequest): URL {
  let url: URL;
  try {
    url = new URL(req.url);
  } catch {
    throw new TypeError(`download url ${JSON.stringify(req.url)} is not an absolute URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`download url ${url.href} is not http(s)`);
  if (!Number.isSafeInteger(req.size) || req.size < 0) throw new RangeError(`download size ${req.size} is not a non-negative integer`);
  if (!/^[0-9a-fA-F]{64}$/.test(req.sha256)) throw new RangeError(`download sha256 ${JSON.stringify(req.sha256)} is not 64 hex digits`);
  if (!Number.isInteger(req.attempts) || req.attempts < 1) throw new RangeError(`download attempts ${req.attempts} must be ≥ 1`);
  if (!(req.stallTimeoutMs > 0)) throw new RangeError(`stallTimeoutMs ${req.stallTimeoutMs} must be > 0`);
  return url;
}

export async function downloadArtifact(req: DownloadRequest): Promise<DownloadResult> {
  const url = validate(req);
  const backoff = new Backoff({ minMs: req.backoffMinMs, maxMs: req.backoffMaxMs, random: req.random ?? Math.random });
  const aborted = () => new DownloadError('aborted', 'download aborted', { permanent: true, cause: req.signal?.reason });

  let initial = await fileSize(req.file);
  if (initial > req.size) {
    // Longer than the artifact: it cannot be a prefix of it.
    await truncate(req.file, 0);
    initial = 0;
  }

  let lastProgressAt = -Infinity;
  const progress = (received: number, final: boolean) => {
    if (!req.onProgress) return;
    const now = Date.now();
    if (!final && now - lastProgressAt < PROGRESS_INTERVAL_MS) return;
    lastProgressAt = now;
    req.onProgress(received, req.size);
  };
  const ctx: AttemptContext = { req, url, progress, restarted: false, retryAfterMs: null };

  let attempts = 0;
  let restarts = 0;
  for (;;) {
    if (req.signal?.aborted) throw Object.assign(aborted(), { attempts });
    attempts++;
    ctx.restarted = false;
    ctx.retryAfterMs = null;
    try {
      await attemptOnce(ctx);
      if (ctx.restarted) restarts++;
      return { bytes: req.size, resumedFrom: initial, attempts, restarts };
    } catch (err) {
      if (ctx.restarted) restarts++;
      const e = classify(err);
      e.attempts = attempts;
      if (e.permanent) throw e;
      if (attempts >= req.attempts) {
        e.message = `gave up after ${attempts} attempts: ${e.message}`;
        throw e;
      }
      const jitter = backoff.next();
      // A server that asks for a pause (Retry-After on 429/503) gets it, within the configured maximum.
      const delay = ctx.retryAfterMs === null ? jitter : Math.max(jitter, Math.min(ctx.retryAfterMs, req.backoffMaxMs));
      await sleep(delay, req.signal);
    }
  }
}
