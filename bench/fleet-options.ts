import { parseArgs } from 'node:util';

/** Command line and BENCH_* environment for the fleet section of `npm run bench` (flags win over the environment). */
export interface FleetBenchOptions {
  mode: 'full' | 'quick';
  devices: number;
  /** New device connections started per second. */
  connectRatePerS: number;
  /** Each device's interval between events at the base rate, seconds (10: 1,000 devices → 100 msg/s). */
  baseIntervalS: number;
  /** Rate multipliers of the base rate, stepped in order; the first is the steady period. */
  steps: number[];
  warmupS: number;
  /** Length of the first (steady) step. */
  steadyS: number;
  /** Length of every later step. */
  stepS: number;
  /** Stepping stops after the first step whose end-to-end p99 exceeds this. */
  maxP99Ms: number;
  /** After a step's last publish, how long to wait for every PUBACK and for the fleet to store what was acknowledged. */
  drainTimeoutS: number;
  brokers: ('aedes' | 'mosquitto')[];
  outbox: boolean;
  /** Concurrent enrollments (each is two REST calls). */
  enrollConcurrency: number;
  fleetLogLevel: string;
  /** Parent of the temp dir: must be the real disk (fsync cost), not tmpfs. Default: os.tmpdir(), else /var/tmp. */
  tempParent: string | undefined;
  resultsDir: string | undefined;
  keepTemp: boolean;
}

const USAGE = `usage: npm run bench:fleet -- [options]   (or: node dist/bench/run.js --only fleet [options])

Outbox rows/s, then fleet ingest with simulated devices over MQTT, the embedded aedes broker and an
external Mosquitto side by side (see bench/README.md, "Fleet benchmark").

  --quick                 ~1.5 min smoke run: 1,000 devices, steps 1,10,20, short steps  BENCH_QUICK=1
  --devices N             simulated devices, all in this process (default 1000)       BENCH_DEVICES
  --connect-rate N        device connections started per second (default 200)          BENCH_CONNECT_RATE
  --base-interval-s N     seconds between one device's events at ×1 (default 10)        BENCH_BASE_INTERVAL_S
  --steps 1,10,20,40,80   rate multipliers; the first is the steady period (quick 1,10,20)  BENCH_STEPS
  --warmup-s N            unmeasured warm-up at ×1 (full 5, quick 2)                     BENCH_WARMUP_S
  --steady-s N            length of the first step (full 60, quick 15)                   BENCH_STEADY_S
  --step-s N              length of each later step (full 20, quick 8)                   BENCH_STEP_S
  --max-p99-ms N          stop stepping after a step whose p99 delay exceeds this (1000) BENCH_MAX_P99_MS
  --drain-timeout-s N     wait for acks and storage after a step (full 120, quick 60)   BENCH_DRAIN_TIMEOUT_S
  --brokers aedes,mosquitto   which brokers to run (Mosquitto is skipped when /usr/sbin/mosquitto is absent)
  --no-outbox             skip the outbox rows/s cases
  --enroll-concurrency N  concurrent enrollments (default 8)
  --fleet-log-level L     the fleet server's log.level (default info, what ships)
  --temp DIR              parent of the temp dir (must be a real disk, not tmpfs)
  --results DIR           where the JSON goes (default bench/results)
  --keep-temp             keep the temp dir (fleet data dirs, logs, Mosquitto config)
`;

export function parseFleetOptions(argv = process.argv.slice(2), env = process.env): FleetBenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      devices: { type: 'string' },
      'connect-rate': { type: 'string' },
      'base-interval-s': { type: 'string' },
      steps: { type: 'string' },
      'warmup-s': { type: 'string' },
      'steady-s': { type: 'string' },
      'step-s': { type: 'string' },
      'max-p99-ms': { type: 'string' },
      'drain-timeout-s': { type: 'string' },
      brokers: { type: 'string' },
      'no-outbox': { type: 'boolean' },
      'enroll-concurrency': { type: 'string' },
      'fleet-log-level': { type: 'string' },
      temp: { type: 'string' },
      results: { type: 'string' },
      'keep-temp': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const quick = values.quick === true || env.BENCH_QUICK === '1';
  const pick = (flag: keyof typeof values, fallback: number, min = 0): number => {
    const raw = (values[flag] as string | undefined) ?? env[`BENCH_${flag.toUpperCase().replace(/-/g, '_')}`];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${flag} must be a number ≥ ${min}, got ${JSON.stringify(raw)}`);
    return n;
  };
  const steps = ((values.steps ?? env.BENCH_STEPS) ?? (quick ? '1,10,20' : '1,10,20,40,80')).split(',').map(Number);
  if (steps.length === 0 || steps.some((m) => !Number.isFinite(m) || m <= 0)) throw new Error('--steps takes positive multipliers, comma-separated');
  const brokers = ((values.brokers ?? env.BENCH_BROKERS) ?? 'aedes,mosquitto').split(',') as FleetBenchOptions['brokers'];
  for (const b of brokers) if (b !== 'aedes' && b !== 'mosquitto') throw new Error(`--brokers: unknown broker '${b}' (aedes, mosquitto)`);
  const devices = pick('devices', 1000, 1);
  if (!Number.isInteger(devices) || devices > 20_000) throw new Error('--devices takes an integer 1–20000');
  return {
    mode: quick ? 'quick' : 'full',
    devices,
    connectRatePerS: pick('connect-rate', 200, 1),
    baseIntervalS: pick('base-interval-s', 10, 0.001),
    steps,
    warmupS: pick('warmup-s', quick ? 2 : 5),
    steadyS: pick('steady-s', quick ? 15 : 60, 1),
    stepS: pick('step-s', quick ? 8 : 20, 1),
    maxP99Ms: pick('max-p99-ms', 1000, 1),
    drainTimeoutS: pick('drain-timeout-s', quick ? 60 : 120, 1),
    brokers,
    outbox: values['no-outbox'] !== true,
    enrollConcurrency: Math.max(1, Math.round(pick('enroll-concurrency', 8, 1))),
    fleetLogLevel: values['fleet-log-level'] ?? 'info',
    tempParent: values.temp,
    resultsDir: values.results,
    keepTemp: values['keep-temp'] === true,
  };
}
