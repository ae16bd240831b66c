import type { ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { tail } from './agent-process.js';
import { track } from './children.js';
import { nofileOf, spawnWithNofile, type NofileLimit } from './fleet-nofile.js';

/**
 * The fleet server under test as its own process, started the way an operator starts it
 * (`node dist/fleet-server/src/main.js run --config … --data-dir …`), with the URLs read from the lines it
 * prints once it listens and the admin token from <data-dir>/admin-token. Its whole output goes to a log file.
 */
export interface FleetProcess {
  child: ChildProcess;
  pid: number;
  /** The command line, for the report. */
  argv: string[];
  httpUrl: string;
  /** What `run` printed as the MQTT URL (the embedded broker, or broker.publicUrl for an external one). */
  mqttUrl: string;
  adminToken: string;
  dataDir: string;
  logFile: string;
  nofile: NofileLimit | undefined;
  /** spawn → the "REST API:" line (broker, fleet MQTT client and HTTP all up). */
  startMs: number;
  stop(): Promise<{ exitCode: number | null; signal: string | null; stopMs: number }>;
}

export interface FleetLaunch {
  mainJs: string;
  dataDir: string;
  /** Written as JSON (a YAML subset) and passed with --config. */
  config: Record<string, unknown>;
  configFile: string;
  logFile: string;
  logLevel: string;
  nofile: number;
  env: NodeJS.ProcessEnv;
  startTimeoutMs: number;
}

export async function startFleetServer(launch: FleetLaunch): Promise<FleetProcess> {
  writeFileSync(launch.configFile, JSON.stringify(launch.config, null, 2));
  const args = [launch.mainJs, 'run', '--config', launch.configFile, '--data-dir', launch.dataDir, '--log-level', launch.logLevel];
  const started = performance.now();
  const child = track(spawnWithNofile(process.execPath, args, launch.nofile, { env: launch.env, stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = createWriteStream(launch.logFile, { flags: 'a' });
  child.stderr!.pipe(log, { end: false });
  let exited: string | undefined;
  const exitWatch = new Promise<void>((resolve) => child.once('exit', (code, signal) => {
    exited = `exited with ${signal ?? code}`;
    resolve();
  }));

  // The start banner (main.ts): "  REST API:    http://…/api/v1   (metrics: …)" and "  MQTT:        mqtt://…".
  const urls = await new Promise<{ httpUrl: string; mqttUrl: string }>((resolve, reject) => {
    let httpUrl: string | undefined;
    let mqttUrl: string | undefined;
    const timer = setTimeout(() => reject(new Error(`fleet server did not print its URLs within ${launch.startTimeoutMs} ms; log ${launch.logFile}`)), launch.startTimeoutMs);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      log.write(`${line}\n`);
      httpUrl ??= /^\s*REST API:\s+(\S+)\/api\/v1\b/.exec(line)?.[1];
      mqttUrl ??= /^\s*MQTT:\s+(\S+)/.exec(line)?.[1];
      if (httpUrl && mqttUrl) {
        clearTimeout(timer);
        resolve({ httpUrl, mqttUrl });
      }
    });
    void exitWatch.then(() => {
      clearTimeout(timer);
      // Let the log stream take the last lines before showing them.
      setTimeout(() => reject(new Error(`fleet server ${exited} before it listened; log ${launch.logFile}:\n${tail(launch.logFile)}`)), 100);
    });
  });
  const startMs = performance.now() - started;
  const adminToken = readFileSync(path.join(launch.dataDir, 'admin-token'), 'utf8').trim();
  return {
    child, pid: child.pid!, argv: args.slice(1), ...urls, adminToken, dataDir: launch.dataDir, logFile: launch.logFile,
    nofile: nofileOf(child.pid!), startMs,
    async stop() {
      const t0 = performance.now();
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exitWatch;
        clearTimeout(timer);
      }
      log.end();
      return { exitCode: child.exitCode, signal: child.signalCode, stopMs: performance.now() - t0 };
    },
  };
}
