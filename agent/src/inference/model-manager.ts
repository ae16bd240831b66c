import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { AgentConfig, ProviderName } from '../config/schema.js';
import { fail } from '../errors.js';
import type { AgentMetrics } from '../metrics/agent-metrics.js';
import { resolveModelSpec, type ModelSpec } from '../repository/model-spec.js';
import { scanRepository, selectVersions, type VersionDir } from '../repository/scan.js';
import type { AgentStateStore } from '../storage/agent-state.js';
import type { Golden, Manifest } from '../../../shared/src/manifest.js';
import { readOnnxMetadata } from '../../../shared/src/onnx/model-metadata.js';
import { Batcher } from './batcher.js';
import { planProviders, type HardwareProbe, type RuntimeInfo, type SkippedProvider } from './providers.js';
import { createModelSession, type ModelSession } from './session.js';
import { checkGolden, InFlight, StageError, SwapError } from './swap.js';
import { dummyFeeds, readManifest } from './version-files.js';

export { InFlight, StageError, SwapError, type StageErrorCode, type SwapErrorCode } from './swap.js';

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
  /**
   * Requests that resolved this version and have not finished; retire() waits for them. Always set by the manager;
   * optional (like `staged`) only so hand-built values, as in event and report tests, need not carry one.
   */
  inFlight?: InFlight;
  /** Loaded by stage() and not activated since: only requests naming its version reach it. */
  staged?: boolean;
}

export interface ModelManagerDeps {
  config: AgentConfig;
  metrics: AgentMetrics;
  state: AgentStateStore;
  log: Logger;
  runtime: RuntimeInfo;
  hardware: HardwareProbe;
  /**
   * Boot-time choice of versions (the update state machine's record of what was committed): when it answers for
   * a model in the repository, exactly `active` and `keep` are loaded, `active` first, and `active` is made the
   * active version; versionPolicy and pinned do not apply to that model.
   */
  selection?: (name: string) => { active: number; keep: number[] } | undefined;
}

/**
 * Loads the repository's model versions per the version policy and hands out ready ones to requests. Each model
 * has one active version, the one unversioned requests get; updates stage a new version beside it, flip the
 * pointer (activate) and retire the old one once its requests have finished.
 */
export class ModelManager {
  private readonly models = new Map<string, Map<number, ServedVersion>>();
  /** Active version per model, set by activate() and the boot selection. Absent: the highest ready non-staged version. */
  private readonly pointers = new Map<string, number>();
  private readonly stagingRuns = new Map<string, Promise<ServedVersion>>();
  private readonly retiring = new Map<ServedVersion, Promise<void>>();
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
    const { config, log, selection } = this.deps;
    const scan = scanRepository(config.modelRepository);
    for (const p of scan.problems) log.warn({ problem: p }, 'model repository entry skipped');
    const todo: { name: string; dir: VersionDir }[] = [];
    for (const m of scan.models) {
      const available = m.versions.map((v) => v.version);
      const chosen = selection?.(m.name);
      let wanted: number[];
      if (chosen) {
        wanted = [...new Set([chosen.active, ...chosen.keep])].filter((v) => available.includes(v));
        if (available.includes(chosen.active)) this.pointers.set(m.name, chosen.active);
        else log.warn({ model: m.name, active: chosen.active, available }, 'the selected active version is not in the repository');
      } else {
        wanted = selectVersions(available, config.models.versionPolicy, config.models.pinned[m.name]);
      }
      if (wanted.length === 0) log.warn({ model: m.name, pinned: config.models.pinned[m.name] }, 'no version of the model matches the version policy');
      // Registered before any load, so a request for a model still waiting its turn gets 503 (loading), not 404.
      for (const v of wanted) {
        const dir = m.versions.find((x) => x.version === v)!;
        this.register(m.name, v);
        todo.push({ name: m.name, dir });
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

  /** The active version: the one activated (or selected at boot), else the highest ready version that is not staged. */
  active(name: string): ServedVersion | undefined {
    const versions = this.models.get(name);
    if (!versions) return undefined;
    const pointer = this.pointers.get(name);
    const chosen = pointer === undefined ? undefined : versions.get(pointer);
    return chosen ?? highest([...versions.values()].filter((v) => v.state === 'ready' && !v.staged));
  }

  /**
   * The version an unversioned request gets: the active one when ready, else (it is loading or died) the highest
   * ready non-staged one, else the one whose state explains the refusal. Never a staged version while it is staged.
   */
  target(name: string): ServedVersion | undefined {
    const versions = this.models.get(name);
    if (!versions) return undefined;
    const active = this.active(name);
    // A staged version can be the pointer's target only when it replaced one that failed at boot; still staged.
    if (active?.state === 'ready' && !active.staged) return active;
    const all = [...versions.values()];
    return highest(all.filter((v) => v.state === 'ready' && !v.staged)) ?? active ?? highest(all.filter((v) => !v.staged)) ?? highest(all);
  }

  /**
   * The version a request names, or target(). Throws 404 for unknown, 503 for not ready.
   * INVARIANT: a caller starts its InferenceService call in the same tick, so retire() cannot miss the request.
   */
  resolve(name: string, version?: string): ServedVersion {
    const versions = this.models.get(name);
    if (!versions) throw fail('AGENT_MODEL_NOT_FOUND', `unknown model '${name}'`);
    let served: ServedVersion | undefined;
    if (version !== undefined && version !== '') {
      if (!/^[1-9][0-9]{0,8}$/.test(version)) throw fail('AGENT_VERSION_NOT_FOUND', `model '${name}' has no version '${version.slice(0, 32)}'`);
      served = versions.get(Number(version));
      if (!served) throw fail('AGENT_VERSION_NOT_FOUND', `model '${name}' has no served version ${version}`);
    } else {
      served = this.target(name)!;
      if (served.staged) throw fail('AGENT_MODEL_NOT_READY', `model '${name}' has no active version yet (version ${served.version} is staged)`, { headers: { 'retry-after': '1' } });
    }
    if (served.state !== 'ready') {
      throw fail('AGENT_MODEL_NOT_READY', `model '${name}' version ${served.version} is ${served.state}${served.error ? `: ${served.error}` : ''}`, { headers: served.state === 'loading' ? { 'retry-after': '1' } : {} });
    }
    return served;
  }

  /**
   * Loads, warms up and (with a golden, given or in its manifest) checks a version beside the serving ones; it then
   * answers requests that name its version, but unversioned ones only after activate(). A version already ready is
   * returned as it is (checked against `opts.golden` when given). Throws StageError after releasing what it loaded.
   */
  stage(name: string, dir: VersionDir, opts: { golden?: Golden } = {}): Promise<ServedVersion> {
    const key = `${name}\u0000${dir.version}`;
    let run = this.stagingRuns.get(key);
    if (!run) {
      run = this.stageVersion(name, dir, opts).finally(() => this.stagingRuns.delete(key));
      this.stagingRuns.set(key, run);
    }
    return run;
  }

  private async stageVersion(name: string, dir: VersionDir, opts: { golden?: Golden }): Promise<ServedVersion> {
    if (this.closing) throw new StageError('load_failed', 'the agent is stopping');
    const existing = this.models.get(name)?.get(dir.version);
    if (existing?.state === 'loading') throw new StageError('load_failed', `${name} version ${dir.version} is already loading`);
    if (existing?.state === 'ready') {
      const problems = opts.golden ? await checkGolden(existing.session!, existing.spec!.outputs.map((o) => o.name), opts.golden) : [];
      if (problems.length > 0) throw new StageError('golden_mismatch', `${name} version ${dir.version} fails its golden check: ${problems.join('; ')}`, problems);
      return existing;
    }
    // A new version, or one that failed at boot: loaded afresh, out of the map until it is ready and checked.
    const served = this.entry(name, dir.version);
    served.staged = true;
    let manifest: Manifest | undefined;
    try {
      manifest = await this.build(served, dir);
      if (this.closing) throw new Error('the agent is stopping');
    } catch (err) {
      await this.failed(served, err);
      throw new StageError('load_failed', `${name} version ${dir.version} failed to load: ${served.error}`);
    }
    const golden = opts.golden ?? manifest?.golden;
    const problems = golden ? await checkGolden(served.session!, served.spec!.outputs.map((o) => o.name), golden) : [];
    if (problems.length > 0 || this.closing) {
      await release(served);
      const message = problems.length > 0 ? `${name} version ${dir.version} fails its golden check: ${problems.join('; ')}` : 'the agent is stopping';
      this.deps.log.error({ model: name, version: dir.version, problems }, 'staged model version refused');
      throw new StageError(problems.length > 0 ? 'golden_mismatch' : 'load_failed', message, problems);
    }
    // The implicit active version (the highest ready) is pinned first, so the new version cannot take it over.
    const active = this.active(name);
    if (active && !this.pointers.has(name)) this.pointers.set(name, active.version);
    let versions = this.models.get(name);
    if (!versions) this.models.set(name, (versions = new Map()));
    versions.set(dir.version, served);
    this.ready(served, golden ? 'staged model version ready; golden check passed' : 'staged model version ready');
    return served;
  }

  /**
   * Makes a ready version the one unversioned requests get, in one synchronous step: a request resolved before
   * keeps its version, every later one gets this. `previous` is the version that was active (undefined when none
   * was, or when this one already was).
   */
  activate(name: string, version: number): { previous: ServedVersion | undefined } {
    const served = this.models.get(name)?.get(version);
    if (!served) throw new SwapError('unknown_version', `cannot activate ${name} version ${version}: it is not loaded`);
    if (served.state !== 'ready') throw new SwapError('not_ready', `cannot activate ${name} version ${version}: it is ${served.state}${served.error ? ` (${served.error})` : ''}`);
    const previous = this.active(name);
    this.pointers.set(name, version);
    served.staged = false;
    this.deps.log.info({ model: name, version, previous: previous?.version }, 'model version activated');
    return { previous: previous === served ? undefined : previous };
  }

  /**
   * Takes a version out of service: it stops being resolvable at once; resolves once the requests that had
   * resolved it have finished, then releases its sessions. Refuses the active version. A version that is not
   * loaded (already retired) resolves at once, so a resumed update may repeat the call.
   */
  async retire(name: string, version: number): Promise<void> {
    const versions = this.models.get(name);
    const served = versions?.get(version);
    if (!versions || !served) {
      await [...this.retiring].find(([v]) => v.name === name && v.version === version)?.[1];
      return;
    }
    if (served === this.active(name)) throw new SwapError('retire_active', `cannot retire ${name} version ${version}: it is the active version; activate another first`);
    if (served.state === 'loading') throw new SwapError('not_ready', `cannot retire ${name} version ${version}: it is still loading`);
    versions.delete(version);
    if (versions.size === 0) {
      this.models.delete(name);
      this.pointers.delete(name);
    }
    const labels = { model: name, version: String(version) };
    this.deps.metrics.modelReady.remove(labels);
    this.deps.metrics.modelLoadSeconds.remove(labels);
    const done = (async () => {
      await served.inFlight?.drained();
      await served.batcher?.idle();
      await release(served);
      this.deps.log.info({ model: name, version }, 'model version retired; sessions released');
      if (!this.closing) this.deps.state.recordModel({ name, version, state: 'retired', provider: served.provider ?? null, error: null, load_ms: served.loadMs ?? null });
    })().finally(() => this.retiring.delete(served));
    this.retiring.set(served, done);
    await done;
  }

  /**
   * Takes a version out of service even when it is the active one (the update machine rolling back a first
   * install, or a model the fleet no longer wants): unversioned requests then get another ready version, or 404
   * when none is left.
   */
  async unload(name: string, version: number): Promise<void> {
    const served = this.models.get(name)?.get(version);
    if (this.pointers.get(name) === version) this.pointers.delete(name);
    if (served && served.state === 'ready') served.staged = true; // never the implicit active version again
    await this.retire(name, version);
  }

  async loadVersion(name: string, dir: VersionDir): Promise<ServedVersion> {
    const served = this.register(name, dir.version);
    try {
      await this.build(served, dir);
      this.ready(served, 'model version ready');
    } catch (err) {
      await this.failed(served, err);
      this.deps.metrics.modelReady.set({ model: name, version: String(dir.version) }, 0);
      this.deps.log.error({ model: name, version: dir.version, err: served.error }, 'model version failed to load; other models keep serving');
    }
    return served;
  }

  /** Reads, checks and loads a version into `served` (sessions, spec, warm-up, batcher); throws on any problem. */
  private async build(served: ServedVersion, dir: VersionDir): Promise<Manifest | undefined> {
    const { config, metrics } = this.deps;
    const { name } = served;
    const labels = { model: name, version: String(dir.version) };
    const started = performance.now();
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
    return manifest;
  }

  private ready(served: ServedVersion, message: string): void {
    const { metrics, state, log } = this.deps;
    const labels = { model: served.name, version: String(served.version) };
    served.state = 'ready';
    metrics.modelLoadSeconds.set(labels, served.loadMs! / 1000);
    metrics.modelReady.set(labels, 1);
    const spec = served.spec!;
    log.info({ model: served.name, version: served.version, provider: served.provider, task: spec.task, source: spec.source, loadMs: Math.round(served.loadMs!), maxBatchSize: spec.batching.maxBatchSize }, message);
    if (!this.closing) state.recordModel({ name: served.name, version: served.version, state: 'ready', provider: served.provider ?? null, error: null, load_ms: served.loadMs ?? null });
  }

  private async failed(served: ServedVersion, err: unknown): Promise<void> {
    served.state = 'failed';
    served.error = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 500);
    await release(served);
    this.deps.metrics.modelLoadFailures.inc({ model: served.name, version: String(served.version) });
    if (served.staged) this.deps.log.error({ model: served.name, version: served.version, err: served.error }, 'staged model version failed to load; the active version keeps serving');
    if (!this.closing) this.deps.state.recordModel({ name: served.name, version: served.version, state: 'failed', provider: served.provider ?? null, error: served.error, load_ms: null });
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

  /** The entry for a version in the map, created in state 'loading' when new. */
  private register(name: string, version: number): ServedVersion {
    let versions = this.models.get(name);
    if (!versions) this.models.set(name, (versions = new Map()));
    let served = versions.get(version);
    if (!served) versions.set(version, (served = this.entry(name, version)));
    return served;
  }

  private entry(name: string, version: number): ServedVersion {
    return {
      name, version, state: 'loading', error: undefined, spec: undefined, session: undefined, sessions: [], batcher: undefined,
      provider: undefined, skippedProviders: [...this.plan.skipped], loadMs: undefined, sha256: undefined, inFlight: new InFlight(), staged: false,
    };
  }

  /** Stops loading, waits for stages, queued and running requests and retirements, then releases every session. */
  async close(): Promise<void> {
    this.closing = true;
    await this.loadingDone;
    await Promise.allSettled([...this.stagingRuns.values()]);
    for (const v of this.list()) {
      await v.batcher?.idle();
      await release(v);
    }
    await Promise.allSettled([...this.retiring.values()]);
  }
}

function highest(versions: ServedVersion[]): ServedVersion | undefined {
  return versions.reduce<ServedVersion | undefined>((best, v) => (!best || v.version > best.version ? v : best), undefined);
}

async function release(served: ServedVersion): Promise<void> {
  const sessions = served.sessions;
  served.session = undefined;
  served.sessions = [];
  for (const s of sessions) await s.release().catch(() => undefined);
}
