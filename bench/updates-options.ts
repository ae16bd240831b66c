import { parseArgs } from 'node:util';

/** Command line and BENCH_* environment for the updates section of `npm run bench` (flags win over the environment). */
export interface UpdatesBenchOptions {
  mode: 'full' | 'quick';
  parts: ('rollout' | 'swap')[];
  // ---- rollout
  /** Simulated device counts, one fresh fleet each. */
  deviceCounts: number[];
  /** Rollouts (each of a new version, each after its own baseline) per device count; medians are reported. */
  reps: number;
  /** buildSimpleHeavy width and layers: 1536 × 1 is the ~10 MB model of issue 5 item 12 (≈ 9.4 MB). */
  modelWidth: number;
  modelLayers: number;
  connectRatePerS: number;
  enrollConcurrency: number;
  /** Longest wait for one rollout to complete, seconds. */
  rolloutTimeoutS: number;
  // ---- swap
  /** KServe JSON clients. */
  clients: number;
  /** Open-loop request rate over all clients (cameras at a fixed frame rate); 0 = closed loop (saturating). */
  ratePerS: number;
  warmupS: number;
  /** Rounds of (steady phase, swap window), interleaved so a change in machine speed lands on both kinds. */
  rounds: number;
  /** Length of each round's steady phase, seconds. */
  steadyS: number;
  /** At least this many swaps in each round's swap window (v1 → v2 is one, v2 → v1 the next)… */
  swaps: number;
  /** …and the window lasts at least this long: swaps go on until both hold. */
  minSwapWindowS: number;
  /** Pause after each swap, ms (0: back to back, every request of the window overlaps a swap step). */
  swapGapMs: number;
  /** Target of issue 5 item 12: p99 during swaps ≤ this × steady p99. */
  maxP99Factor: number;
  resultsDir: string | undefined;
  keepTemp: boolean;
}

const USAGE = `usage: npm run bench -- --only updates [options]   (or: node dist/bench/run.js --only updates [options])

Rollout time of a ~10 MB model to simulated devices against plain downloads of it, and the agent's request
latency during hot swaps against steady state (see bench/README.md, "Updates benchmark").

  --quick                 ~20 s smoke run: 1 and 20 devices, shorter phases            BENCH_QUICK=1
  --parts rollout,swap    which parts to run (default both)                            BENCH_PARTS
  --devices 1,20,200      simulated device counts, a fresh fleet each (quick 1,20)     BENCH_DEVICES
  --reps N                rollouts per device count, each after its own baseline (default 3)  BENCH_REPS
  --model-width N         width of the heavy simple model (default 1536 ≈ 9.4 MB)      BENCH_MODEL_WIDTH
  --model-layers N        its hidden layers (default 1)                                BENCH_MODEL_LAYERS
  --connect-rate N        device connections started per second (default 200)          BENCH_CONNECT_RATE
  --enroll-concurrency N  concurrent enrollments (default 8)                           BENCH_ENROLL_CONCURRENCY
  --rollout-timeout-s N   longest wait for one rollout (default 120)                   BENCH_ROLLOUT_TIMEOUT_S
  --clients N             infer clients during the swap part (default 4)              BENCH_CLIENTS
  --rate N                open-loop requests/s over all clients, as cameras at a fixed
                          frame rate (default 1000); 0 = closed loop, saturating       BENCH_RATE
  --warmup-s N            unmeasured load before the first round (full 3, quick 1)    BENCH_WARMUP_S
  --rounds N              rounds of steady phase + swap window (full 3, quick 2)       BENCH_ROUNDS
  --steady-s N            each round's steady phase (full 4, quick 2.5)                BENCH_STEADY_S
  --swaps N               at least N swaps in each round's window (full 12, quick 8)   BENCH_SWAPS
  --min-swap-window-s N   and the window lasts at least N s (full 4, quick 2.5)        BENCH_MIN_SWAP_WINDOW_S
  --swap-gap-ms N         pause after each swap (default 250; 0: back to back)         BENCH_SWAP_GAP_MS
  --max-p99-factor N      target: p99 during swaps ≤ N × steady p99 (default 1.5)     BENCH_MAX_P99_FACTOR
  --results DIR           where the JSON goes (default bench/results)
  --keep-temp             keep the temp dir (fleet data dirs, agent repository, logs)
`;

export function parseUpdatesOptions(argv = process.argv.slice(2), env = process.env): UpdatesBenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      parts: { type: 'string' },
      devices: { type: 'string' },
      reps: { type: 'string' },
      'model-width': { type: 'string' },
      'model-layers': { type: 'string' },
      'connect-rate': { type: 'string' },
      'enroll-concurrency': { type: 'string' },
      'rollout-timeout-s': { type: 'string' },
      clients: { type: 'string' },
      rate: { type: 'string' },
      'warmup-s': { type: 'string' },
      rounds: { type: 'string' },
      'steady-s': { type: 'string' },
      swaps: { type: 'string' },
      'min-swap-window-s': { type: 'string' },
      'swap-gap-ms': { type: 'string' },
      'max-p99-factor': { type: 'string' },
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
  const raw = (flag: keyof typeof values): string | undefined => (values[flag] as string | undefined) ?? env[`BENCH_${flag.toUpperCase().replace(/-/g, '_')}`];
  const pick = (flag: keyof typeof values, fallback: number, min: number, integer = false): number => {
    const text = raw(flag);
    if (text === undefined || text === '') return fallback;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) throw new Error(`--${flag} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}, got ${JSON.stringify(text)}`);
    return n;
  };
  const parts = (raw('parts') ?? 'rollout,swap').split(',') as UpdatesBenchOptions['parts'];
  for (const p of parts) if (p !== 'rollout' && p !== 'swap') throw new Error(`--parts: unknown part '${p}' (rollout, swap)`);
  const deviceCounts = (raw('devices') ?? (quick ? '1,20' : '1,20,200')).split(',').map(Number);
  if (deviceCounts.length === 0 || deviceCounts.some((n) => !Number.isInteger(n) || n < 1 || n > 2000)) throw new Error('--devices takes integers 1–2000, comma-separated');
  return {
    mode: quick ? 'quick' : 'full',
    parts,
    deviceCounts,
    reps: pick('reps', 3, 1, true),
    modelWidth: pick('model-width', 1536, 16, true),
    modelLayers: pick('model-layers', 1, 1, true),
    connectRatePerS: pick('connect-rate', 200, 1),
    enrollConcurrency: pick('enroll-concurrency', 8, 1, true),
    rolloutTimeoutS: pick('rollout-timeout-s', 120, 1),
    clients: pick('clients', 4, 1, true),
    ratePerS: pick('rate', 1000, 0),
    warmupS: pick('warmup-s', quick ? 1 : 3, 0),
    rounds: pick('rounds', quick ? 2 : 3, 1, true),
    steadyS: pick('steady-s', quick ? 2.5 : 4, 0.5),
    swaps: pick('swaps', quick ? 8 : 12, 1, true),
    minSwapWindowS: pick('min-swap-window-s', quick ? 2.5 : 4, 0),
    swapGapMs: pick('swap-gap-ms', 250, 0),
    maxP99Factor: pick('max-p99-factor', 1.5, 1),
    resultsDir: values.results,
    keepTemp: values['keep-temp'] === true,
  };
}
