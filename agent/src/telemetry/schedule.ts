import cron, { type Logger as CronLogger } from 'node-cron';
import type { Logger } from 'pino';

export interface Schedule {
  stop(): void;
}

/**
 * Throws a clear error when `expression` is not a node-cron expression (5 fields, or 6 with seconds first).
 * `key` names the config key in the message.
 */
export function validateSchedule(expression: string, key = 'telemetry.schedule'): void {
  const v = cron.validateDetailed(expression);
  if (v.valid) return;
  const why = v.errors.map((e) => `${e.field}${e.value !== undefined ? ` "${e.value}"` : ''}: ${e.message}`).join('; ');
  throw new Error(`${key}: "${expression}" is not a valid cron expression (${why || 'unparseable'}); e.g. "*/10 * * * * *" = every 10 s`);
}

/**
 * Runs `job` on a node-cron schedule. A run that is still busy when the next one is due is skipped, not
 * stacked; a failing run is logged and the schedule goes on.
 */
export function startSchedule(expression: string, job: () => Promise<unknown>, log: Pick<Logger, 'error' | 'warn'>, name = 'telemetry-window'): Schedule {
  validateSchedule(expression);
  const task = cron.createTask(
    expression,
    async () => {
      try {
        await job();
      } catch (err) {
        log.error({ err: (err as Error).message, schedule: name }, 'scheduled job failed');
      }
    },
    { name, noOverlap: true, logger: quietLogger(log) },
  );
  void task.start();
  return {
    stop() {
      void task.destroy();
    },
  };
}

/** node-cron's own messages (missed or overlapping runs) go to our log instead of the console. */
function quietLogger(log: Pick<Logger, 'error' | 'warn'>): CronLogger {
  return {
    info: () => undefined,
    debug: () => undefined,
    warn: (message) => log.warn({ source: 'node-cron' }, message),
    error: (message) => log.error({ source: 'node-cron', err: message instanceof Error ? message.message : message }, 'node-cron error'),
  };
}
