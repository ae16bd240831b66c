import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { AgentConfig, ProviderName } from '../config/schema.js';
import { fail } from '../errors.js';
import type { AgentMetrics } from '../metrics/agent-metrics.js';
import { resolveModelSpec, type ModelSpec } from '../repository/model-spec.js';
import { scanRepository, selectVersions, type VersionDir } from '../repository/scan.js';
import type { AgentStateStore } from '../storage/agent-state.js';
import { parseManifest, type Manifest } from '../../../shared/src/manifest.js';
import { readOnnxMetadata } from '../../../shared/src/onnx/model-metadata.js';
import { Batcher } from './batcher.js';
import { planProviders, type HardwareProbe, type RuntimeInfo, type SkippedProvider } from './providers.js';
import { createModelSession, type ModelSession } from './session.js';
import { DATATYPES, type HostTensor, type NumericDatatype } from './tensor.js';

export type VersionState = 'loading' | 'ready' | 'failed';

/** One model version as served: its state, and once ready its session, spec and queue. */
export interface ServedVersion {
  readonly name: string;
  readonly version: number;
  state: VersionState;
  error: string | undefined;
  spec: ModelSpec | undefined;
  /** The first session (its I/O describes the model); `sessions` holds it and the other instances. */
  session: ModelSession | undefined;
  sessions: ModelSession[];
  batcher: Batcher | undefined;
  provider: ProviderName | undefined;
  /** Preferred providers not used, with the reason (static checks and refusals at session creation). */
  skippedProviders: SkippedProvider[];
  loadMs: number | undefined;
  sha256: string | undefined;
}

export interface ModelManagerDeps {
  config: AgentConfig;
  metrics: AgentMetrics;
  state: AgentStateStore;
  log: Logger;
  runtime: RuntimeInfo;
  hardware: HardwareProbe;
}

/** Loads the repository's model versions per the version policy and hands out ready ones to requests. */
export class ModelManager {
  private readonly models = new Map<string, Map<number, ServedVersion>>();
  private readonly plan;
  private loading = true;
  private closing = false;
  /** Settles when the start-up load has finished or stopped; close() waits for it. */
  private loadingDone: Promise<void> = Promise.resolve();

  constructor(private readonly deps: ModelManagerDeps) {
    this.plan = planProviders(deps.config.inference.providers, deps.runtime, deps.hardware);
    for (const s of this.plan.skipped) deps.log.info({ provider: s.provider, reason: s.reason }, 'execution provider skipped');
  }

  /** Providers planned for new sessions, and those skipped with their reason. */
  get providerPlan(): { candidates: ProviderName[]; skipped: SkippedProvider[] } {
    return this.plan;
  }

  /** True once the start-up scan has loaded (or failed) every version. */
  get loaded(): boolean {
    return !this.loading;
  }

  loadRepository(): Promise<void> {
    const run = this.loadAll();
    this.loadingDone = run.catch(() => undefined);
    return run;
  }

  private async loadAll(): Promise<void> {
    const { config, log } = this.deps;
    const scan = scanRepository(config.modelRepository);
    for (const p of scan.problems) log.warn({ problem: p }, 'model repository entry skipped');
    const todo: { name: string; dir: VersionDir }[] = [];
    for (const m of scan.models) {
      const wanted = selectVersions(m.versions.map((v) => v.version), config.models.versionPolicy, config.models.pinned[m.name]);
      if (wanted.length === 0) log.warn({ model: m.name, pinned: config.models.pinned[m.name] }, 'no version of the model matches the version policy');
      // Registered before any load, so a request for a model still waiting its turn gets 503 (loading), not 404.
      for (const v of m.versions.filter((x) => wanted.includes(x.version))) {
        this.register(m.name, v.version);
        todo.push({ name: m.name, dir: v });
      }
    }
    // One at a time: bounds peak memory while sessions are built, and keeps the log readable.
    for (const { name, dir } of todo) {
      if (this.closing) break;
      await this.loadVersion(name, dir);
    }
    this.loading = false;
  }

  list(): ServedVersion[] {
    return [...this.models.values()].flatMap((versions) => [...versions.values()]).sort((a, b) => a.name.localeCompare(b.name) || a.version - b.version);
  }

  versionsOf(name: string): ServedVersion[] | undefined {
    const versions = this.models.get(name);
    return versions ? [...versions.values()].sort((a, b) => a.version - b.version) : undefined;
  }

  /** The version a request names, or the highest ready one. Throws 404 for unknown, 503 for not ready. */
  resolve(name: string, version?: string): ServedVersion {
    const versions = this.models.get(name);
    if (!versions) throw fail('AGENT_MODEL_NOT_FOUND', `unknown model '${name}'`);
    let served: ServedVersion | undefined;
    if (version !== undefined && version !== '') {
      if (!/^[1-9][0-9]{0,8}$/.test(version)) throw fail('AGENT_VERSION_NOT_FOUND', `model '${name}' has no version '${version.slice(0, 32)}'`);
      served = versions.get(Number(version));
      if (!served) throw fail('AGENT_VERSION_NOT_FOUND', `model '${name}' has no served version ${version}`);
    } else {
      const sorted = [...versions.values()].sort((a, b) => b.version - a.version);
      served = sorted.find((v) => v.state === 'ready') ?? sorted[0]!;
    }
    if (served.state !== 'ready') {
      throw fail('AGENT_MODEL_NOT_READY', `model '${name}' version ${served.version} is ${served.state}${served.error ? `: ${served.error}` : ''}`, { headers: served.state === 'loading' ? { 'retry-after': '1' } : {} });
    }
    return served;
  }

  async loadVersion(name: string, dir: VersionDir): Promise<ServedVersion> {
    const { config, metrics, state, log } = this.deps;
    const served = this.register(name, dir.version);
    const labels = { model: name, version: String(dir.version) };
    const started = performance.now();
    try {
      const bytes = await readFile(dir.modelPath);
      served.sha256 = createHash('sha256').update(bytes).digest('hex');
      const manifest = dir.manifestPath ? await readManifest(dir.manifestPath, name, dir.version) : undefined;
      if (manifest?.sha256 && manifest.sha256 !== served.sha256) {
        throw new Error(`model.onnx sha256 ${served.sha256} does not match the manifest's ${manifest.sha256}`);
      }
      let metadata: Record<string, string> = {};
      try {
        metadata = readOnnxMetadata(bytes).metadataProps;
      } catch (err) {
        throw new Error(`not a readable ONNX file: ${(err as Error).message}`);
      }
      const options = {
        intraOpThreads: config.inference.intraOpThreads,
        interOpThreads: config.inference.interOpThreads,
        allowSpinning: config.inference.allowSpinning,
        tensorrtCacheDir: config.inference.tensorrtCacheDir,
      };
      const onDead = (err: Error) => this.markDead(served, err);
      const session = await createModelSession(bytes, this.plan.candidates, options, onDead);
      served.session = session;
      served.sessions = [session];
      // instance_count sessions, each on its own thread, so that many runs of this version go in parallel.
      for (let i = 1; i < (manifest?.instance_count ?? 1); i++) served.sessions.push(await createModelSession(bytes, [session.provider], options, onDead));
      if (this.closing) throw new Error('agent stopping');
      served.provider = session.provider;
      served.skippedProviders.push(...session.failedProviders);
      const spec = resolveModelSpec({ inputs: session.inputs, outputs: session.outputs }, manifest, metadata, {
        batchingEnabled: config.batching.enabled,
        maxBatchSize: config.batching.maxBatchSize,
        maxQueueDelayMs: config.batching.maxQueueDelayMs,
        maxQueueSize: config.batching.maxQueueSize,
      });
      served.spec = spec;
      for (let i = 0; i < config.models.warmupRuns; i++) await session.run(dummyFeeds(spec), spec.outputs.map((o) => o.name));
      const outputNames = spec.outputs.map((o) => o.name);
      // INVARIANT: the batcher runs at most `concurrency` = sessions.length batches at once, so one is always free.
      const free = [...served.sessions];
      served.batcher = new Batcher(async (feeds) => {
        // One observation per session.run of the rows it carries (README: "rows per session.run"), not one per
        // request: a batch of 8 requests is one run of 8 rows. A model without a batch dimension runs one request.
        const first = Object.values(feeds)[0];
        metrics.batchSize.observe(labels, spec.batching.dynamic && first && first.dims.length > 0 ? first.dims[0]! : 1);
        const instance = free.pop()!;
        try {
          return await instance.run(feeds, outputNames);
        } finally {
          free.push(instance);
        }
      }, {
        maxBatchSize: spec.batching.maxBatchSize,
        maxQueueDelayMs: spec.batching.maxQueueDelayMs,
        maxQueueSize: spec.batching.maxQueueSize,
        concurrency: served.sessions.length,
      });
      served.loadMs = performance.now() - started;
      served.state = 'ready';
      metrics.modelLoadSeconds.set(labels, served.loadMs / 1000);
      metrics.modelReady.set(labels, 1);
      log.info({ model: name, version: dir.version, provider: served.provider, task: spec.task, source: spec.source, loadMs: Math.round(served.loadMs), maxBatchSize: spec.batching.maxBatchSize }, 'model version ready');
    } catch (err) {
      served.state = 'failed';
      served.error = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 500);
      for (const s of served.sessions) await s.release().catch(() => undefined);
      served.session = undefined;
      served.sessions = [];
      metrics.modelReady.set(labels, 0);
      metrics.modelLoadFailures.inc(labels);
      log.error({ model: name, version: dir.version, err: served.error }, 'model version failed to load; other models keep serving');
    }
    if (!this.closing) state.recordModel({ name, version: dir.version, state: served.state, provider: served.provider ?? null, error: served.error ?? null, load_ms: served.loadMs ?? null });
    return served;
  }

  /** An inference thread died (native crash, out of memory): the version stops claiming to be ready. */
  private markDead(served: ServedVersion, err: Error): void {
    if (this.closing || served.state !== 'ready') return;
    served.state = 'failed';
    served.error = `inference thread died: ${err.message}`;
    const labels = { model: served.name, version: String(served.version) };
    this.deps.metrics.modelReady.set(labels, 0);
    this.deps.log.error({ model: served.name, version: served.version, err: served.error }, 'model version stopped serving');
    this.deps.state.recordModel({ name: served.name, version: served.version, state: 'failed', provider: served.provider ?? null, error: served.error, load_ms: served.loadMs ?? null });
  }

  /** The entry for a version, created in state 'loading' when new. */
  private register(name: string, version: number): ServedVersion {
    let versions = this.models.get(name);
    if (!versions) this.models.set(name, (versions = new Map()));
    let served = versions.get(version);
    if (!served) {
      served = {
        name, version, state: 'loading', error: undefined, spec: undefined, session: undefined, sessions: [], batcher: undefined,
        provider: undefined, skippedProviders: [...this.plan.skipped], loadMs: undefined, sha256: undefined,
      };
      versions.set(version, served);
    }
    return served;
  }

  /** Stops loading, waits for queued and running requests, then releases every session. */
  async close(): Promise<void> {
    this.closing = true;
    await this.loadingDone;
    for (const v of this.list()) {
      await v.batcher?.idle();
      for (const s of v.sessions) await s.release().catch(() => undefined);
      v.session = undefined;
      v.sessions = [];
    }
  }
}

async function readManifest(file: string, name: string, version: number): Promise<Manifest> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`manifest.json is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = parseManifest(json);
  if (!parsed.ok) throw new Error(`manifest.json is invalid: ${parsed.problems.join('; ')}`);
  if (parsed.manifest.name !== name || parsed.manifest.version !== version) {
    throw new Error(`manifest.json says ${parsed.manifest.name}@${parsed.manifest.version} but lives in ${name}/${version}`);
  }
  return parsed.manifest;
}

/** Zero inputs of batch 1, with the image size where the model takes images, to warm the session up. */
function dummyFeeds(spec: ModelSpec): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  for (const input of spec.inputs) {
    if (input.datatype === 'BYTES') throw new Error(`input '${input.name}' is a string tensor; not supported`);
    let dims = input.dims.map((d) => (d < 0 ? 1 : d));
    if (spec.image && input.name === spec.image.input) {
      const [h, w] = spec.image.spec.size;
      dims = spec.image.layout === 'NCHW' ? [1, 3, h, w] : [1, h, w, 3];
    }
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[input.name] = { datatype: input.datatype as NumericDatatype, dims, data: DATATYPES[input.datatype as NumericDatatype].make(n) };
  }
  return feeds;
}
