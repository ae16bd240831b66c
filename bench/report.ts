import type { Environment } from './environment.js';
import type { PointResult } from './measure.js';
import { round } from './stats.js';

/** The bench's one result document (written as JSON) and its Markdown rendering. */

export type RowKind = 'bare' | 'bare-batched' | 'preprocess' | 'http';

export interface Row {
  kind: RowKind;
  model: string;
  /** session.run | session.run ×N | preprocessImage | kserve-json | kserve-binary | detect */
  path: string;
  batching: 'off' | 'on' | '-';
  agent: string | undefined;
  concurrency: number;
  /** Operations per second (for bare-batched: images per second). */
  throughput: number;
  unit: 'req/s' | 'img/s' | 'runs/s';
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p95Ms: number;
  p99Ms: number;
  n: number;
  windows: number;
  stable: boolean;
  agentCpuPct: number | undefined;
  clientCpuPct: number | undefined;
  systemBusyPct: number | undefined;
  /** CPU used by processes outside the bench during the point, % of one core: machine busy − agent (or worker) − client. */
  otherCpuPct: number | undefined;
  /** throughput ÷ the bare session.run peak of the same model (a). */
  tputVsBare: number | undefined;
  /** p50 at c=1 ÷ bare session.run p50 at c=1 (only on c=1 rows). */
  p50VsBareC1: number | undefined;
  errors: number;
  mismatches: number;
  firstError: string | undefined;
  statusCounts: Record<string, number> | undefined;
  windowDetail: PointResult['windows'];
}

export interface OverheadRow {
  model: string;
  path: string;
  batching: string;
  bareP50Ms: number;
  bareTput: number;
  c1P50Ms: number;
  /** p50 at c=1 minus bare p50 at c=1 (for detect: minus bare p50 + preprocess p50 as well, see pipeline). */
  addedP50Ms: number;
  p50RatioC1: number;
  tputRatioC1: number;
  peakTput: number;
  peakConcurrency: number;
  peakTputRatio: number;
  /** detect only: against (a)+(e), the serial preprocess → run pipeline. */
  pipeline: { p50Ms: number; tput: number; addedP50Ms: number; peakTputRatio: number } | undefined;
}

export interface AgentReport {
  label: string;
  models: string[];
  batching: { enabled: boolean; maxQueueDelayMs: number; effective: Record<string, { maxBatchSize: unknown; dynamicBatch: unknown; provider: unknown }> };
  config: Record<string, unknown>;
  coldStartMs: number;
  readyPolls: number;
  modelLoadMs: Record<string, number | undefined>;
  rssAtReadyMiB: number | undefined;
  rssAfterMiB: number | undefined;
  peakRssMiB: number | undefined;
  stop: { exitCode: number | null; signal: string | null; stopMs: number } | undefined;
  probes: Record<string, unknown>;
  logFile: string;
}

export interface BenchReport {
  bench: 'outpost-agent';
  schema: 1;
  mode: string;
  ok: boolean;
  failures: string[];
  warnings: string[];
  notes: string[];
  startedAt: string;
  finishedAt: string;
  wallClockS: number;
  options: Record<string, unknown>;
  environment: Environment & { sessionOptions: Record<string, unknown> };
  detector: { model: string; kind: 'real' | 'demo'; file: string; image: ImageInfo };
  demoDetector: { model: string; image: ImageInfo } | undefined;
  bare: Record<string, { sessionCreateMs: number; output: { name: string; dims: number[] }; reference: unknown; dynamicBatch: boolean }>;
  agents: AgentReport[];
  rows: Row[];
  overhead: OverheadRow[];
  addedLatency: { model: string; agent: string; batching: string; kserveBinaryP50Ms: number; bareP50Ms: number; addedP50Ms: number }[];
  /** Bare session.run p50 of the detector at the start and again at the end of the run. */
  drift: { model: string; p50BeforeMs: number; p50AfterMs: number; changePct: number };
  loadAverageAtEnd: number[];
  memory: { demoOnlyAgentRssAtReadyMiB: number | undefined; demoOnlyAgentRssAfterWarmRequestsMiB: number | undefined; demoOnlyAgentPeakRssMiB: number | undefined };
}

export interface ImageInfo {
  path: string;
  source: string;
  width: number;
  height: number;
  bytes: number;
  sha256: string;
}

const f = (v: number | undefined, digits?: number): string => {
  if (v === undefined || !Number.isFinite(v)) return '–';
  return digits !== undefined ? v.toFixed(digits) : String(round(v));
};

export function renderMarkdown(r: BenchReport): string {
  const e = r.environment;
  const out: string[] = [];
  out.push(`## Outpost agent bench (${r.mode}) — ${r.startedAt}`, '');
  out.push(`- **Machine**: ${e.cpuModel}, nproc ${e.nproc}, ${e.memoryGiB} GiB, ${e.kernel}; load average at start ${e.loadAverageAtStart.join(' / ')}${e.loadWarning ? ` ⚠ ${e.loadWarning}` : ''}`);
  out.push(`- **Software**: Node ${e.node}, onnxruntime-node ${e.onnxruntimeNode}, sharp ${e.sharp} / libvips ${e.libvips} (sharp concurrency ${e.sharpConcurrency}), UV_THREADPOOL_SIZE ${e.uvThreadpoolSize}`);
  out.push(`- **Session options** (agent and bare alike): ${JSON.stringify(e.sessionOptions)}`);
  out.push(`- **Detector**: \`${r.detector.model}\` — ${r.detector.kind === 'real' ? `the real YOLOv8n INT8 (${r.detector.file}), fixed batch 1` : 'the demo detector (real YOLOv8n not found)'}; image ${r.detector.image.width}×${r.detector.image.height} JPEG, ${Math.round(r.detector.image.bytes / 1024)} KiB (${r.detector.image.source})`);
  if (r.demoDetector) out.push(`- **Batching off/on** runs use \`${r.demoDetector.model}\` (dynamic batch; image ${r.demoDetector.image.width}×${r.demoDetector.image.height}, ${Math.round(r.demoDetector.image.bytes / 1024)} KiB)${r.detector.kind === 'real' ? ': the real detector has a fixed batch of 1, so batching cannot apply to it' : ''}`);
  out.push(`- **Drift check**: bare session.run p50 of \`${r.drift.model}\` ${f(r.drift.p50BeforeMs)} ms at the start, ${f(r.drift.p50AfterMs)} ms at the end (${r.drift.changePct >= 0 ? '+' : ''}${r.drift.changePct.toFixed(0)} %); load average at the end ${r.loadAverageAtEnd.join(' / ')}`);
  out.push(`- **Wall clock**: ${r.wallClockS.toFixed(0)} s; windows of ${r.options.windowMs} ms (≥ ${r.options.minRequests} requests), stable when 3 consecutive windows agree within ±${r.options.stabilityPct} % (throughput and mean latency), at most ${r.options.maxWindows} windows`);
  out.push('');

  out.push('### Throughput and latency', '');
  out.push('| Model | Path | Batching | c | Rate | p50 ms | p95 ms | p99 ms | × bare rate | × bare p50 (c=1) | Agent CPU % | Client CPU % | Other CPU % | Windows | n |');
  out.push('|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const row of r.rows) {
    out.push(`| ${row.model} | ${row.path} | ${row.batching} | ${row.concurrency} | ${f(row.throughput)} ${row.unit} | ${f(row.p50Ms)} | ${f(row.p95Ms)} | ${f(row.p99Ms)} | ${f(row.tputVsBare, 2)} | ${f(row.p50VsBareC1, 2)} | ${f(row.agentCpuPct, 0)} | ${f(row.clientCpuPct, 0)} | ${f(row.otherCpuPct, 0)} | ${row.windows}${row.stable ? '' : ' (unstable)'} | ${row.n}${row.errors + row.mismatches > 0 ? ` ⚠ ${row.errors} errors` : ''} |`);
  }
  out.push('');
  out.push('Rate: requests (or session runs) per second over the merged last 3 windows. Agent CPU: % of one core (200 % = both cores) used by the agent process, or for session.run/preprocessImage rows by the bare worker doing the work; Client CPU: the load generator; Other CPU: everything else on the machine (other users’ work) — above 25 % the point is disturbed.', '');

  if (r.overhead.length > 0) {
    out.push('### Overhead against bare session.run (a)', '');
    out.push('| Model | Path | Batching | bare p50 ms | c=1 p50 ms | added p50 ms | p50 ratio c=1 | rate ratio c=1 | peak rate (c) | peak ratio | vs preprocess+run: added p50 ms / peak ratio |');
    out.push('|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const o of r.overhead) {
      out.push(`| ${o.model} | ${o.path} | ${o.batching} | ${f(o.bareP50Ms)} | ${f(o.c1P50Ms)} | ${f(o.addedP50Ms)} | ${f(o.p50RatioC1, 2)} | ${f(o.tputRatioC1, 2)} | ${f(o.peakTput)} (${o.peakConcurrency}) | ${f(o.peakTputRatio, 2)} | ${o.pipeline ? `${f(o.pipeline.addedP50Ms)} / ${f(o.pipeline.peakTputRatio, 2)}` : '–'} |`);
    }
    out.push('');
    out.push('Peak ratio: best HTTP rate over all c ÷ best bare session.run rate (c=1 or 2). For detect, “preprocess+run” is the serial floor (a)+(e): p50 = p50(a) + p50(e), rate = 1 / (1/rate(a) + 1/rate(e)).', '');
  }

  if (r.addedLatency.length > 0) {
    out.push('### Tiny model added latency (KServe binary, c=1)', '');
    out.push('| Model | Agent | Batching | HTTP p50 ms | bare p50 ms | added p50 ms |');
    out.push('|---|---|---|--:|--:|--:|');
    for (const a of r.addedLatency) out.push(`| ${a.model} | ${a.agent} | ${a.batching} | ${f(a.kserveBinaryP50Ms, 3)} | ${f(a.bareP50Ms, 3)} | ${f(a.addedP50Ms, 3)} |`);
    out.push('');
  }

  out.push('### Cold start and memory', '');
  out.push('| Agent | Models | Batching | Cold start ms (spawn → ready 200, warmed) | Model load ms | RSS at ready MiB | RSS at end MiB | Peak RSS MiB |');
  out.push('|---|---|---|--:|---|--:|--:|--:|');
  for (const a of r.agents) {
    const loads = Object.entries(a.modelLoadMs).map(([m, ms]) => `${m} ${f(ms, 0)}`).join(', ');
    out.push(`| ${a.label} | ${a.models.join(', ')} | ${a.batching.enabled ? `on (${a.batching.maxQueueDelayMs} ms)` : 'off'} | ${f(a.coldStartMs, 0)} | ${loads} | ${f(a.rssAtReadyMiB, 0)} | ${f(a.rssAfterMiB, 0)} | ${f(a.peakRssMiB, 0)} |`);
  }
  out.push('');
  if (r.notes.length > 0) out.push('### Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  if (r.warnings.length > 0) out.push('### Warnings', '', ...r.warnings.map((w) => `- ${w}`), '');
  out.push(r.ok ? '**Result: OK** — every measured response was 200 and every detect answer matched the bare pipeline.' : `**Result: FAILED**\n\n${r.failures.map((x) => `- ${x}`).join('\n')}`);
  return out.join('\n') + '\n';
}
