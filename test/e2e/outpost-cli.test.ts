/**
 * The operator CLI `outpost` against a real fleet server (test/helpers/fleet.ts: real SQLite, real HTTP, the
 * real registry): what an operator sees on stdout/stderr, --json, exit statuses, token lookup, and a push that
 * streams with a progress bar. runCli runs in-process (the sources are TypeScript; vitest runs them directly);
 * the compiled bin is spawned too when dist/ exists (npm test builds it first).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Command } from 'commander';
import { EXIT } from '../../fleet-server/src/cli/exit-codes.js';
import { buildProgram, runCli, type CliIo } from '../../fleet-server/src/cli/main.js';
import { topicFor } from '../../shared/src/mqtt/topics.js';
import { modelStatement, verifyStatement } from '../../shared/src/signing.js';
import { observe, quantile, type SparseHistogram } from '../../shared/src/telemetry/histogram.js';
import { startFleet, type RunningFleet } from '../helpers/fleet.js';
import { GENERATED_REPOSITORY, REPO_ROOT } from '../helpers/paths.js';

const model = (name: string, version = 1) => path.join(GENERATED_REPOSITORY, name, String(version), 'model.onnx');
const manifest = (name: string, version = 1) => path.join(GENERATED_REPOSITORY, name, String(version), 'manifest.json');

let fleet: RunningFleet;
let scratch: string;

beforeAll(async () => {
  fleet = await startFleet();
  scratch = mkdtempSync(path.join(os.tmpdir(), 'outpost-cli-test-'));
});
afterAll(async () => {
  await fleet?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `outpost …` in-process with the fleet's URL and admin token in the environment unless overridden. */
async function outpost(args: string[], options: { env?: Record<string, string | undefined>; cwd?: string; tty?: boolean; now?: () => number } = {}): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s), isTTY: options.tty === true },
    env: { OUTPOST_FLEET_URL: fleet.httpUrl, OUTPOST_TOKEN: fleet.adminToken, ...options.env },
    cwd: options.cwd ?? scratch,
    ...(options.now ? { now: options.now } : {}),
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}

let seq = 0;
/** Feeds one agent message into the fleet's ingest, as the fleet's MQTT client would. */
function report(deviceId: string, kind: 'state' | 'telemetry' | 'events', body: Record<string, unknown>): void {
  const message = { v: 1, deviceId, seq: ++seq, ts: new Date().toISOString(), ...body };
  fleet.fleet.ingest(topicFor(deviceId, kind), Buffer.from(JSON.stringify(message)));
}

function runningState(models: Array<{ name: string; version: number }>) {
  return {
    online: true, agentVersion: '0.1.0', startedAt: new Date().toISOString(), provider: 'cpu',
    models: models.map((m) => ({ ...m, state: 'active', provider: 'cpu', error: null })),
    outbox: { rows: 3, bytes: 2048, droppedTelemetry: 0, deadLettered: 0 }, hardware: {}, update: {},
  };
}

async function enrollWithToken(token: string): Promise<string> {
  const r = await fleet.api('POST', '/api/v1/enroll', { token }, null);
  expect(r.status).toBe(201);
  return r.body.deviceId as string;
}

describe('outpost help and usage', () => {
  it('documents commands, the token lookup and the exit statuses in --help; --version prints the version', async () => {
    const help = await outpost(['--help']);
    expect(help.code).toBe(0);
    for (const word of ['devices', 'models', 'metrics', 'events', 'OUTPOST_TOKEN', 'OUTPOST_FLEET_URL', 'data/admin-token', 'Exit status']) expect(help.stdout).toContain(word);
    for (const code of ['3  authentication', '4  not found', '5  conflict', '6  input refused']) expect(help.stdout).toContain(code);
    const push = await outpost(['models', 'push', '--help']);
    expect(push.stdout).toContain('--manifest');
    expect(push.stdout).toContain('--json');
    const version = await outpost(['--version']);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version);
  });

  it('docs/cli.md documents every command, option and exit status', () => {
    const docs = readFileSync(path.join(REPO_ROOT, 'docs/cli.md'), 'utf8');
    const missing: string[] = [];
    const walk = (cmd: Command, names: string[]) => {
      for (const sub of cmd.commands) {
        const full = [...names, sub.name()];
        if (sub.commands.length > 0) walk(sub, full);
        else {
          if (!docs.includes(`## \`outpost ${full.join(' ')}`)) missing.push(full.join(' '));
          for (const o of sub.options) if (o.long && !docs.includes(`\`${o.long}`)) missing.push(`${full.join(' ')} ${o.long}`);
        }
      }
    };
    walk(buildProgram({ stdout: { write: () => true }, stderr: { write: () => true }, env: {}, cwd: scratch }), []);
    expect(missing).toEqual([]);
    for (const status of Object.values(EXIT)) expect(docs).toMatch(new RegExp(`^\\| ${status} \\|`, 'm'));
  });

  it('exits 2 on usage errors without calling the server', async () => {
    const cases = [
      ['devices', 'dance'],
      ['models', 'rm', 'no-version'],
      ['models', 'push', path.join(scratch, 'missing.onnx'), '--name', 'x', '--version', '1'],
      ['models', 'push', model('simple'), '--name', 'x'],
      ['models', 'push', model('simple'), '--name', 'Not OK', '--version', '1'],
      ['devices', 'token', '--ttl', 'soon'],
      ['devices', 'token', '--tags', 'novalue'],
      ['metrics', '--device', 'd1'],
      ['metrics', '--device', 'd1', '--model', 'm', '--since', 'yesterday'],
      ['models', 'ls', '--fleet', 'not a url'],
    ];
    for (const args of cases) {
      const r = await outpost(args, { env: { OUTPOST_FLEET_URL: 'http://127.0.0.1:9' } }); // nothing listens there
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(/^outpost: /m);
      expect(r.stdout).toBe('');
    }
    const group = await outpost(['models']);
    expect(group.code).toBe(2);
    expect(group.stderr).toContain('push');
  });
});

describe('outpost devices', () => {
  it('creates a token that works in $(…), lists, shows and revokes the device it enrolled', async () => {
    const t = await outpost(['devices', 'token', '--tags', 'line=3,site=a', '--ttl', '30m']);
    expect(t.code).toBe(0);
    const token = t.stdout.split('\n')[0]!;
    expect(t.stdout).toBe(`${token}\n`); // nothing else on stdout
    expect(t.stderr).toContain('expires');
    expect(t.stderr).toContain('line=3,site=a');
    const deviceId = await enrollWithToken(token);
    report(deviceId, 'state', runningState([{ name: 'demo-shapes', version: 1 }]));

    const ls = await outpost(['devices', 'ls']);
    expect(ls.code).toBe(0);
    const [header, ...rows] = ls.stdout.trimEnd().split('\n');
    expect(header!.split(/\s{2,}/)).toEqual(['ID', 'TAGS', 'ONLINE', 'PROVIDER', 'MODELS', 'LAST SEEN', 'OUTBOX']);
    const row = rows.find((r) => r.startsWith(deviceId))!;
    expect(row).toContain('line=3,site=a');
    expect(row).toContain('cpu');
    expect(row).toContain('demo-shapes@1:active');
    expect(row).toContain('3 rows 2.0 KiB');

    const json = await outpost(['devices', 'ls', '--json']);
    expect(JSON.parse(json.stdout)).toEqual((await fleet.api('GET', '/api/v1/devices')).body);

    const show = await outpost(['devices', 'show', deviceId]);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/provider\s+cpu/);
    expect(show.stdout).toMatch(/demo-shapes\s+1\s+active/);

    const revoke = await outpost(['devices', 'revoke', deviceId]);
    expect(revoke.code).toBe(0);
    expect(revoke.stdout).toContain(`revoked ${deviceId}`);
    expect((await outpost(['devices', 'ls', '--json'])).stdout).toContain('"revoked": true');

    const missing = await outpost(['devices', 'show', 'no-such-device']);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toMatch(/^outpost: .*\(FLEET_NOT_FOUND\)\n$/);
  });
});

describe('outpost models', () => {
  it('pushes with a manifest, lists, shows, refuses duplicates and bad files, deletes', async () => {
    const bytes = readFileSync(model('simple'));
    const push = await outpost(['models', 'push', model('simple'), '--manifest', manifest('simple')]); // name and version from the manifest
    expect(push.code).toBe(0);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    expect(push.stdout).toContain('pushed simple@1');
    expect(push.stdout).toContain(sha256);
    expect(push.stderr).toMatch(/^simple@1: sent 249 B in /); // not a terminal: one summary line

    const json = await outpost(['models', 'push', model('simple', 2), '--name', 'simple', '--version', '2', '--json']);
    expect(json.code).toBe(0);
    const pushed = JSON.parse(json.stdout) as { sha256: string; signature: string };
    expect(verifyStatement(fleet.fleet.signingKey.publicKeyPem, modelStatement({ name: 'simple', version: 2, sha256: pushed.sha256 }), pushed.signature)).toBe(true);

    const ls = await outpost(['models', 'ls']);
    expect(ls.stdout).toMatch(/^NAME\s+LATEST\s+VERSIONS\nsimple\s+2\s+1,2$/m);
    const show = await outpost(['models', 'show', 'simple']);
    expect(show.stdout).toMatch(new RegExp(`^1\\s+${sha256.slice(0, 12)}\\s+249 B`, 'm'));
    const one = await outpost(['models', 'show', 'simple', '--version', '1', '--json']);
    expect(JSON.parse(one.stdout)).toEqual((await fleet.api('GET', '/api/v1/models/simple/versions/1')).body);

    const dup = await outpost(['models', 'push', model('simple'), '--name', 'simple', '--version', '1']);
    expect(dup.code).toBe(5);
    expect(dup.stderr).toMatch(/^outpost: .*\(FLEET_MODEL_EXISTS\)$/m);

    const garbage = path.join(scratch, 'garbage.onnx');
    writeFileSync(garbage, 'definitely not protobuf '.repeat(100));
    const bad = await outpost(['models', 'push', garbage, '--name', 'junk', '--version', '1']);
    expect(bad.code).toBe(6);
    expect(bad.stderr).toContain('(FLEET_ARTIFACT_INVALID)');
    const badManifest = path.join(scratch, 'manifest.json');
    writeFileSync(badManifest, JSON.stringify({ name: 'junk', version: 1, task: 'juggle' }));
    const refused = await outpost(['models', 'push', model('simple'), '--manifest', badManifest]);
    expect(refused.code).toBe(6);
    expect(refused.stderr).toContain('task');

    // A device runs simple@1: deleting it is a conflict until it moves on.
    const token = (await outpost(['devices', 'token'])).stdout.trim();
    const deviceId = await enrollWithToken(token);
    report(deviceId, 'state', runningState([{ name: 'simple', version: 1 }]));
    const inUse = await outpost(['models', 'rm', 'simple@1']);
    expect(inUse.code).toBe(5);
    expect(inUse.stderr).toContain(deviceId);
    report(deviceId, 'state', runningState([{ name: 'simple', version: 2 }]));
    const rm = await outpost(['models', 'rm', 'simple@1']);
    expect([rm.code, rm.stdout]).toEqual([0, 'deleted simple@1\n']);
    expect((await outpost(['models', 'rm', 'simple@1'])).code).toBe(4);
  });

  it('streams a push from disk with a progress bar on a terminal', async () => {
    const file = path.join(scratch, 'big.onnx');
    writeFileSync(file, '');
    truncateSync(file, 8 * 1024 * 1024); // zeros: streamed whole, then refused as not ONNX
    let t = 0;
    const r = await outpost(['models', 'push', file, '--name', 'big', '--version', '1'], { tty: true, now: () => (t += 1000) });
    expect(r.code).toBe(6);
    const frames = r.stderr.split('\r').filter((f) => f.startsWith('big@1 ['));
    const percents = frames.map((f) => Number(/\]\s+(\d+)%/.exec(f)![1]));
    // Drawn as chunks were sent: several intermediate values, growing, up to the whole file.
    expect(percents.filter((p) => p > 0 && p < 100).length).toBeGreaterThan(5);
    expect(percents).toEqual([...percents].sort((a, b) => a - b));
    expect(frames.at(-1)).toContain('8.0 MiB / 8.0 MiB');
    // The bar is cleared before the error, which starts on its own line.
    expect(r.stderr).toMatch(/\r\x1b\[Koutpost: .*\(FLEET_ARTIFACT_INVALID\)\n$/);
  });

  it('does not hold the file in memory while pushing it', async () => {
    const SIZE = 192 * 1024 * 1024;
    const file = path.join(scratch, 'huge.onnx');
    writeFileSync(file, '');
    truncateSync(file, SIZE);
    const before = process.memoryUsage();
    let peak = before.rss;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 5);
    let r: Run;
    try {
      r = await outpost(['models', 'push', file, '--name', 'huge', '--version', '1']);
    } finally {
      clearInterval(sampler);
    }
    expect(r.code).toBe(6); // refused as not ONNX, after the whole body was streamed and stored
    expect(r.stderr).toContain('(FLEET_ARTIFACT_INVALID)');
    // CLI and fleet server share this process. Chunks still referenced after the upload (fetch's redirect
    // replay copy did exactly that) would show here as ≥ SIZE; garbage not yet collected peaks near 50-70 MB.
    expect(process.memoryUsage().arrayBuffers - before.arrayBuffers).toBeLessThan(SIZE / 4);
    expect(Math.max(peak, process.memoryUsage.rss()) - before.rss).toBeLessThan(SIZE / 2);
  });
});

describe('outpost metrics and events', () => {
  it('prints totals, percentiles and points, and --json unchanged', async () => {
    const deviceId = await enrollWithToken((await outpost(['devices', 'token'])).stdout.trim());
    const hist: SparseHistogram = {};
    const samples = [2, 3, 3, 4, 5, 40];
    for (const s of samples) observe(hist, s);
    const latency = { p50: quantile(hist, 0.5), p95: quantile(hist, 0.95), p99: quantile(hist, 0.99), hist };
    const end = new Date(Date.now() - 60_000);
    report(deviceId, 'telemetry', {
      windowStart: new Date(end.getTime() - 10_000).toISOString(), windowEnd: end.toISOString(), system: null,
      models: [{ model: 'detector', version: 2, requests: 120, failures: 3, latencyMs: latency, queueMs: { p50: 0, p95: 0, p99: 0, hist: {} }, batchSize: { mean: 1, max: 1 }, scoreBins: Array(10).fill(0), classes: {} }],
    });
    report(deviceId, 'events', { kind: 'model.loaded', severity: 'info', message: 'detector@2 loaded on cpu', data: {} });

    const m = await outpost(['metrics', '--device', deviceId, '--model', 'detector', '--since', '1h']);
    expect(m.code).toBe(0);
    expect(m.stdout).toContain(`device ${deviceId}  model detector`);
    expect(m.stdout).toContain('requests 120  failures 3 (2.50%)');
    expect(m.stdout).toMatch(/^WINDOW END\s+VERSION\s+REQUESTS\s+FAILURES\s+P50\s+P95\s+P99$/m);
    expect(m.stdout).toMatch(new RegExp(`^${end.toISOString()}\\s+2\\s+120\\s+3`, 'm'));
    const json = await outpost(['metrics', '--device', deviceId, '--model', 'detector', '--since', '1h', '--json']);
    const answer = JSON.parse(json.stdout) as { requests: number; since: string; until: string; latency: { p95: number } };
    expect(answer).toMatchObject({ requests: 120, failures: 3, latency: { p95: latency.p95 } });
    expect(Date.parse(answer.until) - Date.parse(answer.since)).toBeGreaterThanOrEqual(3_599_000);

    const events = await outpost(['events', '--device', deviceId, '--since', '1h']);
    expect(events.code).toBe(0);
    expect(events.stdout).toMatch(/model\.loaded\s+detector@2 loaded on cpu/);
    expect((await outpost(['events', '--device', 'nobody'])).code).toBe(4);
  });
});

describe('outpost credentials and reachability', () => {
  it('exits 3 on a wrong or missing token, and finds ./data/admin-token on the fleet box', async () => {
    const wrong = await outpost(['models', 'ls'], { env: { OUTPOST_TOKEN: 'not-a-token' } });
    expect(wrong.code).toBe(3);
    expect(wrong.stderr).toContain('(FLEET_UNAUTHORIZED)');
    const none = await outpost(['models', 'ls'], { env: { OUTPOST_TOKEN: undefined } });
    expect(none.code).toBe(3);
    expect(none.stderr).toContain('data/admin-token');
    const box = mkdtempSync(path.join(scratch, 'box-'));
    mkdirSync(path.join(box, 'data'));
    writeFileSync(path.join(box, 'data/admin-token'), `${fleet.adminToken}\n`);
    const local = await outpost(['models', 'ls', '--json'], { env: { OUTPOST_TOKEN: undefined }, cwd: box });
    expect(local.code).toBe(0);
    expect(JSON.parse(local.stdout)).toHaveProperty('models');
    // The flag wins over the environment.
    expect((await outpost(['models', 'ls', '--token', 'nope'])).code).toBe(3);
  });

  it('exits 1 when the fleet server cannot be reached', async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number };
        s.close(() => resolve(port));
      });
    });
    const r = await outpost(['devices', 'ls', '--fleet', `http://127.0.0.1:${closedPort}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('cannot reach the fleet server');
    expect(r.stderr).toContain('ECONNREFUSED');
  });
});

const COMPILED = path.join(REPO_ROOT, 'dist/fleet-server/src/cli/main.js');
describe.skipIf(!existsSync(COMPILED))('the compiled bin/outpost.js', () => {
  function spawnOutpost(args: string[]): Promise<Run> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [path.join(REPO_ROOT, 'bin/outpost.js'), ...args],
        { cwd: scratch, timeout: 20_000, env: { ...process.env, OUTPOST_FLEET_URL: fleet.httpUrl, OUTPOST_TOKEN: fleet.adminToken } },
        (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  }

  it('runs as a process with the same output and exit statuses', async () => {
    const ls = await spawnOutpost(['models', 'ls', '--json']);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual((await fleet.api('GET', '/api/v1/models')).body);
    const missing = await spawnOutpost(['models', 'rm', 'nothing@1']);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toContain('(FLEET_NOT_FOUND)');
    expect((await spawnOutpost(['--bogus'])).code).toBe(2);
  });
});
if (!existsSync(COMPILED)) console.warn(`[outpost-cli test] ${COMPILED} not built; the spawned-bin test is skipped (npm test builds it)`);
