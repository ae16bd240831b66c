#!/usr/bin/env node
/**
 * The updates section of `npm run bench` (issue 5 item 12), one run on one machine so the figures read against
 * each other:
 *   1  rollout time of a ~10 MB model (models/simple-variants.ts buildSimpleHeavy, 1536 × 1 ≈ 9.4 MB) to 1, 20
 *      and 200 simulated devices on loopback: an in-process fleet, devices as real MQTT clients in a child
 *      process that verify, download, hash and report transitions as the agent does (bench/rollout-bench.ts);
 *      rollout created → first artifact byte → all committed, against the same downloads as plain HTTP GETs;
 *   2  the agent's request latency during hot swaps vs steady state: an in-process agent under a closed-loop
 *      KServe JSON load, swapping simple 1 ↔ 2 with the update machine's calls (bench/swap-bench.ts).
 *      Target: p99 during swaps ≤ 1.5 × steady p99.
 * Output: a Markdown report on stdout (progress on stderr), JSON in bench/results/updates-<ISO time>.json and
 * updates-latest.json. Exit 1 when a rollout did not complete, a device failed or saw a bad signature or hash,
 * a baseline download failed, or a request during the swap part was not 2xx or answered wrongly. A missed
 * target is reported in the Targets table; it does not fail the run.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { installCleanup, onCleanup } from './children.js';
import { buildHeavyVersions, HEAVY_MODEL, runRolloutCase, type RolloutCase } from './rollout-bench.js';
import { runSwap, type SwapResult } from './swap-bench.js';
import { parseUpdatesOptions, type UpdatesBenchOptions } from './updates-options.js';
import { renderUpdatesMarkdown, type TargetCheck, type UpdatesEnvironment, type UpdatesReport } from './updates-report.js';
import { publishReport } from './results-file.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(HERE, '..');
const ROOT = path.resolve(DIST, '..');
/** A phase during which processes outside the bench used more than this (% of one core) is warned about. */
const DISTURBED_OTHER_CPU_PCT = 25;

const benchStart = performance.now();
const log = (msg: string) => process.stderr.write(`[updates ${((performance.now() - benchStart) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);

async function main(): Promise<number> {
  const startedAt = new Date();
  const opts = parseUpdatesOptions();
  installCleanup();
  if (path.basename(DIST) !== 'dist') throw new Error('run the compiled bench (npm run bench -- --only updates)');
  const failures: string[] = [];
  const warnings: string[] = [];
  const notes: string[] = [];
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'outpost-bench-updates-'));
  if (opts.keepTemp) log(`temp dir (kept): ${tmp}`);
  else onCleanup(() => rmSync(tmp, { recursive: true, force: true }));
  const environment = captureEnvironment(tmp);
  log(`${environment.cpuModel}, nproc ${environment.nproc}, Node ${environment.node}, load ${environment.loadAverageAtStart.join(' ')}`);
  if (environment.loadAverageAtStart[0] > 0.5) warnings.push(`1-minute load average was ${environment.loadAverageAtStart[0]} at start: other work shares the CPU, numbers will be noisy`);

  let model: UpdatesReport['model'];
  const rollouts: RolloutCase[] = [];
  if (opts.parts.includes('rollout')) {
    const versions = buildHeavyVersions(opts, opts.reps);
    model = { name: HEAVY_MODEL, bytes: versions[0]!.bytes.length, width: opts.modelWidth, layers: opts.modelLayers };
    log(`rollout: ${HEAVY_MODEL} ${(model.bytes / 1e6).toFixed(1)} MB to ${opts.deviceCounts.join(', ')} devices, ${opts.reps} reps each`);
    for (const n of opts.deviceCounts) {
      const c = await runRolloutCase({ opts, tmp, childModule: path.join(HERE, 'rollout-devices.js'), log }, n, versions);
      rollouts.push(c);
      if (c.error) failures.push(`rollout to ${n} devices: ${c.error}`);
      for (const rep of c.reps) {
        if (rep.baseline.errors > 0) failures.push(`baseline with ${n} devices, v${rep.version}: ${rep.baseline.errors} downloads failed (${rep.baseline.firstError})`);
        const ro = rep.rollout;
        if (ro && ro.errors > 0) failures.push(`rollout ${ro.rolloutId} to ${n} devices: ${ro.errors} devices failed (${ro.firstError}); ${ro.badSignatures} bad signatures, ${ro.hashMismatches} hash mismatches`);
        if (ro && ro.linkCloses > 0) warnings.push(`rollout ${ro.rolloutId} to ${n} devices: ${ro.linkCloses} device connections closed during it`);
        for (const [what, p] of [['baseline', rep.baseline], ['rollout', ro]] as const) {
          if (p && p.artifactRequests !== n) warnings.push(`${what} of v${rep.version} to ${n} devices: the fleet received ${p.artifactRequests} artifact requests, expected one per device`);
        }
      }
    }
    notes.push(
      `Model: ${HEAVY_MODEL}, models/simple-variants.ts buildSimpleHeavy({ width: ${opts.modelWidth}, layers: ${opts.modelLayers} }), a new seed per version (so a new artifact and hash per rep); pushed with POST /api/v1/models/{name}/versions/{v} (multipart, manifest + artifact).`,
      'Fleet: in this process (createFleet + loadFleetConfig: fresh temp data dir per device count, embedded aedes, HTTP and MQTT on 127.0.0.1 port 0, config defaults except log level warn). Devices: enrolled through POST /api/v1/enrollment-tokens + POST /api/v1/enroll, then one mqtt.js client each in a child process (bench/rollout-devices.ts), connected as the agent\'s link connects.',
      'A device plays the agent\'s update path minus ONNX and disk: on the retained desired message it checks the ed25519 signature over deploymentStatement() with the fleet key from enrollment, publishes downloading, GETs the artifact (URL relative to the enrolled fleet URL, Basic auth, its own connection), hashes every chunk as it arrives, checks size and sha256, then publishes verifying, staging, activating, probation (0 s) and committed (QoS 1, each after the previous PUBACK) and its new state. Rollout: POST /api/v1/rollouts {deviceIds, probationSeconds: 0}, one stage of 100 %.',
    );
  }

  let swap: SwapResult | undefined;
  if (opts.parts.includes('swap')) {
    log(`swap: ${opts.clients} clients, ${opts.rounds} rounds of steady ${opts.steadyS} s + ≥ ${opts.swaps} swaps for ≥ ${opts.minSwapWindowS} s`);
    swap = await runSwap({ opts, tmp, loadModule: path.join(HERE, 'swap-load.js'), log });
    if (swap.error) failures.push(`swap part: ${swap.error}`);
    for (const p of swap.phases) {
      if (p.non2xx > 0) failures.push(`swap part, round ${p.round} ${p.label}: ${p.non2xx} requests were not 2xx (${JSON.stringify(p.statusCounts)}); first: ${p.firstError}`);
      if (p.mismatches > 0) failures.push(`swap part, round ${p.round} ${p.label}: ${p.mismatches} answers matched neither version (${p.firstError})`);
      if ((p.otherCpuPct ?? 0) > DISTURBED_OTHER_CPU_PCT) warnings.push(`swap part, round ${p.round} ${p.label}: processes outside the bench used ${p.otherCpuPct!.toFixed(0)} % of a core, so its latencies are disturbed`);
    }
    const swaps = swap.pooled?.swaps;
    if (swaps && Object.keys(swaps.versions).length < 2) failures.push(`swap part: only version ${Object.keys(swaps.versions).join()} answered during the swaps; the swaps did not take effect`);
    if (swap.steadyDriftPct !== undefined && Math.abs(swap.steadyDriftPct) > 25) warnings.push(`swap part: steady p99 moved ${swap.steadyDriftPct.toFixed(0)} % from the first round to the last: the machine's speed changed, so the ratio is uncertain`);
    notes.push(
      `Swap part: the agent in this process (createAgent + loadConfig: defaults except HTTP on 127.0.0.1 port 0 and log level warn), repository with the generated simple version 1; version 2 is written into the repository after boot, as the update machine installs a download. Load: bench/swap-load.ts in a child process, ${opts.clients} clients, ${opts.ratePerS > 0 ? `open loop at ${opts.ratePerS} requests/s (latency from the time each request was due)` : 'closed loop'}, POST /v2/models/simple/infer (no version: the active one answers) with a JSON body, every 200 checked against the OUTPUT0 of the version it names. Each swap: models.stage(simple, <repo>/simple/<v>) → models.activate(simple, v) → await models.retire(simple, previous), ${opts.swapGapMs > 0 ? `then a pause of ${opts.swapGapMs} ms` : 'back to back'}. ${opts.rounds} rounds, each a steady phase of ${opts.steadyS} s then a swap window (≥ ${opts.swaps} swaps and ≥ ${opts.minSwapWindowS} s), after ${opts.warmupS} s of unmeasured load; the rounds interleave the two kinds so a change in the machine's speed lands on both, and the ratio is taken over the pooled requests of each kind.`,
      'Agent CPU is this process: the agent, its session worker threads and the swap calls. The bench and the load share the machine\'s cores, unpinned.',
    );
  }

  const targets = evaluateTargets(opts, rollouts, swap);
  const finishedAt = new Date();
  const report: UpdatesReport = {
    bench: 'outpost-updates', schema: 1, mode: opts.mode, ok: failures.length === 0, failures, warnings, notes,
    startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString(), wallClockS: (performance.now() - benchStart) / 1000,
    options: opts, environment, model, rollouts, swap, targets,
  };
  return publishReport({
    report, failures: failures.length, markdown: renderUpdatesMarkdown(report), prefix: 'updates', latestName: 'updates-latest.json', startedAt, log,
    resultsDir: opts.resultsDir ? path.resolve(opts.resultsDir) : path.join(ROOT, 'bench/results'),
  });
}

function evaluateTargets(opts: UpdatesBenchOptions, rollouts: RolloutCase[], swap: SwapResult | undefined): TargetCheck[] {
  const targets: TargetCheck[] = [];
  const swaps = swap?.pooled?.swaps;
  const steady = swap?.pooled?.steady;
  if (swap?.p99Ratio !== undefined && swaps && steady) {
    targets.push({
      target: `p99 request latency during a swap ≤ ${opts.maxP99Factor}× steady state`, subject: `${swap.model}, ${swap.clients} clients, ${swap.swaps.length} swaps`,
      value: `${swaps.latency.p99Ms.toFixed(2)} ms vs ${steady.latency.p99Ms.toFixed(2)} ms = ${swap.p99Ratio.toFixed(2)}×`, met: swap.p99Ratio <= opts.maxP99Factor,
    });
    targets.push({ target: 'no failed request during swaps', subject: 'non-2xx + wrong answers', value: String(swaps.non2xx + swaps.mismatches), met: swaps.non2xx + swaps.mismatches === 0 });
  }
  for (const c of rollouts) {
    const committed = c.error === undefined && c.reps.length > 0 && c.reps.every((r) => r.rollout?.state === 'completed' && r.rollout.errors === 0);
    targets.push({ target: 'every device committed', subject: `${c.devices} device${c.devices === 1 ? '' : 's'} × ${c.reps.length} rollouts`, value: committed ? `median ${c.median.rolloutTotalMs?.toFixed(0)} ms (${c.median.ratio?.toFixed(2)}× plain downloads)` : (c.error ?? 'device failures'), met: committed });
  }
  return targets;
}

function captureEnvironment(tmp: string): UpdatesEnvironment {
  const version = (pkg: string): string => {
    try {
      return (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      return 'unknown';
    }
  };
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    if (existsSync('/proc/cpuinfo')) cpuModel = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpuModel;
  } catch {
    /* not Linux */
  }
  return {
    cpuModel, nproc: os.availableParallelism(), memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`, node: process.version,
    versions: { aedes: version('aedes'), mqtt: version('mqtt'), 'onnxruntime-node': version('onnxruntime-node'), fastify: version('fastify') },
    tempDir: tmp, loadAverageAtStart: os.loadavg().map((v) => Math.round(v * 100) / 100) as [number, number, number],
  };
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`updates bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
