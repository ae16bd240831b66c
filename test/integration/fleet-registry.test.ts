/**
 * The fleet server's model registry over real HTTP (fastify on 127.0.0.1), a real SQLite file, real files and
 * a real ed25519 key: uploads streamed and content-addressed, validation refusals, immutability, signatures an
 * agent can verify, downloads with Range/If-Range, deletion guarded by what devices report, and memory that
 * stays flat while a large upload streams through.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, openAsBlob, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import fastify, { type FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fail } from '../../fleet-server/src/errors.js';
import { registerRegistryRoutes } from '../../fleet-server/src/registry/routes.js';
import { FLEET_MIGRATIONS } from '../../fleet-server/src/storage/migrations.js';
import { OutpostError } from '../../shared/src/errors.js';
import { generateSigningKey, loadPrivateKey, modelStatement, verifyStatement } from '../../shared/src/signing.js';
import { openDatabase, type Db } from '../../shared/src/sqlite.js';
import { deviceAuth, enrollDevice, eventually, startFleet, type RunningFleet } from '../helpers/fleet.js';
import { GENERATED_REPOSITORY } from '../helpers/paths.js';

const OPERATOR = 'Bearer test-operator-token';
const DEVICE = `Basic ${Buffer.from('dev-1:device-secret').toString('base64')}`;

interface Registry {
  url: string;
  dataDir: string;
  db: Db;
  publicKeyPem: string;
  stop(): Promise<void>;
}

/** A minimal fleet app around the registry: the real routes, a real database, a trivial bearer check. */
async function startRegistry(options: { maxArtifactBytes?: number } = {}): Promise<Registry> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'outpost-registry-test-'));
  const db = openDatabase(path.join(dataDir, 'fleet.db'), FLEET_MIGRATIONS, 'fleet');
  const { privateKeyPem, publicKeyPem } = generateSigningKey();
  const app: FastifyInstance = fastify({ logger: false });
  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof OutpostError) return reply.code(err.httpStatus).headers(err.headers).send(err.toJSON());
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    return reply.code(status).send({ error: (err as Error).message, code: status === 415 ? 'FLEET_UNSUPPORTED_MEDIA_TYPE' : 'FLEET_INTERNAL' });
  });
  await app.register(
    async (api) => {
      registerRegistryRoutes(api, {
        db, dataDir, maxArtifactBytes: options.maxArtifactBytes ?? 64 * 1024 * 1024, signingKey: loadPrivateKey(privateKeyPem), log: pino({ level: 'silent' }),
        requireOperator: (req) => {
          if (req.headers.authorization !== OPERATOR) throw fail('FLEET_UNAUTHORIZED', 'operator token required');
        },
        requirePrincipal: (req) => {
          if (req.headers.authorization === OPERATOR) return { kind: 'operator', tokenId: 't1' };
          if (req.headers.authorization === DEVICE) return { kind: 'device', deviceId: 'dev-1' };
          throw fail('FLEET_UNAUTHORIZED', 'credentials required');
        },
      });
    },
    { prefix: '/api/v1' },
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}/api/v1`, dataDir, db, publicKeyPem,
    async stop() {
      await app.close();
      db.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Starts a registry for the enclosing describe block (stopped after it); call the result for the instance. */
function useRegistry(options: { maxArtifactBytes?: number } = {}): () => Registry {
  let reg: Registry | undefined;
  beforeAll(async () => {
    reg = await startRegistry(options);
  });
  afterAll(() => reg?.stop());
  return () => reg!;
}

const modelFile = (name: string, version = 1) => path.join(GENERATED_REPOSITORY, name, String(version), 'model.onnx');
const manifestText = (name: string, version = 1) => readFileSync(path.join(GENERATED_REPOSITORY, name, String(version), 'manifest.json'), 'utf8');
const sha256Of = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

async function push(reg: Registry, name: string, version: number, file: string, options: { manifest?: string; auth?: string } = {}) {
  const form = new FormData();
  if (options.manifest !== undefined) form.append('manifest', options.manifest);
  form.append('artifact', await openAsBlob(file), 'model.onnx');
  const res = await fetch(`${reg.url}/models/${name}/versions/${version}`, { method: 'POST', body: form, headers: { authorization: options.auth ?? OPERATOR } });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function getJson(reg: Registry, route: string, auth = OPERATOR) {
  const res = await fetch(`${reg.url}${route}`, { headers: { authorization: auth } });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

/** Files currently in the store, relative to <dataDir>/artifacts. */
function storedFiles(reg: Registry): string[] {
  const root = path.join(reg.dataDir, 'artifacts');
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(root, path.join(e.parentPath, e.name)));
}

const tmpDirs: string[] = [];
function tempFile(name: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-registry-input-'));
  tmpDirs.push(dir);
  return path.join(dir, name);
}
afterEach(() => {
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('fleet registry: upload, list, sign', () => {
  const reg = useRegistry();

  it('stores an uploaded model by content hash, signs it, and lists it', async () => {
    const bytes = readFileSync(modelFile('simple'));
    const { status, body } = await push(reg(), 'simple', 1, modelFile('simple'), { manifest: manifestText('simple') });
    expect(status).toBe(201);
    const sha256 = sha256Of(bytes);
    expect(body).toMatchObject({ name: 'simple', version: 1, sha256, size: bytes.length, artifactUrl: '/api/v1/models/simple/versions/1/artifact' });
    expect(body.manifest).toMatchObject({ name: 'simple', version: 1, sha256, task: 'raw' });
    expect(Date.parse(body.createdAt)).not.toBeNaN();
    // An agent holding only the public key accepts exactly this (name, version, sha256).
    expect(verifyStatement(reg().publicKeyPem, modelStatement({ name: 'simple', version: 1, sha256 }), body.signature)).toBe(true);
    expect(verifyStatement(reg().publicKeyPem, modelStatement({ name: 'simple', version: 2, sha256 }), body.signature)).toBe(false);
    // Content-addressed on disk, with the uploaded bytes.
    expect(readFileSync(path.join(reg().dataDir, 'artifacts/sha256', sha256.slice(0, 2), sha256))).toEqual(bytes);

    expect((await push(reg(), 'simple', 2, modelFile('simple', 2))).status).toBe(201); // a bare ONNX file, no manifest
    const list = await getJson(reg(), '/models');
    expect(list.body.models).toContainEqual({ name: 'simple', latestVersion: 2, versions: [1, 2] });
    const model = await getJson(reg(), '/models/simple');
    expect(model.body.versions.map((v: { version: number }) => v.version)).toEqual([1, 2]);
    expect(model.body.versions[1].manifest).toBeNull();
    const one = await getJson(reg(), '/models/simple/versions/1');
    expect(one.body).toEqual({ ...body, runningOn: [] });
  });

  it('refuses a second upload of the same version (409) and keeps the first', async () => {
    await push(reg(), 'immutable', 1, modelFile('simple'));
    const again = await push(reg(), 'immutable', 1, modelFile('simple', 2));
    expect(again).toMatchObject({ status: 409, body: { code: 'FLEET_MODEL_EXISTS' } });
    expect((await getJson(reg(), '/models/immutable/versions/1')).body.sha256).toBe(sha256Of(readFileSync(modelFile('simple'))));
  });

  it('stores identical bytes once for several versions', async () => {
    const a = await push(reg(), 'twin-a', 1, modelFile('identity'));
    const b = await push(reg(), 'twin-b', 7, modelFile('identity'));
    expect(a.body.sha256).toBe(b.body.sha256);
    expect(storedFiles(reg()).filter((f) => f.endsWith(a.body.sha256 as string))).toHaveLength(1);
  });

  it('refuses random bytes, an empty file and a truncated model with 400 FLEET_ARTIFACT_INVALID', async () => {
    const garbage = tempFile('garbage.onnx');
    writeFileSync(garbage, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251)));
    const empty = tempFile('empty.onnx');
    writeFileSync(empty, '');
    const truncated = tempFile('truncated.onnx');
    const real = readFileSync(modelFile('demo-shapes'));
    writeFileSync(truncated, real.subarray(0, real.length - 100));
    for (const [file, reason] of [[garbage, /not an ONNX model/], [empty, /empty/], [truncated, /not an ONNX model/]] as const) {
      const r = await push(reg(), 'broken', 1, file);
      expect(r.status, file).toBe(400);
      expect(r.body.code).toBe('FLEET_ARTIFACT_INVALID');
      expect(r.body.error).toMatch(reason);
    }
    expect((await getJson(reg(), '/models/broken')).status).toBe(404);
    expect(readdirSync(path.join(reg().dataDir, 'artifacts/tmp'))).toEqual([]);
  });

  it('refuses an invalid manifest with the reasons (400 FLEET_MANIFEST_INVALID)', async () => {
    const good = JSON.parse(manifestText('simple')) as Record<string, unknown>;
    const bad = await push(reg(), 'simple', 3, modelFile('simple'), { manifest: JSON.stringify({ ...good, version: 3, task: 'juggle', batching: { max_batch_size: 0 } }) });
    expect(bad).toMatchObject({ status: 400, body: { code: 'FLEET_MANIFEST_INVALID' } });
    expect(bad.body.error).toContain('task');
    expect(bad.body.error).toContain('batching.max_batch_size');
    const notJson = await push(reg(), 'simple', 3, modelFile('simple'), { manifest: '{"name": ' });
    expect(notJson).toMatchObject({ status: 400, body: { code: 'FLEET_MANIFEST_INVALID' } });
    const otherName = await push(reg(), 'simple', 3, modelFile('simple'), { manifest: JSON.stringify({ ...good, name: 'other', version: 3 }) });
    expect(otherName.body.error).toContain('"other"');
    // The manifest names a different file than the one uploaded.
    const wrongHash = await push(reg(), 'simple', 3, modelFile('simple', 2), { manifest: JSON.stringify({ ...good, version: 3 }) });
    expect(wrongHash).toMatchObject({ status: 400, body: { code: 'FLEET_ARTIFACT_INVALID' } });
    expect(wrongHash.body.error).toContain(good.sha256 as string);
    expect((await getJson(reg(), '/models/simple/versions/3')).status).toBe(404);
  });

  it('refuses bad names, versions, media types and missing credentials', async () => {
    expect((await push(reg(), 'Bad_Name', 1, modelFile('simple'))).body.code).toBe('FLEET_BAD_REQUEST');
    expect((await push(reg(), 'ok', 0, modelFile('simple'))).body.code).toBe('FLEET_BAD_REQUEST');
    expect((await push(reg(), 'ok', 1, modelFile('simple'), { auth: 'Bearer wrong' })).status).toBe(401);
    expect((await getJson(reg(), '/models', DEVICE)).status).toBe(401);
    const json = await fetch(`${reg().url}/models/ok/versions/1`, { method: 'POST', body: '{}', headers: { authorization: OPERATOR, 'content-type': 'application/json' } });
    expect(json.status).toBe(415);
    const noFile = new FormData();
    noFile.append('note', 'a text field but no file');
    const r = await fetch(`${reg().url}/models/ok/versions/1`, { method: 'POST', body: noFile, headers: { authorization: OPERATOR } });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: string }).error).toContain('artifact');
  });
});

describe('fleet registry: download with Range', () => {
  const reg = useRegistry();
  const bytes = readFileSync(modelFile('demo-shapes'));
  const etag = `"${sha256Of(bytes)}"`;
  const route = '/models/shapes/versions/1/artifact';
  beforeAll(async () => {
    expect((await push(reg(), 'shapes', 1, modelFile('demo-shapes'))).status).toBe(201);
  });

  const download = (headers: Record<string, string> = {}) => fetch(`${reg().url}${route}`, { headers: { authorization: OPERATOR, ...headers } });

  it('serves the whole artifact with a strong ETag, to operators and devices', async () => {
    for (const authorization of [OPERATOR, DEVICE]) {
      const res = await download({ authorization });
      expect(res.status).toBe(200);
      expect(res.headers.get('etag')).toBe(etag);
      expect(res.headers.get('content-type')).toBe('application/octet-stream');
      expect(res.headers.get('accept-ranges')).toBe('bytes');
      expect(Buffer.from(await res.arrayBuffer())).toEqual(bytes);
    }
    expect((await download({ authorization: 'Bearer nope' })).status).toBe(401);
  });

  it('serves exactly the requested range (206)', async () => {
    const res = await download({ range: 'bytes=100-199' });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes 100-199/${bytes.length}`);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(bytes.subarray(100, 200));
  });

  it('honours If-Range: the right ETag resumes (206), a stale one restarts with the whole file (200)', async () => {
    const resumed = await download({ range: `bytes=${bytes.length - 1000}-`, 'if-range': etag });
    expect(resumed.status).toBe(206);
    expect(Buffer.from(await resumed.arrayBuffer())).toEqual(bytes.subarray(bytes.length - 1000));
    const stale = await download({ range: 'bytes=100-199', 'if-range': `"${'0'.repeat(64)}"` });
    expect(stale.status).toBe(200);
    expect(Buffer.from(await stale.arrayBuffer())).toEqual(bytes);
    expect((await download({ 'if-none-match': etag })).status).toBe(304);
  });

  it('answers an unsatisfiable range with 416 JSON', async () => {
    const res = await download({ range: `bytes=${bytes.length + 10}-` });
    expect(res.status).toBe(416);
    expect(res.headers.get('content-range')).toBe(`bytes */${bytes.length}`);
    expect(await res.json()).toMatchObject({ code: 'FLEET_RANGE_NOT_SATISFIABLE' });
  });

  it('answers 404 for an unknown version', async () => {
    const res = await fetch(`${reg().url}/models/shapes/versions/2/artifact`, { headers: { authorization: OPERATOR } });
    expect(res.status).toBe(404);
  });
});

describe('fleet registry: delete', () => {
  const reg = useRegistry();

  function reportDevice(id: string, models: Array<{ name: string; version: number }>, revoked = false) {
    const reported = { v: 1, deviceId: id, online: true, models: models.map((m) => ({ ...m, state: 'active', provider: 'cpu', error: null })) };
    reg().db
      .prepare('INSERT OR REPLACE INTO devices (id, secret_hash, tags, enrolled_at, revoked_at, online, reported) VALUES (?, ?, ?, ?, ?, 1, ?)')
      .run(id, '$7$x', '{}', new Date().toISOString(), revoked ? new Date().toISOString() : null, JSON.stringify(reported));
  }
  const del = (route: string) => fetch(`${reg().url}${route}`, { method: 'DELETE', headers: { authorization: OPERATOR } });

  it('refuses to delete a version a device runs (409), shows where it runs, and deletes it once it does not', async () => {
    const pushed = await push(reg(), 'simple', 1, modelFile('simple'));
    reportDevice('line-3-cam', [{ name: 'simple', version: 1 }]);
    reportDevice('old-box', [{ name: 'simple', version: 1 }], true); // revoked devices do not count
    expect((await getJson(reg(), '/models/simple/versions/1')).body.runningOn).toEqual(['line-3-cam']);
    const refused = await del('/models/simple/versions/1');
    expect(refused.status).toBe(409);
    expect(await refused.json()).toMatchObject({ code: 'FLEET_MODEL_IN_USE', error: expect.stringContaining('line-3-cam') });

    reportDevice('line-3-cam', [{ name: 'simple', version: 2 }]);
    expect((await del('/models/simple/versions/1')).status).toBe(204);
    expect((await getJson(reg(), '/models/simple/versions/1')).status).toBe(404);
    expect((await fetch(`${reg().url}/models/simple/versions/1/artifact`, { headers: { authorization: OPERATOR } })).status).toBe(404);
    expect(storedFiles(reg()).some((f) => f.endsWith(pushed.body.sha256 as string))).toBe(false);
    expect((await del('/models/simple/versions/1')).status).toBe(404);
  });

  it('keeps an artifact file while another version still references it', async () => {
    const a = await push(reg(), 'shared-a', 1, modelFile('slow'));
    await push(reg(), 'shared-b', 1, modelFile('slow'));
    const sha = a.body.sha256 as string;
    expect((await del('/models/shared-a/versions/1')).status).toBe(204);
    expect(storedFiles(reg()).filter((f) => f.endsWith(sha))).toHaveLength(1);
    const res = await fetch(`${reg().url}/models/shared-b/versions/1/artifact`, { headers: { authorization: OPERATOR } });
    expect(sha256Of(Buffer.from(await res.arrayBuffer()))).toBe(sha);
    expect((await del('/models/shared-b/versions/1')).status).toBe(204);
    expect(storedFiles(reg()).filter((f) => f.endsWith(sha))).toHaveLength(0);
  });
});

describe('fleet registry: size limit', () => {
  const reg = useRegistry({ maxArtifactBytes: 4096 });

  it('refuses an artifact over the limit with 413 and leaves no file behind (declared length and chunked)', async () => {
    const big = modelFile('demo-shapes'); // ~14 KB > 4 KB
    const declared = await push(reg(), 'big', 1, big);
    expect(declared).toMatchObject({ status: 413, body: { code: 'FLEET_PAYLOAD_TOO_LARGE' } });

    // Chunked, no Content-Length: the server has to count while streaming.
    const boundary = 'outpost-test-boundary';
    const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="model.onnx"\r\nContent-Type: application/octet-stream\r\n\r\n`);
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const body = Readable.toWeb(Readable.from([head, readFileSync(big), tail])) as ReadableStream;
    const res = await fetch(`${reg().url}/models/big/versions/1`, {
      method: 'POST', body, duplex: 'half',
      headers: { authorization: OPERATOR, 'content-type': `multipart/form-data; boundary=${boundary}` },
    } as RequestInit);
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ code: 'FLEET_PAYLOAD_TOO_LARGE' });
    expect(readdirSync(path.join(reg().dataDir, 'artifacts/tmp'))).toEqual([]);
    expect(storedFiles(reg())).toEqual([]);
    // The limit leaves room for models that fit.
    expect((await push(reg(), 'small', 1, modelFile('simple'))).status).toBe(201);
  });
});

/**
 * Uploads a file from a separate process (so this process's memory is the server's alone): a plain
 * node:http multipart request with a declared length, the body piped from disk.
 */
const UPLOADER = `
const http = require('node:http'); const fs = require('node:fs');
const [url, file, auth] = process.argv.slice(1);
const boundary = 'outpost-' + process.pid;
const head = '--' + boundary + '\\r\\nContent-Disposition: form-data; name="artifact"; filename="model.onnx"\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n';
const tail = '\\r\\n--' + boundary + '--\\r\\n';
const length = Buffer.byteLength(head) + fs.statSync(file).size + Buffer.byteLength(tail);
const req = http.request(url, { method: 'POST', headers: { authorization: auth, 'content-type': 'multipart/form-data; boundary=' + boundary, 'content-length': length } }, (res) => {
  let body = ''; res.on('data', (d) => (body += d)); res.on('end', () => process.stdout.write(JSON.stringify({ status: res.statusCode, body: JSON.parse(body) })));
});
req.write(head);
const source = fs.createReadStream(file);
source.pipe(req, { end: false });
source.on('end', () => req.end(tail));
`;

function uploadFromChild(url: string, file: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', UPLOADER, url, file, OPERATOR], { timeout: 20_000 }, (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout))));
  });
}

describe('fleet registry: interrupted upload', () => {
  const reg = useRegistry();

  it('removes the partial temp file when the client disconnects mid-upload, and keeps serving', async () => {
    const { port } = new URL(reg().url);
    const boundary = 'cut-boundary';
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="model.onnx"\r\n\r\n`;
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write(
      `POST /api/v1/models/cut/versions/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${OPERATOR}\r\n` +
        `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${head.length + 4 * 1024 * 1024}\r\n\r\n${head}`,
    );
    const tmp = path.join(reg().dataDir, 'artifacts/tmp');
    try {
      socket.write(Buffer.alloc(1024 * 1024, 7)); // a quarter of the declared file, then the cable is pulled
      await eventually(() => readdirSync(tmp).length === 1, 'the upload to reach a temp file');
    } finally {
      socket.destroy();
    }
    await eventually(() => readdirSync(tmp).length === 0, 'the temp file to be removed');
    expect(storedFiles(reg())).toEqual([]);
    expect((await getJson(reg(), '/models/cut')).status).toBe(404);
    expect((await push(reg(), 'cut', 1, modelFile('simple'))).status).toBe(201);
  });
});

describe('fleet registry: streaming upload memory', () => {
  const reg = useRegistry({ maxArtifactBytes: 256 * 1024 * 1024 });

  it('streams a 192 MB upload to disk without holding it in memory, then refuses it as not ONNX', async () => {
    const SIZE = 192 * 1024 * 1024;
    const file = tempFile('zeros.onnx');
    writeFileSync(file, '');
    truncateSync(file, SIZE); // sparse, reads as zeros
    const before = process.memoryUsage.rss();
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage.rss());
    }, 5);
    try {
      const r = await uploadFromChild(`${reg().url}/models/zeros/versions/1`, file);
      // Refused only after the whole body streamed through: the check reads the stored file.
      expect(r).toMatchObject({ status: 400, body: { code: 'FLEET_ARTIFACT_INVALID' } });
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage.rss());
    // Measured 20–35 MB of heap and buffer churn, whatever the size; holding the body would add ≥ 192 MB.
    expect(peak - before).toBeLessThan(SIZE / 3);
    expect(readdirSync(path.join(reg().dataDir, 'artifacts/tmp'))).toEqual([]);
  });
});

describe('fleet registry through the real fleet server', () => {
  let fleet: RunningFleet;
  beforeAll(async () => {
    fleet = await startFleet();
  });
  afterAll(() => fleet?.stop());

  it('an enrolled device downloads a pushed model by Range and verifies it with the key it got at enrollment', async () => {
    const bytes = readFileSync(modelFile('demo-shapes'));
    const form = new FormData();
    form.append('manifest', manifestText('demo-shapes'));
    form.append('artifact', await openAsBlob(modelFile('demo-shapes')), 'model.onnx');
    const pushed = await fetch(`${fleet.httpUrl}/api/v1/models/demo-shapes/versions/1`, { method: 'POST', body: form, headers: { authorization: `Bearer ${fleet.adminToken}` } });
    expect(pushed.status).toBe(201);
    const version = (await pushed.json()) as { sha256: string; signature: string; artifactUrl: string };

    const device = await enrollDevice(fleet);
    const auth = deviceAuth(device);
    const first = await fetch(`${fleet.httpUrl}${version.artifactUrl}`, { headers: { authorization: auth, range: 'bytes=0-4095' } });
    expect(first.status).toBe(206);
    const head = Buffer.from(await first.arrayBuffer());
    const rest = await fetch(`${fleet.httpUrl}${version.artifactUrl}`, { headers: { authorization: auth, range: 'bytes=4096-', 'if-range': first.headers.get('etag')! } });
    expect(rest.status).toBe(206);
    const whole = Buffer.concat([head, Buffer.from(await rest.arrayBuffer())]);
    expect(whole).toEqual(bytes);
    expect(verifyStatement(device.fleetPublicKey, modelStatement({ name: 'demo-shapes', version: 1, sha256: sha256Of(whole) }), version.signature)).toBe(true);

    // Devices may download, not manage the registry.
    expect((await fleet.api('GET', '/api/v1/models', undefined, auth)).status).toBe(403);
    expect((await fleet.api('DELETE', '/api/v1/models/demo-shapes/versions/1', undefined, auth)).status).toBe(403);
    expect((await fleet.api('GET', '/api/v1/models')).body.models).toEqual([{ name: 'demo-shapes', latestVersion: 1, versions: [1] }]);
  });
});
