import { cpuBetween, cpuSnapshot, type CpuSnapshot, type CpuUsage } from './cpu.js';
import { isStable, summarise, type LatencySummary } from './stats.js';

/**
 * Closed-loop load in time windows, as perf_analyzer's concurrency mode does it: `concurrency` workers each
 * keep one operation outstanding; after a warm-up, completions are counted in windows until the last three
 * windows agree (stats.isStable) or the window cap is reached. Runs in the process that owns the operation
 * (a bench child), never in the server's.
 */
export interface WindowPlan {
  /** Warm-up before the first window: at least this long and at least `concurrency` completions. */
  warmupMs: number;
  /** A window closes at the first completion after windowMs that also brings it to minRequests... */
  windowMs: number;
  minRequests: number;
  /** ...or at the first completion after maxWindowMs, whatever the count. */
  maxWindowMs: number;
  /** Windows compared by the stability rule (perf_analyzer: 3). */
  stableWindows: number;
  maxWindows: number;
  /** ±% around the mean of the compared windows, for throughput and mean latency (perf_analyzer: 10). */
  stabilityPct: number;
}

export interface WindowResult extends LatencySummary {
  durationMs: number;
  /** Completions per second in the window. */
  throughput: number;
  cpu: CpuUsage;
}

export interface PointResult extends LatencySummary {
  concurrency: number;
  /** Every measured window, in order; the summary merges the last `stableWindows` of them. */
  windows: WindowResult[];
  stable: boolean;
  throughput: number;
  durationMs: number;
  /** Mean CPU over the merged windows. */
  cpu: CpuUsage;
  errors: number;
  firstError: string | undefined;
}

/** An operation's failure: counted, and the first message kept; measurement stops soon after. */
export class OperationError extends Error {}

const MAX_ERRORS_BEFORE_STOP = 5;

/**
 * `drain`: wait for the operations still in flight when the last window closes (the bare worker: at most two
 * runs). An HTTP client passes false and aborts them instead; the requests the server already holds finish
 * during the next point's warm-up, which lasts until that point has `concurrency` completions of its own.
 */
export async function measureClosedLoop(op: () => Promise<void>, concurrency: number, plan: WindowPlan, watchedPid?: number, drain = true): Promise<PointResult> {
  let phase: 'warmup' | 'window' | 'done' = 'warmup';
  let finished!: () => void;
  const done = new Promise<void>((resolve) => (finished = resolve));
  const stop = () => {
    phase = 'done';
    finished();
  };
  // A function, not an inline test: TypeScript would keep `phase` narrowed across the awaits below.
  const over = () => phase === 'done';
  let phaseStart = performance.now();
  let count = 0;
  let latencies: number[] = [];
  let windowCpu: CpuSnapshot = cpuSnapshot(watchedPid);
  const windows: (WindowResult & { latencies: number[] })[] = [];
  let errors = 0;
  let firstError: string | undefined;

  const complete = (ms: number, at: number): void => {
    if (phase === 'done') return;
    count++;
    if (phase === 'warmup') {
      if (at - phaseStart >= plan.warmupMs && count >= concurrency) {
        phase = 'window';
        phaseStart = at;
        count = 0;
        latencies = [];
        windowCpu = cpuSnapshot(watchedPid);
      }
      return;
    }
    latencies.push(ms);
    const elapsed = at - phaseStart;
    if ((elapsed >= plan.windowMs && count >= plan.minRequests) || elapsed >= plan.maxWindowMs) {
      const cpuEnd = cpuSnapshot(watchedPid);
      windows.push({ ...summarise(latencies), durationMs: elapsed, throughput: (count * 1000) / elapsed, cpu: cpuBetween(windowCpu, cpuEnd), latencies });
      phaseStart = at;
      count = 0;
      latencies = [];
      windowCpu = cpuEnd;
      if (isStable(windows, plan.stabilityPct, plan.stableWindows) || windows.length >= plan.maxWindows) stop();
    }
  };

  const worker = async (): Promise<void> => {
    while (!over()) {
      const started = performance.now();
      try {
        await op();
      } catch (err) {
        // Failures of requests abandoned after the last window are not the server's.
        if (over()) break;
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
        if (errors >= MAX_ERRORS_BEFORE_STOP) stop();
        continue;
      }
      const ended = performance.now();
      complete(ended - started, ended);
    }
  };
  const workers = Promise.all(Array.from({ length: concurrency }, worker));
  await (drain ? workers : done);

  const used = windows.slice(-plan.stableWindows);
  const durationMs = used.reduce((a, w) => a + w.durationMs, 0);
  const n = used.reduce((a, w) => a + w.n, 0);
  const weighted = (pick: (c: CpuUsage) => number | undefined): number | undefined => {
    if (durationMs === 0 || used.some((w) => pick(w.cpu) === undefined)) return undefined;
    return used.reduce((a, w) => a + pick(w.cpu)! * w.durationMs, 0) / durationMs;
  };
  return {
    concurrency,
    ...summarise(used.flatMap((w) => w.latencies)),
    windows: windows.map(({ latencies: _drop, ...w }) => w),
    stable: isStable(windows, plan.stabilityPct, plan.stableWindows),
    throughput: durationMs > 0 ? (n * 1000) / durationMs : 0,
    durationMs,
    cpu: { systemBusyPct: weighted((c) => c.systemBusyPct), watchedPct: weighted((c) => c.watchedPct), selfPct: weighted((c) => c.selfPct) ?? 0 },
    errors,
    firstError,
  };
}
