import type { Db } from '../../../shared/src/sqlite.js';
import type { TokenStore } from './fleet-store.js';

/** Operator API tokens and enrollment tokens in SQLite; only sha256 hashes of tokens are stored. */
export class SqliteTokenStore implements TokenStore {
  private readonly count;
  private readonly insertOperator;
  private readonly selectOperator;
  private readonly insertEnrollment;

  constructor(db: Db) {
    this.count = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM operator_tokens');
    this.insertOperator = db.prepare('INSERT INTO operator_tokens (id, token_hash, name, created_at) VALUES (?, ?, ?, ?)');
    this.selectOperator = db.prepare<[string], { id: string; name: string }>('SELECT id, name FROM operator_tokens WHERE token_hash = ? AND revoked_at IS NULL');
    this.insertEnrollment = db.prepare('INSERT INTO enrollment_tokens (token_hash, tags, created_at, expires_at, device_id) VALUES (?, ?, ?, ?, ?)');
  }

  countOperatorTokens(): number {
    return this.count.get()!.n;
  }

  createOperatorToken(row: { id: string; tokenHash: string; name: string; createdAt: string }): void {
    this.insertOperator.run(row.id, row.tokenHash, row.name, row.createdAt);
  }

  findOperatorToken(tokenHash: string): { id: string; name: string } | undefined {
    return this.selectOperator.get(tokenHash);
  }

  createEnrollmentToken(row: { tokenHash: string; tags: Record<string, string>; createdAt: string; expiresAt: string; deviceId: string | null }): void {
    this.insertEnrollment.run(row.tokenHash, JSON.stringify(row.tags), row.createdAt, row.expiresAt, row.deviceId);
  }
}
