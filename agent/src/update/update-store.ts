import type { DesiredMessage, DesiredModel } from '../../../shared/src/mqtt/messages.js';
import type { Db } from '../storage/database.js';
import { installedVersion } from './install.js';
import { assertTransition, TERMINAL, type UpdateReason, type UpdateState } from './states.js';
import { safeVersionDir } from './verify.js';

/** One accepted deployment of one model, as the `updates` table holds it (migration 3). */
export interface UpdateRow {
  id: number;
  model: string;
  version: number;
  sha256: string;
  size: number;
  deployment: number;
  rollout: string | null;
  entry: DesiredModel;
  state: UpdateState;
  /** Last state whose update.transition event the outbox accepted. */
  reportedState: UpdateState | null;
  previousVersion: number | null;
  attempts: number;
  probationBoots: number;
  reason: UpdateReason | null;
  detail: string | null;
  receivedBytes: number;
  probationStartedAt: number | null;
  /** The previous version's p95 (ms) when this version was activated; null when it had served too little. */
  baselineP95: number | null;
  createdAt: number;
  updatedAt: number;
}

export interface Pointer {
  model: string;
  active: number | null;
  previous: number | null;
  highestDeployment: number;
}

interface RawRow {
  id: number; model: string; version: number; sha256: string; size: number; deployment: number; rollout: string | null;
  entry: string; state: string; reported_state: string | null; previous_version: number | null; attempts: number;
  probation_boots: number; reason: string | null; detail: string | null; received_bytes: number;
  probation_started_at: number | null; baseline_p95: number | null; created_at: number; updated_at: number;
}

function toRow(r: RawRow): UpdateRow {
  return {
    id: r.id, model: r.model, version: r.version, sha256: r.sha256, size: r.size, deployment: r.deployment, rollout: r.rollout,
    entry: JSON.parse(r.entry) as DesiredModel, state: r.state as UpdateState, reportedState: r.reported_state as UpdateState | null,
    previousVersion: r.previous_version, attempts: r.attempts, probationBoots: r.probation_boots, reason: r.reason as UpdateReason | null,
    detail: r.detail, receivedBytes: r.received_bytes, probationStartedAt: r.probation_started_at, baselineP95: r.baseline_p95, createdAt: r.created_at, updatedAt: r.updated_at,
  };
}

/**
 * The update machine's SQLite state. Every write is one synchronous transaction (synchronous=FULL), made
 * before the side effect it announces; nothing here awaits.
 */
export class UpdateStore {
  constructor(private readonly db: Db, private readonly now: () => number = Date.now) {}

  /**
   * Accepts a deployment: raises the model's highest deployment counter and creates its row in state idle, in
   * one transaction, so a kill between "accepted" and "recorded" cannot happen (U3: the counter survives).
   * Returns undefined when the counter is not above the highest accepted (a replay or a redelivery).
   */
  accept(entry: DesiredModel, previousVersion: number | null): UpdateRow | undefined {
    const now = this.now();
    return this.db.transaction(() => {
      const pointer = this.pointer(entry.name);
      if (pointer && entry.deployment <= pointer.highestDeployment) return undefined;
      this.db.prepare(
        `INSERT INTO model_pointer (model, active, previous, highest_deployment, updated_at) VALUES (?, NULL, NULL, ?, ?)
         ON CONFLICT (model) DO UPDATE SET highest_deployment = excluded.highest_deployment, updated_at = excluded.updated_at`,
      ).run(entry.name, entry.deployment, now);
      const info = this.db.prepare(
        `INSERT INTO updates (model, version, sha256, size, deployment, rollout, entry, state, previous_version, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, 'idle', ?, ?, ?)`,
      ).run(entry.name, entry.version, entry.sha256, entry.size, entry.deployment, entry.rollout, JSON.stringify(entry), previousVersion, now, now);
      return this.get(Number(info.lastInsertRowid))!;
    })();
  }

  /**
   * The same version and bytes under a newer deployment (re-signed, or a new rollout of it): the row in progress
   * takes the new entry, counter and rollout id, and the highest counter rises, in one transaction.
   */
  adopt(id: number, entry: DesiredModel): UpdateRow {
    return this.db.transaction(() => {
      this.db.prepare('UPDATE updates SET deployment = ?, rollout = ?, entry = ?, updated_at = ? WHERE id = ?').run(entry.deployment, entry.rollout, JSON.stringify(entry), this.now(), id);
      this.raiseHighest(entry.name, entry.deployment);
      return this.get(id)!;
    })();
  }

  /** A new attempt at a failed deployment: a fresh row (state idle) with the same signed entry. */
  retry(row: UpdateRow): UpdateRow {
    const now = this.now();
    const info = this.db.prepare(
      `INSERT INTO updates (model, version, sha256, size, deployment, rollout, entry, state, previous_version, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, 'idle', ?, ?, ?)`,
    ).run(row.model, row.version, row.sha256, row.size, row.deployment, row.rollout, JSON.stringify(row.entry), row.previousVersion, now, now);
    return this.get(Number(info.lastInsertRowid))!;
  }

  /** Only raises the highest accepted counter (a re-signed entry for what already serves: nothing to do). */
  raiseHighest(model: string, deployment: number): void {
    this.db.prepare(
      `INSERT INTO model_pointer (model, active, previous, highest_deployment, updated_at) VALUES (?, NULL, NULL, ?, ?)
       ON CONFLICT (model) DO UPDATE SET highest_deployment = max(highest_deployment, excluded.highest_deployment), updated_at = excluded.updated_at`,
    ).run(model, deployment, this.now());
  }

  get(id: number): UpdateRow | undefined {
    const r = this.db.prepare('SELECT * FROM updates WHERE id = ?').get(id) as RawRow | undefined;
    return r && toRow(r);
  }

  /** The newest deployment of a model, if any. */
  latest(model: string): UpdateRow | undefined {
    const r = this.db.prepare('SELECT * FROM updates WHERE model = ? ORDER BY id DESC LIMIT 1').get(model) as RawRow | undefined;
    return r && toRow(r);
  }

  /** Deployments not in a terminal state, oldest first (resumed at boot). */
  unfinished(): UpdateRow[] {
    const rows = this.db.prepare(`SELECT * FROM updates WHERE state NOT IN ('committed', 'rolled_back', 'failed') ORDER BY id`).all() as RawRow[];
    return rows.map(toRow).filter((r) => !TERMINAL.has(r.state));
  }

  /** Rows whose last transition event may not have reached the outbox. */
  unreported(): UpdateRow[] {
    const rows = this.db.prepare('SELECT * FROM updates WHERE reported_state IS NOT state ORDER BY id').all() as RawRow[];
    return rows.map(toRow);
  }

  recent(limit: number): UpdateRow[] {
    return (this.db.prepare('SELECT * FROM updates ORDER BY id DESC LIMIT ?').all(limit) as RawRow[]).map(toRow);
  }

  /** Moves a row to `to` (checked against the table), with the fields that go with it, in one transaction. */
  transition(id: number, to: UpdateState, fields: { reason?: UpdateReason | null; detail?: string | null; pointer?: Omit<Pointer, 'highestDeployment' | 'model'> } = {}): UpdateRow {
    const now = this.now();
    return this.db.transaction(() => {
      const row = this.get(id);
      if (!row) throw new Error(`update ${id} does not exist`);
      assertTransition(row.state, to);
      this.db.prepare(
        `UPDATE updates SET state = ?, reason = coalesce(?, reason), detail = coalesce(?, detail), updated_at = ?,
           probation_started_at = CASE WHEN ? = 'probation' THEN ? ELSE probation_started_at END WHERE id = ?`,
      ).run(to, fields.reason ?? null, fields.detail?.slice(0, 2000) ?? null, now, to, now, id);
      if (fields.pointer) this.setPointer(row.model, fields.pointer.active, fields.pointer.previous);
      return this.get(id)!;
    })();
  }

  setPointer(model: string, active: number | null, previous: number | null): void {
    this.db.prepare(
      `INSERT INTO model_pointer (model, active, previous, highest_deployment, updated_at) VALUES (?, ?, ?, 0, ?)
       ON CONFLICT (model) DO UPDATE SET active = excluded.active, previous = excluded.previous, updated_at = excluded.updated_at`,
    ).run(model, active, previous, this.now());
  }

  /**
   * One more start of this deployment (first run or a resume at boot); the loop guard reads it. A resume after a
   * graceful stop is not counted: only starts that a crash interrupted are.
   */
  countAttempt(id: number): number {
    this.db.prepare('UPDATE updates SET attempts = attempts + 1 - clean_stop, clean_stop = 0, updated_at = ? WHERE id = ?').run(this.now(), id);
    return this.get(id)!.attempts;
  }

  /** The agent came up while this deployment was on probation: a crash-loop candidate, unless it had stopped gracefully. */
  countProbationBoot(id: number): number {
    this.db.prepare('UPDATE updates SET probation_boots = probation_boots + 1 - clean_stop, clean_stop = 0, probation_started_at = ?, updated_at = ? WHERE id = ?').run(this.now(), this.now(), id);
    return this.get(id)!.probationBoots;
  }

  /** A graceful stop: the unfinished deployments' next boot is not a crash. */
  markCleanStop(): void {
    this.db.prepare(`UPDATE updates SET clean_stop = 1 WHERE state NOT IN ('committed', 'rolled_back', 'failed')`).run();
  }

  setBaseline(id: number, p95: number | null): void {
    this.db.prepare('UPDATE updates SET baseline_p95 = ? WHERE id = ?').run(p95, id);
  }

  setReceived(id: number, bytes: number): void {
    this.db.prepare('UPDATE updates SET received_bytes = ? WHERE id = ?').run(bytes, id);
  }

  setDetail(id: number, detail: string | null): void {
    this.db.prepare('UPDATE updates SET detail = ?, updated_at = ? WHERE id = ?').run(detail?.slice(0, 2000) ?? null, this.now(), id);
  }

  markReported(id: number, state: UpdateState): void {
    this.db.prepare('UPDATE updates SET reported_state = ? WHERE id = ?').run(state, id);
  }

  /** Versions of a model whose files must stay: active, previous, and every deployment still in progress. */
  versionsInUse(model: string): number[] {
    const p = this.pointer(model);
    const inProgress = this.unfinished().filter((r) => r.model === model).map((r) => r.version);
    return [p?.active, p?.previous, ...inProgress].filter((v): v is number => typeof v === 'number');
  }

  pointer(model: string): Pointer | undefined {
    const r = this.db.prepare('SELECT model, active, previous, highest_deployment AS highestDeployment FROM model_pointer WHERE model = ?').get(model) as Pointer | undefined;
    return r;
  }

  pointers(): Pointer[] {
    return this.db.prepare('SELECT model, active, previous, highest_deployment AS highestDeployment FROM model_pointer ORDER BY model').all() as Pointer[];
  }

  saveDesired(message: DesiredMessage): void {
    this.db.prepare(
      `INSERT INTO desired_state (id, revision, body) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, body = excluded.body`,
    ).run(message.revision, JSON.stringify(message));
  }

  loadDesired(): DesiredMessage | undefined {
    const r = this.db.prepare('SELECT body FROM desired_state WHERE id = 1').get() as { body: string } | undefined;
    return r ? (JSON.parse(r.body) as DesiredMessage) : undefined;
  }
}

/** The versions ModelManager loads for a fleet-managed model at boot: the active one, and the previous while on probation. */
export function bootSelection(store: UpdateStore, repositoryDir: string, model: string): { active: number; keep: number[] } | undefined {
  const pointer = store.pointer(model);
  if (!pointer || pointer.active === null) return undefined;
  if (!installedVersion(safeVersionDir(repositoryDir, model, pointer.active), pointer.active)) return undefined;
  const latest = store.latest(model);
  const keep = latest?.state === 'probation' && pointer.previous !== null ? [pointer.previous] : [];
  return { active: pointer.active, keep };
}
