import type { Db } from '../../../shared/src/sqlite.js';
import type { IngestHandler, IngestOutcome } from './ingest.js';

/**
 * Group commit for the embedded broker's ingest. A device's PUBACK must mean "stored", and a synchronous=FULL
 * commit per message costs one fsync on the event loop the broker shares (≈ 0.24 ms here, 1–10 ms on SD/eMMC),
 * which capped the fleet near 1,000 msg/s with p99 over a second. Messages that arrive in the same turn of the
 * event loop (one socket read holds many PUBLISH packets, and many devices' reads land together) are handled in
 * ONE transaction: each message's own transaction becomes a savepoint inside it, and every callback (hence
 * every PUBACK) runs only after the outer COMMIT returned. A failed COMMIT fails the whole batch: nothing in it
 * is acknowledged, so the devices resend. Callbacks run in submission order, which keeps each device's PUBACKs
 * in the order it published.
 *
 * INVARIANT: no callback is called before the transaction holding its message committed.
 */
export interface BatchedIngest {
  submit(topic: string, payload: Buffer, done: (stored: boolean) => void): void;
  /** Commits what is waiting now (used at stop). */
  flush(): void;
}

export function batchedIngest(db: Db, ingest: IngestHandler, opts: { maxBatch?: number } = {}): BatchedIngest {
  const maxBatch = opts.maxBatch ?? 500;
  let queue: { topic: string; payload: Buffer; done: (stored: boolean) => void }[] = [];
  let scheduled = false;

  const runBatch = db.transaction((batch: typeof queue): IngestOutcome[] => batch.map((m) => ingest(m.topic, m.payload)));

  function flush(): void {
    scheduled = false;
    if (queue.length === 0) return;
    const batch = queue;
    queue = [];
    let outcomes: IngestOutcome[];
    try {
      outcomes = runBatch(batch);
    } catch {
      // The COMMIT itself failed (disk full, I/O error): nothing in the batch is durable. ingest() already
      // counted and logged what it could; withholding every PUBACK makes the devices resend.
      outcomes = batch.map(() => 'store-failed');
    }
    for (let i = 0; i < batch.length; i++) batch[i]!.done(outcomes[i] !== 'store-failed');
  }

  return {
    submit(topic, payload, done) {
      queue.push({ topic, payload, done });
      if (queue.length >= maxBatch) flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    flush,
  };
}
