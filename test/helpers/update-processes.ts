import { createHash } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { eventually } from './fleet.js';
import { AGENT_MAIN, requireDist, type ManagedProcess, type ProcessGroup } from './processes.js';
import { inferSimple } from './updates.js';

/**
 * Agent processes for the update crash tests (test/e2e/update-crash.test.ts): started with extra environment
 * (the OUTPOST_TEST_CRASH_AT hook), timed from the spawn, and watched by a client that keeps asking the model
 * while the update machine resumes. processes.ts startAgentProcess waits for the repository to load and takes
 * no environment; these do neither, because the time from spawn to the first answer is what is measured.
 */

/** Fast reconnects and download retries; no host sampling (it only adds noise to the timing). */
export const UPDATE_AGENT_CONFIG = {
  telemetry: { system: false },
  fleet: { reconnectMinMs: 50, reconnectMaxMs: 500 },
  update: { backoffMinMs: 20, backoffMaxMs: 200 },
};

export interface SpawnedAgent {
  proc: ManagedProcess;
  /** Epoch ms just before the process was spawned. */
  spawnedAt: number;
  /** Local HTTP base URL, from the "agent listening" log line. */
  url: string;
  status(): Promise<any>;
}

/**
 * `outpost-agent run` from dist/ with `env` added; resolves once it listens (its models may still be loading).
 * `waitLoaded` also waits for "model repository loaded".
 */
export async function spawnAgent(
  group: ProcessGroup,
  options: { dataDir: string; repository: string; name: string; env?: Record<string, string>; waitLoaded?: boolean },
): Promise<SpawnedAgent> {
  requireDist();
  const config = { ...UPDATE_AGENT_CONFIG, dataDir: options.dataDir, modelRepository: options.repository, http: { host: '127.0.0.1', port: 0 }, log: { level: 'info' } };
  const file = `${options.dataDir}.agent.yaml`;
  writeFileSync(file, JSON.stringify(config, null, 2));
  const spawnedAt = Date.now();
  const proc = group.spawnNode(options.name, AGENT_MAIN, ['run', '--config', file], { env: options.env ?? {} });
  const listening = await proc.waitForLog((l) => l.msg === 'agent listening; loading models', `${options.name} to listen`);
  if (options.waitLoaded) await proc.waitForLog((l) => l.msg === 'model repository loaded', `${options.name} to load its models`, 30_000);
  const url = listening.url as string;
  return { proc, spawnedAt, url, status: async () => (await fetch(`${url}/status`)).json() };
}

/** Polls POST /v2/models/simple/infer until it answers 200; the time from the spawn and the version that answered. */
export async function firstAnswer(agent: SpawnedAgent, timeoutMs = 10_000): Promise<{ ms: number; version: string | null }> {
  const r = await eventually(async () => {
    const answer = await inferSimple(agent.url);
    return answer.status === 200 ? { at: Date.now(), version: answer.version } : undefined;
  }, `${agent.proc.name}: a 200 from /v2/models/simple/infer`, timeoutMs);
  return { ms: r.at - agent.spawnedAt, version: r.version };
}

export interface ServeProbe {
  /** Every request after start, in order: HTTP status (0: no answer), the version that answered, the error. */
  readonly answers: { status: number; version: string | null; error?: string }[];
  stop(): Promise<void>;
}

/**
 * One client asking the model every ~20 ms (a paced camera, not a load test: probation must not end by request
 * count). Starts after the first 200, so every answer it records must be a 200.
 */
export function startServeProbe(url: string): ServeProbe {
  const answers: ServeProbe['answers'] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        const a = await inferSimple(url);
        answers.push({ status: a.status, version: a.version });
      } catch (err) {
        answers.push({ status: 0, version: null, error: String((err as Error).cause ?? err) });
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    answers,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

/** sha256 of every `<repository>/<model>/<v>/model.onnx` (numeric version dirs only; what the loader reads). */
export function installedDigests(repository: string, model: string): Map<number, string> {
  const dir = path.join(repository, model);
  const out = new Map<number, string>();
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir)) {
    if (!/^[1-9][0-9]*$/.test(e)) continue;
    const file = path.join(dir, e, 'model.onnx');
    out.set(Number(e), existsSync(file) ? createHash('sha256').update(readFileSync(file)).digest('hex') : 'no model.onnx');
  }
  return out;
}

/** The `.part` files in the agent's staging directory, with their sizes. */
export function partFiles(dataDir: string): { name: string; size: number }[] {
  const dir = path.join(dataDir, 'staging');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.part')).map((name) => ({ name, size: statSync(path.join(dir, name)).size }));
}

/** Rewrites the enrolled agent's fleet URLs (e.g. to route its downloads or its MQTT through a proxy); the file stays 0600. */
export function rewriteCredentials(dataDir: string, patch: { fleetUrl?: string; mqttUrl?: string }): void {
  const file = path.join(dataDir, 'fleet-credentials.json');
  const credentials = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  writeFileSync(file, `${JSON.stringify({ ...credentials, ...patch }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
}
