import type { Logger } from 'pino';
import type { DesiredModel } from '../../../shared/src/mqtt/messages.js';
import type { FleetEvents } from '../link/fleet-events.js';
import type { AgentMetrics } from '../metrics/agent-metrics.js';
import type { ProbationMonitor } from './probation.js';
import type { UpdateState } from './states.js';
import type { UpdateRow, UpdateStore } from './update-store.js';

export interface ReporterDeps {
  store: UpdateStore;
  events: FleetEvents;
  log: Logger;
  metrics?: Pick<AgentMetrics, 'updateTransitions' | 'updateDownloadedBytes'> | undefined;
  monitor: ProbationMonitor;
}

/**
 * What the update machine tells the world: one update.transition event per transition (through the outbox; a row
 * is marked reported once the outbox holds its event, so a refused or crashed report is sent again), download
 * progress (an update.progress event per quarter of a large artifact), and the summary /status and the reported
 * state show.
 */
export class TransitionReporter {
  /** Rows whose latest transition event is on its way into the outbox. */
  private readonly reporting = new Set<number>();
  private readonly progressOf = new Map<number, { received: number; waitingFor: string | null }>();
  private resending = false;
  /** Entries refused before they were accepted (bad signature, expired …), so each is reported once. */
  private readonly refusedKeys = new Set<string>();

  constructor(private readonly deps: ReporterDeps) {}

  /**
   * A desired entry refused before it was accepted: reported as idle → failed, once per distinct entry. Not
   * persisted: an entry that failed its checks must not move the replay counter (a forged 2^53 would brick updates).
   */
  refused(entry: DesiredModel, reason: string, detail: string, previousVersion: number | null): void {
    const key = `${entry.name}#${entry.deployment}#${reason}#${entry.signature.slice(0, 24)}#${entry.sha256.slice(0, 12)}`;
    if (this.refusedKeys.has(key)) return;
    this.refusedKeys.add(key);
    this.deps.log.warn({ model: entry.name, version: entry.version, deployment: entry.deployment, reason, detail }, 'deployment refused');
    this.deps.events.emit({
      kind: 'update.transition', severity: 'error', message: `${entry.name}@${entry.version} refused: ${detail}`.slice(0, 2000),
      data: { model: entry.name, version: entry.version, previousVersion, from: 'idle', to: 'failed', deployment: entry.deployment, rollout: entry.rollout, reason, detail: detail.slice(0, 2000) },
    });
  }

  /** `reload`: refused entries are reported again if they come again. */
  clearRefused(): void {
    this.refusedKeys.clear();
  }

  transition(row: UpdateRow, from: UpdateState): void {
    const { store, events, log } = this.deps;
    const severity = row.state === 'failed' || row.state === 'rolled_back' || row.state === 'rolling_back' ? 'error' : 'info';
    const why = row.reason && (row.state === 'failed' || row.state.startsWith('roll')) ? `: ${row.reason}${row.detail ? ` (${row.detail})` : ''}` : '';
    const data = {
      model: row.model, version: row.version, previousVersion: row.previousVersion, from, to: row.state, deployment: row.deployment,
      rollout: row.rollout, reason: row.state === 'committed' ? null : row.reason, detail: row.detail,
    };
    this.reporting.add(row.id);
    events.emit({ kind: 'update.transition', severity, message: `${row.model}@${row.version} ${from} → ${row.state}${why}`.slice(0, 2000), data }, (queued) => {
      this.reporting.delete(row.id);
      if (!queued) return; // refused (disk full): resendUnreported() tries again after the next outbox commit
      try {
        store.markReported(row.id, row.state);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'cannot mark a transition as reported; it is sent again');
      }
    });
  }

  /** Counts a transition (outpost_update_transitions_total). */
  count(row: UpdateRow): void {
    this.deps.metrics?.updateTransitions.inc({ model: row.model, state: row.state, reason: row.state === 'committed' ? '' : row.reason ?? '' });
  }

  /**
   * Re-sends the transition events the outbox refused (it refuses while its disk is full): called after each
   * outbox commit, so they go out once the outbox takes messages again rather than at the next boot.
   */
  resendUnreported(): void {
    if (this.resending) return;
    const rows = this.deps.store.unreported().filter((r) => !this.reporting.has(r.id));
    if (rows.length === 0) return;
    this.resending = true;
    try {
      for (const row of rows) this.transition(row, row.reportedState ?? 'idle');
    } finally {
      this.resending = false;
    }
  }

  /** Download progress: /status and the reported state show it; the fleet gets an update.progress event at each quarter. */
  progress(row: UpdateRow, received: number): void {
    const before = this.progressOf.get(row.id)?.received ?? row.receivedBytes;
    this.progressOf.set(row.id, { received, waitingFor: null });
    this.deps.store.setReceived(row.id, received);
    if (received > before) this.deps.metrics?.updateDownloadedBytes.inc(received - before);
    const quarter = (n: number) => (row.size > 0 ? Math.floor((4 * n) / row.size) : 4);
    if (row.size >= 1024 * 1024 && quarter(received) > quarter(before) && quarter(received) < 4) {
      this.deps.events.emit({
        kind: 'update.progress', severity: 'info', message: `${row.model}@${row.version}: ${quarter(received) * 25} % downloaded`,
        data: { model: row.model, version: row.version, deployment: row.deployment, rollout: row.rollout, receivedBytes: received, sizeBytes: row.size },
      });
    }
  }

  /** A staged version waits for its maintenance window (shown in /status). */
  waiting(row: UpdateRow, what: string): void {
    this.progressOf.set(row.id, { received: row.size, waitingFor: what });
  }

  /** The runner finished with a row: its in-memory progress goes. */
  done(id: number): void {
    this.progressOf.delete(id);
  }

  /** The /status and reported-state summary: per model what serves, what is kept, and the latest deployment. */
  summary(desiredRevision: number | null): Record<string, unknown> {
    const { store, monitor } = this.deps;
    const models: Record<string, unknown> = {};
    for (const p of store.pointers()) {
      const row = store.latest(p.model);
      const progress = row ? this.progressOf.get(row.id) : undefined;
      const watch = monitor.progress(p.model);
      models[p.model] = {
        active: p.active, previous: p.previous, highestDeployment: p.highestDeployment,
        update: row && {
          version: row.version, state: row.state, deployment: row.deployment, rollout: row.rollout, reason: row.reason, detail: row.detail,
          attempts: row.attempts, updatedAt: new Date(row.updatedAt).toISOString(),
          ...(row.state === 'downloading' ? { receivedBytes: progress?.received ?? row.receivedBytes, sizeBytes: row.size } : {}),
          ...(progress?.waitingFor ? { waitingFor: progress.waitingFor } : {}),
          ...(row.state === 'probation' && watch ? { probation: watch } : {}),
        },
      };
    }
    const busy = store.unfinished()[0];
    return { state: busy?.state ?? 'idle', desiredRevision, models };
  }
}

