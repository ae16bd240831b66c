import type { Logger } from 'pino';
import type { AgentConfig } from '../config/schema.js';
import type { GroupCommitter } from '../outbox/group-commit.js';
import type { TransactionalOutbox } from '../outbox/types.js';
import type { Db } from '../storage/database.js';
import { TelemetryAggregator } from './aggregator.js';
import { startSchedule, validateSchedule, type Schedule } from './schedule.js';
import { createSystemSampler, type SystemSampler } from './system.js';
import type { RequestObserver } from './types.js';

export interface CreateTelemetryOptions {
  db: Db;
  outbox: TransactionalOutbox;
  /** The committer the outbox uses (createOutbox), so counts and the window's outbox row share its commits. */
  committer: GroupCommitter;
  config: Pick<AgentConfig, 'telemetry' | 'dataDir'>;
  log: Pick<Logger, 'error' | 'warn' | 'info' | 'debug'>;
  /** Default: systeminformation (createSystemSampler); only called when config.telemetry.system is on. */
  sampleSystem?: SystemSampler;
  /** Model versions being served: each gets a point in every window, zeros when it had no traffic. */
  listModels?: () => { model: string; version: number }[];
  /** Wall clock, epoch ms. */
  now?: () => number;
}

export interface Telemetry {
  /** Pass to the InferenceService (4th constructor argument). */
  readonly observer: RequestObserver;
  readonly aggregator: TelemetryAggregator;
  /** Starts the config.telemetry.schedule (node-cron) that closes a window on every tick. */
  start(): void;
  /**
   * Stops the schedule and commits the pending counts; they are sent with the next process's first window.
   * Counts that cannot be committed (outbox alarm) are dropped and counted in aggregator.lostRequests.
   */
  stop(): void;
  /**
   * Closes the window now: samples the system, then moves the counts into one outbox row (several when the
   * window does not fit one payload). Resolves with its seq (the first one) and all seqs.
   */
  closeWindow(): Promise<{ seq: number; seqs: number[] }>;
}

/**
 * Telemetry for the composition root (DESIGN §3.5): per-model request counts, failures, latency and queue
 * percentiles, batch sizes, score and class histograms, plus a system sample, sent every interval through
 * the outbox. Throws at once on an invalid config.telemetry.schedule.
 */
export function createTelemetry(options: CreateTelemetryOptions): Telemetry {
  const { config, log } = options;
  validateSchedule(config.telemetry.schedule);
  const aggregator = new TelemetryAggregator({ db: options.db, committer: options.committer, outbox: options.outbox, log, now: options.now });
  const sample = config.telemetry.system ? (options.sampleSystem ?? createSystemSampler({ dataDir: config.dataDir, log })) : undefined;
  let schedule: Schedule | undefined;
  // Windows close one at a time: a manual close during a scheduled one waits for it.
  let chain: Promise<unknown> = Promise.resolve();

  const closeOnce = async (): Promise<{ seq: number; seqs: number[] }> => {
    // Sampled before the transaction: systeminformation is async, and a transaction never awaits.
    const system = sample ? await sample() : null;
    const { seq, seqs } = aggregator.closeWindow(system, options.listModels?.() ?? []);
    return { seq, seqs };
  };

  return {
    observer: aggregator.observer,
    aggregator,
    start() {
      if (schedule) return;
      schedule = startSchedule(config.telemetry.schedule, () => this.closeWindow(), log);
      log.info({ schedule: config.telemetry.schedule, system: config.telemetry.system }, 'telemetry schedule started');
    },
    stop() {
      schedule?.stop();
      schedule = undefined;
      options.committer.flush();
      // With the alarm up (or the flush failing) the counts cannot be made durable: count them as lost.
      aggregator.discardPending();
    },
    closeWindow() {
      const run = chain.then(closeOnce, closeOnce);
      chain = run.catch(() => undefined);
      return run;
    },
  };
}
