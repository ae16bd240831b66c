import type { Logger } from 'pino';
import type { AgentConfig } from '../config/schema.js';
import type { Db } from '../storage/database.js';
import { GroupCommitter, type CommitTimers } from './group-commit.js';
import { commitProbe } from './outbox-store.js';
import { SqliteOutbox } from './sqlite-outbox.js';

export interface CreateOutboxOptions {
  /** The agent database, opened with storage/database.ts (migration 2 holds the outbox tables). */
  db: Db;
  config: AgentConfig['outbox'];
  log: Pick<Logger, 'error' | 'warn' | 'info'>;
  timers?: CommitTimers;
  /** Wall clock, epoch ms. */
  now?: () => number;
  /** Retry delays after a disk-full/busy commit failure, ms (defaults 1000 doubling to 30 000; see group-commit.ts). */
  retryMinMs?: number;
  retryMaxMs?: number;
}

/**
 * The outbox and the group committer it shares with the telemetry aggregator, for the composition root.
 * Shut down in this order: telemetry.stop(), outbox.close(), committer.close(), then close the database.
 */
export function createOutbox(options: CreateOutboxOptions): { outbox: SqliteOutbox; committer: GroupCommitter } {
  const { db, config, log } = options;
  const committer = new GroupCommitter(db, {
    groupCommitMs: config.groupCommitMs, groupCommitRows: config.groupCommitRows, log, timers: options.timers,
    probe: commitProbe(db), retryMinMs: options.retryMinMs, retryMaxMs: options.retryMaxMs,
  });
  const outbox = new SqliteOutbox(db, committer, { maxRows: config.maxRows, maxBytes: config.maxBytes, maxAttempts: config.maxAttempts, log, now: options.now });
  return { outbox, committer };
}
