import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { memoryOf } from './cpu.js';
import { fleetApi } from './fleet-api.js';
import { closeDevices, connectDevices, enrollDevices, type ConnectResult, type EnrollResult, type LinkCounters, type SimDevice } from './fleet-devices.js';
import { counters, runStep, type LoadState, type StepPlan, type StepResult } from './fleet-load.js';
import { startMosquitto, type MosquittoProcess } from './fleet-mosquitto.js';
import { NOFILE_WANTED, type NofileLimit } from './fleet-nofile.js';
import type { FleetBenchOptions } from './fleet-options.js';
import { startFleetServer, type FleetProcess } from './fleet-process.js';

/**
 * One broker's run of the fleet ingest bench: (Mosquitto from the shipped config, when external) → the fleet
 * server from dist → enroll N devices over REST → connect them at a controlled rate → warm-up → steps of
 * rising rate until the p99 delay passes the limit → everything stopped, also when a step throws.
 */
export type BrokerKind = 'aedes' | 'mosquitto';

export interface BrokerRun {
  broker: BrokerKind;
  label: string;
  /** Set when the run could not complete (the error); the steps done so far are kept. */
  error: string | undefined;
  fleet: {
    argv: string[];
    config: Record<string, unknown>;
    nofile: NofileLimit | undefined;
    startMs: number;
    rssAtStartMiB: number | undefined;
    rssAfterConnectMiB: number | undefined;
    peakRssMiB: number | undefined;
    stop: { exitCode: number | null; signal: string | null; stopMs: number } | undefined;
    logFile: string;
  } | undefined;
  brokerProcess: { version: string; nofile: NofileLimit | undefined; rssAfterConnectMiB: number | undefined; peakRssMiB: number | undefined; logFile: string } | undefined;
  enrollment: Omit<EnrollResult, 'devices'> | undefined;
  connect: ConnectResult | undefined;
  /** outpost_fleet_connected_devices after connecting (embedded broker only; NaN with an external one). */
  connectedGauge: number | undefined;
  link: LinkCounters;
  warmup: StepResult | undefined;
  steps: StepResult[];
  stoppedBecause: string;
}

export interface ScenarioContext {
  opts: FleetBenchOptions;
  tmp: string;
  mainJs: string;
  shippedMosquittoDir: string;
  env: NodeJS.ProcessEnv;
  log(msg: string): void;
}

const START_TIMEOUT_MS = 30_000;

export async function runBroker(kind: BrokerKind, ctx: ScenarioContext, mosquittoVersion: string | undefined): Promise<BrokerRun> {
  const { opts, log } = ctx;
  const dir = path.join(ctx.tmp, kind);
  mkdirSync(dir, { recursive: true });
  const run: BrokerRun = {
    broker: kind, label: kind === 'aedes' ? 'aedes (embedded)' : `Mosquitto ${mosquittoVersion ?? ''} (external)`.replace('  ', ' '),
    error: undefined, fleet: undefined, brokerProcess: undefined, enrollment: undefined, connect: undefined, connectedGauge: undefined,
    link: { closes: 0, reconnects: 0, errors: 0, lastError: undefined }, warmup: undefined, steps: [], stoppedBecause: '',
  };
  let mosquitto: MosquittoProcess | undefined;
  let fleet: FleetProcess | undefined;
  let db: Database.Database | undefined;
  let devices: SimDevice[] = [];
  try {
    const config: Record<string, unknown> = { http: { host: '127.0.0.1', port: 0 } };
    if (kind === 'mosquitto') {
      mosquitto = await startMosquitto({ dir: path.join(dir, 'mosquitto'), shippedDir: ctx.shippedMosquittoDir, nofile: NOFILE_WANTED, startTimeoutMs: START_TIMEOUT_MS }).catch((err: unknown) => {
        throw new Error(`cannot start Mosquitto: ${(err as Error).message}`);
      });
      log(`  Mosquitto ${mosquitto.version} pid ${mosquitto.pid}: devices ${mosquitto.deviceUrl}, fleet listener ${mosquitto.fleetUrl}`);
      config.broker = {
        url: mosquitto.fleetUrl, username: mosquitto.fleetUsername, password: mosquitto.fleetPassword,
        passwordFile: mosquitto.passwordFile, pidFile: mosquitto.pidFile, publicUrl: mosquitto.deviceUrl,
      };
    } else {
      config.broker = { host: '127.0.0.1', port: 0 };
    }
    fleet = await startFleetServer({
      mainJs: ctx.mainJs, dataDir: path.join(dir, 'data'), config, configFile: path.join(dir, 'fleet.json'), logFile: path.join(dir, 'fleet.log'),
      logLevel: opts.fleetLogLevel, nofile: NOFILE_WANTED, env: ctx.env, startTimeoutMs: START_TIMEOUT_MS,
    });
    run.fleet = {
      argv: fleet.argv.map((a) => a.replace(ctx.tmp, '$TMP')), config: redact(config), nofile: fleet.nofile, startMs: fleet.startMs,
      rssAtStartMiB: memoryOf(fleet.pid)?.rssMiB, rssAfterConnectMiB: undefined, peakRssMiB: undefined, stop: undefined, logFile: fleet.logFile,
    };
    log(`  fleet pid ${fleet.pid} up in ${fleet.startMs.toFixed(0)} ms: ${fleet.httpUrl}, ${fleet.mqttUrl}; RSS ${run.fleet.rssAtStartMiB?.toFixed(0)} MiB`);
    const api = fleetApi(fleet.httpUrl, fleet.adminToken);

    const enrolled = await enrollDevices(api, opts.devices, opts.enrollConcurrency);
    devices = enrolled.devices;
    run.enrollment = { mqttUrl: enrolled.mqttUrl, seconds: enrolled.seconds, perSecond: enrolled.perSecond, concurrency: enrolled.concurrency };
    log(`  enrolled ${devices.length} devices in ${enrolled.seconds.toFixed(1)} s (${enrolled.perSecond.toFixed(0)}/s); they connect to ${enrolled.mqttUrl}`);

    const connectTimeoutMs = (opts.devices / opts.connectRatePerS) * 1000 + 60_000;
    run.connect = await connectDevices(devices, enrolled.mqttUrl, opts.connectRatePerS, connectTimeoutMs, run.link);
    run.connectedGauge = (await api.metrics()).sum('outpost_fleet_connected_devices');
    run.fleet.rssAfterConnectMiB = memoryOf(fleet.pid)?.rssMiB;
    if (mosquitto) run.brokerProcess = { version: mosquitto.version, nofile: mosquitto.nofile, rssAfterConnectMiB: memoryOf(mosquitto.pid)?.rssMiB, peakRssMiB: undefined, logFile: mosquitto.logFile };
    log(`  connected ${devices.length} in ${run.connect.seconds.toFixed(1)} s at ${opts.connectRatePerS}/s (p99 ${run.connect.p99Ms.toFixed(0)} ms, ${run.connect.failedAttempts} failed attempts); fleet RSS ${run.fleet.rssAfterConnectMiB?.toFixed(0)} MiB${run.brokerProcess ? `, Mosquitto RSS ${run.brokerProcess.rssAfterConnectMiB?.toFixed(1)} MiB` : ''}`);

    db = new Database(path.join(fleet.dataDir, 'fleet.db'), { readonly: true, fileMustExist: true });
    const state: LoadState = { nextDevice: 0, ackedTotal: 0, lastRowId: 0, baseMetrics: counters(await api.metrics()) };
    const target = { devices, api, db, fleetPid: fleet.pid, brokerPid: mosquitto?.pid, drainTimeoutS: opts.drainTimeoutS };
    const baseRate = opts.devices / opts.baseIntervalS;
    if (opts.warmupS > 0) {
      run.warmup = await runStep(target, state, { label: 'warm-up', multiplier: opts.steps[0]!, ratePerS: baseRate * opts.steps[0]!, durationS: opts.warmupS, measured: false }, 0);
    }
    run.stoppedBecause = `every step ran (×${opts.steps.join(', ×')})`;
    for (const [i, m] of opts.steps.entries()) {
      const plan: StepPlan = { label: `×${m}`, multiplier: m, ratePerS: baseRate * m, durationS: i === 0 ? opts.steadyS : opts.stepS, measured: true };
      const r = await runStep(target, state, plan, i + 1);
      run.steps.push(r);
      log(
        `  ${plan.label.padEnd(4)} ${r.ratePerS.toFixed(0).padStart(5)} msg/s target, ${r.offeredPerS.toFixed(0)} offered, ${r.storedPerS.toFixed(0)} stored/s; ` +
          `delay p50 ${r.delay.p50Ms.toFixed(0)} ms p99 ${r.delay.p99Ms.toFixed(0)} ms; fleet RSS ${r.fleetRssMiB?.toFixed(0)} MiB, CPU ${r.fleetCpuPct?.toFixed(0)} %` +
          `${r.brokerCpuPct !== undefined ? `, Mosquitto CPU ${r.brokerCpuPct.toFixed(0)} %` : ''}; lost ${r.lost}, dup ${r.duplicates}` +
          `${r.drained ? '' : ` (NOT drained after ${r.drainSeconds.toFixed(0)} s)`}`,
      );
      if (r.rejected > 0) {
        run.stoppedBecause = `the fleet rejected ${r.rejected} messages at ${plan.label}`;
        break;
      }
      if (!r.drained) {
        run.stoppedBecause = `${plan.label} did not drain within the limits (${r.unacked} without PUBACK, ${r.acked - r.stored} acknowledged and not yet stored)`;
        break;
      }
      if (r.delay.p99Ms > opts.maxP99Ms) {
        run.stoppedBecause = `p99 ${r.delay.p99Ms.toFixed(0)} ms > ${opts.maxP99Ms} ms at ${plan.label}`;
        break;
      }
      if (r.offeredPerS < 0.9 * r.ratePerS) {
        run.stoppedBecause = `the load process offered only ${r.offeredPerS.toFixed(0)} of ${r.ratePerS.toFixed(0)} msg/s at ${plan.label}: it, not the server, is the limit`;
        break;
      }
    }
  } catch (err) {
    run.error = (err as Error).message;
    run.stoppedBecause ||= 'error';
    log(`  ERROR: ${run.error}`);
  } finally {
    db?.close();
    if (fleet && run.fleet) run.fleet.peakRssMiB = memoryOf(fleet.pid)?.peakRssMiB;
    if (mosquitto && run.brokerProcess) run.brokerProcess.peakRssMiB = memoryOf(mosquitto.pid)?.peakRssMiB;
    await closeDevices(devices);
    if (fleet) {
      const stop = await fleet.stop();
      if (run.fleet) run.fleet.stop = stop;
    }
    await mosquitto?.stop();
  }
  return run;
}

/** The config as reported: the fleet's broker password is a per-run secret, not a figure. */
function redact(config: Record<string, unknown>): Record<string, unknown> {
  const broker = config.broker as Record<string, unknown> | undefined;
  return broker?.password ? { ...config, broker: { ...broker, password: '(per run)' } } : config;
}
