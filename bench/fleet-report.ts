import type { OutboxBenchRow } from './outbox.js';
import type { FleetBenchOptions } from './fleet-options.js';
import type { BrokerRun } from './fleet-scenario.js';
import type { StepResult } from './fleet-load.js';
import { round } from './stats.js';
import { reportTail } from './results-file.js';

/** The fleet section's result document (written as JSON) and its Markdown rendering. */

export interface FleetEnvironment {
  cpuModel: string;
  nproc: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  versions: { aedes: string; mqtt: string; betterSqlite3: string; mosquitto: string | undefined };
  /** Where fleet.db and the outbox files live, and its filesystem (fsync cost depends on it). */
  tempDir: string;
  tempFs: string;
  /** This (load) process's open-file limit. */
  nofile: string;
  loadAverageAtStart: [number, number, number];
}

export interface TargetCheck {
  target: string;
  subject: string;
  value: string;
  met: boolean;
}

export interface FleetReport {
  bench: 'outpost-fleet';
  schema: 1;
  mode: 'full' | 'quick';
  ok: boolean;
  failures: string[];
  warnings: string[];
  notes: string[];
  startedAt: string;
  finishedAt: string;
  wallClockS: number;
  options: FleetBenchOptions;
  environment: FleetEnvironment;
  outbox: OutboxBenchRow[] | undefined;
  runs: BrokerRun[];
  targets: TargetCheck[];
}

/** A step during which processes outside the bench used more than this (% of one core) is marked ⚠ and warned about. */
export const DISTURBED_OTHER_CPU_PCT = 25;

/** Sustained: stored everything it was offered (≥ 95 %), drained, nothing lost, p99 within the limit. */
export function sustained(s: StepResult, maxP99Ms: number): boolean {
  return s.drained && s.lost === 0 && s.delay.p99Ms <= maxP99Ms && s.storedPerS >= 0.95 * s.offeredPerS;
}

export function highestSustained(run: BrokerRun, maxP99Ms: number): StepResult | undefined {
  let best: StepResult | undefined;
  for (const s of run.steps) {
    if (!sustained(s, maxP99Ms)) break;
    best = s;
  }
  return best;
}

const f = (v: number | undefined, digits?: number): string => {
  if (v === undefined || Number.isNaN(v)) return '–';
  if (digits !== undefined) return v.toFixed(digits);
  return String(round(v));
};

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || a === 0 ? '–' : `${(b / a).toFixed(2)}×`;
}

export function renderFleetMarkdown(r: FleetReport): string {
  const out: string[] = [];
  const e = r.environment;
  out.push(`# Outpost fleet bench (${r.mode})`, '');
  out.push(`Machine: ${e.cpuModel}, ${e.nproc} cores (nproc), ${e.memoryGiB} GiB, ${e.kernel}, Node ${e.node}. aedes ${e.versions.aedes}, mqtt.js ${e.versions.mqtt}, better-sqlite3 ${e.versions.betterSqlite3}, Mosquitto ${e.versions.mosquitto ?? 'absent'}. Temp dir on ${e.tempFs}. Open files (load process): ${e.nofile}. Load average at start ${e.loadAverageAtStart.join(' ')}.`, '');

  if (r.outbox) {
    out.push('## Outbox (agent/src/outbox, real SQLite file)', '');
    out.push('| Case | synchronous | In flight | Rows | Rows/s | Commits | Rows/commit | Ack p50 ms | Ack p99 ms |', '|---|---|---:|---:|---:|---:|---:|---:|---:|');
    for (const o of r.outbox) {
      out.push(`| ${o.case} | ${o.synchronous} | ${o.inFlight} | ${o.rows} | ${o.rowsPerSecond} | ${o.commits} | ${o.meanRowsPerCommit} | ${o.ackP50Ms ?? '–'} | ${o.ackP99Ms ?? '–'} |`);
    }
    const notes = [...new Set(r.outbox.map((o) => o.note).filter((n) => n !== ''))];
    if (notes.length > 0) out.push('', ...notes.map((n) => `Note: ${n}`));
    out.push('');
  }

  const steps = r.runs.flatMap((run) => run.steps.map((s) => ({ run, s })));
  if (steps.length > 0) {
    out.push(`## Fleet ingest: ${r.options.devices} devices in one load process, \`events\` QoS 1, ×1 = 1 msg / ${r.options.baseIntervalS} s per device`, '');
    out.push(
      '| Broker | Step | Target msg/s | Offered msg/s | Stored msg/s | Delay p50 ms | p99 ms | max ms | PUBACK p99 ms | Fleet RSS MiB | Broker RSS MiB | Fleet CPU % | Broker CPU % | Load CPU % | Other CPU % | Lost | Dup | Drain s |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    );
    for (const { run, s } of steps) {
      out.push(
        `| ${run.label} | ${s.label} (${f(s.durationS)} s) | ${f(s.ratePerS)} | ${f(s.offeredPerS)} | ${f(s.storedPerS)} | ${f(s.delay.p50Ms)} | ${f(s.delay.p99Ms)} | ${f(s.delay.maxMs)} | ${f(s.ackP99Ms)} | ` +
          `${f(s.fleetRssMiB, 0)} | ${run.broker === 'aedes' ? '(in fleet)' : f(s.brokerRssMiB, 1)} | ${f(s.fleetCpuPct, 0)} | ${f(s.brokerCpuPct, 0)} | ${f(s.loadCpuPct, 0)} | ${f(s.otherCpuPct, 0)}${(s.otherCpuPct ?? 0) > DISTURBED_OTHER_CPU_PCT ? ' ⚠' : ''} | ${s.lost} | ${s.duplicates} | ${f(s.drainSeconds, 1)}${s.drained ? '' : ' (not drained)'} |`,
      );
    }
    out.push('');
    for (const run of r.runs) out.push(`- ${run.label}: stopped because ${run.stoppedBecause}.${run.error ? ` ERROR: ${run.error}` : ''}`);
    out.push('');
  }

  const runs = r.runs.filter((x) => x.steps.length > 0 || x.error);
  if (runs.length > 0) {
    const a = r.runs.find((x) => x.broker === 'aedes');
    const m = r.runs.find((x) => x.broker === 'mosquitto');
    const both = a !== undefined && m !== undefined;
    out.push('## aedes vs Mosquitto, same load, same run', '');
    out.push(`| | ${runs.map((x) => x.label).join(' | ')} |${both ? ' Mosquitto ÷ aedes |' : ''}`, `|---|${runs.map(() => '---:').join('|')}|${both ? '---:|' : ''}`);
    const row = (name: string, get: (x: BrokerRun) => number | undefined, digits?: number) => {
      out.push(`| ${name} | ${runs.map((x) => f(get(x), digits)).join(' | ')} |${both ? ` ${ratio(get(a), get(m))} |` : ''}`);
    };
    const best = (x: BrokerRun) => highestSustained(x, r.options.maxP99Ms);
    const first = (x: BrokerRun) => x.steps[0];
    row(`Enroll ${r.options.devices} devices, s`, (x) => x.enrollment?.seconds, 1);
    row(`Connect ${r.options.devices} devices at ${r.options.connectRatePerS}/s, s`, (x) => x.connect?.seconds, 1);
    row('Connect p99, ms', (x) => x.connect?.p99Ms, 0);
    row('×1 delay p50, ms', (x) => first(x)?.delay.p50Ms);
    row('×1 delay p99, ms', (x) => first(x)?.delay.p99Ms);
    row(`Highest sustained step (p99 ≤ ${r.options.maxP99Ms} ms), ×`, (x) => best(x)?.multiplier);
    row('… its stored msg/s', (x) => best(x)?.storedPerS, 0);
    row('… its delay p99, ms', (x) => best(x)?.delay.p99Ms);
    row('Fleet RSS, devices connected, MiB', (x) => x.fleet?.rssAfterConnectMiB, 0);
    row('Fleet peak RSS (whole run), MiB', (x) => x.fleet?.peakRssMiB, 0);
    row('Broker process peak RSS, MiB', (x) => x.brokerProcess?.peakRssMiB, 1);
    row('Fleet + broker peak RSS, MiB', (x) => (x.fleet?.peakRssMiB === undefined ? undefined : x.fleet.peakRssMiB + (x.brokerProcess?.peakRssMiB ?? 0)), 0);
    row('Lost (acked, not stored), all steps', (x) => x.steps.reduce((n, s) => n + s.lost, 0));
    row('Duplicates (fleet counter), all steps', (x) => x.steps.reduce((n, s) => n + s.duplicates, 0));
    row('Device disconnects during the load', (x) => x.link.closes);
    out.push('');
  }

  out.push(...reportTail(r, 'Targets (issue 4)'));
  return `${out.join('\n')}\n`;
}
