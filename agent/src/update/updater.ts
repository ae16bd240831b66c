import { rmSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { CmdMessage, DesiredMessage, DesiredModel } from '../../../shared/src/mqtt/messages.js';
import type { AgentConfig } from '../config/schema.js';
import type { ModelManager } from '../inference/model-manager.js';
import type { Credentials } from '../link/credentials.js';
import type { FleetEvents } from '../link/fleet-events.js';
import type { CommandOutcome } from '../link/handlers/index.js';
import type { AgentMetrics } from '../metrics/agent-metrics.js';
import type { Db } from '../storage/database.js';
import type { RequestObservation } from '../telemetry/types.js';
import { collectGarbage, installedVersion, removeOrphanParts } from './install.js';
import { ProbationMonitor, probationPolicy } from './probation.js';
import { SERVING_NEW, TERMINAL, type UpdateReason, type UpdateState } from './states.js';
import { download, partFile, stage, stagingDir, StepError, testFaultHook, verifyAndInstall, waitForWindow, type StepDeps } from './steps.js';
import { TransitionReporter } from './reporter.js';
import { bootSelection, UpdateStore, type UpdateRow } from './update-store.js';
import { checkDeployment, safeVersionDir } from './verify.js';
import { removeModel, runCommand } from './commands.js';

export interface UpdaterDeps {
  config: AgentConfig;
  db: Db;
  models: ModelManager;
  events: FleetEvents;
  log: Logger;
  credentials: Credentials | undefined;
  /** outpost_update_* counters. */
  metrics?: Pick<AgentMetrics, 'updateTransitions' | 'updateDownloadedBytes'>;
  /** Called after every transition (the link re-sends the reported state, so the fleet sees what serves). */
  onChange?: () => void;
}

/** How often a version on probation is judged (its commit time, error rate and p95), ms. */
const JUDGE_INTERVAL_MS = 200;

/**
 * The update machine's runner (DESIGN §3.4, STYLE "reconcile"): the fleet's desired state is compared with what
 * serves; each difference becomes a deployment (update-store.ts) that one runner at a time drives through
 * states.ts — download, verify, install, stage, wait for the maintenance window, flip the pointer, probation,
 * commit or roll back. Every state is written before its step runs, so boot() resumes or rolls back whatever a
 * crash interrupted, and every transition goes to the fleet as an update.transition event through the outbox.
 */
export class Updater {
  readonly store: UpdateStore;
  readonly monitor = new ProbationMonitor();
  /** @internal commands.ts: the latest desired state. */
  desired: DesiredMessage | undefined;
  private loop: Promise<void> | undefined;
  private again = false;
  /** @internal commands.ts: the deployment the runner works on. */
  current: { id: number; model: string; abort: AbortController } | undefined;
  private judgeTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Set by boot(): before it, models are still loading and a desired state is only kept. */
  private booted = false;
  private markBooted: () => void = () => undefined;
  private readonly bootedPromise = new Promise<void>((resolve) => {
    this.markBooted = resolve;
  });
  private readonly steps: StepDeps;
  readonly reporter: TransitionReporter;

  constructor(readonly deps: UpdaterDeps) {
    this.store = new UpdateStore(deps.db);
    this.steps = { config: deps.config, store: this.store, models: deps.models, credentials: deps.credentials, log: deps.log, fault: testFaultHook() };
    this.reporter = new TransitionReporter({ store: this.store, events: deps.events, log: deps.log, metrics: deps.metrics, monitor: this.monitor });
  }

  /**
   * Before the repository loads (synchronous): settles what a crash left half-done where no model is needed to
   * do it — a second boot on probation rolls back (crash loop), an interrupted rollback completes — so the
   * selection below already names the version that must serve.
   */
  prepareBoot(): void {
    for (const row of this.store.unfinished()) {
      if (row.state === 'probation') {
        const boots = this.store.countProbationBoot(row.id);
        if (boots >= 2) {
          this.deps.log.warn({ model: row.model, version: row.version, boots }, 'agent restarted twice during probation: rolling back at boot');
          this.finishRollbackOffline(this.store.transition(row.id, 'rolling_back', { reason: 'crash_loop', detail: `the agent restarted ${boots} times while ${row.model}@${row.version} was on probation` }));
        }
      } else if (row.state === 'rolling_back') {
        this.finishRollbackOffline(row);
      }
    }
  }

  /** The versions ModelManager loads for a fleet-managed model at boot: the active one, and the previous while on probation. */
  selection(model: string): { active: number; keep: number[] } | undefined {
    return bootSelection(this.store, this.deps.config.modelRepository, model);
  }


  /** After the repository loaded: re-sends lost transition events, resumes probation and the runner, reconciles the saved desired state. */
  boot(): void {
    // First: a probation resumed below takes its thresholds from the desired state (offline, only the saved one).
    this.desired ??= this.store.loadDesired();
    for (const row of this.store.unreported()) this.reporter.transition(row, row.reportedState ?? 'idle');
    for (const row of this.store.unfinished()) {
      if (row.state === 'probation') this.startProbation(row);
    }
    removeOrphanParts(stagingDir(this.deps.config), this.store.unfinished().map((r) => partFile(this.deps.config, r)));
    this.booted = true;
    this.markBooted();
    this.reconcile();
  }

  /** A newer desired state from the fleet (the link dedups by revision). */
  onDesired(message: DesiredMessage): void {
    this.store.saveDesired(message);
    this.desired = message;
    this.reconcile();
  }

  /** Telemetry observer: feeds probation. */
  observe(r: RequestObservation & { code?: string }): void {
    this.monitor.observe(r);
  }

  /** Compares desired with what serves and queues what differs. Never throws. */
  reconcile(): void {
    if (this.stopped || !this.booted || !this.desired) return;
    for (const entry of this.desired.models) {
      try {
        this.reconcileOne(entry);
      } catch (err) {
        this.deps.log.error({ model: entry.name, err: (err as Error).message }, 'reconcile failed for a model');
      }
    }
    // A model the desired state does not name is left alone: only a signed removal entry (below) removes one.
    this.kick();
  }



  /** Runs a background step of the machine, logging instead of letting an error reach the process. */
  private fire(p: Promise<unknown>, what: string): void {
    p.catch((err: unknown) => this.deps.log.error({ err: (err as Error).message, what }, 'update machine step failed'));
  }

  private reconcileOne(entry: DesiredModel): void {
    const { log } = this.deps;
    const pointer = this.store.pointer(entry.name);
    const latest = this.store.latest(entry.name);
    if (latest?.deployment === entry.deployment) return; // this deployment is known (running or done)
    if (pointer && entry.deployment === pointer.highestDeployment) return; // known: it was adopted or already served
    if (pointer && entry.deployment < pointer.highestDeployment) {
      this.refuse(entry, 'replay', `deployment ${entry.deployment} is older than ${pointer.highestDeployment}, the newest accepted for ${entry.name}: a replayed manifest`);
      return;
    }
    const check = checkDeployment(entry, { deviceId: this.deps.credentials?.deviceId ?? '', fleetPublicKeyPem: this.deps.credentials?.fleetPublicKey ?? '', now: new Date() });
    if (!check.ok) {
      this.refuse(entry, check.code, check.message);
      return;
    }
    if (entry.remove) {
      // A signed removal (a rollout rolling back this box's first install of the model).
      this.store.raiseHighest(entry.name, entry.deployment);
      this.fire(removeModel(this, entry), `removing ${entry.name}`);
      return;
    }
    const active = this.deps.models.active(entry.name);
    const unfinished = latest && !TERMINAL.has(latest.state) ? latest : undefined;
    if (unfinished && unfinished.version === entry.version && unfinished.sha256 === entry.sha256) {
      // The same version under a new deployment (re-signed before expiry, or a new rollout of it): the deployment in
      // progress goes on and takes the new entry, so its events name the new rollout.
      const adopted = this.store.adopt(unfinished.id, entry);
      if (adopted.rollout !== unfinished.rollout) this.reporter.transition(adopted, adopted.state);
      return;
    }
    if (unfinished?.state === 'rolling_back') {
      // A rollback is running (it awaits loads): wait for it, then look again (rollback() reconciles at its end).
      // Going back to the version it restores is what it does already.
      if (entry.version === this.previousOf(unfinished)) this.store.raiseHighest(entry.name, entry.deployment);
      return;
    }
    if (unfinished && SERVING_NEW.has(unfinished.state) && entry.version === this.previousOf(unfinished)) {
      // The fleet wants the version this box just left (a rollout rolling back): the quick way back.
      this.store.raiseHighest(entry.name, entry.deployment);
      this.rollbackNow(unfinished, 'operator', `the fleet asked for version ${entry.version} again`);
      return;
    }
    if (unfinished) this.supersede(unfinished);
    if (active?.version === entry.version && active.sha256 === entry.sha256) {
      // Already serving it (a re-signed entry, or the fleet re-pinned the running version): nothing to run. A
      // rollout still hears that this device is done with it.
      this.store.raiseHighest(entry.name, entry.deployment);
      if (entry.rollout !== null) {
        this.deps.events.emit({
          kind: 'update.transition', severity: 'info', message: `${entry.name}@${entry.version} already serving`,
          data: { model: entry.name, version: entry.version, previousVersion: entry.version, from: 'committed', to: 'committed', deployment: entry.deployment, rollout: entry.rollout, reason: null, detail: 'already serving this version' },
        });
      }
      return;
    }
    const row = this.store.accept(entry, active?.version ?? null);
    if (!row) return;
    log.info({ model: entry.name, version: entry.version, deployment: entry.deployment, rollout: entry.rollout }, 'deployment accepted');
  }

  /** Rolls a deployment back now; the runner's own row is aborted instead, and its catch rolls back. */
  private rollbackNow(row: UpdateRow, reason: UpdateReason, detail: string): void {
    if (this.current?.id === row.id) this.current.abort.abort(new StepError(reason, detail));
    else this.fire(this.rollback(row, reason, detail), 'rollback');
  }

  /** A newer deployment replaces one in progress: before activation it is abandoned, after it is rolled back. */
  /** @internal commands.ts */
  supersede(row: UpdateRow): void {
    if (this.current?.id === row.id) this.current.abort.abort(new StepError('superseded', 'a newer deployment replaced this one'));
    else if (SERVING_NEW.has(row.state)) this.fire(this.rollback(row, 'superseded', 'a newer deployment replaced this one'), 'rollback');
    else if (!TERMINAL.has(row.state) && row.state !== 'rolling_back') this.move(row, 'failed', { reason: 'superseded', detail: 'a newer deployment replaced this one' });
  }

  private refuse(entry: DesiredModel, reason: string, detail: string): void {
    this.reporter.refused(entry, reason, detail, this.deps.models.active(entry.name)?.version ?? null);
  }


  /** Starts the runner unless it runs; it takes unfinished deployments oldest first, one at a time. */
  private kick(): void {
    if (this.stopped) return;
    if (this.loop) {
      this.again = true;
      return;
    }
    this.loop = this.runLoop().catch((err: unknown) => this.deps.log.error({ err: (err as Error).message }, 'update runner stopped on an error; the next desired state or restart resumes it')).finally(() => {
      this.loop = undefined;
      if (this.again && !this.stopped) {
        this.again = false;
        this.kick();
      }
    });
  }

  private async runLoop(): Promise<void> {
    for (;;) {
      this.again = false;
      // activating is taken too: it rests in the table only when a crash came before the flip (activate() is synchronous).
      const row = this.store.unfinished().find((r) => r.state !== 'probation' && r.state !== 'rolling_back');
      if (!row || this.stopped) return;
      await this.runOne(row);
    }
  }

  private async runOne(start: UpdateRow): Promise<void> {
    const { config, log } = this.deps;
    const abort = new AbortController();
    this.current = { id: start.id, model: start.model, abort };
    let row = start;
    try {
      if (this.store.countAttempt(row.id) > config.update.maxAttempts) {
        throw new StepError('loop_guard', `started ${config.update.maxAttempts} times without finishing; giving up on this deployment`);
      }
      if (row.state === 'idle') row = this.move(row, 'downloading');
      if (row.state === 'downloading') {
        this.steps.fault?.('downloading', row);
        await download(this.steps, row, abort.signal, (received) => this.reporter.progress(row, received));
        abort.signal.throwIfAborted();
        row = this.move(row, 'verifying');
      }
      if (row.state === 'verifying') {
        this.steps.fault?.('verifying', row);
        await verifyAndInstall(this.steps, row);
        abort.signal.throwIfAborted();
        row = this.move(row, 'staging');
      }
      if (row.state === 'staging') {
        this.steps.fault?.('staging', row);
        this.monitor.freezeBaseline(row.model, this.deps.models.active(row.model)?.version, probationPolicy(this.deps.config.update, this.desired?.thresholds ?? {}).minRequests);
        await stage(this.steps, row);
        abort.signal.throwIfAborted();
        await waitForWindow(() => this.desired?.maintenanceWindow ?? null, abort.signal, (next) => {
          const waiting = `waiting for the maintenance window${next ? ` (next ${next.toISOString()})` : ''}`;
          this.reporter.waiting(row, waiting);
        });
        abort.signal.throwIfAborted();
        row = this.move(row, 'activating');
      }
      if (row.state === 'activating') {
        // After a crash before the flip the new version is not loaded in this process: staged again (a no-op when ready).
        await stage(this.steps, row);
        abort.signal.throwIfAborted();
        this.activate(row);
      }
    } catch (err) {
      // An abort carries its own reason (superseded); a stop does not, and leaves the state for boot to resume.
      const reason: unknown = abort.signal.aborted ? abort.signal.reason : undefined;
      await this.failed(row, reason instanceof StepError ? reason : err);
    } finally {
      this.current = undefined;
      this.reporter.done(start.id);
    }
  }

  /** activating → probation: the pointer flips in memory, then the new pointer and state are written together. */
  private activate(start: UpdateRow): void {
    // Re-read: a rollback or removal may have ended this deployment while it was being staged.
    const row = this.store.get(start.id)!;
    if (row.state !== 'activating') throw new StepError('superseded', `the deployment is ${row.state}, no longer activating`);
    const previous = this.deps.models.active(row.model)?.version ?? null;
    const prev = previous === row.version ? row.previousVersion : previous;
    this.steps.fault?.('activating', row);
    this.deps.models.activate(row.model, row.version);
    const moved = this.move(row, 'probation', { pointer: { active: row.version, previous: prev } });
    this.deps.log.info({ model: row.model, version: row.version, previous: prev }, 'new version active; probation started');
    this.startProbation(moved);
    this.steps.fault?.('probation', moved);
  }

  private startProbation(row: UpdateRow): void {
    const policy = probationPolicy(this.deps.config.update, this.desired?.thresholds ?? {});
    // After a restart the previous version has no latencies in this process: the baseline kept at activation serves.
    this.monitor.start(row.model, row.version, this.previousOf(row), policy, undefined, row.baselineP95);
    if (row.baselineP95 === null) this.store.setBaseline(row.id, this.monitor.progress(row.model)?.baselineP95 ?? null);
    this.judgeTimer ??= setInterval(() => this.judge(), JUDGE_INTERVAL_MS);
    this.judgeTimer.unref();
  }

  /** The version this deployment would roll back to: after the flip the pointer's previous is the truth (@internal commands.ts). */
  previousOf(row: UpdateRow): number | null {
    if (row.state === 'probation' || row.state === 'rolling_back' || row.state === 'committed') {
      const p = this.store.pointer(row.model);
      if (p && p.active === row.version) return p.previous;
    }
    return row.previousVersion !== row.version ? row.previousVersion : null;
  }

  private judge(): void {
    const onProbation = this.store.unfinished().filter((r) => r.state === 'probation');
    if (onProbation.length === 0 && this.judgeTimer) {
      clearInterval(this.judgeTimer);
      this.judgeTimer = undefined;
      return;
    }
    for (const row of onProbation) {
      const served = this.deps.models.versionsOf(row.model)?.find((v) => v.version === row.version);
      if (served?.state === 'failed') {
        this.fire(this.rollback(row, 'model_failed', served.error ?? 'the new version stopped serving'), 'rollback');
        continue;
      }
      const verdict = this.monitor.judge(row.model);
      if (verdict.verdict === 'rollback') this.fire(this.rollback(row, verdict.reason, verdict.detail), 'rollback');
      else if (verdict.verdict === 'commit') this.fire(this.commit(row, `${verdict.requests} requests, ${verdict.failures} failed${verdict.p95Ms === null ? '' : `, p95 ${verdict.p95Ms.toFixed(1)} ms`}`), 'commit');
    }
  }

  /** probation → committed: the previous version's sessions go (its files stay for a rollback), older files are deleted. */
  private async commit(row: UpdateRow, detail: string): Promise<void> {
    this.monitor.stop(row.model);
    const previous = this.previousOf(row);
    this.move(row, 'committed', { detail, pointer: { active: row.version, previous } });
    this.deps.log.info({ model: row.model, version: row.version, detail }, 'update committed');
    if (previous !== null) await this.retire(row.model, previous);
    this.gc(row.model);
  }

  /** activating/probation (or an interrupted earlier step) → rolling_back → rolled_back, the previous version serving again. */
  async rollback(row: UpdateRow, reason: UpdateReason, detail: string): Promise<void> {
    const { models, log } = this.deps;
    this.monitor.stop(row.model);
    const prev = this.previousOf(row);
    const rb = this.move(row, 'rolling_back', { reason, detail });
    log.warn({ model: row.model, version: row.version, previous: prev, reason, detail }, 'rolling back');
    try {
      if (prev !== null) {
        if (!models.versionsOf(row.model)?.some((v) => v.version === prev && v.state === 'ready')) {
          const dir = installedVersion(safeVersionDir(this.deps.config.modelRepository, row.model, prev), prev);
          if (!dir) throw new Error(`version ${prev} is no longer on disk`);
          await models.stage(row.model, dir);
        }
        models.activate(row.model, prev);
      }
    } catch (err) {
      log.error({ model: row.model, previous: prev, err: (err as Error).message }, 'cannot bring the previous version back; the new one keeps serving');
      this.move(rb, 'rolled_back', { detail: `${detail}; the previous version could not be loaded: ${(err as Error).message}`, pointer: { active: row.version, previous: null } });
      this.reconcile();
      return;
    }
    // No previous version (a first install): the model goes away, as it was before the update.
    this.move(rb, 'rolled_back', { pointer: { active: prev, previous: null } });
    if (prev === null) await models.unload(row.model, row.version).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'cannot unload'));
    else await this.retire(row.model, row.version);
    this.deleteUnlessNeeded(row.model, row.version);
    this.reconcile(); // a desired state that arrived during the rollback is acted on now
  }

  /** Completes a rollback at boot, before anything is loaded: only the pointer and the files change. */
  private finishRollbackOffline(row: UpdateRow): void {
    const prev = this.previousOf(row);
    this.move(row, 'rolled_back', { pointer: { active: prev, previous: null } });
    this.deleteUnlessNeeded(row.model, row.version);
  }

  private async failed(row: UpdateRow, err: unknown): Promise<void> {
    const { log } = this.deps;
    const current = this.store.get(row.id) ?? row;
    if (this.stopped && !(err instanceof StepError)) return; // stopping: the state stays, boot resumes it
    const reason: UpdateReason = err instanceof StepError ? err.reason : 'internal';
    const detail = (err as Error).message ?? String(err);
    if (TERMINAL.has(current.state)) return;
    log.error({ model: row.model, version: row.version, state: current.state, reason, detail }, 'update step failed');
    if (SERVING_NEW.has(current.state)) return this.rollback(current, reason, detail);
    // A half-downloaded file is kept only for a retry of the same bytes (network trouble); anything else frees the disk.
    if (reason !== 'download_failed') rmSync(partFile(this.deps.config, row), { force: true });
    if (current.state === 'verifying' || current.state === 'staging') {
      // Nothing of the new version serves: discard what was staged; the old version never stopped.
      const rb = this.move(current, 'rolling_back', { reason, detail });
      if (this.deps.models.active(row.model)?.version !== row.version) await this.retire(row.model, row.version);
      this.move(rb, 'rolled_back');
      this.deleteUnlessNeeded(row.model, row.version);
      this.reconcile();
      return;
    }
    this.move(current, 'failed', { reason, detail });
  }

  /** Versions whose files must stay: active, previous, and every deployment still in progress. */
  private deleteUnlessNeeded(model: string, version: number): void {
    if (!this.store.versionsInUse(model).includes(version)) rmSync(safeVersionDir(this.deps.config.modelRepository, model, version), { recursive: true, force: true });
  }

  /** @internal commands.ts */
  async retire(model: string, version: number): Promise<void> {
    if (this.deps.models.active(model)?.version === version) return;
    if (!this.deps.models.versionsOf(model)?.some((v) => v.version === version)) return;
    await this.deps.models.retire(model, version).catch((err: unknown) => this.deps.log.warn({ model, version, err: (err as Error).message }, 'cannot release a retired version'));
    this.monitor.forget(model, version);
  }

  /** Deletes the model's version directories that nothing needs (read now, after any await that came before). */
  private gc(model: string): void {
    collectGarbage(path.join(this.deps.config.modelRepository, model), this.store.versionsInUse(model), this.deps.log);
  }

  /** Writes the transition, then reports it (the event goes through the outbox; a crash in between re-sends it at boot). */
  /** @internal commands.ts */
  move(row: UpdateRow, to: UpdateState, fields: Parameters<UpdateStore['transition']>[2] = {}): UpdateRow {
    const moved = this.store.transition(row.id, to, fields);
    this.reporter.count(moved);
    this.reporter.transition(moved, row.state);
    this.changed();
    return moved;
  }

  /** @internal commands.ts */
  changed(): void {
    try {
      this.deps.onChange?.();
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'cannot refresh the reported state');
    }
  }

  /** rollback / reload / diagnostics from the fleet's cmd topic. */
  async runCommand(message: CmdMessage): Promise<CommandOutcome> {
    // A command delivered at connect waits for boot (the repository loading, a crash settled) before it acts.
    if (message.kind !== 'diagnostics') await this.bootedPromise;
    return runCommand(this, message);
  }

  /** Re-sends transition events the outbox refused (called after each outbox commit). */
  resendUnreported(): void {
    if (this.booted) this.reporter.resendUnreported();
  }

  /** The /status and reported-state summary (reporter.ts). */
  summary(): Record<string, unknown> {
    return this.reporter.summary(this.desired?.revision ?? null);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.abort.abort(new Error('agent stopping'));
    if (this.judgeTimer) clearInterval(this.judgeTimer);
    this.judgeTimer = undefined;
    await this.loop?.catch(() => undefined);
    try {
      this.store.markCleanStop();
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'cannot record the graceful stop; the next boot counts as a crash');
    }
  }
}
