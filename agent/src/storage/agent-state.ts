import type { Db } from './database.js';

export interface ModelVersionRow {
  name: string;
  version: number;
  state: string;
  provider: string | null;
  error: string | null;
  load_ms: number | null;
  updated_at: string;
}

export interface CounterRow {
  name: string;
  version: number;
  requests: number;
  failures: number;
}

/**
 * The agent's own state in SQLite: model versions it loaded (and how that went) and lifetime request
 * counters. Counters are added up in memory and flushed in one transaction (flush()), so a request costs no fsync.
 */
export class AgentStateStore {
  private readonly pending = new Map<string, { name: string; version: number; requests: number; failures: number }>();
  private readonly upsertModel;
  private readonly addCounts;

  constructor(private readonly db: Db) {
    this.upsertModel = db.prepare(
      `INSERT INTO model_versions (name, version, state, provider, error, load_ms, updated_at) VALUES (@name, @version, @state, @provider, @error, @load_ms, @updated_at)
       ON CONFLICT (name, version) DO UPDATE SET state = excluded.state, provider = excluded.provider, error = excluded.error, load_ms = excluded.load_ms, updated_at = excluded.updated_at`,
    );
    this.addCounts = db.prepare(
      `INSERT INTO request_counters (name, version, requests, failures) VALUES (@name, @version, @requests, @failures)
       ON CONFLICT (name, version) DO UPDATE SET requests = requests + excluded.requests, failures = failures + excluded.failures`,
    );
  }

  recordModel(row: Omit<ModelVersionRow, 'updated_at'>): void {
    this.upsertModel.run({ ...row, updated_at: new Date().toISOString() });
  }

  models(): ModelVersionRow[] {
    return this.db.prepare('SELECT * FROM model_versions ORDER BY name, version').all() as ModelVersionRow[];
  }

  count(name: string, version: number, ok: boolean): void {
    const key = `${name}\u0000${version}`;
    let p = this.pending.get(key);
    if (!p) this.pending.set(key, (p = { name, version, requests: 0, failures: 0 }));
    p.requests++;
    if (!ok) p.failures++;
  }

  /** Writes the counts gathered since the last flush in one transaction. */
  flush(): void {
    if (this.pending.size === 0) return;
    const rows = [...this.pending.values()];
    this.db.transaction(() => {
      for (const r of rows) this.addCounts.run(r);
    })();
    // Cleared only once committed: a failed flush (disk full, busy) keeps the counts for the next one.
    this.pending.clear();
  }

  /** Lifetime counters, including what is not flushed yet. */
  counters(): CounterRow[] {
    const stored = this.db.prepare('SELECT name, version, requests, failures FROM request_counters ORDER BY name, version').all() as CounterRow[];
    for (const p of this.pending.values()) {
      const row = stored.find((r) => r.name === p.name && r.version === p.version);
      if (row) {
        row.requests += p.requests;
        row.failures += p.failures;
      } else stored.push({ ...p });
    }
    return stored;
  }
}
