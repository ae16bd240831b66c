import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import type { AgentConfig } from './config/schema.js';
import { buildHttpServer } from './http/server.js';
import { InferenceService } from './inference/inference-service.js';
import { ModelManager } from './inference/model-manager.js';
import { readRuntimeInfo, realHardwareProbe, type HardwareProbe, type RuntimeInfo } from './inference/providers.js';
import { CredentialsError, loadCredentials, type Credentials } from './link/credentials.js';
import { FleetEvents } from './link/fleet-events.js';
import { FleetLink, type LinkStatus } from './link/fleet-link.js';
import { buildReportedState } from './link/reported-state.js';
import { createAgentMetrics, type AgentMetrics } from './metrics/agent-metrics.js';
import { createOutbox } from './outbox/create-outbox.js';
import type { Outbox } from './outbox/types.js';
import { createTelemetry, type Telemetry } from './telemetry/create-telemetry.js';
import { AgentStateStore } from './storage/agent-state.js';
import { openDatabase, type Db } from './storage/database.js';
import { Updater } from './update/updater.js';
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
  readonly outbox: Outbox;
  readonly telemetry: Telemetry;
  /** The update machine (agent/src/update/): desired state from the fleet → downloads, hot swaps, probation, rollbacks. */
  readonly updater: Updater;
  /** The fleet link; undefined when the box is not enrolled (no credentials in the data dir). */
  readonly link: FleetLink | undefined;
  /** Listens, then loads the repository; resolves when every version is ready or failed. Returns the base URL. */
  start(): Promise<string>;
  /** Says goodbye to the fleet (≤ 1 s), stops taking requests, lets in-flight ones finish, releases sessions, closes the outbox and the database. */
  stop(): Promise<void>;
  status(): Record<string, unknown>;
}

/** The composition root: wires config, storage, inference and HTTP. Only start() opens a port. */
/** Credentials, or why the link is off (not enrolled, or a refused file; serving goes on either way). */
function readCredentials(dataDir: string, log: Logger): { credentials: Credentials | undefined; credentialsError: string | null } {
  try {
    const loaded = loadCredentials(dataDir);
    for (const w of loaded?.warnings ?? []) log.warn(w);
    return { credentials: loaded?.credentials, credentialsError: null };
  } catch (err) {
    // A refused file (world-readable, invalid) or an unreadable one: the box keeps serving, offline.
    const message = err instanceof CredentialsError ? err.message : `cannot read the fleet credentials: ${(err as Error).message}`;
    log.error({ err: message }, 'fleet credentials refused; fleet link off');
    return { credentials: undefined, credentialsError: message };
  }
}

export async function createAgent(config: AgentConfig, deps: AgentDeps = {}): Promise<Agent> {
  const log = deps.log ?? pino({ level: config.log.level, base: { service: 'outpost-agent' } });
  mkdirSync(config.dataDir, { recursive: true });
  const db: Db = openDatabase(path.join(config.dataDir, 'agent.db'));
  const state = new AgentStateStore(db);
  const metrics = createAgentMetrics();
  // The update machine decides which version of a fleet-managed model serves at boot (selection).
  let updater: Updater | undefined;
  const models = new ModelManager({
    config, metrics, state, log,
    runtime: deps.runtime ?? readRuntimeInfo(config.inference.runtimeLibraryPath),
    hardware: deps.hardware ?? realHardwareProbe,
    selection: (name) => updater?.selection(name),
  });
  const { outbox, committer } = createOutbox({ db, config: config.outbox, log });
  metrics.sources.outboxStats = () => outbox.stats();
  const events = new FleetEvents(outbox, log);
  const unsubscribeDrops = outbox.onCommitted(() => {
    events.checkDrops();
    updater?.resendUnreported();
  });
  const telemetry = createTelemetry({
    db, outbox, committer, config, log,
    listModels: () => models.list().filter((v) => v.state === 'ready').map((v) => ({ model: v.name, version: v.version })),
  });
  metrics.sources.telemetryLostRequests = () => telemetry.aggregator.lostRequests;
  const { credentials, credentialsError } = readCredentials(config.dataDir, log);
  updater = new Updater({ config, db, models, events, log, credentials, metrics, onChange: () => link?.refreshState() });
  const observe = telemetry.observer;
  const inference = new InferenceService(metrics, state, config.limits, (r) => {
    observe(r);
    updater!.observe(r);
  });
  const startedAt = new Date();
  let accepting = true;
  let url = '';

  const link = credentials
    ? new FleetLink({
        credentials, fleet: config.fleet, maxAttempts: config.outbox.maxAttempts, outbox, log,
        reportState: () => buildReportedState({ agentVersion: AGENT_VERSION, startedAt, models: () => models.list(), activeVersion: (name) => models.active(name)?.version, providerCandidates: () => models.providerPlan.candidates, update: () => updater!.summary() }),
        onRejected: (kind, reason) => metrics.linkRejected.inc({ kind, reason }),
        runCommand: (message) => updater!.runCommand(message),
      })
    : undefined;
  if (link) {
    link.on('desired', (message) => updater!.onDesired(message));
    metrics.sources.linkConnected = () => link.connected;
    link.on('connected', (info) => {
      if (!info.reconnect) return;
      metrics.linkReconnects.inc();
      events.linkReconnected(info.outageMs);
    });
  }

  const linkStatus = (): LinkStatus | (Omit<LinkStatus, 'state' | 'mqttUrl'> & { state: 'not-enrolled'; mqttUrl: null }) =>
    link?.status() ?? { state: 'not-enrolled', mqttUrl: null, connectedSince: null, lastError: credentialsError, reconnects: 0, desiredRevision: null };

  const status = (): Record<string, unknown> => ({
    agent: { version: AGENT_VERSION, startedAt: startedAt.toISOString(), uptimeSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000), url },
    deviceId: credentials?.deviceId ?? null,
    executionProviders: { preference: config.inference.providers, candidates: models.providerPlan.candidates, skipped: models.providerPlan.skipped },
    models: models.list().map((v) => ({
      name: v.name, version: v.version, active: models.active(v.name) === v, state: v.state, error: v.error, provider: v.provider, skippedProviders: v.skippedProviders,
      task: v.spec?.task, loadMs: v.loadMs && Math.round(v.loadMs), pending: v.batcher?.pending ?? 0, maxBatchSize: v.spec?.batching.maxBatchSize,
    })),
    requests: state.counters(),
    update: updater.summary(),
    link: linkStatus(),
    outbox: outbox.stats(),
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
    config, http, models, metrics, state, status, outbox, link, telemetry, updater,
    async start() {
      url = await http.listen({ host: config.http.host, port: config.http.port });
      if (config.http.host === '0.0.0.0') url = url.replace('0.0.0.0', '127.0.0.1');
      log.info({ url, repository: config.modelRepository, dataDir: config.dataDir }, 'agent listening; loading models');
      telemetry.start();
      // The link comes up while models load (a TensorRT build can take minutes); the state is refreshed after.
      if (link) {
        log.info({ deviceId: credentials?.deviceId, mqttUrl: credentials?.mqttUrl }, 'enrolled: starting the fleet link');
        link.start();
      } else log.info({ reason: credentialsError ?? 'no credentials' }, 'not enrolled: fleet link off');
      // A crash in the middle of an update is settled before anything loads (crash loop → rollback), so the
      // repository loads exactly the versions that must serve; then the update machine resumes.
      updater!.prepareBoot();
      await models.loadRepository();
      for (const v of models.list()) events.modelLoad(v);
      updater!.boot();
      link?.refreshState();
      log.info({ ready: models.list().filter((v) => v.state === 'ready').length, failed: models.list().filter((v) => v.state === 'failed').length }, 'model repository loaded');
      return url;
    },
    async stop() {
      accepting = false;
      clearInterval(flushTimer);
      // Reverse of start: goodbye to the fleet first (≤ 1 s), then HTTP and models, then the outbox, then the database.
      await link?.stop().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'fleet link did not stop cleanly'));
      await http.close();
      await updater!.stop();
      await models.close();
      telemetry.stop();
      unsubscribeDrops();
      await outbox.close();
      committer.close();
      state.flush();
      db.close();
    },
  };
}
