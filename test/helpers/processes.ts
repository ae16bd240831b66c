import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import Database from 'better-sqlite3';
import { SHIPPED_MOSQUITTO_CONF, writeMosquittoConfig } from './mosquitto-config.js';
import { REPO_ROOT } from './paths.js';
import { parseMetrics, samples } from './prom-text.js';

/**
 * Real processes for e2e fault tests (research §5.1, §5.2): the fleet server and the agent run from dist/
 * (what `npm test` builds before vitest), Mosquitto from its Debian binary. Every process belongs to a
 * ProcessGroup the test file kills in afterEach (SIGKILL, awaited), so nothing outlives a failed test, and
 * the group's report() gives the tail of each process's output for the failure message.
 *
 *   const procs = new ProcessGroup();
 *   afterEach(() => procs.killAll());
 *   const fleet = await startFleetProcess(procs, { dataDir, config: { broker: { publicUrl } } });
 *   const deviceId = await enrollAgentProcess(procs, { fleetUrl: fleet.httpUrl, token, dataDir: agentDir });
 *   const agent = await startAgentProcess(procs, { dataDir: agentDir, repository, config: { telemetry: … } });
 *   await agent.proc.kill9();
 */
export const AGENT_MAIN = path.join(REPO_ROOT, 'dist/agent/src/main.js');
export const FLEET_MAIN = path.join(REPO_ROOT, 'dist/fleet-server/src/main.js');

/** Throws a clear error when dist/ has not been built (npm test builds it; a lone vitest run does not). */
export function requireDist(): void {
  for (const f of [AGENT_MAIN, FLEET_MAIN]) {
    if (!existsSync(f)) throw new Error(`${path.relative(REPO_ROOT, f)} is missing: run \`npx tsc -p tsconfig.json\` (npm test does it) before these e2e tests`);
  }
}

type LogLine = Record<string, unknown>;

/** Most output lines kept per process (the tail is what explains a failure). */
const MAX_LINES = 3000;

export class ManagedProcess {
  /** stdout and stderr lines, in arrival order per stream, tagged with the stream. */
  readonly lines: string[] = [];
  /** stdout lines that parsed as JSON (pino log lines). */
  readonly logs: LogLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly waiters = new Set<() => void>();
  private done = false;

  constructor(readonly name: string, readonly child: ChildProcess) {
    const keep = (line: string) => {
      this.lines.push(line);
      if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    };
    createInterface({ input: child.stdout! }).on('line', (line) => {
      keep(line);
      if (line.startsWith('{')) {
        try {
          this.logs.push(JSON.parse(line) as LogLine);
        } catch {
          // not a log line
        }
      }
      this.wake();
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      keep(`[stderr] ${line}`);
      this.wake();
    });
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.done = true;
        this.wake();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return !this.done && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The first log line (seen so far or later) for which `match` holds; rejects on exit or after timeoutMs. */
  waitForLog(match: (l: LogLine) => boolean, what: string, timeoutMs = 15_000, fromIndex = 0): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}\n${this.tail(15)}`)), timeoutMs);
      const finish = (err?: Error, line?: LogLine) => {
        clearTimeout(timer);
        this.waiters.delete(probe);
        if (err) reject(err);
        else resolve(line!);
      };
      let next = fromIndex;
      const probe = () => {
        for (; next < this.logs.length; next++) {
          if (match(this.logs[next]!)) return finish(undefined, this.logs[next]);
        }
        if (this.done) finish(new Error(`${this.name} exited before ${what}\n${this.tail(15)}`));
      };
      this.waiters.add(probe);
      probe();
    });
  }

  /** SIGKILL (no cleanup of any kind in the process) and wait until it is gone. */
  async kill9(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM; SIGKILL after `graceMs`. Resolves with how it ended. */
  async stop(graceMs = 5_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill('SIGTERM');
    const killer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const r = await this.exited;
    clearTimeout(killer);
    return r;
  }

  tail(n = 30): string {
    return this.lines.slice(-n).map((l) => `  ${this.name}| ${l.length > 400 ? `${l.slice(0, 400)}…` : l}`).join('\n');
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** The processes one test file started; killAll() in afterEach. */
export class ProcessGroup {
  readonly all: ManagedProcess[] = [];

  spawn(name: string, command: string, args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): ManagedProcess {
    const child = spawn(command, args, { cwd: options.cwd ?? REPO_ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const p = new ManagedProcess(name, child);
    this.all.push(p);
    return p;
  }

  spawnNode(name: string, script: string, args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): ManagedProcess {
    return this.spawn(name, process.execPath, [script, ...args], options);
  }

  /** The tail of every process's output, for a failed test's message. */
  report(linesEach = 25): string {
    return this.all.map((p) => `--- ${p.name} (pid ${p.pid}, ${p.running ? 'running' : 'exited'}) ---\n${p.tail(linesEach)}`).join('\n');
  }

  /** SIGKILL every process still running and wait for each; forgets them all. */
  async killAll(): Promise<void> {
    const procs = this.all.splice(0);
    await Promise.all(procs.map((p) => p.kill9()));
  }
}

// ---- the fleet server ----

export interface FleetProcess {
  proc: ManagedProcess;
  dataDir: string;
  /** REST base URL, e.g. http://127.0.0.1:40123 */
  httpUrl: string;
  /** Port the embedded broker listens on (devices are told broker.publicUrl, which may be a proxy). */
  brokerPort: number;
  /** The MQTT URL devices are told at enrollment. */
  mqttUrl: string;
  adminToken: string;
  /** One REST call as the admin; `body` is the parsed JSON answer (or the text). */
  api(method: string, urlPath: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** GET /api/v1/devices/{id} (throws unless 200). */
  device(id: string): Promise<any>;
  /** GET /api/v1/devices/{id}/metrics for `model` from `sinceMs` to an hour from now (throws unless 200). */
  modelMetrics(id: string, model: string, sinceMs: number): Promise<ModelMetrics>;
  /** Redeliveries the ingest dropped as already stored (outpost_fleet_duplicate_messages_total, all kinds). */
  duplicatesDropped(): Promise<number>;
  /** The fleet's dedup record, read-only beside the running server: when each (device, seq) first arrived. */
  arrivals(id: string): { seq: number; kind: string; received_at: string }[];
}

export interface WindowPoint { seq: number; windowStart: string; windowEnd: string; requests: number; failures: number }
export interface ModelMetrics { requests: number; failures: number; points: WindowPoint[] }

/** Seams between consecutive points that do not line up: a gap (start after the previous end) or an overlap. */
export function windowSeams(points: WindowPoint[]): { kind: 'gap' | 'overlap'; afterSeq: number; from: string; to: string }[] {
  const bad: ReturnType<typeof windowSeams> = [];
  for (let i = 1; i < points.length; i++) {
    const prev = points[i - 1]!;
    const p = points[i]!;
    if (p.windowStart !== prev.windowEnd) bad.push({ kind: p.windowStart > prev.windowEnd ? 'gap' : 'overlap', afterSeq: prev.seq, from: prev.windowEnd, to: p.windowStart });
  }
  return bad;
}

/**
 * `outpost-fleet run` from dist/ with a config file: HTTP and the embedded broker on 127.0.0.1, port 0
 * unless `config` says otherwise (`config` is merged over those). Resolves once "fleet server started".
 */
export async function startFleetProcess(group: ProcessGroup, options: { dataDir: string; config?: Record<string, any>; name?: string }): Promise<FleetProcess> {
  requireDist();
  const c = options.config ?? {};
  const config = {
    ...c,
    dataDir: options.dataDir,
    http: { host: '127.0.0.1', port: 0, ...c.http },
    broker: { host: '127.0.0.1', port: 0, ...c.broker },
    log: { level: 'info', ...c.log },
  };
  const file = `${options.dataDir}.fleet.yaml`;
  // JSON is YAML, and the loader takes either.
  writeFileSync(file, JSON.stringify(config, null, 2));
  const proc = group.spawnNode(options.name ?? 'fleet', FLEET_MAIN, ['run', '--config', file]);
  const started = await proc.waitForLog((l) => l.msg === 'fleet server started', 'the fleet to start');
  const broker = config.broker.url === undefined ? await proc.waitForLog((l) => l.msg === 'embedded MQTT broker listening', 'the broker port') : undefined;
  const adminToken = readFileSync(path.join(options.dataDir, 'admin-token'), 'utf8').trim();
  const httpUrl = started.httpUrl as string;
  const api: FleetProcess['api'] = async (method, urlPath, body) => {
    const headers: Record<string, string> = { authorization: `Bearer ${adminToken}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${httpUrl}${urlPath}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON (e.g. /metrics)
    }
    return { status: res.status, body: parsed };
  };
  const ok = async (urlPath: string) => {
    const r = await api('GET', urlPath);
    if (r.status !== 200) throw new Error(`GET ${urlPath} answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  };
  return {
    proc, dataDir: options.dataDir, httpUrl, adminToken, api,
    brokerPort: (broker?.port as number | undefined) ?? -1,
    mqttUrl: started.mqttUrl as string,
    device: (id) => ok(`/api/v1/devices/${id}`),
    modelMetrics(id, model, sinceMs) {
      const since = encodeURIComponent(new Date(sinceMs).toISOString());
      const until = encodeURIComponent(new Date(Date.now() + 3_600_000).toISOString());
      return ok(`/api/v1/devices/${id}/metrics?model=${encodeURIComponent(model)}&since=${since}&until=${until}`);
    },
    async duplicatesDropped() {
      const text = (await api('GET', '/metrics')).body as string;
      return samples(parseMetrics(text), 'outpost_fleet_duplicate_messages_total').reduce((n, s) => n + s.value, 0);
    },
    arrivals(id) {
      const db = new Database(path.join(options.dataDir, 'fleet.db'), { readonly: true, fileMustExist: true });
      try {
        return db.prepare('SELECT seq, kind, received_at FROM received WHERE device_id = ? ORDER BY seq').all(id) as { seq: number; kind: string; received_at: string }[];
      } finally {
        db.close();
      }
    },
  };
}

// ---- the agent ----

/** `outpost-agent enroll` from dist/ with a one-time token; resolves with the device id it printed. */
export async function enrollAgentProcess(group: ProcessGroup, options: { fleetUrl: string; token: string; dataDir: string }): Promise<string> {
  requireDist();
  const proc = group.spawnNode('enroll', AGENT_MAIN, ['enroll', '--fleet', options.fleetUrl, '--token', options.token, '--data-dir', options.dataDir]);
  const { code } = await proc.exited;
  const out = proc.lines.join('\n');
  if (code !== 0) throw new Error(`outpost-agent enroll exited ${code}:\n${proc.tail(10)}`);
  const id = /enrolled as device (\S+)/.exec(out)?.[1];
  if (!id) throw new Error(`outpost-agent enroll printed no device id:\n${out}`);
  return id;
}

export interface AgentProcess {
  proc: ManagedProcess;
  /** Local HTTP base URL, e.g. http://127.0.0.1:40125 */
  url: string;
  /** GET /status, parsed. */
  status(): Promise<any>;
}

/**
 * `outpost-agent run` from dist/ with a config file (HTTP on 127.0.0.1:0 unless `config` says otherwise).
 * Resolves once the repository has loaded (every model ready or failed).
 */
export async function startAgentProcess(group: ProcessGroup, options: { dataDir: string; repository: string; config?: Record<string, any>; name?: string }): Promise<AgentProcess> {
  requireDist();
  const c = options.config ?? {};
  const config = { ...c, dataDir: options.dataDir, modelRepository: options.repository, http: { host: '127.0.0.1', port: 0, ...c.http }, log: { level: 'info', ...c.log } };
  const file = `${options.dataDir}.agent.yaml`;
  writeFileSync(file, JSON.stringify(config, null, 2));
  const proc = group.spawnNode(options.name ?? 'agent', AGENT_MAIN, ['run', '--config', file]);
  const listening = await proc.waitForLog((l) => l.msg === 'agent listening; loading models', 'the agent to listen');
  await proc.waitForLog((l) => l.msg === 'model repository loaded', 'the models to load', 30_000);
  const url = listening.url as string;
  return {
    proc, url,
    async status() {
      return (await fetch(`${url}/status`)).json();
    },
  };
}

// ---- Mosquitto ----

export const MOSQUITTO = '/usr/sbin/mosquitto';
export { SHIPPED_MOSQUITTO_CONF };

export interface MosquittoProcess {
  proc: ManagedProcess;
  /** Device listener (use_username_as_clientid, device password file). */
  deviceUrl: string;
  devicePort: number;
  /** Fleet listener (fleet password file). */
  fleetUrl: string;
  passwordFile: string;
  fleetPasswordFile: string;
  pidFile: string;
}

/**
 * Mosquitto from the shipped fleet-server/mosquitto/outpost.conf and acl, copied into `dir` with its paths and
 * listener ports rewritten (as test/integration/fleet-broker-mosquitto.test.ts does). `defaults: true` deletes
 * the two queue settings, i.e. Mosquitto's own defaults (max_queued_messages 1000, max_inflight_messages 20).
 * The caller writes `fleet.passwd` in `dir` (writePasswordFile) before starting it.
 */
export async function startMosquitto(group: ProcessGroup, dir: string, ports: { device: number; fleet: number }, opts: { defaults?: boolean } = {}): Promise<MosquittoProcess> {
  writeMosquittoConfig(dir, ports, opts);
  if (!existsSync(path.join(dir, 'devices.passwd'))) writeFileSync(path.join(dir, 'devices.passwd'), '', { mode: 0o600 });
  const proc = group.spawn('mosquitto', MOSQUITTO, ['-c', path.join(dir, 'outpost.conf')]);
  for (const port of [ports.device, ports.fleet]) {
    const deadline = Date.now() + 5_000;
    while (!(await canConnect(port))) {
      if (!proc.running || Date.now() > deadline) throw new Error(`mosquitto did not listen on ${port}:\n${proc.tail(10)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return {
    proc,
    deviceUrl: `mqtt://127.0.0.1:${ports.device}`,
    devicePort: ports.device,
    fleetUrl: `mqtt://127.0.0.1:${ports.fleet}`,
    passwordFile: path.join(dir, 'devices.passwd'),
    fleetPasswordFile: path.join(dir, 'fleet.passwd'),
    pidFile: path.join(dir, 'mosquitto.pid'),
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

/** A free TCP port on 127.0.0.1 (for processes that cannot take port 0, and for restarts on the same port). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ---- camera load ----

export interface DetectLoad {
  /** Every answered request, in completion order: HTTP status and when the answer was complete (epoch ms). */
  readonly answers: { status: number; at: number }[];
  /** Requests that got no answer (connection refused or reset), with when they failed. */
  readonly failures: { at: number; error: string }[];
  /** Answered with 200 so far. */
  ok(): number;
  /** Stops issuing requests and resolves once every request in flight has settled. */
  stop(): Promise<void>;
}

/**
 * Cameras: `concurrency` closed-loop clients POSTing `image` to `${baseUrl()}/v1/models/${model}/detect`,
 * at most `maxRequests` in all (a bound, not a goal). A request without an answer is recorded and the
 * client pauses 20 ms before the next one, so a dead agent is not hammered. `baseUrl` is read per request,
 * so the load follows an agent that restarts on another port.
 */
export function startDetectLoad(options: { baseUrl: () => string; model: string; image: Buffer; concurrency?: number; maxRequests?: number }): DetectLoad {
  const answers: DetectLoad['answers'] = [];
  const failures: DetectLoad['failures'] = [];
  const max = options.maxRequests ?? 20_000;
  let issued = 0;
  let stopped = false;
  const worker = async () => {
    while (!stopped && issued < max) {
      issued++;
      try {
        const res = await fetch(`${options.baseUrl()}/v1/models/${options.model}/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: options.image });
        await res.arrayBuffer();
        answers.push({ status: res.status, at: Date.now() });
      } catch (err) {
        failures.push({ at: Date.now(), error: String((err as Error).cause ?? err) });
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  const workers = Array.from({ length: options.concurrency ?? 2 }, () => worker());
  return {
    answers, failures,
    ok: () => answers.filter((a) => a.status === 200).length,
    async stop() {
      stopped = true;
      await Promise.all(workers);
    },
  };
}
