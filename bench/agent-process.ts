import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { track } from './children.js';

/**
 * The agent under test as its own process, started the way an operator starts it
 * (`node dist/agent/src/main.js run --config …`), on a port the bench picked, logging to a file.
 */
export interface AgentProcess {
  child: ChildProcess;
  /** The command line, for the report. */
  argv: string[];
  pid: number;
  host: string;
  port: number;
  url: string;
  logFile: string;
  /** spawn() → first 200 from /v2/health/ready (every model loaded and warmed). */
  coldStartMs: number;
  readyPolls: number;
  stop(): Promise<{ exitCode: number | null; signal: string | null; stopMs: number }>;
}

export interface AgentLaunch {
  mainJs: string;
  /** Given as `run` flags, as an operator would: --model-repository, --data-dir, --log-level (+ --http-host/--http-port). */
  modelRepository: string;
  dataDir: string;
  logLevel: string;
  /** Everything else, written as JSON (a YAML subset) and passed with --config. */
  config: Record<string, unknown>;
  configFile: string;
  logFile: string;
  env: NodeJS.ProcessEnv;
  readyTimeoutMs: number;
}

const HOST = '127.0.0.1';
const POLL_INTERVAL_MS = 10;

/** A port free right now: listen on 0, read it, close. The agent binds it a few ms later. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export async function startAgent(launch: AgentLaunch): Promise<AgentProcess> {
  // Another process may take the port between freePort() and the agent's bind; a fresh port fixes that.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(launch, await freePort());
    } catch (err) {
      lastError = err;
      if (!/EADDRINUSE/.test(String((err as Error).message))) throw err;
    }
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

async function startOnce(launch: AgentLaunch, port: number): Promise<AgentProcess> {
  writeFileSync(launch.configFile, JSON.stringify(launch.config, null, 2));
  const args = [
    launch.mainJs, 'run', '--config', launch.configFile, '--model-repository', launch.modelRepository, '--data-dir', launch.dataDir,
    '--http-host', HOST, '--http-port', String(port), '--log-level', launch.logLevel,
  ];
  const log = openSync(launch.logFile, 'a');
  const started = performance.now();
  const child = track(spawn(process.execPath, args, { env: launch.env, stdio: ['ignore', log, log] }));
  closeSync(log);
  let exited: string | undefined;
  const exitWatch = new Promise<void>((resolve) => child.once('exit', (code, signal) => {
    exited = `exited with ${signal ?? code}`;
    resolve();
  }));

  // Bounded readiness loop: at most readyTimeoutMs / POLL_INTERVAL_MS polls, each with its own timeout.
  const url = `http://${HOST}:${port}`;
  const maxPolls = Math.ceil(launch.readyTimeoutMs / POLL_INTERVAL_MS);
  for (let poll = 1; poll <= maxPolls; poll++) {
    if (exited) throw new Error(`agent ${exited} before it was ready; log ${launch.logFile}:\n${tail(launch.logFile)}`);
    const status = await getStatus(`${url}/v2/health/ready`, 1000);
    if (status === 200) {
      const coldStartMs = performance.now() - started;
      return {
        child, argv: args.slice(1), pid: child.pid!, host: HOST, port, url, logFile: launch.logFile, coldStartMs, readyPolls: poll,
        async stop() {
          const t0 = performance.now();
          if (!exited) {
            child.kill('SIGTERM');
            const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
            await exitWatch;
            clearTimeout(timer);
          }
          return { exitCode: child.exitCode, signal: child.signalCode, stopMs: performance.now() - t0 };
        },
      };
    }
    if (performance.now() - started > launch.readyTimeoutMs) break;
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
  child.kill('SIGKILL');
  throw new Error(`agent not ready within ${launch.readyTimeoutMs} ms; log ${launch.logFile}:\n${tail(launch.logFile)}`);
}

/** Status code of a GET, or 0 when the connection fails or times out (not listening yet). */
function getStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.setTimeout(timeoutMs, () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

export function tail(file: string, lines = 15): string {
  if (!existsSync(file)) return '(no log)';
  return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
}

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request from the bench process itself: only for set-up probes, never for measured load. */
export function httpRequest(url: string, options: { method?: string; headers?: Record<string, string>; body?: Buffer } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: { ...options.headers, ...(options.body ? { 'content-length': String(options.body.length) } : {}) }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(120_000, () => req.destroy(new Error(`no answer from ${url} within 120 s`)));
    req.on('error', reject);
    req.end(options.body);
  });
}
