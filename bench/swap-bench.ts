import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pino from 'pino';
import { createAgent, type Agent } from '../agent/src/agent.js';
import { loadConfig } from '../agent/src/config/load.js';
import { installedVersion } from '../agent/src/update/install.js';
import { buildCatalog } from '../models/catalog.js';
import { buildManifest } from '../models/manifest.js';
import { SIMPLE_V2_OFFSET, SIMPLE_WIDTH } from '../models/simple.js';
import { ask, forkChild } from './children.js';
import { cpuBetween, cpuSnapshot } from './cpu.js';
import { summarise, type LatencySummary } from './stats.js';
import type { UpdatesBenchOptions } from './updates-options.js';
import { epochMs, type SwapLoadStart, type SwapPhaseResult } from './updates-protocol.js';

/**
 * The swap part of the updates section (issue 5 item 12): an in-process agent (createAgent, real onnxruntime
 * sessions, real HTTP on 127.0.0.1 port 0) serving the generated `simple` version 1, a KServe JSON load (open
 * loop at a camera-like rate by default, or closed loop) from a child process (bench/swap-load.ts), and rounds of two phases: steady state, then a window in which
 * this process swaps simple 1 ↔ 2 with the calls the update machine makes (models.stage(name, dir) → activate →
 * retire of the previous version). The rounds interleave the two kinds of phase so that a change in the
 * machine's speed (other work on a shared VM) lands on both; the ratio is taken over the pooled requests.
 * Version 2 is installed into the repository after boot, as the update machine installs a download, so the
 * agent starts with version 1 only.
 */
const MODEL = 'simple';
const CPUS = os.cpus().length;

export interface SwapPhase {
  label: 'steady' | 'swaps';
  /** 1-based round; 0 for the pooled rows. */
  round: number;
  durationS: number;
  requests: number;
  ratePerS: number;
  latency: LatencySummary;
  non2xx: number;
  statusCounts: Record<string, number>;
  /** model_version of the 200 answers → count: both versions answer during the swaps. */
  versions: Record<string, number>;
  mismatches: number;
  firstError: string | undefined;
  /** % of one core: this process (the agent and its session threads), the load child, everything else. */
  agentCpuPct: number | undefined;
  loadCpuPct: number | undefined;
  otherCpuPct: number | undefined;
  /** The agent's event loop (this process) over the phase, from monitorEventLoopDelay. */
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
}

export interface SwapTiming {
  from: number;
  to: number;
  /** Epoch ms when stage() was called; the steps follow each other without a gap. */
  at: number;
  stageMs: number;
  /** The part of the call that ran before it returned its promise: it blocked the agent's event loop. */
  stageSyncMs: number;
  activateMs: number;
  retireMs: number;
  retireSyncMs: number;
}

export interface SwapResult {
  model: string;
  clients: number;
  /** Every measured phase, round by round. */
  phases: SwapPhase[];
  /** All steady phases and all swap phases, their requests pooled (CPU and event-loop figures: time-weighted means / maxima). */
  pooled: { steady: SwapPhase; swaps: SwapPhase } | undefined;
  /**
   * The swap windows' requests by the step they were in flight during: a stage (load, warm-up), a retire (and no
   * stage), or only the pointer flip and the moments between steps.
   */
  overlap: { stage: LatencySummary; retire: LatencySummary; neither: LatencySummary } | undefined;
  swaps: SwapTiming[];
  stage: LatencySummary | undefined;
  activate: LatencySummary | undefined;
  retire: LatencySummary | undefined;
  /** p99 during swaps ÷ steady p99 (the target: ≤ maxP99Factor), and the same for p50. */
  p99Ratio: number | undefined;
  p50Ratio: number | undefined;
  /** Last round's steady p99 vs the first round's, %: how far the machine's speed moved during the part. */
  steadyDriftPct: number | undefined;
  error: string | undefined;
}

export interface SwapContext {
  opts: UpdatesBenchOptions;
  tmp: string;
  loadModule: string;
  log(msg: string): void;
}

/** The generated simple versions 1 and 2 (the catalog's bytes and manifests, as make-models writes them). */
function writeSimpleVersions(dir: string): void {
  for (const entry of buildCatalog().filter((e) => e.name === MODEL)) {
    const vdir = path.join(dir, String(entry.version));
    mkdirSync(vdir, { recursive: true });
    writeFileSync(path.join(vdir, 'model.onnx'), entry.onnx);
    writeFileSync(path.join(vdir, 'manifest.json'), `${JSON.stringify(buildManifest(entry.name, entry.version, entry.onnx, entry.manifest), null, 2)}\n`);
  }
}

function requestBody(): { body: string; expected: Record<string, number[]> } {
  const a = Array.from({ length: SIMPLE_WIDTH }, (_, i) => i);
  const b = Array.from({ length: SIMPLE_WIDTH }, () => 1);
  const body = JSON.stringify({
    inputs: [
      { name: 'INPUT0', shape: [1, SIMPLE_WIDTH], datatype: 'INT32', data: a },
      { name: 'INPUT1', shape: [1, SIMPLE_WIDTH], datatype: 'INT32', data: b },
    ],
  });
  const sum = a.map((x, i) => x + b[i]!);
  return { body, expected: { '1': sum, '2': sum.map((x) => x + SIMPLE_V2_OFFSET) } };
}

interface MeasuredPhase {
  phase: SwapPhase;
  latenciesMs: number[];
  sentAt: number[];
}

async function phase(child: ChildProcess, start: SwapLoadStart, label: SwapPhase['label'], round: number, during: () => Promise<void>): Promise<MeasuredPhase> {
  const eld = monitorEventLoopDelay({ resolution: 5 });
  const c0 = cpuSnapshot(child.pid);
  eld.enable();
  await ask(child, start);
  await during();
  const r = await ask<SwapPhaseResult>(child, { type: 'stop' });
  eld.disable();
  const cpu = cpuBetween(c0, cpuSnapshot(child.pid));
  const durationS = (r.stoppedAt - r.startedAt) / 1000;
  const non2xx = Object.entries(r.statusCounts).filter(([st]) => !/^2\d\d$/.test(st)).reduce((a, [, n]) => a + n, 0);
  return {
    latenciesMs: r.latenciesMs,
    sentAt: r.sentAt,
    phase: {
      label, round, durationS, requests: r.latenciesMs.length, ratePerS: r.latenciesMs.length / durationS, latency: summarise(r.latenciesMs),
      non2xx, statusCounts: r.statusCounts, versions: r.versions, mismatches: r.mismatches, firstError: r.firstError,
      agentCpuPct: cpu.selfPct, loadCpuPct: cpu.watchedPct,
      otherCpuPct: cpu.systemBusyPct === undefined || cpu.watchedPct === undefined ? undefined : Math.max(0, cpu.systemBusyPct * CPUS - cpu.selfPct - cpu.watchedPct),
      eventLoopDelayP99Ms: eld.percentile(99) / 1e6, eventLoopDelayMaxMs: eld.max / 1e6,
    },
  };
}

/** Several phases of one kind as one: requests pooled, counts summed, CPU time-weighted, event-loop delay at its worst. */
function pool(measured: MeasuredPhase[]): SwapPhase {
  const phases = measured.map((m) => m.phase);
  const durationS = phases.reduce((a, p) => a + p.durationS, 0);
  const requests = phases.reduce((a, p) => a + p.requests, 0);
  const add = (pick: (p: SwapPhase) => Record<string, number>) => {
    const out: Record<string, number> = {};
    for (const p of phases) for (const [k, n] of Object.entries(pick(p))) out[k] = (out[k] ?? 0) + n;
    return out;
  };
  const weighted = (pick: (p: SwapPhase) => number | undefined) => (phases.some((p) => pick(p) === undefined) ? undefined : phases.reduce((a, p) => a + pick(p)! * p.durationS, 0) / durationS);
  return {
    label: phases[0]!.label, round: 0, durationS, requests, ratePerS: requests / durationS, latency: summarise(measured.flatMap((m) => m.latenciesMs)),
    non2xx: phases.reduce((a, p) => a + p.non2xx, 0), statusCounts: add((p) => p.statusCounts), versions: add((p) => p.versions),
    mismatches: phases.reduce((a, p) => a + p.mismatches, 0), firstError: phases.find((p) => p.firstError)?.firstError,
    agentCpuPct: weighted((p) => p.agentCpuPct), loadCpuPct: weighted((p) => p.loadCpuPct), otherCpuPct: weighted((p) => p.otherCpuPct),
    eventLoopDelayP99Ms: Math.max(...phases.map((p) => p.eventLoopDelayP99Ms)), eventLoopDelayMaxMs: Math.max(...phases.map((p) => p.eventLoopDelayMaxMs)),
  };
}

function byStep(measured: MeasuredPhase[], swaps: SwapTiming[]): NonNullable<SwapResult['overlap']> {
  const stages = swaps.map((x) => [x.at, x.at + x.stageMs] as const);
  const retires = swaps.map((x) => {
    const from = x.at + x.stageMs + x.activateMs;
    return [from, from + x.retireMs] as const;
  });
  const hits = (intervals: (readonly [number, number])[], from: number, to: number) => intervals.some(([a, b]) => a < to && b > from);
  const out = { stage: [] as number[], retire: [] as number[], neither: [] as number[] };
  for (const m of measured) {
    m.latenciesMs.forEach((ms, i) => {
      const sent = m.sentAt[i]!;
      (hits(stages, sent, sent + ms) ? out.stage : hits(retires, sent, sent + ms) ? out.retire : out.neither).push(ms);
    });
  }
  return { stage: summarise(out.stage), retire: summarise(out.retire), neither: summarise(out.neither) };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function runSwap(ctx: SwapContext): Promise<SwapResult> {
  const { opts, log } = ctx;
  const dir = path.join(ctx.tmp, 'swap');
  const built = path.join(dir, 'built');
  const repo = path.join(dir, 'repository');
  writeSimpleVersions(built);
  cpSync(path.join(built, '1'), path.join(repo, MODEL, '1'), { recursive: true });
  const result: SwapResult = {
    model: MODEL, clients: opts.clients, phases: [], pooled: undefined, overlap: undefined, swaps: [], stage: undefined, activate: undefined, retire: undefined,
    p99Ratio: undefined, p50Ratio: undefined, steadyDriftPct: undefined, error: undefined,
  };
  // BENCH_AGENT_CONFIG (JSON): extra agent config for A/B runs, e.g. {"inference":{"allowSpinning":false}}.
  const extra = JSON.parse(process.env.BENCH_AGENT_CONFIG ?? '{}') as Record<string, unknown>;
  const config = loadConfig({ env: {}, flags: { ...extra, dataDir: path.join(dir, 'data'), modelRepository: repo, http: { host: '127.0.0.1', port: 0 }, log: { level: 'warn' } } });
  const agent: Agent = await createAgent(config, { log: pino({ level: 'warn' }, pino.destination({ dest: path.join(dir, 'agent.log'), sync: true })) });
  let child: ChildProcess | undefined;
  try {
    const url = new URL(await agent.start());
    const loaded = agent.models.active(MODEL);
    if (loaded?.state !== 'ready') throw new Error(`${MODEL} version 1 did not load: ${loaded?.state ?? 'missing'} ${loaded?.error ?? ''}`);
    // Installed after boot, as the update machine installs a verified download (install.ts: <repo>/<name>/<version>).
    cpSync(path.join(built, '2'), path.join(repo, MODEL, '2'), { recursive: true });
    const dirs = new Map([1, 2].map((v) => [v, installedVersion(path.join(repo, MODEL, String(v)), v)!]));

    child = forkChild(ctx.loadModule);
    const { body, expected } = requestBody();
    const start: SwapLoadStart = { type: 'start', host: url.hostname, port: Number(url.port), model: MODEL, concurrency: opts.clients, ratePerS: opts.ratePerS, body, expected };
    await phase(child, start, 'steady', 0, () => sleep(opts.warmupS * 1000));
    let active = 1;
    const swapWindow = async (): Promise<void> => {
      const t0 = performance.now();
      let done = 0;
      while (done < opts.swaps || performance.now() - t0 < opts.minSwapWindowS * 1000) {
        const to = active === 1 ? 2 : 1;
        const at = epochMs();
        const a = performance.now();
        const staging = agent.models.stage(MODEL, dirs.get(to)!);
        const stageSyncMs = performance.now() - a;
        await staging;
        const b = performance.now();
        agent.models.activate(MODEL, to);
        const c = performance.now();
        const retiring = agent.models.retire(MODEL, active);
        const retireSyncMs = performance.now() - c;
        await retiring;
        result.swaps.push({ from: active, to, at, stageMs: b - a, stageSyncMs, activateMs: c - b, retireMs: performance.now() - c, retireSyncMs });
        active = to;
        done++;
        if (opts.swapGapMs > 0) await sleep(opts.swapGapMs);
      }
    };
    const steady: MeasuredPhase[] = [];
    const swapping: MeasuredPhase[] = [];
    for (let round = 1; round <= opts.rounds; round++) {
      const s = await phase(child, start, 'steady', round, () => sleep(opts.steadyS * 1000));
      const before = result.swaps.length;
      const w = await phase(child, start, 'swaps', round, swapWindow);
      steady.push(s);
      swapping.push(w);
      result.phases.push(s.phase, w.phase);
      log(`  round ${round}: steady p99 ${s.phase.latency.p99Ms.toFixed(2)} ms (${s.phase.ratePerS.toFixed(0)} req/s); ${result.swaps.length - before} swaps in ${w.phase.durationS.toFixed(1)} s, p99 ${w.phase.latency.p99Ms.toFixed(2)} ms (${w.phase.ratePerS.toFixed(0)} req/s), ${w.phase.non2xx} non-2xx`);
    }
    result.pooled = { steady: pool(steady), swaps: pool(swapping) };
    result.overlap = byStep(swapping, result.swaps);
    const of = (key: 'stageMs' | 'activateMs' | 'retireMs') => (result.swaps.length > 0 ? summarise(result.swaps.map((x) => x[key])) : undefined);
    result.stage = of('stageMs');
    result.activate = of('activateMs');
    result.retire = of('retireMs');
    result.p99Ratio = result.pooled.swaps.latency.p99Ms / result.pooled.steady.latency.p99Ms;
    result.p50Ratio = result.pooled.swaps.latency.p50Ms / result.pooled.steady.latency.p50Ms;
    const first = steady[0]!.phase.latency.p99Ms;
    result.steadyDriftPct = ((steady.at(-1)!.phase.latency.p99Ms - first) / first) * 100;
  } catch (err) {
    result.error = (err as Error).message;
    log(`  swap part: ERROR ${result.error}`);
  } finally {
    if (child?.connected) child.disconnect();
    await agent.stop();
  }
  return result;
}
