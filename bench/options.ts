import { parseArgs } from 'node:util';
import type { WindowPlan } from './measure.js';

/** Command line and BENCH_* environment for `npm run bench` (flags win over the environment). */
export interface BenchOptions {
  mode: 'full' | 'quick';
  plan: WindowPlan;
  concurrencies: number[];
  paths: ('kserve-json' | 'kserve-binary' | 'detect')[];
  /** Images per run for the extra bare batched measurement of dynamic-batch models. */
  bareBatchSizes: number[];
  useRealDetector: boolean;
  demoBatching: boolean;
  maxQueueDelayMs: number;
  intraOpThreads: number;
  interOpThreads: number;
  agentLogLevel: string;
  readyTimeoutMs: number;
  /** Pre-generated models (models/make-models.ts output) instead of generating them into the temp dir. */
  repository: string | undefined;
  samples: string | undefined;
  resultsDir: string | undefined;
  keepTemp: boolean;
}

const USAGE = `usage: npm run bench -- [options]        (or: node dist/bench/agent.js [options])

  --quick                   ~1 min smoke run: c=1,4, short windows, at most 3 windows per point
  --window-ms N             window length (full 1000, quick 400)           BENCH_WINDOW_MS
  --min-requests N          completions a window needs (full 5, quick 2)   BENCH_MIN_REQUESTS
  --max-window-ms N         a window closes after this whatever the count (4 × window-ms)  BENCH_MAX_WINDOW_MS
  --max-windows N           cap on windows per point (full 4, quick 3)     BENCH_MAX_WINDOWS
  --warmup-ms N             warm-up before the first window, and ≥ c completions (full 1000, quick 200)  BENCH_WARMUP_MS
  --stability-pct N         3 windows within ±N % (default 10)             BENCH_STABILITY_PCT
  --concurrency 1,2,4,8,16  client concurrency levels                      BENCH_CONCURRENCY
  --paths kserve-json,kserve-binary,detect                                 BENCH_PATHS
  --no-real                 skip ../shared/models' YOLOv8n even when present
  --no-demo-batching        skip the demo detector's batching off/on runs
  --max-queue-delay-ms N    batching.maxQueueDelayMs when batching is on (default 0, the agent's default)
  --intra-op-threads N      onnxruntime intra-op threads, agent and bare alike (0 = onnxruntime default)
  --inter-op-threads N
  --agent-log-level L       the agent's log.level (default info, what ships)
  --repository DIR --samples DIR   use models make-models.ts already generated
  --results DIR             where the JSON goes (default bench/results)
  --keep-temp               keep the temp dir (repositories, bodies, agent logs)
`;

export function parseOptions(argv = process.argv.slice(2), env = process.env): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      'window-ms': { type: 'string' },
      'min-requests': { type: 'string' },
      'max-window-ms': { type: 'string' },
      'max-windows': { type: 'string' },
      'warmup-ms': { type: 'string' },
      'stability-pct': { type: 'string' },
      concurrency: { type: 'string' },
      paths: { type: 'string' },
      'no-real': { type: 'boolean' },
      'no-demo-batching': { type: 'boolean' },
      'max-queue-delay-ms': { type: 'string' },
      'intra-op-threads': { type: 'string' },
      'inter-op-threads': { type: 'string' },
      'agent-log-level': { type: 'string' },
      repository: { type: 'string' },
      samples: { type: 'string' },
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
  const pick = (flag: keyof typeof values, fallback: number): number => {
    const raw = (values[flag] as string | undefined) ?? env[`BENCH_${flag.toUpperCase().replace(/-/g, '_')}`];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${flag} must be a non-negative number, got ${JSON.stringify(raw)}`);
    return n;
  };
  const windowMs = pick('window-ms', quick ? 400 : 1000);
  const plan: WindowPlan = {
    windowMs,
    minRequests: pick('min-requests', quick ? 2 : 5),
    maxWindowMs: pick('max-window-ms', windowMs * 4),
    maxWindows: Math.max(1, pick('max-windows', quick ? 3 : 4)),
    warmupMs: pick('warmup-ms', quick ? 200 : 1000),
    stabilityPct: pick('stability-pct', 10),
    stableWindows: 3,
  };
  const concurrencies = ((values.concurrency ?? env.BENCH_CONCURRENCY) ?? (quick ? '1,4' : '1,2,4,8,16')).split(',').map(Number);
  if (concurrencies.some((c) => !Number.isInteger(c) || c < 1 || c > 256)) throw new Error('--concurrency takes integers 1–256, comma-separated');
  const allPaths = ['kserve-json', 'kserve-binary', 'detect'] as const;
  const paths = ((values.paths ?? env.BENCH_PATHS) ?? allPaths.join(',')).split(',') as BenchOptions['paths'];
  for (const p of paths) if (!(allPaths as readonly string[]).includes(p)) throw new Error(`--paths: unknown path '${p}' (one of ${allPaths.join(', ')})`);
  if ((values.repository === undefined) !== (values.samples === undefined)) throw new Error('--repository and --samples go together');
  return {
    mode: quick ? 'quick' : 'full',
    plan,
    concurrencies,
    paths,
    bareBatchSizes: [4],
    useRealDetector: values['no-real'] !== true,
    demoBatching: values['no-demo-batching'] !== true,
    maxQueueDelayMs: pick('max-queue-delay-ms', 0),
    intraOpThreads: pick('intra-op-threads', 0),
    interOpThreads: pick('inter-op-threads', 0),
    agentLogLevel: values['agent-log-level'] ?? 'info',
    readyTimeoutMs: 120_000,
    repository: values.repository,
    samples: values.samples,
    resultsDir: values.results,
    keepTemp: values['keep-temp'] === true,
  };
}
