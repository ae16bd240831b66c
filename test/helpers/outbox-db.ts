import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { AgentConfigSchema, type AgentConfig } from '../../agent/src/config/schema.js';
import { createOutbox } from '../../agent/src/outbox/create-outbox.js';
import type { GroupCommitter } from '../../agent/src/outbox/group-commit.js';
import type { SqliteOutbox } from '../../agent/src/outbox/sqlite-outbox.js';
import { openDatabase, type Db } from '../../agent/src/storage/database.js';

export interface LogEntry {
  level: 'error' | 'warn' | 'info' | 'debug';
  obj: unknown;
  msg: string | undefined;
}

/** A logger that keeps what it is told, for tests that assert an operator would see a message. */
export function recordingLog(): { log: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at = (level: LogEntry['level']) => (obj: unknown, msg?: string) => {
    entries.push({ level, obj, msg: typeof obj === 'string' ? obj : msg });
  };
  const log = { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), trace: () => undefined, fatal: at('error') };
  return { log: log as unknown as Logger, entries };
}

export type OutboxConfig = AgentConfig['outbox'];

export function outboxConfig(overrides: Partial<OutboxConfig> = {}): OutboxConfig {
  return { ...AgentConfigSchema.parse({}).outbox, ...overrides };
}

export interface OutboxFixture {
  dir: string;
  file: string;
  db: Db;
  outbox: SqliteOutbox;
  committer: GroupCommitter;
  entries: LogEntry[];
  log: Logger;
  /** A second, read-only connection on the same file: what another process (or the next boot) would see. */
  peek<T = Record<string, unknown>>(sql: string, ...params: unknown[]): T[];
  /** Closes outbox, committer and database the way the agent does on stop. */
  shutdown(): Promise<void>;
}

/** Opens (creating) the agent database in `dir` and an outbox on it. */
export function openOutbox(dir: string, overrides: Partial<OutboxConfig> = {}): OutboxFixture {
  const file = path.join(dir, 'agent.db');
  const db = openDatabase(file);
  const { log, entries } = recordingLog();
  const { outbox, committer } = createOutbox({ db, config: outboxConfig(overrides), log });
  let closed = false;
  return {
    dir, file, db, outbox, committer, entries, log,
    peek<T>(sql: string, ...params: unknown[]): T[] {
      const other = new Database(file, { readonly: true, fileMustExist: true });
      try {
        return other.prepare(sql).all(...params) as T[];
      } finally {
        other.close();
      }
    },
    async shutdown() {
      if (closed) return;
      closed = true;
      await outbox.close();
      committer.close();
      db.close();
    },
  };
}

export function tempDir(prefix = 'outpost-outbox-'): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** An event body as the agent queues it (EventMessageSchema without v/deviceId/seq). */
export function eventBody(n: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { ts: new Date().toISOString(), kind: 'test.tick', severity: 'info', message: `tick ${n}`, data: { n, ...extra } };
}

/** Resolves on the committer's next successful commit. */
export function nextCommit(committer: GroupCommitter): Promise<void> {
  return new Promise((resolve) => {
    const off = committer.onCommit(() => {
      off();
      resolve();
    });
  });
}
