#!/usr/bin/env node
/**
 * The fleet section of `npm run bench` (research performance-and-fault-testing.md §2.3, issue 4), one run on one
 * machine so the figures read against each other:
 *   1  the agent's outbox (bench/outbox.ts): enqueued rows/s with synchronous FULL vs NORMAL, one row per
 *      transaction vs group commit, and the drain rate, on a real-disk temp dir;
 *   2  fleet ingest: the real fleet server (dist, a child process), N devices enrolled through its REST API and
 *      connected from THIS process with mqtt.js, each publishing `events` at ×1 = one per base interval, then
 *      steps of ×10, ×20 … until the p99 end-to-end delay (stored received_at − message ts) passes the limit;
 *      per step: offered and stored msg/s, delay percentiles, fleet RSS/CPU, lost and duplicated messages;
 *   3  the same load through an external Mosquitto (the shipped outpost.conf + acl) instead of the embedded
 *      aedes, side by side.
 * Output: a Markdown report on stdout (progress on stderr), JSON in bench/results/fleet-<ISO time>.json and
 * fleet-latest.json. Exit 1 when an acknowledged message was not stored, the fleet rejected a bench message,
 * or a broker run failed.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { installCleanup, onCleanup } from './children.js';
import { describeNofile, NOFILE_WANTED, nofileOf } from './fleet-nofile.js';
import { mosquittoVersion, MOSQUITTO } from './fleet-mosquitto.js';
import { parseFleetOptions, type FleetBenchOptions } from './fleet-options.js';
import { DISTURBED_OTHER_CPU_PCT, renderFleetMarkdown, type FleetEnvironment, type FleetReport } from './fleet-report.js';
import { runBroker, type BrokerRun } from './fleet-scenario.js';
import { evaluateTargets } from './fleet-targets.js';
import { benchOutbox, type OutboxBenchRow } from './outbox.js';
import { publishReport } from './results-file.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(HERE, '..');
const ROOT = path.resolve(DIST, '..');
const FLEET_MAIN = path.join(DIST, 'fleet-server/src/main.js');
const SHIPPED_MOSQUITTO = path.join(ROOT, 'fleet-server/mosquitto');
/** statfs f_type of file systems the report names. */
const FS_TYPES: Record<number, string> = { 0xef53: 'ext4', 0x01021994: 'tmpfs', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x794c7630: 'overlayfs', 0x6969: 'nfs', 0x858458f6: 'ramfs' };
const TMPFS = new Set(['tmpfs', 'ramfs']);

const benchStart = performance.now();
const log = (msg: string) => process.stderr.write(`[fleet ${((performance.now() - benchStart) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);

async function main(): Promise<number> {
  const startedAt = new Date();
  const opts = parseFleetOptions();
  installCleanup();
  if (path.basename(DIST) !== 'dist' || !existsSync(FLEET_MAIN)) throw new Error(`run the compiled bench (npm run bench:fleet); ${FLEET_MAIN} not found`);
  const failures: string[] = [];
  const warnings: string[] = [];
  const notes: string[] = [];

  // Every device socket is a descriptor of this process. Node raises its own soft limit to the hard limit at
  // start (node.cc, PlatformInit), so only the hard limit can stop us; Mosquitto gets the bash ulimit wrapper.
  const own = nofileOf('self');
  if (own && own.soft < opts.devices + 256) {
    throw new Error(`this process may open ${own.soft} files, ${opts.devices} devices need about ${opts.devices + 256}: raise the hard limit (as root: \`ulimit -n ${NOFILE_WANTED}\`, or LimitNOFILE= under systemd) or pass --devices`);
  }
  const tempParent = chooseTempParent(opts);
  const tmp = mkdtempSync(path.join(tempParent.dir, 'outpost-bench-fleet-'));
  if (opts.keepTemp) log(`temp dir (kept): ${tmp}`);
  else onCleanup(() => rmSync(tmp, { recursive: true, force: true }));
  const environment = captureFleetEnvironment(tmp, tempParent.fs);
  log(`${environment.cpuModel}, nproc ${environment.nproc}, Node ${environment.node}, Mosquitto ${environment.versions.mosquitto ?? 'absent'}, temp on ${environment.tempFs}, open files ${environment.nofile}, load ${environment.loadAverageAtStart.join(' ')}`);
  if (environment.loadAverageAtStart[0] > 0.5) warnings.push(`1-minute load average was ${environment.loadAverageAtStart[0]} at start: other work shares the CPU, numbers will be noisy`);
  if (TMPFS.has(tempParent.fs)) warnings.push(`the temp dir is on ${tempParent.fs}: fsync costs nothing there, so outbox and fleet ingest figures overstate a real disk (pass --temp DIR)`);

  let outbox: OutboxBenchRow[] | undefined;
  if (opts.outbox) {
    log('outbox: enqueue FULL/NORMAL × 1 row/txn / group commit, drain');
    const dir = path.join(tmp, 'outbox');
    mkdirSync(dir);
    outbox = await benchOutbox({ quick: opts.mode === 'quick', dir });
    for (const o of outbox) log(`  ${o.case} ${o.synchronous} in flight ${o.inFlight}: ${o.rowsPerSecond} rows/s, ${o.meanRowsPerCommit} rows/commit`);
  }

  const runs: BrokerRun[] = [];
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OUTPOST_')));
  const ctx = { opts, tmp, mainJs: FLEET_MAIN, shippedMosquittoDir: SHIPPED_MOSQUITTO, env, log };
  for (const broker of opts.brokers) {
    if (broker === 'mosquitto' && !environment.versions.mosquitto) {
      notes.push(`Mosquitto column skipped: ${MOSQUITTO} is not installed (Debian: apt-get install mosquitto).`);
      continue;
    }
    log(`fleet ingest through ${broker}: ${opts.devices} devices, steps ×${opts.steps.join(', ×')}`);
    const run = await runBroker(broker, ctx, environment.versions.mosquitto);
    runs.push(run);
    if (run.error) failures.push(`${run.label}: ${run.error}`);
    for (const s of run.steps) {
      if (s.drained && s.lost > 0) failures.push(`${run.label} ${s.label}: ${s.lost} events acknowledged by the broker were never stored`);
      if (!s.drained) warnings.push(`${run.label} ${s.label}: not drained when the wait ended (${s.unacked} without PUBACK, ${s.lost} acknowledged and not stored yet), so its lost count is not final`);
      if (s.rejected > 0) failures.push(`${run.label} ${s.label}: the fleet rejected ${s.rejected} bench messages (see its log)`);
      if ((s.otherCpuPct ?? 0) > DISTURBED_OTHER_CPU_PCT) warnings.push(`${run.label} ${s.label}: processes outside the bench used ${s.otherCpuPct!.toFixed(0)} % of a core while it ran (column Other CPU), so its figures understate the fleet`);
      if (s.scheduleLagP99Ms > 100) warnings.push(`${run.label} ${s.label}: the load process ran ${s.scheduleLagP99Ms.toFixed(0)} ms behind its schedule at p99, so it shares the blame for the delay`);
    }
    if (run.link.closes > 0) warnings.push(`${run.label}: ${run.link.closes} device connections closed during the load (${run.link.reconnects} reconnects; last error ${run.link.lastError ?? 'none'})`);
  }

  notes.push(
    `Load: ${opts.devices} mqtt.js clients in the bench process (MQTT 3.1.1, client id = username = device id, clean: false, keepalive 30 s, each subscribed to its own desired and cmd), connected at ${opts.connectRatePerS}/s. Each publishes \`events\` (QoS 1, ~300 B, valid EventMessageSchema, seq from 1) on an open-loop schedule, devices round-robin, so at ×1 each device sends one event every ${opts.baseIntervalS} s.`,
    'Delay = the stored events.received_at (the fleet ingest\'s clock when it took the message, before its SQLite commit) − the message ts (publish time here); same machine clock, ms precision. Lost = PUBACKed (device, seq) not in the events table after the drain; duplicates = the fleet\'s outpost_fleet_duplicate_messages_total (stored rows cannot repeat: (device_id, seq) is the primary key).',
    'Each broker run starts from an empty data dir: fleet server from dist (`node dist/fleet-server/src/main.js run --config … --data-dir …`, log level as shipped), devices enrolled through POST /api/v1/enrollment-tokens + POST /api/v1/enroll. Mosquitto runs the shipped fleet-server/mosquitto/outpost.conf and acl with paths and ports rewritten; the fleet rewrites its password file and SIGHUPs it after every enrollment, as in production.',
    `The fleet server, Mosquitto and this load process share the machine's ${environment.nproc} cores, unpinned: the CPU columns are % of one core for each, measured from /proc over the publishing window of the step.`,
  );
  const single = outbox?.find((o) => o.case === 'enqueue' && o.synchronous === 'FULL' && o.inFlight === 1);
  if (single) {
    notes.push(`This disk commits a single-row synchronous=FULL transaction in about ${(1000 / single.rowsPerSecond).toFixed(2)} ms (outbox row FULL, 1 in flight). With aedes the fleet group-commits what arrives in one event-loop turn (fleet-server/src/telemetry/batched-ingest.ts) before the PUBACKs; behind Mosquitto its MQTT client commits each message in its own FULL transaction, so that path's ceiling is about ${Math.round(single.rowsPerSecond).toLocaleString('en')} msg/s on this disk before any CPU cost.`);
  }
  const targets = evaluateTargets(opts, outbox, runs);
  const finishedAt = new Date();
  const report: FleetReport = {
    bench: 'outpost-fleet', schema: 1, mode: opts.mode, ok: failures.length === 0, failures, warnings, notes,
    startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString(), wallClockS: (performance.now() - benchStart) / 1000,
    options: opts, environment, outbox, runs, targets,
  };
  return publishReport({
    report, failures: failures.length, markdown: renderFleetMarkdown(report), prefix: 'fleet', latestName: 'fleet-latest.json', startedAt, log,
    resultsDir: opts.resultsDir ? path.resolve(opts.resultsDir) : path.join(ROOT, 'bench/results'),
  });
}

/** The first of --temp, os.tmpdir(), /var/tmp that is not a RAM file system (fsync must cost what it costs). */
function chooseTempParent(opts: FleetBenchOptions): { dir: string; fs: string } {
  const fsOf = (dir: string) => {
    const type = statfsSync(dir).type;
    return FS_TYPES[type] ?? `0x${type.toString(16)}`;
  };
  if (opts.tempParent) return { dir: path.resolve(opts.tempParent), fs: fsOf(path.resolve(opts.tempParent)) };
  const candidates = [os.tmpdir(), '/var/tmp'].filter(existsSync);
  for (const dir of candidates) {
    const fs = fsOf(dir);
    if (!TMPFS.has(fs)) return { dir, fs };
  }
  return { dir: candidates[0]!, fs: fsOf(candidates[0]!) };
}

function captureFleetEnvironment(tmp: string, tempFs: string): FleetEnvironment {
  const version = (pkg: string): string => {
    try {
      return (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      return 'unknown';
    }
  };
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpuModel;
  } catch {
    /* not Linux */
  }
  return {
    cpuModel, nproc: os.availableParallelism(), memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`, node: process.version,
    versions: { aedes: version('aedes'), mqtt: version('mqtt'), betterSqlite3: version('better-sqlite3'), mosquitto: mosquittoVersion() },
    tempDir: tmp, tempFs, nofile: describeNofile(nofileOf('self')),
    loadAverageAtStart: os.loadavg().map((v) => Math.round(v * 100) / 100) as [number, number, number],
  };
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`fleet bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
