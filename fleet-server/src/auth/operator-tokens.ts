import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../storage/clock.js';
import type { TokenStore } from '../storage/fleet-store.js';
import { writeSecretFile } from './secret-file.js';

/** Operators' tokens: `opt_` + 32 random bytes base64url. Only their sha256 is stored. */
export const ADMIN_TOKEN_FILE = 'admin-token';

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

export function newOperatorToken(): string {
  return `opt_${randomBytes(32).toString('base64url')}`;
}

/**
 * On first start (no operator token yet) creates one and writes it to <dataDir>/admin-token (0600). The file
 * is written before the row, so a failure in between leaves no working token nobody knows: the next start
 * sees no rows and makes a new one. The token itself is never logged, only where it is.
 */
export function ensureAdminToken(deps: { tokens: TokenStore; dataDir: string; clock: Clock; log: Logger }): { file: string; created: boolean } {
  const file = path.join(deps.dataDir, ADMIN_TOKEN_FILE);
  if (deps.tokens.countOperatorTokens() > 0) return { file, created: false };
  const token = newOperatorToken();
  writeSecretFile(file, `${token}\n`);
  deps.tokens.createOperatorToken({ id: `tok-${randomBytes(6).toString('hex')}`, tokenHash: sha256Hex(token), name: 'admin', createdAt: isoAt(deps.clock.now()) });
  deps.log.info({ file }, 'created the first operator token; it is in this file (mode 0600), use it as "Authorization: Bearer <token>"');
  return { file, created: true };
}
