import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { GENERATED_REPOSITORY, GENERATED_SAMPLES, REPO_ROOT } from '../helpers/paths.js';

const BIN = path.join(REPO_ROOT, 'bin/outpost-agent.js');
const children: ChildProcessWithoutNullStreams[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'outpost-e2e-'));
  dirs.push(d);
  return d;
}

function run(args: string[], env: Record<string, string> = {}): ChildProcessWithoutNullStreams {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, cwd: tempDir() });
  children.push(child);
  return child;
}

async function finish(child: ChildProcessWithoutNullStreams): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { code, stdout, stderr };
}

/** Resolves with the first JSON log line for which `match` holds (pino writes JSON lines on stdout). */
function waitForLog(child: ChildProcessWithoutNullStreams, match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (text) => {
      try {
        const line = JSON.parse(text) as Record<string, unknown>;
        if (match(line)) resolve(line);
      } catch {
        // not a log line
      }
    });
    child.on('exit', (code) => reject(new Error(`agent exited with ${code} before the expected log line`)));
  });
}

describe('outpost-agent command line', () => {
  it('prints help and version', async () => {
    const help = await finish(run(['--help']));
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('run');
    const runHelp = await finish(run(['run', '--help']));
    expect(runHelp.stdout).toContain('--model-repository');
    expect(runHelp.stdout).toContain('--http-port');
    const version = await finish(run(['--version']));
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version);
  });

  it('refuses an invalid configuration with every problem listed and exit status 2', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'agent.yaml');
    writeFileSync(file, 'http:\n  port: 70000\nlimits:\n  maxBodyByte: 5\ninference:\n  providers: [gpu]\n');
    const r = await finish(run(['run', '--config', file], { OUTPOST_LIMITS_MAX_IMAGE_PIXELS: 'lots' }));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('http.port');
    expect(r.stderr).toContain('maxBodyByte');
    expect(r.stderr).toContain('inference.providers');
    expect(r.stderr).toContain('limits.maxImagePixels');
  });

  it('serves the repository, detects a frame, and stops cleanly on SIGTERM', async () => {
    const data = tempDir();
    const child = run(['run', '--model-repository', GENERATED_REPOSITORY, '--data-dir', data, '--http-port', '0', '--http-host', '127.0.0.1']);
    const loaded = waitForLog(child, (l) => l.msg === 'model repository loaded');
    const listening = await waitForLog(child, (l) => typeof l.url === 'string' && l.msg === 'agent listening; loading models');
    await loaded;
    const url = listening.url as string;
    const res = await fetch(`${url}/v1/models/demo-shapes/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: readFileSync(path.join(GENERATED_SAMPLES, 'shapes.jpg')) });
    expect(res.status).toBe(200);
    const truth = JSON.parse(readFileSync(path.join(GENERATED_SAMPLES, 'shapes.json'), 'utf8')) as { objects: unknown[] };
    expect(((await res.json()) as { detections: unknown[] }).detections).toHaveLength(truth.objects.length);
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('npm start (the demo)', () => {
  it('runs the fleet server, enrolls the agent, deploys the model through a rollout, detects the sample and shows the fleet counting it', async () => {
    const data = tempDir();
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'dist/fleet-server/src/demo.js'), '--once', '--port', '0'], {
      env: { ...process.env, OUTPOST_DEMO_DIR: data },
      cwd: REPO_ROOT,
    });
    children.push(child);
    const r = await finish(child);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Outpost fleet server http:\/\/127\.0\.0\.1:\d+/);
    const device = /enrolled as device (\S+)/.exec(r.stdout)?.[1];
    expect(device).toBeDefined();
    expect(r.stdout).toContain('pushed demo-shapes@1');
    // Deployed by the real rollout path: the agent starts with an empty repository and commits after probation.
    expect(r.stdout).toMatch(/\$ outpost rollouts create demo-shapes@1 --devices \S+ --probation 3s/);
    expect(r.stdout).toMatch(new RegExp(`${device}\\s+stage 1\\s+\\S+ → committed`));
    expect(r.stdout).toMatch(/rollout ro-\S+\s+running → completed/);
    expect(existsSync(path.join(data, 'demo-agent', 'models', 'demo-shapes', '1', 'model.onnx'))).toBe(true);
    const truth = JSON.parse(readFileSync(path.join(GENERATED_SAMPLES, 'shapes.json'), 'utf8')) as { objects: { label: string }[] };
    expect(r.stdout.match(/box x1=/g)?.length).toBe(truth.objects.length);
    // The fleet saw the device online and counted the one request the demo made, through MQTT telemetry.
    expect(r.stdout).toMatch(new RegExp(`${device}\\s+site=demo\\s+yes\\s+cpu`));
    expect(r.stdout).toMatch(/requests 1 {2}failures 0/);
  });

  it('the agent-only demo (npm run demo:agent) starts the agent, detects the sample frame and prints detections and URLs', async () => {
    const data = tempDir();
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'dist/agent/src/demo.js'), '--once', '--port', '0'], {
      env: { ...process.env, OUTPOST_DATA_DIR: data, OUTPOST_HTTP_HOST: '127.0.0.1' },
      cwd: REPO_ROOT,
    });
    children.push(child);
    const r = await finish(child);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Outpost agent http:\/\/127\.0\.0\.1:\d+/);
    expect(r.stdout).toContain('/v1/models/demo-shapes/detect');
    const truth = JSON.parse(readFileSync(path.join(GENERATED_SAMPLES, 'shapes.json'), 'utf8')) as { objects: { label: string }[] };
    for (const o of truth.objects) expect(r.stdout).toContain(o.label);
    expect(r.stdout.match(/box x1=/g)?.length).toBe(truth.objects.length);
  });
});
