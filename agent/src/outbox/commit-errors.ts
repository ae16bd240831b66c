import Database from 'better-sqlite3';

/**
 * Whether a failed group commit may be retried, read from SqliteError.code (never from the message text).
 *
 * Retryable — the transaction was rolled back cleanly and nothing of it is on disk, so its durability is
 * KNOWN (not written) and committing the same kind of work again later claims nothing false:
 * - SQLITE_FULL: the disk (or max_page_count) is full; space may come back (logs rotated, files removed).
 * - SQLITE_BUSY and its extended codes: another connection held the write lock past the busy timeout.
 *
 * Everything else is sticky until restart, SQLITE_IOERR* above all: after a failed fsync the kernel may have
 * dropped the dirty pages and a later fsync can succeed without them (the 2018 "fsyncgate" lesson), so
 * whether the failed commit is on disk is UNKNOWN and no later success can vouch for it. Constraint errors
 * and non-SQLite errors are bugs: retrying them would fail the same way.
 */
export function isRetryableCommitError(err: unknown): boolean {
  if (!(err instanceof Database.SqliteError)) return false;
  return err.code === 'SQLITE_FULL' || err.code === 'SQLITE_BUSY' || err.code.startsWith('SQLITE_BUSY_');
}
