#!/usr/bin/env node
/**
 * `npm run bench`: the Outpost agent benchmark of the research note (performance-and-fault-testing.md §2.2),
 * one run on one machine and one model, so the numbers are ratios against each other rather than against
 * someone else's hardware:
 *   0  environment (CPU, cores, Node, onnxruntime-node, sharp/libvips, load average);
 *   a  bare onnxruntime session.run on a pre-built input: the floor (c=1, 2 in flight, and batch 4 for dynamic models);
 *   b  KServe v2 infer over HTTP with JSON tensors;  c  the same with the binary tensor extension;
 *   d  /v1/models/<m>/detect with a 1080p JPEG (decode + preprocess + infer + NMS);
 *      b–d at each concurrency, in windows until three agree within 10 % (perf_analyzer's rule), with
 *      dynamic batching off and on where the model can batch;
 *   e  the agent's preprocessImage alone;
 *   plus the tiny model's added latency, cold start (spawn → ready), RSS and peak RSS of the agent.
 * The agent runs as its own process (`dist/agent/src/main.js run`), the load generator in another
 * (bench/load-client.ts), the bare floor in a third (bench/bare-worker.ts); this process only orchestrates.
 * Output: a Markdown report on stdout (progress on stderr), JSON in bench/results/. Exit 1 on any non-200
 * response, any detect answer that disagrees with the bare pipeline, or a model that did not load.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { httpRequest, startAgent, type AgentProcess } from './agent-process.js';
import { binaryBody, jsonBody, jsonDataToBytes, maxAbsDiff, type RequestBody } from './bodies.js';
import { ask, forkChild, installCleanup, onCleanup } from './children.js';
import { memoryOf } from './cpu.js';
import { captureEnvironment } from './environment.js';
import type { PointResult } from './measure.js';
import { parseOptions, type BenchOptions } from './options.js';
import type { BareJob, BareResult, LoadJob, LoadResult, ResponseCheck } from './protocol.js';
import { renderMarkdown, type AgentReport, type BenchReport, type ImageInfo, type OverheadRow, type Row } from './report.js';
import { publishReport } from './results-file.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(HERE, '..');
const ROOT = path.resolve(DIST, '..');
const AGENT_MAIN = path.join(DIST, 'agent/src/main.js');
const MAKE_MODELS = path.join(DIST, 'models/make-models.js');
const SHARED_MODELS = path.resolve(ROOT, '../shared/models');
const REAL_DETECTOR = path.join(SHARED_MODELS, 'detect/yolov8n-int8-640.onnx');
/** Real photos, in order of preference, for the real detector's 1080p frame (zidane.jpg is 1280×720: ×1.5 exactly). */
const PHOTO_CANDIDATES = ['zidane.jpg', 'bus.jpg', 'coco.jpg'];
const REAL_NAME = 'yolov8n';
const DEMO_NAME = 'demo-shapes';
const SIMPLE_NAME = 'simple';
/**
 * The agent's request deadlines, raised from their defaults (inference 10 s, request body 30 s) so that the
 * high-concurrency JSON points queue and show it in their latency instead of failing: with 16 clients each
 * sending a 24 MB JSON tensor, a request waits behind the others' JSON.parse and session.run, which all run on
 * the agent's one event loop, and its body is read only between them.
 */
const BENCH_INFERENCE_TIMEOUT_MS = 120_000;
const BENCH_REQUEST_TIMEOUT_MS = 120_000;
/** Bare session.run is measured again at the end; a larger change in p50 means the machine's speed changed. */
const MAX_DRIFT_PCT = 10;
/** A point during which processes outside the bench used more than this (% of one core) is flagged. */
const MAX_OTHER_CPU_PCT = 25;
/** Logical CPUs, the unit of /proc/stat's machine-wide counters. */
const CPUS = os.cpus().length;

const benchStart = performance.now();
const log = (msg: string) => process.stderr.write(`[bench ${((performance.now() - benchStart) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);

interface ModelUnderTest {
  name: string;
  versionDir: string;
  image: string | undefined;
  imageInfo: ImageInfo | undefined;
  bare: BareResult;
  bodies: { json: RequestBody | undefined; binary: RequestBody; jpeg: RequestBody | undefined };
}

interface AgentPlan {
  label: string;
  repo: string;
  models: string[];
  batching: boolean;
  detector: ModelUnderTest | undefined;
  simple: ModelUnderTest | undefined;
  /** Start, weigh, a few detect requests with this image, weigh again, stop: no measured load. */
  memoryOnly: { image: string } | undefined;
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const opts = parseOptions();
  installCleanup();
  if (path.basename(DIST) !== 'dist' || !existsSync(AGENT_MAIN)) throw new Error(`run the compiled bench (npm run bench); ${AGENT_MAIN} not found`);
  const failures: string[] = [];
  const warnings: string[] = [];
  const notes: string[] = [];

  const environment = captureEnvironment();
  log(`${environment.cpuModel}, nproc ${environment.nproc}, Node ${environment.node}, onnxruntime-node ${environment.onnxruntimeNode}, sharp ${environment.sharp}/libvips ${environment.libvips}, load ${environment.loadAverageAtStart.join(' ')}`);
  if (environment.loadWarning) {
    warnings.push(environment.loadWarning);
    log(`WARNING: ${environment.loadWarning}`);
  }

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'outpost-bench-'));
  if (opts.keepTemp) log(`temp dir (kept): ${tmp}`);
  else onCleanup(() => rmSync(tmp, { recursive: true, force: true }));

  // ---- models, repositories, images
  const { repository, samples } = await prepareModels(opts, tmp);
  const demoDir = latestVersionDir(repository, DEMO_NAME);
  const simpleDir = latestVersionDir(repository, SIMPLE_NAME);
  const demoImage = path.join(samples, 'shapes-1080p.jpg');
  if (!existsSync(demoImage)) throw new Error(`${demoImage} not found; make-models should write it`);
  const useReal = opts.useRealDetector && existsSync(REAL_DETECTOR);
  if (opts.useRealDetector && !useReal) notes.push(`${REAL_DETECTOR} not found: the demo detector stands in for it.`);

  const repoReal = path.join(tmp, 'repo-real');
  const repoDemo = path.join(tmp, 'repo-demo');
  const repoDemoOnly = path.join(tmp, 'repo-demo-only');
  if (useReal) {
    mkdirSync(path.join(repoReal, REAL_NAME, '1'), { recursive: true });
    copyFileSync(REAL_DETECTOR, path.join(repoReal, REAL_NAME, '1', 'model.onnx'));
    cpSync(path.join(repository, SIMPLE_NAME), path.join(repoReal, SIMPLE_NAME), { recursive: true });
  }
  for (const [repo, names] of [[repoDemo, [DEMO_NAME, SIMPLE_NAME]], [repoDemoOnly, [DEMO_NAME]]] as const) {
    for (const name of names) cpSync(path.join(repository, name), path.join(repo, name), { recursive: true });
  }
  const delayChanges = setQueueDelay(repoDemo, opts.maxQueueDelayMs);
  if (delayChanges.length > 0) {
    notes.push(`A model manifest's batching section overrides the agent config's batching.maxQueueDelayMs, so the bench's copy of ${delayChanges.join(', ')} is set to max_queue_delay_ms ${opts.maxQueueDelayMs} for the batching runs.`);
  }
  const photo = useReal ? await makePhoto1080p(path.join(tmp, 'photo-1080p.jpg')) : undefined;
  const demoImageInfo = await imageInfo(demoImage, `make-models sample ${path.basename(demoImage)}`);

  // ---- (a) + (e): bare floor, reference outputs and detections, in a worker process per model
  const bareOf = async (name: string, versionDir: string, image: string | undefined, preprocess: boolean, recheck = false): Promise<BareResult> => {
    log(`bare session.run: ${name}${recheck ? ' (again, for drift)' : ''}`);
    const child = forkChild(path.join(HERE, 'bare-worker.js'));
    const tag = recheck ? `${name}-recheck` : name;
    const job: BareJob = {
      type: 'bare', name, versionDir, imagePath: image, inputsOut: path.join(tmp, `input-${tag}`), outputOut: path.join(tmp, `output-${tag}.bin`),
      concurrencies: recheck ? [1] : [1, 2], batchSizes: recheck ? [] : opts.bareBatchSizes, preprocess: preprocess && !recheck, plan: opts.plan,
      intraOpThreads: opts.intraOpThreads, interOpThreads: opts.interOpThreads,
    };
    const result = await ask<BareResult>(child, job);
    if (result.reference) log(`  ${name}: bare pipeline finds ${result.reference.detections} detections (${result.reference.labels.join(', ')})`);
    return result;
  };
  const withBodies = (name: string, versionDir: string, image: string | undefined, info: ImageInfo | undefined, bare: BareResult, json: boolean): ModelUnderTest => ({
    name, versionDir, image, imageInfo: info, bare,
    bodies: {
      json: json ? jsonBody(bare.inputs, path.join(tmp, `body-${name}.json`)) : undefined,
      binary: binaryBody(bare.inputs, path.join(tmp, `body-${name}.bin`)),
      jpeg: image ? { file: image, bytes: readFileSync(image).length, headers: { 'content-type': 'image/jpeg' } } : undefined,
    },
  });
  const real = useReal ? withBodies(REAL_NAME, path.join(repoReal, REAL_NAME, '1'), photo!.path, photo, await bareOf(REAL_NAME, path.join(repoReal, REAL_NAME, '1'), photo!.path, true), opts.paths.includes('kserve-json')) : undefined;
  const needDemo = !useReal || opts.demoBatching;
  const demo = needDemo ? withBodies(DEMO_NAME, demoDir, demoImage, demoImageInfo, await bareOf(DEMO_NAME, demoDir, demoImage, true), opts.paths.includes('kserve-json')) : undefined;
  const simple = withBodies(SIMPLE_NAME, simpleDir, undefined, undefined, await bareOf(SIMPLE_NAME, simpleDir, undefined, false), false);
  const detector = real ?? demo!;
  const bares = [real, demo, simple].filter((m): m is ModelUnderTest => m !== undefined);
  for (const m of bares) for (const p of [...m.bare.run, ...m.bare.batched, ...m.bare.preprocess]) {
    if (p.errors > 0) failures.push(`bare ${m.name}: ${p.errors} errors (${p.firstError})`);
  }

  // ---- (b)–(d), cold start and memory: the agent as its own process
  const plans: AgentPlan[] = [{ label: 'demo-only', repo: repoDemoOnly, models: [DEMO_NAME], batching: false, detector: undefined, simple: undefined, memoryOnly: { image: demoImage } }];
  if (real) plans.push({ label: 'real', repo: repoReal, models: [REAL_NAME, SIMPLE_NAME], batching: false, detector: real, simple, memoryOnly: undefined });
  if (demo) {
    plans.push({ label: 'demo-batch-off', repo: repoDemo, models: [DEMO_NAME, SIMPLE_NAME], batching: false, detector: demo, simple, memoryOnly: undefined });
    if (opts.demoBatching) plans.push({ label: 'demo-batch-on', repo: repoDemo, models: [DEMO_NAME, SIMPLE_NAME], batching: true, detector: demo, simple, memoryOnly: undefined });
  }
  if (real && opts.demoBatching) notes.push(`${REAL_NAME} has a fixed batch dimension of 1, so dynamic batching cannot apply to it; batching off/on is measured on ${DEMO_NAME} (dynamic batch).`);

  const agentEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OUTPOST_')));
  const agents: AgentReport[] = [];
  const rows: Row[] = bareRows(bares);
  for (const plan of plans) {
    const { report, rows: measured } = await runAgentPlan(plan, opts, tmp, agentEnv, failures);
    agents.push(report);
    rows.push(...measured);
  }

  // ---- the floor again: did the machine's speed change while the HTTP points ran?
  const again = await bareOf(detector.name, detector.versionDir, detector.image, false, true);
  const before = detector.bare.run.find((p) => p.concurrency === 1)!;
  const after = again.run[0]!;
  const drift = { model: detector.name, p50BeforeMs: before.p50Ms, p50AfterMs: after.p50Ms, changePct: ((after.p50Ms - before.p50Ms) / before.p50Ms) * 100 };
  log(`  ${detector.name} bare p50 ${before.p50Ms.toFixed(1)} ms at the start, ${after.p50Ms.toFixed(1)} ms at the end (${drift.changePct >= 0 ? '+' : ''}${drift.changePct.toFixed(0)} %)`);
  if (Math.abs(drift.changePct) > MAX_DRIFT_PCT) {
    warnings.push(`bare session.run p50 of ${detector.name} moved ${drift.changePct.toFixed(0)} % between the start (${before.p50Ms.toFixed(1)} ms) and the end (${after.p50Ms.toFixed(1)} ms) of the run: the machine's speed changed, so ratios against the floor are unreliable`);
  }
  const disturbed = rows.filter((r) => (r.otherCpuPct ?? 0) > MAX_OTHER_CPU_PCT);
  if (disturbed.length > 0) {
    warnings.push(`${disturbed.length} of ${rows.length} points ran while processes outside the bench used more than ${MAX_OTHER_CPU_PCT} % of a core (column Other CPU), so their numbers understate the agent: ${disturbed.map((r) => `${r.model} ${r.path}${r.kind === 'http' ? ` ${r.batching}` : ''} c=${r.concurrency} (${r.otherCpuPct!.toFixed(0)} %)`).join(', ')}`);
  }
  const loadAtEnd = os.loadavg().map((v) => Math.round(v * 100) / 100);

  // ---- derived numbers
  const overhead = overheadRows(rows, bares);
  const addedLatency = rows
    .filter((r) => r.kind === 'http' && r.model === SIMPLE_NAME && r.path === 'kserve-binary' && r.concurrency === 1)
    .map((r) => {
      const bareP50 = simple.bare.run.find((p) => p.concurrency === 1)!.p50Ms;
      return { model: SIMPLE_NAME, agent: r.agent!, batching: r.batching, kserveBinaryP50Ms: r.p50Ms, bareP50Ms: bareP50, addedP50Ms: r.p50Ms - bareP50 };
    });
  const demoOnly = agents.find((a) => a.label === 'demo-only');
  notes.push(
    'The load generator (bench/load-client.js, node:http keep-alive, closed loop) is its own process on the same cores as the agent, not pinned; the Client CPU column is what it takes from the agent.',
    `Agent config: defaults except http.host 127.0.0.1, limits.inferenceTimeoutMs ${BENCH_INFERENCE_TIMEOUT_MS} (default 10000) and http.requestTimeoutMs ${BENCH_REQUEST_TIMEOUT_MS} (default 30000) so that overloaded points queue instead of failing, batching.enabled/maxQueueDelayMs as shown, log.level ${opts.agentLogLevel} (stdout to a file). OUTPOST_* variables are not passed to the agent.`,
    'Cold start: spawn → first 200 from /v2/health/ready (HTTP listens first; ready once every model is loaded and its warm-up run done), polled every 10 ms; the page cache is warm (model files were just written).',
    'Bare “2 in flight”: onnxruntime-node 1.30 runs session.run synchronously on its calling thread (dist/backend.js: setImmediate → binding.run), so two in-flight runs of one session serialise. The agent therefore runs each session on its own worker thread, so its event loop keeps serving during inference.',
  );

  const finishedAt = new Date();
  const report: BenchReport = {
    bench: 'outpost-agent', schema: 1, mode: opts.mode, ok: failures.length === 0, failures, warnings, notes,
    startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString(), wallClockS: (performance.now() - benchStart) / 1000,
    options: { ...opts.plan, concurrencies: opts.concurrencies, paths: opts.paths, maxQueueDelayMs: opts.maxQueueDelayMs, agentLogLevel: opts.agentLogLevel, intraOpThreads: opts.intraOpThreads, interOpThreads: opts.interOpThreads },
    environment: { ...environment, sessionOptions: detector.bare.sessionOptions },
    detector: { model: detector.name, kind: real ? 'real' : 'demo', file: real ? path.relative(ROOT, REAL_DETECTOR) : path.relative(ROOT, demoDir), image: detector.imageInfo! },
    demoDetector: demo ? { model: DEMO_NAME, image: demoImageInfo } : undefined,
    bare: Object.fromEntries(bares.map((m) => [m.name, { sessionCreateMs: m.bare.sessionCreateMs, output: { name: m.bare.output.name, dims: m.bare.output.dims }, reference: m.bare.reference, dynamicBatch: m.bare.spec.dynamicBatch }])),
    agents, rows, overhead, addedLatency,
    drift, loadAverageAtEnd: loadAtEnd,
    memory: { demoOnlyAgentRssAtReadyMiB: demoOnly?.rssAtReadyMiB, demoOnlyAgentRssAfterWarmRequestsMiB: demoOnly?.rssAfterMiB, demoOnlyAgentPeakRssMiB: demoOnly?.peakRssMiB },
  };
  return publishReport({
    report, failures: failures.length, markdown: renderMarkdown(report), prefix: 'agent', latestName: 'latest.json', startedAt, log,
    resultsDir: opts.resultsDir ? path.resolve(opts.resultsDir) : path.join(ROOT, 'bench/results'),
  });
}

/** The project's generated models: makeModels into the temp dir, or a repository given on the command line. */
async function prepareModels(opts: BenchOptions, tmp: string): Promise<{ repository: string; samples: string }> {
  if (opts.repository && opts.samples) return { repository: path.resolve(opts.repository), samples: path.resolve(opts.samples) };
  if (!existsSync(MAKE_MODELS)) throw new Error(`${MAKE_MODELS} not found: build models/make-models.ts first (npm run build), or pass --repository/--samples`);
  const repository = path.join(tmp, 'generated/repository');
  const samples = path.join(tmp, 'generated/samples');
  mkdirSync(repository, { recursive: true });
  // Imported by path so the bench compiles while the generator's module is being written.
  const mod = (await import(pathToFileURL(MAKE_MODELS).href)) as { makeModels(o: { repositoryDir: string; samplesDir: string }): Promise<unknown> };
  const t0 = performance.now();
  await mod.makeModels({ repositoryDir: repository, samplesDir: samples });
  log(`generated models in ${(performance.now() - t0).toFixed(0)} ms`);
  return { repository, samples };
}

/** Sets batching.max_queue_delay_ms in every manifest of a repository copy that has a batching section; lists what changed. */
function setQueueDelay(repo: string, delayMs: number): string[] {
  const changed: string[] = [];
  for (const name of readdirSync(repo)) {
    for (const version of readdirSync(path.join(repo, name))) {
      const file = path.join(repo, name, version, 'manifest.json');
      if (!existsSync(file)) continue;
      const manifest = JSON.parse(readFileSync(file, 'utf8')) as { batching?: { max_queue_delay_ms?: number } };
      if (!manifest.batching || manifest.batching.max_queue_delay_ms === delayMs) continue;
      changed.push(`${name}/${version} (was ${manifest.batching.max_queue_delay_ms ?? 'unset'})`);
      manifest.batching.max_queue_delay_ms = delayMs;
      writeFileSync(file, JSON.stringify(manifest, null, 2));
    }
  }
  return changed;
}

function latestVersionDir(repository: string, name: string): string {
  const dir = path.join(repository, name);
  if (!existsSync(dir)) throw new Error(`model '${name}' not found in ${repository}`);
  const versions = readdirSync(dir).filter((v) => /^[1-9][0-9]*$/.test(v) && existsSync(path.join(dir, v, 'model.onnx'))).map(Number).sort((a, b) => a - b);
  if (versions.length === 0) throw new Error(`model '${name}' in ${repository} has no <version>/model.onnx`);
  return path.join(dir, String(versions[versions.length - 1]));
}

/** A real 1920×1080 photo for the real detector: a shared test photo scaled to 1080p (cover) and re-encoded at q90. */
async function makePhoto1080p(out: string): Promise<ImageInfo> {
  const source = PHOTO_CANDIDATES.map((f) => path.join(SHARED_MODELS, 'images', f)).find(existsSync);
  if (!source) throw new Error(`no photo among ${PHOTO_CANDIDATES.join(', ')} in ${SHARED_MODELS}/images`);
  await sharp(source).resize(1920, 1080, { fit: 'cover' }).jpeg({ quality: 90 }).toFile(out);
  return imageInfo(out, `${path.relative(ROOT, source)} scaled to 1920×1080, JPEG q90`);
}

async function imageInfo(file: string, source: string): Promise<ImageInfo> {
  const bytes = readFileSync(file);
  const meta = await sharp(bytes).metadata();
  return { path: file, source, width: meta.width ?? 0, height: meta.height ?? 0, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
}

async function runAgentPlan(plan: AgentPlan, opts: BenchOptions, tmp: string, env: NodeJS.ProcessEnv, failures: string[]): Promise<{ report: AgentReport; rows: Row[] }> {
  const config: Record<string, unknown> = {
    http: { requestTimeoutMs: BENCH_REQUEST_TIMEOUT_MS },
    limits: { inferenceTimeoutMs: BENCH_INFERENCE_TIMEOUT_MS },
    batching: { enabled: plan.batching, maxQueueDelayMs: opts.maxQueueDelayMs },
    ...(opts.intraOpThreads > 0 || opts.interOpThreads > 0 ? { inference: { intraOpThreads: opts.intraOpThreads, interOpThreads: opts.interOpThreads } } : {}),
  };
  log(`agent '${plan.label}' (${plan.models.join(', ')}; batching ${plan.batching ? `on, ${opts.maxQueueDelayMs} ms` : 'off'}): starting`);
  const agent = await startAgent({
    mainJs: AGENT_MAIN, modelRepository: plan.repo, dataDir: path.join(tmp, `data-${plan.label}`), logLevel: opts.agentLogLevel, config,
    configFile: path.join(tmp, `agent-${plan.label}.json`), logFile: path.join(tmp, `agent-${plan.label}.log`), env, readyTimeoutMs: opts.readyTimeoutMs,
  });
  const rssAtReady = memoryOf(agent.pid)?.rssMiB;
  log(`  ready in ${agent.coldStartMs.toFixed(0)} ms (pid ${agent.pid}, port ${agent.port}), RSS ${rssAtReady?.toFixed(0)} MiB`);
  const rows: Row[] = [];
  const probes: Record<string, unknown> = {};
  const report: AgentReport = {
    label: plan.label, models: plan.models,
    batching: { enabled: plan.batching, maxQueueDelayMs: opts.maxQueueDelayMs, effective: {} },
    config: { argv: agent.argv.map((a) => a.replace(tmp, '$TMP').replace(ROOT, '.')), file: config }, coldStartMs: agent.coldStartMs, readyPolls: agent.readyPolls, modelLoadMs: {},
    rssAtReadyMiB: rssAtReady, rssAfterMiB: undefined, peakRssMiB: undefined, stop: undefined, probes, logFile: agent.logFile,
  };
  let client: ReturnType<typeof forkChild> | undefined;
  try {
    const status = JSON.parse((await httpRequest(`${agent.url}/status`)).body.toString('utf8')) as { models: { name: string; state: string; error?: string; loadMs?: number }[] };
    for (const name of plan.models) {
      const m = status.models.find((x) => x.name === name);
      if (!m || m.state !== 'ready') {
        failures.push(`agent ${plan.label}: model ${name} is ${m?.state ?? 'missing'}${m?.error ? `: ${m.error}` : ''}`);
        return { report, rows };
      }
      report.modelLoadMs[name] = m.loadMs;
      const meta = JSON.parse((await httpRequest(`${agent.url}/v2/models/${name}`)).body.toString('utf8')) as { parameters: Record<string, unknown> };
      report.batching.effective[name] = { maxBatchSize: meta.parameters.max_batch_size, dynamicBatch: meta.parameters.dynamic_batch, provider: meta.parameters.execution_provider };
    }

    if (plan.memoryOnly) {
      const jpeg = readFileSync(plan.memoryOnly.image);
      for (let i = 0; i < 10; i++) {
        const res = await httpRequest(`${agent.url}/v1/models/${DEMO_NAME}/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: jpeg });
        if (res.status !== 200) failures.push(`agent ${plan.label}: detect answered ${res.status}: ${res.body.toString('utf8').slice(0, 200)}`);
      }
      report.rssAfterMiB = memoryOf(agent.pid)?.rssMiB;
      return { report, rows };
    }

    // Set-up probes: one request per path, checked in full against the bare outputs; they also warm the paths.
    const checks = new Map<string, ResponseCheck>();
    if (plan.detector) Object.assign(probes, await probeDetector(agent, plan.detector, opts, checks, failures, plan.label));
    if (plan.simple) Object.assign(probes, await probeBinary(agent, plan.simple, checks, failures, plan.label));

    client = forkChild(path.join(HERE, 'load-client.js'));
    let id = 0;
    const point = async (m: ModelUnderTest, kind: Row['path'], c: number): Promise<void> => {
      const body = kind === 'kserve-json' ? m.bodies.json! : kind === 'kserve-binary' ? m.bodies.binary : m.bodies.jpeg!;
      const job: LoadJob = {
        type: 'load', id: ++id, host: agent.host, port: agent.port,
        path: kind === 'detect' ? `/v1/models/${m.name}/detect` : `/v2/models/${m.name}/infer`,
        headers: body.headers, bodyFile: body.file, check: checks.get(`${m.name}:${kind}`)!, concurrency: c, plan: opts.plan, watchedPid: agent.pid,
      };
      const r = await ask<LoadResult>(client!, job);
      const row = httpRow(m, kind, plan, r);
      rows.push(row);
      log(`  ${m.name} ${kind} c=${c}: ${row.throughput.toFixed(1)} req/s, p50 ${row.p50Ms.toFixed(1)} ms, p99 ${row.p99Ms.toFixed(1)} ms, ${row.windows} windows${row.stable ? '' : ' (not stable)'}${row.errors ? `, ${row.errors} ERRORS` : ''}`);
      const non200 = Object.entries(r.statusCounts).filter(([s]) => s !== '200');
      if (r.result.errors > 0 || r.mismatches > 0 || non200.length > 0) {
        failures.push(`agent ${plan.label}, ${m.name} ${kind} c=${c}: ${r.result.errors} failed requests (${r.mismatches} wrong answers; statuses ${JSON.stringify(r.statusCounts)}); first: ${r.result.firstError}`);
      }
    };
    if (plan.detector) {
      for (const kind of opts.paths) {
        if (!checks.has(`${plan.detector.name}:${kind}`)) continue;
        for (const c of opts.concurrencies) await point(plan.detector, kind, c);
      }
    }
    if (plan.simple && checks.has(`${SIMPLE_NAME}:kserve-binary`)) await point(plan.simple, 'kserve-binary', 1);
  } finally {
    const mem = memoryOf(agent.pid);
    report.rssAfterMiB ??= mem?.rssMiB;
    report.peakRssMiB = mem?.peakRssMiB;
    if (client?.connected) client.disconnect();
    report.stop = await agent.stop();
    log(`  stopped (${report.stop.signal ?? report.stop.exitCode}) after ${report.stop.stopMs.toFixed(0)} ms; peak RSS ${report.peakRssMiB?.toFixed(0)} MiB`);
  }
  return { report, rows };
}

/** The detector's three paths once each, checked against the bare reference; registers the per-request checks. */
async function probeDetector(agent: AgentProcess, m: ModelUnderTest, opts: BenchOptions, checks: Map<string, ResponseCheck>, failures: string[], label: string): Promise<Record<string, unknown>> {
  const probes: Record<string, unknown> = {};
  const ref = m.bare.reference!;
  if (opts.paths.includes('detect') && m.bodies.jpeg) {
    const res = await httpRequest(`${agent.url}/v1/models/${m.name}/detect`, { method: 'POST', headers: m.bodies.jpeg.headers, body: readFileSync(m.bodies.jpeg.file) });
    const body = res.status === 200 ? (JSON.parse(res.body.toString('utf8')) as { detections: { label: string }[]; timing: unknown }) : undefined;
    const labels = body?.detections.map((d) => d.label) ?? [];
    probes.detect = { status: res.status, detections: labels.length, labels, timing: body?.timing, responseBytes: res.body.length, requestBytes: m.bodies.jpeg.bytes };
    if (res.status !== 200) failures.push(`agent ${label}: detect probe answered ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
    else if (labels.length !== ref.detections || [...labels].sort().join() !== [...ref.labels].sort().join()) {
      failures.push(`agent ${label}: detect found ${labels.length} (${labels.join(', ')}), the bare pipeline ${ref.detections} (${ref.labels.join(', ')})`);
    } else checks.set(`${m.name}:detect`, { kind: 'detect', expectedDetections: ref.detections });
  }
  if (opts.paths.includes('kserve-binary')) Object.assign(probes, await probeBinary(agent, m, checks, failures, label));
  if (opts.paths.includes('kserve-json') && m.bodies.json) {
    const res = await httpRequest(`${agent.url}/v2/models/${m.name}/infer`, { method: 'POST', headers: m.bodies.json.headers, body: readFileSync(m.bodies.json.file) });
    if (res.status !== 200) failures.push(`agent ${label}: JSON infer probe answered ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
    else {
      const out = (JSON.parse(res.body.toString('utf8')) as { outputs: { name: string; shape: number[]; datatype: string; data: unknown[] }[] }).outputs.find((o) => o.name === m.bare.output.name);
      const diff = out ? maxAbsDiff(out.datatype, jsonDataToBytes(out.datatype, out.data), readFileSync(m.bare.output.file)) : Number.NaN;
      probes['kserve-json'] = { status: res.status, requestBytes: m.bodies.json.bytes, responseBytes: res.body.length, shape: out?.shape, maxAbsDiffVsBare: diff };
      if (!out || out.shape.join() !== m.bare.output.dims.join()) failures.push(`agent ${label}: JSON infer output ${m.bare.output.name} has shape ${JSON.stringify(out?.shape)}, bare ${JSON.stringify(m.bare.output.dims)}`);
      else checks.set(`${m.name}:kserve-json`, { kind: 'kserve-json' });
    }
  }
  return probes;
}

async function probeBinary(agent: AgentProcess, m: ModelUnderTest, checks: Map<string, ResponseCheck>, failures: string[], label: string): Promise<Record<string, unknown>> {
  const res = await httpRequest(`${agent.url}/v2/models/${m.name}/infer`, { method: 'POST', headers: m.bodies.binary.headers, body: readFileSync(m.bodies.binary.file) });
  if (res.status !== 200) {
    failures.push(`agent ${label}: binary infer probe for ${m.name} answered ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
    return {};
  }
  const headLength = Number(res.headers['inference-header-content-length']);
  const header = JSON.parse(res.body.subarray(0, headLength).toString('utf8')) as { outputs: { name: string; shape: number[]; datatype: string; parameters: { binary_data_size: number } }[] };
  let at = headLength;
  let diff = Number.NaN;
  let shape: number[] | undefined;
  for (const o of header.outputs) {
    const bytes = res.body.subarray(at, at + o.parameters.binary_data_size);
    at += o.parameters.binary_data_size;
    if (o.name === m.bare.output.name) {
      shape = o.shape;
      diff = maxAbsDiff(o.datatype, bytes, readFileSync(m.bare.output.file));
    }
  }
  if (shape?.join() !== m.bare.output.dims.join()) failures.push(`agent ${label}: binary infer output ${m.bare.output.name} of ${m.name} has shape ${JSON.stringify(shape)}, bare ${JSON.stringify(m.bare.output.dims)}`);
  else checks.set(`${m.name}:kserve-binary`, { kind: 'kserve-binary', expectedBinaryBytes: res.body.length - headLength });
  return { [m.name === SIMPLE_NAME ? 'simple-kserve-binary' : 'kserve-binary']: { status: res.status, requestBytes: m.bodies.binary.bytes, responseBytes: res.body.length, shape, maxAbsDiffVsBare: diff } };
}

function rowOf(p: PointResult, base: Pick<Row, 'kind' | 'model' | 'path' | 'batching' | 'agent' | 'unit'>, scale = 1): Row {
  const worker = base.kind === 'http' ? p.cpu.watchedPct : p.cpu.selfPct;
  const client = base.kind === 'http' ? p.cpu.selfPct : undefined;
  return {
    ...base, concurrency: p.concurrency, throughput: p.throughput * scale, meanMs: p.meanMs, p50Ms: p.p50Ms, p90Ms: p.p90Ms, p95Ms: p.p95Ms, p99Ms: p.p99Ms,
    // Bare rows run in the bare worker: its own CPU goes in the agent column (the process doing the work).
    n: p.n, windows: p.windows.length, stable: p.stable, agentCpuPct: worker, clientCpuPct: client, systemBusyPct: p.cpu.systemBusyPct,
    otherCpuPct: p.cpu.systemBusyPct === undefined || worker === undefined ? undefined : Math.max(0, p.cpu.systemBusyPct * CPUS - worker - (client ?? 0)),
    tputVsBare: undefined, p50VsBareC1: undefined, errors: p.errors, mismatches: 0, firstError: p.firstError, statusCounts: undefined, windowDetail: p.windows,
  };
}

function bareRows(models: ModelUnderTest[]): Row[] {
  const rows: Row[] = [];
  for (const m of models) {
    const peak = Math.max(...m.bare.run.map((p) => p.throughput));
    const c1 = m.bare.run.find((p) => p.concurrency === 1)!;
    for (const p of m.bare.run) rows.push({ ...rowOf(p, { kind: 'bare', model: m.name, path: 'session.run', batching: '-', agent: undefined, unit: 'runs/s' }), tputVsBare: p.throughput / peak, p50VsBareC1: p.concurrency === 1 ? 1 : undefined });
    for (const p of m.bare.batched) rows.push({ ...rowOf(p, { kind: 'bare-batched', model: m.name, path: `session.run ×${p.batch}`, batching: '-', agent: undefined, unit: 'img/s' }, p.batch), tputVsBare: (p.throughput * p.batch) / peak, p50VsBareC1: p.p50Ms / c1.p50Ms });
    for (const p of m.bare.preprocess) rows.push(rowOf(p, { kind: 'preprocess', model: m.name, path: 'preprocessImage', batching: '-', agent: undefined, unit: 'img/s' }));
  }
  return rows;
}

function httpRow(m: ModelUnderTest, kind: Row['path'], plan: AgentPlan, r: LoadResult): Row {
  const row = rowOf(r.result, { kind: 'http', model: m.name, path: kind, batching: plan.batching ? 'on' : 'off', agent: plan.label, unit: 'req/s' });
  const peak = Math.max(...m.bare.run.map((p) => p.throughput));
  const c1 = m.bare.run.find((p) => p.concurrency === 1)!;
  return { ...row, tputVsBare: row.throughput / peak, p50VsBareC1: row.concurrency === 1 ? row.p50Ms / c1.p50Ms : undefined, mismatches: r.mismatches, statusCounts: r.statusCounts };
}

function overheadRows(rows: Row[], models: ModelUnderTest[]): OverheadRow[] {
  const out: OverheadRow[] = [];
  const groups = new Map<string, Row[]>();
  for (const r of rows.filter((x) => x.kind === 'http')) {
    const key = `${r.model}|${r.path}|${r.batching}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  for (const group of groups.values()) {
    const m = models.find((x) => x.name === group[0]!.model)!;
    const bare1 = m.bare.run.find((p) => p.concurrency === 1)!;
    const barePeak = Math.max(...m.bare.run.map((p) => p.throughput));
    const c1 = group.reduce((a, b) => (b.concurrency < a.concurrency ? b : a));
    const peak = group.reduce((a, b) => (b.throughput > a.throughput ? b : a));
    const pre1 = m.bare.preprocess.find((p) => p.concurrency === 1);
    const pipeline = group[0]!.path === 'detect' && pre1
      ? (() => {
          const p50Ms = bare1.p50Ms + pre1.p50Ms;
          const tput = 1 / (1 / bare1.throughput + 1 / pre1.throughput);
          return { p50Ms, tput, addedP50Ms: c1.p50Ms - p50Ms, peakTputRatio: peak.throughput / tput };
        })()
      : undefined;
    out.push({
      model: m.name, path: group[0]!.path, batching: group[0]!.batching,
      bareP50Ms: bare1.p50Ms, bareTput: barePeak, c1P50Ms: c1.p50Ms, addedP50Ms: c1.p50Ms - bare1.p50Ms,
      p50RatioC1: c1.p50Ms / bare1.p50Ms, tputRatioC1: c1.throughput / bare1.throughput,
      peakTput: peak.throughput, peakConcurrency: peak.concurrency, peakTputRatio: peak.throughput / barePeak, pipeline,
    });
  }
  return out;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
