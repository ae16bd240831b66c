import type { RolloutCase } from './rollout-bench.js';
import { round } from './stats.js';
import type { SwapPhase, SwapResult } from './swap-bench.js';
import type { UpdatesBenchOptions } from './updates-options.js';
import { reportTail } from './results-file.js';

/** The updates section's result document (written as JSON) and its Markdown rendering. */

export interface UpdatesEnvironment {
  cpuModel: string;
  nproc: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  versions: Record<string, string>;
  tempDir: string;
  loadAverageAtStart: [number, number, number];
}

export interface TargetCheck {
  target: string;
  subject: string;
  value: string;
  met: boolean;
}

export interface UpdatesReport {
  bench: 'outpost-updates';
  schema: 1;
  mode: 'full' | 'quick';
  ok: boolean;
  failures: string[];
  warnings: string[];
  notes: string[];
  startedAt: string;
  finishedAt: string;
  wallClockS: number;
  options: UpdatesBenchOptions;
  environment: UpdatesEnvironment;
  model: { name: string; bytes: number; width: number; layers: number } | undefined;
  rollouts: RolloutCase[];
  swap: SwapResult | undefined;
  targets: TargetCheck[];
}

const f = (v: number | undefined, digits?: number): string => {
  if (v === undefined || !Number.isFinite(v)) return '–';
  return digits !== undefined ? v.toFixed(digits) : String(round(v));
};
const mbps = (bytesPerS: number | undefined) => (bytesPerS === undefined ? '–' : f(bytesPerS / 1e6));
const ratio = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '–' : `${v.toFixed(2)}×`);

export function renderUpdatesMarkdown(r: UpdatesReport): string {
  const out: string[] = [];
  const e = r.environment;
  out.push(`# Outpost updates bench (${r.mode}) — ${r.startedAt}`, '');
  out.push(`Machine: ${e.cpuModel}, ${e.nproc} cores (nproc), ${e.memoryGiB} GiB, ${e.kernel}, Node ${e.node}. ${Object.entries(e.versions).map(([k, v]) => `${k} ${v}`).join(', ')}. Load average at start ${e.loadAverageAtStart.join(' ')}. Wall clock ${r.wallClockS.toFixed(0)} s.`, '');

  if (r.rollouts.length > 0 && r.model) {
    out.push(`## Rollout of \`${r.model.name}\` (${f(r.model.bytes / 1e6)} MB) to simulated devices, loopback`, '');
    out.push(
      '| Devices | Reps | Enroll s | Connect s | Rollout → first byte ms | Rollout → all committed ms | Rollout MB/s served | Baseline → first byte ms | Baseline → all downloaded ms | Baseline MB/s | Rollout ÷ baseline | Errors |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    );
    for (const c of r.rollouts) {
      const m = c.median;
      const errors = c.reps.reduce((a, x) => a + x.baseline.errors + (x.rollout?.errors ?? 0), 0);
      out.push(
        `| ${c.devices} | ${c.reps.length} | ${f(c.enrollSeconds, 1)} | ${f(c.connectSeconds, 1)} | ${f(m.rolloutFirstByteMs)} | ${f(m.rolloutTotalMs)} | ${mbps(m.rolloutBytesPerS)} | ` +
          `${f(m.baselineFirstByteMs)} | ${f(m.baselineTotalMs)} | ${mbps(m.baselineBytesPerS)} | ${ratio(m.ratio)} | ${c.error ? `ERROR: ${c.error}` : errors > 0 ? `${errors} ⚠` : '0'} |`,
      );
    }
    out.push('');
    out.push('Medians over the reps (each rep rolls out a new version, right after its own baseline). Rollout times run from the fleet\'s createdAt to its finishedAt (state completed, read back with GET /api/v1/rollouts/{id}); “first byte” is the first artifact byte a device received. Baseline: the same devices GET the same artifact at once with plain HTTP and Basic auth (no MQTT, no rollout), hashing as they read; its end is the last download hashed. MB/s = artifact bytes received by all devices ÷ (first byte → last byte).', '');
    out.push('| Devices | Rep | Version | Create request ms | → desired first / p50 / max ms | → first byte ms | → last byte ms | → last commit PUBACK ms | → completed ms | Download p50 / max ms | Baseline ms | Ratio |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const c of r.rollouts) {
      c.reps.forEach((x, i) => {
        const ro = x.rollout;
        out.push(`| ${c.devices} | ${i + 1} | ${x.version} | ${f(ro?.createRequestMs)} | ${f(ro?.desiredMinMs)} / ${f(ro?.desiredP50Ms)} / ${f(ro?.desiredMaxMs)} | ${f(ro?.firstByteMs)} | ${f(ro?.lastByteMs)} | ${f(ro?.lastCommitMs)} | ${f(ro?.totalMs)} | ${f(ro?.downloadP50Ms)} / ${f(ro?.downloadMaxMs)} | ${f(x.baseline.totalMs)} | ${ratio(x.ratio)} |`);
      });
    }
    out.push('');
  }

  const s = r.swap;
  if (s) {
    out.push(`## Request latency during hot swaps: \`${s.model}\` 1 ↔ 2, KServe JSON, ${s.clients} clients`, '');
    if (s.error) out.push(`ERROR: ${s.error}`, '');
    out.push('| Phase | s | Requests | req/s | p50 ms | p95 ms | p99 ms | max ms | non-2xx | Served by version | Agent CPU % | Load CPU % | Other CPU % | Agent event-loop delay p99 / max ms |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|');
    const row = (name: string, p: SwapPhase) => {
      const versions = Object.entries(p.versions).map(([v, n]) => `v${v}: ${n}`).join(', ');
      out.push(
        `| ${name} | ${f(p.durationS, 1)} | ${p.requests} | ${f(p.ratePerS)} | ${f(p.latency.p50Ms)} | ${f(p.latency.p95Ms)} | ${f(p.latency.p99Ms)} | ${f(p.latency.maxMs)} | ` +
          `${p.non2xx}${p.mismatches > 0 ? ` (+${p.mismatches} wrong answers)` : ''} | ${versions} | ${f(p.agentCpuPct, 0)} | ${f(p.loadCpuPct, 0)} | ${f(p.otherCpuPct, 0)}${(p.otherCpuPct ?? 0) > 25 ? ' ⚠' : ''} | ${f(p.eventLoopDelayP99Ms)} / ${f(p.eventLoopDelayMaxMs)} |`,
      );
    };
    for (const p of s.phases) row(`round ${p.round}: ${p.label === 'swaps' ? 'during swaps' : 'steady'}`, p);
    if (s.pooled) {
      row('**all steady**', s.pooled.steady);
      row(`**all during swaps** (${s.swaps.length} swaps)`, s.pooled.swaps);
    }
    out.push('');
    out.push(`p99 during swaps ÷ steady p99 (pooled): **${ratio(s.p99Ratio)}** (p50: ${ratio(s.p50Ratio)}); steady p99 moved ${f(s.steadyDriftPct, 0)} % from the first round to the last. CPU: % of one core; Agent = this process (agent, its session threads, the swap calls), Load = the client process, Other = the rest of the machine (⚠ above 25 %).`, '');
    if (s.stage) {
      const sync = (key: 'stageSyncMs' | 'retireSyncMs') => {
        const v = s.swaps.map((x) => x[key]);
        return `${f(Math.max(...v))}`;
      };
      out.push('| Swap step | n | p50 ms | p99 ms | max ms | longest synchronous part ms |', '|---|---:|---:|---:|---:|---:|');
      out.push(`| models.stage (read, hash, session thread, warm-up) | ${s.stage.n} | ${f(s.stage.p50Ms)} | ${f(s.stage.p99Ms)} | ${f(s.stage.maxMs)} | ${sync('stageSyncMs')} |`);
      if (s.activate) out.push(`| models.activate (pointer flip) | ${s.activate.n} | ${f(s.activate.p50Ms)} | ${f(s.activate.p99Ms)} | ${f(s.activate.maxMs)} | ${f(s.activate.maxMs)} |`);
      if (s.retire) out.push(`| models.retire (drain + release) | ${s.retire.n} | ${f(s.retire.p50Ms)} | ${f(s.retire.p99Ms)} | ${f(s.retire.maxMs)} | ${sync('retireSyncMs')} |`);
      out.push('', 'Synchronous part: the time a call took before it returned its promise, during which the agent could not serve.', '');
    }
    if (s.overlap) {
      out.push('| Requests of the swap windows, in flight during | n | p50 ms | p95 ms | p99 ms | max ms | p99 ÷ steady p99 |', '|---|---:|---:|---:|---:|---:|---:|');
      const steadyP99 = s.pooled?.steady.latency.p99Ms;
      for (const [name, l] of [['a stage', s.overlap.stage], ['a retire (no stage)', s.overlap.retire], ['neither (pointer flip, between steps)', s.overlap.neither]] as const) {
        out.push(`| ${name} | ${l.n} | ${f(l.p50Ms)} | ${f(l.p95Ms)} | ${f(l.p99Ms)} | ${f(l.maxMs)} | ${ratio(steadyP99 === undefined ? undefined : l.p99Ms / steadyP99)} |`);
      }
      out.push('');
    }
  }

  out.push(...reportTail(r, 'Targets (issue 5 item 12)'));
  out.push(r.ok ? '**Result: OK** — every rollout completed with every device committed, every download matched its signed hash, and no request failed during the swaps.' : '**Result: FAILED** (see above)');
  return `${out.join('\n')}\n`;
}
