/**
 * `outpost rollouts …`, `outpost rollback`, `outpost devices cmd` and `models push --golden` as the operator runs
 * them (runCli in-process), against a tiny scripted HTTP server on 127.0.0.1: what is sent, what is printed, the
 * exit statuses. The fleet's own routes and rollout engine are tested elsewhere; here the server only replays
 * rollout snapshots, so the watch loop's outcomes can be driven exactly. Time is a fake clock advanced by the
 * injected sleep: no test waits for real.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseDurationMs, parsePercent, parseStages, parseWholeSeconds } from '../../fleet-server/src/cli/args.js';
import { EXIT } from '../../fleet-server/src/cli/exit-codes.js';
import { runCli, type CliIo } from '../../fleet-server/src/cli/main.js';
import type { Rollout, RolloutDevice } from '../../fleet-server/src/cli/rollout-view.js';
import { GENERATED_REPOSITORY } from '../helpers/paths.js';

interface Seen {
  method: string;
  path: string;
  body: string;
}
type Reply = { status: number; json?: unknown };

let server: Server;
let baseUrl: string;
let seen: Seen[] = [];
/** The current script: answers one request. */
let route: (req: Seen) => Reply = () => ({ status: 404, json: { error: 'no route', code: 'FLEET_NOT_FOUND' } });

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const r: Seen = { method: req.method!, path: req.url!, body: await readBody(req) };
    seen.push(r);
    const reply = route(r);
    res.writeHead(reply.status, { 'content-type': 'application/json' });
    res.end(reply.json === undefined ? '' : JSON.stringify(reply.json));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
beforeEach(() => {
  seen = [];
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** What the fake clock advanced by, in ms. */
  slept: number[];
}

async function outpost(args: string[], options: { tty?: boolean } = {}): Promise<Run> {
  let stdout = '';
  let stderr = '';
  let clock = Date.parse('2026-11-22T06:00:00.000Z');
  const slept: number[] = [];
  const io: CliIo = {
    stdout: { write: (s: string) => (stdout += s), isTTY: options.tty === true },
    stderr: { write: (s: string) => (stderr += s) },
    env: { OUTPOST_FLEET_URL: baseUrl, OUTPOST_TOKEN: 'test-token' },
    cwd: '/nonexistent',
    now: () => clock,
    sleep: async (ms) => {
      slept.push(ms);
      clock += ms;
    },
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr, slept };
}

const device = (deviceId: string, stage: number, state: RolloutDevice['state'], reason: string | null = null): RolloutDevice => ({
  deviceId, stage, state, previousVersion: 3, reason, detail: null, updatedAt: '2026-11-22T06:00:01.000Z',
});

function snapshot(state: Rollout['state'], devices: RolloutDevice[], currentStage = 0, reason: string | null = null): Rollout {
  const stages = [10, 100].map((percent, index) => {
    const own = devices.filter((d) => d.stage === index);
    const counts: Record<string, number> = {};
    for (const d of own) counts[d.state] = (counts[d.state] ?? 0) + 1;
    return { index, percent, devices: own.length, counts };
  });
  return {
    id: 'r_1', model: 'yolov8n', version: 4, state, reason, currentStage, stages, devices,
    target: { selector: { line: '3' } }, maxFailurePct: 20, minDevices: 1, thresholds: { probationSeconds: 300, maxErrorRate: 0.05 },
    schedule: null, createdAt: '2026-11-22T06:00:00.000Z', startedAt: '2026-11-22T06:00:00.000Z', updatedAt: '2026-11-22T06:00:02.000Z', finishedAt: null,
  };
}

/** Answers GET /api/v1/rollouts/r_1 with the next snapshot of `script` (the last one repeats). */
function playRollout(script: Array<Rollout | Reply>): void {
  let i = 0;
  route = (req) => {
    if (req.method !== 'GET' || req.path !== '/api/v1/rollouts/r_1') return { status: 404, json: { error: 'unexpected', code: 'FLEET_NOT_FOUND' } };
    const next = script[Math.min(i++, script.length - 1)]!;
    return 'status' in next && typeof next.status === 'number' ? next : { status: 200, json: next };
  };
}

const gets = () => seen.filter((s) => s.method === 'GET').length;

describe('argument parsers', () => {
  it('reads durations with ms/s/m/h units, a bare number as seconds', () => {
    expect(parseDurationMs('250ms', '--interval')).toBe(250);
    expect(parseDurationMs('1.5s', '--interval')).toBe(1500);
    expect(parseDurationMs('5m', '--timeout')).toBe(300_000);
    expect(parseDurationMs('1h', '--timeout')).toBe(3_600_000);
    expect(parseDurationMs('300', '--timeout')).toBe(300_000);
    expect(parseWholeSeconds('5m', '--probation')).toBe(300);
    expect(parseWholeSeconds('300s', '--probation')).toBe(300);
    for (const bad of ['5 minutes', '0', '-1s', '', '1w', 'ms']) expect(() => parseDurationMs(bad, '--timeout'), bad).toThrow(/--timeout expects a duration/);
    expect(() => parseWholeSeconds('1500ms', '--probation')).toThrow(/whole seconds/);
  });

  it('reads "20%" and "20" as twenty percent, never as a fraction', () => {
    expect(parsePercent('20%', '--max-failure')).toBe(20);
    expect(parsePercent('20', '--max-failure')).toBe(20);
    expect(parsePercent('0.2', '--max-failure')).toBe(0.2);
    for (const bad of ['120%', '-5', 'abc', '20%%', '']) expect(() => parsePercent(bad, '--max-failure'), bad).toThrow(/--max-failure expects a percentage/);
  });

  it('accepts only rising cumulative stages that end at 100', () => {
    expect(parseStages('10,50,100')).toEqual([10, 50, 100]);
    expect(parseStages('10%,100%')).toEqual([10, 100]);
    for (const bad of ['50,10,100', '10,50', '0,100', '10,,100', '10,10,100']) expect(() => parseStages(bad), bad).toThrow(/--stages expects/);
  });
});

describe('usage errors', () => {
  it('exit 2 before any request is sent', async () => {
    const cases = [
      ['rollouts', 'create', 'yolov8n'],
      ['rollouts', 'create', 'yolov8n@4', '--stages', '50,10,100'],
      ['rollouts', 'create', 'yolov8n@4', '--max-failure', '120%'],
      ['rollouts', 'create', 'yolov8n@4', '--probation', '5 minutes'],
      ['rollouts', 'create', 'yolov8n@4', '--max-error-rate', 'lots'],
      ['rollouts', 'create', 'yolov8n@4', '--max-latency-factor', '0.5'],
      ['rollouts', 'create', 'yolov8n@4', '--min-devices', '0'],
      ['rollouts', 'create', 'yolov8n@4', '--schedule', 'every night'],
      ['rollouts', 'create', 'yolov8n@4', '--selector', 'line'],
      ['rollouts', 'watch', 'r_1', '--interval', '10ms'],
      ['rollouts', 'watch', 'r_1', '--timeout', 'soon'],
      ['rollouts', 'dance', 'r_1'],
      ['rollback', 'yolov8n'],
      ['rollback', '--device', 'd1', '--rollout', 'r_1', 'yolov8n'],
      ['rollback', '--device', 'd1'],
      ['rollback', '--rollout', 'r_1', 'yolov8n'],
      ['rollback', '--device', 'd1', 'yolov8n@3', '--version', '2'],
      ['devices', 'cmd', 'd1', 'dance'],
      ['devices', 'cmd', 'd1', 'ping', '--args', '[1]'],
      ['devices', 'cmd', 'd1', 'ping', '--timeout', '2h'],
    ];
    for (const args of cases) {
      const r = await outpost(args);
      expect(r.code, args.join(' ')).toBe(EXIT.USAGE);
      expect(r.stderr, args.join(' ')).toMatch(/^outpost: /m);
      expect(r.stdout, args.join(' ')).toBe('');
    }
    expect(seen).toEqual([]);
  });
});

describe('outpost rollouts create, ls, show and the state actions', () => {
  it('create sends the parsed options and prints the id alone on stdout, the first stage on stderr', async () => {
    const created = snapshot('running', [device('cam-1', 0, 'pending'), device('cam-2', 1, 'waiting'), device('cam-3', 1, 'waiting')]);
    route = (req) => (req.method === 'POST' && req.path === '/api/v1/rollouts' ? { status: 201, json: created } : { status: 404 });
    const r = await outpost([
      'rollouts', 'create', 'yolov8n@4', '--selector', 'line=3', '--devices', 'cam-9,cam-8', '--stages', '10,50,100', '--min-devices', '2',
      '--max-failure', '20%', '--probation', '5m', '--probation-requests', '100', '--max-error-rate', '5%', '--max-latency-factor', '2',
      '--schedule', '0 2 * * *',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('r_1\n');
    expect(r.stderr).toContain('stage 1 (10%): 1 device(s): cam-1');
    expect(r.stderr).toContain('outpost rollouts watch r_1');
    expect(JSON.parse(seen[0]!.body)).toEqual({
      model: 'yolov8n', version: 4, deviceIds: ['cam-9', 'cam-8'], selector: { line: '3' }, stages: [10, 50, 100], minDevices: 2,
      maxFailurePct: 20, probationSeconds: 300, probationRequests: 100, maxErrorRate: 0.05, maxLatencyFactor: 2, schedule: '0 2 * * *',
    });

    const json = await outpost(['rollouts', 'create', 'yolov8n@4', '--json']);
    expect(JSON.parse(json.stdout)).toEqual(created);
    expect(JSON.parse(seen[1]!.body)).toEqual({ model: 'yolov8n', version: 4 });
  });

  it('a refusal of the server keeps its exit status (409 → 5, 404 → 4)', async () => {
    route = () => ({ status: 409, json: { error: 'rollout r_1 is completed; pause needs running', code: 'FLEET_ROLLOUT_STATE' } });
    const r = await outpost(['rollouts', 'pause', 'r_1']);
    expect(r.code).toBe(EXIT.CONFLICT);
    expect(r.stderr).toContain('(FLEET_ROLLOUT_STATE)');
    route = () => ({ status: 404, json: { error: 'no rollout r_9', code: 'FLEET_NOT_FOUND' } });
    expect((await outpost(['rollouts', 'show', 'r_9'])).code).toBe(EXIT.NOT_FOUND);
  });

  it('show prints the settings, a per-stage table of device states and a per-device table', async () => {
    playRollout([snapshot('running', [device('cam-1', 0, 'probation'), device('cam-2', 1, 'waiting'), device('cam-3', 1, 'failed', 'golden mismatch')])]);
    const r = await outpost(['rollouts', 'show', 'r_1']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(r.stdout).toContain('stage       1 of 2 (10%, 100%)');
    expect(r.stdout).toContain('probation 300 s; error rate ≤ 5%');
    const header = lines.find((l) => l.startsWith('STAGE'))!;
    expect(header.split(/\s+/)).toEqual(['STAGE', 'PERCENT', 'DEVICES', 'WAITING', 'PENDING', 'DOWNLOADING', 'VERIFYING', 'STAGING', 'ACTIVATING', 'PROBATION', 'COMMITTED', 'FAILED', 'ROLLING_BACK', 'ROLLED_BACK']);
    expect(lines[lines.indexOf(header) + 1]!.split(/\s+/)).toEqual(['1', '10%', '1', '0', '0', '0', '0', '0', '0', '1', '0', '0', '0', '0']);
    expect(lines[lines.indexOf(header) + 2]!.split(/\s+/)).toEqual(['2', '100%', '2', '1', '0', '0', '0', '0', '0', '0', '0', '1', '0', '0']);
    expect(lines.find((l) => l.startsWith('cam-3'))!.split(/\s{2,}/)).toEqual(['cam-3', '2', 'failed', '3', '2026-11-22T06:00:01.000Z', 'golden mismatch']);
  });

  it('ls lists rollouts with their stage and progress', async () => {
    const { devices: _devices, ...summary } = snapshot('running', [device('cam-1', 0, 'committed'), device('cam-2', 1, 'downloading')], 1);
    route = () => ({ status: 200, json: { rollouts: [summary] } });
    const r = await outpost(['rollouts', 'ls']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[1]!.split(/\s{2,}/)).toEqual(['r_1', 'yolov8n@4', 'running', '2 of 2', '2', '1 downloading, 1 committed', '2026-11-22T06:00:00.000Z']);
  });

  it('pause, resume, abort and rollback POST to the rollout and print its new state', async () => {
    for (const verb of ['pause', 'resume', 'abort', 'rollback']) {
      seen = [];
      route = (req) => ({ status: 200, json: snapshot(req.path.endsWith('/pause') ? 'paused' : 'running', []) });
      const r = await outpost(['rollouts', verb, 'r_1']);
      expect(r.code, r.stderr).toBe(0);
      expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual([`POST /api/v1/rollouts/r_1/${verb}`]);
      expect(r.stdout).toMatch(/rollout r_1: now (paused|running)/);
    }
  });
});

describe('outpost rollouts watch', () => {
  it('prints one line per change and exits 0 once completed, without real waiting', async () => {
    const start = snapshot('running', [device('cam-1', 0, 'pending'), device('cam-2', 1, 'waiting')]);
    const downloading = snapshot('running', [device('cam-1', 0, 'downloading'), device('cam-2', 1, 'waiting')]);
    const next = snapshot('running', [device('cam-1', 0, 'committed'), device('cam-2', 1, 'pending')], 1);
    const done = snapshot('completed', [device('cam-1', 0, 'committed'), device('cam-2', 1, 'committed')], 1);
    playRollout([start, downloading, downloading, next, done]);
    const r = await outpost(['rollouts', 'watch', 'r_1', '--interval', '2s', '--timeout', '1m']);
    expect(r.code, r.stderr).toBe(0);
    expect(gets()).toBe(5);
    expect(r.slept).toEqual([2000, 2000, 2000, 2000]);
    const lines = r.stdout.trim().split('\n').map((l) => l.split(/\s{2,}/).slice(1).join(' | '));
    // Within one snapshot in time order: the devices (updated 06:00:01) before the rollout (06:00:02).
    expect(lines).toEqual([
      'cam-1 | stage 1 | - → pending',
      'cam-2 | stage 2 | - → waiting',
      'rollout r_1 | - → running',
      'rollout r_1 | stage 1 of 2 (10%, 1 device(s))',
      'cam-1 | stage 1 | pending → downloading',
      'cam-1 | stage 1 | downloading → committed',
      'cam-2 | stage 2 | waiting → pending',
      'rollout r_1 | stage 2 of 2 (100%, 1 device(s))',
      'cam-2 | stage 2 | pending → committed',
      'rollout r_1 | running → completed',
    ]);
    expect(r.stderr).toContain('rollout r_1 completed');
  });

  it.each(['halted', 'aborted', 'rolled_back'] as const)('exits 5 when the rollout ends %s, naming the reason', async (end) => {
    playRollout([snapshot('running', [device('cam-1', 0, 'probation')]), snapshot(end, [device('cam-1', 0, 'failed', 'error rate 40% > 5%')], 0, 'stage 1: 1 of 1 devices failed')]);
    const r = await outpost(['rollouts', 'watch', 'r_1', '--timeout', '1m']);
    expect(r.code).toBe(EXIT.CONFLICT);
    expect(r.stderr).toContain(`outpost: rollout r_1 ended ${end}: stage 1: 1 of 1 devices failed`);
    expect(r.stdout).toContain('cam-1  stage 1  probation → failed  (error rate 40% > 5%)');
  });

  it('keeps watching through a paused rollout and gives up with exit 1 at --timeout', async () => {
    playRollout([snapshot('running', [device('cam-1', 0, 'downloading')]), snapshot('paused', [device('cam-1', 0, 'downloading')])]);
    const r = await outpost(['rollouts', 'watch', 'r_1', '--interval', '1m', '--timeout', '10m']);
    expect(r.code).toBe(EXIT.FAILURE);
    expect(r.stderr).toContain('rollout r_1 is still paused after --timeout 10m');
    expect(gets()).toBe(11);
    expect(r.slept.reduce((a, b) => a + b, 0)).toBe(600_000);
  });

  it('polls through a server error once under way, but fails at once when the first answer is an error', async () => {
    playRollout([snapshot('running', []), { status: 503, json: { error: 'restarting', code: 'FLEET_UNAVAILABLE' } }, { status: 503 }, snapshot('completed', [])]);
    const r = await outpost(['rollouts', 'watch', 'r_1', '--timeout', '1m']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.match(/still watching/g)).toHaveLength(2); // two different messages, each once
    expect(r.stderr).toContain('fleet server answers again');

    playRollout([{ status: 404, json: { error: 'no rollout r_1', code: 'FLEET_NOT_FOUND' } }, snapshot('completed', [])]);
    const missing = await outpost(['rollouts', 'watch', 'r_1']);
    expect(missing.code).toBe(EXIT.NOT_FOUND);
    playRollout([{ status: 503 }, snapshot('completed', [])]);
    expect((await outpost(['rollouts', 'watch', 'r_1'])).code).toBe(EXIT.FAILURE);
  });

  it('--json prints one compact snapshot per change (NDJSON); a terminal gets the whole view redrawn', async () => {
    const a = snapshot('running', [device('cam-1', 0, 'staging')]);
    const b = snapshot('completed', [device('cam-1', 0, 'committed')]);
    playRollout([a, a, b]);
    const json = await outpost(['rollouts', 'watch', 'r_1', '--json', '--timeout', '1m']);
    expect(json.code).toBe(0);
    expect(json.stdout.trim().split('\n').map((l) => JSON.parse(l))).toEqual([a, b]);

    playRollout([a, a, b]);
    const tty = await outpost(['rollouts', 'watch', 'r_1', '--timeout', '1m'], { tty: true });
    expect(tty.code).toBe(0);
    const frames = tty.stdout.split('\x1b[H\x1b[2J').filter((f) => f.length > 0);
    expect(frames).toHaveLength(2);
    expect(frames[1]).toContain('completed');
    expect(frames[1]).toMatch(/^cam-1\s+1\s+committed/m);
  });
});

describe('outpost rollback', () => {
  it('--device posts the model and optional version to the device; --rollout rolls back the rollout', async () => {
    route = (req) =>
      req.path.startsWith('/api/v1/devices/')
        ? { status: 202, json: { deviceId: 'cam 1', model: 'yolov8n', version: 3, deployment: 42 } }
        : { status: 200, json: snapshot('halted', [], 0, 'rollback requested') };
    const r = await outpost(['rollback', '--device', 'cam 1', 'yolov8n']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('rolling back yolov8n on cam 1 to version 3 (deployment 42)\n');
    expect(await outpost(['rollback', '--device', 'cam 1', 'yolov8n', '--version', '2'])).toMatchObject({ code: 0 });
    expect(await outpost(['rollback', '--device', 'cam 1', 'yolov8n@2'])).toMatchObject({ code: 0 });
    const rollout = await outpost(['rollback', '--rollout', 'r_1']);
    expect(rollout.stdout).toContain('rolling back rollout r_1: now halted (rollback requested)');
    expect(seen.map((s) => `${s.method} ${s.path} ${s.body}`)).toEqual([
      'POST /api/v1/devices/cam%201/rollback {"model":"yolov8n"}',
      'POST /api/v1/devices/cam%201/rollback {"model":"yolov8n","version":2}',
      'POST /api/v1/devices/cam%201/rollback {"model":"yolov8n","version":2}',
      'POST /api/v1/rollouts/r_1/rollback ',
    ]);
  });
});

describe('outpost devices cmd', () => {
  const command = (state: string, extra: Record<string, unknown> = {}) => ({
    id: 'c_1', deviceId: 'cam-1', kind: 'diagnostics', args: {}, state, result: null, error: null,
    createdAt: '2026-11-22T06:00:00.000Z', deadline: '2026-11-22T06:01:00.000Z', finishedAt: state === 'sent' ? null : '2026-11-22T06:00:01.500Z', ...extra,
  });
  /** POST answers `sent`; GET answers the script in order (the last repeats). */
  function playCommand(script: Array<Record<string, unknown>>): void {
    let i = 0;
    route = (req) => (req.method === 'POST' ? { status: 202, json: command('sent') } : { status: 200, json: script[Math.min(i++, script.length - 1)] });
  }

  it('without --wait prints the command id; with --wait polls until the answer and prints it', async () => {
    playCommand([command('ok')]);
    const sent = await outpost(['devices', 'cmd', 'cam-1', 'diagnostics', '--args', '{"verbose":true}', '--timeout', '30s']);
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stdout).toBe('c_1\n');
    expect(JSON.parse(seen[0]!.body)).toEqual({ kind: 'diagnostics', args: { verbose: true }, timeoutMs: 30_000 });
    expect(seen).toHaveLength(1);

    seen = [];
    playCommand([command('sent'), command('sent'), command('ok', { result: { disk: { freeBytes: 1234 } } })]);
    const waited = await outpost(['devices', 'cmd', 'cam-1', 'diagnostics', '--wait']);
    expect(waited.code, waited.stderr).toBe(0);
    expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual([
      'POST /api/v1/devices/cam-1/commands', ...Array(3).fill('GET /api/v1/devices/cam-1/commands/c_1'),
    ]);
    expect(waited.stdout).toMatch(/^state\s+ok$/m);
    expect(waited.stdout).toContain('"freeBytes": 1234');
  });

  it('--wait exits 5 when the device reports a failure, 1 when it timed out or never answers', async () => {
    playCommand([command('failed', { error: { code: 'AGENT_NO_PREVIOUS_VERSION', message: 'nothing to roll back to' } })]);
    const failed = await outpost(['devices', 'cmd', 'cam-1', 'rollback', '--wait']);
    expect(failed.code).toBe(EXIT.CONFLICT);
    expect(failed.stderr).toContain('failed: nothing to roll back to (AGENT_NO_PREVIOUS_VERSION)');

    playCommand([command('timed_out', { error: { code: 'TIMEOUT', message: 'the device did not answer before the deadline' } })]);
    expect((await outpost(['devices', 'cmd', 'cam-1', 'ping', '--wait'])).code).toBe(EXIT.FAILURE);

    playCommand([command('sent')]);
    const silent = await outpost(['devices', 'cmd', 'cam-1', 'ping', '--wait', '--timeout', '5s']);
    expect(silent.code).toBe(EXIT.FAILURE);
    expect(silent.stderr).toContain('no answer to command c_1');
    expect(silent.slept.reduce((a, b) => a + b, 0)).toBe(20_000); // 5 s + the grace for the fleet's own sweep
  });
});

describe('outpost models push --golden', () => {
  const model = path.join(GENERATED_REPOSITORY, 'simple', '1', 'model.onnx');
  const manifestFile = path.join(GENERATED_REPOSITORY, 'simple', '1', 'manifest.json');
  /** The manifest part of the multipart body the server received, or null when there was none. */
  const sentManifest = (): Record<string, unknown> | null => {
    const m = /name="manifest"\r\n\r\n([\s\S]*?)\r\n--outpost-/.exec(seen.at(-1)!.body);
    return m ? (JSON.parse(m[1]!) as Record<string, unknown>) : null;
  };
  const pushed = { name: 'simple', version: 1, sha256: '0'.repeat(64), size: 1, createdAt: '', manifest: null, signature: '', artifactUrl: '', runningOn: [] };

  it('computes a golden by default and sends it in the manifest (a minimal one for a bare file); --no-golden skips it', async () => {
    route = () => ({ status: 201, json: pushed });
    const bare = await outpost(['models', 'push', model, '--name', 'simple', '--version', '1']);
    expect(bare.code, bare.stderr).toBe(0);
    expect(bare.stderr).toMatch(/\ngolden: INPUT0, INPUT1 → OUTPUT0, OUTPUT1, computed on this machine's CPU\n$/); // after the upload line
    const minimal = sentManifest()!;
    expect(Object.keys(minimal)).toEqual(['name', 'version', 'golden']);
    const golden = minimal.golden as { inputs: Record<string, unknown>; outputs: Record<string, { dims: number[] }> };
    expect(Object.keys(golden.inputs).sort()).toEqual(['INPUT0', 'INPUT1']);
    expect(golden.outputs.OUTPUT0!.dims).toEqual([1, 16]);

    const withManifest = await outpost(['models', 'push', model, '--manifest', manifestFile]);
    expect(withManifest.code, withManifest.stderr).toBe(0);
    expect(sentManifest()).toMatchObject({ name: 'simple', task: 'raw', golden });

    const skipped = await outpost(['models', 'push', model, '--name', 'simple', '--version', '1', '--no-golden']);
    expect(skipped.code).toBe(0);
    expect(sentManifest()).toBeNull();
  });

  it('--golden on a file that is not ONNX is a usage error; without it the file goes up for the server to refuse', async () => {
    route = () => ({ status: 415, json: { error: 'not a readable ONNX model', code: 'FLEET_NOT_ONNX' } });
    const notOnnx = manifestFile; // any file that is not a model
    const forced = await outpost(['models', 'push', notOnnx, '--name', 'simple', '--version', '1', '--golden']);
    expect(forced.code).toBe(EXIT.USAGE);
    expect(forced.stderr).toContain('--golden:');
    seen = [];
    const plain = await outpost(['models', 'push', notOnnx, '--name', 'simple', '--version', '1']);
    expect(plain.code).toBe(EXIT.INVALID);
    expect(sentManifest()).toBeNull();
  });
});
