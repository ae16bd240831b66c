import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { createAgent, type Agent, type AgentDeps } from '../../agent/src/agent.js';
import { loadConfig } from '../../agent/src/config/load.js';
import { GENERATED_REPOSITORY } from './paths.js';

export interface RunningAgent {
  agent: Agent;
  url: string;
  dataDir: string;
  repository: string;
  stop(): Promise<void>;
}

/**
 * Starts a real agent (real SQLite file, real HTTP on 127.0.0.1 port 0, real onnxruntime sessions) on a
 * temp data dir. `models` picks directories from the generated repository (copied, so a test may break them);
 * `repository` uses a given one instead. `config` is the highest config layer.
 */
export async function startAgent(options: { models?: string[]; repository?: string; config?: Record<string, unknown>; deps?: AgentDeps } = {}): Promise<RunningAgent> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'outpost-agent-test-'));
  let repository = options.repository;
  if (!repository) {
    repository = path.join(dataDir, 'models');
    for (const m of options.models ?? []) cpSync(path.join(GENERATED_REPOSITORY, m), path.join(repository, m), { recursive: true });
  }
  const config = loadConfig({
    env: {},
    flags: { dataDir, modelRepository: repository, ...options.config, http: { host: '127.0.0.1', port: 0, ...(options.config?.http as object | undefined) } },
  });
  const agent = await createAgent(config, { log: pino({ level: process.env.OUTPOST_TEST_LOG ?? 'silent' }), ...options.deps });
  const url = await agent.start();
  return {
    agent, url, dataDir, repository,
    async stop() {
      await agent.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
