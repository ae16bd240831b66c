import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import type { AgentConfig } from './config/schema.js';
import { buildHttpServer } from './http/server.js';
import { InferenceService } from './inference/inference-service.js';
import { ModelManager } from './inference/model-manager.js';
import { readRuntimeInfo, realHardwareProbe, type HardwareProbe, type RuntimeInfo } from './inference/providers.js';
import { createAgentMetrics, type AgentMetrics } from './metrics/agent-metrics.js';
import { AgentStateStore } from './storage/agent-state.js';
import { openDatabase, type Db } from './storage/database.js';
import { AGENT_VERSION } from './version.js';

/** Seams a test or an embedding may replace; each has a real default. */
export interface AgentDeps {
  log?: Logger;
  hardware?: HardwareProbe;
  runtime?: RuntimeInfo;
}

export interface Agent {
  readonly config: AgentConfig;
  readonly http: FastifyInstance;
  readonly models: ModelManager;
  readonly metrics: AgentMetrics;
  readonly state: AgentStateStore;
  /** Listens, then loads the repository; resolves when every version is ready or failed. Returns the base URL. */
  start(): Promise<string>;
  /** Stops taking requests, lets in-flight ones finish, releases sessions, flushes and closes the database. */
  stop(): Promise<void>;
  status(): Record<string, unknown>;
}

/** The composition root: wires config, storage, inference and HTTP. Only start() opens a port. */
export async function createAgent(config: AgentConfig, deps: AgentDeps = {}): Promise<Agent> {
  const log = deps.log ?? pino({ level: config.log.level, base: { service: 'outpost-agent' } });
  mkdirSync(config.dataDir, { recursive: true });
  const db: Db = openDatabase(path.join(config.dataDir, 'agent.db'));
  const state = new AgentStateStore(db);
  const metrics = createAgentMetrics();
  const models = new ModelManager({
    config, metrics, state, log,
    runtime: deps.runtime ?? readRuntimeInfo(config.inference.runtimeLibraryPath),
    hardware: deps.hardware ?? realHardwareProbe,
  });
  const inference = new InferenceService(metrics, state, config.limits);
  const startedAt = new Date();
  let accepting = true;
  let url = '';

  const status = (): Record<string, unknown> => ({
    agent: { version: AGENT_VERSION, startedAt: startedAt.toISOString(), uptimeSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000), url },
    deviceId: null,
    executionProviders: { preference: config.inference.providers, candidates: models.providerPlan.candidates, skipped: models.providerPlan.skipped },
    models: models.list().map((v) => ({
      name: v.name, version: v.version, state: v.state, error: v.error, provider: v.provider, skippedProviders: v.skippedProviders,
      task: v.spec?.task, loadMs: v.loadMs && Math.round(v.loadMs), pending: v.batcher?.pending ?? 0, maxBatchSize: v.spec?.batching.maxBatchSize,
    })),
    requests: state.counters(),
    update: { state: 'idle' },
    link: { state: 'not-configured' },
    outbox: { depth: 0 },
  });

  const http = await buildHttpServer({ config, models, inference, metrics, log, version: AGENT_VERSION, status, accepting: () => accepting });
  // Counters reach SQLite once a second rather than one fsync per request.
  const flushTimer = setInterval(() => {
    try {
      state.flush();
    } catch (err) {
      // Serving goes on; the counts stay in memory and the next tick retries.
      log.error({ err: (err as Error).message }, 'cannot write request counters to the database');
    }
  }, 1000);
  flushTimer.unref();

  return {
    config, http, models, metrics, state, status,
    async start() {
      url = await http.listen({ host: config.http.host, port: config.http.port });
      if (config.http.host === '0.0.0.0') url = url.replace('0.0.0.0', '127.0.0.1');
      log.info({ url, repository: config.modelRepository, dataDir: config.dataDir }, 'agent listening; loading models');
      await models.loadRepository();
      log.info({ ready: models.list().filter((v) => v.state === 'ready').length, failed: models.list().filter((v) => v.state === 'failed').length }, 'model repository loaded');
      return url;
    },
    async stop() {
      accepting = false;
      clearInterval(flushTimer);
      await http.close();
      await models.close();
      state.flush();
      db.close();
    },
  };
}
