import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from 'pino';
import type { FleetMetrics } from '../metrics/fleet-metrics.js';
import { isoAt, type Clock } from '../storage/clock.js';
import type { IngestStore, PruneCounts } from '../storage/fleet-store.js';

const DAY_MS = 86_400_000;
/** Minute 7 of every hour: off the top of the hour, when other housekeeping tends to run. */
export const RETENTION_SCHEDULE = '7 * * * *';

export interface Retention {
  /** Deletes what is older than retentionDays now; also run by the hourly job. */
  runOnce(): PruneCounts;
  start(): void;
  stop(): Promise<void>;
}

/** The hourly retention job (node-cron): model/system points, events, command results and dedup records. */
export function createRetention(deps: { ingest: IngestStore; retentionDays: number; clock: Clock; metrics: FleetMetrics; log: Logger }): Retention {
  let task: ScheduledTask | undefined;
  const runOnce = (): PruneCounts => {
    const cutoff = isoAt(deps.clock.now() - deps.retentionDays * DAY_MS);
    const counts = deps.ingest.prune(cutoff);
    for (const [table, n] of Object.entries(counts)) if (n > 0) deps.metrics.retentionDeleted.inc({ table }, n);
    deps.log.debug({ cutoff, ...counts }, 'retention pruned old rows');
    return counts;
  };
  return {
    runOnce,
    start() {
      if (task) return;
      task = cron.schedule(RETENTION_SCHEDULE, () => {
        try {
          runOnce();
        } catch (err) {
          deps.log.error({ err: (err as Error).message }, 'retention job failed; it runs again next hour');
        }
      }, { name: 'fleet-retention', noOverlap: true });
    },
    async stop() {
      await task?.destroy();
      task = undefined;
    },
  };
}
